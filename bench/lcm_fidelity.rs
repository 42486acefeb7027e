//! Second-minimum exact-set accuracy by set size (16, 32, 64, 128; 1024 held-out sets each) for
//! weights files made by `inferd train graph` (or checkpoints, with the aggregator named), and the
//! order sensitivity at size 32: the share of sets whose predicted answer changes when the
//! elements are shuffled, and the mean absolute change of the bit probabilities; for LCM, how far
//! the learned identity is from one on the pooled values of sets of 32 (`identity_error`).
//!
//! cargo run --release --example lcm_fidelity -- FILE[:AGGREGATOR] [FILE[:AGGREGATOR] ...]

use candle_core::Device;
use inferd::models::lcm::{AggKind, SetModel};
use inferd::train::graph::{evaluate, identity_error, order_sensitivity};

fn main() -> anyhow::Result<()> {
    println!("model,aggregator,size_16,size_32,size_64,size_128,order_changed_answers_32,order_mean_abs_dp_32,identity_max_rel_err_32,identity_changed_answers_32");
    for arg in std::env::args().skip(1) {
        let (path, kind) = match arg.split_once(':') {
            Some((p, k)) => (
                p.to_string(),
                Some(k.parse::<AggKind>().map_err(anyhow::Error::msg)?),
            ),
            None => (arg.clone(), None),
        };
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let (model, _) = SetModel::from_tensors(tensors, kind, &Device::Cpu)?;
        let kind = model.kind();
        let accs: Vec<String> = [16usize, 32, 64, 128]
            .iter()
            .map(|&n| {
                Ok(format!(
                    "{:.1}",
                    100.0 * evaluate(&model, n, 1024, 1000 + n as u64, &Device::Cpu)?
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let (changed, dp) = order_sensitivity(&model, 32, 1024)?;
        let identity = match identity_error(&model, 32, 1024)? {
            Some((rel, changed)) => format!("{rel:.2e},{:.1}", 100.0 * changed),
            None => "-,-".into(),
        };
        println!(
            "{path},{},{},{:.1},{dp:.2e},{identity}",
            kind.name(),
            accs.join(","),
            100.0 * changed
        );
    }
    Ok(())
}
