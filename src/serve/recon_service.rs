//! The `inferd.v1.Reconstruction` gRPC service: validation, submission to the scheduler, and the
//! ordered streaming of results.

use super::limits::next_message;
use super::ordered::{pipeline, Results, Submit};
use super::state::ServerState;
use crate::api::pb::{self, recon_request, recon_response, reconstruction_server::Reconstruction};
use crate::api::{tensor, validate};
use crate::error::Error;
use crate::invalid;
use crate::metrics::RequestGuard;
use crate::models::{Family, Input, Output};
use crate::pacs::dicom::Series;
use crate::sched::{Done, JobOptions, ModelHandle, Reply, Scheduler};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

pub struct ReconService {
    pub state: Arc<ServerState>,
}

type ResultRx = Reply;

/// A slice's result as the writer collects it: index, sampled fraction and the model's answer.
type SliceResult = Result<(u32, f32, Done), Status>;

fn slice_image(plan: &validate::ReconPlan, index: u32, fraction: f32, r: Done) -> pb::SliceImage {
    let shape = [plan.ny, plan.nx];
    let Output::Recon(output) = r.output else {
        unreachable!("a reconstruction model answers with reconstructions")
    };
    pb::SliceImage {
        index,
        magnitude: Some(tensor::encode_f32(&shape, &output.magnitude)),
        complex: plan
            .return_complex
            .then(|| tensor::encode_c64(&shape, &output.complex)),
        zero_filled: plan
            .return_zero_filled
            .then(|| tensor::encode_f32(&shape, &output.zero_filled)),
        compute_seconds: r.compute_seconds,
        sampled_fraction: fraction,
        ..Default::default()
    }
}

/// The slice's image message, with its DICOM object encoded (and stored) when the plan asks.
async fn finish_slice(
    state: &ServerState,
    plan: &validate::ReconPlan,
    series: Option<&Arc<Series>>,
    index: u32,
    fraction: f32,
    r: Done,
) -> Result<pb::SliceImage, Status> {
    let magnitude = match (series, &r.output) {
        (Some(_), Output::Recon(o)) => Some(o.magnitude.clone()),
        _ => None,
    };
    let mut img = slice_image(plan, index, fraction, r);
    if let (Some(series), Some(d), Some(m)) = (series, &plan.dicom, magnitude) {
        let e = state
            .dicom
            .emit(series.clone(), d, index as usize, m, plan.ny, plan.nx, None)
            .await?;
        img.sop_instance_uid = e.sop_instance_uid;
        img.dicom = e.file.unwrap_or_default();
        img.queued_for_pacs = e.queued;
    }
    Ok(img)
}

async fn await_result(rx: ResultRx) -> Result<Done, Status> {
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Error::Unavailable("the device worker dropped the request".into()).into()),
    }
}

impl ReconService {
    /// Reads the slices after the header, submitting each to the scheduler as it arrives.
    async fn read_stream(
        scheduler: Scheduler,
        model: ModelHandle,
        options: JobOptions,
        plan: validate::ReconPlan,
        mut inbound: Streaming<pb::ReconRequest>,
        idle: std::time::Duration,
        pending: Submit<SliceResult>,
    ) {
        let fail = |s: Status| async move { Err(s) };
        let mut next_index = 0usize;
        let mut received = 0usize;
        loop {
            let msg = match next_message(&mut inbound, idle).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    pending.submit(fail(s)).await;
                    return;
                }
            };
            let submitted = match msg.msg {
                Some(recon_request::Msg::Header(_)) => {
                    Err(invalid!("header sent twice; send it once, before the slices").into())
                }
                None => Err(invalid!("empty request message; expected a header or a slice").into()),
                Some(recon_request::Msg::Slice(_)) if received >= plan.slices => Err(invalid!(
                    "more slices than the {} announced in the header",
                    plan.slices
                )
                .into()),
                Some(recon_request::Msg::Slice(s)) => validate::slice(&plan, &s, next_index)
                    .and_then(|slice| {
                        next_index = s.index as usize + 1;
                        received += 1;
                        let fraction = slice.sampled_fraction();
                        let input = Input::Recon {
                            slice: slice.into(),
                            dc: plan.dc,
                        };
                        let mut rx = scheduler.submit(&model, vec![input], options.clone())?;
                        Ok((s.index, fraction, rx.remove(0)))
                    })
                    .map_err(Status::from),
            };
            match submitted {
                Ok((index, fraction, rx)) => {
                    let result = async move { Ok((index, fraction, await_result(rx).await?)) };
                    if !pending.submit(result).await {
                        return; // the writer has gone (client away or the stream failed)
                    }
                }
                Err(s) => {
                    pending.submit(fail(s)).await;
                    return;
                }
            }
        }
        if received < plan.slices {
            pending
                .submit(fail(
                    invalid!(
                        "stream ended after {received} of the {} slices announced in the header",
                        plan.slices
                    )
                    .into(),
                ))
                .await;
        }
    }

    /// Awaits results in slice order and forwards them with progress messages. Returns how the
    /// stream ended (for the request metrics).
    async fn write_stream(
        state: Arc<ServerState>,
        plan: validate::ReconPlan,
        series: Option<Arc<Series>>,
        mut results: Results<SliceResult>,
        out: mpsc::Sender<Result<pb::ReconResponse, Status>>,
    ) -> Result<(), Status> {
        let mut done = 0u32;
        let total = plan.slices as u32;
        let client_gone = || Status::cancelled("the client left before the stream finished");
        while let Some(result) = results.next().await {
            let msg = match result {
                Ok((index, fraction, r)) => {
                    finish_slice(&state, &plan, series.as_ref(), index, fraction, r).await
                }
                Err(e) => Err(e),
            };
            if let Err(status) = msg {
                let _ = out.send(Err(status.clone())).await;
                return Err(status);
            }
            let response = msg.map(|img| pb::ReconResponse {
                msg: Some(recon_response::Msg::Image(img)),
            });
            if out.send(response).await.is_err() {
                return Err(client_gone());
            }
            done += 1;
            let progress = pb::ReconResponse {
                msg: Some(recon_response::Msg::Progress(pb::Progress {
                    slices_done: done,
                    slices_total: total,
                })),
            };
            if out.send(Ok(progress)).await.is_err() {
                return Err(client_gone());
            }
        }
        tracing::info!(slices = done, "reconstruction stream finished");
        Ok(())
    }
}

#[tonic::async_trait]
impl Reconstruction for ReconService {
    type StreamReconstructStream =
        Pin<Box<dyn Stream<Item = Result<pb::ReconResponse, Status>> + Send + 'static>>;

    async fn stream_reconstruct(
        &self,
        request: Request<Streaming<pb::ReconRequest>>,
    ) -> Result<Response<Self::StreamReconstructStream>, Status> {
        let caller = self.state.clients.caller(&request);
        let mut inbound = request.into_inner();
        let first = next_message(&mut inbound, self.state.stream_idle).await?;
        let header = match first.and_then(|m| m.msg) {
            Some(recon_request::Msg::Header(h)) => h,
            Some(recon_request::Msg::Slice(_)) => {
                return Err(invalid!("the first message must be a ReconHeader, got a slice").into())
            }
            None => return Err(invalid!("the stream must start with a ReconHeader").into()),
        };
        let loaded = self.state.loaded()?;
        let model = loaded.find_family(&header.model, Family::Recon)?;
        let width = validate::network_width(model.info());
        let plan = validate::plan(&header, width, &self.state.limits)?;
        let inflight = self.state.stream_inflight.max(1);
        let reservation = self.state.budget.reserve(
            &format!(
                "a stream of {} coils at {}x{} ({} slices in flight)",
                plan.coils,
                plan.ny,
                plan.nx,
                plan.slices.min(inflight)
            ),
            plan.slice_bytes
                .saturating_mul(plan.slices.min(inflight) as u64),
        )?;
        let plan = self.state.with_operator(plan).await?;
        let options = self
            .state
            .clients
            .job_options(&caller, plan.priority, None)?;
        let model_name = model.info().name.clone();
        let series = self.state.dicom.series(&plan, &model_name)?;
        let span = tracing::info_span!("recon_stream", request_id = %plan.request_id, model = %model_name, slices = plan.slices, coils = plan.coils, ny = plan.ny, nx = plan.nx);
        span.in_scope(|| tracing::info!("reconstruction stream started"));
        let (out_tx, out_rx) = mpsc::channel(2 * inflight);
        let (pending_tx, pending_rx) = pipeline(inflight);
        tokio::spawn(
            Self::read_stream(
                loaded.scheduler.clone(),
                model.clone(),
                options,
                plan.clone(),
                inbound,
                self.state.stream_idle,
                pending_tx,
            )
            .instrument(span.clone()),
        );
        let state = self.state.clone();
        tokio::spawn(
            async move {
                // the stream's memory is reserved until its writer ends, however it ends
                let _reservation = reservation;
                let guard = RequestGuard::new(&state.metrics, model.info(), "inferd");
                let result =
                    Self::write_stream(state.clone(), plan, series, pending_rx, out_tx).await;
                let _ = guard.finish(result);
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn reconstruct_slice(
        &self,
        request: Request<pb::ReconstructSliceRequest>,
    ) -> Result<Response<pb::SliceImage>, Status> {
        let caller = self.state.clients.caller(&request);
        let req = request.into_inner();
        let mut header = req
            .header
            .ok_or_else(|| Status::from(invalid!("request has no header")))?;
        if header.slices > 1 {
            return Err(invalid!("ReconstructSlice takes one slice, header says {}; use StreamReconstruct for volumes", header.slices).into());
        }
        header.slices = 1;
        let loaded = self.state.loaded()?;
        let model = loaded.find_family(&header.model, Family::Recon)?;
        let name = &model.info().name;
        let guard = RequestGuard::new(&self.state.metrics, model.info(), "inferd");
        let result = async {
            let width = validate::network_width(model.info());
            let plan = validate::plan(&header, width, &self.state.limits)?;
            let _reservation = self.state.budget.reserve(
                &format!(
                    "one slice of {} coils at {}x{}",
                    plan.coils, plan.ny, plan.nx
                ),
                plan.slice_bytes,
            )?;
            let plan = self.state.with_operator(plan).await?;
            let series = self.state.dicom.series(&plan, name)?;
            let mut s = req
                .slice
                .ok_or_else(|| Status::from(invalid!("request has no slice")))?;
            s.index = 0;
            let slice = validate::slice(&plan, &s, 0)?;
            let fraction = slice.sampled_fraction();
            let span =
                tracing::info_span!("recon_slice", request_id = %plan.request_id, model = %name);
            let options = self
                .state
                .clients
                .job_options(&caller, plan.priority, None)?;
            let mut rx = span.in_scope(|| {
                loaded.scheduler.submit(
                    &model,
                    vec![Input::Recon {
                        slice: slice.into(),
                        dc: plan.dc,
                    }],
                    options,
                )
            })?;
            let result = await_result(rx.remove(0)).instrument(span).await?;
            let img =
                finish_slice(&self.state, &plan, series.as_ref(), 0, fraction, result).await?;
            Ok(Response::new(img))
        }
        .await;
        guard.finish(result)
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let loaded = self.state.loaded()?;
        let defaults: Vec<usize> = [Family::Recon, Family::Bridge]
            .into_iter()
            .filter_map(|f| loaded.default_model(f).map(|m| m.queue))
            .collect();
        // the newest version of each model
        let newest: Vec<_> = loaded
            .names()
            .iter()
            .filter_map(|n| loaded.find(n).ok().filter(|m| &m.info().name == n))
            .collect();
        let models = newest
            .iter()
            .map(|h| (h, h.info()))
            .map(|(h, m)| pb::ModelInfo {
                name: m.name.clone(),
                family: m.family.as_str().to_string(),
                description: m.description.clone(),
                parameters: m.parameters,
                is_default: defaults.contains(&h.queue),
                sha256: m.property("sha256").unwrap_or_default(),
                provenance: m
                    .properties
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix("provenance.")?.into(), v.clone())))
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}
