//! `inferd health`: a gRPC health check (grpc.health.v1) for container HEALTHCHECKs and scripts.
//! Exits 0 when the service reports SERVING, 1 otherwise (not serving, unreachable, timed out).

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
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// The status the server reports for the service.
pub async fn check(args: &HealthArgs) -> anyhow::Result<ServingStatus> {
    let timeout = std::time::Duration::from_secs_f64(args.timeout_s.max(0.001));
    let ask = async {
        let channel = super::connect(&args.addr, &args.tls).await?;
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
