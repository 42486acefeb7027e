use clap::{Parser, Subcommand};
use inferd::{client, serve, train};

/// inferd: gRPC inference service for MR k-space reconstruction on CPU or CUDA.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(serve::ServeConfig),
    /// Stream a k-space volume to a server and write the reconstructions.
    Recon(client::recon::ReconArgs),
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
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(config) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr).await?;
                serve::serve(config, listener, shutdown_signal()).await
            })
        }
        Command::Recon(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(client::recon::run(args))
        }
        Command::Train {
            what: TrainCommand::Recon(args),
        } => train::recon::run(args),
        Command::Train {
            what: TrainCommand::ReconData(args),
        } => train::recon::export(args),
    }
}
