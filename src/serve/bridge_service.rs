//! The `inferd.v1.Bridge` service: LightSB samples, bridge states and trajectories for batches of
//! any size, streamed back in chunks of rows. Each chunk is one scheduler item, so a large request
//! interleaves with other work and holds at most a few chunks in memory.

use super::ordered::pipeline;
use super::state::ServerState;
use crate::api::pb::{self, bridge_request::What, bridge_server::Bridge, trajectory::Method};
use crate::api::tensor;
use crate::error::{Error, Result};
use crate::invalid;
use crate::metrics::RequestGuard;
use crate::models::{BridgeInput, BridgeOp, Family, Output};
use crate::sched::{JobOptions, ModelHandle, Reply, Scheduler};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};
use tracing::Instrument;

pub struct BridgeService {
    pub state: Arc<ServerState>,
}

/// Most time points of one trajectory.
const MAX_TIME_POINTS: usize = 10_000;
/// Default chunk size in bytes when the client sets no rows_per_chunk.
const CHUNK_BYTES: usize = 4 << 20;

/// The operation and the time points of its output (for trajectories, t = 0 first).
fn operation(what: Option<&What>) -> Result<(BridgeOp, Vec<f32>)> {
    let uniform = |steps: u32| -> Result<Vec<f32>> {
        let steps = if steps == 0 { 10 } else { steps as usize };
        if steps > MAX_TIME_POINTS {
            return Err(invalid!(
                "steps is {steps}, expected at most {MAX_TIME_POINTS}"
            ));
        }
        Ok((1..=steps).map(|i| i as f32 / steps as f32).collect())
    };
    match what {
        None => Ok((BridgeOp::At(1.0), Vec::new())),
        Some(What::T(t)) => {
            if !(*t > 0.0 && *t <= 1.0) {
                return Err(invalid!("t is {t}, expected 0 < t <= 1 (1 = the endpoint)"));
            }
            Ok((BridgeOp::At(*t), Vec::new()))
        }
        Some(What::Trajectory(tr)) => {
            let method = Method::try_from(tr.method).map_err(|_| {
                invalid!(
                    "unknown trajectory method {}; expected BROWNIAN_BRIDGE or EULER_MARUYAMA",
                    tr.method
                )
            })?;
            match method {
                Method::EulerMaruyama => {
                    if !tr.times.is_empty() {
                        return Err(invalid!(
                            "EULER_MARUYAMA uses a uniform grid: give steps, not times"
                        ));
                    }
                    let times = uniform(tr.steps)?;
                    let steps = times.len();
                    Ok((
                        BridgeOp::EulerPath(steps),
                        [0.0].into_iter().chain(times).collect(),
                    ))
                }
                Method::BrownianBridge => {
                    let times = if tr.times.is_empty() {
                        uniform(tr.steps)?
                    } else {
                        tr.times.clone()
                    };
                    if times.len() > MAX_TIME_POINTS {
                        return Err(invalid!(
                            "{} time points, expected at most {MAX_TIME_POINTS}",
                            times.len()
                        ));
                    }
                    let mut prev = 0.0f32;
                    for &t in &times {
                        if !(t > prev && t <= 1.0) {
                            return Err(invalid!(
                                "trajectory times must increase strictly within (0, 1]; got {t} after {prev}"
                            ));
                        }
                        prev = t;
                    }
                    Ok((
                        BridgeOp::BridgePath(times.clone()),
                        [0.0].into_iter().chain(times).collect(),
                    ))
                }
            }
        }
    }
}

/// A seed per chunk, derived from the request's seed (SplitMix64 finaliser).
fn chunk_seed(base: u64, chunk: u64) -> u64 {
    let mut z = base.wrapping_add(chunk.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything a stream needs after validation.
struct Plan {
    model: ModelHandle,
    x: Vec<f32>,
    rows: usize,
    dim: usize,
    samples: usize,
    op: BridgeOp,
    times: Vec<f32>,
    rows_per_chunk: usize,
    seed: u64,
    options: JobOptions,
}

impl Plan {
    /// Output shape of `rows` rows.
    fn shape(&self, rows: usize) -> Vec<usize> {
        match self.op {
            BridgeOp::At(_) => vec![rows, self.samples, self.dim],
            _ => vec![rows, self.samples, self.times.len(), self.dim],
        }
    }
}

fn plan(
    state: &ServerState,
    req: pb::BridgeRequest,
    caller: &super::clients::Caller,
) -> Result<Plan> {
    let loaded = state.loaded()?;
    let model = loaded.find_family(&req.model, Family::Bridge)?;
    let dim: usize = model.info().require("dim")?;
    let xt = req
        .x
        .as_ref()
        .ok_or_else(|| invalid!("request has no x; expected a [B, {dim}] FLOAT32 tensor"))?;
    if xt.shape.len() != 2 || xt.shape[1] != dim as u64 || xt.shape[0] == 0 {
        return Err(invalid!(
            "x has shape {:?}, expected [B, {dim}] with B >= 1",
            xt.shape
        ));
    }
    let rows = xt.shape[0] as usize;
    let x = tensor::decode_f32(xt, "x", &[rows, dim], "[B, D]")?;
    let samples = if req.num_samples == 0 {
        1
    } else {
        req.num_samples as usize
    };
    if samples > state.limits.max_bridge_samples {
        return Err(invalid!(
            "num_samples is {samples}, expected at most {}",
            state.limits.max_bridge_samples
        ));
    }
    let (op, times) = operation(req.what.as_ref())?;
    let per_row = samples * times.len().max(1) * dim;
    let rows_per_chunk = match req.rows_per_chunk {
        0 => (CHUNK_BYTES / 4 / per_row).max(1),
        n => n as usize,
    };
    if rows_per_chunk.saturating_mul(per_row) > state.limits.max_response_values {
        return Err(Error::ResourceExhausted(format!(
            "a chunk of {rows_per_chunk} rows would hold {} values, more than {}; ask for fewer rows_per_chunk or samples",
            rows_per_chunk.saturating_mul(per_row),
            state.limits.max_response_values
        )));
    }
    let priority = crate::api::validate::priority(req.priority)?;
    Ok(Plan {
        model,
        x,
        rows,
        dim,
        samples,
        op,
        times,
        rows_per_chunk,
        seed: req.seed.unwrap_or_else(rand::random),
        options: state.clients.job_options(caller, priority, None)?,
    })
}

/// The chunk of `rows` rows from `first`, once the scheduler answers.
async fn chunk(
    plan: Arc<Plan>,
    first: usize,
    rows: usize,
    rx: Reply,
) -> Result<pb::BridgeChunk, Status> {
    let done = rx
        .await
        .map_err(|_| Status::unavailable("the device worker dropped the request"))?
        .map_err(Status::from)?;
    let Output::Bridge(values) = done.output else {
        return Err(Status::internal(
            "a bridge answered with another family's output",
        ));
    };
    Ok(pb::BridgeChunk {
        first_row: first as u32,
        samples: Some(tensor::encode_f32(&plan.shape(rows), &values)),
        times: if first == 0 {
            plan.times.clone()
        } else {
            Vec::new()
        },
    })
}

/// Submits the chunks with at most `inflight` outstanding and sends them in row order.
async fn stream_chunks(
    scheduler: Scheduler,
    plan: Plan,
    inflight: usize,
    out: mpsc::Sender<Result<pb::BridgeChunk, Status>>,
) -> Result<(), Status> {
    let plan = Arc::new(plan);
    let (pending, mut results) = pipeline(inflight);
    let p = plan.clone();
    tokio::spawn(async move {
        for (i, first) in (0..p.rows).step_by(p.rows_per_chunk).enumerate() {
            let rows = p.rows_per_chunk.min(p.rows - first);
            let input = BridgeInput {
                x: p.x[first * p.dim..(first + rows) * p.dim].to_vec(),
                dim: p.dim,
                op: p.op.clone(),
                samples: p.samples,
                seed: chunk_seed(p.seed, i as u64),
            };
            let item = vec![crate::models::Input::Bridge(input)];
            match scheduler.submit(&p.model, item, p.options.clone()) {
                Ok(mut rx) => {
                    if !pending
                        .submit(chunk(p.clone(), first, rows, rx.remove(0)))
                        .await
                    {
                        return;
                    }
                }
                Err(e) => {
                    pending.submit(async move { Err(Status::from(e)) }).await;
                    return;
                }
            }
        }
    });
    while let Some(chunk) = results.next().await {
        if out.send(Ok(chunk?)).await.is_err() {
            return Err(Status::cancelled(
                "the client left before the stream finished",
            ));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Bridge for BridgeService {
    type SampleStream =
        Pin<Box<dyn Stream<Item = Result<pb::BridgeChunk, Status>> + Send + 'static>>;

    async fn sample(
        &self,
        request: Request<pb::BridgeRequest>,
    ) -> Result<Response<Self::SampleStream>, Status> {
        let caller = self.state.clients.caller(&request);
        let req = request.into_inner();
        let plan = plan(&self.state, req, &caller)?;
        let loaded = self.state.loaded()?;
        let name = plan.model.info().name.clone();
        let span = tracing::info_span!("bridge_sample", model = %name, rows = plan.rows, samples = plan.samples);
        let inflight = self.state.stream_inflight.max(1);
        let (out_tx, out_rx) = mpsc::channel(inflight);
        let (state, scheduler) = (self.state.clone(), loaded.scheduler.clone());
        tokio::spawn(
            async move {
                let guard = RequestGuard::new(&state.metrics, plan.model.info(), "inferd");
                let result = stream_chunks(scheduler, plan, inflight, out_tx.clone()).await;
                if let Err(s) = &result {
                    let _ = out_tx.send(Err(s.clone())).await;
                }
                let _ = guard.finish(result);
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeBridgeRequest>,
    ) -> Result<Response<pb::BridgeInfo>, Status> {
        let loaded = self.state.loaded()?;
        let model = loaded.find_family(&request.into_inner().model, Family::Bridge)?;
        let info = model.info();
        Ok(Response::new(pb::BridgeInfo {
            model: info.name.clone(),
            dim: info.require("dim")?,
            components: info.require("components")?,
            epsilon: info.require("epsilon")?,
        }))
    }
}
