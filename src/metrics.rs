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
    /// The model version (repository version directory; "1" for a single file).
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    /// Empty for requests refused before a model version was chosen.
    pub version: String,
    /// The RPC's protocol: "kserve", "inferd" or "mrd" (an MRD streaming session).
    pub protocol: String,
    /// The gRPC status code name, e.g. "OK", "RESOURCE_EXHAUSTED".
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub model: String,
    pub version: String,
    /// "expired" (deadline passed in the queue) or "abandoned" (client gone).
    pub reason: String,
}

type Hist = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// How often something happened and its total duration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub ns: u64,
}

impl Tally {
    fn add(&mut self, d: std::time::Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64);
    }
}

/// Cumulative statistics of one model, as Triton's statistics extension reports them (KServe
/// `ModelStatistics`); the same events feed the Prometheus metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModelStats {
    /// Requests answered OK / with an error (or cancelled), from arrival to answer.
    pub success: Tally,
    pub fail: Tally,
    /// Items between admission and the start of their batch.
    pub queue: Tally,
    /// Items on the device (each counts its batch's whole time).
    pub compute: Tally,
    /// Items and batches executed successfully.
    pub inference_count: u64,
    pub execution_count: u64,
    /// Milliseconds since the epoch of the last successful execution (0: none).
    pub last_inference_ms: u64,
    /// Successful executions and their time, by batch size.
    pub batches: std::collections::BTreeMap<usize, Tally>,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub inflight: Gauge,
    /// Bytes reserved against the memory budget by requests and MRD sessions in progress (set when
    /// scraped).
    pub memory_reserved_bytes: Gauge,
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
    /// Per model name.
    stats: std::sync::Mutex<std::collections::HashMap<String, ModelStats>>,
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
        let memory_reserved_bytes = Gauge::default();
        registry.register(
            "memory_reserved_bytes",
            "Bytes reserved against the memory budget (--memory-budget-mb) by work in progress",
            memory_reserved_bytes.clone(),
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
            memory_reserved_bytes,
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
            stats: Default::default(),
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

    /// The labels of a model version's series.
    pub fn model(info: &crate::models::ModelInfo) -> ModelLabel {
        ModelLabel {
            model: info.name.clone(),
            version: info.version.clone(),
        }
    }

    fn with_stats(&self, model: &str, version: &str, f: impl FnOnce(&mut ModelStats)) {
        // each update is a few additions: a poisoned lock still holds consistent numbers
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        f(stats.entry(stats_key(model, version)).or_default());
    }

    /// Records one batch run by a device worker: its items' queue times and its compute time, and
    /// whether it succeeded.
    pub fn record_batch(
        &self,
        model: &str,
        version: &str,
        queued: &[std::time::Duration],
        compute: std::time::Duration,
        ok: bool,
    ) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.with_stats(model, version, |s| {
            queued.iter().for_each(|&q| s.queue.add(q));
            if ok {
                let n = queued.len();
                (0..n).for_each(|_| s.compute.add(compute));
                s.inference_count += n as u64;
                s.execution_count += 1;
                s.batches.entry(n).or_default().add(compute);
                s.last_inference_ms = now_ms;
            }
        });
    }

    /// A model version's statistics so far.
    pub fn stats(&self, model: &str, version: &str) -> ModelStats {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .get(&stats_key(model, version))
            .cloned()
            .unwrap_or_default()
    }

    /// Counts a finished request.
    pub fn finished(&self, model: &str, version: &str, protocol: &str, code: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_string(),
                version: version.to_string(),
                protocol: protocol.to_string(),
                code: code_name(code).to_string(),
            })
            .inc();
    }
}

/// Statistics are kept per model version, as the Prometheus series are.
fn stats_key(model: &str, version: &str) -> String {
    format!("{model}\0{version}")
}

/// Holds an in-flight slot for the life of a request and counts its outcome once.
pub struct RequestGuard<'a> {
    metrics: &'a Metrics,
    model: String,
    version: String,
    protocol: &'static str,
    counted: bool,
    start: std::time::Instant,
}

impl<'a> RequestGuard<'a> {
    /// A request for `model` (its name and version).
    pub fn new(
        metrics: &'a Metrics,
        model: &crate::models::ModelInfo,
        protocol: &'static str,
    ) -> Self {
        Self::for_name(metrics, &model.name, &model.version, protocol)
    }

    /// A request counted under a model name and version (empty before a model is chosen).
    pub fn for_name(
        metrics: &'a Metrics,
        model: &str,
        version: &str,
        protocol: &'static str,
    ) -> Self {
        metrics.inflight.inc();
        RequestGuard {
            metrics,
            model: model.to_string(),
            version: version.to_string(),
            protocol,
            counted: false,
            start: std::time::Instant::now(),
        }
    }

    /// Records the outcome and passes the result through.
    pub fn finish<T>(mut self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics
            .finished(&self.model, &self.version, self.protocol, code);
        self.tally(code == tonic::Code::Ok);
        self.counted = true;
        result
    }
}

impl RequestGuard<'_> {
    fn tally(&self, ok: bool) {
        let elapsed = self.start.elapsed();
        self.metrics.with_stats(&self.model, &self.version, |s| {
            if ok {
                s.success.add(elapsed)
            } else {
                s.fail.add(elapsed)
            }
        });
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        if !self.counted {
            // The handler was dropped before finishing: the client cancelled or its deadline passed.
            self.metrics.finished(
                &self.model,
                &self.version,
                self.protocol,
                tonic::Code::Cancelled,
            );
            self.tally(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statistics_count_requests_items_and_batches() {
        let m = Metrics::default();
        let ms = Duration::from_millis;
        let a = crate::models::ModelInfo::stub("a", "1", crate::models::Family::Bridge);
        m.record_batch("a", "1", &[ms(1), ms(3)], ms(10), true);
        m.record_batch("a", "1", &[ms(2)], ms(5), true);
        m.record_batch("a", "1", &[ms(4)], ms(7), false);
        m.record_batch("a", "2", &[ms(4)], ms(7), true);
        RequestGuard::new(&m, &a, "kserve")
            .finish(Ok::<_, tonic::Status>(()))
            .unwrap();
        let _ = RequestGuard::new(&m, &a, "kserve")
            .finish(Err::<(), _>(tonic::Status::invalid_argument("bad")));
        drop(RequestGuard::new(&m, &a, "inferd")); // cancelled: a failure
        assert_eq!(
            m.stats("a", "2").inference_count,
            1,
            "versions are counted apart"
        );
        let s = m.stats("a", "1");
        assert_eq!((s.success.count, s.fail.count), (1, 2));
        assert_eq!(
            s.queue,
            Tally {
                count: 4,
                ns: 10_000_000
            }
        );
        assert_eq!(
            s.compute,
            Tally {
                count: 3,
                ns: 25_000_000
            }
        );
        assert_eq!((s.inference_count, s.execution_count), (3, 2));
        assert_eq!(
            s.batches[&2],
            Tally {
                count: 1,
                ns: 10_000_000
            }
        );
        assert_eq!(
            s.batches[&1],
            Tally {
                count: 1,
                ns: 5_000_000
            }
        );
        assert!(s.last_inference_ms > 0);
        assert_eq!(m.stats("b", "1"), ModelStats::default());
    }
}
