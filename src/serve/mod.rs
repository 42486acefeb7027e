//! The server: gRPC (inferd's reconstruction API, the KServe v2 inference protocol, standard health
//! checking and server reflection) plus an HTTP side port for Prometheus metrics.
//!
//! Start-up: the port answers at once with health NOT_SERVING while the models load and warm up on
//! a blocking thread; then the scheduler starts and health turns SERVING. Shutdown (the `shutdown`
//! future, i.e. SIGTERM or Ctrl-C in the binary): health turns NOT_SERVING, no new calls are
//! accepted, running calls and streams finish within the grace period, then `serve` returns.

pub mod auth;
mod bridge_service;
pub mod budget;
pub mod clients;
pub mod config;
pub mod dicom_out;
mod graph_service;
mod http_port;
mod kserve;
pub mod limits;
pub mod mrd;
mod ordered;
mod recon_service;
pub mod repository;
pub mod state;

pub use config::ServeConfig;

use crate::api::kserve::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::api::pb::{
    bridge_server::BridgeServer, graph_server::GraphServer,
    reconstruction_server::ReconstructionServer,
};
use crate::api::validate::Limits;
use crate::metrics::Metrics;
use crate::models::{
    self, Engine, Family, ModelSpec, WeightsSource, DEFAULT_BRIDGE_MODEL, DEFAULT_GRAPH_MODEL,
    DEFAULT_RADIAL_MODEL, DEFAULT_RECON_MODEL,
};
use crate::sched::{Scheduler, SchedulerConfig};
use auth::TokenCheck;
use state::{Loaded, ServerState};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// Builds the list of models to load: the shipped default (when embedded) plus the user's.
fn model_specs(config: &ServeConfig) -> anyhow::Result<Vec<ModelSpec>> {
    let mut specs = Vec::new();
    let shipped = [
        (DEFAULT_RECON_MODEL, models::EMBEDDED_RECON),
        (DEFAULT_RADIAL_MODEL, models::EMBEDDED_RADIAL),
        (DEFAULT_BRIDGE_MODEL, models::EMBEDDED_BRIDGE),
        (DEFAULT_GRAPH_MODEL, models::EMBEDDED_GRAPH),
    ];
    // a model repository replaces the embedded defaults
    let shipped = if config.model_repository.is_some() {
        &shipped[..0]
    } else {
        &shipped[..]
    };
    for &(name, bytes) in shipped {
        if let Some(bytes) = bytes {
            if !config.models.iter().any(|m| m.name == name) {
                specs.push(ModelSpec {
                    name: name.into(),
                    source: WeightsSource::Embedded(bytes),
                });
            }
        }
    }
    for m in &config.models {
        if specs.iter().any(|s| s.name == m.name) {
            anyhow::bail!("model name {} given twice", m.name);
        }
        specs.push(m.clone());
    }
    anyhow::ensure!(
        !specs.is_empty() || config.model_repository.is_some(),
        "no model to serve: this build embeds no default model; pass --model NAME=FILE.safetensors or --model-repository DIR"
    );
    Ok(specs)
}

/// Loads and warms up the models given by file or embedded, as version 1 (blocking; run off the
/// async runtime).
fn load_engines(
    specs: &[ModelSpec],
    device: &candle_core::Device,
    fast_cpu_conv: bool,
) -> anyhow::Result<Vec<Arc<dyn Engine>>> {
    specs
        .iter()
        .map(|spec| {
            repository::load_engine(spec, "1", device, fast_cpu_conv)
                .map_err(|e| anyhow::anyhow!("model {}: {e}", spec.name))
        })
        .collect()
}

/// Checks that `--batching` and `--default-model` name models that exist (loaded, or in the
/// repository).
fn check_model_names(
    config: &ServeConfig,
    loaded: &Loaded,
    repository: Option<&repository::Repository>,
) -> anyhow::Result<()> {
    let in_repository = match repository {
        Some(r) => r.list()?,
        None => Vec::new(),
    };
    let known = |name: &str| loaded.find(name).is_ok() || in_repository.iter().any(|n| n == name);
    for b in &config.batching {
        anyhow::ensure!(
            known(&b.model),
            "--batching names model {}, which is not loaded",
            b.model
        );
    }
    if let Some(name) = &config.default_model {
        anyhow::ensure!(
            known(name),
            "default model {name} is not among the loaded models"
        );
        if let Ok(m) = loaded.find(name) {
            anyhow::ensure!(
                m.info().family == Family::Recon,
                "default model {name} is not a reconstruction model"
            );
        }
    }
    Ok(())
}

fn health_names() -> [&'static str; 5] {
    [
        "",
        <GraphServer<graph_service::GraphService> as NamedService>::NAME,
        <ReconstructionServer<recon_service::ReconService> as NamedService>::NAME,
        <BridgeServer<bridge_service::BridgeService> as NamedService>::NAME,
        <GrpcInferenceServiceServer<kserve::KServeService> as NamedService>::NAME,
    ]
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for name in health_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// Serves gRPC on `listener` (and metrics on `config.metrics_addr`) until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = bind(config.metrics_addr, "metrics").await?;
    let mrd = bind(config.mrd_addr, "MRD streaming").await?;
    serve_listeners(config, listener, metrics, mrd, shutdown).await
}

/// A listener on `addr` when one is configured.
async fn bind(
    addr: Option<std::net::SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}")),
        None => Ok(None),
    }
}

/// [`serve`] with the metrics listener given (tests bind port 0).
pub async fn serve_with(
    config: ServeConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_listeners(config, listener, metrics_listener, None, shutdown).await
}

/// [`serve`] with every listener given: gRPC, metrics and the MRD streaming port.
pub async fn serve_listeners(
    config: ServeConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    mrd_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let device = models::select_device(&config.device)?;
    tracing::info!(device = %models::describe_device(&device), requested = %config.device, "compute device selected");
    let specs = model_specs(&config)?;
    let token = TokenCheck::from_config(&config)?;
    let tls = auth::tls_config(&config)?;
    let metrics = Arc::new(Metrics::default());
    let dicom = dicom_out::DicomOut::start(&config.pacs, metrics.clone())?;
    let state = Arc::new(ServerState::new(
        metrics.clone(),
        Limits {
            max_request_bytes: config.max_request_mb.max(1).saturating_mul(1 << 20),
            ..Limits::default()
        },
        config.stream_inflight,
        config.transport.stream_idle_timeout(),
        budget::MemoryBudget::from_config(config.memory_budget_mb, config.max_request_mb),
        dicom,
        clients::ClientPolicy::new(
            config.client_queue_limit,
            config.high_priority_clients.clone(),
            config.client_id_header.clone(),
        ),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;

    let max_message = config.max_message_mb.max(1) * 1024 * 1024;
    // Every inference service accepts gzip/zstd requests and messages up to the configured size.
    macro_rules! service {
        ($server:ident, $service:expr) => {
            $server::new($service)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message)
        };
    }
    let recon = service!(
        ReconstructionServer,
        recon_service::ReconService {
            state: state.clone(),
        }
    );
    let bridge = service!(
        BridgeServer,
        bridge_service::BridgeService {
            state: state.clone(),
        }
    );
    let graph = service!(
        GraphServer,
        graph_service::GraphService {
            state: state.clone(),
        }
    );
    let kserve = service!(
        GrpcInferenceServiceServer,
        kserve::KServeService {
            state: state.clone(),
            token: token.clone(),
        }
    );

    // Server reflection lets grpcurl and similar tools list and call the APIs without the .proto
    // files. Both protocol versions: older grpcurl and grpcio clients speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let guard = |t: TokenCheck| move |req| t.check(req);

    let addr = listener.local_addr()?;
    let metrics_task = metrics_listener.map(|l| {
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics on http://ADDR/metrics");
        tokio::spawn(http_port::serve(l, state.clone(), config.transport.clone()))
    });
    tracing::info!(%addr, tls = tls.is_some(), mutual_tls = config.tls_client_ca.is_some(), auth = token.enabled(), max_message_mb = config.max_message_mb, "inferd listening");

    // Shutdown: flip health and readiness first, then stop accepting calls.
    let (drain_tx, drain_rx) = watch::channel(false);
    {
        let (health, state) = (health.clone(), state.clone());
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
            state.start_draining();
            set_health(&health, ServingStatus::NotServing).await;
            let _ = drain_tx.send(true);
        });
    }
    let draining = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|d| *d).await;
    };
    let mut mrd_task = None;
    if let Some(l) = mrd_listener {
        let tls = mrd::tls_acceptor(&config)?;
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "MRD streaming");
        mrd_task = Some(tokio::spawn(mrd::serve(
            l,
            state.clone(),
            drain_rx.clone(),
            tls,
            config.transport.tls_handshake_timeout(),
        )));
    }

    // TCP_NODELAY: a response goes out as several small writes (headers, data, trailers); with
    // Nagle's algorithm the last one waits for the client's delayed ACK (~40 ms per call).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    let mut builder = config.transport.apply(tonic::transport::Server::builder());
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.timeout(config.transport.tls_handshake_timeout()))?;
    }
    if let Some(age) = config.max_connection_age_s {
        builder = builder.max_connection_age(std::time::Duration::from_secs(age.max(1)));
    }
    let server = builder
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted::<tonic::body::Body>,
        ))
        .layer(crate::telemetry::GrpcTraceLayer)
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, guard(token.clone())))
        .add_service(InterceptedService::new(
            reflection_v1alpha,
            guard(token.clone()),
        ))
        .add_service(InterceptedService::new(recon, guard(token.clone())))
        .add_service(InterceptedService::new(bridge, guard(token.clone())))
        .add_service(InterceptedService::new(graph, guard(token.clone())))
        .add_service(InterceptedService::new(kserve, guard(token)))
        .serve_with_incoming_shutdown(incoming, draining(drain_rx.clone()));
    tokio::pin!(server);

    let loader = {
        let (state, health, config) = (state.clone(), health.clone(), config.clone());
        async move {
            let fast_conv = config.cpu_fast_conv;
            let repository = match &config.model_repository {
                Some(dir) => Some(Arc::new(repository::Repository::new(
                    &config,
                    dir.clone(),
                    device.clone(),
                )?)),
                None => None,
            };
            let engines =
                tokio::task::spawn_blocking(move || load_engines(&specs, &device, fast_conv))
                    .await??;
            let scheduler = Scheduler::start(
                SchedulerConfig {
                    capacity: config.queue_capacity,
                    workers: config.workers,
                    priority_aging: (config.priority_aging_ms > 0)
                        .then(|| std::time::Duration::from_millis(config.priority_aging_ms)),
                },
                state.metrics.clone(),
            )?;
            let loaded = Loaded::new(scheduler, config.default_model.clone(), repository.clone());
            let batching = repository::Batching::from_config(&config);
            for engine in engines {
                let b = batching.for_model(engine.info(), None);
                loaded.insert(loaded.scheduler.add(engine, b));
            }
            if let Some(repo) = &repository {
                repo.load_initial(&loaded, &config.load_models).await?;
            }
            check_model_names(&config, &loaded, repository.as_deref())?;
            state.set_loaded(loaded);
            if let (Some(repo), repository::ModelControl::Poll) = (repository, config.model_control)
            {
                let (state, every) = (
                    state.clone(),
                    std::time::Duration::from_secs_f64(
                        config.repository_poll_s.clamp(0.05, 86_400.0),
                    ),
                );
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let Some(loaded) = state.loaded_opt() else {
                            continue;
                        };
                        repo.poll(loaded).await;
                    }
                });
            }
            if state.ready() {
                set_health(&health, ServingStatus::Serving).await;
                tracing::info!("ready: health SERVING");
            }
            anyhow::Ok(())
        }
    };
    tokio::pin!(loader);
    let grace = config.shutdown_grace();
    let grace_over = async move {
        draining(drain_rx).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(grace_over);

    let mut loading = true;
    let outcome = loop {
        tokio::select! {
            r = &mut server => break r.map_err(anyhow::Error::from),
            r = &mut loader, if loading => {
                loading = false;
                if let Err(e) = r {
                    tracing::error!(error = %e, "start-up failed");
                    break Err(e);
                }
            }
            _ = &mut grace_over => {
                tracing::warn!(grace_s = grace.as_secs(), "grace period over; stopping with calls still running");
                break Ok(());
            }
        }
    };
    // MRD sessions in progress finish their scans within the same grace period
    if let (Ok(()), Some(task)) = (&outcome, mrd_task) {
        tokio::select! {
            _ = task => {}
            _ = &mut grace_over => tracing::warn!("grace period over; stopping with MRD sessions still running"),
        }
    }
    if let Some(loaded) = state.loaded_opt() {
        loaded.scheduler.close();
    }
    state.dicom.shutdown();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if outcome.is_ok() {
        tracing::info!("inferd stopped");
    }
    outcome
}

/// A unary request over the message limit is refused by tonic before any handler runs, with
/// OUT_OF_RANGE in a trailers-only response; gRPC clients expect RESOURCE_EXHAUSTED for that. (Streaming
/// calls see the same error inside the handler, which maps it there.)
fn oversize_is_resource_exhausted<B>(mut res: ::http::Response<B>) -> ::http::Response<B> {
    let headers = res.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", ::http::HeaderValue::from_static("8"));
    }
    res
}
