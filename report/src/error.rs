//! The report's errors: each names the file it concerns and what was expected.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the results folder (its format is the `results-format` crate's).
    #[error(transparent)]
    Results(#[from] results_format::Error),
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: no finished trial with artifacts to report on ({reason})", dir.display())]
    NoEligibleTrial { dir: PathBuf, reason: String },
    #[error("drawing {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn plot(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Plot {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
