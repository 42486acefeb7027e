//! The plain-HTTP side port: Prometheus `/metrics`, and `/live` and `/ready` for probes that do not
//! speak gRPC.

use super::limits::TransportLimits;
use super::state::ServerState;
use hyper::{body::Incoming, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

fn respond(state: &ServerState, req: &Request<Incoming>) -> Response<String> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => {
            let reserved = state.budget.in_use().min(i64::MAX as u64) as i64;
            state.metrics.memory_reserved_bytes.set(reserved);
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.render(),
            )
        }
        ("GET", "/live") => (StatusCode::OK, "text/plain", "live\n".to_string()),
        ("GET", "/ready") if state.ready() => (StatusCode::OK, "text/plain", "ready\n".into()),
        ("GET", "/ready") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /live or /ready\n".into(),
        ),
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    res
}

/// Serves until the task is dropped. A client has `metrics_timeout` to send its request headers,
/// and a connection is closed after that long in any case (scrapes take milliseconds); at most
/// `metrics_max_connections` are open at once, further ones are closed at once.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, limits: TransportLimits) {
    let open = Arc::new(tokio::sync::Semaphore::new(
        limits.metrics_max_connections.max(1),
    ));
    let timeout = limits.metrics_timeout();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = respond(&state, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(timeout, conn).await;
        });
    }
}
