//! Radial reconstruction end to end over gRPC: BART makes a golden-angle trajectory and the analytic
//! k-space of its phantoms on it (`bart traj -r -G`, `bart scale 0.5`, `bart phantom -k -t`); inferd
//! reconstructs them through the streaming API (generated and explicit trajectories) and KServe's
//! `recon-radial`, better than gridding; malformed radial requests get INVALID_ARGUMENT.

mod common;

use common::TestServer;
use inferd::api::kserve::{f32_raw, pb as kpb, raw_f32};
use inferd::api::pb;
use inferd::api::tensor;
use inferd::io::cfl;
use inferd::mri::{coils, fft, metrics};
use inferd::serve::ServeConfig;
use kpb::{
    grpc_inference_service_client::GrpcInferenceServiceClient, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor, InferParameter,
};
use num_complex::Complex32;
use tonic::Code;

const N: usize = 256;
const SPOKES: usize = 60;
const READOUT: usize = 2 * N;

/// BART's phantoms on a golden-angle trajectory: (trajectory [k0, k1], k-space [coils, samples], the
/// Cartesian ground truth's root-sum-of-squares) per phantom.
struct BartRadial {
    coords: Vec<[f32; 2]>,
    kspace: Vec<Vec<Complex32>>,
    truth: Vec<Vec<f32>>,
}

fn bart_radial(ncoils: usize) -> BartRadial {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (x, y, s, n) = (
        READOUT.to_string(),
        SPOKES.to_string(),
        ncoils.to_string(),
        N.to_string(),
    );
    common::bart(&["traj", "-r", "-G", "-x", &x, "-y", &y, "t0"], d);
    common::bart(&["scale", "0.5", "t0", "t"], d);
    let t = cfl::read(&d.join("t")).unwrap();
    assert_eq!(&t.dims[..3], &[3, READOUT, SPOKES]);
    let coords = t.data.chunks_exact(3).map(|c| [c[0].re, c[1].re]).collect();
    let (mut kspace, mut truth) = (Vec::new(), Vec::new());
    for (i, extra) in [vec![], vec!["-T"], vec!["-G"]].into_iter().enumerate() {
        let (radial, cart) = (format!("r{i}"), format!("c{i}"));
        let mut args = vec!["phantom", "-k", "-s", s.as_str(), "-t", "t"];
        args.extend(extra.iter().copied());
        args.push(&radial);
        common::bart(&args, d);
        let r = cfl::read(&d.join(&radial)).unwrap();
        assert_eq!(r.data.len(), READOUT * SPOKES * ncoils);
        kspace.push(r.data); // [1, X, S, C] column-major = [coils][spoke][readout]
        let mut args = vec!["phantom", "-k", "-s", s.as_str(), "-x", n.as_str()];
        args.extend(extra.iter().copied());
        args.push(&cart);
        common::bart(&args, d);
        let (_, _, _, _, mut k) = cfl::to_slices(&cfl::read(&d.join(&cart)).unwrap()).unwrap();
        fft::ifft2c(&mut k, N, N);
        // inferd's cfl reader keeps BART's memory order (BART's first dimension along the columns);
        // trajectories pair their first coordinate with the image's first axis (rows), as BART's
        // arrays read by Python's `cfl.readcfl`: the served image is the transpose of that layout.
        truth.push(inferd::mri::masks::transpose(&coils::rss(&k, N * N), N, N));
    }
    BartRadial {
        coords,
        kspace,
        truth,
    }
}

fn header(ncoils: usize, slices: usize, sampling: pb::sampling::Kind) -> pb::ReconHeader {
    pb::ReconHeader {
        model: "recon-radial".into(),
        height: N as u32,
        width: N as u32,
        coils: ncoils as u32,
        slices: slices as u32,
        sampling: Some(pb::Sampling {
            kind: Some(sampling),
        }),
        return_zero_filled: true,
        request_id: "radial-test".into(),
        ..Default::default()
    }
}

fn golden() -> pb::sampling::Kind {
    pb::sampling::Kind::Radial(pb::RadialTrajectory {
        spokes: SPOKES as u32,
        readout: 0,
        angles: pb::radial_trajectory::Angles::GoldenAngle as i32,
    })
}

/// SSIM of the gridded (zero-filled) and reconstructed magnitudes of each returned slice.
fn scores(images: &[pb::SliceImage], truth: &[Vec<f32>]) -> Vec<(f64, f64)> {
    images
        .iter()
        .zip(truth)
        .map(|(img, gt)| {
            let (shape, rec) = tensor::to_f32(img.magnitude.as_ref().unwrap()).unwrap();
            assert_eq!(shape, vec![N, N]);
            let (_, grid) = tensor::to_f32(img.zero_filled.as_ref().unwrap()).unwrap();
            (
                metrics::ssim(gt, &grid, N, N),
                metrics::ssim(gt, &rec, N, N),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radial_bart_phantoms_reconstruct_better_than_gridding() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    for ncoils in [1usize, 4] {
        let data = bart_radial(ncoils);
        let slices: Vec<_> = data
            .kspace
            .iter()
            .map(|k| (vec![ncoils, READOUT * SPOKES], k.clone()))
            .collect();
        // The trajectory described (analytic ramp) and the same trajectory sent as BART computed it
        // (Pipe–Menon density compensation).
        let explicit = pb::sampling::Kind::Trajectory(tensor::encode_f32(
            &[data.coords.len(), 2],
            &data.coords.iter().flatten().copied().collect::<Vec<_>>(),
        ));
        for (what, sampling) in [("generated", golden()), ("explicit", explicit)] {
            let images = common::reconstruct(
                &server.url,
                common::recon_requests(header(ncoils, 3, sampling), &slices),
            )
            .await
            .unwrap();
            assert_eq!(
                images.iter().map(|i| i.index).collect::<Vec<_>>(),
                vec![0, 1, 2]
            );
            for (i, (grid, rec)) in scores(&images, &data.truth).into_iter().enumerate() {
                println!(
                    "{ncoils} coil(s), {what} trajectory, phantom {i}: SSIM gridding {grid:.4} → inferd {rec:.4}"
                );
                assert!(grid > 0.15, "gridding failed: SSIM {grid}");
                assert!(
                    rec > grid,
                    "phantom {i}: SSIM {rec} not above gridding {grid}"
                );
            }
        }
    }
    server.stop().await;
}

fn param_int(v: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(v)),
    }
}

fn kserve_request(data: &BartRadial, which: usize, traj_shape: Vec<i64>) -> kpb::ModelInferRequest {
    let k: Vec<f32> = data.kspace[which]
        .iter()
        .flat_map(|c| [c.re, c.im])
        .collect();
    let t: Vec<f32> = data.coords.iter().flatten().copied().collect();
    kpb::ModelInferRequest {
        model_name: "recon-radial".into(),
        inputs: vec![
            InferInputTensor {
                name: "kspace".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, SPOKES as i64, READOUT as i64, 2],
                ..Default::default()
            },
            InferInputTensor {
                name: "traj".into(),
                datatype: "FP32".into(),
                shape: traj_shape,
                ..Default::default()
            },
        ],
        raw_input_contents: vec![f32_raw(&k), f32_raw(&t)],
        parameters: [("image_size".to_string(), param_int(N as i64))].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_recon_radial_contract_and_bad_input() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let data = bart_radial(1);
    let mut c = GrpcInferenceServiceClient::connect(server.url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let meta = c
        .model_metadata(kpb::ModelMetadataRequest {
            name: "recon-radial".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = meta.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["kspace", "traj"]);

    let ok_shape = vec![1, SPOKES as i64, READOUT as i64, 2];
    let r = c
        .model_infer(kserve_request(&data, 0, ok_shape.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![1, N as i64, N as i64]);
    let image = raw_f32(&r.raw_output_contents[0]);
    // Same data through the streaming API (same explicit trajectory): the same image.
    let explicit = pb::sampling::Kind::Trajectory(tensor::encode_f32(
        &[data.coords.len(), 2],
        &data.coords.iter().flatten().copied().collect::<Vec<_>>(),
    ));
    let streamed = common::reconstruct(
        &server.url,
        common::recon_requests(
            header(1, 1, explicit),
            &[(vec![1, READOUT * SPOKES], data.kspace[0].clone())],
        ),
    )
    .await
    .unwrap();
    let (_, s) = tensor::to_f32(streamed[0].magnitude.as_ref().unwrap()).unwrap();
    let peak = s.iter().cloned().fold(0.0f32, f32::max);
    let diff = image
        .iter()
        .zip(&s)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= 1e-5 * peak,
        "KServe vs stream: {diff} (peak {peak})"
    );

    let expect = |r: Result<tonic::Response<kpb::ModelInferResponse>, tonic::Status>,
                  needle: &str| {
        let s = r.expect_err("expected INVALID_ARGUMENT");
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
        assert!(
            s.message().contains(needle),
            "{:?} should mention {needle:?}",
            s.message()
        );
    };
    let mut short = kserve_request(&data, 0, vec![1, SPOKES as i64, 7, 2]);
    short.raw_input_contents[1] = f32_raw(&vec![0.0; SPOKES * 7 * 2]);
    expect(c.model_infer(short).await, "traj has shape");
    let mut no_size = kserve_request(&data, 0, ok_shape.clone());
    no_size.parameters.clear();
    expect(c.model_infer(no_size).await, "image_size");
    let mut off_grid = kserve_request(&data, 0, ok_shape.clone());
    let mut t = raw_f32(&off_grid.raw_input_contents[1]);
    t[10] = N as f32 / 2.0; // k = +N/2 is outside -N/2 <= k < N/2
    off_grid.raw_input_contents[1] = f32_raw(&t);
    expect(c.model_infer(off_grid).await, "outside the grid");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_radial_streams_get_invalid_argument() {
    let server = TestServer::start(ServeConfig::for_tests()).await;
    let samples = READOUT * SPOKES;
    let good = vec![Complex32::new(0.01, 0.0); samples];
    let check = |r: Result<Vec<pb::SliceImage>, tonic::Status>, needle: &str| {
        let s = r.expect_err("expected an error");
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
        assert!(
            s.message().contains(needle),
            "{:?} should mention {needle:?}",
            s.message()
        );
    };
    // zero spokes
    let zero = pb::sampling::Kind::Radial(pb::RadialTrajectory {
        spokes: 0,
        ..Default::default()
    });
    check(
        common::reconstruct(
            &server.url,
            common::recon_requests(header(1, 1, zero), &[(vec![1, samples], good.clone())]),
        )
        .await,
        "0 spokes",
    );
    // k-space that does not match the trajectory
    check(
        common::reconstruct(
            &server.url,
            common::recon_requests(
                header(1, 1, golden()),
                &[(vec![1, samples - 1], good[1..].to_vec())],
            ),
        )
        .await,
        "kspace",
    );
    // a trajectory tensor of the wrong shape, with NaN, and off the grid
    for (coords, shape, needle) in [
        (vec![0.0f32; 9], vec![3, 3], "expected [samples, 2]"),
        (vec![0.0, f32::NAN], vec![1, 2], "finite"),
        (
            vec![0.0, -(N as f32) / 2.0 - 1.0],
            vec![1, 2],
            "outside the grid",
        ),
    ] {
        let t = pb::sampling::Kind::Trajectory(tensor::encode_f32(&shape, &coords));
        check(
            common::reconstruct(
                &server.url,
                common::recon_requests(header(1, 1, t), &[(vec![1, 1], good[..1].to_vec())]),
            )
            .await,
            needle,
        );
    }
    // non-square images
    let mut h = header(1, 1, golden());
    h.width = N as u32 / 2;
    check(
        common::reconstruct(
            &server.url,
            common::recon_requests(h, &[(vec![1, samples], good.clone())]),
        )
        .await,
        "square",
    );
    // and a valid stream still succeeds afterwards
    let ok = common::reconstruct(
        &server.url,
        common::recon_requests(header(1, 1, golden()), &[(vec![1, samples], good)]),
    )
    .await
    .unwrap();
    assert_eq!(ok.len(), 1);
    server.stop().await;
}
