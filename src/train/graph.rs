//! `inferd train graph`: trains a set / neighbourhood model (element encoder → aggregator → decoder)
//! with any aggregator (sum, mean, max, gru, lcm).
//!
//! Task `second-min` (PAPERS.md §3): a multiset of 8-bit integers, each given as 8 bits (bit i =
//! (v >> i) & 1, least significant first); the target is the 8 bits of the second-smallest element.
//! Fresh random sets of sizes `--min-size..=--max-size` every step; exact-set accuracy is reported on
//! held-out sets of sizes 16, 32, 64 and 128. LCM adds `--assoc-weight` × (associativity +
//! identity) regularisers. Loss: binary cross-entropy on the bits; Adam.

use crate::models::lcm::{exact_accuracy, AggKind, Aggregator, Csr, SetModel};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct TrainGraphArgs {
    /// Task: second-min.
    #[arg(long, default_value = "second-min")]
    pub task: String,
    /// sum, mean, max, gru or lcm.
    #[arg(long, default_value = "lcm")]
    pub aggregator: AggKind,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Sets per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Width of the element embedding and of ⊕.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Weight of the associativity and identity regularisers (LCM only).
    #[arg(long, default_value_t = 0.1)]
    pub assoc_weight: f64,
    #[arg(long, default_value_t = 2)]
    pub min_size: usize,
    #[arg(long, default_value_t = 16)]
    pub max_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Continue from `<out>.ckpt.safetensors` when it exists.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The bits of `v`, least significant first.
pub fn bits(v: u8) -> [f32; 8] {
    std::array::from_fn(|i| ((v >> i) & 1) as f32)
}

/// A batch of second-minimum sets: element bits `[N, 8]`, the set of each element, target bits `[G, 8]`.
pub fn second_min_batch(
    sets: usize,
    sizes: std::ops::RangeInclusive<usize>,
    rng: &mut impl Rng,
) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let (mut x, mut batch, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..sets {
        let n = rng.random_range(sizes.clone());
        let mut vals: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        for &v in &vals {
            x.extend(bits(v));
            batch.push(g as i64);
        }
        vals.sort_unstable();
        y.extend(bits(vals[1]));
    }
    (x, batch, y)
}

/// Exact-set accuracy of `model` on `sets` held-out sets of exactly `size` elements.
pub fn evaluate(
    model: &SetModel,
    size: usize,
    sets: usize,
    seed: u64,
    device: &Device,
) -> anyhow::Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut correct = 0.0;
    let chunk = 256;
    let mut done = 0;
    while done < sets {
        let n = chunk.min(sets - done);
        let (x, batch, y) = second_min_batch(n, size..=size, &mut rng);
        let csr = Csr::from_batch(&batch)?;
        let xt = Tensor::from_vec(x, (batch.len(), 8), device)?;
        let yt = Tensor::from_vec(y, (n, 8), device)?;
        let logits = model.forward(&xt, &csr)?;
        correct += exact_accuracy(&logits, &yt)? * n as f64;
        done += n;
    }
    Ok(correct / sets as f64)
}

/// Writes the weights and the aggregator marker.
pub fn save(varmap: &VarMap, kind: AggKind, path: &std::path::Path) -> anyhow::Result<()> {
    let mut tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().to_device(&Device::Cpu).unwrap()))
        .collect();
    tensors.insert(
        "aggregator_kind".into(),
        Tensor::from_slice(&[kind.code()], 1, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

pub fn run(args: TrainGraphArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.task == "second-min",
        "unknown task {:?}; expected second-min",
        args.task
    );
    anyhow::ensure!(
        args.min_size >= 2 && args.max_size >= args.min_size,
        "set sizes must satisfy 2 <= min <= max"
    );
    let device = crate::models::select_device(&args.device)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = SetModel::new(args.aggregator, 8, args.hidden, 8, vb)?;
    let ckpt = super::Checkpoint::beside(&args.out);
    let start = ckpt.resume(args.resume, |p| Ok(varmap.clone().load(p)?))?;
    let mut opt = super::adam(varmap.all_vars(), args.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(start as u64));
    let bar = super::progress_bar(args.steps, start)?;
    let started = std::time::Instant::now();
    let mut avg = None::<f64>;
    for step in start..args.steps {
        opt.set_learning_rate(super::cosine_lr(args.lr, step, args.steps));
        let (x, batch, y) = second_min_batch(args.batch, args.min_size..=args.max_size, &mut rng);
        let csr = Csr::from_batch(&batch)?;
        let xt = Tensor::from_vec(x, (batch.len(), 8), &device)?;
        let yt = Tensor::from_vec(y, (args.batch, 8), &device)?;
        let logits = model.forward(&xt, &csr)?;
        let mut loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &yt)?;
        if let (Aggregator::Lcm(m), true) = (&model.agg, args.assoc_weight > 0.0) {
            let h = model.encode(&xt)?;
            let (assoc, ident) = m.regularisers(&h, 256, &mut rng)?;
            loss = (loss + ((assoc + ident)? * args.assoc_weight)?)?;
        }
        opt.backward_step(&loss)?;
        let l = loss.to_scalar::<f32>()? as f64;
        let a = avg.map_or(l, |a| 0.98 * a + 0.02 * l);
        avg = Some(a);
        bar.set_message(format!("loss {a:.4}"));
        bar.inc(1);
        let done = step + 1;
        if done % args.checkpoint_every.max(1) == 0 || done == args.steps {
            ckpt.save(done, |p| Ok(varmap.save(p)?))?;
            let acc = evaluate(&model, 32, 512, 7, &device)?;
            super::report(
                &bar,
                format!(
                    "step {done}: loss {a:.4}, exact accuracy at size 32: {:.1} %",
                    100.0 * acc
                ),
            );
        }
    }
    bar.finish();
    save(&varmap, args.aggregator, &args.out)?;
    let accs: Vec<String> = [16, 32, 64, 128]
        .iter()
        .map(|&n| {
            Ok(format!(
                "{n}: {:.1} %",
                100.0 * evaluate(&model, n, 1024, 1000 + n as u64, &device)?
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "wrote {} ({} aggregator, {:.0} s); exact-set accuracy by set size: {}",
        args.out.display(),
        args.aggregator.name(),
        started.elapsed().as_secs_f64(),
        accs.join(", ")
    );
    Ok(())
}
