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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, security, async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
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

/// Serves the coordinator, gRPC health (`sweep.v1.Coordinator` SERVING) and reflection on
/// `listener` until `shutdown` completes, expiring lapsed leases every quarter lease timeout.
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
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CoordinatorServer<CoordinatorService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection =
        tonic::service::interceptor::InterceptedService::new(reflection, security.interceptor());

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
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
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
    expiry.abort();
    result?;
    Ok(())
}
