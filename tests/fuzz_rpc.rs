//! A bounded, seeded fuzz pass over the server's request decoders, run against a live server.
//!
//! Two generators: (1) byte mutations of valid encoded requests (bit flips, random bytes, large
//! varints spliced in, truncation, duplicated runs) that still decode as the request type, so every
//! field — nested sampling, trajectories, DICOM metadata, tensor shapes and dtypes — takes hostile
//! values; (2) structured KServe requests for every served model with random names, dtypes, shapes
//! (zero, negative, 2^31, 2^40, i64::MAX, wrong rank), byte counts, NaN/Inf values and parameters.
//! Every call must end in OK or a client-error status within the deadline (never INTERNAL, UNKNOWN,
//! a dropped connection or a hang); health answers and a normal request succeeds afterwards.
//! `INFERD_FUZZ_CASES` sets the number of cases per generator (default 1000).

mod common;

use common::TestServer;
use inferd::api::kserve::pb::{
    grpc_inference_service_client::GrpcInferenceServiceClient, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor, InferParameter, InferTensorContents, ModelInferRequest,
};
use inferd::api::pb::{
    self, bridge_client::BridgeClient, reconstruction_client::ReconstructionClient,
};
use inferd::api::tensor;
use inferd::serve::ServeConfig;
use num_complex::Complex32;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

fn cases() -> usize {
    std::env::var("INFERD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One call's outcome: OK or a status a client caused. Anything else is a server defect.
fn acceptable(r: &Result<(), tonic::Status>) -> bool {
    match r {
        Ok(()) => true,
        Err(s) => matches!(
            s.code(),
            Code::InvalidArgument
                | Code::ResourceExhausted
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        ),
    }
}

/// Mutates an encoded message (mostly its first 256 bytes): 1–4 of flip a bit, overwrite a byte, splice in a large varint,
/// truncate, duplicate a run.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            break;
        }
        // mostly in the first bytes: headers, shapes and dtypes come before the bulk tensor data
        let i = if rng.random_bool(0.8) {
            rng.random_range(0..b.len().min(256))
        } else {
            rng.random_range(0..b.len())
        };
        match rng.random_range(0..5) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b[i] = rng.random(),
            2 => {
                let big: &[u8] = match rng.random_range(0..3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                    _ => &[0xff; 9],
                };
                let end = (i + 1).min(b.len());
                b.splice(i..end, big.iter().copied());
            }
            3 => b.truncate(i),
            _ => {
                let j = rng.random_range(i..b.len().min(i + 16));
                let run = b[i..=j].to_vec();
                b.splice(i..i, run);
            }
        }
    }
    b
}

/// Mutated copies of `seed` that still decode as `M`.
fn mutants<M: Message + Default>(rng: &mut ChaCha8Rng, seed: &M, n: usize) -> Vec<M> {
    let bytes = seed.encode_to_vec();
    let mut out = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n && tries < n * 50 {
        tries += 1;
        if let Ok(m) = M::decode(mutate(rng, &bytes).as_slice()) {
            out.push(m);
        }
    }
    out
}

fn kspace(coils: usize, n: usize) -> Vec<Complex32> {
    (0..coils * n * n)
        .map(|i| Complex32::new(((i * 37) % 17) as f32 - 8.0, ((i * 11) % 5) as f32))
        .collect()
}

fn recon_seeds() -> Vec<pb::ReconstructSliceRequest> {
    let header = |sampling| pb::ReconHeader {
        height: 16,
        width: 16,
        coils: 2,
        slices: 1,
        sampling: Some(sampling),
        return_complex: true,
        return_zero_filled: true,
        request_id: "fuzz".into(),
        dicom: Some(pb::DicomOutput {
            return_dicom: true,
            patient_study: Some(pb::PatientStudy {
                patient_name: "Doe^Jane".into(),
                patient_id: "12345".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let radial = pb::Sampling {
        kind: Some(pb::sampling::Kind::Radial(pb::RadialTrajectory {
            spokes: 8,
            readout: 32,
            ..Default::default()
        })),
    };
    vec![
        pb::ReconstructSliceRequest {
            header: Some(header(pb::Sampling::variable_density(4.0, 3))),
            slice: Some(pb::KSpaceSlice {
                index: 0,
                kspace: Some(tensor::encode_c64(&[2, 16, 16], &kspace(2, 16))),
                mask: None,
            }),
        },
        pb::ReconstructSliceRequest {
            header: Some(header(radial)),
            slice: Some(pb::KSpaceSlice {
                index: 0,
                kspace: Some(tensor::encode_c64(&[2, 8 * 32], &kspace(2, 16))),
                mask: None,
            }),
        },
    ]
}

fn bridge_seed() -> pb::BridgeRequest {
    let x: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
    pb::BridgeRequest {
        x: Some(tensor::encode_f32(&[8, 2], &x)),
        num_samples: 3,
        what: Some(pb::bridge_request::What::Trajectory(pb::Trajectory {
            steps: 4,
            ..Default::default()
        })),
        seed: Some(1),
        ..Default::default()
    }
}

async fn unary_recon(
    c: &mut ReconstructionClient<Channel>,
    r: pb::ReconstructSliceRequest,
) -> Result<(), tonic::Status> {
    c.reconstruct_slice(r).await.map(|_| ())
}

async fn bridge(c: &mut BridgeClient<Channel>, r: pb::BridgeRequest) -> Result<(), tonic::Status> {
    let mut s = c.sample(r).await?.into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

/// Runs one call under a deadline; a hang counts as a failure.
async fn within<F: std::future::Future<Output = Result<(), tonic::Status>>>(
    f: F,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::internal("no answer within 60 s")))
}

async fn healthy(url: &str) {
    common::health(url).await;
    let mut c = ReconstructionClient::connect(url.to_string())
        .await
        .unwrap();
    unary_recon(&mut c, recon_seeds().remove(0))
        .await
        .expect("a normal request after the fuzz pass");
}

fn record(failures: &mut Vec<String>, what: &str, case: usize, r: &Result<(), tonic::Status>) {
    if !acceptable(r) {
        failures.push(format!("{what} case {case}: {r:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_native_requests_get_a_clean_status() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(0x1f_2026);
    let mut failures = Vec::new();
    let mut rc = ReconstructionClient::connect(server.url.clone())
        .await
        .unwrap();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for seed in recon_seeds() {
        for (i, m) in mutants(&mut rng, &seed, cases() / 2)
            .into_iter()
            .enumerate()
        {
            let r = within(unary_recon(&mut rc, m)).await;
            *statuses
                .entry(format!("{:?}", r.as_ref().err().map(|s| s.code())))
                .or_default() += 1;
            record(&mut failures, "ReconstructSlice", i, &r);
        }
    }
    let mut bc = BridgeClient::connect(server.url.clone()).await.unwrap();
    for (i, m) in mutants(&mut rng, &bridge_seed(), cases())
        .into_iter()
        .enumerate()
    {
        let r = within(bridge(&mut bc, m)).await;
        *statuses
            .entry(format!("{:?}", r.as_ref().err().map(|s| s.code())))
            .or_default() += 1;
        record(&mut failures, "Bridge/Sample", i, &r);
    }
    println!("outcomes: {statuses:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    healthy(&server.url).await;
    server.stop().await;
}

/// A random KServe request for one of the served models (or an unknown one).
fn kserve_case(rng: &mut ChaCha8Rng) -> ModelInferRequest {
    let models = ["recon", "recon-radial", "lightsb", "lcm", "nope"];
    let model = models[rng.random_range(0..models.len())];
    let names: &[&str] = match model {
        "recon" => &["kspace", "mask"],
        "recon-radial" => &["kspace", "traj"],
        "lcm" => &["x", "batch", "edge_index"],
        _ => &["x"],
    };
    let ranks: BTreeMap<&str, usize> = [
        ("kspace", 5),
        ("mask", 3),
        ("traj", 4),
        ("x", 2),
        ("batch", 1),
        ("edge_index", 2),
    ]
    .into();
    let dim = |rng: &mut ChaCha8Rng| -> i64 {
        if rng.random_bool(0.1) {
            [0, -1, -7, 1 << 31, 1 << 40, i64::MAX][rng.random_range(0..6)]
        } else {
            [1, 2, 3, 4, 8, 16][rng.random_range(0..6)]
        }
    };
    let (mut inputs, mut raw) = (Vec::new(), Vec::new());
    for name in names {
        if rng.random_bool(0.1) {
            continue; // a missing input
        }
        let name = if rng.random_bool(0.05) {
            "unexpected"
        } else {
            name
        };
        let int = matches!(name, "batch" | "edge_index");
        let rank = (ranks.get(name).copied().unwrap_or(2) as i64
            + [0, 0, 0, 0, -1, 1][rng.random_range(0..6)])
        .max(0) as usize;
        let mut shape: Vec<i64> = (0..rank).map(|_| dim(rng)).collect();
        if name == "kspace" && rank == 5 && rng.random_bool(0.8) {
            shape[4] = 2;
        }
        if name == "traj" && rank == 4 && rng.random_bool(0.8) {
            shape[3] = 2;
        }
        let datatype = if rng.random_bool(0.1) {
            ["FP64", "FP16", "INT32", "BYTES", "BOOL", "fp32", ""][rng.random_range(0..7)]
        } else if int {
            "INT64"
        } else {
            "FP32"
        };
        let count = shape.iter().try_fold(1u64, |a, &d| {
            u64::try_from(d).ok().and_then(|d| a.checked_mul(d))
        });
        let elems = match count {
            Some(c) if c <= 1 << 16 && rng.random_bool(0.85) => c as usize,
            _ => rng.random_range(0..64),
        };
        let width = if int || datatype == "FP64" { 8 } else { 4 };
        let mut bytes = Vec::with_capacity(elems * width);
        for _ in 0..elems {
            if int {
                let v: i64 = if rng.random_bool(0.05) {
                    [-1, i64::MAX, 1 << 40][rng.random_range(0..3)]
                } else {
                    rng.random_range(0..8)
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            } else {
                let v: f32 = if rng.random_bool(0.02) {
                    [f32::NAN, f32::INFINITY, -f32::INFINITY][rng.random_range(0..3)]
                } else {
                    rng.random_range(-1.0..1.0)
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        if rng.random_bool(0.05) {
            bytes.truncate(bytes.len().saturating_sub(3));
        }
        let mut input = InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        };
        if !int && rng.random_bool(0.1) {
            // typed contents instead of raw bytes
            input.contents = Some(InferTensorContents {
                fp32_contents: bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                ..Default::default()
            });
        } else {
            raw.push(bytes);
        }
        inputs.push(input);
    }
    if rng.random_bool(0.05) {
        raw.push(vec![0; 7]); // more raw buffers than inputs
    }
    let mut parameters = std::collections::HashMap::new();
    let int_param = |rng: &mut ChaCha8Rng| {
        ParameterChoice::Int64Param(
            [0, 1, 8, 16, 32, -5, 1 << 20, i64::MAX][rng.random_range(0..8)],
        )
    };
    for key in [
        "image_size",
        "priority",
        "num_samples",
        "data_consistency",
        "steps",
        "t",
    ] {
        if rng.random_bool(0.4) {
            let choice = match rng.random_range(0..4) {
                0 => ParameterChoice::StringParam(
                    ["hard", "sense", "off", "model", "soft", "??"][rng.random_range(0..6)].into(),
                ),
                1 => ParameterChoice::BoolParam(rng.random()),
                2 => ParameterChoice::DoubleParam(
                    [0.5, -1.0, f64::NAN, 1e300][rng.random_range(0..4)],
                ),
                _ => int_param(rng),
            };
            parameters.insert(
                key.to_string(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            );
        }
    }
    if model == "recon-radial" && rng.random_bool(0.7) {
        parameters.insert(
            "image_size".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(16)),
            },
        );
    }
    ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw,
        parameters,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kserve_requests_get_a_clean_status() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(0x2f_2026);
    let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let (mut failures, mut statuses) = (Vec::new(), BTreeMap::<String, usize>::new());
    for i in 0..cases() {
        let req = kserve_case(&mut rng);
        let r = within(async { c.model_infer(req).await.map(|_| ()) }).await;
        *statuses
            .entry(format!("{:?}", r.as_ref().err().map(|s| s.code())))
            .or_default() += 1;
        record(&mut failures, "ModelInfer", i, &r);
    }
    // byte mutations of a valid request as well
    let valid = ModelInferRequest {
        model_name: "recon".into(),
        inputs: vec![
            InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, 8, 8, 2],
                ..Default::default()
            },
            InferInputTensor {
                name: "mask".into(),
                datatype: "FP32".into(),
                shape: vec![1, 8, 8],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![
            inferd::api::kserve::f32_raw(&[0.5; 128]),
            inferd::api::kserve::f32_raw(&[1.0; 64]),
        ],
        ..Default::default()
    };
    for (i, m) in mutants(&mut rng, &valid, cases()).into_iter().enumerate() {
        let r = within(async { c.model_infer(m).await.map(|_| ()) }).await;
        *statuses
            .entry(format!("{:?}", r.as_ref().err().map(|s| s.code())))
            .or_default() += 1;
        record(&mut failures, "ModelInfer (mutated)", i, &r);
    }
    println!("outcomes: {statuses:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    healthy(&server.url).await;
    server.stop().await;
}
