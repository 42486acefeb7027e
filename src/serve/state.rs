//! What every service shares: the loaded models and their scheduler (once loading has finished),
//! metrics, limits, and the readiness flags that health checks and ServerReady report.

use crate::api::validate::{Limits, ReconPlan};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::{Family, ModelInfo};
use crate::mri::radial::{RadialOperator, TrajectorySpec};
use crate::sched::Scheduler;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;

/// The KServe name of the default reconstruction model (see the README's model contracts).
pub const RECON_ALIAS: &str = "recon";

pub struct ServerState {
    loaded: OnceLock<Loaded>,
    draining: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub stream_inflight: usize,
    /// Longest a client stream may go without sending a message.
    pub stream_idle: std::time::Duration,
    /// Bytes reserved by requests in progress, against the server's memory budget.
    pub budget: Arc<super::budget::MemoryBudget>,
    /// DICOM output and PACS delivery.
    pub dicom: super::dicom_out::DicomOut,
    /// Client identities, per-client limits and who may ask for high priority.
    pub clients: super::clients::ClientPolicy,
    /// NUFFT operators of recently used trajectories.
    pub operators: OperatorCache,
}

/// Trajectories whose operators stay cached.
const OPERATOR_CACHE: usize = 16;

/// NUFFT operators of recently used trajectories (planning one costs milliseconds to a few hundred; a
/// scanner protocol reuses its trajectory for every slice and series). Planning is single-flight:
/// concurrent requests for one trajectory wait for one plan, built on a blocking thread. Entries
/// match on the whole trajectory, not a hash of it.
#[derive(Default)]
pub struct OperatorCache {
    /// Least recently used first.
    entries: std::sync::Mutex<Vec<CachedOperator>>,
}

struct CachedOperator {
    spec: TrajectorySpec,
    n: usize,
    op: Arc<tokio::sync::OnceCell<Arc<RadialOperator>>>,
}

impl OperatorCache {
    /// The operator of a trajectory for an `n × n` image: cached, being planned (then awaited), or
    /// planned now.
    pub async fn get(&self, spec: &TrajectorySpec, n: usize) -> Result<Arc<RadialOperator>> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let found = entries.iter().position(|e| e.n == n && e.spec.same(spec));
            let entry = match found {
                Some(i) => entries.remove(i),
                None => CachedOperator {
                    spec: spec.clone(),
                    n,
                    op: Arc::default(),
                },
            };
            let cell = entry.op.clone();
            entries.push(entry);
            if entries.len() > OPERATOR_CACHE {
                entries.remove(0);
            }
            cell
        };
        let planned = cell
            .get_or_try_init(|| async {
                let spec = spec.clone();
                tokio::task::spawn_blocking(move || spec.build(n))
                    .await
                    .map_err(|e| Error::Internal(format!("planning the trajectory failed: {e}")))?
                    .map(Arc::new)
            })
            .await
            .cloned();
        if planned.is_err() {
            // a trajectory that cannot be planned is not kept
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.retain(|e| !Arc::ptr_eq(&e.op, &cell));
        }
        planned
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// Models that finished loading and warming up, and the scheduler that runs them.
pub struct Loaded {
    /// Indexed like the scheduler's engines.
    pub models: Vec<ModelInfo>,
    pub scheduler: Scheduler,
    /// The reconstruction model used when a request names none.
    pub default_recon: Option<usize>,
    /// The bridge used when a request names none.
    pub default_bridge: Option<usize>,
}

impl Loaded {
    /// Finds a model by name; `recon` names the default reconstruction model unless a model is
    /// called that.
    pub fn find(&self, name: &str) -> Result<usize> {
        if let Some(i) = self.models.iter().position(|m| m.name == name) {
            return Ok(i);
        }
        if name == RECON_ALIAS {
            if let Some(i) = self.default_recon {
                return Ok(i);
            }
        }
        Err(Error::NotFound(format!(
            "unknown model {name:?}; loaded models: {:?}",
            self.names()
        )))
    }

    /// Finds a model of `family`; an empty name selects the family's default.
    pub fn find_family(&self, name: &str, family: Family) -> Result<usize> {
        let i = match (name.is_empty(), family) {
            (true, Family::Recon) => self
                .default_recon
                .ok_or_else(|| Error::NotFound("no reconstruction model is loaded".to_string()))?,
            (true, Family::Bridge) => self
                .default_bridge
                .ok_or_else(|| Error::NotFound("no bridge model is loaded".to_string()))?,
            (true, Family::Graph) => {
                let graph = |m: &&ModelInfo| m.family == Family::Graph;
                self.models
                    .iter()
                    .position(|m| graph(&m) && m.name == crate::models::DEFAULT_GRAPH_MODEL)
                    .or_else(|| self.models.iter().position(|m| graph(&m)))
                    .ok_or_else(|| Error::NotFound("no set/graph model is loaded".to_string()))?
            }
            _ => self.find(name)?,
        };
        if self.models[i].family != family {
            return Err(Error::InvalidArgument(format!(
                "model {name:?} is a {} model, expected a {} model",
                self.models[i].family.as_str(),
                family.as_str()
            )));
        }
        Ok(i)
    }

    /// The names clients may use (model names, then the `recon` alias when it applies).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.iter().map(|m| m.name.clone()).collect();
        if self.default_recon.is_some() && !names.iter().any(|n| n == RECON_ALIAS) {
            names.push(RECON_ALIAS.to_string());
        }
        names
    }
}

impl ServerState {
    pub fn new(
        metrics: Arc<Metrics>,
        limits: Limits,
        stream_inflight: usize,
        stream_idle: std::time::Duration,
        budget: Arc<super::budget::MemoryBudget>,
        dicom: super::dicom_out::DicomOut,
        clients: super::clients::ClientPolicy,
    ) -> Self {
        ServerState {
            stream_idle,
            budget,
            dicom,
            clients,
            loaded: OnceLock::new(),
            draining: AtomicBool::new(false),
            metrics,
            limits,
            stream_inflight,
            operators: OperatorCache::default(),
        }
    }

    /// Fills in the operator of a plan's non-Cartesian trajectory.
    pub async fn with_operator(&self, mut plan: ReconPlan) -> Result<ReconPlan> {
        if let Some(spec) = &plan.trajectory {
            plan.radial = Some(self.operators.get(spec, plan.ny).await?);
        }
        Ok(plan)
    }

    pub fn set_loaded(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    /// The loaded models, or UNAVAILABLE while they are still loading.
    pub fn loaded(&self) -> Result<&Loaded> {
        self.loaded.get().ok_or_else(|| {
            Error::Unavailable("the server is still loading its models; retry shortly".into())
        })
    }

    pub fn loaded_opt(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// Ready = loaded, warmed up and not shutting down.
    pub fn ready(&self) -> bool {
        self.loaded.get().is_some() && !self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// The deadline a client set with its gRPC timeout (`grpc-timeout` header), if any.
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(v).map(|d| Instant::now() + d)
}

/// `grpc-timeout` values: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    /// Concurrent requests for one trajectory share one plan; an equal trajectory sent as a new
    /// vector finds it; a trajectory that differs in one coordinate gets its own; the least recently
    /// used entry leaves when the cache is full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operators_are_planned_once_per_trajectory_and_matched_in_full() {
        use crate::mri::traj::{Radial, SpokeAngles};
        let n = 64;
        let coords = |shift: f32| -> TrajectorySpec {
            let mut c = Radial::new(n, 2 * n, 32, SpokeAngles::GoldenAngle)
                .unwrap()
                .coords();
            c[7][1] += shift;
            TrajectorySpec::Coords(Arc::new(c))
        };
        let cache = Arc::new(OperatorCache::default());
        let spec = coords(0.0);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, spec) = (cache.clone(), spec.clone());
                tokio::spawn(async move { cache.get(&spec, n).await.unwrap() })
            })
            .collect();
        let mut ops = Vec::new();
        for t in tasks {
            ops.push(t.await.unwrap());
        }
        let first = ops[0].clone();
        for op in &ops {
            assert!(Arc::ptr_eq(op, &first), "planned twice");
        }
        assert_eq!(cache.len(), 1);
        let again = cache.get(&coords(0.0), n).await.unwrap();
        assert!(Arc::ptr_eq(&again, &first));
        let other = cache.get(&coords(0.25), n).await.unwrap();
        assert!(!Arc::ptr_eq(&other, &first));
        assert_eq!(cache.len(), 2);
        for i in 0..OPERATOR_CACHE {
            cache.get(&coords(0.01 * (i + 1) as f32), n).await.unwrap();
        }
        assert_eq!(cache.len(), OPERATOR_CACHE);
        let replanned = cache.get(&coords(0.0), n).await.unwrap();
        assert!(!Arc::ptr_eq(&replanned, &first), "the oldest entry stayed");
    }
}
