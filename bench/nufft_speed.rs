//! NUFFT speed of inferd (type 2 forward, type 1 adjoint) on golden-angle radial k-space: 256² image,
//! 2N-sample spokes, 8 coils transformed as one batch, on rayon's thread pool (RAYON_NUM_THREADS).
//! Plan creation (coordinate checks, tile sort, kernel weights) is timed separately from execution.
//! Prints CSV: transform,spokes,tolerance,width,plan_ms,exec_ms (medians). bench/run_nufft.sh puts it
//! next to FINUFFT.
//!
//! cargo run --release --example nufft_speed [-- --reps 7] [--coils 8]

use inferd::mri::nufft::{NufftOptions, NufftPlan};
use inferd::mri::traj::{Radial, SpokeAngles};
use num_complex::Complex32;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn values(n: usize, seed: u32) -> Vec<Complex32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as f32 / u32::MAX as f32 - 0.5
    };
    (0..n).map(|_| Complex32::new(next(), next())).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let coils: usize = args
        .iter()
        .position(|a| a == "--coils")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let n = 256usize;
    println!("transform,spokes,tolerance,width,plan_ms,exec_ms");
    for spokes in [60usize, 402] {
        let coords = Radial::oversampled(n, spokes, SpokeAngles::GoldenAngle)
            .expect("trajectory")
            .coords();
        for tol in [1e-4, 1e-6] {
            let opts = NufftOptions::with_tolerance(tol);
            let mut plan_ms = Vec::new();
            let mut plan = None;
            for _ in 0..reps.max(3) {
                let t = Instant::now();
                plan = Some(NufftPlan::new(n, n, &coords, &opts).expect("plan"));
                plan_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let plan = plan.expect("plan");
            let plan_ms = median(plan_ms);
            let w = plan.kernel().width();

            let images = values(coils * n * n, 1);
            let mut samples = vec![Complex32::default(); coils * plan.samples()];
            plan.forward_into(&images, &mut samples).expect("forward"); // warm-up
            let mut t2 = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                plan.forward_into(&images, &mut samples).expect("forward");
                t2.push(t.elapsed().as_secs_f64() * 1e3);
            }
            println!("type 2,{spokes},{tol:e},{w},{plan_ms:.2},{:.2}", median(t2));

            let data = values(coils * plan.samples(), 2);
            let mut out = vec![Complex32::default(); coils * n * n];
            plan.adjoint_into(&data, &mut out).expect("adjoint"); // warm-up
            let mut t1 = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                plan.adjoint_into(&data, &mut out).expect("adjoint");
                t1.push(t.elapsed().as_secs_f64() * 1e3);
            }
            println!("type 1,{spokes},{tol:e},{w},{plan_ms:.2},{:.2}", median(t1));
        }
    }
}
