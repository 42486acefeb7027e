//! LightSB fidelity on the entropic-OT benchmark construction of PAPERS.md §2 (Gushchin et al.
//! 2023): a ground-truth plan inside the LightSB family, a Gaussian source, target samples drawn
//! from the true plan, a fresh model fitted on *unpaired* samples, and
//!
//!   cBW²-UVP = 100 % · E_x[ BW²(π̂(·|x), π*(·|x)) ] / Var(p1)
//!
//! over 1000 test points, with BW² between the two conditionals' first two moments. Moments are
//! exact (closed form for both mixtures) rather than estimated from samples.
//!
//! Ground truth: K* = 5 components with equal weights, r* ~ N(0, I), S* = diag(exp(u)),
//! u ~ U(−0.5, 0.5), p0 = N(0, I); 50 000 source and 50 000 target samples for training.
//!
//! cargo run --release --example lightsb_eot [-- D EPS [LR [STEPS [SAMPLES]]]]   (no arguments: the
//! full table with the paper's settings and 50 000 samples)

use candle_core::Device;
use inferd::models::lightsb::LightSb;
use inferd::train::bridge::{fit, FitConfig};
use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample(rand_distr::StandardNormal)
}

fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let d = e.eigenvalues.map(|v| v.max(0.0).sqrt());
    &e.eigenvectors * DMatrix::from_diagonal(&d) * e.eigenvectors.transpose()
}

/// Bures–Wasserstein² between N(m1, c1) and N(m2, c2).
fn bw2(m1: &[f64], c1: &[f64], m2: &[f64], c2: &[f64], d: usize) -> f64 {
    let a = DMatrix::from_row_slice(d, d, c1);
    let b = DMatrix::from_row_slice(d, d, c2);
    let ra = sqrt_psd(&a);
    let mid = &ra * &b * &ra;
    let cross: f64 = SymmetricEigen::new((&mid + mid.transpose()) * 0.5)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    let dm: f64 = m1.iter().zip(m2).map(|(x, y)| (x - y).powi(2)).sum();
    dm + a.trace() + b.trace() - 2.0 * cross
}

fn run(d: usize, eps: f32, cfg: FitConfig, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(1000 * d as u64 + (eps * 10.0) as u64);
    let k = 5;
    let truth = LightSb::new(
        vec![0.0; k],
        (0..k * d).map(|_| normal(&mut rng)).collect(),
        (0..k * d).map(|_| rng.random_range(-0.5..0.5)).collect(),
        eps,
        &Device::Cpu,
    )?;
    let x: Vec<f32> = (0..n * d).map(|_| normal(&mut rng)).collect();
    // targets from the true plan for *other* source draws: the training pairs are not linked
    let x_for_y: Vec<f32> = (0..n * d).map(|_| normal(&mut rng)).collect();
    let y = truth.sample(&x_for_y, 1, &mut rng)?;
    let start = Instant::now();
    let model = fit(&x, &y, d, &cfg, &Device::Cpu, |_, _| {})?;
    let train_s = start.elapsed().as_secs_f64();
    // Var(p1): total variance of the target
    let mut mean = vec![0.0f64; d];
    for row in y.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let var: f64 = y
        .chunks_exact(d)
        .map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(&v, m)| (v as f64 - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / (n - 1) as f64;
    let tests = 1000;
    let mut total = 0.0;
    for _ in 0..tests {
        let xt: Vec<f32> = (0..d).map(|_| normal(&mut rng)).collect();
        let (m1, c1) = model.conditional_moments(&xt)?;
        let (m2, c2) = truth.conditional_moments(&xt)?;
        total += bw2(&m1, &c1, &m2, &c2, d);
    }
    Ok((100.0 * total / tests as f64 / var, train_s))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // optional overrides: D EPS [LR [STEPS [SAMPLES]]]
    let lr: Option<f64> = args.get(3).map(|s| s.parse()).transpose()?;
    let steps: Option<usize> = args.get(4).map(|s| s.parse()).transpose()?;
    let n: usize = args
        .get(5)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50_000);
    let configs: Vec<(usize, f32)> = if args.len() >= 3 {
        vec![(args[1].parse()?, args[2].parse()?)]
    } else {
        [0.1f32, 1.0, 10.0]
            .iter()
            .flat_map(|&e| [2usize, 16, 64, 128].map(|d| (d, e)))
            .collect()
    };
    println!("dim,epsilon,cbw2_uvp_percent,train_seconds");
    for (d, e) in configs {
        let mut cfg = FitConfig::paper(e);
        cfg.lr = lr.unwrap_or(cfg.lr);
        cfg.steps = steps.unwrap_or(cfg.steps);
        let (uvp, secs) = run(d, e, cfg, n)?;
        println!("{d},{e},{uvp:.3},{secs:.1}");
    }
    Ok(())
}
