//! `inferd train recon`: trains a ReconResNet on undersampled synthetic (and optionally folder) images.
//!
//! Each step draws images, undersamples their k-space with a fresh random mask at one of the requested
//! accelerations, and builds the network input exactly as the server does ([`recon::prepare`]), so the
//! intensity convention of training and serving is the same. The target is the true magnitude in the
//! same scale. Loss: L1 + (1 − SSIM) (7×7 uniform window), Adam. Checkpoints (weights + step) are written
//! every `--checkpoint-every` steps and training resumes from them with `--resume`.

use super::data::ImageSource;
use crate::models::recon_resnet::{ReconResNet, ReconResNetConfig};
use crate::mri::radial::{RadialOperator, RadialSlice};
use crate::mri::traj::{Radial, SpokeAngles};
use crate::mri::{dc::DcMode, masks, metrics, recon};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, clap::Args)]
pub struct TrainReconArgs {
    /// Output safetensors file (the final weights); `<out>.ckpt` holds checkpoints.
    #[arg(long, default_value = "models/recon-lite.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub width: usize,
    #[arg(long, default_value_t = 6)]
    pub blocks: usize,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[command(flatten)]
    pub data: ExampleArgs,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight of (1 − SSIM) in the loss (L1 has weight 1).
    #[arg(long, default_value_t = 1.0)]
    pub ssim_weight: f64,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Continue from `<out>.ckpt` when it exists.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The golden-angle operator for `spokes` spokes of 2N samples at `n²`, planned once per process.
fn radial_operator(n: usize, spokes: usize) -> anyhow::Result<Arc<RadialOperator>> {
    static OPS: OnceLock<Mutex<HashMap<(usize, usize), Arc<RadialOperator>>>> = OnceLock::new();
    let ops = OPS.get_or_init(Default::default);
    if let Some(op) = ops.lock().unwrap().get(&(n, spokes)) {
        return Ok(op.clone());
    }
    let traj = Radial::oversampled(n, spokes, SpokeAngles::GoldenAngle)?;
    let op = Arc::new(RadialOperator::radial(&traj)?);
    ops.lock().unwrap().insert((n, spokes), op.clone());
    Ok(op)
}

/// How the training k-space is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampling {
    /// Cartesian lines or points under a mask (`--pattern`, `--accelerations`).
    Cartesian,
    /// Golden-angle radial spokes of 2N samples (`--spokes`), gridded with density compensation.
    Radial,
}

/// One training example: network input and target, both `[n, n]` in the network's scale.
fn example(
    src: &mut ImageSource,
    rng: &mut ChaCha8Rng,
    args: &ExampleArgs,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let n = args.size;
    let img = src.next(n);
    let p = match args.sampling {
        Sampling::Cartesian => {
            let accel = args.accelerations[rng.random_range(0..args.accelerations.len())];
            let mask = masks::MaskSpec::new(args.pattern, accel, rng.random()).generate(n, n)?;
            recon::prepare(recon::CartesianSlice::single_coil(&img, mask, n, n))?
        }
        Sampling::Radial => {
            let spokes = args.spokes[rng.random_range(0..args.spokes.len())];
            let op = radial_operator(n, spokes)?;
            recon::prepare(RadialSlice::single_coil(&img, op)?)?
        }
    };
    let scale = p.scale();
    let target: Vec<f32> = img.iter().map(|v| v.norm() / scale).collect();
    let input = p.net_input;
    if args.crop == 0 || args.crop >= n {
        return Ok((input, target));
    }
    let c = args.crop;
    let (y0, x0) = (rng.random_range(0..=n - c), rng.random_range(0..=n - c));
    let crop = |v: &[f32]| -> Vec<f32> {
        (0..c)
            .flat_map(|y| v[(y0 + y) * n + x0..(y0 + y) * n + x0 + c].to_vec())
            .collect()
    };
    Ok((crop(&input), crop(&target)))
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output folder: `inputs.npy` and `targets.npy`, both `[N, 1, crop, crop]` float32.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    #[command(flatten)]
    pub data: ExampleArgs,
}

/// The example-generation settings shared by `train recon` and `train recon-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExampleArgs {
    /// Image (and k-space) size the masks are drawn at.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Random crops of this size of the zero-filled/target pair (0 = whole images).
    #[arg(long, default_value_t = 128)]
    pub crop: usize,
    /// Accelerations to draw from, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    pub accelerations: Vec<f32>,
    #[arg(long, default_value = "vd1d")]
    pub pattern: masks::Pattern,
    /// Cartesian (masks) or radial (golden-angle spokes) sampling.
    #[arg(long, value_enum, default_value = "cartesian")]
    pub sampling: Sampling,
    /// Radial spoke counts to draw from, comma-separated (with --sampling radial).
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub spokes: Vec<usize>,
    /// Optional folder of PNG/NPY training images, mixed with the synthetic generator.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Fraction of folder images when --images is given.
    #[arg(long, default_value_t = 0.5)]
    pub images_fraction: f32,
    /// Seed of the training data and of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `inferd train recon-data`: writes training pairs made by exactly the serving pipeline, for training
/// the same architecture in another framework (the shipped weights were trained this way, see
/// models/README.md).
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let d = &args.data;
    let side = if d.crop == 0 || d.crop >= d.size {
        d.size
    } else {
        d.crop
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let per = args.samples.div_ceil(workers);
    let bar = indicatif::ProgressBar::new(args.samples as u64);
    let parts: Vec<anyhow::Result<(Vec<f32>, Vec<f32>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let bar = bar.clone();
                s.spawn(move || -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
                    let seed = d.seed.wrapping_mul(1000).wrapping_add(w as u64);
                    let mut src = ImageSource::new(seed, d.images.as_deref(), d.images_fraction)?;
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabcdef);
                    let (mut xs, mut ys) = (Vec::new(), Vec::new());
                    for _ in 0..per.min(args.samples.saturating_sub(w * per)) {
                        let (x, y) = example(&mut src, &mut rng, d)?;
                        xs.extend(x);
                        ys.extend(y);
                        bar.inc(1);
                    }
                    Ok((xs, ys))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for p in parts {
        let (x, y) = p?;
        xs.extend(x);
        ys.extend(y);
    }
    let n = xs.len() / (side * side);
    crate::io::npy::write_f32(&args.out.join("inputs.npy"), &[n, 1, side, side], &xs)?;
    crate::io::npy::write_f32(&args.out.join("targets.npy"), &[n, 1, side, side], &ys)?;
    bar.finish();
    println!("wrote {n} pairs of {side}x{side} to {}", args.out.display());
    Ok(())
}

/// Mean SSIM with a 7×7 uniform window (valid region), differentiable.
pub fn ssim_loss(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let win = Tensor::ones((1, 1, 7, 7), DType::F32, x.device())?.affine(1.0 / 49.0, 0.0)?;
    let f = |t: &Tensor| t.conv2d(&win, 0, 1, 1, 1);
    let (mx, my) = (f(x)?, f(y)?);
    let vx = (f(&x.sqr()?)? - mx.sqr()?)?;
    let vy = (f(&y.sqr()?)? - my.sqr()?)?;
    let cxy = (f(&(x * y)?)? - (&mx * &my)?)?;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let num = (((&mx * &my)? * 2.0)? + c1)?.mul(&((cxy * 2.0)? + c2)?)?;
    let den = ((mx.sqr()? + my.sqr()?)? + c1)?.mul(&((vx + vy)? + c2)?)?;
    (num / den)?.mean_all()
}

pub fn run(args: TrainReconArgs) -> anyhow::Result<()> {
    let d = &args.data;
    anyhow::ensure!(
        !d.accelerations.is_empty() && d.accelerations.iter().all(|a| *a >= 1.0),
        "--accelerations must be >= 1"
    );
    let device = crate::models::select_device(&args.device)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let varmap = VarMap::new();
    let vb = super::seeded_var_builder(&varmap, d.seed, &device);
    let config = ReconResNetConfig::magnitude(args.width, args.blocks);
    let net = ReconResNet::new(config, vb)?;
    let ckpt = super::Checkpoint::beside(&args.out);
    let start = ckpt.resume(args.resume, |p| Ok(varmap.clone().load(p)?))?;
    let mut opt = super::adam(varmap.all_vars(), args.lr)?;
    let mut src = ImageSource::new(
        d.seed.wrapping_add(start as u64),
        d.images.as_deref(),
        d.images_fraction,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(d.seed.wrapping_add(1 + start as u64));
    let side = if d.crop == 0 || d.crop >= d.size {
        d.size
    } else {
        d.crop
    };
    let bar = super::progress_bar(args.steps, start)?;
    let mut avg = None::<f64>;
    for step in start..args.steps {
        opt.set_learning_rate(super::cosine_lr(args.lr, step, args.steps));
        let mut xs = Vec::with_capacity(args.batch * side * side);
        let mut ys = Vec::with_capacity(args.batch * side * side);
        for _ in 0..args.batch {
            let (x, y) = example(&mut src, &mut rng, d)?;
            xs.extend(x);
            ys.extend(y);
        }
        let x = Tensor::from_vec(xs, (args.batch, 1, side, side), &device)?;
        let y = Tensor::from_vec(ys, (args.batch, 1, side, side), &device)?;
        let pred = net.forward_t(&x, true)?;
        let l1 = (&pred - &y)?.abs()?.mean_all()?;
        let loss = if args.ssim_weight > 0.0 {
            (&l1 + ((1.0 - ssim_loss(&pred, &y)?)? * args.ssim_weight)?)?
        } else {
            l1
        };
        opt.backward_step(&loss)?;
        let l = loss.to_scalar::<f32>()? as f64;
        avg = Some(avg.map_or(l, |a| 0.98 * a + 0.02 * l));
        bar.set_message(format!("loss {:.4}", avg.unwrap()));
        bar.inc(1);
        if (step + 1) % args.checkpoint_every == 0 || step + 1 == args.steps {
            ckpt.save(step + 1, |p| Ok(varmap.save(p)?))?;
            let (zf, rec) = validate(&net, &device, d.size, &d.accelerations)?;
            super::report(
                &bar,
                format!(
                "step {}: loss {:.4}; validation SSIM zero-filled {zf:.4} → network+DC {rec:.4}",
                step + 1,
                avg.unwrap()
            ),
            );
        }
    }
    bar.finish();
    varmap.save(&args.out)?;
    println!(
        "wrote {} ({} parameters)",
        args.out.display(),
        config.parameters()
    );
    Ok(())
}

/// Mean SSIM of zero-filled and network + hard DC on 8 held-out synthetic images (seeds the training
/// stream never uses), at each acceleration.
pub fn validate(
    net: &ReconResNet,
    device: &Device,
    n: usize,
    accels: &[f32],
) -> anyhow::Result<(f64, f64)> {
    let mut gen = crate::mri::phantom::SyntheticMr::new(u64::MAX - 1);
    let (mut zf_sum, mut rec_sum, mut count) = (0.0, 0.0, 0);
    for i in 0..8 {
        let img = gen.sample(n, n);
        for (j, &accel) in accels.iter().enumerate() {
            let mask = masks::MaskSpec::new(
                masks::Pattern::VariableDensity1d,
                accel,
                1_000_000 + (i * 16 + j) as u64,
            )
            .generate(n, n)?;
            let p = recon::prepare(recon::CartesianSlice::single_coil(&img.complex, mask, n, n))?;
            let x = Tensor::from_vec(p.net_input.clone(), (1, 1, n, n), device)?;
            let y = net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            let out = recon::finish(p, &y, DcMode::Hard)?;
            zf_sum += metrics::ssim(&img.magnitude, &out.zero_filled, n, n);
            rec_sum += metrics::ssim(&img.magnitude, &out.magnitude, n, n);
            count += 1;
        }
    }
    Ok((zf_sum / count as f64, rec_sum / count as f64))
}
