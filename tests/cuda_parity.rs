//! CPU and CUDA give the same results (within float tolerance) for every model family. These tests
//! need a build with `--features cuda` and a GPU (scripts/gpu-check.sh); other builds report them as
//! ignored, never as passed.

#![cfg_attr(not(feature = "cuda"), allow(dead_code, unused_imports))]

use candle_core::Device;
use inferd::models::lightsb::LightSb;
use inferd::models::{Engine, ReconEngine, WeightsSource};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The GPU to compare against: `INFERD_TEST_DEVICE` (default cuda:0). A CUDA build without a usable
/// GPU fails here rather than skipping.
fn gpu() -> Device {
    let spec = std::env::var("INFERD_TEST_DEVICE").unwrap_or_else(|_| "cuda:0".into());
    let spec = if spec == "cpu" {
        "cuda:0".to_string()
    } else {
        spec
    };
    inferd::models::select_device(&spec)
        .unwrap_or_else(|e| panic!("this is a CUDA build but {spec} is not usable: {e}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs a build with --features cuda and a GPU"
)]
fn recon_network_agrees_on_cpu_and_cuda() {
    let source = WeightsSource::File(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/recon-lite.safetensors"),
    );
    let cpu = ReconEngine::load(&source, &Device::Cpu).unwrap();
    let cuda = ReconEngine::load(&source, &gpu()).unwrap();
    let n = 128;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let images: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..n * n).map(|_| rng.random_range(0.0..0.5)).collect())
        .collect();
    let inputs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let a = cpu.run_network(&inputs, n, n).unwrap();
    let b = cuda.run_network(&inputs, n, n).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let d = max_abs_diff(x, y);
        assert!(d < 1e-3, "CPU vs CUDA max abs difference {d}");
    }
    assert_eq!(cpu.info().parameters, cuda.info().parameters);
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs a build with --features cuda and a GPU"
)]
fn lightsb_agrees_on_cpu_and_cuda() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (k, d, rows) = (200, 64, 2048); // large enough for the device matrix product
    let la: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let r: Vec<f32> = (0..k * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ls: Vec<f32> = (0..k * d).map(|_| rng.random_range(-1.0..0.0)).collect();
    let cpu = LightSb::new(la.clone(), r.clone(), ls.clone(), 0.5, &Device::Cpu).unwrap();
    let cuda = LightSb::new(la, r, ls, 0.5, &gpu()).unwrap();
    let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let d_gamma = max_abs_diff(
        &cpu.gamma(&x, rows).unwrap(),
        &cuda.gamma(&x, rows).unwrap(),
    );
    assert!(d_gamma < 1e-4, "γ differs by {d_gamma}");
    let d_drift = max_abs_diff(
        &cpu.drift(&x, rows, 0.3).unwrap(),
        &cuda.drift(&x, rows, 0.3).unwrap(),
    );
    assert!(d_drift < 1e-3, "drift differs by {d_drift}");
}
