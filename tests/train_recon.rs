//! `inferd train recon` (candle autograd) runs, writes checkpoints that resume, and
//! produces weights the server loads.

use candle_core::Device;
use inferd::models::{Engine, ReconEngine, WeightsSource};
use inferd::train::recon::{run, ExampleArgs, TrainReconArgs};

fn args(out: std::path::PathBuf, steps: usize, resume: bool) -> TrainReconArgs {
    TrainReconArgs {
        out,
        width: 4,
        blocks: 1,
        steps,
        batch: 2,
        data: ExampleArgs {
            size: 32,
            crop: 0,
            accelerations: vec![4.0],
            pattern: inferd::mri::masks::Pattern::VariableDensity1d,
            sampling: inferd::train::recon::Sampling::Cartesian,
            spokes: vec![30],
            images: None,
            images_fraction: 0.5,
            seed: 1,
        },
        lr: 3e-3,
        ssim_weight: 1.0,
        checkpoint_every: 3,
        resume,
        device: "cpu".into(),
    }
}

#[test]
fn trains_checkpoints_resumes_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    run(args(out.clone(), 3, false)).unwrap();
    assert!(dir.path().join("m.ckpt.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("m.ckpt.step"))
            .unwrap()
            .trim(),
        "3"
    );
    run(args(out.clone(), 6, true)).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("m.ckpt.step"))
            .unwrap()
            .trim(),
        "6"
    );
    let engine = ReconEngine::load(&WeightsSource::File(out), &Device::Cpu).unwrap();
    assert!(engine
        .info()
        .description
        .contains("width 4 with 1 residual"));
    let img = vec![0.25f32; 32 * 32];
    let y = engine.run_network(&[&img], 32, 32).unwrap();
    assert!(y[0].iter().all(|v| v.is_finite() && *v > 0.0 && *v < 1.0));
}
