//! Server configuration: one struct, every field settable by flag or environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on for gRPC.
    #[arg(long, env = "INFERD_ADDR", default_value = "0.0.0.0:50051")]
    pub addr: SocketAddr,
    /// Address of the HTTP endpoint serving Prometheus `/metrics` (and `/live`, `/ready`).
    #[arg(long, env = "INFERD_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the MRD (ISMRMRD) streaming port for scanner-side reconstruction clients, e.g.
    /// 0.0.0.0:9002 (unset: off). Sessions use the same models, limits and admission as gRPC.
    #[arg(long, env = "INFERD_MRD_ADDR")]
    pub mrd_addr: Option<SocketAddr>,
    /// Compute device: auto (CUDA when built with it and present, else CPU), cpu, or cuda:N.
    #[arg(long, env = "INFERD_DEVICE", default_value = "auto")]
    pub device: String,
    /// Extra models as NAME=FILE.safetensors (repeat, or comma-separate in INFERD_MODELS).
    #[arg(long = "model", env = "INFERD_MODELS", value_delimiter = ',')]
    pub models: Vec<crate::models::ModelSpec>,
    /// Model repository: DIR/NAME/VERSION/model.safetensors, with an optional DIR/NAME/config.json
    /// (version policy, batching). Given, it replaces the embedded defaults (--model still adds).
    #[arg(long, env = "INFERD_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// How the repository's models are loaded: `none` (all at start, fixed), `explicit` (those named
    /// by --load-model at start, then RepositoryModelLoad/Unload) or `poll` (all, and new or removed
    /// versions picked up every --repository-poll-s).
    #[arg(long, env = "INFERD_MODEL_CONTROL", default_value = "none")]
    pub model_control: super::repository::ModelControl,
    /// Repository models to load at start with `--model-control explicit` (repeat or
    /// comma-separate; `*`: all).
    #[arg(long = "load-model", env = "INFERD_LOAD_MODELS", value_delimiter = ',')]
    pub load_models: Vec<String>,
    /// Seconds between repository scans with `--model-control poll`.
    #[arg(long, env = "INFERD_REPOSITORY_POLL_S", default_value_t = 15.0)]
    pub repository_poll_s: f64,
    /// File holding the bearer token that model control (RepositoryModelLoad/Unload) needs. With
    /// --auth-token set and no admin token, model control is refused.
    #[arg(long, env = "INFERD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Reconstruction model used when a request names none, and served as KServe model `recon`
    /// (default: the shipped recon-unrolled).
    #[arg(long, env = "INFERD_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Largest accepted gRPC message, in MiB (one multi-coil slice must fit).
    #[arg(long, env = "INFERD_MAX_MESSAGE_MB", default_value_t = 64)]
    pub max_message_mb: usize,
    /// Most memory one request may need at its peak, in MiB (estimated from its declared sizes
    /// before anything is allocated; larger requests get RESOURCE_EXHAUSTED).
    #[arg(long, env = "INFERD_MAX_REQUEST_MB", default_value_t = 2048)]
    pub max_request_mb: u64,
    /// Memory all requests in progress may reserve together, in MiB (0: 80 % of the container's
    /// cgroup memory limit, or of the machine's memory); a request that does not fit is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INFERD_MEMORY_BUDGET_MB", default_value_t = 0)]
    pub memory_budget_mb: u64,
    /// Milliseconds after which waiting normal-priority work is served as high priority, so a
    /// steady stream of high-priority requests cannot starve it (0: strict priority).
    #[arg(long, env = "INFERD_PRIORITY_AGING_MS", default_value_t = 2000)]
    pub priority_aging_ms: u64,
    /// Items (slices, sample requests) one client may have waiting or running, all models
    /// together, before its new requests are refused with RESOURCE_EXHAUSTED (0: no limit). The
    /// client is the --client-id-header value, the mutual-TLS certificate, or the peer address.
    #[arg(long, env = "INFERD_CLIENT_QUEUE_LIMIT", default_value_t = 32)]
    pub client_queue_limit: usize,
    /// Clients that may ask for high priority (others get PERMISSION_DENIED): addresses, CIDR
    /// ranges (10.0.0.0/8), certificate digests (cert:HEX as in the logs) or `*` (comma-separate).
    /// Empty: nobody.
    #[arg(long, env = "INFERD_HIGH_PRIORITY_CLIENTS", value_delimiter = ',')]
    pub high_priority_clients: Vec<super::clients::ClientPattern>,
    /// A request header that names the client, set by a trusted proxy in front of inferd (e.g.
    /// x-forwarded-for when an ingress overwrites it); unset: certificates or peer addresses.
    #[arg(long, env = "INFERD_CLIENT_ID_HEADER")]
    pub client_id_header: Option<String>,
    /// Items (slices, sample requests) that may wait for the device, all models together, before new
    /// requests are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INFERD_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// The same limit for each model.
    #[arg(long, env = "INFERD_MODEL_QUEUE_CAPACITY", default_value_t = 64)]
    pub model_queue_capacity: usize,
    /// Most items of one model and shape run through the network together (default: per family,
    /// 4 for reconstruction).
    #[arg(long, env = "INFERD_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Longest the first item of a batch waits for more, in milliseconds (default: per family, 0
    /// for reconstruction).
    #[arg(long, env = "INFERD_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<f64>,
    /// Per-model batching as NAME=MAX_BATCH:DELAY_MS (repeat, or comma-separate), overriding the
    /// two settings above for that model.
    #[arg(long = "batching", env = "INFERD_BATCHING", value_delimiter = ',')]
    pub batching: Vec<ModelBatching>,
    /// Device worker threads taking batches from the queues (CPU: more workers run batches of
    /// different models side by side; use 1 on a GPU).
    #[arg(long, env = "INFERD_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Threads candle's CPU kernels use (default: all cores).
    #[arg(long, env = "INFERD_CPU_THREADS")]
    pub cpu_threads: Option<usize>,
    /// Reconstruction convolutions on the CPU: inferd's kernels (Winograd and friends, `true`) or
    /// candle's stock layers (`false`, the reference path).
    #[arg(long, env = "INFERD_FAST_CONV", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub cpu_fast_conv: bool,
    /// Slices of one stream in flight at once (later slices wait, which slows the client down).
    #[arg(long, env = "INFERD_STREAM_INFLIGHT", default_value_t = 4)]
    pub stream_inflight: usize,
    /// Server certificate chain (PEM); with --tls-key, serves gRPC over TLS.
    #[arg(long, env = "INFERD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the server certificate (PEM).
    #[arg(long, env = "INFERD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for mutual TLS: clients must present a certificate signed by it.
    #[arg(long, env = "INFERD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// File holding a bearer token every RPC except health checks must carry
    /// (`authorization: Bearer TOKEN`).
    #[arg(long, env = "INFERD_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The bearer token itself (prefer the file; environment values are hidden from --help).
    #[arg(long, env = "INFERD_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,
    /// On SIGTERM, how long in-flight requests and streams may take to finish, in seconds.
    #[arg(long, env = "INFERD_SHUTDOWN_GRACE_S", default_value_t = 30)]
    pub shutdown_grace_s: u64,
    /// Close each client connection (HTTP/2 GOAWAY, in-flight calls finish) after this many
    /// seconds, so that clients reconnect and load spreads over new replicas. Unset: no limit.
    #[arg(long, env = "INFERD_MAX_CONNECTION_AGE_S")]
    pub max_connection_age_s: Option<u64>,
    #[command(flatten)]
    pub transport: super::limits::TransportLimits,
    #[command(flatten)]
    pub pacs: PacsConfig,
    #[command(flatten)]
    pub trace: crate::telemetry::TraceArgs,
}

/// DICOM output and PACS delivery.
#[derive(Debug, Clone, clap::Args)]
pub struct PacsConfig {
    /// PACS to deliver DICOM images to (HOST:PORT of its DICOM port); requests ask for delivery
    /// with `dicom.store`. Unset: no delivery (requests asking for it get FAILED_PRECONDITION).
    #[arg(long = "pacs", env = "INFERD_PACS")]
    pub pacs_addr: Option<String>,
    /// DICOMweb archive to deliver to by STOW-RS instead of C-STORE: its DICOMweb root URL
    /// (http:// or https://, e.g. https://vna.example/dicom-web); same outbox and retries.
    #[arg(
        long = "pacs-stow-url",
        env = "INFERD_PACS_STOW_URL",
        conflicts_with = "pacs_addr"
    )]
    pub stow_url: Option<String>,
    /// File holding a bearer token for the STOW-RS archive (`Authorization: Bearer`).
    #[arg(long = "pacs-stow-token-file", env = "INFERD_PACS_STOW_TOKEN_FILE")]
    pub stow_token_file: Option<PathBuf>,
    /// User for HTTP basic authentication to the STOW-RS archive (password from
    /// --pacs-stow-password-file).
    #[arg(
        long = "pacs-stow-user",
        env = "INFERD_PACS_STOW_USER",
        requires = "stow_password_file"
    )]
    pub stow_user: Option<String>,
    #[arg(
        long = "pacs-stow-password-file",
        env = "INFERD_PACS_STOW_PASSWORD_FILE"
    )]
    pub stow_password_file: Option<PathBuf>,
    /// CA bundle (PEM) for an https STOW-RS URL (default: the system's,
    /// /etc/ssl/certs/ca-certificates.crt).
    #[arg(long = "pacs-stow-ca", env = "INFERD_PACS_STOW_CA")]
    pub stow_ca: Option<PathBuf>,
    /// The PACS's AE title (called AE title).
    #[arg(long = "pacs-aet", env = "INFERD_PACS_AET", default_value = crate::pacs::DEFAULT_CALLED_AET)]
    pub called_aet: String,
    /// inferd's own AE title (calling AE title), as configured in the PACS.
    #[arg(
        long = "pacs-calling-aet",
        env = "INFERD_PACS_CALLING_AET",
        default_value = crate::pacs::DEFAULT_CALLING_AET
    )]
    pub calling_aet: String,
    /// Durable outbox: images wait here until the PACS confirms them, across restarts. Put it on a
    /// persistent volume.
    #[arg(
        long = "outbox",
        env = "INFERD_OUTBOX",
        default_value = "inferd-outbox"
    )]
    pub outbox: PathBuf,
    /// Most disk the outbox may use, MiB; storing more is refused with RESOURCE_EXHAUSTED.
    #[arg(
        long = "outbox-max-mb",
        env = "INFERD_OUTBOX_MAX_MB",
        default_value_t = 2048
    )]
    pub outbox_max_mb: u64,
    /// Longest wait between delivery attempts while the PACS is unreachable, seconds (the wait
    /// doubles from 0.5 s up to this).
    #[arg(
        long = "pacs-retry-max-s",
        env = "INFERD_PACS_RETRY_MAX_S",
        default_value_t = 30.0
    )]
    pub retry_max_s: f64,
    /// UID root for Study, Series and SOP Instance UIDs (default 2.25: UUID-derived UIDs).
    #[arg(
        long = "dicom-uid-root",
        env = "INFERD_DICOM_UID_ROOT",
        default_value = "2.25"
    )]
    pub uid_root: crate::pacs::uid::UidRoot,
}

impl Default for PacsConfig {
    fn default() -> Self {
        PacsConfig {
            pacs_addr: None,
            stow_url: None,
            stow_token_file: None,
            stow_user: None,
            stow_password_file: None,
            stow_ca: None,
            called_aet: crate::pacs::DEFAULT_CALLED_AET.into(),
            calling_aet: crate::pacs::DEFAULT_CALLING_AET.into(),
            outbox: PathBuf::from("inferd-outbox"),
            outbox_max_mb: 2048,
            retry_max_s: 30.0,
            uid_root: Default::default(),
        }
    }
}

impl ServeConfig {
    /// Defaults for tests and embedding: loopback, shipped models, no metrics port, and the device
    /// named by `INFERD_TEST_DEVICE` (default cpu; scripts/gpu-check.sh sets cuda:0).
    pub fn for_tests() -> Self {
        ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            mrd_addr: None,
            device: std::env::var("INFERD_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()),
            models: Vec::new(),
            model_repository: None,
            model_control: Default::default(),
            load_models: Vec::new(),
            repository_poll_s: 15.0,
            admin_token_file: None,
            default_model: None,
            max_message_mb: 64,
            max_request_mb: 2048,
            memory_budget_mb: 0,
            priority_aging_ms: 2000,
            client_queue_limit: 32,
            high_priority_clients: Vec::new(),
            client_id_header: None,
            queue_capacity: 256,
            model_queue_capacity: 64,
            max_batch: None,
            max_queue_delay_ms: None,
            batching: Vec::new(),
            workers: 1,
            cpu_threads: None,
            cpu_fast_conv: true,
            stream_inflight: 4,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_token_file: None,
            auth_token: None,
            shutdown_grace_s: 30,
            max_connection_age_s: None,
            transport: Default::default(),
            pacs: PacsConfig::default(),
            trace: crate::telemetry::TraceArgs {
                otlp_endpoint: None,
                otlp_sample_ratio: 1.0,
                otlp_ca: None,
            },
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
}

/// `NAME=MAX_BATCH:DELAY_MS` as given to `--batching`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBatching {
    pub model: String,
    pub max_batch: usize,
    pub max_delay: Duration,
}

impl std::str::FromStr for ModelBatching {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected NAME=MAX_BATCH:DELAY_MS (e.g. lightsb=64:2), got {s:?}");
        let (model, rest) = s.split_once('=').ok_or_else(bad)?;
        let (batch, delay) = rest.split_once(':').ok_or_else(bad)?;
        let max_batch: usize = batch.parse().map_err(|_| bad())?;
        let delay_ms: f64 = delay.parse().map_err(|_| bad())?;
        if model.is_empty() || max_batch == 0 || !(0.0..=60_000.0).contains(&delay_ms) {
            return Err(bad());
        }
        Ok(ModelBatching {
            model: model.to_string(),
            max_batch,
            max_delay: Duration::from_secs_f64(delay_ms / 1000.0),
        })
    }
}

/// A secret string: never printed by `Debug` (configs get logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Secret(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_flag_parses_and_rejects() {
        let b: ModelBatching = "lightsb=64:2.5".parse().unwrap();
        assert_eq!(b.model, "lightsb");
        assert_eq!(b.max_batch, 64);
        assert_eq!(b.max_delay, Duration::from_micros(2500));
        for bad in ["lightsb", "x=0:1", "x=4", "=4:1", "x=4:-1"] {
            assert!(bad.parse::<ModelBatching>().is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_are_consistent() {
        use clap::Args;
        ServeConfig::augment_args(clap::Command::new("serve")).debug_assert();
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut c = ServeConfig::for_tests();
        c.auth_token = Some(Secret("hunter2".into()));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
