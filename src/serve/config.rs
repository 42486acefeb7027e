//! Server configuration: one struct, every field settable by flag or environment variable.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "INFERD_ADDR", default_value = "0.0.0.0:50051")]
    pub addr: SocketAddr,
    /// Compute device: auto (CUDA when built with it and present, else CPU), cpu, or cuda:N.
    #[arg(long, env = "INFERD_DEVICE", default_value = "auto")]
    pub device: String,
    /// Extra models as NAME=FILE.safetensors (repeat, or comma-separate in INFERD_MODELS).
    #[arg(long = "model", env = "INFERD_MODELS", value_delimiter = ',')]
    pub models: Vec<crate::models::ModelSpec>,
    /// Reconstruction model used when a request names none (default: the shipped recon-lite).
    #[arg(long, env = "INFERD_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Largest accepted gRPC message, in MiB (one multi-coil slice must fit).
    #[arg(long, env = "INFERD_MAX_MESSAGE_MB", default_value_t = 64)]
    pub max_message_mb: usize,
    /// Slices that may wait for the device before new ones are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INFERD_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Most slices of one model and size run through the network together.
    #[arg(long, env = "INFERD_MAX_BATCH", default_value_t = 4)]
    pub max_batch: usize,
    /// Slices of one stream in flight at once (later slices wait, which slows the client down).
    #[arg(long, env = "INFERD_STREAM_INFLIGHT", default_value_t = 4)]
    pub stream_inflight: usize,
}

impl ServeConfig {
    /// Defaults for tests and embedding: loopback, CPU, shipped model.
    pub fn for_tests() -> Self {
        ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            device: "cpu".into(),
            models: Vec::new(),
            default_model: None,
            max_message_mb: 64,
            queue_capacity: 64,
            max_batch: 4,
            stream_inflight: 4,
        }
    }
}
