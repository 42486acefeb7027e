//! Bearer-token authentication and TLS settings.

use super::config::ServeConfig;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// Checks `authorization: Bearer TOKEN` on every call it wraps (all services but health). Cloned
/// into each service; without a token it lets everything through. The admin token (model control)
/// is accepted wherever the token is.
#[derive(Clone, Default)]
pub struct TokenCheck {
    token: Option<std::sync::Arc<[u8]>>,
    admin: Option<std::sync::Arc<[u8]>>,
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
        .trim()
        .to_string())
}

/// Tokens shorter than 16 characters are refused at start-up.
fn long_enough(token: Option<String>, what: &str) -> anyhow::Result<Option<String>> {
    if let Some(t) = &token {
        anyhow::ensure!(
            t.len() >= 16,
            "the {what} is {} characters; use at least 16",
            t.len()
        );
    }
    Ok(token)
}

fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl TokenCheck {
    pub fn from_config(config: &ServeConfig) -> anyhow::Result<Self> {
        let admin = match &config.admin_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let admin = long_enough(admin, "admin token")?;
        let token = match (&config.auth_token_file, &config.auth_token) {
            (Some(_), Some(_)) => {
                anyhow::bail!("give the auth token either as a file or as a value, not both")
            }
            (Some(path), None) => Some(read_token(path)?),
            (None, Some(secret)) => Some(secret.0.clone()),
            (None, None) => None,
        };
        let token = long_enough(token, "auth token")?;
        anyhow::ensure!(
            admin.is_none() || admin != token,
            "the admin token must differ from the auth token"
        );
        Ok(TokenCheck {
            token: token.map(|t| t.into_bytes().into()),
            admin: admin.map(|t| t.into_bytes().into()),
        })
    }

    /// Model control (load, unload): with an admin token configured, callers must carry it; with
    /// only the auth token configured, nobody may; with neither, everybody may.
    #[allow(clippy::result_large_err)]
    pub fn check_admin(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        match (&self.admin, &self.token) {
            (Some(admin), _) => match bearer(metadata) {
                Some(given) if constant_time_eq(given.as_bytes(), admin) => Ok(()),
                Some(_) => Err(Status::permission_denied(
                    "model control needs the admin token (--admin-token-file)",
                )),
                None => Err(Status::unauthenticated(
                    "missing credentials: model control needs `authorization: Bearer ADMIN_TOKEN`",
                )),
            },
            (None, Some(_)) => Err(Status::permission_denied(
                "model control is off: the server has an auth token but no admin token (--admin-token-file)",
            )),
            (None, None) => Ok(()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    #[allow(clippy::result_large_err)]
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(req);
        };
        let given = bearer(req.metadata()).ok_or_else(|| {
            Status::unauthenticated("missing credentials: send `authorization: Bearer TOKEN`")
        })?;
        let admin = self
            .admin
            .as_ref()
            .is_some_and(|a| constant_time_eq(given.as_bytes(), a));
        if admin || constant_time_eq(given.as_bytes(), expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("the bearer token is not valid"))
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The TLS settings, when a certificate is configured; with a client CA, clients must present a
/// certificate it signed (mutual TLS).
pub fn tls_config(config: &ServeConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
    }
}
