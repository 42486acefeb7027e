//! The KServe v2 / Open Inference Protocol service (`inference.GRPCInferenceService`), so that
//! tritonclient, perf_analyzer and other standard clients work unchanged. Each family's tensors are
//! turned into scheduler inputs here; the contracts are in `api::kserve` and the README.

use super::budget::{MemoryBudget, Reservation};
use super::clients::Caller;
use super::ordered::pipeline;
use super::repository::{ModelControl, Repository};
use super::state::{Loaded, ServerState};
use crate::api::kserve::{self as wire, pb, Decoded, Params};
use crate::api::tensor::heavy;
use crate::api::validate::{self, Limits};
use crate::error::{Error, Result};
use crate::invalid;
use crate::metrics::RequestGuard;
use crate::models::{lcm::Csr, BridgeInput, BridgeOp, Family, GraphInput, Input, Output};
use crate::mri::{dc::DcMode, recon::CartesianSlice};
use crate::sched::{Done, ModelHandle, Priority};
use num_complex::Complex32;
use pb::grpc_inference_service_server::GrpcInferenceService;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

pub struct KServeService {
    pub state: Arc<ServerState>,
    /// Model control needs the admin token when one is configured.
    pub token: super::auth::TokenCheck,
}

/// Scheduling parameters of a request: `priority` (Triton's levels: 1 high, 2 normal, 0 default =
/// normal) and `timeout` (microseconds).
fn scheduling(params: &Params) -> Result<(Priority, Option<Duration>)> {
    let priority = match params.int("priority")? {
        None | Some(0) | Some(2) => Priority::Normal,
        Some(1) => Priority::High,
        Some(p) => {
            return Err(invalid!(
                "priority {p} does not exist; expected 1 (high) or 2 (normal, also 0)"
            ))
        }
    };
    let timeout = match params.int("timeout")? {
        None | Some(0) => None,
        Some(us) if us > 0 => Some(Duration::from_micros(us as u64)),
        Some(us) => return Err(invalid!("timeout is {us} µs, expected > 0")),
    };
    Ok((priority, timeout))
}

/// `recon`: kspace FP32 [B, C, H, W, 2] and mask FP32 [B, H, W] → one slice per batch item.
fn recon_inputs(
    inputs: &HashMap<String, Decoded>,
    params: &Params,
    width: usize,
    limits: &Limits,
    budget: &Arc<MemoryBudget>,
) -> Result<(Vec<Input>, Vec<i64>, Reservation)> {
    let k = &inputs["kspace"];
    let m = &inputs["mask"];
    let [b, coils, ny, nx, _] = k.shape[..] else {
        unreachable!("decode_inputs checked the rank")
    };
    if m.shape != [b, ny, nx] {
        return Err(invalid!(
            "input mask has shape {:?}, expected [{b}, {ny}, {nx}] to match kspace [B, C, H, W, 2]",
            m.shape
        ));
    }
    for (what, v) in [("H", ny), ("W", nx)] {
        if v < limits.min_size || v > limits.max_size {
            return Err(invalid!(
                "kspace {what} is {v}, expected {} to {}",
                limits.min_size,
                limits.max_size
            ));
        }
    }
    if b == 0 || coils == 0 {
        return Err(invalid!(
            "kspace has shape {:?}; B and C must be at least 1",
            k.shape
        ));
    }
    if coils > limits.max_coils {
        return Err(invalid!(
            "kspace has {coils} coils, expected at most {}",
            limits.max_coils
        ));
    }
    let reservation = budget.admit(
        &format!("a batch of {b} slices of {coils} coils at {ny}x{nx}"),
        validate::slice_bytes(ny, nx, coils, 0, width).and_then(|v| v.checked_mul(b as u64)),
    )?;
    let dc = data_consistency(params)?;
    let kspace = k.f32("kspace")?;
    let mask = m.f32("mask")?;
    let plane = ny * nx;
    let per_item = coils * plane;
    let slices = (0..b)
        .map(|i| {
            let item_mask = mask[i * plane..(i + 1) * plane].to_vec();
            validate::check_mask(&item_mask, &format!("mask[{i}]"))?;
            let kspace = kspace[2 * i * per_item..2 * (i + 1) * per_item]
                .chunks_exact(2)
                .map(|c| Complex32::new(c[0], c[1]))
                .collect();
            Ok(Input::Recon {
                slice: CartesianSlice {
                    kspace,
                    mask: item_mask,
                    coils,
                    ny,
                    nx,
                }
                .into(),
                dc,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((slices, vec![b as i64, ny as i64, nx as i64], reservation))
}

/// The `data_consistency` parameter (`hard`, `soft` with `lambda`, `cg` / `sense` with `lambda` and
/// `iterations`, `off`; absent: the model's own).
fn data_consistency(params: &Params) -> Result<DcMode> {
    match params.string("data_consistency")? {
        None => Ok(DcMode::Model),
        Some(mode) => DcMode::parse(mode, params.float("lambda")?, params.int("iterations")?),
    }
}

/// `recon-radial`: kspace FP32 [B, C, S, R, 2] on traj FP32 [B, S, R, 2] (k0 along H, k1 along W, grid
/// units, BART's order as `cfl.readcfl` returns it) for
/// an `image_size`² image → one slice per batch item. Items with the same trajectory share one
/// NUFFT plan (cached by the server across requests).
async fn radial_inputs(
    state: &ServerState,
    inputs: &HashMap<String, Decoded>,
    params: &Params<'_>,
    width: usize,
) -> Result<(Vec<Input>, Vec<i64>, Reservation)> {
    let (k, t) = (&inputs["kspace"], &inputs["traj"]);
    let [b, coils, spokes, readout, _] = k.shape[..] else {
        unreachable!("decode_inputs checked the rank")
    };
    if t.shape != [b, spokes, readout, 2] {
        return Err(invalid!(
            "input traj has shape {:?}, expected [{b}, {spokes}, {readout}, 2] to match kspace [B, C, S, R, 2]",
            t.shape
        ));
    }
    let limits = &state.limits;
    if b == 0 || coils == 0 || spokes == 0 || readout == 0 || coils > limits.max_coils {
        return Err(invalid!(
            "kspace has shape {:?}; B, S and R must be at least 1 and C 1 to {}",
            k.shape,
            limits.max_coils
        ));
    }
    let n = params.int("image_size")?.ok_or_else(|| {
        invalid!("recon-radial needs the parameter image_size (int64): the reconstructed image is image_size²")
    })?;
    if n < limits.min_size as i64 || n > limits.max_size as i64 {
        return Err(invalid!(
            "image_size is {n}, expected {} to {}",
            limits.min_size,
            limits.max_size
        ));
    }
    let n = n as usize;
    let samples = spokes.checked_mul(readout).ok_or_else(|| {
        invalid!("kspace has {spokes} spokes of {readout} samples; the product overflows")
    })?;
    let reservation = state.budget.admit(
        &format!("a batch of {b} radial slices of {coils} coils at {n}x{n}"),
        validate::slice_bytes(n, n, coils, samples, width).and_then(|v| v.checked_mul(b as u64)),
    )?;
    let dc = data_consistency(params)?;
    let (kspace, traj) = (k.f32("kspace")?, t.f32("traj")?);
    let mut items = Vec::with_capacity(b);
    let mut previous: Option<(&[f32], Arc<crate::mri::radial::RadialOperator>)> = None;
    for i in 0..b {
        let coords = &traj[2 * i * samples..2 * (i + 1) * samples];
        let op = match &previous {
            Some((c, op)) if *c == coords => op.clone(),
            _ => {
                let pairs = coords.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
                let spec =
                    validate::trajectory(pairs, n).map_err(|e| invalid!("traj[{i}]: {e}"))?;
                state.operators.get(&spec, n).await?
            }
        };
        let per_item = coils * samples;
        let samples_c = kspace[2 * i * per_item..2 * (i + 1) * per_item]
            .chunks_exact(2)
            .map(|c| Complex32::new(c[0], c[1]))
            .collect();
        items.push(Input::Recon {
            slice: crate::mri::radial::RadialSlice {
                samples: samples_c,
                coils,
                op: op.clone(),
            }
            .into(),
            dc,
        });
        previous = Some((coords, op));
    }
    Ok((items, vec![b as i64, n as i64, n as i64], reservation))
}

/// `lightsb`: x FP32 [B, D] → one item drawing `num_samples` states at time `t` per row.
fn bridge_inputs(
    inputs: &HashMap<String, Decoded>,
    params: &Params,
    limits: &Limits,
    info: &crate::models::ModelInfo,
) -> Result<(Vec<Input>, Vec<i64>)> {
    let x = &inputs["x"];
    let dim: usize = info.require("dim")?;
    let [rows, d] = x.shape[..] else {
        unreachable!("decode_inputs checked the rank")
    };
    if d != dim || rows == 0 {
        return Err(invalid!(
            "input x has shape {:?}, expected [B, {dim}] with B >= 1 (model {} has D = {dim})",
            x.shape,
            info.name
        ));
    }
    let samples = params.int("num_samples")?.unwrap_or(1);
    if samples < 1 || samples as usize > limits.max_bridge_samples {
        return Err(invalid!(
            "num_samples is {samples}, expected 1 to {}",
            limits.max_bridge_samples
        ));
    }
    let samples = samples as usize;
    let t = params.float("t")?.unwrap_or(1.0);
    if !(t > 0.0 && t <= 1.0) {
        return Err(invalid!("t is {t}, expected 0 < t <= 1 (1 = the endpoint)"));
    }
    let values = rows.saturating_mul(samples).saturating_mul(dim);
    if values > limits.max_response_values {
        return Err(Error::ResourceExhausted(format!(
            "the response would hold {values} values (B {rows} x num_samples {samples} x D {dim}), more than {}; use the streaming inferd.v1.Bridge/Sample RPC",
            limits.max_response_values
        )));
    }
    let seed = match params.int("seed")? {
        Some(s) => s as u64,
        None => rand::random(),
    };
    let item = Input::Bridge(BridgeInput {
        x: x.f32("x")?.to_vec(),
        dim,
        op: BridgeOp::At(t as f32),
        samples,
        seed,
    });
    Ok((vec![item], vec![rows as i64, samples as i64, dim as i64]))
}

/// `lcm`: x FP32 [N, F] with either `batch` INT64 [N] (sets → y [G, out], G = max id + 1) or
/// `edge_index` INT64 [2, E] (source, target → y [N, out] over each node's in-neighbours).
fn graph_inputs(
    inputs: &HashMap<String, Decoded>,
    info: &crate::models::ModelInfo,
) -> Result<(Vec<Input>, Vec<i64>)> {
    let x = &inputs["x"];
    let features: usize = info.require("in_features")?;
    let out: usize = info.require("out_features")?;
    let [n, f] = x.shape[..] else {
        unreachable!("decode_inputs checked the rank")
    };
    if f != features || n == 0 {
        return Err(invalid!(
            "input x has shape {:?}, expected [N, {features}] with N >= 1 (model {})",
            x.shape,
            info.name
        ));
    }
    let csr = match (inputs.get("batch"), inputs.get("edge_index")) {
        (Some(b), None) => {
            if b.shape != [n] {
                return Err(invalid!(
                    "input batch has shape {:?}, expected [{n}] (one set id per row of x)",
                    b.shape
                ));
            }
            let batch = b.i64("batch")?;
            heavy(8 * batch.len(), || Csr::from_batch(batch))?
        }
        (None, Some(e)) => {
            let edges = e.shape[1];
            let v = e.i64("edge_index")?;
            heavy(8 * v.len(), || {
                Csr::from_edge_index(&v[..edges], &v[edges..], n)
            })?
        }
        _ => {
            return Err(invalid!(
                "give exactly one of batch INT64 [N] (sets) or edge_index INT64 [2, E] (graph)"
            ))
        }
    };
    let rows = csr.rows();
    let item = Input::Graph(GraphInput {
        x: x.f32("x")?.to_vec(),
        features,
        csr,
    });
    Ok((vec![item], vec![rows as i64, out as i64]))
}

/// Runs one ModelInfer request end to end.
async fn infer(
    state: Arc<ServerState>,
    caller: Caller,
    req: pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse, Status> {
    let loaded = state.loaded()?;
    let model = loaded.find_version(&req.model_name, &req.model_version)?;
    let info = model.info();
    let guard = RequestGuard::new(&state.metrics, info, "kserve");
    let span = tracing::info_span!("model_infer", model = %info.name, version = %info.version, id = %req.id);
    let result = run_infer(&state, loaded, &model, &caller, &req)
        .instrument(span)
        .await;
    guard.finish(result.map_err(Status::from))
}

async fn run_infer(
    state: &ServerState,
    loaded: &Loaded,
    model: &ModelHandle,
    caller: &Caller,
    req: &pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse> {
    let info = model.info();
    let contract = wire::contract_for(info);
    for out in &req.outputs {
        if !contract.outputs.iter().any(|s| s.name == out.name) {
            let names: Vec<&str> = contract.outputs.iter().map(|s| s.name).collect();
            return Err(invalid!(
                "requested output {:?} does not exist; this model gives {names:?}",
                out.name
            ));
        }
    }
    let params = Params(&req.parameters);
    let (priority, timeout) = scheduling(&params)?;
    let inputs = wire::decode_inputs(&req.inputs, &req.raw_input_contents, &contract)?;
    // reconstruction batches hold their memory reservation until the response is built
    let (items, shape, _reservation) = match info.family {
        Family::Recon if inputs.contains_key("traj") => {
            let (items, shape, r) =
                radial_inputs(state, &inputs, &params, validate::network_width(info)).await?;
            (items, shape, Some(r))
        }
        Family::Recon => {
            let (items, shape, r) = recon_inputs(
                &inputs,
                &params,
                validate::network_width(info),
                &state.limits,
                &state.budget,
            )?;
            (items, shape, Some(r))
        }
        Family::Bridge => {
            let (items, shape) = bridge_inputs(&inputs, &params, &state.limits, info)?;
            (items, shape, None)
        }
        Family::Graph => {
            let (items, shape) = graph_inputs(&inputs, info)?;
            (items, shape, None)
        }
    };
    drop(inputs);
    let options = state.clients.job_options(caller, priority, timeout)?;
    let replies = loaded.scheduler.submit(model, items, options)?;
    // The outputs of the items, concatenated in order, form the response tensor.
    let mut values = Vec::with_capacity(shape.iter().product::<i64>() as usize);
    for rx in replies {
        let done: Done = rx
            .await
            .map_err(|_| Error::Unavailable("the device worker dropped the request".into()))??;
        match done.output {
            Output::Recon(o) => values.extend_from_slice(&o.magnitude),
            Output::Bridge(v) | Output::Graph(v) => values.extend_from_slice(&v),
        }
    }
    let spec = contract.outputs[0];
    Ok(pb::ModelInferResponse {
        model_name: req.model_name.clone(),
        model_version: info.version.clone(),
        id: req.id.clone(),
        parameters: HashMap::new(),
        outputs: vec![pb::model_infer_response::InferOutputTensor {
            name: spec.name.into(),
            datatype: spec.datatype.into(),
            shape,
            ..Default::default()
        }],
        raw_output_contents: vec![wire::f32_raw(&values)],
    })
}

/// A model's statistics in the protocol's form.
fn statistics(name: &str, version: &str, s: crate::metrics::ModelStats) -> pb::ModelStatistics {
    let d = |t: crate::metrics::Tally| {
        Some(pb::StatisticDuration {
            count: t.count,
            ns: t.ns,
        })
    };
    let none = || d(Default::default());
    pb::ModelStatistics {
        name: name.into(),
        version: version.into(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: d(s.success),
            fail: d(s.fail),
            queue: d(s.queue),
            compute_input: none(),
            compute_infer: d(s.compute),
            compute_output: none(),
        }),
        batch_stats: s
            .batches
            .into_iter()
            .map(|(size, t)| pb::InferBatchStatistics {
                batch_size: size as u64,
                compute_input: none(),
                compute_infer: d(t),
                compute_output: none(),
            })
            .collect(),
    }
}

fn tensor_metadata(specs: &[wire::TensorSpec]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| pb::model_metadata_response::TensorMetadata {
            name: s.name.into(),
            datatype: s.datatype.into(),
            shape: s.shape.to_vec(),
        })
        .collect()
}

fn data_type(datatype: &str) -> i32 {
    match datatype {
        "INT64" => pb::DataType::TypeInt64 as i32,
        _ => pb::DataType::TypeFp32 as i32,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for KServeService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = request.into_inner();
        let ready = self.state.ready()
            && self
                .state
                .loaded_opt()
                .is_some_and(|l| l.find_version(&req.name, &req.version).is_ok());
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "inferd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![
                "model_configuration".into(),
                "model_repository".into(),
                "parameters".into(),
                "schedule_policy".into(),
                "statistics".into(),
            ],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let loaded = self.state.loaded()?;
        let model = loaded.find_version(&req.name, &req.version)?;
        let contract = wire::contract_for(model.info());
        let versions = loaded
            .models()
            .iter()
            .filter(|m| m.info().name == model.info().name)
            .map(|m| m.info().version.clone())
            .collect();
        Ok(Response::new(pb::ModelMetadataResponse {
            name: req.name,
            versions,
            platform: "inferd_candle".into(),
            inputs: tensor_metadata(contract.inputs),
            outputs: tensor_metadata(contract.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let caller = self.state.clients.caller(&request);
        infer(self.state.clone(), caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send + 'static>>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let caller = self.state.clients.caller(&request);
        let mut inbound = request.into_inner();
        let inflight = self.state.stream_inflight.max(1);
        // Requests run concurrently (so they can share batches); answers go out in request order.
        let (pending, mut results) = pipeline(inflight);
        let (out_tx, out_rx) = mpsc::channel(inflight);
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let req = match super::limits::next_message(&mut inbound, state.stream_idle).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(status) => {
                        pending.submit(async move { Err(status) }).await;
                        break;
                    }
                };
                let task = tokio::spawn(infer(state.clone(), caller.clone(), req));
                let answer = async move {
                    task.await
                        .unwrap_or_else(|_| Err(Status::internal("inference task failed")))
                };
                if !pending.submit(answer).await {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(outcome) = results.next().await {
                let msg = match outcome {
                    Ok(r) => pb::ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(r),
                    },
                    Err(s) => pb::ModelStreamInferResponse {
                        error_message: format!("{:?}: {}", s.code(), s.message()),
                        infer_response: None,
                    },
                };
                if out_tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let req = request.into_inner();
        let loaded = self.state.loaded()?;
        let model = loaded.find_version(&req.name, &req.version)?;
        let info = model.info();
        let contract = wire::contract_for(info);
        let batching = loaded.scheduler.batch_config(&model);
        let parameters = info
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    pb::ModelParameter {
                        string_value: v.clone(),
                    },
                )
            })
            .collect();
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: req.name,
                platform: "inferd_candle".into(),
                backend: "inferd".into(),
                max_batch_size: batching.max_batch as i32,
                input: contract
                    .inputs
                    .iter()
                    .map(|s| pb::ModelInput {
                        name: s.name.into(),
                        data_type: data_type(s.datatype),
                        dims: s.shape[1..].to_vec(),
                        optional: s.optional,
                    })
                    .collect(),
                output: contract
                    .outputs
                    .iter()
                    .map(|s| pb::ModelOutput {
                        name: s.name.into(),
                        data_type: data_type(s.datatype),
                        dims: s.shape[1..].to_vec(),
                    })
                    .collect(),
                dynamic_batching: Some(pb::ModelDynamicBatching {
                    preferred_batch_size: vec![batching.max_batch as i32],
                    max_queue_delay_microseconds: batching.max_delay.as_micros() as u64,
                    preserve_ordering: true,
                    priority_levels: 2,
                    default_priority_level: 2,
                }),
                parameters,
            }),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let req = request.into_inner();
        let loaded = self.state.loaded()?;
        let models: Vec<ModelHandle> = match (req.name.is_empty(), req.version.is_empty()) {
            (true, _) => loaded.models(),
            (false, true) => {
                // every serving version of the model
                let name = loaded.find(&req.name)?.info().name.clone();
                loaded
                    .models()
                    .into_iter()
                    .filter(|m| m.info().name == name)
                    .collect()
            }
            (false, false) => vec![loaded.find_version(&req.name, &req.version)?],
        };
        let model_stats = models
            .iter()
            .map(|m| {
                let info = m.info();
                statistics(
                    &info.name,
                    &info.version,
                    self.state.metrics.stats(&info.name, &info.version),
                )
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let ready_only = request.into_inner().ready;
        let entries = self
            .state
            .loaded_opt()
            .map(|l| l.index())
            .unwrap_or_default();
        Ok(Response::new(pb::RepositoryIndexResponse {
            models: entries
                .into_iter()
                .filter(|e| !ready_only || e.state == "READY")
                .map(|e| pb::repository_index_response::ModelIndex {
                    name: e.name,
                    version: e.version,
                    state: e.state.into(),
                    reason: e.reason,
                })
                .collect(),
        }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.token.check_admin(request.metadata())?;
        let req = request.into_inner();
        let repo = self.controllable(&req.repository_name)?;
        let config = match req
            .parameters
            .get("config")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => None,
            Some(pb::model_repository_parameter::ParameterChoice::StringParam(s)) => {
                Some(s.clone())
            }
            Some(_) => {
                return Err(Status::invalid_argument(
                    "parameter config must be a string holding a JSON model configuration",
                ))
            }
        };
        if let Some(other) = req.parameters.keys().find(|k| k.as_str() != "config") {
            return Err(Status::invalid_argument(format!(
                "parameter {other:?} is not supported; RepositoryModelLoad takes `config` (a JSON model configuration); model files come from the repository"
            )));
        }
        let loaded = self.state.loaded()?;
        tracing::info!(model = %req.model_name, override_config = config.is_some(), "model load requested");
        repo.load(loaded, &req.model_name, config.as_deref())
            .await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.token.check_admin(request.metadata())?;
        let req = request.into_inner();
        let repo = self.controllable(&req.repository_name)?;
        let loaded = self.state.loaded()?;
        tracing::info!(model = %req.model_name, "model unload requested");
        repo.unload(loaded, &req.model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

impl KServeService {
    /// The repository, when model control by RPC is on (`--model-control explicit`).
    #[allow(clippy::result_large_err)]
    fn controllable(&self, repository_name: &str) -> Result<Arc<Repository>, Status> {
        let loaded = self.state.loaded()?;
        let repo = loaded.repository.clone().ok_or_else(|| {
            Status::failed_precondition(
                "the server has no model repository (--model-repository DIR)",
            )
        })?;
        if repo.control != ModelControl::Explicit {
            return Err(Status::failed_precondition(format!(
                "model control by request is off (--model-control {}); start the server with --model-control explicit",
                match repo.control {
                    ModelControl::Poll => "poll: the repository is scanned instead",
                    _ => "none",
                }
            )));
        }
        if !repository_name.is_empty() {
            return Err(Status::invalid_argument(format!(
                "repository {repository_name:?} does not exist; inferd has one repository (leave repository_name empty)"
            )));
        }
        Ok(repo)
    }
}
