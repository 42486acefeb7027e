//! The device worker: an OS thread that owns the models and runs jobs from the queue.

use super::{Job, ReconResult};
use crate::error::{Error, Result};
use crate::models::{describe_device, ModelInfo, ModelSpec, ReconEngine};
use crate::mri::recon;
use candle_core::Device;
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::mpsc;

pub struct WorkerConfig {
    pub device: Device,
    pub models: Vec<ModelSpec>,
    /// Most slices run through the network together.
    pub max_batch: usize,
}

/// Loads the models on a new thread and starts serving `rx`. Returns the loaded models' descriptions
/// once loading has finished (or the first load error).
pub fn spawn_worker(
    config: WorkerConfig,
    rx: mpsc::Receiver<Job>,
) -> anyhow::Result<Vec<ModelInfo>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("inferd-device-0".into()).spawn(move || {
        let mut engines = HashMap::new();
        let mut infos = Vec::new();
        for spec in &config.models {
            match ReconEngine::load(&spec.source, &config.device) {
                Ok(engine) => {
                    let info = engine.info(&spec.name);
                    tracing::info!(model = %spec.name, parameters = info.parameters, device = %describe_device(&config.device), "model loaded");
                    infos.push(info);
                    engines.insert(spec.name.clone(), engine);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("model {}: {e}", spec.name)));
                    return;
                }
            }
        }
        let _ = ready_tx.send(Ok(infos));
        run(engines, rx, config.max_batch.max(1));
    })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the device worker died while loading models"))?
}

fn run(engines: HashMap<String, ReconEngine>, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => return, // every sender dropped: the server is shutting down
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        // Gather more ready jobs of the same model and size, without waiting.
        let key = (
            first.work.model.clone(),
            first.work.slice.ny,
            first.work.slice.nx,
        );
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) if j.reply.is_closed() => continue,
                Ok(j)
                    if j.work.model == key.0
                        && (j.work.slice.ny, j.work.slice.nx) == (key.1, key.2) =>
                {
                    batch.push(j)
                }
                Ok(j) => {
                    held = Some(j);
                    break;
                }
                Err(_) => break,
            }
        }
        let engine = engines.get(&key.0);
        run_batch(engine, batch);
    }
}

fn run_batch(engine: Option<&ReconEngine>, batch: Vec<Job>) {
    let start = Instant::now();
    let n = batch.len();
    let model = batch[0].work.model.clone();
    let (ny, nx) = (batch[0].work.slice.ny, batch[0].work.slice.nx);
    let mut slices = Vec::with_capacity(n);
    let (mut modes, mut spans, mut replies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for job in batch {
        slices.push(job.work.slice);
        modes.push(job.work.dc);
        spans.push(job.span);
        replies.push(job.reply);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Vec<recon::SliceOutput>> {
            let engine =
                engine.ok_or_else(|| Error::NotFound(format!("model {model} is not loaded")))?;
            let prepared: Vec<recon::Prepared> = slices.into_iter().map(recon::prepare).collect();
            let inputs: Vec<&[f32]> = prepared.iter().map(|p| p.net_input.as_slice()).collect();
            let outputs = engine.run(&inputs, ny, nx)?;
            Ok(prepared
                .into_iter()
                .zip(outputs)
                .zip(&modes)
                .map(|((p, o), &dc)| recon::finish(p, &o, dc))
                .collect())
        },
    ));
    let per_slice = start.elapsed().as_secs_f32() / n as f32;
    match outcome {
        Ok(Ok(outputs)) => {
            for ((output, reply), span) in outputs.into_iter().zip(replies).zip(&spans) {
                let _g = span.enter();
                tracing::debug!(seconds = per_slice, batch = n, "slice reconstructed");
                let _ = reply.send(Ok(ReconResult {
                    output,
                    compute_seconds: per_slice,
                }));
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reconstruction failed");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(_) => {
            tracing::error!("reconstruction panicked; the worker continues");
            for reply in replies {
                let _ = reply.send(Err(Error::Internal(
                    "reconstruction failed unexpectedly (internal error)".into(),
                )));
            }
        }
    }
}
