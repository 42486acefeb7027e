//! `inferd train graph`: trains a set / neighbourhood model (element encoder → aggregator → decoder)
//! with any aggregator (sum, mean, max, gru, lcm, lcm-symgru).
//!
//! Task `second-min` (PAPERS.md §3): a multiset of 8-bit integers, each given as 8 bits (bit i =
//! (v >> i) & 1, least significant first); the target is the 8 bits of the second-smallest element.
//! Fresh random sets of sizes `--min-size..=--max-size` every step; exact-set accuracy is reported on
//! held-out sets of sizes 16, 32, 64 and 128. LCM adds `--assoc-weight` × (associativity +
//! identity) regularisers. Loss: binary cross-entropy on the bits; Adam.
//!
//! Task `file`: the user's graphs or sets from NPZ files (`--data`, one graph or one collection of
//! sets per file; `--val-data` for held-out evaluation). Each file holds `x` `[N, F]` float,
//! either `edge_index` `[2, E]` int (source, target: a node-level task, trained with `--layers`
//! message-passing layers, default 2) or `batch` `[N]` int (set id of each row: a set-level task, the
//! set model), and `targets`: `[R, T]` float for `--loss bce` (0/1 labels, served as probabilities)
//! or `--loss mse` (regression, served as values), or `[R]` int class ids for `--loss ce` (served
//! as class probabilities), with R = N for graphs and the number of sets otherwise. Every step
//! trains on one whole file, chosen at random.

use crate::io::{npy, npz};
use crate::models::lcm::{exact_accuracy, AggKind, Csr, OutputKind, SetModel};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct TrainGraphArgs {
    /// Task: second-min (generated sets) or file (--data NPZ files).
    #[arg(long, default_value = "second-min")]
    pub task: String,
    /// Training graphs/sets for --task file (NPZ: x, edge_index or batch, targets).
    #[arg(long, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// Held-out graphs/sets for --task file, evaluated at every checkpoint and at the end.
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Message-passing layers for graph files (edge_index); sets use the set model.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Loss for --task file: bce (0/1 targets), mse (real targets) or ce (int class ids).
    #[arg(long, value_enum, default_value = "bce")]
    pub loss: Loss,
    /// sum, mean, max, gru, lcm (sort-MLP ⊕) or lcm-symgru (symmetrised GRU ⊕).
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
    /// Seed of the training data and of the initial weights.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loss {
    Bce,
    Mse,
    Ce,
}

impl Loss {
    fn output(self) -> OutputKind {
        match self {
            Loss::Bce => OutputKind::Sigmoid,
            Loss::Mse => OutputKind::Identity,
            Loss::Ce => OutputKind::Softmax,
        }
    }
}

/// One graph (or collection of sets) read from an NPZ file.
pub struct GraphData {
    pub x: Vec<f32>,
    pub features: usize,
    pub csr: Csr,
    /// True for `edge_index` files (node-level targets).
    pub is_graph: bool,
    /// `[R, T]` float targets, or `[R]` class ids as floats for `ce`.
    pub targets: Vec<f32>,
    pub target_dim: usize,
}

/// Reads `x`, `edge_index` or `batch`, and `targets` from an NPZ file, checking their shapes.
pub fn read_graph(path: &std::path::Path, loss: Loss) -> anyhow::Result<GraphData> {
    let name = path.display();
    let mut m = npz::read(path)?;
    let mut take = |k: &str| {
        m.remove(k).ok_or_else(|| {
            anyhow::anyhow!("{name}: no array {k:?} (expected x, edge_index or batch, targets)")
        })
    };
    let x = take("x")?;
    let npy::NpyData::F32(xv) = x.data else {
        anyhow::bail!("{name}: x must be float32 or float64")
    };
    let [n, features] = x.shape[..] else {
        anyhow::bail!("{name}: x has shape {:?}, expected [N, F]", x.shape)
    };
    let ints = |a: npy::NpyArray, what: &str| match a.data {
        npy::NpyData::I64(v) => Ok((a.shape, v)),
        _ => Err(anyhow::anyhow!("{name}: {what} must be an integer array")),
    };
    let (csr, is_graph) = match (take("edge_index"), take("batch")) {
        (Ok(e), _) => {
            let (shape, v) = ints(e, "edge_index")?;
            let [2, edges] = shape[..] else {
                anyhow::bail!("{name}: edge_index has shape {shape:?}, expected [2, E]")
            };
            (
                Csr::from_edge_index(&v[..edges], &v[edges..], n)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?,
                true,
            )
        }
        (Err(_), Ok(b)) => {
            let (shape, v) = ints(b, "batch")?;
            anyhow::ensure!(
                shape == [n],
                "{name}: batch has shape {shape:?}, expected [{n}]"
            );
            (
                Csr::from_batch(&v).map_err(|e| anyhow::anyhow!("{name}: {e}"))?,
                false,
            )
        }
        (Err(e), Err(_)) => return Err(e),
    };
    let rows = csr.rows();
    let t = take("targets")?;
    let (targets, target_dim) = match (loss, t.data) {
        (Loss::Ce, npy::NpyData::I64(v)) => {
            anyhow::ensure!(
                t.shape == [rows],
                "{name}: targets has shape {:?}, expected [{rows}] class ids",
                t.shape
            );
            anyhow::ensure!(
                v.iter().all(|&c| c >= 0),
                "{name}: negative class id in targets"
            );
            (v.iter().map(|&c| c as f32).collect(), 1)
        }
        (Loss::Bce | Loss::Mse, npy::NpyData::F32(v)) => {
            let [r, d] = t.shape[..] else {
                anyhow::bail!(
                    "{name}: targets has shape {:?}, expected [{rows}, T]",
                    t.shape
                )
            };
            anyhow::ensure!(r == rows, "{name}: targets has {r} rows, expected {rows}");
            if loss == Loss::Bce {
                anyhow::ensure!(
                    v.iter().all(|&y| (0.0..=1.0).contains(&y)),
                    "{name}: bce targets must lie in [0, 1]"
                );
            }
            (v, d)
        }
        (Loss::Ce, _) => anyhow::bail!("{name}: --loss ce needs integer class ids in targets"),
        _ => anyhow::bail!("{name}: --loss bce/mse need float targets [R, T]"),
    };
    anyhow::ensure!(
        xv.iter().chain(&targets).all(|v| v.is_finite()),
        "{name}: x or targets holds NaN or infinity"
    );
    Ok(GraphData {
        x: xv,
        features,
        csr,
        is_graph,
        targets,
        target_dim,
    })
}

/// Mean binary cross-entropy of sigmoid(`logits`) against 0/1 `targets`, in the stable form
/// max(x, 0) − x·y + log(1 + e^−|x|): finite for any finite logit (candle's
/// `binary_cross_entropy_with_logit` takes log(sigmoid(x)), which is −∞ once sigmoid rounds to 0 or
/// 1, and a confident model then trains into NaN).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = ((logits.abs()?.neg()?.exp()? + 1.0)?.log()? + logits.relu()?)?;
    (softplus - (logits * targets)?)?.mean_all()
}

/// Loss of `logits` (`[R, out]`) against a file's targets.
fn file_loss(logits: &Tensor, g: &GraphData, loss: Loss) -> anyhow::Result<Tensor> {
    let rows = g.csr.rows();
    let device = logits.device();
    Ok(match loss {
        Loss::Ce => {
            let ids: Vec<u32> = g.targets.iter().map(|&c| c as u32).collect();
            candle_nn::loss::cross_entropy(logits, &Tensor::from_vec(ids, rows, device)?)?
        }
        Loss::Bce => bce_with_logits(
            logits,
            &Tensor::from_vec(g.targets.clone(), (rows, g.target_dim), device)?,
        )?,
        Loss::Mse => candle_nn::loss::mse(
            logits,
            &Tensor::from_vec(g.targets.clone(), (rows, g.target_dim), device)?,
        )?,
    })
}

/// The evaluation of a file: `(loss, metric)` with the metric accuracy for `ce` (argmax), the
/// share of correct outputs for `bce` (threshold 0.5), and the mean squared error for `mse`.
pub fn evaluate_file(
    model: &SetModel,
    g: &GraphData,
    loss: Loss,
    device: &Device,
) -> anyhow::Result<(f64, f64)> {
    let x = Tensor::from_vec(g.x.clone(), (g.x.len() / g.features, g.features), device)?;
    let logits = model.forward(&x, &g.csr)?;
    let l = file_loss(&logits, g, loss)?.to_scalar::<f32>()? as f64;
    let metric = match loss {
        Loss::Mse => l,
        Loss::Ce => {
            let pred = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
            pred.iter()
                .zip(&g.targets)
                .filter(|(p, t)| **p as f32 == **t)
                .count() as f64
                / pred.len().max(1) as f64
        }
        Loss::Bce => {
            let p = logits
                .gt(0.0)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            p.iter()
                .zip(&g.targets)
                .filter(|(p, t)| (**p - **t).abs() < 0.5)
                .count() as f64
                / p.len().max(1) as f64
        }
    };
    Ok((l, metric))
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

/// Order sensitivity of a set model on `sets` second-minimum sets of `size` elements: the share of
/// sets whose predicted bits change when the elements are shuffled, and the mean absolute change
/// of the bit probabilities. Zero for order-free aggregators (sum, max).
pub fn order_sensitivity(model: &SetModel, size: usize, sets: usize) -> anyhow::Result<(f64, f64)> {
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let (x, batch, _) = second_min_batch(sets, size..=size, &mut rng);
    let mut perm: Vec<usize> = (0..batch.len()).collect();
    perm.shuffle(&mut rng);
    let xs: Vec<f32> = perm
        .iter()
        .flat_map(|&i| x[i * 8..(i + 1) * 8].to_vec())
        .collect();
    let bs: Vec<i64> = perm.iter().map(|&i| batch[i]).collect();
    let probs = |x: Vec<f32>, b: &[i64]| -> anyhow::Result<Vec<f32>> {
        let logits = model.forward(
            &Tensor::from_vec(x, (b.len(), 8), &Device::Cpu)?,
            &Csr::from_batch(b)?,
        )?;
        Ok(candle_nn::ops::sigmoid(&logits)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let (a, b) = (probs(x, &batch)?, probs(xs, &bs)?);
    let changed = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .filter(|(p, q)| p.iter().zip(*q).any(|(u, v)| (*u > 0.5) != (*v > 0.5)))
        .count();
    let mean_abs = a
        .iter()
        .zip(&b)
        .map(|(u, v)| (u - v).abs() as f64)
        .sum::<f64>()
        / a.len() as f64;
    Ok((changed as f64 / sets as f64, mean_abs))
}

/// How well the learned identity e of a set model's LCM readout acts as one on the pooled values r
/// of `sets` second-minimum sets of `size` elements: the largest ‖e ⊕ r − r‖ / ‖r‖, and the share of
/// sets whose answer changes when e is combined into the pooled value. `None` without an LCM
/// readout.
pub fn identity_error(
    model: &SetModel,
    size: usize,
    sets: usize,
) -> anyhow::Result<Option<(f64, f64)>> {
    let Some(agg @ crate::models::lcm::Aggregator::Lcm(m)) = &model.agg else {
        return Ok(None);
    };
    let mut rng = ChaCha8Rng::seed_from_u64(78);
    let (x, batch, _) = second_min_batch(sets, size..=size, &mut rng);
    let x = Tensor::from_vec(x, (batch.len(), 8), &Device::Cpu)?;
    let r = agg.aggregate(&model.encode(&x)?, &Csr::from_batch(&batch)?)?;
    let e = m
        .identity()
        .unsqueeze(0)?
        .broadcast_as(r.shape())?
        .contiguous()?;
    let er = m.combine(&e, &r)?;
    let rel = ((&er - &r)?.sqr()?.sum(1)?.sqrt()? / r.sqr()?.sum(1)?.sqrt()?)?
        .max(0)?
        .to_scalar::<f32>()? as f64;
    let answers = |h: &Tensor| -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(model.decode(h)?.gt(0.0)?.to_vec2::<u8>()?)
    };
    let (a, b) = (answers(&r)?, answers(&er)?);
    let changed = a.iter().zip(&b).filter(|(p, q)| p != q).count();
    Ok(Some((rel, changed as f64 / sets as f64)))
}

/// Writes the weights and the aggregator marker.
pub fn save(
    varmap: &VarMap,
    kind: AggKind,
    output: OutputKind,
    path: &std::path::Path,
) -> anyhow::Result<()> {
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
    tensors.insert(
        "output_kind".into(),
        Tensor::from_slice(&[output.code()], 1, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

pub fn run(args: TrainGraphArgs) -> anyhow::Result<()> {
    match args.task.as_str() {
        "second-min" => {}
        "file" => return run_files(args),
        other => anyhow::bail!("unknown task {other:?}; expected second-min or file"),
    }
    anyhow::ensure!(
        args.min_size >= 2 && args.max_size >= args.min_size,
        "set sizes must satisfy 2 <= min <= max"
    );
    let device = crate::models::select_device(&args.device)?;
    let varmap = VarMap::new();
    let vb = super::seeded_var_builder(&varmap, args.seed, &device);
    let model = SetModel::new(args.aggregator, 8, args.hidden, 8, 0, vb)?;
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
        let loss = bce_with_logits(&logits, &yt)?;
        let loss = add_regularisers(&model, &xt, loss, args.assoc_weight, &mut rng)?;
        let a = optimise(&mut opt, &loss, &mut avg, 0.98, &bar)?;
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
    save(&varmap, args.aggregator, OutputKind::Sigmoid, &args.out)?;
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

/// One Adam step on `loss`; returns the running average (`keep` × old + (1 − keep) × new) shown
/// on the progress bar.
fn optimise(
    opt: &mut candle_nn::AdamW,
    loss: &Tensor,
    avg: &mut Option<f64>,
    keep: f64,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    opt.backward_step(loss)?;
    let l = loss.to_scalar::<f32>()? as f64;
    let a = avg.map_or(l, |a| keep * a + (1.0 - keep) * l);
    *avg = Some(a);
    bar.set_message(format!("loss {a:.4}"));
    bar.inc(1);
    Ok(a)
}

/// Adds `weight` × (associativity + identity) regularisers of every LCM operator in the model,
/// sampled from the encoded elements.
fn add_regularisers(
    model: &SetModel,
    x: &Tensor,
    loss: Tensor,
    weight: f64,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Tensor> {
    let monoids = model.monoids();
    if weight <= 0.0 || monoids.is_empty() {
        return Ok(loss);
    }
    let h = model.encode(x)?;
    let mut loss = loss;
    for m in monoids {
        let (assoc, ident) = m.regularisers(&h, 256, rng)?;
        loss = (loss + ((assoc + ident)? * weight)?)?;
    }
    Ok(loss)
}

/// `--task file`: trains on the user's NPZ graphs or sets.
fn run_files(args: TrainGraphArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.data.is_empty(),
        "--task file needs --data FILE.npz[,FILE.npz…]"
    );
    let train: Vec<GraphData> = args
        .data
        .iter()
        .map(|p| read_graph(p, args.loss))
        .collect::<anyhow::Result<_>>()?;
    let val = args
        .val_data
        .as_deref()
        .map(|p| read_graph(p, args.loss))
        .transpose()?;
    let first = &train[0];
    let (features, is_graph) = (first.features, first.is_graph);
    let out_dim = match args.loss {
        Loss::Ce => {
            1 + train
                .iter()
                .chain(&val)
                .flat_map(|g| g.targets.iter())
                .fold(0.0f32, |a, &b| a.max(b)) as usize
        }
        _ => first.target_dim,
    };
    for g in train.iter().chain(&val) {
        anyhow::ensure!(
            g.features == features && g.is_graph == is_graph,
            "every file needs the same feature count ({features}) and kind (edge_index or batch)"
        );
        anyhow::ensure!(
            args.loss == Loss::Ce || g.target_dim == out_dim,
            "every file needs targets with {out_dim} columns"
        );
    }
    let layers = if is_graph { args.layers } else { 0 };
    anyhow::ensure!(
        !is_graph || layers > 0,
        "graph files need --layers >= 1 (each node aggregates its in-neighbours in every layer)"
    );
    let device = crate::models::select_device(&args.device)?;
    let varmap = VarMap::new();
    let vb = super::seeded_var_builder(&varmap, args.seed, &device);
    let model = SetModel::new(args.aggregator, features, args.hidden, out_dim, layers, vb)?;
    let ckpt = super::Checkpoint::beside(&args.out);
    let start = ckpt.resume(args.resume, |p| Ok(varmap.clone().load(p)?))?;
    let mut opt = super::adam(varmap.all_vars(), args.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(start as u64));
    let bar = super::progress_bar(args.steps, start)?;
    let tensors: Vec<Tensor> = train
        .iter()
        .map(|g| Tensor::from_vec(g.x.clone(), (g.x.len() / features, features), &device))
        .collect::<candle_core::Result<_>>()?;
    let metric_name = match args.loss {
        Loss::Mse => "MSE",
        Loss::Ce => "accuracy",
        Loss::Bce => "output accuracy",
    };
    let describe = |model: &SetModel| -> anyhow::Result<String> {
        Ok(match &val {
            Some(v) => {
                let (l, m) = evaluate_file(model, v, args.loss, &device)?;
                format!("held-out loss {l:.4}, {metric_name} {m:.4}")
            }
            None => String::new(),
        })
    };
    let mut avg = None::<f64>;
    for step in start..args.steps {
        opt.set_learning_rate(super::cosine_lr(args.lr, step, args.steps));
        let i = rng.random_range(0..train.len());
        let logits = model.forward(&tensors[i], &train[i].csr)?;
        let loss = file_loss(&logits, &train[i], args.loss)?;
        let loss = add_regularisers(&model, &tensors[i], loss, args.assoc_weight, &mut rng)?;
        let a = optimise(&mut opt, &loss, &mut avg, 0.95, &bar)?;
        let done = step + 1;
        if done % args.checkpoint_every.max(1) == 0 || done == args.steps {
            ckpt.save(done, |p| Ok(varmap.save(p)?))?;
            super::report(
                &bar,
                format!("step {done}: loss {a:.4} {}", describe(&model)?),
            );
        }
    }
    bar.finish();
    save(&varmap, args.aggregator, args.loss.output(), &args.out)?;
    println!(
        "wrote {} ({} aggregator, {layers} message-passing layers, {features} → {} → {out_dim}); {}",
        args.out.display(),
        args.aggregator.name(),
        args.hidden,
        describe(&model)?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_cross_entropy_is_finite_for_confident_logits() {
        let x = Tensor::new(&[[0.0f32, 200.0, -200.0, 2.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1.0f32, 0.0, 0.0, 1.0]], &Device::Cpu).unwrap();
        // per element: ln 2, 200, e^-200 ≈ 0, ln(1 + e^-2)
        let want = (std::f64::consts::LN_2 + 200.0 + (1.0 + (-2f64).exp()).ln()) / 4.0;
        let got = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}
