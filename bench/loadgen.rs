//! Closed-loop load generator for the KServe API: `C` concurrent callers, each sending its next
//! request as soon as the previous answer arrives, for a fixed time. Prints one line per run with
//! throughput and latency percentiles (CSV-friendly).
//!
//! cargo run --release --example loadgen -- URL KIND CONCURRENCY SECONDS
//!   KIND: live | lightsb | recon64 | recon128

use inferd::api::kserve::f32_raw;
use inferd::api::kserve::pb::{
    self, grpc_inference_service_client::GrpcInferenceServiceClient,
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
};
use inferd::mri::{fft, masks, phantom};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// One row of `dim` values, 4 samples, from the bridge served as `model`.
fn lightsb_request(model: &str, dim: usize) -> pb::ModelInferRequest {
    let x: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, dim as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_raw(&x)],
        parameters: [(
            "num_samples".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(4)),
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn recon_request(n: usize) -> pb::ModelInferRequest {
    let img = phantom::SyntheticMr::new(1).sample(n, n);
    let mut k = img.complex;
    fft::fft2c(&mut k, n, n);
    let m = masks::MaskSpec::new(masks::Pattern::VariableDensity1d, 4.0, 1)
        .generate(n, n)
        .unwrap();
    let ks: Vec<f32> = k
        .iter()
        .zip(&m)
        .flat_map(|(v, &w)| [v.re * w, v.im * w])
        .collect();
    let n = n as i64;
    pb::ModelInferRequest {
        model_name: "recon".into(),
        inputs: vec![
            InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, n, n, 2],
                ..Default::default()
            },
            InferInputTensor {
                name: "mask".into(),
                datatype: "FP32".into(),
                shape: vec![1, n, n],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![f32_raw(&ks), f32_raw(&m)],
        ..Default::default()
    }
}

#[derive(Clone)]
enum Kind {
    Live,
    Infer(pb::ModelInferRequest),
}

async fn call(c: &mut GrpcInferenceServiceClient<Channel>, kind: &Kind) -> bool {
    match kind {
        Kind::Live => c.server_live(pb::ServerLiveRequest {}).await.is_ok(),
        Kind::Infer(r) => c.model_infer(r.clone()).await.is_ok(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        anyhow::bail!("usage: loadgen URL KIND CONCURRENCY SECONDS (KIND: live | lightsb | lightsb128 | recon64 | recon128)");
    }
    let (url, kind_name) = (args[1].clone(), args[2].as_str());
    let concurrency: usize = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let kind = match kind_name {
        "live" => Kind::Live,
        "lightsb" => Kind::Infer(lightsb_request("lightsb", 2)),
        "lightsb128" => Kind::Infer(lightsb_request("lightsb128", 128)),
        "recon64" => Kind::Infer(recon_request(64)),
        "recon128" => Kind::Infer(recon_request(128)),
        other => anyhow::bail!("unknown kind {other}"),
    };
    // A few connections shared by the callers, as a client library's channel pool would.
    let mut channels = Vec::new();
    for _ in 0..concurrency.clamp(1, 4) {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    // warm-up
    let mut c =
        GrpcInferenceServiceClient::new(channels[0].clone()).max_decoding_message_size(64 << 20);
    for _ in 0..3 {
        call(&mut c, &kind).await;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut c = GrpcInferenceServiceClient::new(channels[i % channels.len()].clone())
                .max_decoding_message_size(64 << 20);
            let kind = kind.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if call(&mut c, &kind).await {
                        lat.push(t.elapsed().as_secs_f64());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
            * 1e3
    };
    println!(
        "{kind_name},{concurrency},{:.1},{:.2},{:.2},{},{}",
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        lat.len(),
        errors
    );
    Ok(())
}
