//! Hospital integration on the output side: DICOM MR images from reconstructions, and their delivery
//! to a PACS by C-STORE through a durable on-disk outbox.
//!
//! - [`dicom`]: MR Image Storage objects for reconstructed slices, one series per reconstruction.
//! - [`uid`]: UID generation under a configurable root.
//! - [`scu`]: the network side, a blocking DICOM service class user (C-ECHO, C-STORE).
//! - [`stow`]: the other route to an archive, DICOMweb STOW-RS over HTTP(S).
//! - [`outbox`]: a write-ahead queue on disk and the background [`outbox::Delivery`] that drains it
//!   into the PACS, so that an image is never lost because the PACS was down or the process restarted.

pub mod dicom;
pub mod outbox;
pub mod scu;
pub mod stow;
pub mod uid;

use anyhow::{bail, Context};
use std::time::Duration;

/// Where and as whom to send: the PACS's DICOM address and the two application entity titles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacsTarget {
    pub host: String,
    pub port: u16,
    /// The PACS's AE title (the "called" AE title of the association).
    pub called_aet: String,
    /// Our own AE title, as the PACS knows us (the "calling" AE title).
    pub calling_aet: String,
    /// Limit for connecting and for every single read or write on the socket.
    pub timeout: Duration,
}

/// Where the outbox delivers: a DICOM peer by C-STORE, or a DICOMweb archive by STOW-RS.
#[derive(Clone)]
pub enum Route {
    CStore(PacsTarget),
    Stow(stow::StowTarget),
}

impl From<PacsTarget> for Route {
    fn from(t: PacsTarget) -> Self {
        Route::CStore(t)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::CStore(t) => t.fmt(f),
            Route::Stow(t) => t.fmt(f),
        }
    }
}

impl Route {
    /// Sends `files`, reporting each answered instance (see [`scu::store_each`]).
    pub fn store_each(
        &self,
        files: &[Vec<u8>],
        on_outcome: impl FnMut(usize, scu::StoreOutcome),
    ) -> anyhow::Result<()> {
        match self {
            Route::CStore(t) => scu::store_each(t, files, on_outcome),
            Route::Stow(t) => t.store_each(files, on_outcome),
        }
    }
}

/// AE titles used when none are configured: the PACS's (a common default of DICOM servers) and
/// inferd's own.
pub const DEFAULT_CALLED_AET: &str = "ANY-SCP";
pub const DEFAULT_CALLING_AET: &str = "INFERD";

/// The timeout [`PacsTarget::parse`] sets: long enough for a busy PACS to answer a C-STORE of a
/// large instance, short enough that a dead peer does not hold the delivery for minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl PacsTarget {
    /// `addr` is `HOST:PORT` (`[v6addr]:PORT` for IPv6 literals). AE titles are 1–16 characters of
    /// the DICOM default repertoire without backslash or control characters; leading and trailing
    /// spaces are not significant and are removed.
    pub fn parse(addr: &str, called_aet: &str, calling_aet: &str) -> anyhow::Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("PACS address {addr:?} is not HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("PACS address {addr:?} has no host, expected HOST:PORT");
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("PACS address {addr:?}: port must be 1-65535"))?;
        Ok(PacsTarget {
            host: host.to_string(),
            port,
            called_aet: validate_aet(called_aet, "called")?,
            calling_aet: validate_aet(calling_aet, "calling")?,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// `host:port` as a socket address string (IPv6 literals in brackets).
    pub fn socket_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for PacsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.called_aet, self.socket_addr())
    }
}

/// Checks an AE title (PS3.5 AE value representation) and returns it without padding spaces.
fn validate_aet(aet: &str, which: &str) -> anyhow::Result<String> {
    let t = aet.trim_matches(' ');
    if t.is_empty() || t.len() > 16 {
        bail!(
            "{which} AE title {aet:?} must have 1-16 characters, has {}",
            t.len()
        );
    }
    if let Some(c) = t.chars().find(|c| *c == '\\' || !(' '..='~').contains(c)) {
        bail!("{which} AE title {aet:?} contains {c:?}; allowed are printable ASCII without '\\'");
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_validates_ae_titles() {
        let t = PacsTarget::parse("pacs.local:104", "ORTHANC", "INFERD").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.called_aet.as_str()),
            ("pacs.local", 104, "ORTHANC")
        );
        assert_eq!(t.to_string(), "ORTHANC@pacs.local:104");
        let v6 = PacsTarget::parse("[::1]:11112", " ANY-SCP ", "X").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.called_aet.as_str()),
            ("::1", "ANY-SCP")
        );
        assert_eq!(v6.socket_addr(), "[::1]:11112");
        for bad in ["nohost", ":104", "h:0", "h:70000", "h:x"] {
            assert!(PacsTarget::parse(bad, "A", "B").is_err(), "{bad}");
        }
        for bad in ["", "   ", "SEVENTEEN-CHARSXX", "A\\B", "A\tB", "É"] {
            let e = PacsTarget::parse("h:104", bad, "B")
                .unwrap_err()
                .to_string();
            assert!(e.contains("called AE title"), "{bad}: {e}");
        }
        assert!(PacsTarget::parse("h:104", "A", "").is_err());
        assert!(PacsTarget::parse("h:104", "SIXTEEN-CHARS-OK", "B").is_ok());
    }
}
