//! hypersweep's worker: trains trials of the reference notebook's networks with `tch`.
//!
//! This is the only crate that links libtorch. [`data`] turns the Fashion-MNIST bytes of the
//! `dataset` crate into tensors and carves the validation split; [`model`] holds the five
//! networks, whose dropout draws from each trial's own [`masks`]; [`train`] runs one trial and
//! reports each epoch through an [`train::EpochSink`], stepping with the hand-written [`sgd`]
//! and saving its state as a [`checkpoint`], keeping its [`best`] epoch's weights for the
//! artifacts; [`fused`] trains several same-shape trials as one stacked model (issue 13);
//! [`join`] is the loop that leases trials from a coordinator and streams their epochs and
//! artifacts back, one trial ([`join_trial`]) or one fused group ([`join_group`]) at a time,
//! each following the coordinator's thread plan [`between_epochs`], through
//! [`client`] (retries, registering again, what a failed call means) over the channel
//! [`connect`] opens; [`slots`] runs `--slots N` as N such
//! processes; [`cli`] is the command line of the thin `main.rs`; [`build_info`] says which build
//! this is (version, cpu or cuda, libtorch and CUDA versions). [`fetch`] finds Fashion-MNIST
//! or fetches it from the coordinator into the cache; [`device`] places each slot on its
//! device, and [`gpu`] names the device and reads its memory (NVML); [`malloc`] and [`mkl`] set up
//! glibc's allocator and MKL's kernels for training.

pub mod best;
pub mod between_epochs;
pub mod build_info;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod connect;
pub mod data;
pub mod device;
pub mod fetch;
pub mod fused;
pub mod gpu;
pub mod join;
pub mod join_group;
pub mod join_trial;
pub mod malloc;
pub mod masks;
pub mod mkl;
pub mod model;
pub mod sgd;
pub mod slots;
pub mod synthetic;
pub mod train;

use std::path::{Path, PathBuf};

/// The libtorch version tch 0.24.0 is built for.
pub const LIBTORCH_VERSION: &str = "2.11.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, an environment variable or a file the user gave is not what it must be.
    #[error("{0}")]
    InvalidArgument(String),
    /// The coordinator refused this worker: a wrong or missing token, or a plaintext
    /// connection it closed. Retrying cannot help; the message says what to check.
    #[error("{0}")]
    Refused(String),
    /// TLS with the coordinator cannot work as set up: a certificate that does not verify, a
    /// client certificate the coordinator refuses, PEM files TLS cannot use.
    #[error("{0}")]
    Tls(String),
    /// A slot process of `worker join --slots N` could not be started or failed.
    #[error("{0}")]
    Slot(String),
    #[error(transparent)]
    Data(#[from] dataset::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A loss (`which`: train_loss, val_loss or test_loss) came out NaN or infinite.
    #[error("training diverged: {which} is {loss} at epoch {epoch}")]
    Diverged {
        epoch: u32,
        which: &'static str,
        loss: f64,
    },
    /// A stopping rule ended the trial (issue 12): its artifacts are written, then it ends
    /// as `stopped`.
    #[error("stopped: {0}")]
    Stopped(String),
    /// A checkpoint that cannot resume this trial: unreadable, truncated, of another trial or
    /// data subset, or missing a tensor.
    #[error("cannot resume from this checkpoint: {0}")]
    Checkpoint(String),
    #[error("trial abandoned: {0}")]
    Abandoned(String),
    /// The training thread panicked (a libtorch error that tch turns into a panic, a bug):
    /// the message is the panic's.
    #[error("training panicked: {0}")]
    Panicked(String),
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
    /// A refused token or a TLS set-up that cannot work fails the same way on every try; a
    /// panic or a dead slot process may be this machine's.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Error::Diverged { .. }
                | Error::Stopped(_)
                | Error::InvalidArgument(_)
                | Error::Checkpoint(_)
                | Error::Refused(_)
                | Error::Tls(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_retrying_cannot_fix_is_not_retryable() {
        for e in [
            Error::InvalidArgument("--device \"tpu\"".into()),
            Error::Refused("the coordinator refused this worker".into()),
            Error::Tls("TLS with the coordinator failed".into()),
            Error::Checkpoint("truncated".into()),
            Error::Diverged {
                epoch: 1,
                which: "train_loss",
                loss: f64::NAN,
            },
        ] {
            assert!(!e.is_retryable(), "{e:?}");
        }
        for e in [
            Error::Slot("1 of 2 slot processes failed".into()),
            Error::Panicked("index 7 is out of bounds".into()),
            Error::io(Path::new("/tmp/x"), std::io::Error::other("disk full")),
        ] {
            assert!(e.is_retryable(), "{e:?}");
        }
        // The variants say nothing of their own: the messages stay what they were.
        assert_eq!(Error::Tls("TLS: x".into()).to_string(), "TLS: x");
    }
}
