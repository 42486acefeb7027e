//! Request traces over OpenTelemetry (OTLP/gRPC).
//!
//! With `--otlp-endpoint`, the `tracing` spans of inferd's own code (target `inferd`) are exported as
//! OpenTelemetry spans through a batch processor to an OTLP collector; without it nothing changes and
//! no exporter exists. Spans continue the caller's trace: a W3C `traceparent` (and `tracestate`) in
//! the gRPC metadata of any call, or the `traceparent` parameter of an MRD session, becomes the parent
//! of the request's span ([`GrpcTraceLayer`], [`parent_from_traceparent`]).
//!
//! Which spans a request produces (all named here, so dashboards can rely on them):
//! - one span of kind server around every call but health checks, named `<service>/<method>` as
//!   OpenTelemetry's RPC conventions ask (`inference.GRPCInferenceService/ModelInfer`; attributes
//!   `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), and `mrd_session` for an
//!   MRD connection;
//! - the call's own span (`recon_stream`, `recon_slice`, `model_infer`, `bridge_sample`,
//!   `graph_aggregate`) with its sizes;
//! - `admission` (memory budget reserved) and, per scheduled item, `queue` (waiting for the device)
//!   and `compute` (`batch.size`, `batch.leader`) on the worker;
//! - inside the batch leader's `compute`: `network` and `data_consistency` of a reconstruction; the
//!   other items of the batch link to the leader's `compute`;
//! - `dicom_encode` (and the outbox write) per image, and `pacs_delivery` per association of the
//!   background delivery, linked to the requests whose images it carries;
//! - `model_load` per model version loaded (reading the weights, the warm-up passes).
//!
//! Attributes carry sizes, model names and versions, request ids and outcomes, never patient data:
//! no names, identifiers, study or series UIDs, or pixel values (the spans are those of inferd's
//! code, whose fields are chosen for that). Events inside a span are the log's own events at INFO
//! and above, under the same rule; the only UIDs among them are the SOP Instance UIDs inferd itself
//! generated, named when the PACS refuses an image, as in the log.
//!
//! The OTLP exporter is tonic-based and needs a Tokio reactor, while the SDK's batch processor
//! exports from its own OS thread: [`OnRuntime`] runs each export on the server's runtime.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Trace export settings of `inferd serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// OTLP/gRPC collector to export request spans to, e.g. http://otel-collector:4317 (unset: no
    /// export). `https://` uses TLS, verified against --otlp-ca.
    #[arg(long, env = "INFERD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (0..=1). A caller's `traceparent` decision is followed either
    /// way, so a sampled client trace is complete on the server too.
    #[arg(long, env = "INFERD_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,
    /// CA certificate (PEM) of an https:// collector.
    #[arg(long, env = "INFERD_OTLP_CA")]
    pub otlp_ca: Option<PathBuf>,
}

/// The tracer provider behind `--otlp-endpoint`; [`Telemetry::shutdown`] exports what is buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the exporter (inside `runtime`, which also runs every export) and the provider.
    /// `None` when no endpoint is configured.
    pub fn start(
        args: &TraceArgs,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Option<Telemetry>> {
        let Some(endpoint) = &args.otlp_endpoint else {
            return Ok(None);
        };
        let ratio = args.otlp_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            anyhow::bail!("--otlp-sample-ratio must be between 0 and 1, got {ratio}");
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?} is not a URL: {e}"))?;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(10));
        match (uri.scheme_str(), &args.otlp_ca) {
            (Some("https"), Some(ca)) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| anyhow::anyhow!("reading --otlp-ca {}: {e}", ca.display()))?;
                builder = builder.with_tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                );
            }
            (Some("https"), None) => {
                anyhow::bail!("an https:// --otlp-endpoint needs --otlp-ca (the collector's CA)")
            }
            (Some("http"), _) => {}
            _ => {
                anyhow::bail!("--otlp-endpoint must be an http:// or https:// URL, got {endpoint}")
            }
        }
        let exporter = {
            let _in_runtime = runtime.enter();
            builder.build()?
        };
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: runtime.clone(),
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "inferd".into());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        Ok(Some(Telemetry { provider }))
    }

    /// The `tracing` layer that turns inferd's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("inferd"))
            .with_threads(false)
            .with_location(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("inferd", tracing::Level::INFO),
            )
    }

    /// Exports the buffered spans and stops the exporter (blocking; up to a few seconds).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// Runs the OTLP exporter's futures on a Tokio runtime (see the module documentation).
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            task.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // called once while the provider is built, before any export shares the exporter
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the remote span a `traceparent` names. A malformed value is ignored
/// (the span starts a new trace), as W3C Trace Context asks.
pub fn parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The OpenTelemetry context of `span`, to link later work (PACS delivery) to it; `None` when the
/// span is not recorded (no exporter, or not sampled).
pub fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Adds links from `span` to each context (work done for several traces at once).
pub fn link(
    span: &tracing::Span,
    contexts: impl IntoIterator<Item = opentelemetry::trace::SpanContext>,
) {
    for cx in contexts {
        span.add_link(cx);
    }
}

/// Wraps every gRPC call (but health checks) in a server span whose parent is the caller's
/// `traceparent`; the status of trailers-only answers (errors) is recorded on it.
#[derive(Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;
    fn layer(&self, inner: S) -> GrpcTrace<S> {
        GrpcTrace { inner }
    }
}

#[derive(Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let path = req.uri().path();
        if path.starts_with("/grpc.health.") {
            return Box::pin(self.inner.call(req));
        }
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let cx = TraceContextPropagator::new().extract(&Headers(req.headers()));
            let _ = span.set_parent(cx);
        }
        let fut = self.inner.call(req).instrument(span.clone());
        Box::pin(async move {
            let result = fut.await;
            if let Ok(response) = &result {
                // trailers-only answers carry the status in the headers; a streamed answer's
                // status follows in trailers, after this span (its work has its own spans)
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                span.record("rpc.grpc.status_code", code);
            }
            result
        })
    }
}
