//! The unrolled ReconResNet served by inferd against its PyTorch reference (tests/reference/unrolled.py):
//! the same weights and measurements give the same reconstruction, through every pass and every
//! data-consistency step, for Cartesian and radial sampling, with inferd's fast CPU kernels and with
//! candle's stock layers. Column-sampled Cartesian data (phase encoding along W) must give the
//! transposed reconstruction of the transposed problem.

mod common;

use candle_core::Device;
use inferd::io::npy;
use inferd::models::{Engine, Input, Output, ReconEngine, WeightsSource};
use inferd::mri::dc::DcMode;
use inferd::mri::radial::{RadialOperator, RadialSlice};
use inferd::mri::recon::{CartesianSlice, Slice};
use inferd::mri::traj::{Radial, SpokeAngles};
use std::path::Path;
use std::sync::Arc;

fn f32s(path: &Path) -> Vec<f32> {
    match npy::read(path).unwrap().data {
        npy::NpyData::F32(v) => v,
        _ => panic!("{} is not float32", path.display()),
    }
}

fn c64s(path: &Path) -> Vec<num_complex::Complex32> {
    match npy::read(path).unwrap().data {
        npy::NpyData::C64(v) => v,
        _ => panic!("{} is not complex64", path.display()),
    }
}

/// PyTorch's reconstruction of a test object; `guard` overrides the model's guard threshold.
fn reference(
    sampling: &str,
    n: usize,
    seed: u64,
    weights: Option<&Path>,
    guard: Option<f32>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::python();
    cmd.arg(common::repo().join("tests/reference/unrolled_parity.py"))
        .arg(dir.path())
        .args([sampling.to_string(), n.to_string(), seed.to_string()]);
    cmd.arg(weights.map_or("-".into(), |w| w.as_os_str().to_owned()));
    if let Some(g) = guard {
        cmd.arg(g.to_string());
    }
    println!("{}", common::run(&mut cmd));
    dir
}

fn reconstruct(engine: &ReconEngine, slice: Slice) -> Vec<f32> {
    let out = engine
        .run(vec![Input::Recon {
            slice,
            dc: DcMode::Model,
        }])
        .unwrap();
    let Some(Output::Recon(o)) = out.into_iter().next() else {
        panic!("no reconstruction")
    };
    o.magnitude
}

/// Max abs error relative to the reference's peak.
fn rel_error(a: &[f32], reference: &[f32]) -> f32 {
    let peak = reference.iter().cloned().fold(0.0f32, f32::max);
    a.iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / peak
}

fn transpose<T: Copy>(v: &[T], ny: usize, nx: usize) -> Vec<T> {
    inferd::mri::masks::transpose(v, ny, nx)
}

/// Cartesian: relative max error 1e-4 (f32 arithmetic through 3 passes).
fn cartesian_parity(dir: &Path, n: usize, tol: f32) {
    let kspace = c64s(&dir.join("kspace.npy"));
    let mask = f32s(&dir.join("mask.npy"));
    let expected = f32s(&dir.join("output.npy"));
    let truth = f32s(&dir.join("image.npy"));
    for fast in [true, false] {
        let engine = ReconEngine::load_with(
            &WeightsSource::File(dir.join("weights.safetensors")),
            &Device::Cpu,
            fast,
        )
        .unwrap();
        assert!(engine.unrolled().is_some());
        let rows = CartesianSlice {
            kspace: kspace.clone(),
            mask: mask.clone(),
            coils: 1,
            ny: n,
            nx: n,
        };
        let got = reconstruct(&engine, rows.into());
        let err = rel_error(&got, &expected);
        println!("cartesian {n}² fast={fast}: max error {err:.2e} of the peak");
        assert!(err <= tol, "cartesian rows: {err} > {tol}");
        // The same object with phase encoding along W: the served image is the transpose of the
        // reference's, i.e. the object in its own orientation.
        let cols = CartesianSlice {
            kspace: transpose(&kspace, n, n),
            mask: transpose(&mask, n, n),
            coils: 1,
            ny: n,
            nx: n,
        };
        let got = reconstruct(&engine, cols.into());
        let err = rel_error(&got, &transpose(&expected, n, n));
        assert!(err <= tol, "cartesian columns: {err} > {tol}");
        // and the reconstruction is the object, not its transpose
        let t = transpose(&truth, n, n);
        let (d_true, d_flip) = (rel_error(&got, &t), rel_error(&got, &truth));
        assert!(d_true < d_flip, "columns: {d_true} vs transposed {d_flip}");
    }
}

#[test]
fn unrolled_cartesian_matches_pytorch() {
    let dir = reference("cartesian", 48, 1, None, None);
    cartesian_parity(dir.path(), 48, 1e-4);
}

#[test]
fn guard_blends_a_contradicting_network_towards_zero_filled() {
    // Random weights contradict the measurements; with a low threshold the guard engages, in PyTorch's
    // reference and in inferd alike, and the output is close to the zero-filled image.
    let n = 48;
    let dir = reference("cartesian", n, 4, None, Some(1e-3));
    cartesian_parity(dir.path(), n, 1e-4);
    let truth = f32s(&dir.path().join("image.npy"));
    let guarded = f32s(&dir.path().join("output.npy"));
    let unguarded = reference("cartesian", n, 4, None, None);
    let raw = f32s(&unguarded.path().join("output.npy"));
    let nmse = |a: &[f32]| {
        let num: f32 = a.iter().zip(&truth).map(|(a, b)| (a - b).powi(2)).sum();
        num / truth.iter().map(|b| b * b).sum::<f32>()
    };
    println!(
        "NMSE random network {:.3}, guarded {:.3}",
        nmse(&raw),
        nmse(&guarded)
    );
    assert!(nmse(&guarded) < 0.5 * nmse(&raw));
}

#[test]
fn unrolled_radial_matches_pytorch() {
    // PyTorch applies the normal operator exactly (Toeplitz embedding of the non-uniform DFT); inferd's
    // NUFFT is accurate to 1e-4, so the stated tolerance is 2e-3 of the peak after 3 passes of 4 CG steps.
    let n = 48;
    let dir = reference("radial", n, 2, None, None);
    let samples = c64s(&dir.path().join("kspace.npy"));
    let expected = f32s(&dir.path().join("output.npy"));
    let traj = Radial::oversampled(n, 40, SpokeAngles::GoldenAngle).unwrap();
    let op = Arc::new(RadialOperator::radial(&traj).unwrap());
    let engine = ReconEngine::load(
        &WeightsSource::File(dir.path().join("weights.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        engine.info().property::<String>("sampling").unwrap(),
        "radial"
    );
    let slice = RadialSlice {
        samples,
        coils: 1,
        op,
    };
    let got = reconstruct(&engine, slice.into());
    let err = rel_error(&got, &expected);
    println!("radial {n}²: max error {err:.2e} of the peak");
    assert!(err <= 2e-3, "radial: {err}");
}

#[test]
fn shipped_unrolled_model_matches_pytorch() {
    let weights = common::repo().join("models/recon-unrolled.safetensors");
    let dir = reference("cartesian", 64, 3, Some(&weights), None);
    cartesian_parity(dir.path(), 64, 1e-4);
}
