//! Command-line clients of the service.

pub mod health;
pub mod pacs;
pub mod recon;

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// TLS settings of a client (`inferd load`, `inferd health`); used when the URL is https://.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
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

/// Opens one HTTP/2 connection to `addr` (TLS when the URL is https://).
pub async fn connect(addr: &str, tls: &TlsArgs) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(addr.to_string())
        .with_context(|| format!("{addr:?} is not a valid URL"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    if addr.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.tls_ca {
            config = config.ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
        }
        if let Some(domain) = &tls.tls_domain {
            config = config.domain_name(domain.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}
