//! Getting committed state into the results folder's Parquet files (format: the `results-format`
//! crate). [`EpochWriter`] buffers epoch rows in sequence order and writes them as part
//! files; [`ResultsWriter`] is the task that drives it on the async runtime (its file I/O on
//! blocking threads) and rewrites `trials.parquet` at the flush interval.

mod epochs;
mod task;

pub use epochs::EpochWriter;
pub use task::ResultsWriter;
