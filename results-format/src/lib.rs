//! The results folder's format, owned in one place: what `coordinator run` writes and what
//! `coordinator status`, the report and DuckDB read.
//!
//! - [`layout`] names every file and folder under `results/<sweep>/`.
//! - [`schema`] names every Parquet column and builds the two schemas.
//! - [`write`] turns the coordinator's records ([`TrialRecord`], [`EpochRecord`]) into
//!   Parquet files, each written whole and renamed into place.
//! - [`read`] reads them back into rows ([`TrialRow`], [`EpochRow`]), tolerant of integer
//!   widths and of columns a row does not need.
//! - [`artifacts`] reads a trial's uploaded `config.json` and `predictions.safetensors`.
//! - [`best`] is the one rule that picks a trial's best epoch, used live by the coordinator's
//!   scheduler and afterwards by the report.
//! - [`TrialStatus`] is the value of the `status` column.
//!
//! Naming by layer: a `*Record` is what the coordinator knows and writes, a `*Row` is what a
//! reader gets back from a file.

pub mod artifacts;
pub mod best;
mod error;
pub mod layout;
pub mod read;
pub mod schema;
mod status;
pub mod write;

pub use best::{Best, Goal, Metric, Mode};
pub use error::{Error, Result};
pub use layout::ResultsDir;
pub use read::{EpochRow, TrialRow};
pub use status::TrialStatus;
pub use write::{EpochRecord, StopRecord, TrialRecord};
