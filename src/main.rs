use clap::{Parser, Subcommand};
use inferd::telemetry::Telemetry;
use inferd::{client, serve, train};

/// inferd: gRPC inference service for MR k-space reconstruction on CPU or CUDA.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr: text, or json (one object per line, for log collectors).
    #[arg(long, env = "INFERD_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(serve::ServeConfig),
    /// Stream a k-space volume to a server and write the reconstructions.
    Recon(client::recon::ReconArgs),
    /// Generate load against a gRPC server and report throughput and latency (JSON, HTML).
    Load(inferd::load::LoadArgs),
    /// Ask a server's gRPC health service; exit 0 when SERVING (for container health checks).
    Health(client::health::HealthArgs),
    /// Check a PACS (C-ECHO) or send DICOM files to it through a durable outbox.
    Pacs(client::pacs::PacsCommand),
    /// Print the OpenRecon container label (JSON) that describes the MRD streaming port and its
    /// parameters; deploy/openrecon/label.json is this output.
    OpenreconLabel,
    /// Time a model's forward pass on this machine (one JSON line).
    Bench {
        #[command(subcommand)]
        what: inferd::bench::BenchCommand,
    },
    /// Train a model.
    Train {
        #[command(subcommand)]
        what: TrainCommand,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Train a ReconResNet for Cartesian undersampling.
    Recon(train::recon::TrainReconArgs),
    /// Write ReconResNet training pairs (inputs and targets as NPY) made by the serving pipeline.
    ReconData(train::recon::ExportArgs),
    /// Fit a Light Schrödinger Bridge to unpaired source and target samples.
    Bridge(train::bridge::TrainBridgeArgs),
    /// Train a set/graph aggregation model (sum, mean, max, GRU or LCM aggregator).
    Graph(train::graph::TrainGraphArgs),
}

/// The fmt log (INFERD_LOG filter, text or JSON on stderr) and, with `--otlp-endpoint`, the span
/// export (see `inferd::telemetry`).
fn init_tracing(format: LogFormat, telemetry: Option<&Telemetry>) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // Spans (request id, model) are flattened into each event for log collectors.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(telemetry.map(|t| t.layer()))
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// glibc's allocator returns blocks above its (adaptive) mmap threshold to the kernel on every free, so
/// each network layer's activations (megabytes) would be mapped, page-faulted in and unmapped again on
/// every pass: about a fifth of a 256² reconstruction's time on a 2-core machine (BENCHMARKS.md).
/// Blocks up to 32 MiB come from the heap instead, and up to 512 MiB of free heap stay mapped for the
/// next request (the memory budget bounds what requests hold; this bounds only what is cached). An
/// operator's own `GLIBC_TUNABLES=glibc.malloc...` settings win.
/// Returns false when the allocator refused the settings.
fn keep_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc")) {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread starts.
        return unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20) == 1
        };
    }
    true
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let allocator_tuned = keep_large_buffers();
    if !matches!(cli.command, Command::Serve(_)) {
        init_tracing(cli.log_format, None);
    }
    match cli.command {
        Command::Serve(config) => {
            if let Some(n) = config.cpu_threads {
                // candle's CPU kernels size their thread pool from this variable on first use.
                std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            // the span exporter runs on the server's runtime, so the logging waits for it
            let telemetry = Telemetry::start(&config.trace, rt.handle())?;
            init_tracing(cli.log_format, telemetry.as_ref());
            if !allocator_tuned {
                tracing::warn!("could not set the allocator's mmap and trim thresholds");
            }
            tracing::info!(config = ?config, "starting");
            let result = rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr).await?;
                serve::serve(config, listener, shutdown_signal()).await
            });
            if let Some(t) = telemetry {
                t.shutdown();
            }
            result
        }
        Command::Recon(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(client::recon::run(args))
        }
        Command::Load(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(inferd::load::run(&args))?;
            println!("{}", report.summary());
            Ok(())
        }
        Command::Health(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::process::exit(rt.block_on(client::health::run(args)));
        }
        Command::Pacs(cmd) => client::pacs::run(cmd),
        Command::OpenreconLabel => {
            let label = inferd::serve::mrd::params::openrecon_label();
            println!("{}", serde_json::to_string_pretty(&label)?);
            Ok(())
        }
        Command::Bench { what } => inferd::bench::run(what),
        Command::Train {
            what: TrainCommand::Recon(args),
        } => train::recon::run(args),
        Command::Train {
            what: TrainCommand::ReconData(args),
        } => train::recon::export(args),
        Command::Train {
            what: TrainCommand::Bridge(args),
        } => train::bridge::run(args),
        Command::Train {
            what: TrainCommand::Graph(args),
        } => train::graph::run(args),
    }
}
