//! `--web-config FILE`: basic authentication and TLS for the agent's HTTP endpoints,
//! in the shape of node_exporter's web configuration file (a subset: the keys below;
//! any other key is refused, so a setting the agent would ignore never looks applied).
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/handshake-trace/tls.crt
//!   key_file: /etc/handshake-trace/tls.key
//! basic_auth_users:
//!   prometheus: $2y$10$...   # a bcrypt hash (htpasswd -nBC 10 prometheus)
//! ```
//!
//! Checking a password costs a bcrypt verification (tens of milliseconds): it runs off
//! the agent's thread, at most [`VERIFICATIONS_PER_SECOND`] a second (more answer 401
//! unverified), and a right password is remembered (by its SHA-256, never in clear)
//! so a scraper's every request does not pay it again.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};

use super::abnormal_log::TokenBucket;
use crate::support::clock::monotonic_ns;

/// bcrypt verifications a second at most (wrong or unknown credentials included).
pub const VERIFICATIONS_PER_SECOND: f64 = 5.0;
/// Right credentials remembered at most (the cache is cleared when full).
const REMEMBERED: usize = 64;
/// The longest Authorization header value looked at.
const MAX_AUTHORIZATION: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

/// The parsed file: users and their bcrypt hashes, and the TLS configuration.
#[derive(Clone)]
pub struct WebConfig {
    pub users: HashMap<String, String>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("WebConfig").field("users", &users).field("tls", &self.tls.is_some()).finish()
    }
}

impl WebConfig {
    /// Read and check the file: every hash must be bcrypt, the TLS files must load.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read the web config {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).with_context(|| format!("web config {}", path.display()))
    }

    /// Parse the file's text; relative TLS paths are taken from `dir` (the file's folder).
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile { tls_server_config: None, basic_auth_users: HashMap::new() }
        } else {
            serde_yaml::from_str(text).context("not a web config (keys: tls_server_config, basic_auth_users)")?
        };
        for (user, hash) in &file.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                bail!("basic_auth_users: the password of {user:?} is not a bcrypt hash ($2y$…)");
            }
            if user.contains(':') {
                bail!("basic_auth_users: a user name cannot contain ':' ({user:?})");
            }
        }
        let tls = match file.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(tls_config(&dir.join(&t.cert_file), &dir.join(&t.key_file))?)),
        };
        Ok(WebConfig { users: file.basic_auth_users, tls })
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls_server_config: cert_file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls_server_config: cert_file {}", cert.display()))?;
    if certs.is_empty() {
        bail!("tls_server_config: no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("tls_server_config: key_file {}", key.display()))?;
    // ring, not aws-lc-rs: it builds with a C compiler alone (no cmake, no Go). rustls
    // marks it deprecated for its lack of post-quantum key exchange; scrapes of metrics
    // are not long-lived secrets.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls_server_config: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A request's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No, wrong or unverified credentials.
    Denied,
}

/// Basic authentication against the file's users.
pub struct Authenticator {
    users: HashMap<String, String>,
    /// SHA-256 of "user:password" for credentials verified right.
    remembered: Mutex<HashSet<[u8; 32]>>,
    verifications: Mutex<TokenBucket>,
}

/// A bcrypt hash of nothing anyone knows: unknown users are verified against it, so
/// an unknown user takes as long as a known one with a wrong password.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

fn digest(user: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(user.as_bytes());
    ctx.update(b":");
    ctx.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// "Basic base64(user:password)" → (user, password).
pub fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    if header.len() > MAX_AUTHORIZATION {
        return None;
    }
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl Authenticator {
    pub fn new(users: HashMap<String, String>) -> Self {
        Authenticator { users, remembered: Mutex::default(), verifications: Mutex::new(TokenBucket::new(VERIFICATIONS_PER_SECOND)) }
    }

    /// Whether any user is configured (else every request is allowed).
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check a request's Authorization header (None: there was none).
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> Access {
        if !self.enabled() {
            return Access::Allowed;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return Access::Denied };
        let key = digest(&user, &password);
        if self.remembered.lock().is_ok_and(|r| r.contains(&key)) {
            return Access::Allowed;
        }
        if !self.verifications.lock().is_ok_and(|mut b| b.take(monotonic_ns())) {
            return Access::Denied;
        }
        let known = self.users.get(&user).cloned();
        let hash = known.clone().unwrap_or_else(|| DUMMY_HASH.to_string());
        let right = tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)).await.unwrap_or(false);
        if !(right && known.is_some()) {
            return Access::Denied;
        }
        if let Ok(mut r) = self.remembered.lock() {
            if r.len() >= REMEMBERED {
                r.clear();
            }
            r.insert(key);
        }
        Access::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_and_reject_other_schemes() {
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:se:cret"));
        assert_eq!(basic_credentials(header.as_bytes()), Some(("prom".into(), "se:cret".into())));
        assert_eq!(basic_credentials(b"Bearer abc"), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
        assert_eq!(basic_credentials(format!("Basic {}", "A".repeat(2000)).as_bytes()), None);
    }

    #[test]
    fn the_file_refuses_unknown_keys_and_hashes_that_are_not_bcrypt() {
        let dir = Path::new("/nonexistent");
        assert!(WebConfig::parse("basic_auth_users:\n  prom: plaintext\n", dir).is_err());
        assert!(WebConfig::parse("http_server_config:\n  http2: false\n", dir).is_err());
        let ok = WebConfig::parse(&format!("basic_auth_users:\n  prom: '{DUMMY_HASH}'\n"), dir).unwrap();
        assert_eq!(ok.users.len(), 1);
        assert!(ok.tls.is_none());
        assert!(WebConfig::parse("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n", dir).is_err(), "missing files are an error");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn right_credentials_pass_wrong_and_missing_ones_do_not() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Arc::new(Authenticator::new(HashMap::from([("prom".to_string(), hash)])));
        let header = |u: &str, p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
        assert_eq!(auth.check(None).await, Access::Denied);
        assert_eq!(auth.check(Some(header("prom", "wrong").as_bytes())).await, Access::Denied);
        assert_eq!(auth.check(Some(header("nobody", "s3cret").as_bytes())).await, Access::Denied);
        assert_eq!(auth.check(Some(header("prom", "s3cret").as_bytes())).await, Access::Allowed);
        // Remembered: allowed again without a verification token.
        for _ in 0..20 {
            assert_eq!(auth.check(Some(header("prom", "s3cret").as_bytes())).await, Access::Allowed);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn verifications_are_rate_limited() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Arc::new(Authenticator::new(HashMap::from([("prom".to_string(), hash)])));
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:wrong"));
        for _ in 0..VERIFICATIONS_PER_SECOND as usize {
            assert_eq!(auth.check(Some(wrong.as_bytes())).await, Access::Denied);
        }
        // The bucket is empty now: even the right password is not verified this second.
        let right = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:s3cret"));
        assert_eq!(auth.check(Some(right.as_bytes())).await, Access::Denied);
    }
}
