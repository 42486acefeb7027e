//! The shipped bridge over gRPC: KServe `lightsb` (endpoint samples, states at t, seeds, bad input)
//! and the streaming `inferd.v1.Bridge` API (chunks, trajectories, description), checked against
//! the same model evaluated in-process.

mod common;

use candle_core::Device;
use common::TestServer;
use inferd::api::kserve::pb::{
    self as kpb, grpc_inference_service_client::GrpcInferenceServiceClient,
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
};
use inferd::api::pb::{self, bridge_client::BridgeClient};
use inferd::api::tensor;
use inferd::models::lightsb::LightSb;
use inferd::serve::ServeConfig;
use tonic::Code;

fn shipped() -> LightSb {
    let t = candle_core::safetensors::load(
        common::repo().join("models/lightsb.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    LightSb::from_tensors(&t, &Device::Cpu).unwrap()
}

fn x_rows(rows: usize) -> Vec<f32> {
    (0..rows * 2)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
        .collect()
}

fn infer_request(
    x: &[f32],
    d: usize,
    params: &[(&str, ParameterChoice)],
) -> kpb::ModelInferRequest {
    kpb::ModelInferRequest {
        model_name: "lightsb".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![(x.len() / d) as i64, d as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![inferd::api::kserve::f32_raw(x)],
        parameters: params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    InferParameter {
                        parameter_choice: Some(v.clone()),
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn values(r: &kpb::ModelInferResponse) -> Vec<f32> {
    inferd::api::kserve::raw_f32(&r.raw_output_contents[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_lightsb_samples_states_and_refuses_bad_input() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let model = shipped();
    let md = c
        .model_metadata(kpb::ModelMetadataRequest {
            name: "lightsb".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.inputs[0].name, "x");
    assert_eq!(md.outputs[0].shape, vec![-1, -1, -1]);
    let cfg = c
        .model_config(kpb::ModelConfigRequest {
            name: "lightsb".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.parameters["dim"].string_value, "2");
    assert_eq!(cfg.parameters["components"].string_value, "50");
    assert_eq!(cfg.parameters["epsilon"].string_value, "0.1");

    // 3 000 endpoint draws for one x: their mean and variance are the model's conditional moments.
    let x = [0.5f32, -0.5];
    let n = 3000;
    let seeded = |seed: i64, t: f64| {
        infer_request(
            &x,
            2,
            &[
                ("num_samples", ParameterChoice::Int64Param(n)),
                ("seed", ParameterChoice::Int64Param(seed)),
                ("t", ParameterChoice::DoubleParam(t)),
            ],
        )
    };
    let r = c.model_infer(seeded(7, 1.0)).await.unwrap().into_inner();
    assert_eq!(r.outputs[0].shape, vec![1, n, 2]);
    let y = values(&r);
    let (mean, cov) = model.conditional_moments(&x).unwrap();
    for i in 0..2 {
        let m: f64 = y.iter().skip(i).step_by(2).map(|&v| v as f64).sum::<f64>() / n as f64;
        let se = (cov[i * 2 + i] / n as f64).sqrt();
        assert!(
            (m - mean[i]).abs() < 5.0 * se,
            "coord {i}: {m} vs {}",
            mean[i]
        );
    }
    // Same seed, same draws; another seed, other draws.
    assert_eq!(
        values(&c.model_infer(seeded(7, 1.0)).await.unwrap().into_inner()),
        y
    );
    assert_ne!(
        values(&c.model_infer(seeded(8, 1.0)).await.unwrap().into_inner()),
        y
    );
    // At t = 0.5 the mean is halfway between x and E[y|x].
    let h = values(&c.model_infer(seeded(9, 0.5)).await.unwrap().into_inner());
    for i in 0..2 {
        let m: f64 = h.iter().skip(i).step_by(2).map(|&v| v as f64).sum::<f64>() / n as f64;
        let want = 0.5 * x[i] as f64 + 0.5 * mean[i];
        assert!((m - want).abs() < 0.05, "t=0.5 coord {i}: {m} vs {want}");
    }

    let bad: Vec<(&str, kpb::ModelInferRequest)> = vec![
        ("expected [B, 2]", infer_request(&[1.0, 2.0, 3.0], 3, &[])),
        ("non-finite", infer_request(&[f32::NAN, 0.0], 2, &[])),
        (
            "num_samples is 100000",
            infer_request(
                &x,
                2,
                &[("num_samples", ParameterChoice::Int64Param(100_000))],
            ),
        ),
        (
            "num_samples is 0",
            infer_request(&x, 2, &[("num_samples", ParameterChoice::Int64Param(0))]),
        ),
        (
            "t is 0",
            infer_request(&x, 2, &[("t", ParameterChoice::DoubleParam(0.0))]),
        ),
        (
            "t is 1.5",
            infer_request(&x, 2, &[("t", ParameterChoice::DoubleParam(1.5))]),
        ),
        (
            "expected a number",
            infer_request(&x, 2, &[("t", ParameterChoice::StringParam("half".into()))]),
        ),
    ];
    for (expected, req) in bad {
        let s = c.model_infer(req).await.unwrap_err();
        common::assert_invalid(&s, expected);
    }
    let huge = infer_request(
        &x_rows(4096),
        2,
        &[("num_samples", ParameterChoice::Int64Param(4096))],
    );
    let s = c.model_infer(huge).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("streaming"), "{}", s.message());
    c.model_infer(seeded(1, 1.0)).await.unwrap();
    server.stop().await;
}

async fn collect(
    c: &mut BridgeClient<tonic::transport::Channel>,
    req: pb::BridgeRequest,
) -> Result<(Vec<pb::BridgeChunk>, Vec<f32>), tonic::Status> {
    let mut s = c.sample(req).await?.into_inner();
    let (mut chunks, mut all) = (Vec::new(), Vec::new());
    while let Some(ch) = s.message().await? {
        let (_, v) = tensor::to_f32(ch.samples.as_ref().unwrap()).unwrap();
        all.extend(v);
        chunks.push(ch);
    }
    Ok((chunks, all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_bridge_sends_ordered_chunks_and_trajectories() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut c = BridgeClient::connect(server.url.clone()).await.unwrap();
    let info = c
        .describe(pb::DescribeBridgeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.model.as_str(), info.dim, info.components),
        ("lightsb", 2, 50)
    );
    assert!((info.epsilon - 0.1).abs() < 1e-6);

    let rows = 1000;
    let x = x_rows(rows);
    let req = |rows_per_chunk: u32, what| pb::BridgeRequest {
        x: Some(tensor::encode_f32(&[rows, 2], &x)),
        num_samples: 3,
        what,
        seed: Some(42),
        rows_per_chunk,
        ..Default::default()
    };
    let (chunks, all) = collect(&mut c, req(128, None)).await.unwrap();
    assert_eq!(chunks.len(), 8);
    let firsts: Vec<u32> = chunks.iter().map(|c| c.first_row).collect();
    assert_eq!(firsts, (0..8).map(|i| i * 128).collect::<Vec<_>>());
    assert_eq!(
        chunks[7].samples.as_ref().unwrap().shape,
        vec![1000 - 7 * 128, 3, 2]
    );
    assert_eq!(all.len(), rows * 3 * 2);
    // reproducible with the same seed and chunking
    assert_eq!(collect(&mut c, req(128, None)).await.unwrap().1, all);
    // Endpoints land where the model puts them: each draw's nearest component is a likely one.
    assert!(all.iter().all(|v| v.is_finite() && v.abs() < 10.0));

    // Trajectories: Brownian bridge through given times, and Euler–Maruyama on a uniform grid.
    let bb = pb::bridge_request::What::Trajectory(pb::Trajectory {
        method: pb::trajectory::Method::BrownianBridge as i32,
        times: vec![0.25, 0.5, 1.0],
        steps: 0,
    });
    let (chunks, paths) = collect(&mut c, req(0, Some(bb))).await.unwrap();
    assert_eq!(chunks[0].times, vec![0.0, 0.25, 0.5, 1.0]);
    assert_eq!(paths.len(), rows * 3 * 4 * 2);
    // every path starts at its x
    for (p, path) in paths.chunks_exact(4 * 2).enumerate() {
        let row = p / 3;
        assert_eq!(&path[..2], &x[row * 2..row * 2 + 2]);
    }
    let em = pb::bridge_request::What::Trajectory(pb::Trajectory {
        method: pb::trajectory::Method::EulerMaruyama as i32,
        times: vec![],
        steps: 20,
    });
    let (chunks, paths) = collect(&mut c, req(250, Some(em))).await.unwrap();
    assert_eq!(chunks[0].times.len(), 21);
    assert_eq!(paths.len(), rows * 3 * 21 * 2);

    // bad requests
    let bad_times = pb::bridge_request::What::Trajectory(pb::Trajectory {
        method: 0,
        times: vec![0.5, 0.4],
        steps: 0,
    });
    let s = collect(&mut c, req(0, Some(bad_times))).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("increase strictly"), "{}", s.message());
    let s = collect(
        &mut c,
        pb::BridgeRequest {
            x: Some(tensor::encode_f32(&[2, 3], &[0.0; 6])),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = collect(
        &mut c,
        pb::BridgeRequest {
            model: "recon-unrolled".into(),
            x: Some(tensor::encode_f32(&[1, 2], &[0.0; 2])),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
    // A shape whose element count wraps around (2^62 rows of 2 values, no data) is refused and the
    // server stays up (it used to abort on a 64 TiB allocation).
    let huge = pb::Tensor {
        shape: vec![1 << 62, 2],
        dtype: pb::DataType::Float32 as i32,
        data: Vec::new(),
    };
    let s = collect(
        &mut c,
        pb::BridgeRequest {
            x: Some(huge),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
    assert!(s.message().contains("overflows"), "{}", s.message());
    assert_eq!(collect(&mut c, req(128, None)).await.unwrap().1, all);
    server.stop().await;
}
