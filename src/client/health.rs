//! `inferd health`: a gRPC health check (grpc.health.v1) for container HEALTHCHECKs and scripts.
//! Exits 0 when the service reports SERVING, 1 otherwise (not serving, unreachable, timed out).

use crate::load::{self, LoadArgs, Protocol};
use std::path::PathBuf;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Server URL (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Service to ask about; empty = the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub timeout_s: f64,
    /// CA certificate (PEM) to trust for https:// servers.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// Client certificate and key (PEM) for servers that require mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The status the server reports for the service.
pub async fn check(args: &HealthArgs) -> anyhow::Result<ServingStatus> {
    let mut conn = LoadArgs::new(&args.addr, Protocol::Health, &args.service);
    conn.tls_ca = args.tls_ca.clone();
    conn.tls_domain = args.tls_domain.clone();
    conn.tls_cert = args.tls_cert.clone();
    conn.tls_key = args.tls_key.clone();
    let timeout = std::time::Duration::from_secs_f64(args.timeout_s.max(0.001));
    let ask = async {
        let channel = load::connect(&conn).await?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await?;
        Ok::<_, anyhow::Error>(reply.into_inner().status())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", args.timeout_s))?
}

/// Prints the status and returns the process exit code.
pub async fn run(args: HealthArgs) -> i32 {
    match check(&args).await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            0
        }
        Ok(status) => {
            println!("{}", status.as_str_name());
            1
        }
        Err(e) => {
            eprintln!("health check of {} failed: {e:#}", args.addr);
            1
        }
    }
}
