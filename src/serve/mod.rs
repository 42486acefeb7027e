//! The server: loads the models onto the device worker, then serves gRPC (reconstruction, standard
//! health checking and server reflection) until shutdown.

pub mod config;
mod recon_service;

pub use config::ServeConfig;

use crate::api::{pb::reconstruction_server::ReconstructionServer, validate::Limits};
use crate::models::{self, ModelSpec, WeightsSource, DEFAULT_RECON_MODEL};
use crate::sched::{spawn_worker, Scheduler, WorkerConfig};
use recon_service::ReconService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Builds the list of models to load: the shipped default (when embedded) plus the user's.
fn model_specs(config: &ServeConfig) -> anyhow::Result<Vec<ModelSpec>> {
    let mut specs = Vec::new();
    if let Some(bytes) = models::EMBEDDED_RECON {
        if !config.models.iter().any(|m| m.name == DEFAULT_RECON_MODEL) {
            specs.push(ModelSpec {
                name: DEFAULT_RECON_MODEL.into(),
                source: WeightsSource::Embedded(bytes),
            });
        }
    }
    for m in &config.models {
        if specs.iter().any(|s| s.name == m.name) {
            anyhow::bail!("model name {} given twice", m.name);
        }
        specs.push(m.clone());
    }
    anyhow::ensure!(
        !specs.is_empty(),
        "no model to serve: this build embeds no default model; pass --model NAME=FILE.safetensors"
    );
    Ok(specs)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let device = models::select_device(&config.device)?;
    tracing::info!(device = %models::describe_device(&device), requested = %config.device, "compute device selected");
    let specs = model_specs(&config)?;
    let default_model = config.default_model.clone().unwrap_or_else(|| {
        specs
            .iter()
            .find(|s| s.name == DEFAULT_RECON_MODEL)
            .unwrap_or(&specs[0])
            .name
            .clone()
    });
    anyhow::ensure!(
        specs.iter().any(|s| s.name == default_model),
        "default model {default_model} is not among the loaded models"
    );
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity.max(1));
    let worker = WorkerConfig {
        device,
        models: specs,
        max_batch: config.max_batch,
    };
    let infos = tokio::task::spawn_blocking(move || spawn_worker(worker, rx)).await??;

    let max_message = config.max_message_mb.max(1) * 1024 * 1024;
    let recon = ReconService {
        scheduler: Scheduler::new(tx),
        models: Arc::new(infos),
        default_model,
        limits: Limits::default(),
        stream_inflight: config.stream_inflight,
    };
    let recon = ReconstructionServer::new(recon)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ReconstructionServer<ReconService>>()
        .await;

    // Server reflection lets grpcurl and similar tools list and call the API without the .proto files.
    // Both protocol versions: older grpcurl and grpcio clients speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::api::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_message_mb = config.max_message_mb, "inferd listening");
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted::<tonic::body::Body>,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(recon)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    tracing::info!("inferd stopped");
    Ok(())
}

/// A unary request over the message limit is refused by tonic before any handler runs, with
/// OUT_OF_RANGE in a trailers-only response; gRPC clients expect RESOURCE_EXHAUSTED for that. (Streaming
/// calls see the same error inside the handler, which maps it there.)
fn oversize_is_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}
