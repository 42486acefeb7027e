//! Second-minimum exact-set accuracy by set size (16, 32, 64, 128; 1024 held-out sets each) for
//! weights files made by `inferd train graph` (or checkpoints, with the aggregator named), and the
//! order sensitivity at size 32: the share of sets whose predicted answer changes when the
//! elements are shuffled, and the mean absolute change of the bit probabilities.
//!
//! cargo run --release --example lcm_fidelity -- FILE[:AGGREGATOR] [FILE[:AGGREGATOR] ...]

use candle_core::Tensor;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use inferd::models::lcm::Csr;
use inferd::models::lcm::{AggKind, SetModel};
use inferd::train::graph::{evaluate, second_min_batch};
use rand::{seq::SliceRandom, SeedableRng};

/// (share of sets whose predicted bits change, mean |Δ probability|) under shuffling, size 32.
fn order_sensitivity(model: &SetModel) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let (x, batch, _) = second_min_batch(1024, 32..=32, &mut rng);
    let n = batch.len();
    let mut perm: Vec<usize> = (0..n).collect();
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
    Ok((changed as f64 / 1024.0, mean_abs))
}

fn main() -> anyhow::Result<()> {
    println!("model,aggregator,size_16,size_32,size_64,size_128,order_changed_answers_32,order_mean_abs_dp_32");
    for arg in std::env::args().skip(1) {
        let (path, kind) = match arg.split_once(':') {
            Some((p, k)) => (
                p.to_string(),
                Some(k.parse::<AggKind>().map_err(anyhow::Error::msg)?),
            ),
            None => (arg.clone(), None),
        };
        let mut t = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let kind = match (kind, t.remove("aggregator_kind")) {
            (Some(k), _) => k,
            (None, Some(code)) => AggKind::from_code(code.to_vec1::<f32>()?[0])
                .ok_or_else(|| anyhow::anyhow!("{path}: unknown aggregator code"))?,
            (None, None) => anyhow::bail!("{path}: name the aggregator as FILE:KIND"),
        };
        let (hidden, in_dim) = t["enc.0.weight"].dims2()?;
        let out = t["dec.1.weight"].dims2()?.0;
        let model = SetModel::new(
            kind,
            in_dim,
            hidden,
            out,
            0,
            VarBuilder::from_tensors(t, DType::F32, &Device::Cpu),
        )?;
        let accs: Vec<String> = [16usize, 32, 64, 128]
            .iter()
            .map(|&n| {
                Ok(format!(
                    "{:.1}",
                    100.0 * evaluate(&model, n, 1024, 1000 + n as u64, &Device::Cpu)?
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let (changed, dp) = order_sensitivity(&model)?;
        println!(
            "{path},{},{},{:.1},{dp:.2e}",
            kind.name(),
            accs.join(","),
            100.0 * changed
        );
    }
    Ok(())
}
