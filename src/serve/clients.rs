//! Who a request comes from, and what that client may ask of the scheduler.
//!
//! A client's identity is, in order: the value of a header a trusted proxy sets
//! (`--client-id-header`, e.g. `x-forwarded-for` behind an ingress that overwrites it), the digest
//! of its mutual-TLS certificate (`cert:` and the first 16 hex digits of the leaf certificate's
//! SHA-256), or its peer address (`ip:10.0.0.7`; every connection from one host counts together).
//! Two rules use it:
//! - **per-client limit** (`--client-queue-limit`): the items one client may have waiting or running,
//!   all models together ([`crate::sched::clients`]), so one client cannot fill a model's queue;
//! - **high priority** only for the clients `--high-priority-clients` names (addresses, CIDR ranges,
//!   certificate digests, or `*`); others asking for it get PERMISSION_DENIED.
//!
//! Identities never contain patient data; they are not logged with request data.

use crate::error::{Error, Result};
use crate::sched::clients::ClientQuotas;
use crate::sched::{JobOptions, Priority};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::Request;

/// One entry of `--high-priority-clients`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientPattern {
    /// `*`: every client.
    Any,
    /// An address range `ADDR/BITS` (a single address is `/32` or `/128`).
    Net { addr: IpAddr, bits: u8 },
    /// A client identity exactly as inferd derives it (`cert:…`, `hdr:…`).
    Id(String),
}

impl FromStr for ClientPattern {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(ClientPattern::Any);
        }
        if s.starts_with("cert:") || s.starts_with("hdr:") {
            return Ok(ClientPattern::Id(s.to_string()));
        }
        let net = s.strip_prefix("ip:").unwrap_or(s);
        let (addr, bits) = match net.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (net, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("`{s}` is not a client pattern; expected `*`, an address, ADDR/BITS, cert:HEX or hdr:VALUE")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(ClientPattern::Net { addr, bits })
    }
}

impl ClientPattern {
    fn matches(&self, caller: &Caller) -> bool {
        match self {
            ClientPattern::Any => true,
            ClientPattern::Id(id) => *id == caller.id,
            ClientPattern::Net { addr, bits } => {
                caller.ip.is_some_and(|ip| in_net(ip, *addr, *bits))
            }
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let prefix = |a: u128, b: u128, width: u32| {
        let shift = width - bits as u32;
        shift >= width || (a >> shift) == (b >> shift)
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix(u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(u128::from(a), u128::from(b), 128),
        _ => false,
    }
}

/// The caller of one RPC: its metadata (deadline, trace headers) and identity.
#[derive(Debug, Clone)]
pub struct Caller {
    pub metadata: MetadataMap,
    pub id: String,
    ip: Option<IpAddr>,
}

/// The server's client rules, built once from the configuration.
#[derive(Debug)]
pub struct ClientPolicy {
    quotas: Arc<ClientQuotas>,
    high: Vec<ClientPattern>,
    id_header: Option<String>,
}

/// A client certificate's identity: `cert:` and the first 16 hex digits of its SHA-256.
fn cert_id(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cert:{hex}")
}

/// Longest identity taken from a header (longer values are cut).
const MAX_HEADER_ID: usize = 128;

impl Caller {
    /// The caller of a raw TCP connection (the MRD streaming port): its mutual-TLS certificate
    /// (DER) when it presented one, else its address.
    pub fn peer(addr: std::net::SocketAddr, cert: Option<&[u8]>) -> Caller {
        Caller {
            metadata: MetadataMap::new(),
            id: match cert {
                Some(der) => cert_id(der),
                None => format!("ip:{}", addr.ip()),
            },
            ip: Some(addr.ip()),
        }
    }
}

impl ClientPolicy {
    pub fn new(queue_limit: usize, high: Vec<ClientPattern>, id_header: Option<String>) -> Self {
        ClientPolicy {
            quotas: ClientQuotas::new(queue_limit),
            high,
            id_header: id_header.map(|h| h.to_ascii_lowercase()),
        }
    }

    /// The caller of a request (see the module documentation for the order of identities).
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        let metadata = request.metadata().clone();
        let ip = request.remote_addr().map(|a| a.ip());
        let from_header = self.id_header.as_ref().and_then(|h| {
            let v = metadata.get(h.as_str())?.to_str().ok()?;
            let first = v.split(',').next()?.trim();
            (!first.is_empty()).then(|| {
                let clean: String = first
                    .chars()
                    .take(MAX_HEADER_ID)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect();
                clean
            })
        });
        let id = if let Some(h) = from_header {
            format!("hdr:{h}")
        } else if let Some(cert) = request.peer_certs().and_then(|c| c.first().cloned()) {
            cert_id(cert.as_ref())
        } else if let Some(ip) = ip {
            format!("ip:{ip}")
        } else {
            "unknown".to_string()
        };
        Caller { metadata, id, ip }
    }

    /// The scheduling options of a caller's request: its gRPC deadline (tightened by `timeout`), its
    /// priority (high only for configured clients) and its client's quota.
    pub fn job_options(
        &self,
        caller: &Caller,
        priority: Priority,
        timeout: Option<Duration>,
    ) -> Result<JobOptions> {
        if priority == Priority::High && !self.high.iter().any(|p| p.matches(caller)) {
            return Err(Error::PermissionDenied(format!(
                "high priority is reserved for the clients in --high-priority-clients; this client \
                 is {}; send normal priority",
                caller.id
            )));
        }
        let from_header = super::state::deadline(&caller.metadata);
        let from_param = timeout.map(|t| std::time::Instant::now() + t);
        Ok(JobOptions {
            priority,
            deadline: match (from_header, from_param) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            client: Some(self.quotas.ticket(&caller.id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str, ip: Option<&str>) -> Caller {
        Caller {
            metadata: MetadataMap::new(),
            id: id.into(),
            ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    #[test]
    fn patterns_parse_and_match() {
        let p = |s: &str| s.parse::<ClientPattern>().unwrap();
        let local = caller("ip:127.0.0.1", Some("127.0.0.1"));
        let lan = caller("ip:10.1.2.3", Some("10.1.2.3"));
        let mapped = caller("ip:::ffff:10.1.2.3", Some("::ffff:10.1.2.3"));
        assert!(p("*").matches(&lan));
        assert!(p("127.0.0.1").matches(&local) && !p("127.0.0.1").matches(&lan));
        assert!(p("ip:10.0.0.0/8").matches(&lan) && p("10.0.0.0/8").matches(&mapped));
        assert!(!p("10.0.0.0/16").matches(&lan));
        assert!(p("0.0.0.0/0").matches(&lan));
        assert!(p("::1/128").matches(&caller("ip:::1", Some("::1"))));
        let cert = caller("cert:0011223344556677", None);
        assert!(p("cert:0011223344556677").matches(&cert) && !p("cert:00").matches(&cert));
        for bad in ["", "host.example", "10.0.0.0/33", "::/129", "10.0.0.0/x"] {
            assert!(bad.parse::<ClientPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn high_priority_only_for_configured_clients() {
        let policy = ClientPolicy::new(0, vec!["10.0.0.0/8".parse().unwrap()], None);
        let lan = caller("ip:10.1.2.3", Some("10.1.2.3"));
        let other = caller("ip:192.168.1.5", Some("192.168.1.5"));
        assert!(policy.job_options(&lan, Priority::High, None).is_ok());
        let e = policy
            .job_options(&other, Priority::High, None)
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
        assert!(e.to_string().contains("ip:192.168.1.5"), "{e}");
        assert!(policy.job_options(&other, Priority::Normal, None).is_ok());
    }
}
