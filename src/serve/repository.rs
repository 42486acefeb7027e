//! The model repository: versioned model files on disk, loaded and unloaded while the server runs.
//!
//! Layout (Triton's): `DIR/NAME/VERSION/model.safetensors`, VERSION a positive integer, and an
//! optional `DIR/NAME/config.json` in Triton's JSON model configuration:
//!
//! ```json
//! { "version_policy": { "latest": { "num_versions": 1 } },
//!   "max_batch_size": 4,
//!   "dynamic_batching": { "max_queue_delay_microseconds": 2000 } }
//! ```
//!
//! `version_policy` is `{"latest": {"num_versions": N}}` (the default, N = 1),
//! `{"specific": {"versions": [1, 3]}}` or `{"all": {}}`.
//!
//! Loading a model loads the versions its policy selects that are not already serving (or whose
//! file changed), warms them up, and only then makes them visible; versions the policy no longer
//! selects stop taking requests afterwards, so each request is answered wholly by one version. If
//! any version fails to load, nothing is unloaded: the serving versions stay, and the index says why.
//! A version that stops serving keeps its memory until the requests it admitted are answered, then
//! frees it.

use super::config::ServeConfig;
use super::state::Loaded;
use crate::error::{Error, Result};
use crate::models::{self, Engine, ModelInfo, ModelSpec, WeightsSource};
use crate::sched::policy::BatchConfig;
use crate::sched::ModelHandle;
use candle_core::Device;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The file each version directory holds.
pub const MODEL_FILE: &str = "model.safetensors";
/// A model's optional configuration next to its version directories.
pub const CONFIG_FILE: &str = "config.json";
/// Largest config.json read (a model configuration is a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// How the repository's models are loaded (`--model-control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModelControl {
    /// Every model at start; no changes afterwards.
    #[default]
    None,
    /// The models named by `--load-model` at start; then the load and unload RPCs.
    Explicit,
    /// Every model at start; the repository is scanned for new, changed and removed versions.
    Poll,
}

/// Which versions of a model serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The N highest-numbered versions.
    Latest(usize),
    Specific(Vec<u64>),
    All,
}

impl VersionPolicy {
    /// The versions of `available` (ascending) this policy serves.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::Specific(v) => available
                .iter()
                .copied()
                .filter(|a| v.contains(a))
                .collect(),
            VersionPolicy::All => available.to_vec(),
        }
    }
}

/// A repository model's configuration (config.json, or the override sent with a load request).
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    pub version_policy: VersionPolicy,
    pub max_batch: Option<usize>,
    pub max_queue_delay: Option<Duration>,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            version_policy: VersionPolicy::Latest(1),
            max_batch: None,
            max_queue_delay: None,
        }
    }
}

/// A JSON integer, also as a string (protobuf's JSON form of int64).
fn json_uint(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

impl RepoConfig {
    /// Parses Triton's JSON model configuration (the fields inferd uses; others are ignored).
    pub fn parse(json: &str) -> Result<Self> {
        let bad = |what: &str| {
            Error::InvalidArgument(format!(
                "model configuration: {what}; expected e.g. {{\"version_policy\": {{\"latest\": {{\"num_versions\": 1}}}}, \"max_batch_size\": 4, \"dynamic_batching\": {{\"max_queue_delay_microseconds\": 2000}}}}"
            ))
        };
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let mut config = RepoConfig::default();
        if let Some(p) = obj.get("version_policy") {
            let p = p
                .as_object()
                .ok_or_else(|| bad("version_policy is not an object"))?;
            config.version_policy = match (p.get("latest"), p.get("specific"), p.get("all")) {
                (Some(l), None, None) => {
                    let n = l
                        .get("num_versions")
                        .map(|n| json_uint(n).filter(|&n| (1..=1000).contains(&n)))
                        .unwrap_or(Some(1))
                        .ok_or_else(|| bad("latest.num_versions must be 1 to 1000"))?;
                    VersionPolicy::Latest(n as usize)
                }
                (None, Some(s), None) => {
                    let versions = s
                        .get("versions")
                        .and_then(|v| v.as_array())
                        .ok_or_else(|| bad("specific.versions must be a list"))?
                        .iter()
                        .map(|v| json_uint(v).filter(|&v| v > 0))
                        .collect::<Option<Vec<u64>>>()
                        .filter(|v| !v.is_empty() && v.len() <= 1000)
                        .ok_or_else(|| {
                            bad("specific.versions must be 1 to 1000 positive integers")
                        })?;
                    VersionPolicy::Specific(versions)
                }
                (None, None, Some(_)) => VersionPolicy::All,
                _ => {
                    return Err(bad(
                        "version_policy needs exactly one of latest, specific, all",
                    ))
                }
            };
        }
        if let Some(b) = obj.get("max_batch_size") {
            let b = json_uint(b)
                .filter(|&b| (1..=4096).contains(&b))
                .ok_or_else(|| bad("max_batch_size must be 1 to 4096"))?;
            config.max_batch = Some(b as usize);
        }
        if let Some(d) = obj
            .get("dynamic_batching")
            .and_then(|d| d.get("max_queue_delay_microseconds"))
        {
            let us = json_uint(d)
                .filter(|&us| us <= 60_000_000)
                .ok_or_else(|| bad("max_queue_delay_microseconds must be 0 to 60000000"))?;
            config.max_queue_delay = Some(Duration::from_micros(us));
        }
        Ok(config)
    }
}

/// Model names that are safe as one path component and as a metric label.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "model name {name:?} is not valid: expected 1 to 128 of A-Z a-z 0-9 - _ . not starting with a dot"
        )))
    }
}

/// What identifies one file's contents between scans (size and modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Result<Fingerprint> {
    let m = std::fs::metadata(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
    Ok(Fingerprint {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// What became of a version file: loaded, or refused and why.
#[derive(Debug, Clone)]
struct FileState {
    print: Fingerprint,
    failed: Option<String>,
}

/// One model's directory: its configuration and its version files (ascending).
struct ModelDir {
    config: RepoConfig,
    versions: BTreeMap<u64, PathBuf>,
}

/// The repository on disk and the settings every load uses.
pub struct Repository {
    dir: PathBuf,
    pub control: ModelControl,
    device: Device,
    fast_conv: bool,
    /// Batching flags (global and per model) applied under a repository model's own settings.
    batching: Batching,
    /// One load or unload at a time.
    busy: tokio::sync::Mutex<()>,
    /// What each serving repository version was loaded from, and files that failed to load (so a
    /// scan does not retry an unchanged broken file).
    files: Mutex<HashMap<(String, u64), FileState>>,
    /// Repository models that are loaded (the scan unloads them when their directory goes).
    names: Mutex<Vec<String>>,
}

/// The batching flags of [`ServeConfig`].
#[derive(Clone)]
pub struct Batching {
    max_batch: Option<usize>,
    max_queue_delay: Option<Duration>,
    capacity: usize,
    per_model: Vec<super::config::ModelBatching>,
}

impl Batching {
    pub fn from_config(config: &ServeConfig) -> Self {
        Batching {
            max_batch: config.max_batch,
            max_queue_delay: config
                .max_queue_delay_ms
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            capacity: config.model_queue_capacity.max(1),
            per_model: config.batching.clone(),
        }
    }

    /// A model's batching: the family default, then the global flags, then the repository's
    /// config, then `--batching NAME=...`.
    pub fn for_model(&self, info: &ModelInfo, repo: Option<&RepoConfig>) -> BatchConfig {
        let mut c = BatchConfig {
            max_batch: self.max_batch.unwrap_or(info.default_batching.max_batch),
            max_delay: self
                .max_queue_delay
                .unwrap_or(info.default_batching.max_delay),
            capacity: self.capacity,
        };
        if let Some(r) = repo {
            c.max_batch = r.max_batch.unwrap_or(c.max_batch);
            c.max_delay = r.max_queue_delay.unwrap_or(c.max_delay);
        }
        if let Some(b) = self.per_model.iter().find(|b| b.model == info.name) {
            c.max_batch = b.max_batch;
            c.max_delay = b.max_delay;
        }
        c.max_batch = c.max_batch.max(1);
        c
    }
}

/// Loads a model file as `version` and warms it up (blocking: call on a blocking thread).
pub fn load_engine(
    spec: &ModelSpec,
    version: &str,
    device: &Device,
    fast_conv: bool,
) -> Result<Arc<dyn Engine>> {
    // one trace per load: reading the weights and the warm-up passes (their network spans)
    let _span = tracing::info_span!("model_load", model = %spec.name, version).entered();
    let start = std::time::Instant::now();
    let mut engine = models::load_with(spec, device, fast_conv)?;
    engine.info_mut().version = version.to_string();
    engine.warm_up()?;
    tracing::info!(
        model = %spec.name,
        version,
        family = engine.info().family.as_str(),
        parameters = engine.info().parameters,
        seconds = start.elapsed().as_secs_f32(),
        "model loaded and warmed up"
    );
    Ok(Arc::from(engine))
}

impl Repository {
    pub fn new(config: &ServeConfig, dir: PathBuf, device: Device) -> anyhow::Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "the model repository {} is not a directory",
            dir.display()
        );
        Ok(Repository {
            dir,
            control: config.model_control,
            device,
            fast_conv: config.cpu_fast_conv,
            batching: Batching::from_config(config),
            busy: tokio::sync::Mutex::new(()),
            files: Mutex::default(),
            names: Mutex::default(),
        })
    }

    /// The models in the repository (directories with at least one version), sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot read the model repository {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .filter(|n| self.scan(n).is_ok_and(|d| !d.versions.is_empty()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn scan(&self, name: &str) -> Result<ModelDir> {
        check_name(name)?;
        let dir = self.dir.join(name);
        let entries = std::fs::read_dir(&dir).map_err(|_| {
            Error::NotFound(format!(
                "model {name:?} is not in the model repository (no directory {})",
                dir.display()
            ))
        })?;
        let mut versions = BTreeMap::new();
        for e in entries.flatten() {
            let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let file = e.path().join(MODEL_FILE);
            if v > 0 && file.is_file() {
                versions.insert(v, file);
            }
        }
        let config_path = dir.join(CONFIG_FILE);
        let config = match std::fs::metadata(&config_path) {
            Ok(m) if m.len() > MAX_CONFIG_BYTES => {
                return Err(Error::InvalidArgument(format!(
                    "{} is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                    config_path.display(),
                    m.len()
                )))
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&config_path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot read {}: {e}", config_path.display()))
                })?;
                RepoConfig::parse(&text).map_err(|e| {
                    Error::InvalidArgument(format!("{}: {e}", config_path.display()))
                })?
            }
            Err(_) => RepoConfig::default(),
        };
        Ok(ModelDir { config, versions })
    }

    /// Loads `name`: the versions its policy selects (with `override_config` instead of its
    /// config.json when given). Versions already serving from an unchanged file stay as they are.
    pub async fn load(
        &self,
        loaded: &Loaded,
        name: &str,
        override_config: Option<&str>,
    ) -> Result<()> {
        let _busy = self.busy.lock().await;
        self.load_locked(loaded, name, override_config).await
    }

    async fn load_locked(
        &self,
        loaded: &Loaded,
        name: &str,
        override_config: Option<&str>,
    ) -> Result<()> {
        let mut dir = self.scan(name)?;
        if let Some(json) = override_config {
            dir.config = RepoConfig::parse(json)?;
        }
        let available: Vec<u64> = dir.versions.keys().copied().collect();
        let wanted = dir.config.version_policy.select(&available);
        if wanted.is_empty() {
            return Err(Error::NotFound(format!(
                "model {name:?}: no version matches its version policy {:?} (versions on disk: {available:?})",
                dir.config.version_policy
            )));
        }
        let serving: Vec<ModelHandle> = loaded
            .models()
            .into_iter()
            .filter(|m| m.info().name == name)
            .collect();
        let batching_changed = override_config.is_some();
        let mut fresh = Vec::new();
        let mut failures = Vec::new();
        for &v in &wanted {
            let path = &dir.versions[&v];
            let print = fingerprint(path)?;
            let key = (name.to_string(), v);
            let known = self.lock_files().get(&key).cloned();
            let is_serving = serving.iter().any(|m| m.info().version == v.to_string());
            match known {
                Some(FileState {
                    print: p,
                    failed: None,
                }) if p == print && is_serving && !batching_changed => continue,
                Some(FileState {
                    print: p,
                    failed: Some(reason),
                }) if p == print && override_config.is_none() => {
                    // an unchanged file that failed is not read again
                    failures.push(format!("version {v}: {reason}"));
                    continue;
                }
                _ => {}
            }
            loaded.mark(name, &v.to_string(), "LOADING", "");
            let spec = ModelSpec {
                name: name.to_string(),
                source: WeightsSource::File(path.clone()),
            };
            let (device, fast) = (self.device.clone(), self.fast_conv);
            let result = tokio::task::spawn_blocking(move || {
                load_engine(&spec, &v.to_string(), &device, fast)
            })
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("loading panicked: {e}"))));
            match result {
                Ok(engine) => {
                    let batching = self.batching.for_model(engine.info(), Some(&dir.config));
                    fresh.push((loaded.scheduler.add(engine, batching), print));
                }
                Err(e) => {
                    tracing::warn!(model = name, version = v, error = %e, "model version failed to load");
                    let reason = format!("failed to load {}: {e}", path.display());
                    self.lock_files().insert(
                        key,
                        FileState {
                            print,
                            failed: Some(reason.clone()),
                        },
                    );
                    if !is_serving {
                        // (a serving copy of this version stays as it is)
                        loaded.mark(name, &v.to_string(), "UNAVAILABLE", &reason);
                    }
                    failures.push(format!("version {v}: {reason}"));
                }
            }
        }
        // new versions serve first; then the ones the policy dropped stop
        for (handle, print) in fresh {
            let v: u64 = handle.info().version.parse().unwrap_or(0);
            self.lock_files().insert(
                (name.to_string(), v),
                FileState {
                    print,
                    failed: None,
                },
            );
            tracing::info!(model = name, version = v, "model version serving");
            if let Some(old) = loaded.insert(handle) {
                retire(loaded, old, "replaced by a new file of the same version");
            }
        }
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        if !failures.is_empty() {
            let serving: Vec<String> = loaded
                .models()
                .iter()
                .filter(|m| m.info().name == name)
                .map(|m| m.info().version.clone())
                .collect();
            return Err(Error::InvalidArgument(format!(
                "model {name:?} did not load completely ({}); serving versions: {serving:?}",
                failures.join("; ")
            )));
        }
        for m in serving {
            let v: u64 = m.info().version.parse().unwrap_or(0);
            if !wanted.contains(&v) {
                if let Some(old) = loaded.remove(
                    name,
                    &m.info().version,
                    "unloaded: not selected by the version policy",
                ) {
                    self.lock_files().remove(&(name.to_string(), v));
                    retire(loaded, old, "unloaded: not selected by the version policy");
                }
            }
        }
        Ok(())
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), FileState>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unloads every version of `name`; requests already admitted finish on it.
    pub async fn unload(&self, loaded: &Loaded, name: &str) -> Result<()> {
        let _busy = self.busy.lock().await;
        unload_all(loaded, name)?;
        self.lock_files().retain(|(n, _), _| n != name);
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| n != name);
        Ok(())
    }

    /// Loads what the start-up settings ask for: every repository model (control none or poll), or
    /// those named by --load-model (explicit). A model that fails is reported and skipped.
    pub async fn load_initial(&self, loaded: &Loaded, explicit: &[String]) -> Result<()> {
        let names = match self.control {
            ModelControl::Explicit if !explicit.iter().any(|n| n == "*") => explicit.to_vec(),
            _ => self.list()?,
        };
        for name in names {
            if let Err(e) = self.load(loaded, &name, None).await {
                tracing::error!(model = %name, error = %e, "repository model not loaded at start");
                if self.control == ModelControl::Explicit {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One scan in poll mode: loads new and changed versions, unloads models whose directory has
    /// gone (or holds no version).
    pub async fn poll(&self, loaded: &Loaded) {
        let present = match self.list() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "repository scan failed");
                return;
            }
        };
        let gone: Vec<String> = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model left the repository; unloading");
            if let Err(e) = self.unload(loaded, &name).await {
                tracing::warn!(model = %name, error = %e, "unloading failed");
            }
        }
        for name in present {
            if let Err(e) = self.load(loaded, &name, None).await {
                tracing::debug!(model = %name, error = %e, "repository scan: model not (fully) loaded");
            }
        }
    }
}

/// Stops serving every version of `name` (any model, from the repository or not).
pub fn unload_all(loaded: &Loaded, name: &str) -> Result<()> {
    let versions: Vec<String> = loaded
        .models()
        .iter()
        .filter(|m| m.info().name == name)
        .map(|m| m.info().version.clone())
        .collect();
    if versions.is_empty() && !loaded.index().iter().any(|e| e.name == name) {
        return Err(Error::NotFound(format!(
            "model {name:?} is not loaded; loaded models: {:?}",
            loaded.names()
        )));
    }
    for v in versions {
        if let Some(m) = loaded.remove(name, &v, "unloaded") {
            retire(loaded, m, "unloaded");
        }
    }
    Ok(())
}

/// A version that stopped taking requests: marked UNLOADING until the work it admitted is
/// answered, then its memory is freed (and returned to the operating system) and it is
/// UNAVAILABLE with `reason`.
fn retire(loaded: &Loaded, model: ModelHandle, reason: &str) {
    let (name, version) = (model.info().name.clone(), model.info().version.clone());
    // The index only shows UNLOADING while the name/version is not serving again (a reload of
    // the same version replaces it at once).
    let replaced = loaded
        .models()
        .iter()
        .any(|m| m.info().name == name && m.info().version == version);
    if !replaced {
        loaded.mark(
            &name,
            &version,
            "UNLOADING",
            "requests in progress are finishing",
        );
    }
    let reason = reason.to_string();
    let index = loaded.index_handle();
    tokio::spawn(async move {
        let ModelHandle { engine, .. } = model;
        // every queued item and every request holding the version holds a reference
        while Arc::strong_count(&engine) > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(engine);
        release_freed_memory();
        index(&name, &version, &reason);
        tracing::info!(model = %name, version = %version, "model version unloaded; memory freed");
    });
}

/// Returns freed heap pages to the operating system (glibc keeps them otherwise, and the server
/// raises its trim threshold for speed).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policies_select() {
        let v = [1, 2, 5, 7];
        assert_eq!(VersionPolicy::Latest(1).select(&v), vec![7]);
        assert_eq!(VersionPolicy::Latest(2).select(&v), vec![5, 7]);
        assert_eq!(VersionPolicy::Latest(9).select(&v), vec![1, 2, 5, 7]);
        assert_eq!(VersionPolicy::Specific(vec![2, 3]).select(&v), vec![2]);
        assert_eq!(VersionPolicy::All.select(&v), v.to_vec());
        assert!(VersionPolicy::Latest(1).select(&[]).is_empty());
    }

    #[test]
    fn triton_json_configurations_parse() {
        let c = RepoConfig::parse(
            r#"{"name": "x", "version_policy": {"specific": {"versions": ["2", 3]}},
                "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "1500"}}"#,
        )
        .unwrap();
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![2, 3]));
        assert_eq!(c.max_batch, Some(8));
        assert_eq!(c.max_queue_delay, Some(Duration::from_micros(1500)));
        assert_eq!(
            RepoConfig::parse(r#"{"version_policy": {"latest": {"num_versions": 2}}}"#)
                .unwrap()
                .version_policy,
            VersionPolicy::Latest(2)
        );
        assert_eq!(
            RepoConfig::parse(r#"{"version_policy": {"all": {}}}"#)
                .unwrap()
                .version_policy,
            VersionPolicy::All
        );
        assert_eq!(RepoConfig::parse("{}").unwrap(), RepoConfig::default());
        for bad in [
            "[]",
            "nope",
            r#"{"version_policy": {"latest": {}, "all": {}}}"#,
            r#"{"version_policy": {"latest": {"num_versions": 0}}}"#,
            r#"{"version_policy": {"specific": {"versions": [0]}}}"#,
            r#"{"version_policy": {"specific": {"versions": []}}}"#,
            r#"{"max_batch_size": 0}"#,
            r#"{"max_batch_size": -3}"#,
            r#"{"dynamic_batching": {"max_queue_delay_microseconds": 1e12}}"#,
        ] {
            let e = RepoConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected e.g."), "{bad}: {e}");
        }
    }

    #[test]
    fn model_names_cannot_leave_the_repository() {
        for ok in ["recon", "recon-unrolled", "lcm_v2", "a.b"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "../etc",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
