//! `inferd load`: a gRPC load generator for inferd's own RPCs, the KServe endpoint and TorchServe,
//! in the manner of ghz and Triton's perf_analyzer.
//!
//! Closed loop (each of `--concurrency` callers sends its next request when the previous answer
//! arrives) or fixed rate (`--rate`: requests are due at evenly spaced times and latency counts from
//! the due time, so a server that falls behind is charged for the wait instead of silently slowing the
//! generator down). A run is bounded by `--duration-s` and/or `--requests`, and each request by
//! `--timeout-s` (sent as grpc-timeout), so it always ends by itself.

pub mod payload;
pub mod report;

use crate::api::kserve::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::api::pb::{bridge_client::BridgeClient, reconstruction_client::ReconstructionClient};
use anyhow::Context;
use payload::{torchserve::inference_ap_is_service_client::InferenceApIsServiceClient, Call};
use prost::Message;
use report::{Report, Run, Sample};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// KServe v2 ModelInfer (`--model` names the model).
    Kserve,
    /// KServe ServerLive: the server's per-call floor.
    Live,
    /// grpc.health.v1 Check (`--model` is the service name; empty = the whole server).
    Health,
    /// inferd.v1 StreamReconstruct: a volume of `--slices` slices per request.
    Recon,
    /// inferd.v1 Bridge Sample (server-streamed samples).
    Bridge,
    /// TorchServe's Predictions RPC (see bench/torchserve/).
    Torchserve,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server URL (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "kserve")]
    pub protocol: Protocol,
    /// Model name (KServe, recon, bridge, TorchServe) or health service name.
    #[arg(long, default_value = "recon")]
    pub model: String,
    /// Inputs from files, NAME=FILE.npy (repeat); by default a payload is generated for the model.
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Generated reconstruction payloads: image size (square).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    #[arg(long, default_value_t = 1)]
    pub coils: usize,
    #[arg(long, default_value_t = 4.0)]
    pub acceleration: f32,
    /// KServe reconstruction payloads: golden-angle radial spokes of `2 × size` samples with their
    /// trajectory and `image_size` (0: Cartesian with a mask).
    #[arg(long, default_value_t = 0)]
    pub spokes: usize,
    /// Slices per volume (`--protocol recon`).
    #[arg(long, default_value_t = 1)]
    pub slices: usize,
    /// Generated bridge payloads: rows of x and samples per row.
    #[arg(long, default_value_t = 1)]
    pub rows: usize,
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Generated set payloads (graph models): sets per request and elements per set.
    #[arg(long, default_value_t = 4)]
    pub sets: usize,
    #[arg(long, default_value_t = 16)]
    pub set_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Callers (closed loop) or most requests in flight (fixed rate).
    #[arg(long, short = 'c', default_value_t = 8)]
    pub concurrency: usize,
    /// HTTP/2 connections shared by the callers (default: min(concurrency, 4)).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Fixed request rate per second (open loop); default closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Length of the measured window, seconds (default 10 unless --requests is given).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Stop after this many measured requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Unmeasured warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Deadline of each request, seconds (sent as grpc-timeout).
    #[arg(long, default_value_t = 30.0)]
    pub timeout_s: f64,
    #[command(flatten)]
    pub tls: crate::client::TlsArgs,
    /// File holding a bearer token sent with every request.
    #[arg(long, env = "INFERD_AUTH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Largest response accepted, MiB.
    #[arg(long, default_value_t = 64)]
    pub max_message_mb: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

impl LoadArgs {
    /// Defaults as the command line has them, for `addr` and `protocol`.
    pub fn new(addr: &str, protocol: Protocol, model: &str) -> LoadArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: LoadArgs,
        }
        let mut args = Wrapper::parse_from(["load"]).args;
        args.addr = addr.into();
        args.protocol = protocol;
        args.model = model.into();
        args
    }
}

/// Adds `authorization: Bearer …` to every request when a token is configured.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Auth {
    /// The bearer token of `--token-file` (read once per run), or none.
    fn from_args(args: &LoadArgs) -> anyhow::Result<Auth> {
        let Some(path) = &args.token_file else {
            return Ok(Auth(None));
        };
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let value = format!("Bearer {}", token.trim())
            .parse()
            .context("the token is not valid header text")?;
        Ok(Auth(Some(value)))
    }
}

type Svc = InterceptedService<Channel, Auth>;

/// The clients a caller uses, all over one shared connection.
pub struct Caller {
    pub kserve: GrpcInferenceServiceClient<Svc>,
    recon: ReconstructionClient<Svc>,
    pub bridge: BridgeClient<Svc>,
    health: tonic_health::pb::health_client::HealthClient<Svc>,
    torchserve: InferenceApIsServiceClient<Svc>,
    timeout: Duration,
}

impl Caller {
    fn new(channel: Channel, args: &LoadArgs, auth: &Auth) -> Caller {
        let m = args.max_message_mb << 20;
        // Every client of the run: the same connection, token and message limits.
        macro_rules! client {
            ($client:ident) => {
                $client::with_interceptor(channel.clone(), auth.clone())
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m)
            };
        }
        Caller {
            kserve: client!(GrpcInferenceServiceClient),
            recon: client!(ReconstructionClient),
            bridge: client!(BridgeClient),
            health: tonic_health::pb::health_client::HealthClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            torchserve: client!(InferenceApIsServiceClient),
            timeout: Duration::from_secs_f64(args.timeout_s.max(0.001)),
        }
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// Sends one call; returns the message bytes sent and received (protobuf encoding plus the
    /// 5-byte gRPC frame header of each message).
    async fn call(&mut self, call: &Call) -> Result<(u64, u64), tonic::Status> {
        let framed = |n: usize| n as u64 + 5;
        match call {
            Call::Live => {
                let msg = crate::api::kserve::pb::ServerLiveRequest {};
                let sent = framed(msg.encoded_len());
                let r = self.kserve.server_live(self.request(msg)).await?;
                Ok((sent, framed(r.get_ref().encoded_len())))
            }
            Call::Health(service) => {
                let msg = tonic_health::pb::HealthCheckRequest {
                    service: service.clone(),
                };
                let sent = framed(msg.encoded_len());
                let r = self.health.check(self.request(msg)).await?;
                if r.get_ref().status
                    != tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Err(tonic::Status::unavailable("health check: not serving"));
                }
                Ok((sent, framed(r.get_ref().encoded_len())))
            }
            Call::Kserve(msg) => {
                let sent = framed(msg.encoded_len());
                let r = self.kserve.model_infer(self.request(msg.clone())).await?;
                Ok((sent, framed(r.get_ref().encoded_len())))
            }
            Call::Bridge(msg) => {
                let sent = framed(msg.encoded_len());
                let mut stream = self
                    .bridge
                    .sample(self.request(msg.clone()))
                    .await?
                    .into_inner();
                let mut received = 0;
                while let Some(chunk) = stream.next().await {
                    received += framed(chunk?.encoded_len());
                }
                Ok((sent, received))
            }
            Call::Recon(msgs) => {
                let sent = msgs.iter().map(|m| framed(m.encoded_len())).sum();
                let outbound = tokio_stream::iter(msgs.clone());
                let mut stream = self
                    .recon
                    .stream_reconstruct(self.request(outbound))
                    .await?
                    .into_inner();
                let mut received = 0;
                while let Some(r) = stream.next().await {
                    received += framed(r?.encoded_len());
                }
                Ok((sent, received))
            }
            Call::Torchserve(msg) => {
                let sent = framed(msg.encoded_len());
                let r = self
                    .torchserve
                    .predictions(self.request(msg.clone()))
                    .await?;
                Ok((sent, framed(r.get_ref().encoded_len())))
            }
        }
    }
}

/// Runs the load described by `args` and returns its report (also written to `--json`/`--html`).
pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number"
        );
    }
    let duration = match (args.duration_s, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(10.0),
    };
    if let Some(d) = duration {
        anyhow::ensure!(
            d.is_finite() && d > 0.0,
            "--duration-s must be a positive number"
        );
    }
    let connections = args
        .connections
        .unwrap_or(args.concurrency.min(4))
        .clamp(1, args.concurrency);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(crate::client::connect(&args.addr, &args.tls).await?);
    }
    let auth = Auth::from_args(args)?;
    let call =
        Arc::new(payload::prepare(args, &mut Caller::new(channels[0].clone(), args, &auth)).await?);
    let started_utc = report::utc(std::time::SystemTime::now());

    let warmup = Duration::from_secs_f64(args.warmup_s.max(0.0));
    let begin = Instant::now();
    let window_start = begin + warmup;
    // With neither bound reached, a caller stops issuing at the window's end; a call in flight then
    // ends by its own deadline at the latest.
    let window_end = duration.map(|d| window_start + Duration::from_secs_f64(d));
    let issued = Arc::new(AtomicU64::new(0));
    let next_slot = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        let mut caller = Caller::new(channels[i % connections].clone(), args, &auth);
        let (call, issued, next_slot) = (call.clone(), issued.clone(), next_slot.clone());
        let (limit, rate) = (args.requests, args.rate);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut messages = std::collections::BTreeMap::new();
            loop {
                // When this request is due: now (closed loop) or its slot on the rate's grid.
                let due = match rate {
                    None => Instant::now(),
                    Some(r) => {
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        begin + Duration::from_secs_f64(slot as f64 / r)
                    }
                };
                if window_end.is_some_and(|end| due >= end) {
                    break;
                }
                let measured = due >= window_start;
                if measured && limit.is_some_and(|n| issued.fetch_add(1, Ordering::Relaxed) >= n) {
                    break;
                }
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                let outcome = caller.call(&call).await;
                if measured {
                    let (code, (sent, received)) = match outcome {
                        Ok(bytes) => (None, bytes),
                        Err(status) => {
                            messages
                                .entry(format!("{:?}", status.code()))
                                .or_insert_with(|| status.message().to_string());
                            (Some(status.code()), (0, 0))
                        }
                    };
                    samples.push(Sample {
                        start_s: due.duration_since(window_start).as_secs_f64(),
                        latency_s: due.elapsed().as_secs_f64(),
                        code,
                        bytes_sent: sent,
                        bytes_received: received,
                    });
                }
            }
            (samples, messages)
        }));
    }
    let (mut samples, mut messages) = (Vec::new(), std::collections::BTreeMap::new());
    for t in tasks {
        let (s, m) = t.await.context("a load caller failed")?;
        samples.extend(s);
        for (code, msg) in m {
            messages.entry(code).or_insert(msg);
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(window_start)
        .as_secs_f64();
    let report = Report::new(
        Run {
            target: args.addr.clone(),
            protocol: format!("{:?}", args.protocol).to_lowercase(),
            model: args.model.clone(),
            concurrency: args.concurrency,
            connections,
            rate: args.rate,
            started_utc,
            duration_s: elapsed,
        },
        &samples,
        messages,
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.html())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
