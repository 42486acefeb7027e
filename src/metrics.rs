//! Prometheus metrics, shared by the gRPC layer (requests) and the scheduler (queue, batches,
//! compute). Rendered in the text exposition format by `serve::http` on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    /// The RPC's protocol: "kserve" or "inferd".
    pub protocol: String,
    /// The gRPC status code name, e.g. "OK", "RESOURCE_EXHAUSTED".
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub model: String,
    /// "expired" (deadline passed in the queue) or "abandoned" (client gone).
    pub reason: String,
}

type Hist = Family<ModelLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub inflight: Gauge,
    pub queue_depth: Family<ModelLabel, Gauge>,
    pub queue_seconds: Hist,
    pub compute_seconds: Hist,
    pub batch_size: Hist,
    pub dropped: Family<DropLabels, Counter>,
    /// PACS outbox (`pacs::outbox`): items and bytes waiting for delivery.
    pub outbox_pending_items: Gauge,
    pub outbox_pending_bytes: Gauge,
    /// Items the PACS refused for good, kept in the outbox's `failed/`.
    pub outbox_failed_items: Gauge,
    /// Instances the PACS confirmed (success or warning status).
    pub outbox_stored: Counter,
    /// Associations that failed in transport (PACS down, network, timeout) and will be retried.
    pub outbox_retries: Counter,
    /// 1 if the last delivery attempt reached the PACS, 0 if it failed in transport.
    pub pacs_reachable: Gauge,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~6.5 min
    Histogram::new(exponential_buckets(1e-4, 2.0, 22))
}

fn batch_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0].into_iter())
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("inferd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests finished, by model, protocol and gRPC status",
            requests.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "inflight_requests",
            "Inference requests admitted and not yet answered",
            inflight.clone(),
        );
        let queue_depth = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Items waiting for a device worker",
            queue_depth.clone(),
        );
        let queue_seconds: Hist = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "queue_seconds",
            "Time an item waited between admission and the start of its batch",
            queue_seconds.clone(),
        );
        let compute_seconds: Hist = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "compute_seconds",
            "Time a batch took on the device worker",
            compute_seconds.clone(),
        );
        let batch_size: Hist = Family::new_with_constructor(batch_histogram);
        registry.register(
            "batch_size",
            "Items per batch run by a device worker",
            batch_size.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "dropped",
            "Queued items dropped before reaching the device",
            dropped.clone(),
        );
        let outbox_pending_items = Gauge::default();
        registry.register(
            "outbox_pending_items",
            "DICOM instances in the PACS outbox waiting for delivery",
            outbox_pending_items.clone(),
        );
        let outbox_pending_bytes = Gauge::default();
        registry.register(
            "outbox_pending_bytes",
            "Bytes of DICOM instances in the PACS outbox waiting for delivery",
            outbox_pending_bytes.clone(),
        );
        let outbox_failed_items = Gauge::default();
        registry.register(
            "outbox_failed_items",
            "DICOM instances the PACS refused permanently, kept in the outbox's failed/ folder",
            outbox_failed_items.clone(),
        );
        let outbox_stored = Counter::default();
        registry.register(
            "outbox_stored",
            "DICOM instances the PACS confirmed storing",
            outbox_stored.clone(),
        );
        let outbox_retries = Counter::default();
        registry.register(
            "outbox_retries",
            "PACS associations that failed in transport and are retried",
            outbox_retries.clone(),
        );
        let pacs_reachable = Gauge::default();
        registry.register(
            "pacs_reachable",
            "1 if the last delivery attempt reached the PACS, else 0",
            pacs_reachable.clone(),
        );
        Metrics {
            registry,
            requests,
            inflight,
            queue_depth,
            queue_seconds,
            compute_seconds,
            batch_size,
            dropped,
            outbox_pending_items,
            outbox_pending_bytes,
            outbox_failed_items,
            outbox_stored,
            outbox_retries,
            pacs_reachable,
        }
    }
}

impl Metrics {
    /// The text exposition format (`text/plain; version=0.0.4` compatible OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn model(model: &str) -> ModelLabel {
        ModelLabel {
            model: model.to_string(),
        }
    }

    /// Counts a finished request.
    pub fn finished(&self, model: &str, protocol: &str, code: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_string(),
                protocol: protocol.to_string(),
                code: code_name(code).to_string(),
            })
            .inc();
    }
}

/// Holds an in-flight slot for the life of a request and counts its outcome once.
pub struct RequestGuard<'a> {
    metrics: &'a Metrics,
    model: String,
    protocol: &'static str,
    counted: bool,
}

impl<'a> RequestGuard<'a> {
    pub fn new(metrics: &'a Metrics, model: &str, protocol: &'static str) -> Self {
        metrics.inflight.inc();
        RequestGuard {
            metrics,
            model: model.to_string(),
            protocol,
            counted: false,
        }
    }

    /// Records the outcome and passes the result through.
    pub fn finish<T>(mut self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics.finished(&self.model, self.protocol, code);
        self.counted = true;
        result
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        if !self.counted {
            // The handler was dropped before finishing: the client cancelled or its deadline passed.
            self.metrics
                .finished(&self.model, self.protocol, tonic::Code::Cancelled);
        }
        self.metrics.inflight.dec();
    }
}

/// The canonical upper-case gRPC code names, as used in Prometheus labels by other gRPC servers.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
