//! The `sweep.v1.Coordinator` gRPC service over the scheduler and the results folder.
//!
//! - [`state`]: [`SweepState`], the running sweep every part shares, and its commit protocol
//!   (a call is answered only once what it changed is durable);
//! - [`handlers`]: the gRPC handlers, one per call, and the one mapping of scheduler refusals
//!   to gRPC codes ([`handlers::code`]);
//! - [`validate`]: the checks of every wire field before it reaches the scheduler;
//! - `artifacts`: uploaded artifact files, written whole or not at all;
//! - [`dataset`]: `FetchDataset`, the coordinator's Fashion-MNIST streamed to bare workers;
//! - [`server`]: [`serve`], the tonic server with health, reflection and lease expiry;
//! - [`health`]: the health statuses both the main listener and `--health-listen` serve.
//!
//! How an epoch report becomes a Parquet row: [`handlers`] validates it, the scheduler
//! accepts it as a [`results_format::EpochRecord`] under the state's lock, the committer
//! ([`crate::store`]) makes it durable in `state.redb` and hands it to the results writer
//! ([`crate::results_writer`]), which writes it into `epochs/part-*.parquet`.

mod artifacts;
pub mod dataset;
pub mod handlers;
pub mod health;
pub mod server;
pub mod state;
pub mod validate;

pub use handlers::CoordinatorService;
pub use health::Health;
pub use server::{serve, spawn, Running};
pub use state::SweepState;

use crate::store::StoreError;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the coordinator service needs a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Results(#[from] results_format::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the results writer stopped")]
    WriterGone,
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the server task failed: {0}")]
    Task(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Most workers registered at once: past it lost workers are forgotten, and if that is not
/// enough, registration is refused with RESOURCE_EXHAUSTED (a runaway client cannot grow the
/// coordinator's memory without bound).
pub const MAX_WORKERS: usize = 16_384;
/// Largest gRPC message accepted (a `ReportEpoch` carries the trial's checkpoint).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Longest a call may run on the server, body upload included; the worker's own limit is
/// 300 s, so this only frees what a client abandoned or a stuck call holds.
pub const SERVER_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything the service needs to know; [`ServiceConfig::new`] fills in defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub sweep_name: String,
    /// `results/<sweep>/` by default: `trials.parquet`, `epochs/`, `artifacts/`.
    pub results_dir: PathBuf,
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_attempts: u32,
    /// Write an epochs part file once this many rows are buffered ...
    pub flush_rows: usize,
    /// ... or this long after the last one (also the pace of `trials.parquet` rewrites).
    pub flush_interval: Duration,
    /// Largest artifact accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// On resume, queue the trials that failed before again.
    pub retry_failed: bool,
    /// issue 10: the coordinator's Fashion-MNIST, served to workers that have none
    /// (`FetchDataset`); `None`: it has none, and such workers are told so.
    pub dataset_dir: Option<PathBuf>,
    /// issue 13: never change a worker's thread count (`coordinator run --pin-threads`).
    pub pin_threads: bool,
}

impl ServiceConfig {
    pub fn new(sweep_name: impl Into<String>, results_dir: impl Into<PathBuf>) -> Self {
        ServiceConfig {
            sweep_name: sweep_name.into(),
            results_dir: results_dir.into(),
            lease_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_attempts: 3,
            flush_rows: 256,
            flush_interval: Duration::from_secs(5),
            max_artifact_bytes: 256 << 20,
            retry_failed: false,
            dataset_dir: None,
            pin_threads: false,
        }
    }
}
