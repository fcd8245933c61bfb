//! `grpc.health.v1`: one set of statuses ([`Health`]) that the main listener serves beside the
//! coordinator, and that `--health-listen ADDR` serves alone, in plaintext, on a port of its
//! own ([`spawn`]).
//!
//! The port of its own exists for Kubernetes' native `grpc` probe, which speaks no TLS: with
//! TLS on the main port, a probe could not reach the health service there. It serves nothing
//! but health, and no token is asked for: it answers only SERVING or NOT_SERVING, for the
//! overall server (`""`) and `sweep.v1.Coordinator`, names that are public anyway.
//! [`super::serve`] marks both SERVING when it starts serving and NOT_SERVING when it stops.

use super::server::Running;
use super::Result;
use proto::pb::coordinator_server::CoordinatorServer;
use std::future::Future;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tracing::info;

/// The health statuses; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Marks the overall server and the coordinator service SERVING or NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let coordinator =
            <CoordinatorServer<super::CoordinatorService> as tonic::server::NamedService>::NAME;
        for name in ["", coordinator] {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// The `grpc.health.v1.Health` service, answering from these statuses.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }
}

/// Serves `health` alone, in plaintext and without a token, on `listener` until
/// [`Running::stop`].
pub fn spawn(listener: tokio::net::TcpListener, health: &Health) -> Running {
    let service = health.service();
    Running::spawn(move |shutdown| serve(listener, service, shutdown))
}

async fn serve(
    listener: tokio::net::TcpListener,
    service: HealthServer<HealthService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, "health listening (grpc.health.v1 only, plaintext)");
    }
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}
