//! LightSB against answers known in closed form: the Gaussian → Gaussian entropic plan (Janati et
//! al. 2020, as written in PAPERS.md §2), the moments of a known mixture, and the agreement of
//! Euler–Maruyama paths with exact sampling.

use candle_core::Device;
use inferd::models::lightsb::LightSb;
use inferd::train::bridge::{fit, FitConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample(rand_distr::StandardNormal)
}

/// Empirical mean and per-coordinate variance of `[n, d]` samples.
fn moments(s: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (s.len() / d) as f64;
    let mut mean = vec![0.0; d];
    for row in s.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n;
        }
    }
    let mut var = vec![0.0; d];
    for row in s.chunks_exact(d) {
        for i in 0..d {
            var[i] += (row[i] as f64 - mean[i]).powi(2) / (n - 1.0);
        }
    }
    (mean, var)
}

#[test]
fn gaussian_to_gaussian_matches_the_closed_form() {
    // Diagonal Σ0, Σ1, so that the closed-form S is diagonal, as LightSB's S_k are:
    // S = (√(4 σ0² σ1² + ε²) − ε) / (2 σ0²) per coordinate, π(y|x) = N(μ1 + S (x − μ0), ε S).
    for (d, eps) in [(2usize, 0.1f32), (2, 1.0), (16, 0.1), (16, 1.0)] {
        let mut rng = ChaCha8Rng::seed_from_u64(d as u64 * 10 + (eps * 10.0) as u64);
        let mu0: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mu1: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let sd0: Vec<f32> = (0..d).map(|_| rng.random_range(0.6..1.4)).collect();
        let sd1: Vec<f32> = (0..d).map(|_| rng.random_range(0.6..1.4)).collect();
        let n = 50_000;
        let draw = |mu: &[f32], sd: &[f32], rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..n * d)
                .map(|i| mu[i % d] + sd[i % d] * normal(rng))
                .collect()
        };
        let x = draw(&mu0, &sd0, &mut rng);
        let y = draw(&mu1, &sd1, &mut rng);
        let cfg = FitConfig {
            components: 1,
            steps: 3000,
            batch: 1024,
            lr: 1e-2,
            ..FitConfig::paper(eps)
        };
        let model = fit(&x, &y, d, &cfg, &Device::Cpu, |_, _| {}).unwrap();
        for probe in 0..3 {
            let xp: Vec<f32> = (0..d)
                .map(|i| mu0[i] + sd0[i] * (probe as f32 - 1.0))
                .collect();
            let (mean, cov) = model.conditional_moments(&xp).unwrap();
            for i in 0..d {
                let (a, b) = ((sd0[i] as f64).powi(2), (sd1[i] as f64).powi(2));
                let e = eps as f64;
                let s = ((4.0 * a * b + e * e).sqrt() - e) / (2.0 * a);
                let want_mean = mu1[i] as f64 + s * (xp[i] - mu0[i]) as f64;
                let want_var = e * s;
                // Tolerances: stochastic optimisation on 50 000 samples; errors are relative to σ1.
                let sd1i = sd1[i] as f64;
                assert!(
                    (mean[i] - want_mean).abs() < 0.06 * sd1i,
                    "D {d} ε {eps} x{probe} coord {i}: mean {} vs {want_mean}",
                    mean[i]
                );
                assert!(
                    (cov[i * d + i] - want_var).abs() < 0.1 * want_var + 0.01 * sd1i * sd1i,
                    "D {d} ε {eps} coord {i}: variance {} vs {want_var}",
                    cov[i * d + i]
                );
            }
        }
    }
}

/// A known three-component model in 2-D with well separated components.
fn known_model() -> LightSb {
    LightSb::new(
        vec![0.0, (0.5f32).ln(), (0.25f32).ln()],
        vec![-6.0, 0.0, 6.0, 0.0, 0.0, 6.0],
        vec![0.0, -0.5, -1.0, 0.2, 0.3, -0.3],
        0.5,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn sampling_reproduces_the_mixture_moments() {
    let m = known_model();
    let x = [0.3f32, -0.2];
    let n = 200_000;
    let y = m.sample(&x, n, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    // weights: assign each draw to the nearest component mean r_k + S_k x
    let g = m.gamma(&x, 1).unwrap();
    // the component means r_k + S_k x of known_model()
    let (r, log_s) = (
        [[-6.0f32, 0.0], [6.0, 0.0], [0.0, 6.0]],
        [[0.0f32, -0.5], [-1.0, 0.2], [0.3, -0.3]],
    );
    let means: Vec<[f32; 2]> = (0..3)
        .map(|k| {
            [
                r[k][0] + log_s[k][0].exp() * x[0],
                r[k][1] + log_s[k][1].exp() * x[1],
            ]
        })
        .collect();
    let mut counts = [0usize; 3];
    for s in y.chunks_exact(2) {
        let k = (0..3)
            .min_by(|&a, &b| {
                let da = (s[0] - means[a][0]).powi(2) + (s[1] - means[a][1]).powi(2);
                let db = (s[0] - means[b][0]).powi(2) + (s[1] - means[b][1]).powi(2);
                da.total_cmp(&db)
            })
            .unwrap();
        counts[k] += 1;
    }
    for k in 0..3 {
        let p = g[k] as f64;
        let freq = counts[k] as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (freq - p).abs() < 5.0 * se + 1e-4,
            "component {k}: {freq} vs γ {p}"
        );
    }
    let (mean, cov) = m.conditional_moments(&x).unwrap();
    let (emp_mean, emp_var) = moments(&y, 2);
    for i in 0..2 {
        let se = (cov[i * 2 + i] / n as f64).sqrt();
        assert!(
            (emp_mean[i] - mean[i]).abs() < 5.0 * se,
            "mean {i}: {} vs {}",
            emp_mean[i],
            mean[i]
        );
        // variance of a sample variance ≈ 2σ⁴/n for near-Gaussian; mixtures are heavier, allow 3 %
        assert!(
            (emp_var[i] / cov[i * 2 + i] - 1.0).abs() < 0.03,
            "var {i}: {} vs {}",
            emp_var[i],
            cov[i * 2 + i]
        );
    }
}

#[test]
fn euler_maruyama_paths_agree_with_exact_sampling() {
    let m = known_model();
    let x = [0.3f32, -0.2];
    let n = 20_000;
    let steps = 200;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let paths = m.trajectories_euler(&x, n, steps, &mut rng).unwrap();
    let t = steps + 1;
    let ends: Vec<f32> = paths
        .chunks_exact(t * 2)
        .flat_map(|p| p[(t - 1) * 2..].to_vec())
        .collect();
    let mids: Vec<f32> = paths
        .chunks_exact(t * 2)
        .flat_map(|p| p[(steps / 2) * 2..(steps / 2 + 1) * 2].to_vec())
        .collect();
    let exact = m.sample(&x, n, &mut rng).unwrap();
    let mut exact_mid = exact.clone();
    m.states_at(&x, &mut exact_mid, n, 0.5, &mut rng);
    // Brownian-bridge paths through t = 0.5 must have the same marginal too.
    let bridge =
        m.trajectories_bridge(&x, &m.gamma(&x, 1).unwrap(), n, &[0.25, 0.5, 1.0], &mut rng);
    let bridge_mid: Vec<f32> = bridge
        .chunks_exact(4 * 2)
        .flat_map(|p| p[4..6].to_vec())
        .collect();
    for (name, a, b) in [
        ("endpoint EM vs exact", &ends, &exact),
        ("t=0.5 EM vs exact", &mids, &exact_mid),
        ("t=0.5 bridge path vs exact", &bridge_mid, &exact_mid),
    ] {
        let (ma, va) = moments(a, 2);
        let (mb, vb) = moments(b, 2);
        for i in 0..2 {
            // Monte-Carlo error of the difference of two means, plus the O(dt) discretisation error.
            let se = ((va[i] + vb[i]) / n as f64).sqrt();
            assert!(
                (ma[i] - mb[i]).abs() < 5.0 * se + 0.05,
                "{name} mean {i}: {} vs {}",
                ma[i],
                mb[i]
            );
            assert!(
                (va[i] / vb[i] - 1.0).abs() < 0.08,
                "{name} var {i}: {} vs {}",
                va[i],
                vb[i]
            );
        }
    }
}

#[test]
fn cli_trains_from_npy_and_csv_and_resumes() {
    use inferd::train::bridge::{run, TrainBridgeArgs};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x: Vec<f32> = (0..2000 * 3).map(|_| normal(&mut rng)).collect();
    let y: Vec<f32> = (0..2000 * 3)
        .map(|i| 2.0 + 0.5 * normal(&mut rng) + (i % 3) as f32)
        .collect();
    let xs = dir.path().join("x.npy");
    inferd::io::npy::write_f32(&xs, &[2000, 3], &x).unwrap();
    // the target as CSV with a header line, as spreadsheets write it
    let ys = dir.path().join("y.csv");
    let mut csv = String::from("a,b,c\n");
    for row in y.chunks_exact(3) {
        csv += &format!("{},{},{}\n", row[0], row[1], row[2]);
    }
    std::fs::write(&ys, csv).unwrap();
    let out = dir.path().join("b.safetensors");
    let args = |steps: usize, resume: bool| TrainBridgeArgs {
        source: Some(xs.clone()),
        target: Some(ys.clone()),
        toy: None,
        out: out.clone(),
        epsilon: 0.5,
        components: 4,
        steps,
        batch: 64,
        lr: Some(1e-2),
        s_init: 1.0,
        seed: 0,
        checkpoint_every: 100,
        resume,
        device: "cpu".into(),
    };
    run(args(200, false)).unwrap();
    let step = std::fs::read_to_string(out.with_extension("ckpt.step")).unwrap();
    assert_eq!(step.trim(), "200");
    run(args(400, true)).unwrap();
    let step = std::fs::read_to_string(out.with_extension("ckpt.step")).unwrap();
    assert_eq!(step.trim(), "400");
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let m = LightSb::from_tensors(&t, &Device::Cpu).unwrap();
    assert_eq!((m.dim, m.components, m.epsilon), (3, 4, 0.5));
    // after 400 steps the conditional mean has moved from the source towards the target
    let (mean, _) = m.conditional_moments(&[0.0, 0.0, 0.0]).unwrap();
    for (i, v) in mean.iter().enumerate() {
        assert!((v - (2.0 + i as f64)).abs() < 0.6, "coord {i}: {v}");
    }
}
