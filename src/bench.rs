//! `inferd bench`: reproducible timings anyone can run on their own machine.
//!
//! `inferd bench recon --width 64 --blocks 14 --size 256 --batch 1 [--stock]` times ReconResNet's forward
//! pass with random weights (or `--weights FILE`) on the CPU: warm-up passes, then `--iters` timed
//! passes, and prints one JSON line with the median seconds per forward, GFLOP/s (direct-convolution
//! count, so Winograd's saving shows as a higher rate) and the process's peak memory. `--stock` runs
//! candle's own layers instead of inferd's CPU kernels.

use crate::models::recon_resnet::{ReconResNet, ReconResNetConfig};
use candle_core::{Device, Module, Tensor};
use clap::{Args, Subcommand};
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the ReconResNet forward pass on the CPU (one JSON line).
    Recon(BenchReconArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchReconArgs {
    /// Base width (channels after the head); the full-size network has 64.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// Residual blocks; the full-size network has 14.
    #[arg(long, default_value_t = 14)]
    pub blocks: usize,
    /// Image side (square images).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed forward passes (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed forward passes first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// candle's stock layers instead of inferd's CPU kernels.
    #[arg(long)]
    pub stock: bool,
    /// Threads (default: rayon's pool, i.e. all cores or RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A ReconResNet state dict to time instead of random weights (width and blocks are read from it).
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
}

/// The JSON line `inferd bench recon` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReconBench {
    pub path: &'static str,
    pub width: usize,
    pub blocks: usize,
    pub size: usize,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub median_s_per_image: f64,
    pub gflop_per_forward: f64,
    pub gflop_per_s: f64,
    /// Peak resident memory of the process (VmHWM), weights and prepared kernels included.
    pub peak_rss_mib: f64,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Recon(args) => {
            let r = bench_recon(&args)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

pub fn bench_recon(args: &BenchReconArgs) -> anyhow::Result<ReconBench> {
    anyhow::ensure!(args.iters >= 1, "--iters must be at least 1");
    anyhow::ensure!(args.size >= 8, "--size must be at least 8");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = args.threads {
            b = b.num_threads(n.max(1));
        }
        b.build()?
    };
    pool.install(|| {
        let device = Device::Cpu;
        let mut net = match &args.weights {
            Some(path) => {
                let tensors = candle_core::safetensors::load(path, &device)?;
                ReconResNet::from_tensors(tensors, &device).map_err(anyhow::Error::msg)?
            }
            None => {
                let config = ReconResNetConfig::magnitude(args.width, args.blocks);
                ReconResNet::from_tensors(config.random_weights(&device)?, &device)
                    .map_err(anyhow::Error::msg)?
            }
        };
        if !args.stock {
            net.prepare_cpu_kernels()?;
        }
        let config = net.config;
        let x = Tensor::rand(0f32, 1f32, (args.batch, 1, args.size, args.size), &device)?;
        let forward = || -> anyhow::Result<f64> {
            let t = Instant::now();
            let y = net.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            let s = t.elapsed().as_secs_f64();
            anyhow::ensure!(y.iter().all(|v| v.is_finite()), "non-finite output");
            Ok(s)
        };
        for _ in 0..args.warmup {
            forward()?;
        }
        let mut times = (0..args.iters)
            .map(|_| forward())
            .collect::<anyhow::Result<Vec<f64>>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let gflop = config.forward_flops(args.size, args.size) * args.batch as f64 / 1e9;
        Ok(ReconBench {
            path: if args.stock {
                "candle-stock"
            } else {
                "inferd-cpu-kernels"
            },
            width: config.width,
            blocks: config.res_blocks,
            size: args.size,
            batch: args.batch,
            threads: rayon::current_num_threads(),
            iters: args.iters,
            median_s: median,
            min_s: times[0],
            median_s_per_image: median / args.batch as f64,
            gflop_per_forward: gflop,
            gflop_per_s: gflop / median,
            peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
        })
    })
}

/// The process's peak resident set (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
