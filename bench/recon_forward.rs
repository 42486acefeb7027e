//! Times inferd's ReconResNet forward pass (candle) on a weights file; prints one JSON line per
//! batch size. `bench/candle_vs_torch.py` runs it side by side with PyTorch on the same weights.
//! WEIGHTS may be `full` (randomly initialised full-size ReconResNet, width 64, 14 blocks) or `lite`
//! (the shipped recon-lite). The device comes from INFERD_BENCH_DEVICE (default cpu; e.g. cuda:0).
//!
//! cargo run --release --example recon_forward -- WEIGHTS SIZE ITERS BATCH [BATCH ...]

use candle_core::safetensors;
use inferd::models::recon_resnet::ReconResNetConfig;
use inferd::models::{select_device, ReconEngine, WeightsSource};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: recon_forward WEIGHTS SIZE ITERS BATCH [BATCH ...]"
    );
    let device =
        select_device(&std::env::var("INFERD_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let source = match args[1].as_str() {
        "lite" => WeightsSource::File("models/recon-lite.safetensors".into()),
        "full" => {
            let path = std::env::temp_dir().join("inferd-full-random.safetensors");
            safetensors::save(&ReconResNetConfig::FULL.random_weights(&device)?, &path)?;
            WeightsSource::File(path)
        }
        file => WeightsSource::File(file.into()),
    };
    let engine = ReconEngine::load(&source, &device)?;
    let size: usize = args[2].parse()?;
    let iters: usize = args[3].parse()?;
    for b in &args[4..] {
        let batch: usize = b.parse()?;
        let img: Vec<f32> = (0..size * size)
            .map(|i| ((i * 7919) % 1000) as f32 / 2000.0)
            .collect();
        let inputs: Vec<&[f32]> = (0..batch).map(|_| img.as_slice()).collect();
        engine.run_network(&inputs, size, size)?; // warm-up
        let mut times = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            engine.run_network(&inputs, size, size)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!("{{\"impl\": \"candle\", \"device\": \"{}\", \"batch\": {batch}, \"size\": {size}, \"median_s\": {:.4}, \"min_s\": {:.4}}}", inferd::models::describe_device(&device), times[times.len() / 2], times[0]);
    }
    Ok(())
}
