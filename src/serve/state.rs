//! What every service shares: the loaded models and their scheduler (once loading has finished),
//! metrics, limits, and the readiness flags that health checks and ServerReady report.

use crate::api::validate::{Limits, ReconPlan};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::Family;
use crate::mri::radial::{RadialOperator, TrajectorySpec};
use crate::sched::{ModelHandle, Scheduler};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
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

/// Models that finished loading and warming up, and the scheduler that runs them. Versions come and
/// go at run time (the model repository, [`super::repository`]); a request resolves a name once, to a
/// [`ModelHandle`] that keeps its version alive until the request is answered.
pub struct Loaded {
    catalogue: Arc<RwLock<Catalogue>>,
    pub scheduler: Scheduler,
    /// The reconstruction model used when a request names none (configured; else the shipped
    /// default's name; else the first reconstruction model loaded).
    pub default_model: Option<String>,
    /// The model repository, when the server has one.
    pub repository: Option<Arc<super::repository::Repository>>,
}

#[derive(Default)]
struct Catalogue {
    /// Serving versions, in load order.
    ready: Vec<ModelHandle>,
    /// Versions that are not serving, with their state and why.
    other: Vec<IndexEntry>,
}

/// A model version as the repository index reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// READY, LOADING, UNLOADING or UNAVAILABLE.
    pub state: &'static str,
    pub reason: String,
}

/// Versions order numerically where both are numbers ("10" after "9").
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl Loaded {
    pub fn new(
        scheduler: Scheduler,
        default_model: Option<String>,
        repository: Option<Arc<super::repository::Repository>>,
    ) -> Self {
        Loaded {
            catalogue: Arc::default(),
            scheduler,
            default_model,
            repository,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalogue> {
        // every mutation is a single push or remove: a poisoned lock still holds a consistent list
        self.catalogue.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Catalogue> {
        self.catalogue.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every serving model version, in load order.
    pub fn models(&self) -> Vec<ModelHandle> {
        self.read().ready.clone()
    }

    /// The newest serving version of `name`, if any.
    fn latest(ready: &[ModelHandle], name: &str) -> Option<ModelHandle> {
        ready
            .iter()
            .filter(|m| m.info().name == name)
            .max_by(|a, b| version_order(&a.info().version, &b.info().version))
            .cloned()
    }

    /// Finds a model by name (its newest serving version); `recon` names the default reconstruction
    /// model unless a model is called that.
    pub fn find(&self, name: &str) -> Result<ModelHandle> {
        let catalogue = self.read();
        if let Some(m) = Self::latest(&catalogue.ready, name) {
            return Ok(m);
        }
        if name == RECON_ALIAS {
            if let Some(m) = self.default_of(&catalogue, Family::Recon) {
                return Ok(m);
            }
        }
        Err(Error::NotFound(format!(
            "unknown model {name:?}; loaded models: {:?}",
            Self::names_of(self, &catalogue)
        )))
    }

    /// Finds one version of a model; an empty version means the newest serving one.
    pub fn find_version(&self, name: &str, version: &str) -> Result<ModelHandle> {
        let newest = self.find(name)?;
        if version.is_empty() || version == newest.info().version {
            return Ok(newest);
        }
        let catalogue = self.read();
        let versions: Vec<&str> = catalogue
            .ready
            .iter()
            .filter(|m| m.info().name == newest.info().name)
            .map(|m| m.info().version.as_str())
            .collect();
        catalogue
            .ready
            .iter()
            .find(|m| m.info().name == newest.info().name && m.info().version == version)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "model {name:?} has no serving version {version:?}; serving versions: {versions:?}"
                ))
            })
    }

    /// The default model of a family: the configured reconstruction model, else the shipped
    /// default's name, else the first of the family loaded.
    fn default_of(&self, catalogue: &Catalogue, family: Family) -> Option<ModelHandle> {
        let preferred = match family {
            Family::Recon => self
                .default_model
                .as_deref()
                .unwrap_or(crate::models::DEFAULT_RECON_MODEL),
            Family::Bridge => crate::models::DEFAULT_BRIDGE_MODEL,
            Family::Graph => crate::models::DEFAULT_GRAPH_MODEL,
        };
        Self::latest(&catalogue.ready, preferred)
            .filter(|m| m.info().family == family)
            .or_else(|| {
                if family == Family::Recon && self.default_model.is_some() {
                    return None; // a configured default that is not loaded is not replaced
                }
                let first = catalogue.ready.iter().find(|m| m.info().family == family)?;
                Self::latest(&catalogue.ready, &first.info().name)
            })
    }

    /// The default model of `family`, if one is serving.
    pub fn default_model(&self, family: Family) -> Option<ModelHandle> {
        self.default_of(&self.read(), family)
    }

    /// Finds a model of `family`; an empty name selects the family's default.
    pub fn find_family(&self, name: &str, family: Family) -> Result<ModelHandle> {
        let m = if name.is_empty() {
            self.default_model(family)
                .ok_or_else(|| Error::NotFound(format!("no {} model is loaded", family.as_str())))?
        } else {
            self.find(name)?
        };
        if m.info().family != family {
            return Err(Error::InvalidArgument(format!(
                "model {name:?} is a {} model, expected a {} model",
                m.info().family.as_str(),
                family.as_str()
            )));
        }
        Ok(m)
    }

    fn names_of(&self, catalogue: &Catalogue) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for m in &catalogue.ready {
            if !names.contains(&m.info().name) {
                names.push(m.info().name.clone());
            }
        }
        if self.default_of(catalogue, Family::Recon).is_some()
            && !names.iter().any(|n| n == RECON_ALIAS)
        {
            names.push(RECON_ALIAS.to_string());
        }
        names
    }

    /// The names clients may use (model names, then the `recon` alias when it applies).
    pub fn names(&self) -> Vec<String> {
        self.names_of(&self.read())
    }

    /// Starts serving a loaded version (replacing a serving one of the same name and version, which
    /// is returned).
    pub fn insert(&self, model: ModelHandle) -> Option<ModelHandle> {
        let mut catalogue = self.write();
        let (name, version) = (model.info().name.clone(), model.info().version.clone());
        catalogue
            .other
            .retain(|e| !(e.name == name && e.version == version));
        let old = catalogue
            .ready
            .iter()
            .position(|m| m.info().name == name && m.info().version == version)
            .map(|i| catalogue.ready.remove(i));
        catalogue.ready.push(model);
        old
    }

    /// Stops serving a version: new requests no longer find it; those holding it finish.
    pub fn remove(&self, name: &str, version: &str, reason: &str) -> Option<ModelHandle> {
        let mut catalogue = self.write();
        let i = catalogue
            .ready
            .iter()
            .position(|m| m.info().name == name && m.info().version == version)?;
        let m = catalogue.ready.remove(i);
        Self::set(&mut catalogue, name, version, "UNAVAILABLE", reason);
        Some(m)
    }

    /// Records a version that is not serving (loading, or failed to load and why).
    pub fn mark(&self, name: &str, version: &str, state: &'static str, reason: &str) {
        Self::set(&mut self.write(), name, version, state, reason);
    }

    /// Marks a version UNAVAILABLE with a reason later, from a task that outlives the borrow.
    pub fn index_handle(&self) -> impl Fn(&str, &str, &str) + Send + 'static {
        let catalogue = self.catalogue.clone();
        move |name, version, reason| {
            let mut c = catalogue.write().unwrap_or_else(|e| e.into_inner());
            Self::set(&mut c, name, version, "UNAVAILABLE", reason);
        }
    }

    fn set(
        catalogue: &mut Catalogue,
        name: &str,
        version: &str,
        state: &'static str,
        reason: &str,
    ) {
        catalogue
            .other
            .retain(|e| !(e.name == name && e.version == version));
        catalogue.other.push(IndexEntry {
            name: name.into(),
            version: version.into(),
            state,
            reason: reason.into(),
        });
    }

    /// Every version the server knows of: serving ones READY, the others with their state and
    /// reason; ordered by name, then version.
    pub fn index(&self) -> Vec<IndexEntry> {
        let catalogue = self.read();
        let mut out: Vec<IndexEntry> = catalogue
            .ready
            .iter()
            .map(|m| IndexEntry {
                name: m.info().name.clone(),
                version: m.info().version.clone(),
                state: "READY",
                reason: String::new(),
            })
            .collect();
        for e in &catalogue.other {
            if !out
                .iter()
                .any(|r| r.name == e.name && r.version == e.version)
            {
                out.push(e.clone());
            }
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(version_order(&a.version, &b.version))
        });
        out
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

    struct Fake(crate::models::ModelInfo);

    impl crate::models::Engine for Fake {
        fn info(&self) -> &crate::models::ModelInfo {
            &self.0
        }
        fn info_mut(&mut self) -> &mut crate::models::ModelInfo {
            &mut self.0
        }
        fn warm_up(&self) -> Result<()> {
            Ok(())
        }
        fn run(&self, _: Vec<crate::models::Input>) -> Result<Vec<crate::models::Output>> {
            Err(Error::Internal("not run".into()))
        }
    }

    fn fake(name: &str, version: &str, family: Family) -> Arc<dyn crate::models::Engine> {
        Arc::new(Fake(crate::models::ModelInfo::stub(name, version, family)))
    }

    /// Versions resolve numerically (10 after 9), `recon` names the default reconstruction model,
    /// removed versions leave the lookups and stay in the index with their reason.
    #[test]
    fn catalogue_resolves_names_versions_and_defaults() {
        let scheduler = Scheduler::start(
            crate::sched::SchedulerConfig {
                capacity: 8,
                workers: 1,
                priority_aging: None,
            },
            Arc::default(),
        )
        .unwrap();
        let loaded = Loaded::new(scheduler, None, None);
        let batching = crate::sched::policy::BatchConfig {
            max_batch: 1,
            max_delay: Duration::ZERO,
            capacity: 8,
        };
        for (name, version, family) in [
            ("mri", "9", Family::Recon),
            ("mri", "10", Family::Recon),
            ("sb", "1", Family::Bridge),
        ] {
            let h = loaded.scheduler.add(fake(name, version, family), batching);
            assert!(loaded.insert(h).is_none());
        }
        assert_eq!(loaded.find("mri").unwrap().info().version, "10");
        assert_eq!(loaded.find_version("mri", "9").unwrap().info().version, "9");
        assert_eq!(loaded.find_version("mri", "").unwrap().info().version, "10");
        let e = loaded.find_version("mri", "3").unwrap_err().to_string();
        assert!(e.contains("[\"9\", \"10\"]"), "{e}");
        assert_eq!(loaded.find("recon").unwrap().info().name, "mri");
        assert_eq!(
            loaded.find_family("", Family::Bridge).unwrap().info().name,
            "sb"
        );
        assert!(loaded.find_family("sb", Family::Recon).is_err());
        assert_eq!(loaded.names(), ["mri", "sb", "recon"]);
        assert!(loaded.remove("mri", "10", "gone").is_some());
        assert_eq!(loaded.find("mri").unwrap().info().version, "9");
        let index = loaded.index();
        let v10 = index.iter().find(|e| e.version == "10").unwrap();
        assert_eq!((v10.state, v10.reason.as_str()), ("UNAVAILABLE", "gone"));
        // a reload of the same version replaces the serving one and clears its old state
        let h = loaded
            .scheduler
            .add(fake("mri", "10", Family::Recon), batching);
        assert!(loaded.insert(h).is_none());
        assert!(loaded.index().iter().all(|e| e.state == "READY"));
        let h = loaded
            .scheduler
            .add(fake("mri", "10", Family::Recon), batching);
        assert!(
            loaded.insert(h).is_some(),
            "the replaced version is handed back"
        );
        loaded.scheduler.close();
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
