//! LightSB exact sampling speed in-process: samples/s for D ∈ {2, 64, 512} × K ∈ {10, 50, 500} at
//! batch 1 and 4096 (one draw per x). Prints CSV; `bench/lightsb_torch.py` prints the same table
//! for a PyTorch implementation of the same formulas, and `bench/run_lightsb_speed.sh` runs both.

use inferd::models::{lightsb::LightSb, select_device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    // INFERD_BENCH_DEVICE (default cpu): where the large matrix products run.
    let device =
        select_device(&std::env::var("INFERD_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("impl,dim,components,batch,samples_per_s,us_per_call");
    for dim in [2usize, 64, 512] {
        for k in [10usize, 50, 500] {
            let la = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let r = (0..k * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let ls = (0..k * dim).map(|_| rng.random_range(-1.0..0.0)).collect();
            let m = LightSb::new(la, r, ls, 1.0, &device)?;
            for batch in [1usize, 4096] {
                let x: Vec<f32> = (0..batch * dim)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                m.sample(&x, 1, &mut rng)?; // warm-up
                let budget = 0.5; // seconds per point
                let start = Instant::now();
                let mut calls = 0usize;
                while start.elapsed().as_secs_f64() < budget || calls < 3 {
                    std::hint::black_box(m.sample(&x, 1, &mut rng)?);
                    calls += 1;
                }
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "inferd,{dim},{k},{batch},{:.0},{:.1}",
                    (calls * batch) as f64 / secs,
                    secs / calls as f64 * 1e6
                );
            }
        }
    }
    Ok(())
}
