//! A real coordinator service on 127.0.0.1:0 for the integration tests in this folder, with
//! its results in a temporary directory.

use coordinator::security::ServerSecurity;
use coordinator::service::{self, ServiceConfig, SweepState};
use coordinator::trial::TrialSpec;
use proto::pb::coordinator_client::CoordinatorClient;
use proto::{Arch, Hyperparams};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// A coordinator serving `trials` until [`Sandbox::stop`].
pub struct Sandbox {
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub state: Arc<SweepState>,
    server: service::Running,
}

impl Sandbox {
    /// Sweep `test`, no token, no TLS; `tune` adjusts the test timings (lease timeout 30 s,
    /// heartbeat and flush every 50 ms).
    pub async fn start(trials: &[Hyperparams], tune: impl FnOnce(&mut ServiceConfig)) -> Sandbox {
        Sandbox::secured("test", trials, tune, ServerSecurity::default()).await
    }

    /// Sweep `name`, protected by `security`.
    pub async fn secured(
        name: &str,
        trials: &[Hyperparams],
        tune: impl FnOnce(&mut ServiceConfig),
        security: ServerSecurity,
    ) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServiceConfig::new(name, dir.path().join("results"));
        config.lease_timeout = Duration::from_secs(30);
        config.heartbeat_interval = Duration::from_millis(50);
        config.flush_interval = Duration::from_millis(50);
        tune(&mut config);
        let trials = trials
            .iter()
            .map(|h| TrialSpec::new("exp", h.clone()))
            .collect();
        let state = SweepState::open(trials, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = service::spawn(listener, Arc::clone(&state), security);
        Sandbox {
            addr,
            dir,
            state,
            server,
        }
    }

    /// A plaintext HTTP/2 channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The generated client on a new channel.
    pub async fn client(&self) -> CoordinatorClient<Channel> {
        CoordinatorClient::new(self.channel().await)
    }

    /// The sweep's results folder.
    pub fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// Shuts the server down and fails the test if serving failed.
    pub async fn stop(self) {
        self.server.stop().await.unwrap();
    }
}

/// A small, fast trial: an MLP (ffv1, 16 hidden units) of `epochs` epochs and `seed`.
pub fn hp(epochs: u32, seed: u64) -> Hyperparams {
    Hyperparams {
        arch: Arch::Ffv1,
        hidden: 16,
        epochs,
        seed,
        ..Hyperparams::default()
    }
}
