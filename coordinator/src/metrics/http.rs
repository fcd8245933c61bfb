//! The listener of `coordinator run --metrics-listen ADDR`: `GET /metrics` and nothing else,
//! over HTTP/1.1 (what Prometheus scrapes with), behind the same security as gRPC
//! ([`crate::security`]):
//!
//! - with a token, every request must carry `Authorization: Bearer <token>` (Prometheus's
//!   `authorization: {type: Bearer, credentials_file: FILE}`); anything else is answered
//!   401 with a fixed body, before the path is even looked at;
//! - with `--tls-cert`, the listener speaks TLS with the same certificate (the token is the
//!   workers' token: it must not cross the network in clear text where gRPC does not), and
//!   with `--tls-client-ca` it requires a client certificate from that CA too.
//!
//! Written on hyper rather than axum: axum is in the tree (through tonic) but without its
//! server features, and enabling them rebuilds tonic and everything above it, for one route.
//! A connection serves one request and is closed; connections are bounded in number and in
//! time, so a slow or hostile client cannot hold the listener.

use super::{Metrics, CONTENT_TYPE};
use crate::security::{RequireToken, ServerSecurity, UNAUTHENTICATED_MESSAGE};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::WWW_AUTHENTICATE;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

/// Connections served at once; more wait in the kernel's backlog (Prometheus opens one per
/// scrape).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a connection may take, TLS handshake, request and answer together.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener running on a task of its own, until [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting connections (those being served finish within their timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves `metrics` on `listener` with `security`'s token and TLS.
pub fn spawn(listener: TcpListener, metrics: Metrics, security: &ServerSecurity) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = Endpoint {
        metrics,
        auth: security.interceptor(),
        tls: security
            .http_tls_config()
            .map(tokio_rustls::TlsAcceptor::from),
    };
    if let Ok(addr) = listener.local_addr() {
        let scheme = if endpoint.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!(url = %format!("{scheme}://{addr}/metrics"), token = security.has_token(),
            client_certs = security.requires_client_certs(), "metrics listening");
    }
    let task = tokio::spawn(accept(listener, Arc::new(endpoint), async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

/// What every connection needs.
struct Endpoint {
    metrics: Metrics,
    auth: RequireToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts connections until `shutdown`, each on a task of its own, at most
/// [`MAX_CONNECTIONS`] at once.
async fn accept(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let endpoint = Arc::clone(&endpoint);
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(CONNECTION_TIMEOUT, endpoint.connection(stream, peer));
            if served.await.is_err() {
                debug!(%peer, "metrics connection timed out");
            }
            drop(permit);
        });
    }
}

impl Endpoint {
    /// One connection: the TLS handshake if any, then one request.
    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        match &self.tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => Arc::clone(&self).http(tls, peer).await,
                Err(e) => debug!(%peer, error = %e, "metrics TLS handshake failed"),
            },
            None => Arc::clone(&self).http(stream, peer).await,
        }
    }

    async fn http<I>(self: Arc<Self>, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let endpoint = Arc::clone(&self);
            async move { Ok::<_, Infallible>(endpoint.respond(req, peer).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await;
        if let Err(e) = served {
            debug!(%peer, error = %e, "metrics connection failed");
        }
    }

    /// The answer to one request: 401 without the token, 404 but for `/metrics`, 405 but for
    /// GET and HEAD, else the metrics.
    async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if !self.auth.allows(authorization, Some(peer)) {
            let mut r = plain(StatusCode::UNAUTHORIZED, UNAUTHENTICATED_MESSAGE);
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        if req.uri().path() != "/metrics" {
            return plain(StatusCode::NOT_FOUND, "only /metrics is served here");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        // The census walks every trial: off the runtime.
        let metrics = self.metrics.clone();
        match tokio::task::spawn_blocking(move || metrics.encode()).await {
            Ok(text) => {
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut()
                    .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
                r
            }
            Err(e) => {
                warn!(error = %e, "encoding the metrics failed");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding the metrics failed",
                )
            }
        }
    }
}

/// A plain-text answer.
fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE_HEADER,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
