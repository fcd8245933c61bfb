//! hypersweep's worker: trains trials of the reference notebook's networks with `tch`.
//!
//! This is the only crate that links libtorch. [`data`] turns the Fashion-MNIST bytes of the
//! `dataset` crate into tensors and carves the validation split; [`model`] holds the five
//! networks; [`train`] runs one trial and reports each epoch through an [`train::EpochSink`];
//! [`join`] is the gRPC client loop that leases trials from a coordinator and streams their
//! epochs and artifacts back, one trial at a time; [`slots`] runs `--slots N` as N such
//! processes; [`cli`] is the command line of the thin `main.rs`; [`build_info`] says which build
//! this is (version, cpu or cuda, libtorch and CUDA versions).

pub mod build_info;
pub mod cli;
pub mod connect;
pub mod data;
pub mod device;
pub mod join;
pub mod model;
pub mod slots;
pub mod train;

use std::path::{Path, PathBuf};

/// The libtorch version tch 0.24.0 is built for.
pub const LIBTORCH_VERSION: &str = "2.11.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Data(#[from] dataset::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("training diverged: loss is {loss} at epoch {epoch}")]
    Diverged { epoch: u32, loss: f64 },
    /// A checkpoint that cannot resume this trial: unreadable, truncated, of another trial or
    /// data subset, or missing a tensor.
    #[error("cannot resume from this checkpoint: {0}")]
    Checkpoint(String),
    #[error("trial abandoned: {0}")]
    Abandoned(String),
    #[error("coordinator: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("cannot reach the coordinator: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether another attempt (on another worker) could succeed: a diverged trial will
    /// diverge again; an I/O or libtorch error may be this machine's. A bad checkpoint is
    /// bad on every worker, so another attempt with it fails the same way: whoever restores
    /// should drop the checkpoint and train the trial from scratch rather than fail it.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Error::Diverged { .. } | Error::InvalidArgument(_) | Error::Checkpoint(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
