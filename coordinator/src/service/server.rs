//! [`serve`]: the coordinator, gRPC health and reflection on an already bound listener until a
//! shutdown future completes, with the security (token, TLS) of [`crate::security`], and the
//! lease-expiry loop beside it.

use super::{CoordinatorService, Result, SweepState, MAX_MESSAGE_BYTES, SERVER_CALL_TIMEOUT};
use proto::pb;
use proto::pb::coordinator_server::CoordinatorServer;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// What a server started by [`Running::spawn`] stops on.
pub(super) type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A [`serve`] running on a task of its own, until [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts [`serve`] on a task of its own.
pub fn spawn(
    listener: tokio::net::TcpListener,
    state: Arc<SweepState>,
    security: crate::security::ServerSecurity,
) -> Running {
    Running::spawn(move |shutdown| serve(listener, state, security, shutdown))
}

impl Running {
    /// Runs `server(shutdown)` on a task of its own; `shutdown` completes at [`Running::stop`].
    pub(super) fn spawn<F>(server: impl FnOnce(ShutdownSignal) -> F) -> Running
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server(Box::pin(async {
            let _ = stopped.await;
        })));
        Running { stop, task }
    }

    /// Asks the server to stop, now, and returns the wait for it: the error is serving's,
    /// or the task's.
    pub fn stop(self) -> impl Future<Output = Result<()>> {
        let _ = self.stop.send(());
        async move {
            self.task
                .await
                .map_err(|e| super::ServiceError::Task(e.to_string()))?
        }
    }
}

/// Serves the coordinator, gRPC health and reflection (`grpc.reflection.v1` and
/// `v1alpha`, which Python's grpcio-reflection and older grpcurl builds speak) on `listener`
/// until `shutdown` completes, expiring lapsed leases every quarter lease timeout. The
/// sweep's [`super::Health`] says SERVING while it serves (on every health listener).
///
/// `security` says what is enforced (its `Default`: nothing, as for loopback): its
/// token on the coordinator service and reflection (health stays open for load balancers, see
/// [`crate::security`]) and its TLS on the whole listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<SweepState>,
    security: crate::security::ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let health = state.health().clone();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1()?,
        security.interceptor(),
    );
    let reflection_v1alpha = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1alpha()?,
        security.interceptor(),
    );

    let period = (state.config().lease_timeout / 4).max(Duration::from_millis(10));
    let expiry = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                state.expire(Instant::now());
            }
        })
    };
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, sweep = %state.config().sweep_name, "coordinator listening");
        security.log(addr);
    }
    let mut builder = tonic::transport::Server::builder()
        // Calls answer in milliseconds; one still running after this is stuck (or a client
        // trickling a 64 MiB checkpoint at under 1 Mbit/s). It is answered CANCELLED, which
        // workers retry, and its task and buffers are freed.
        .timeout(SERVER_CALL_TIMEOUT)
        // A worker whose machine vanished leaves a half-open connection: pings close it.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(60)));
    if let Some(tls) = security.tls_config() {
        builder = builder.tls_config(tls)?;
    }
    health.set_serving(true).await;
    let result = builder
        .add_service(health.service())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            // Bounded: a ReportEpoch carries a checkpoint, anything larger is refused with
            // RESOURCE_EXHAUSTED before it is buffered.
            CoordinatorServer::new(CoordinatorService::new(state))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            security.interceptor(),
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    health.set_serving(false).await;
    expiry.abort();
    result?;
    Ok(())
}
