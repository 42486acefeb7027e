//! Aggregation throughput of inferd's aggregators (sum, GRU, LCM; untrained weights, the speed does
//! not depend on them) on random graphs, written to NPY so that `bench/lcm_pyg.py` times PyTorch
//! Geometric on the very same graphs. `bench/run_lcm_speed.sh` runs both.
//!
//! cargo run --release --example lcm_speed -- OUT_DIR   (LCM_BENCH_GRAPHS=small: 10⁴ nodes only)
//! Graphs: 10⁴ nodes / 10⁵ edges and 10⁵ / 10⁶, sources uniform, targets either uniform or
//! power-law (P(target = i) ∝ 1/(i+1)); F = 64 and 128. Times cover the gather of the messages
//! x[source] and the aggregation into [N, F] (CSR construction reported separately).

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use inferd::io::npy;
use inferd::models::lcm::{AggKind, Aggregator, Csr};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn graph(n: usize, e: usize, power_law: bool, rng: &mut ChaCha8Rng) -> (Vec<i64>, Vec<i64>) {
    // power law by inverse transform of the continuous 1/(x+1) density on [0, n)
    let ln = ((n + 1) as f64).ln();
    let src: Vec<i64> = (0..e).map(|_| rng.random_range(0..n as i64)).collect();
    let dst: Vec<i64> = (0..e)
        .map(|_| {
            if power_law {
                let u: f64 = rng.random();
                (((u * ln).exp() - 1.0).floor() as i64).min(n as i64 - 1)
            } else {
                rng.random_range(0..n as i64)
            }
        })
        .collect();
    (src, dst)
}

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/inferd-lcm-bench".into()),
    );
    std::fs::create_dir_all(&out)?;
    let device = inferd::models::select_device(
        &std::env::var("INFERD_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()),
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("impl,graph,nodes,edges,max_in_degree,features,aggregator,ms,medges_per_s");
    // LCM_BENCH_GRAPHS=small keeps to the 10⁴-node graphs (the suite's quick mode).
    let small_only = std::env::var("LCM_BENCH_GRAPHS").is_ok_and(|v| v == "small");
    // LCM_BENCH_CASE=GRAPH:F:AGGREGATOR (e.g. 100000_1000000_powerlaw:128:lcm) times that case alone,
    // once after the warm-up (for the cases too slow to repeat).
    let only = std::env::var("LCM_BENCH_CASE").ok();
    let sizes: &[(usize, usize)] = if small_only {
        &[(10_000, 100_000)]
    } else {
        &[(10_000, 100_000), (100_000, 1_000_000)]
    };
    for &(n, e) in sizes {
        for power_law in [false, true] {
            let name = format!(
                "{}_{}_{}",
                n,
                e,
                if power_law { "powerlaw" } else { "uniform" }
            );
            let (src, dst) = graph(n, e, power_law, &mut rng);
            let mut ei = src.clone();
            ei.extend(&dst);
            npy::write_i64(&out.join(format!("{name}.npy")), &[2, e], &ei)?;
            let t = Instant::now();
            let csr = Csr::from_edge_index(&src, &dst, n)?;
            let csr_ms = t.elapsed().as_secs_f64() * 1e3;
            let d_max = (0..n).map(|i| csr.degree(i)).max().unwrap_or(0);
            println!(
                "inferd,{name},{n},{e},{d_max},0,csr-build,{csr_ms:.2},{:.1}",
                e as f64 / csr_ms / 1e3
            );
            for f in [64usize, 128] {
                let x = Tensor::randn(0f32, 1.0, (n, f), &device)?;
                for kind in [AggKind::Sum, AggKind::Gru, AggKind::Lcm, AggKind::LcmSymGru] {
                    let case = format!("{name}:{f}:{}", kind.name());
                    if only.as_ref().is_some_and(|o| *o != case) {
                        continue;
                    }
                    // The recurrent baseline takes d_max sequential steps: minutes per run on the
                    // 10⁶-edge power-law graph. Timed there only when asked for by LCM_BENCH_CASE.
                    if kind == AggKind::Gru && d_max > 20_000 && only.is_none() {
                        println!(
                            "inferd,{name},{n},{e},{d_max},{f},gru,skipped ({d_max} sequential steps; time it with LCM_BENCH_CASE={case}),"
                        );
                        continue;
                    }
                    // Random weights as plain tensors (no autograd variables, as when serving).
                    let vm = VarMap::new();
                    Aggregator::new(kind, f, VarBuilder::from_varmap(&vm, DType::F32, &device))?;
                    let weights = vm
                        .data()
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                        .collect();
                    let agg = Aggregator::new(
                        kind,
                        f,
                        VarBuilder::from_tensors(weights, DType::F32, &device),
                    )?;
                    let run = || -> anyhow::Result<f64> {
                        let t = Instant::now();
                        let y = agg.aggregate(&x, &csr)?;
                        y.sum_all()?.to_scalar::<f32>()?; // wait for the device
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    };
                    let warm_up = run()?;
                    let repeats = if only.is_some() || warm_up > 20_000.0 {
                        1
                    } else {
                        3
                    };
                    let mut times: Vec<f64> =
                        (0..repeats).map(|_| run()).collect::<anyhow::Result<_>>()?;
                    times.sort_by(f64::total_cmp);
                    let ms = times[times.len() / 2];
                    println!(
                        "inferd,{name},{n},{e},{d_max},{f},{},{ms:.2},{:.2}",
                        kind.name(),
                        e as f64 / ms / 1e3
                    );
                }
            }
        }
    }
    Ok(())
}
