//! The coordinator's records as Parquet files.
//!
//! Each file is written whole through [`stdx::fs::write_atomically_with`] (a hidden temporary
//! name in its final folder, fsync, rename): a reader never sees half a file and `*.parquet`
//! never matches one being written. Blocking I/O: async callers run it on a blocking thread.

use crate::best::{Best, EpochValues, Goal, Metric};
use crate::error::{Error, Result};
use crate::layout::ResultsDir;
use crate::schema;
use crate::status::TrialStatus;
use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use proto::{EpochMetrics, Hyperparams, TrialId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stdx::fs::WriteError;

/// One recorded epoch of one trial: a row of `epochs/*.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub trial_id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
    pub metrics: EpochMetrics,
    /// Name and device of the worker that trained it.
    pub worker: String,
    pub device: String,
    pub recorded_at: DateTime<Utc>,
    // issue 10: empty / `None` when the worker did not say (rows recorded before it).
    /// The device's model: `NVIDIA H200`, or the CPU's model name.
    pub device_name: String,
    /// The worker machine's host name.
    pub host: String,
    /// See [`schema::GPU_PEAK_MEMORY_BYTES`].
    pub gpu_peak_memory_bytes: Option<u64>,
    /// libtorch's intra-op threads while the epoch trained; `None`: the worker did not say.
    pub threads: Option<u32>,
}

/// Everything `trials.parquet` holds about one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub trial_id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
    pub status: TrialStatus,
    /// Leases handed out so far.
    pub attempts: u32,
    /// Worker name and device of the latest attempt.
    pub worker: Option<String>,
    pub device: Option<String>,
    /// When the latest attempt was leased.
    pub started_at: Option<DateTime<Utc>>,
    /// When the trial finished or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// The best epoch so far ([`crate::best`]).
    pub best: Option<Best>,
    /// Test accuracy after the final epoch.
    pub test_acc: Option<f64>,
    /// Epochs recorded so far.
    pub epochs_done: u32,
    pub last_error: Option<String>,
    /// issue 10: the build of the latest attempt's worker ([`schema::WORKER_BUILD`]).
    pub worker_build: Option<String>,
    // issue 12
    /// How the trial's experiment picks trials: `grid`, `random` or `tpe`.
    pub search: &'static str,
    /// What its best epoch is chosen on.
    pub goal: Goal,
    /// Set when a stopping rule ended the trial.
    pub stop: Option<StopRecord>,
}

/// Which rule stopped a trial, and at which epoch (the last it records; for a loss that came
/// out non-finite, the epoch that did, which is not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRecord {
    /// `asha`, `median` or `divergence`.
    pub rule: String,
    pub epoch: u32,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn timestamps() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// Column builders for the hyperparameter columns of both files.
struct HparamColumns {
    experiment: StringBuilder,
    arch: StringBuilder,
    hidden: Int64Builder,
    dropout: Float64Builder,
    lr: Float64Builder,
    epochs: Int64Builder,
    batch_size: Int64Builder,
    momentum: Float64Builder,
    weight_decay: Float64Builder,
    validation: Float64Builder,
    seed: UInt64Builder,
}

impl HparamColumns {
    fn new() -> Self {
        HparamColumns {
            experiment: StringBuilder::new(),
            arch: StringBuilder::new(),
            hidden: Int64Builder::new(),
            dropout: Float64Builder::new(),
            lr: Float64Builder::new(),
            epochs: Int64Builder::new(),
            batch_size: Int64Builder::new(),
            momentum: Float64Builder::new(),
            weight_decay: Float64Builder::new(),
            validation: Float64Builder::new(),
            seed: UInt64Builder::new(),
        }
    }

    fn push(&mut self, experiment: &str, h: &Hyperparams) {
        self.experiment.append_value(experiment);
        self.arch.append_value(h.arch.as_str());
        self.hidden.append_value(i64::from(h.hidden));
        self.dropout.append_value(h.dropout);
        self.lr.append_value(h.lr);
        self.epochs.append_value(i64::from(h.epochs));
        self.batch_size.append_value(i64::from(h.batch_size));
        self.momentum.append_value(h.momentum);
        self.weight_decay.append_value(h.weight_decay);
        self.validation.append_value(h.validation);
        self.seed.append_value(h.seed);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.experiment.finish()),
            Arc::new(self.arch.finish()),
            Arc::new(self.hidden.finish()),
            Arc::new(self.dropout.finish()),
            Arc::new(self.lr.finish()),
            Arc::new(self.epochs.finish()),
            Arc::new(self.batch_size.finish()),
            Arc::new(self.momentum.finish()),
            Arc::new(self.weight_decay.finish()),
            Arc::new(self.validation.finish()),
            Arc::new(self.seed.finish()),
        ]
    }
}

/// The `trials.parquet` batch for `records`.
pub fn trials_batch(
    records: &[TrialRecord],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut trial_id = StringBuilder::new();
    let mut hp = HparamColumns::new();
    let mut status = StringBuilder::new();
    let mut attempts = Int64Builder::new();
    let mut worker = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut started_at = timestamps();
    let mut finished_at = timestamps();
    let mut epochs_done = Int64Builder::new();
    let mut best_epoch = Int64Builder::new();
    let mut best_value = Float64Builder::new();
    let mut best_by = StringBuilder::new();
    let mut test_acc = Float64Builder::new();
    let mut error = StringBuilder::new();
    let mut worker_build = StringBuilder::new();
    let mut issue12 = SearchColumns::default();
    for r in records {
        trial_id.append_value(r.trial_id.as_str());
        hp.push(&r.experiment, &r.hparams);
        status.append_value(r.status.as_str());
        attempts.append_value(i64::from(r.attempts));
        worker.append_option(r.worker.as_deref());
        device.append_option(r.device.as_deref());
        started_at.append_option(r.started_at.map(micros));
        finished_at.append_option(r.finished_at.map(micros));
        epochs_done.append_value(i64::from(r.epochs_done));
        best_epoch.append_option(r.best.map(|b| i64::from(b.epoch)));
        // best_val_acc keeps its meaning: the best epoch's validation accuracy (or its test
        // twin) when that is what the trial is judged on.
        let on_acc = |b: &Best| matches!(b.metric, Metric::ValAcc | Metric::TestAcc);
        best_value.append_option(r.best.filter(on_acc).map(|b| b.value));
        best_by.append_option(r.best.map(|b| b.metric.as_str()));
        test_acc.append_option(r.test_acc.filter(|v| !v.is_nan()));
        error.append_option(r.last_error.as_deref());
        worker_build.append_option(r.worker_build.as_deref());
        issue12.push(r);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(trial_id.finish())];
    columns.extend(hp.finish());
    columns.extend([
        Arc::new(status.finish()) as ArrayRef,
        Arc::new(attempts.finish()),
        Arc::new(worker.finish()),
        Arc::new(device.finish()),
        Arc::new(started_at.finish()),
        Arc::new(finished_at.finish()),
        Arc::new(epochs_done.finish()),
        Arc::new(best_epoch.finish()),
        Arc::new(best_value.finish()),
        Arc::new(best_by.finish()),
        Arc::new(test_acc.finish()),
        Arc::new(error.finish()),
        Arc::new(worker_build.finish()),
    ]);
    columns.extend(issue12.finish());
    RecordBatch::try_new(schema::trials(), columns)
}

/// The issue-12 columns of `trials.parquet` (search, stopping, the experiment's metric).
#[derive(Default)]
struct SearchColumns {
    objective: StringBuilder,
    search: StringBuilder,
    metric: StringBuilder,
    mode: StringBuilder,
    best_metric: Float64Builder,
    stop_rule: StringBuilder,
    stop_epoch: Int64Builder,
}

impl SearchColumns {
    fn push(&mut self, r: &TrialRecord) {
        self.objective.append_value(r.hparams.objective.as_str());
        self.search.append_value(r.search);
        self.metric.append_value(r.goal.metric.as_str());
        self.mode.append_value(r.goal.mode.as_str());
        // The value of the experiment's own metric (not of a test-set fallback).
        let best = r.best.filter(|b| b.metric == r.goal.metric);
        self.best_metric.append_option(best.map(|b| b.value));
        self.stop_rule
            .append_option(r.stop.as_ref().map(|s| s.rule.as_str()));
        self.stop_epoch
            .append_option(r.stop.as_ref().map(|s| i64::from(s.epoch)));
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.objective.finish()),
            Arc::new(self.search.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.mode.finish()),
            Arc::new(self.best_metric.finish()),
            Arc::new(self.stop_rule.finish()),
            Arc::new(self.stop_epoch.finish()),
        ]
    }
}

/// The `epochs/*.parquet` batch for `records`.
pub fn epochs_batch(
    records: &[EpochRecord],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut trial_id = StringBuilder::new();
    let mut epoch = Int64Builder::new();
    let mut metrics: Vec<Float64Builder> = schema::METRICS
        .iter()
        .map(|_| Float64Builder::new())
        .collect();
    let mut seconds = Float64Builder::new();
    let mut worker = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut recorded_at = timestamps();
    let mut hp = HparamColumns::new();
    let mut device_name = StringBuilder::new();
    let mut host = StringBuilder::new();
    let mut gpu_memory = Int64Builder::new();
    let mut threads = Int64Builder::new();
    for r in records {
        trial_id.append_value(r.trial_id.as_str());
        epoch.append_value(i64::from(r.metrics.epoch));
        // NaN (no validation split) becomes NULL.
        for (column, m) in metrics.iter_mut().zip(schema::METRICS) {
            column.append_option(r.metrics.get(m));
        }
        seconds.append_value(r.metrics.seconds);
        worker.append_value(&r.worker);
        device.append_value(&r.device);
        recorded_at.append_value(micros(r.recorded_at));
        hp.push(&r.experiment, &r.hparams);
        device_name.append_option(Some(r.device_name.as_str()).filter(|s| !s.is_empty()));
        host.append_option(Some(r.host.as_str()).filter(|s| !s.is_empty()));
        gpu_memory.append_option(
            r.gpu_peak_memory_bytes
                .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        );
        threads.append_option(r.threads.map(i64::from));
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(trial_id.finish()), Arc::new(epoch.finish())];
    columns.extend(metrics.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
    columns.extend([
        Arc::new(seconds.finish()) as ArrayRef,
        Arc::new(worker.finish()),
        Arc::new(device.finish()),
        Arc::new(recorded_at.finish()),
    ]);
    columns.extend(hp.finish());
    columns.extend([
        Arc::new(device_name.finish()) as ArrayRef,
        Arc::new(host.finish()),
        Arc::new(gpu_memory.finish()),
    ]);
    columns.push(Arc::new(threads.finish()));
    RecordBatch::try_new(schema::epochs(), columns)
}

/// Writes `batch` as a zstd-compressed Parquet file at `dest`, atomically.
pub fn write_batch(dest: &Path, batch: &RecordBatch) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let encode = |file: &mut std::fs::File| -> std::result::Result<(), ParquetError> {
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        writer.write(batch)?;
        writer.close()?;
        Ok(())
    };
    stdx::fs::write_atomically_with(dest, encode).map_err(|e| match e {
        WriteError::Io(source) => Error::Io {
            action: "writing",
            path: dest.to_path_buf(),
            source,
        },
        WriteError::Write(source) => Error::Parquet {
            path: dest.to_path_buf(),
            source,
        },
    })
}

/// Rewrites `trials.parquet` of `dir` from `records`.
pub fn write_trials(dir: &ResultsDir, records: &[TrialRecord]) -> Result<PathBuf> {
    let path = dir.trials();
    let batch = trials_batch(records).map_err(|source| Error::Arrow {
        path: path.clone(),
        source,
    })?;
    write_batch(&path, &batch)?;
    Ok(path)
}

/// Writes `records` to the epochs part file of sequence numbers `first..=last`.
pub fn write_epoch_part(
    dir: &ResultsDir,
    first: u64,
    last: u64,
    records: &[EpochRecord],
) -> Result<PathBuf> {
    let path = dir.epoch_part(first, last);
    let batch = epochs_batch(records).map_err(|source| Error::Arrow {
        path: path.clone(),
        source,
    })?;
    write_batch(&path, &batch)?;
    Ok(path)
}
