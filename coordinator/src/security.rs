//! Who may talk to the coordinator: a shared bearer token and TLS.
//!
//! The coordinator listens on loopback unless `--listen` says otherwise. On any other address
//! it refuses to start without a shared token (`--token-file FILE` or `SWEEP_TOKEN_FILE`; the
//! token itself never appears on a command line, where the process list would show it). Every
//! call to `sweep.v1.Coordinator` and to reflection must then carry the gRPC metadata
//! `authorization: Bearer <token>`; a missing or wrong token gets `UNAUTHENTICATED` with a
//! fixed message that reveals nothing of the sweep, and a warning with the peer's address in
//! the log (at most one every [`REFUSAL_LOG_EVERY`], counting the refusals in between, so a
//! client retrying with a wrong token cannot flood the log). A token given on loopback is
//! enforced too.
//!
//! `grpc.health.v1.Health` stays open: load balancers and orchestrators probe it without
//! credentials, and it answers only SERVING / NOT_SERVING for a service name that is public
//! anyway (it is in the proto). So does `--health-listen`, which serves nothing else.
//!
//! `--metrics-listen` follows the same rule as `--listen` ([`ServerSecurity::check_listener`]):
//! beyond loopback it needs the token, and every scrape must then carry
//! `Authorization: Bearer <token>` ([`RequireToken::allows`], the same check); with TLS it
//! serves the same certificate ([`ServerSecurity::http_tls_config`]).
//!
//! TLS (rustls, via tonic's `tls-ring`): `--tls-cert`/`--tls-key` give the server identity;
//! `--tls-client-ca` additionally requires every client to present a certificate signed by
//! that CA. Without TLS the token travels in clear text, which is allowed (with a warning) on a
//! network one trusts.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use tracing::warn;

/// Shortest token accepted, in bytes: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The message of every refused call: the same whatever was wrong, and nothing of the sweep.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid token";

/// Refused calls are logged at most this often; the ones in between are counted in the next
/// warning.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("token file {}: {source}", path.display())]
    ReadToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {}: {reason}", path.display())]
    BadToken { path: PathBuf, reason: String },
    #[error(
        "{flag} {listen} is not a loopback address: give --token-file FILE or \
         SWEEP_TOKEN_FILE=FILE with a shared token of at least {MIN_TOKEN_LEN} characters \
         (e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`), which every worker then passes \
         with its own --token-file; or listen on 127.0.0.1"
    )]
    TokenRequired {
        flag: &'static str,
        listen: SocketAddr,
    },
    #[error("{flag} {}: {source}", path.display())]
    ReadPem {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: {reason}", path.display())]
    BadPem {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    CertWithoutKey,
    #[error(
        "--tls-client-ca needs --tls-cert and --tls-key (client certificates are a TLS feature)"
    )]
    ClientCaWithoutTls,
    #[error("TLS configuration: {0}")]
    Tls(String),
}

pub type Result<T, E = SecurityError> = std::result::Result<T, E>;

/// A shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads a token file. Surrounding whitespace (the newline of `echo … > FILE`) is not part
    /// of the token; an empty or short token, or one that cannot travel in a gRPC header, is
    /// refused naming the file. A file that group or others can read gets a warning.
    pub fn load(path: &Path) -> Result<Token> {
        let raw = std::fs::read(path).map_err(|source| SecurityError::ReadToken {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_readable_by_others(path);
        Token::new(raw.trim_ascii()).map_err(|reason| SecurityError::BadToken {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// A token from its bytes (tests; [`Token::load`] reads files).
    pub fn new(token: &[u8]) -> Result<Token, String> {
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is {} characters long; use at least {MIN_TOKEN_LEN} \
                 (e.g. `openssl rand -hex 32`)",
                token.len()
            ));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token must be printable ASCII without spaces (it travels in a gRPC header)"
                    .into(),
            );
        }
        Ok(Token(token.into()))
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        // The length is not secret (the minimum is public); the contents are.
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                file = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the token file can be read by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The files the security flags name (`coordinator run`'s `--token-file`, `--tls-*`).
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    pub token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
}

/// What [`crate::service::serve`] enforces: the token (if any) and the TLS configuration (if
/// any). [`ServerSecurity::default`] is neither, the behaviour of a loopback-only coordinator.
#[derive(Clone, Default)]
pub struct ServerSecurity {
    token: Option<Token>,
    tls: Option<ServerTlsConfig>,
    /// The same identity and client rule for the HTTP listeners (`/metrics`), which tonic's
    /// configuration cannot serve.
    http_tls: Option<Arc<rustls::ServerConfig>>,
    client_certs: bool,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("token", &self.token.is_some())
            .field("tls", &self.tls.is_some())
            .field("client_certs", &self.client_certs)
            .finish()
    }
}

impl ServerSecurity {
    /// Reads the files of `opts` and applies the rule: a non-loopback `listen` address needs a
    /// token. Every file is read and checked now, so that a bad one stops `coordinator run`
    /// before anything starts.
    pub fn from_options(opts: &SecurityOptions, listen: SocketAddr) -> Result<ServerSecurity> {
        let token = opts.token_file.as_deref().map(Token::load).transpose()?;
        let mut security = ServerSecurity {
            token,
            ..ServerSecurity::default()
        };
        security.check_listener("--listen", listen)?;
        match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read_pem("--tls-cert", cert)?;
                let key_pem = read_pem("--tls-key", key)?;
                check_certs("--tls-cert", cert, &cert_pem)?;
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SecurityError::BadPem {
                    flag: "--tls-key",
                    path: key.clone(),
                    reason: format!("no usable private key: {e}"),
                })?;
                let ca_pem = match &opts.tls_client_ca {
                    Some(ca) => {
                        let pem = read_pem("--tls-client-ca", ca)?;
                        check_certs("--tls-client-ca", ca, &pem)?;
                        Some(pem)
                    }
                    None => None,
                };
                security = security.with_tls(&cert_pem, &key_pem, ca_pem.as_deref())?;
            }
            (None, None) if opts.tls_client_ca.is_some() => {
                return Err(SecurityError::ClientCaWithoutTls)
            }
            (None, None) => {}
            _ => return Err(SecurityError::CertWithoutKey),
        }
        Ok(security)
    }

    /// The rule for every listener that needs the token (gRPC's `--listen`, `--metrics-listen`):
    /// a non-loopback address without a token is refused, naming `flag`.
    pub fn check_listener(&self, flag: &'static str, listen: SocketAddr) -> Result<()> {
        if self.token.is_none() && !listen.ip().is_loopback() {
            return Err(SecurityError::TokenRequired { flag, listen });
        }
        Ok(())
    }

    /// Requires `token` on every call to the coordinator service and reflection.
    pub fn with_token(mut self, token: Token) -> ServerSecurity {
        self.token = Some(token);
        self
    }

    /// Serves TLS with this PEM certificate (chain) and key; with `client_ca`, only to clients
    /// whose certificate it signed.
    pub fn with_tls(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<ServerSecurity> {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        // Build it once now: a certificate that does not match its key fails here, not when
        // the server starts in its own task.
        tonic::transport::Server::builder()
            .tls_config(tls.clone())
            .map_err(|e| SecurityError::Tls(error_chain(&e)))?;
        self.http_tls = Some(http_tls(cert_pem, key_pem, client_ca)?);
        self.tls = Some(tls);
        self.client_certs = client_ca.is_some();
        Ok(self)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn requires_client_certs(&self) -> bool {
        self.client_certs
    }

    /// The TLS configuration for the server builder.
    pub fn tls_config(&self) -> Option<ServerTlsConfig> {
        self.tls.clone()
    }

    /// The TLS configuration of the HTTP listeners (`/metrics`): the gRPC one's certificate,
    /// key and client CA, for HTTP/1.1.
    pub fn http_tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.http_tls.clone()
    }

    /// The interceptor that checks the token (it lets everything through without one).
    pub fn interceptor(&self) -> RequireToken {
        RequireToken {
            token: self.token.clone(),
            refusals: Arc::default(),
        }
    }

    /// Logs what protects the server listening on `addr`, warning where it is weak.
    pub fn log(&self, addr: SocketAddr) {
        if addr.ip().is_loopback() {
            if self.token.is_some() || self.tls.is_some() {
                tracing::info!(%addr, token = self.token.is_some(), tls = self.tls.is_some(), client_certs = self.client_certs, "security");
            }
        } else if self.tls.is_none() {
            warn!(%addr, "listening without TLS: the token and all traffic travel in clear text; \
                          give --tls-cert and --tls-key unless this network is trusted");
        } else {
            tracing::info!(%addr, token = self.token.is_some(), tls = true, client_certs = self.client_certs, "security");
        }
    }
}

/// The tonic interceptor that checks `authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct RequireToken {
    token: Option<Token>,
    /// Shared by the clones tonic makes per connection.
    refusals: Arc<Mutex<RefusalLog>>,
}

/// When refused calls were last logged, and how many were not since.
#[derive(Debug, Default)]
struct RefusalLog {
    last_warning: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Whether to log a refusal at `now`: `Some(n)` with the `n` refusals left unlogged since
    /// the last warning, or `None` (and it is counted) within [`REFUSAL_LOG_EVERY`] of it.
    fn refused(&mut self, now: Instant) -> Option<u64> {
        match self.last_warning {
            Some(last) if now.saturating_duration_since(last) < REFUSAL_LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last_warning = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

impl RequireToken {
    /// Whether `authorization` (the header's value, if any) is `Bearer <token>`, or no token
    /// is required. A refusal is logged as [`RequireToken`] says, with the `peer`. The one
    /// check of gRPC calls and of HTTP requests (`/metrics`).
    pub fn allows(&self, authorization: Option<&[u8]>, peer: Option<SocketAddr>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let refused = match authorization {
            None => "no authorization header",
            Some(v) => match v.strip_prefix(b"Bearer ") {
                Some(presented) if token.matches(presented) => return true,
                Some(_) => "wrong token",
                None => "authorization is not `Bearer <token>`",
            },
        };
        let peer = peer.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        // A poisoned lock only means another call panicked mid-update; the counts stay usable.
        let log = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused(Instant::now());
        if let Some(unlogged) = log {
            if unlogged > 0 {
                warn!(peer = %peer, reason = refused, also_refused = unlogged,
                      "refused a call without the right token ({unlogged} more refused, not logged, since the last warning)");
            } else {
                warn!(peer = %peer, reason = refused, "refused a call without the right token");
            }
        }
        false
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let authorization = req.metadata().get("authorization").map(|v| v.as_bytes());
        if self.allows(authorization, req.remote_addr()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(UNAUTHENTICATED_MESSAGE))
        }
    }
}

/// The rustls configuration of [`ServerSecurity::http_tls_config`]: the PEMs were checked
/// already (tonic's configuration was built from them).
fn http_tls(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>> {
    let tls = |e: &dyn std::error::Error| SecurityError::Tls(error_chain(e));
    let certs = parse_certs(cert_pem).map_err(SecurityError::Tls)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_certs(ca).map_err(SecurityError::Tls)? {
                roots.add(cert).map_err(|e| tls(&e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| tls(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| SecurityError::ReadPem {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn check_certs(flag: &'static str, path: &Path, pem: &[u8]) -> Result<()> {
    let certs = parse_certs(pem).map_err(|reason| SecurityError::BadPem {
        flag,
        path: path.to_path_buf(),
        reason,
    })?;
    if certs.is_empty() {
        return Err(SecurityError::BadPem {
            flag,
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(())
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

/// The name under which local workers, which connect to 127.0.0.1, can verify the server
/// certificate `cert_pem` (its first certificate): `Some(None)` when it is valid for the IP
/// address 127.0.0.1 itself, `Some(Some("localhost"))` when for `localhost`, `None` when for
/// neither (then the user must say which name to use).
pub fn local_tls_name(cert_pem: &[u8]) -> Option<Option<&'static str>> {
    let certs = parse_certs(cert_pem).ok()?;
    let leaf = webpki::EndEntityCert::try_from(certs.first()?).ok()?;
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    if leaf.verify_is_valid_for_subject_name(&ip).is_ok() {
        return Some(None);
    }
    let localhost = ServerName::try_from("localhost").ok()?;
    leaf.verify_is_valid_for_subject_name(&localhost)
        .is_ok()
        .then_some(Some("localhost"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good", "0123456789abcdef0123\n");
        let t = Token::load(&good).unwrap();
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012X"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");

        let empty = write(dir.path(), "empty", " \n");
        let e = Token::load(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty") && e.contains(&*empty.to_string_lossy()),
            "{e}"
        );
        let short = write(dir.path(), "short", "abc\n");
        let e = Token::load(&short).unwrap_err().to_string();
        assert!(e.contains("at least 16") && e.contains("short"), "{e}");
        let spaced = write(dir.path(), "spaced", "0123456789 abcdef0123\n");
        assert!(Token::load(&spaced).is_err());
        let missing = dir.path().join("missing");
        assert!(Token::load(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, 50051).into();
        let e = ServerSecurity::from_options(&SecurityOptions::default(), any).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("--listen 0.0.0.0:50051 is not a loopback address"));
        assert!(msg.contains("--token-file") && msg.contains("SWEEP_TOKEN_FILE"));

        let lo: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let s = ServerSecurity::from_options(&SecurityOptions::default(), lo).unwrap();
        assert!(!s.has_token() && !s.has_tls());
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(ServerSecurity::from_options(&SecurityOptions::default(), v6).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let opts = SecurityOptions {
            token_file: Some(write(dir.path(), "t", "0123456789abcdef0123")),
            ..Default::default()
        };
        let with_token = ServerSecurity::from_options(&opts, any).unwrap();
        assert!(with_token.has_token());

        // The same rule for the metrics listener, named after its flag.
        let metrics: SocketAddr = (Ipv4Addr::UNSPECIFIED, 9464).into();
        let s = ServerSecurity::from_options(&SecurityOptions::default(), lo).unwrap();
        let msg = s
            .check_listener("--metrics-listen", metrics)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "--metrics-listen 0.0.0.0:9464 is not a loopback address: give --token-file"
            ),
            "{msg}"
        );
        assert!(s.check_listener("--metrics-listen", lo).is_ok());
        assert!(with_token
            .check_listener("--metrics-listen", metrics)
            .is_ok());
    }

    #[test]
    fn tls_flags_go_together() {
        let lo: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let opts = SecurityOptions {
            tls_cert: Some("cert.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServerSecurity::from_options(&opts, lo),
            Err(SecurityError::CertWithoutKey)
        ));
        let opts = SecurityOptions {
            tls_client_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServerSecurity::from_options(&opts, lo),
            Err(SecurityError::ClientCaWithoutTls)
        ));
    }

    #[test]
    fn interceptor_refuses_without_the_token() {
        let s = ServerSecurity::default().with_token(Token::new(b"0123456789abcdef").unwrap());
        let mut i = s.interceptor();
        let call = |i: &mut RequireToken, header: Option<&str>| {
            let mut r = Request::new(());
            if let Some(h) = header {
                r.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            i.call(r)
        };
        assert!(call(&mut i, Some("Bearer 0123456789abcdef")).is_ok());
        for bad in [
            None,
            Some("Bearer 0123456789abcdeX"),
            Some("0123456789abcdef"),
            Some("Basic 0123456789abcdef"),
        ] {
            let st = call(&mut i, bad).unwrap_err();
            assert_eq!(st.code(), tonic::Code::Unauthenticated);
            assert_eq!(st.message(), UNAUTHENTICATED_MESSAGE);
        }
        // No token configured: everything passes.
        assert!(call(&mut ServerSecurity::default().interceptor(), None).is_ok());
    }

    #[test]
    fn refusals_are_logged_at_most_every_ten_seconds_with_a_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.refused(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(log.refused(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(log.refused(t0 + REFUSAL_LOG_EVERY), Some(500));
        assert_eq!(log.refused(t0 + REFUSAL_LOG_EVERY), None);
        assert_eq!(log.refused(t0 + 3 * REFUSAL_LOG_EVERY), Some(1));
        assert_eq!(log.refused(t0 + 5 * REFUSAL_LOG_EVERY), Some(0));
    }

    #[test]
    fn clones_of_the_interceptor_share_one_refusal_log() {
        let s = ServerSecurity::default().with_token(Token::new(b"0123456789abcdef").unwrap());
        let mut a = s.interceptor();
        let mut b = a.clone();
        assert!(a.call(Request::new(())).is_err());
        assert!(b.call(Request::new(())).is_err());
        let log = a.refusals.lock().unwrap();
        assert!(log.last_warning.is_some());
        assert_eq!(log.unlogged, 1, "b's refusal fell in a's window");
    }
}
