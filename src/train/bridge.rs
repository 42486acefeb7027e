//! `inferd train bridge`: fits a Light Schrödinger Bridge to unpaired samples of a source and a
//! target distribution (PAPERS.md §2).
//!
//! Loss `L = E_x[log c(x)] − E_y[log v(y)]` (the KL divergence to the true entropic plan up to a
//! constant), Adam on independent mini-batches of x and y. As in the authors' code, the optimiser
//! sees `ε·log α` rather than `log α` (so one learning rate suits very different ε), the means r_k
//! start at random target samples and the log-diagonals at `log S_init`.

use crate::io::npy::{self, NpyData};
use crate::models::lightsb::LightSb;
use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct TrainBridgeArgs {
    /// Source samples x: NPY `[N, D]` or CSV (one sample per line).
    #[arg(long, required_unless_present = "toy")]
    pub source: Option<PathBuf>,
    /// Target samples y: NPY `[M, D]` or CSV. Not paired with the source.
    #[arg(long, required_unless_present = "toy")]
    pub target: Option<PathBuf>,
    /// Instead of files, a built-in 2-D toy problem: gaussian-swissroll.
    #[arg(long, conflicts_with_all = ["source", "target"])]
    pub toy: Option<String>,
    /// Output safetensors file; `<out>.ckpt.safetensors` and `<out>.ckpt.step` hold checkpoints.
    #[arg(long)]
    pub out: PathBuf,
    /// Entropic regularisation ε (variance of the Wiener prior).
    #[arg(long)]
    pub epsilon: f32,
    /// Mixture components K.
    #[arg(long, default_value_t = 50)]
    pub components: usize,
    #[arg(long, default_value_t = 10_000)]
    pub steps: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Adam learning rate (default by ε as in the paper: 1e-3 for ε ≤ 0.1, 3e-3 for ε ≤ 1, else 6e-2).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Initial value of every diagonal entry of S_k.
    #[arg(long, default_value_t = 1.0)]
    pub s_init: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint when it exists.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Training settings without the file handling (used by the CLI, tests and benchmarks).
#[derive(Debug, Clone)]
pub struct FitConfig {
    pub epsilon: f32,
    pub components: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub s_init: f32,
    pub seed: u64,
}

impl FitConfig {
    /// The paper's settings for a given ε: K = 50, 10 000 steps, batch 128, ε-dependent learning rate.
    pub fn paper(epsilon: f32) -> Self {
        FitConfig {
            epsilon,
            components: 50,
            steps: 10_000,
            batch: 128,
            lr: default_lr(epsilon),
            s_init: 1.0,
            seed: 0,
        }
    }
}

pub fn default_lr(epsilon: f32) -> f64 {
    if epsilon <= 0.1 {
        1e-3
    } else if epsilon <= 1.0 {
        3e-3
    } else {
        6e-2
    }
}

/// The trainable state: ε·log α, r, log S.
struct Params {
    eps_log_alpha: Var,
    r: Var,
    log_s: Var,
}

impl Params {
    fn init(
        cfg: &FitConfig,
        y: &[f32],
        dim: usize,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        let k = cfg.components;
        let m = y.len() / dim;
        let mut r = Vec::with_capacity(k * dim);
        for _ in 0..k {
            let i = rng.random_range(0..m);
            r.extend_from_slice(&y[i * dim..(i + 1) * dim]);
        }
        let la = cfg.epsilon * (1.0 / k as f32).ln();
        Ok(Params {
            eps_log_alpha: Var::from_vec(vec![la; k], k, dev)?,
            r: Var::from_vec(r, (k, dim), dev)?,
            log_s: Var::from_vec(vec![cfg.s_init.ln(); k * dim], (k, dim), dev)?,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![
            self.eps_log_alpha.clone(),
            self.r.clone(),
            self.log_s.clone(),
        ]
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let t = HashMap::from([
            (
                "eps_log_alpha".to_string(),
                self.eps_log_alpha.as_tensor().clone(),
            ),
            ("r".to_string(), self.r.as_tensor().clone()),
            ("log_s".to_string(), self.log_s.as_tensor().clone()),
        ]);
        candle_core::safetensors::save(&t, path)?;
        Ok(())
    }

    fn load(&self, path: &Path, dev: &Device) -> anyhow::Result<()> {
        let t = candle_core::safetensors::load(path, dev)?;
        for (name, var) in [
            ("eps_log_alpha", &self.eps_log_alpha),
            ("r", &self.r),
            ("log_s", &self.log_s),
        ] {
            let v = t
                .get(name)
                .with_context(|| format!("checkpoint lacks {name}"))?;
            var.set(v)?;
        }
        Ok(())
    }

    fn to_model(&self, epsilon: f32, dev: &Device) -> anyhow::Result<LightSb> {
        let la: Vec<f32> = (self.eps_log_alpha.as_tensor() / epsilon as f64)?.to_vec1()?;
        let r: Vec<f32> = self.r.as_tensor().flatten_all()?.to_vec1()?;
        let ls: Vec<f32> = self.log_s.as_tensor().flatten_all()?.to_vec1()?;
        Ok(LightSb::new(la, r, ls, epsilon, dev)?)
    }
}

/// Max-shifted log-sum-exp over the last dimension.
fn log_sum_exp(t: &Tensor) -> candle_core::Result<Tensor> {
    let m = t.max_keepdim(D::Minus1)?.detach();
    t.broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&m)?
        .squeeze(D::Minus1)
}

/// `E_x[log c(x)] − E_y[log v(y)]` for one pair of mini-batches.
fn loss(p: &Params, x: &Tensor, y: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dim = x.dim(1)? as f64;
    let log_alpha = (p.eps_log_alpha.as_tensor() / eps)?;
    let s = p.log_s.as_tensor().exp()?;
    let r = p.r.as_tensor();
    // log c(x) = LSE_k [log α_k + (xᵀS_k x + 2 r_kᵀx) / 2ε]
    let xs = x.sqr()?.matmul(&s.t()?)?;
    let xr = (x.matmul(&r.t()?)? * 2.0)?;
    let cx = ((xs + xr)? / (2.0 * eps))?.broadcast_add(&log_alpha)?;
    // log v(y) = LSE_k [log α_k + log N(y | r_k, ε S_k)]
    let inv = (s * eps)?.recip()?;
    let yy = y.sqr()?.matmul(&inv.t()?)?;
    let yr = (y.matmul(&(r * &inv)?.t()?)? * 2.0)?;
    let rr = (r.sqr()? * &inv)?.sum(1)?;
    let quad = (yy - yr)?.broadcast_add(&rr)?;
    let log_norm =
        ((p.log_s.as_tensor().sum(1)? + dim * (2.0 * std::f64::consts::PI * eps).ln())? * -0.5)?;
    let vy = (quad * -0.5)?
        .broadcast_add(&log_norm)?
        .broadcast_add(&log_alpha)?;
    log_sum_exp(&cx)?.mean_all()? - log_sum_exp(&vy)?.mean_all()?
}

/// Draws a mini-batch of `b` rows.
fn batch(
    data: &[f32],
    dim: usize,
    b: usize,
    rng: &mut ChaCha8Rng,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = data.len() / dim;
    let mut out = Vec::with_capacity(b * dim);
    for _ in 0..b {
        let i = rng.random_range(0..n);
        out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
    }
    Tensor::from_vec(out, (b, dim), dev)
}

/// Fits a bridge from samples `x` and `y` (`[*, dim]` each). `on_step(step, loss)` reports progress.
pub fn fit(
    x: &[f32],
    y: &[f32],
    dim: usize,
    cfg: &FitConfig,
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> anyhow::Result<LightSb> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let params = Params::init(cfg, y, dim, &mut rng, device)?;
    train(
        &params,
        x,
        y,
        dim,
        cfg,
        device,
        0,
        &mut rng,
        &mut on_step,
        |_| Ok(()),
    )?;
    params.to_model(cfg.epsilon, device)
}

#[allow(clippy::too_many_arguments)]
fn train(
    params: &Params,
    x: &[f32],
    y: &[f32],
    dim: usize,
    cfg: &FitConfig,
    device: &Device,
    start: usize,
    rng: &mut ChaCha8Rng,
    on_step: &mut impl FnMut(usize, f32),
    mut checkpoint: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut opt = super::adam(params.vars(), cfg.lr)?;
    for step in start..cfg.steps {
        let xb = batch(x, dim, cfg.batch, rng, device)?;
        let yb = batch(y, dim, cfg.batch, rng, device)?;
        let l = loss(params, &xb, &yb, cfg.epsilon as f64)?;
        opt.backward_step(&l)?;
        on_step(step, l.to_scalar::<f32>()?);
        checkpoint(step + 1)?;
    }
    Ok(())
}

/// Reads `[N, D]` samples from NPY or CSV.
pub fn read_samples(path: &Path) -> anyhow::Result<(Vec<f32>, usize)> {
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (data, dim) = if is_csv {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut data = Vec::new();
        let mut dim = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let row: Result<Vec<f32>, _> =
                line.split(',').map(|v| v.trim().parse::<f32>()).collect();
            let Ok(row) = row else {
                if data.is_empty() && dim.is_none() {
                    continue; // a header line
                }
                bail!("{} line {}: not a row of numbers", path.display(), i + 1);
            };
            match dim {
                None => dim = Some(row.len()),
                Some(d) if d != row.len() => bail!(
                    "{} line {}: {} values, earlier rows have {d}",
                    path.display(),
                    i + 1,
                    row.len()
                ),
                _ => {}
            }
            data.extend(row);
        }
        (data, dim.unwrap_or(0))
    } else {
        let a = npy::read(path)?;
        let NpyData::F32(data) = a.data else {
            bail!(
                "{}: not real floating-point samples; expected float32/float64 [N, D]",
                path.display()
            );
        };
        match a.shape[..] {
            [_, d] => (data, d),
            [_] => (data, 1),
            _ => bail!("{}: shape {:?}, expected [N, D]", path.display(), a.shape),
        }
    };
    if dim == 0 || data.is_empty() {
        bail!("{}: no samples", path.display());
    }
    if data.iter().any(|v| !v.is_finite()) {
        bail!("{}: contains NaN or infinity", path.display());
    }
    Ok((data, dim))
}

/// 2-D toy problems: (source, target), `n` samples each.
pub fn toy(name: &str, n: usize, seed: u64) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = || -> f32 { rng.sample(rand_distr::StandardNormal) };
    match name {
        "gaussian-swissroll" => {
            let x: Vec<f32> = (0..2 * n).map(|_| normal()).collect();
            let mut y = Vec::with_capacity(2 * n);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            for _ in 0..n {
                // the classic roll: t in [1.5π, 4.5π], radius t, scaled to about ±2
                let t = 1.5 * std::f32::consts::PI * (1.0 + 2.0 * rng.random::<f32>());
                let nx: f32 = rng.sample(rand_distr::StandardNormal);
                let ny: f32 = rng.sample(rand_distr::StandardNormal);
                y.push((t * t.cos() + 0.5 * nx) / 7.5);
                y.push((t * t.sin() + 0.5 * ny) / 7.5);
            }
            Ok((x, y))
        }
        other => bail!("unknown toy problem {other:?}; expected gaussian-swissroll"),
    }
}

pub fn run(args: TrainBridgeArgs) -> anyhow::Result<()> {
    let device = crate::models::select_device(&args.device)?;
    let (x, y, dim) = match (&args.toy, &args.source, &args.target) {
        (Some(name), _, _) => {
            let (x, y) = toy(name, 20_000, args.seed)?;
            (x, y, 2)
        }
        (None, Some(s), Some(t)) => {
            let (x, dx) = read_samples(s)?;
            let (y, dy) = read_samples(t)?;
            if dx != dy {
                bail!("source has D = {dx}, target D = {dy}; they must agree");
            }
            (x, y, dx)
        }
        _ => bail!("give --source and --target, or --toy"),
    };
    if !(args.epsilon.is_finite() && args.epsilon > 0.0) {
        bail!("--epsilon must be > 0");
    }
    let cfg = FitConfig {
        epsilon: args.epsilon,
        components: args.components.max(1),
        steps: args.steps,
        batch: args.batch.max(1),
        lr: args.lr.unwrap_or_else(|| default_lr(args.epsilon)),
        s_init: args.s_init,
        seed: args.seed,
    };
    println!(
        "fitting LightSB: D = {dim}, K = {}, ε = {}, {} steps of batch {}, lr {}; {} source and {} target samples",
        cfg.components,
        cfg.epsilon,
        cfg.steps,
        cfg.batch,
        cfg.lr,
        x.len() / dim,
        y.len() / dim
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let params = Params::init(&cfg, &y, dim, &mut rng, &device)?;
    let ckpt = super::Checkpoint::beside(&args.out);
    let start = ckpt.resume(args.resume, |p| params.load(p, &device))?;
    if start > 0 {
        rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(start as u64));
    }
    let bar = super::progress_bar(cfg.steps, start)?;
    let mut avg = None::<f64>;
    let started = std::time::Instant::now();
    train(
        &params,
        &x,
        &y,
        dim,
        &cfg,
        &device,
        start,
        &mut rng,
        &mut |_, l| {
            let a = avg.map_or(l as f64, |a| 0.99 * a + 0.01 * l as f64);
            avg = Some(a);
            bar.set_message(format!("loss {a:.4}"));
            bar.inc(1);
        },
        |done| {
            if done % args.checkpoint_every.max(1) == 0 || done == cfg.steps {
                ckpt.save(done, |p| params.save(p))?;
            }
            Ok(())
        },
    )?;
    bar.finish();
    let model = params.to_model(cfg.epsilon, &device)?;
    let tensors: HashMap<String, Tensor> = model
        .tensors()?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&tensors, &args.out)?;
    println!(
        "wrote {} in {:.1} s (final loss {:.4})",
        args.out.display(),
        started.elapsed().as_secs_f32(),
        avg.unwrap_or(f64::NAN)
    );
    Ok(())
}
