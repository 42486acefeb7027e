//! Times inferd's ReconResNet forward pass (candle, CPU) on a weights file; prints one JSON line per
//! batch size. `bench/candle_vs_torch.py` runs it side by side with PyTorch on the same weights.
//!
//! cargo run --release --example recon_forward -- WEIGHTS.safetensors SIZE ITERS BATCH [BATCH ...]

use candle_core::Device;
use inferd::models::{ReconEngine, WeightsSource};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: recon_forward WEIGHTS SIZE ITERS BATCH [BATCH ...]"
    );
    let engine = ReconEngine::load(&WeightsSource::File(args[1].clone().into()), &Device::Cpu)?;
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
        println!("{{\"impl\": \"candle\", \"batch\": {batch}, \"size\": {size}, \"median_s\": {:.4}, \"min_s\": {:.4}}}", times[times.len() / 2], times[0]);
    }
    Ok(())
}
