//! How `worker join` reaches its coordinator: the endpoint (plaintext `http://` or TLS
//! `https://`, with an optional private CA, verification name and client certificate) and
//! the interceptor that sends the shared token as `authorization: Bearer <token>` on every
//! call.
//!
//! The token is read from a file (`--token-file` or `SWEEP_TOKEN_FILE`), never taken from
//! the command line, where every user of the machine could read it in the process list.

use crate::cli::JoinArgs;
use crate::{Error, Result};
use proto::pb::coordinator_client::CoordinatorClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// The gRPC client every part of `worker join` uses: a channel with the token interceptor.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Longest any call may take (an artifact upload of up to a few hundred MB included).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest message the worker accepts from the coordinator.
const MAX_DECODING: usize = 64 << 20;

/// Adds `authorization: Bearer <token>` to every request; does nothing without a token.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// A token as read from its file (already trimmed).
    pub fn new(token: &str) -> Result<BearerToken> {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::InvalidArgument(
                "the token must be printable ASCII (it travels in a gRPC header)".into(),
            )
        })?;
        Ok(BearerToken(Some(value)))
    }

    /// No token: calls go out without an `authorization` header.
    pub fn none() -> BearerToken {
        BearerToken(None)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Reads a token file: surrounding whitespace (the trailing newline of `echo … > file`) is
/// not part of the token.
pub fn read_token(path: &Path) -> Result<String> {
    let raw = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// The endpoint and the token of one coordinator, ready to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    pub endpoint: Endpoint,
    pub token: BearerToken,
    /// Whether the endpoint speaks TLS.
    pub tls: bool,
}

/// TLS settings of the worker's side; any of them implies TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: Option<PathBuf>,
    pub domain: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    fn any(&self) -> bool {
        self.ca.is_some() || self.domain.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

impl Connection {
    /// From `worker join`'s flags.
    pub fn from_args(args: &JoinArgs) -> Result<Connection> {
        let token = match &args.token_file {
            Some(path) => BearerToken::new(&read_token(path)?).map_err(|e| match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(format!("--token-file {}: {m}", path.display()))
                }
                e => e,
            })?,
            None => BearerToken::none(),
        };
        let tls = TlsOptions {
            ca: args.tls_ca.clone(),
            domain: args.tls_domain.clone(),
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        };
        Connection::new(&args.coordinator, token, &tls)
    }

    /// `url` is `http://host:port` or `https://host:port`; TLS options need `https://`.
    pub fn new(url: &str, token: BearerToken, tls: &TlsOptions) -> Result<Connection> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::InvalidArgument(format!("--coordinator {url:?}: {e}"))
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A silently cut link (no RST, no FIN) would otherwise hang a call in TCP
            // retransmission for many minutes: HTTP/2 pings find it dead in ~30 s, and no
            // call waits longer than CALL_TIMEOUT (then it is retried like any transport error).
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .timeout(CALL_TIMEOUT);
        let https = endpoint.uri().scheme_str() == Some("https");
        if tls.any() && !https {
            return Err(Error::InvalidArgument(format!(
                "--coordinator {url:?}: --tls-* flags need an https:// URL"
            )));
        }
        if https {
            let mut cfg = ClientTlsConfig::new();
            match &tls.ca {
                Some(ca) => cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => cfg = cfg.with_native_roots(),
            }
            if let Some(domain) = &tls.domain {
                cfg = cfg.domain_name(domain.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(cfg)
                .map_err(|e| Error::Tls(format!("--coordinator {url:?}: TLS: {e}")))?;
        }
        Ok(Connection {
            endpoint,
            token,
            tls: https,
        })
    }

    /// Connects once. A TLS failure (a certificate that does not verify, a client
    /// certificate the coordinator refuses) comes back as an error that retrying cannot fix,
    /// naming the flags to check; anything else as the transient transport error it is.
    pub async fn connect(&self) -> Result<Channel> {
        self.endpoint
            .connect()
            .await
            .map_err(|e| match tls_failure(&e) {
                Some(why) => Error::Tls(format!(
                    "TLS with the coordinator failed: {why}; check --tls-ca and --tls-domain (and \
                 --tls-cert/--tls-key if it requires client certificates)"
                )),
                None => Error::Transport(e),
            })
    }

    /// Wraps a connected channel into the client, token included.
    pub fn client(&self, channel: Channel) -> Client {
        CoordinatorClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(MAX_DECODING)
    }
}

/// The rustls error somewhere in `e`'s chain, if any.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        next = err.source();
    }
    None
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

impl Connection {
    /// The error `worker join` stops with when its first call (`Register`) fails: a refused
    /// token says what to check; a plaintext client whose connection the coordinator closes
    /// is told that it may want TLS.
    pub fn register_error(&self, status: Status) -> Error {
        match status.code() {
            tonic::Code::Unauthenticated => unauthenticated(&status, self.token.0.is_some()),
            tonic::Code::FailedPrecondition => refused_protocol(&status),
            // Internal: with HTTP/2 keepalive on, a TLS server's answer to plaintext reads as
            // an h2 protocol error (FRAME_SIZE_ERROR) rather than a closed connection.
            tonic::Code::Cancelled
            | tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
                if !self.tls =>
            {
                Error::Refused(format!(
                    "the coordinator closed the connection ({}): if it serves TLS, use an \
                     https:// URL (with --tls-ca for a private certificate)",
                    status.message()
                ))
            }
            _ => Error::from(status),
        }
    }
}

/// The error `worker join` stops with when the coordinator refuses to register it
/// (FAILED_PRECONDITION: a protocol it does not serve). Retrying cannot help; the coordinator's
/// message names both protocols and the worker releases that match.
pub fn refused_protocol(status: &Status) -> Error {
    Error::Refused(format!(
        "the coordinator refused this worker (FAILED_PRECONDITION): {}",
        status.message()
    ))
}

/// The error `worker join` stops with when the coordinator refuses its token: retrying
/// cannot help, so say what to check.
pub fn unauthenticated(status: &Status, has_token: bool) -> Error {
    let hint = if has_token {
        "the token in --token-file (or SWEEP_TOKEN_FILE) does not match the coordinator's"
    } else {
        "the coordinator requires a token: give --token-file FILE (or SWEEP_TOKEN_FILE) with the coordinator's token"
    };
    Error::Refused(format!(
        "the coordinator refused this worker (UNAUTHENTICATED: {}): {hint}",
        status.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_trimmed_and_sent_as_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token-0123456789\n").unwrap();
        let token = read_token(&path).unwrap();
        assert_eq!(token, "s3cret-token-0123456789");
        let mut i = BearerToken::new(&token).unwrap();
        let req = i.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret-token-0123456789"
        );
        assert!(!format!("{i:?}").contains("s3cret"));
    }

    #[test]
    fn empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).is_err());
    }

    #[test]
    fn a_refused_token_is_refused_not_an_argument_and_not_retryable() {
        let conn = Connection::new(
            "http://127.0.0.1:1",
            BearerToken::none(),
            &Default::default(),
        )
        .unwrap();
        let err = conn.register_error(Status::unauthenticated("no"));
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(err.to_string().contains("requires a token"), "{err}");
        assert!(!err.is_retryable());
        let with_token = Connection {
            token: BearerToken::new("s3cret-token-0123456789").unwrap(),
            ..conn.clone()
        };
        let err = with_token.register_error(Status::unauthenticated("no"));
        assert!(err.to_string().contains("does not match"), "{err}");
        // Plaintext against a TLS listener: the coordinator closes the connection.
        let err = conn.register_error(Status::unavailable("connection closed"));
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(err.to_string().contains("https://"), "{err}");
        // Another release's coordinator: its message, and no retrying.
        let err = conn.register_error(Status::failed_precondition(
            "this worker (9.0.0) speaks sweep.v1 protocol 3",
        ));
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert!(err.to_string().contains("protocol 3"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn tls_flags_need_https() {
        let tls = TlsOptions {
            domain: Some("coordinator.example".into()),
            ..Default::default()
        };
        let err = Connection::new("http://127.0.0.1:1", BearerToken::none(), &tls).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }
}
