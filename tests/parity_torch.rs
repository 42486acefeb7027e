//! ReconResNet in candle against PyTorch (the official module structure, tests/reference/reconresnet.py):
//! the same random weights, loaded from PyTorch's own state dict, give the same outputs.

mod common;

use candle_core::Device;
use inferd::io::npy;
use inferd::models::{Engine, ReconEngine, WeightsSource};

/// Stated tolerance: max abs error of the [0, 1] outputs.
const TOL: f32 = 1e-4;

fn parity(width: usize, blocks: usize, size: usize, batch: usize, seed: u64) {
    parity_with(width, blocks, size, batch, seed, None);
}

/// Both CPU paths (inferd's fast kernels and candle's stock layers) against PyTorch, on random weights
/// or on a shipped model's.
fn parity_with(
    width: usize,
    blocks: usize,
    size: usize,
    batch: usize,
    seed: u64,
    shipped: Option<&str>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::python();
    cmd.arg(common::repo().join("tests/reference/parity.py"))
        .arg(dir.path())
        .args([width, blocks, size, batch, seed as usize].map(|v| v.to_string()));
    let weights = match shipped {
        Some(file) => {
            let path = common::repo().join("models").join(file);
            cmd.arg(&path);
            path
        }
        None => dir.path().join("weights.safetensors"),
    };
    common::run(&mut cmd);
    for fast in [true, false] {
        let engine =
            ReconEngine::load_with(&WeightsSource::File(weights.clone()), &Device::Cpu, fast)
                .unwrap();
        compare(&engine, dir.path(), width, blocks, size, batch, fast);
    }
}

fn compare(
    engine: &ReconEngine,
    dir: &std::path::Path,
    width: usize,
    blocks: usize,
    size: usize,
    batch: usize,
    fast: bool,
) {
    let info = engine.info();
    assert!(
        info.description
            .contains(&format!("width {width} with {blocks} residual")),
        "{}",
        info.description
    );
    let x = npy::read(&dir.join("input.npy")).unwrap();
    let y = npy::read(&dir.join("output.npy")).unwrap();
    let (npy::NpyData::F32(x), npy::NpyData::F32(y)) = (x.data, y.data) else {
        panic!("float arrays expected")
    };
    let plane = size * size;
    let inputs: Vec<&[f32]> = x.chunks_exact(plane).collect();
    let out = engine.run_network(&inputs, size, size).unwrap();
    let mut max_err = 0.0f32;
    for (o, r) in out.iter().zip(y.chunks_exact(plane)) {
        for (a, b) in o.iter().zip(r) {
            max_err = max_err.max((a - b).abs());
        }
    }
    let mean = y.iter().sum::<f32>() / y.len() as f32;
    let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / y.len() as f32).sqrt();
    assert!(
        std > 1e-3,
        "reference output is constant (std {std}); the comparison would be vacuous"
    );
    let path = if fast { "fast kernels" } else { "stock candle" };
    println!("width {width} blocks {blocks} {size}² batch {batch}, {path}: max abs error {max_err:.2e} (output std {std:.3})");
    assert!(max_err <= TOL, "max abs error {max_err} > {TOL}");
}

#[test]
fn small_model_matches_pytorch_at_64_and_odd_sizes() {
    parity(8, 2, 64, 2, 1);
    parity(8, 2, 36, 1, 2);
}

#[test]
fn full_size_model_matches_pytorch_at_64() {
    parity(64, 14, 64, 1, 3);
}

#[test]
fn full_size_model_matches_pytorch_at_256() {
    parity(64, 14, 256, 1, 4);
}

#[test]
fn full_size_model_matches_pytorch_at_320_batch_4() {
    parity(64, 14, 320, 4, 5);
}

#[test]
fn shipped_models_match_pytorch() {
    parity_with(32, 6, 256, 2, 6, Some("recon-lite.safetensors"));
    parity_with(32, 6, 100, 1, 7, Some("recon-radial-v1.safetensors"));
}
