//! DICOMweb STOW-RS delivery (PS3.18 §10.5, "Store Instances"): the archive's `/studies` endpoint
//! takes a `multipart/related; type="application/dicom"` POST of Part-10 files. Vendor-neutral
//! archives and cloud DICOM stores accept it where C-STORE is not offered.
//!
//! A blocking HTTP/1.1 client (one request per batch, `Connection: close`), over TLS for `https`
//! URLs (rustls; the CA bundle is `--pacs-stow-ca`, else the system's), with a bearer token or basic
//! authentication. Answers map onto the outbox's outcomes:
//! * 200: every instance stored;
//! * 202 (some failed): the response's Failed SOP Sequence `(0008,1198)` names the refused instances,
//!   the others are stored; without a readable list the batch is retried;
//! * 400, 409 (all failed), 413, 415: refused for good (moved to `failed/` with the reason);
//! * anything else (401/403 credentials, 404 wrong URL, 5xx, no connection): a transport failure,
//!   retried with backoff and nothing lost.

use super::scu::{StoreOutcome, STATUS_CANNOT_UNDERSTAND};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// An instance the archive stored (`None`) or refused for good (`Some(reason)`), as the outbox
/// sees C-STORE answers.
fn outcome(refused: Option<String>) -> StoreOutcome {
    StoreOutcome {
        sop_instance_uid: String::new(),
        status: if refused.is_some() {
            STATUS_CANNOT_UNDERSTAND
        } else {
            0
        },
        stored: refused.is_none(),
        error_comment: refused,
    }
}

/// How to authenticate to the archive.
#[derive(Clone)]
pub enum StowAuth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for StowAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print credentials
        f.write_str(match self {
            StowAuth::None => "none",
            StowAuth::Bearer(_) => "bearer token",
            StowAuth::Basic { .. } => "basic",
        })
    }
}

/// A STOW-RS endpoint: `http(s)://host[:port]/path` (the instances are POSTed to `path/studies`).
#[derive(Clone)]
pub struct StowTarget {
    pub url: String,
    https: bool,
    host: String,
    port: u16,
    path: String,
    auth: StowAuth,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
}

impl std::fmt::Display for StowTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

impl StowTarget {
    /// `url` is the DICOMweb root (e.g. `https://pacs.example/dicom-web`); `ca` a PEM bundle for
    /// `https` (default: `/etc/ssl/certs/ca-certificates.crt`).
    pub fn new(url: &str, auth: StowAuth, ca: Option<&std::path::Path>) -> Result<StowTarget> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("STOW-RS URL {url:?} must start with http:// or https://");
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .with_context(|| format!("STOW-RS URL {url:?}: port must be 1-65535"))?,
            ),
            _ => (authority.to_string(), if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            bail!("STOW-RS URL {url:?} has no host");
        }
        let path =
            format!("/{}/studies", path.trim_end_matches('/')).replace("//studies", "/studies");
        let tls = if https {
            use rustls_pki_types::{pem::PemObject, CertificateDer};
            let bundle = ca
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&bundle)
                .with_context(|| format!("cannot read the CA bundle {}", bundle.display()))?
            {
                roots.add(c.with_context(|| format!("{}: bad certificate", bundle.display()))?)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(StowTarget {
            url: url.to_string(),
            https,
            host,
            port,
            path,
            auth,
            tls,
            timeout: super::DEFAULT_TIMEOUT,
        })
    }

    /// One POST of `files`; `on_result(i, outcome)` for each file the archive answered for.
    /// `Err`: nothing answered (transport failure, credentials, wrong URL, server error).
    pub fn store_each(
        &self,
        files: &[Vec<u8>],
        mut on_result: impl FnMut(usize, StoreOutcome),
    ) -> Result<()> {
        let boundary = format!("inferd-{:016x}", rand::random::<u64>());
        let mut body = Vec::with_capacity(files.iter().map(|f| f.len() + 128).sum());
        for f in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(f);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let auth = match &self.auth {
            StowAuth::None => String::new(),
            StowAuth::Bearer(t) => format!("Authorization: Bearer {t}\r\n"),
            StowAuth::Basic { user, password } => {
                use base64::Engine;
                let b =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Authorization: Basic {b}\r\n")
            }
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: multipart/related; \
             type=\"application/dicom\"; boundary={boundary}\r\nAccept: application/dicom+json\r\n\
             {auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        let (status, response) = self
            .exchange(head.as_bytes(), &body)
            .with_context(|| format!("STOW-RS to {}", self.url))?;
        match status {
            200 => {
                for i in 0..files.len() {
                    on_result(i, outcome(None));
                }
                Ok(())
            }
            202 => {
                let failed = failed_uids(&response).with_context(|| {
                    format!(
                        "STOW-RS to {}: 202 without a readable Failed SOP Sequence",
                        self.url
                    )
                })?;
                for (i, f) in files.iter().enumerate() {
                    let refused = failed.iter().find(|(uid, _)| contains(f, uid.as_bytes()));
                    on_result(
                        i,
                        outcome(
                            refused
                                .map(|(_, reason)| format!("STOW-RS 202: failure reason {reason}")),
                        ),
                    );
                }
                Ok(())
            }
            400 | 409 | 413 | 415 => {
                let text =
                    String::from_utf8_lossy(&response[..response.len().min(512)]).into_owned();
                for i in 0..files.len() {
                    on_result(i, outcome(Some(format!("STOW-RS HTTP {status}: {text}"))));
                }
                Ok(())
            }
            other => bail!(
                "STOW-RS to {}: HTTP {other}{}",
                self.url,
                match other {
                    401 | 403 =>
                        " (check the credentials: --pacs-stow-token-file or --pacs-stow-user)",
                    404 => " (check the URL: the DICOMweb root, without /studies)",
                    _ => "",
                }
            ),
        }
    }

    /// Sends the request and reads the whole response: status code and body.
    fn exchange(&self, head: &[u8], body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("cannot resolve {}", self.host))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout)
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        let mut raw = Vec::new();
        match (&self.tls, self.https) {
            (Some(cfg), true) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .with_context(|| format!("{} is not a valid TLS server name", self.host))?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(head)?;
                s.write_all(body)?;
                s.flush()?;
                read_all(&mut s, &mut raw)?;
            }
            _ => {
                let mut s = tcp;
                s.write_all(head)?;
                s.write_all(body)?;
                s.flush()?;
                read_all(&mut s, &mut raw)?;
            }
        }
        parse_response(&raw)
    }
}

/// Reads to the end of the stream (bounded: an answer larger than 16 MiB is cut).
fn read_all(r: &mut impl Read, out: &mut Vec<u8>) -> Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 16 << 20 {
                    return Ok(());
                }
            }
            // a TLS peer that closes without close_notify still sent its whole answer
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Status code and body (de-chunked when the archive used chunked transfer encoding).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the archive's answer has no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the archive's answer has no HTTP status")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..line_end])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        rest = &rest[line_end + 2..];
        if size == 0 || size > rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    Ok((status, out))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The SOP Instance UIDs and failure reasons of a STOW-RS response's Failed SOP Sequence (DICOM
/// JSON: `00081198` items with `00081155` and `00081197`).
fn failed_uids(body: &[u8]) -> Result<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let items = v["00081198"]["Value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|it| {
            let uid = it["00081155"]["Value"][0].as_str()?.to_string();
            let reason = it["00081197"]["Value"][0].to_string();
            Some((uid, reason))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_to_the_studies_endpoint() {
        let t = StowTarget::new("http://127.0.0.1:8042/dicom-web", StowAuth::None, None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8042, "/dicom-web/studies")
        );
        let t = StowTarget::new("http://archive/", StowAuth::None, None).unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/studies"));
        for bad in ["ftp://x", "http://:80/x", "http://h:0/x", "http://h:99999"] {
            assert!(StowTarget::new(bad, StowAuth::None, None).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", StowAuth::Bearer("secret".into())),
            "bearer token"
        );
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"ok".as_slice()));
        let (s, b) = parse_response(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (202, b"abcde".as_slice()));
        assert!(parse_response(b"garbage").is_err());
        let failed = failed_uids(
            br#"{"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}, "00081197": {"vr": "US", "Value": [272]}}]}}"#,
        )
        .unwrap();
        assert_eq!(failed, [("1.2.3".to_string(), "272".to_string())]);
    }
}
