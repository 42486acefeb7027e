//! Transport limits: every bound the server puts on connections and streams, in one place. Each is
//! a flag with an environment variable (README, "Transport limits", lists them with their defaults).
//!
//! What they guard against: a client that opens thousands of streams on one connection (at most
//! `max_streams_per_connection`, the rest wait in HTTP/2 flow control), a peer that vanished without
//! closing (keepalive pings; no answer within the timeout closes the connection), oversized header
//! blocks, a flood of stream resets (HTTP/2 "rapid reset": GOAWAY after too many), a TLS client that
//! never finishes its handshake, a stream that stops sending while it holds queue slots and buffers
//! (closed after `stream_idle_timeout_s`), and slow or idle clients on the metrics port.

use crate::error::normalise_transport_status;
use std::time::Duration;
use tonic::{Status, Streaming};

#[derive(Debug, Clone, clap::Args)]
pub struct TransportLimits {
    /// Most concurrent gRPC streams (calls) on one HTTP/2 connection; further calls wait.
    #[arg(long, env = "INFERD_MAX_STREAMS_PER_CONNECTION", default_value_t = 128)]
    pub max_streams_per_connection: u32,
    /// Seconds between HTTP/2 keepalive pings to an idle client (0: no pings).
    #[arg(long, env = "INFERD_KEEPALIVE_INTERVAL_S", default_value_t = 30)]
    pub keepalive_interval_s: u64,
    /// Seconds a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "INFERD_KEEPALIVE_TIMEOUT_S", default_value_t = 20)]
    pub keepalive_timeout_s: u64,
    /// Largest header block a client may send, in KiB.
    #[arg(long, env = "INFERD_MAX_HEADER_LIST_KB", default_value_t = 16)]
    pub max_header_list_kb: u32,
    /// Streams a client may reset before the server answers it (HTTP/2 "rapid reset") before the
    /// connection is closed with GOAWAY.
    #[arg(long, env = "INFERD_MAX_PENDING_RESETS", default_value_t = 20)]
    pub max_pending_resets: usize,
    /// Streams the server may reset on one connection for protocol errors before closing it.
    #[arg(long, env = "INFERD_MAX_LOCAL_RESETS", default_value_t = 256)]
    pub max_local_resets: usize,
    /// Seconds a TLS client has to finish its handshake.
    #[arg(long, env = "INFERD_TLS_HANDSHAKE_TIMEOUT_S", default_value_t = 10)]
    pub tls_handshake_timeout_s: u64,
    /// Seconds a client stream may go without sending a message before the server ends it with
    /// DEADLINE_EXCEEDED and releases what it held.
    #[arg(long, env = "INFERD_STREAM_IDLE_TIMEOUT_S", default_value_t = 60)]
    pub stream_idle_timeout_s: u64,
    /// Seconds a metrics-port client has to send its request headers, and the longest a metrics
    /// connection stays open.
    #[arg(long, env = "INFERD_METRICS_TIMEOUT_S", default_value_t = 10)]
    pub metrics_timeout_s: u64,
    /// Most concurrent connections on the metrics port; further ones are closed at once.
    #[arg(long, env = "INFERD_METRICS_MAX_CONNECTIONS", default_value_t = 64)]
    pub metrics_max_connections: usize,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_streams_per_connection: 128,
            keepalive_interval_s: 30,
            keepalive_timeout_s: 20,
            max_header_list_kb: 16,
            max_pending_resets: 20,
            max_local_resets: 256,
            tls_handshake_timeout_s: 10,
            stream_idle_timeout_s: 60,
            metrics_timeout_s: 10,
            metrics_max_connections: 64,
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}

impl TransportLimits {
    /// Applies the HTTP/2 limits to a tonic server builder.
    pub fn apply<L>(&self, b: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        let keepalive = (self.keepalive_interval_s > 0).then(|| secs(self.keepalive_interval_s));
        b.max_concurrent_streams(self.max_streams_per_connection.max(1))
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(Some(secs(self.keepalive_timeout_s)))
            .http2_max_header_list_size(self.max_header_list_kb.clamp(1, 1 << 20) * 1024)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_resets.max(1)))
            .http2_max_local_error_reset_streams(Some(self.max_local_resets.max(1)))
    }

    pub fn tls_handshake_timeout(&self) -> Duration {
        secs(self.tls_handshake_timeout_s)
    }

    pub fn stream_idle_timeout(&self) -> Duration {
        secs(self.stream_idle_timeout_s)
    }

    pub fn metrics_timeout(&self) -> Duration {
        secs(self.metrics_timeout_s)
    }
}

/// The next message of a client stream, or DEADLINE_EXCEEDED when none arrives within `idle`
/// (transport errors normalised as everywhere else).
pub async fn next_message<T>(
    inbound: &mut Streaming<T>,
    idle: Duration,
) -> Result<Option<T>, Status> {
    match tokio::time::timeout(idle, inbound.message()).await {
        Ok(r) => r.map_err(normalise_transport_status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the client sent no message for {} s; the stream was closed and its resources released \
             (send within --stream-idle-timeout-s, or end the stream)",
            idle.as_secs()
        ))),
    }
}
