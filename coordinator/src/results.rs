//! Sweep results as Parquet files that DuckDB reads while the sweep runs.
//!
//! Under a results folder (`results/<sweep>/` by default):
//! - `trials.parquet`: one row per trial (hyperparameters, status, attempts, best epoch, ...),
//!   rewritten whole on every flush;
//! - `epochs/part-<first>-<last>.parquet`: the union of these files holds one row per trial and
//!   epoch, with the trial's hyperparameters beside the metrics so one glob answers most questions.
//!   `<first>` and `<last>` (12 digits) are the range of the rows' sequence numbers in the
//!   coordinator's state ([`crate::store`]); parts cover contiguous ranges, so after a crash the
//!   rows past the last part are written again and no row twice.
//!
//! Every file is written under a hidden temporary name in its final folder, fsynced, then
//! renamed into place: a reader never sees half a file and `*.parquet` never matches a temp file.
//! This module does blocking file I/O; async callers run it on a blocking thread.

use crate::scheduler::TrialRecord;
use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use proto::{EpochMetrics, Hyperparams, TrialId};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing parquet {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("building arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = ResultsError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ResultsError {
    let path = path.to_owned();
    move |source| ResultsError::Io {
        action,
        path,
        source,
    }
}

/// The file with one row per trial.
pub const TRIALS_FILE: &str = "trials.parquet";
/// The folder of epoch row files.
pub const EPOCHS_DIR: &str = "epochs";

/// One recorded epoch of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub trial_id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
    pub metrics: EpochMetrics,
    pub worker: String,
    pub device: String,
    pub recorded_at: DateTime<Utc>,
}

impl From<crate::scheduler::Recorded> for EpochRow {
    fn from(r: crate::scheduler::Recorded) -> Self {
        EpochRow {
            trial_id: r.trial_id,
            experiment: r.experiment,
            hparams: r.hparams,
            metrics: r.metrics,
            worker: r.worker_name,
            device: r.device,
            recorded_at: r.recorded_at,
        }
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn hparam_fields() -> Vec<Field> {
    vec![
        Field::new("experiment", DataType::Utf8, false),
        Field::new("arch", DataType::Utf8, false),
        Field::new("hidden", DataType::Int64, false),
        Field::new("dropout", DataType::Float64, false),
        Field::new("lr", DataType::Float64, false),
        Field::new("epochs", DataType::Int64, false),
        Field::new("batch_size", DataType::Int64, false),
        Field::new("momentum", DataType::Float64, false),
        Field::new("weight_decay", DataType::Float64, false),
        Field::new("validation", DataType::Float64, false),
        Field::new("seed", DataType::UInt64, false),
    ]
}

/// The schema of `trials.parquet`.
pub fn trials_schema() -> SchemaRef {
    let mut fields = vec![Field::new("trial_id", DataType::Utf8, false)];
    fields.extend(hparam_fields());
    fields.extend([
        Field::new("status", DataType::Utf8, false),
        Field::new("attempts", DataType::Int64, false),
        Field::new("worker", DataType::Utf8, true),
        Field::new("device", DataType::Utf8, true),
        Field::new("started_at", ts_type(), true),
        Field::new("finished_at", ts_type(), true),
        Field::new("epochs_done", DataType::Int64, false),
        Field::new("best_epoch", DataType::Int64, true),
        Field::new("best_val_acc", DataType::Float64, true),
        Field::new("best_by", DataType::Utf8, true),
        Field::new("test_acc", DataType::Float64, true),
        Field::new("error", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The schema of every `epochs/*.parquet` file.
pub fn epochs_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("trial_id", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("train_loss", DataType::Float64, false),
        Field::new("train_acc", DataType::Float64, false),
        Field::new("val_loss", DataType::Float64, true),
        Field::new("val_acc", DataType::Float64, true),
        Field::new("test_loss", DataType::Float64, false),
        Field::new("test_acc", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
        Field::new("worker", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("recorded_at", ts_type(), false),
    ];
    fields.extend(hparam_fields());
    Arc::new(Schema::new(fields))
}

/// Column builders for the hyperparameter columns shared by both files.
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

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// NaN (no validation split) becomes NULL.
fn nullable(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// The `trials.parquet` batch for `records`.
pub fn trials_batch(records: &[TrialRecord]) -> Result<RecordBatch> {
    let mut trial_id = StringBuilder::new();
    let mut hp = HparamColumns::new();
    let mut status = StringBuilder::new();
    let mut attempts = Int64Builder::new();
    let mut worker = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut started_at = ts_builder();
    let mut finished_at = ts_builder();
    let mut epochs_done = Int64Builder::new();
    let mut best_epoch = Int64Builder::new();
    let mut best_val_acc = Float64Builder::new();
    let mut best_by = StringBuilder::new();
    let mut test_acc = Float64Builder::new();
    let mut error = StringBuilder::new();
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
        best_epoch.append_option(r.best_epoch.map(i64::from));
        best_val_acc.append_option(r.best_val_acc.and_then(nullable));
        best_by.append_option(r.best_by.map(|b| b.as_str()));
        test_acc.append_option(r.test_acc.and_then(nullable));
        error.append_option(r.last_error.as_deref());
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
        Arc::new(best_val_acc.finish()),
        Arc::new(best_by.finish()),
        Arc::new(test_acc.finish()),
        Arc::new(error.finish()),
    ]);
    Ok(RecordBatch::try_new(trials_schema(), columns)?)
}

/// The `epochs/*.parquet` batch for `rows`.
pub fn epochs_batch(rows: &[EpochRow]) -> Result<RecordBatch> {
    let mut trial_id = StringBuilder::new();
    let mut epoch = Int64Builder::new();
    let mut train_loss = Float64Builder::new();
    let mut train_acc = Float64Builder::new();
    let mut val_loss = Float64Builder::new();
    let mut val_acc = Float64Builder::new();
    let mut test_loss = Float64Builder::new();
    let mut test_acc = Float64Builder::new();
    let mut seconds = Float64Builder::new();
    let mut worker = StringBuilder::new();
    let mut device = StringBuilder::new();
    let mut recorded_at = ts_builder();
    let mut hp = HparamColumns::new();
    for r in rows {
        let m = &r.metrics;
        trial_id.append_value(r.trial_id.as_str());
        epoch.append_value(i64::from(m.epoch));
        train_loss.append_value(m.train_loss);
        train_acc.append_value(m.train_acc);
        val_loss.append_option(nullable(m.val_loss));
        val_acc.append_option(nullable(m.val_acc));
        test_loss.append_value(m.test_loss);
        test_acc.append_value(m.test_acc);
        seconds.append_value(m.seconds);
        worker.append_value(&r.worker);
        device.append_value(&r.device);
        recorded_at.append_value(micros(r.recorded_at));
        hp.push(&r.experiment, &r.hparams);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trial_id.finish()),
        Arc::new(epoch.finish()),
        Arc::new(train_loss.finish()),
        Arc::new(train_acc.finish()),
        Arc::new(val_loss.finish()),
        Arc::new(val_acc.finish()),
        Arc::new(test_loss.finish()),
        Arc::new(test_acc.finish()),
        Arc::new(seconds.finish()),
        Arc::new(worker.finish()),
        Arc::new(device.finish()),
        Arc::new(recorded_at.finish()),
    ];
    columns.extend(hp.finish());
    Ok(RecordBatch::try_new(epochs_schema(), columns)?)
}

/// Writes `batch` to `dest` through a hidden temp file in the same folder: write, fsync, rename.
pub fn write_atomically(dest: &Path, batch: &RecordBatch) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let parquet_err = |source| ResultsError::Parquet {
            path: tmp.clone(),
            source,
        };
        let mut writer =
            ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(parquet_err)?;
        writer.write(batch).map_err(parquet_err)?;
        let mut file = writer.into_inner().map_err(parquet_err)?;
        file.flush().map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, dest).map_err(io_err("renaming into", dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable; not every platform can open a folder, so this is best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rewrites `<dir>/trials.parquet` from `records`.
pub fn write_trials(dir: &Path, records: &[TrialRecord]) -> Result<PathBuf> {
    let path = dir.join(TRIALS_FILE);
    write_atomically(&path, &trials_batch(records)?)?;
    Ok(path)
}

/// The sequence range of a part file's name, `part-<first>-<last>.parquet`.
pub fn part_range(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .split_once('-')?;
    if first.len() != 12 || last.len() != 12 {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// Buffers epoch rows and writes them in batches to `<dir>/epochs/part-<first>-<last>.parquet`.
///
/// Rows come with their sequence number in the coordinator's state and must be pushed in
/// sequence order. The caller drives time: it asks [`EpochWriter::should_flush`] and calls
/// [`EpochWriter::flush`]. A row already covered by a part file, or whose (trial, epoch) was
/// taken before, is dropped, so the files never hold a duplicate.
#[derive(Debug)]
pub struct EpochWriter {
    epochs_dir: PathBuf,
    flush_rows: usize,
    flush_interval: Duration,
    buffer: Vec<(u64, EpochRow)>,
    seen: HashSet<(TrialId, u32)>,
    /// Rows with a smaller sequence number are in part files already.
    next_seq: u64,
    last_flush: Instant,
    rows_written: u64,
}

impl EpochWriter {
    /// Creates `<dir>/epochs/` and finds the rows its part files already hold (see
    /// [`EpochWriter::next_seq`]); leftover temporary files of a crashed write are removed.
    pub fn create(
        dir: &Path,
        flush_rows: usize,
        flush_interval: Duration,
        now: Instant,
    ) -> Result<Self> {
        let epochs_dir = dir.join(EPOCHS_DIR);
        fs::create_dir_all(&epochs_dir).map_err(io_err("creating", &epochs_dir))?;
        let mut next_seq = 0;
        for entry in fs::read_dir(&epochs_dir).map_err(io_err("reading", &epochs_dir))? {
            let entry = entry.map_err(io_err("reading", &epochs_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            } else if let Some((_, last)) = part_range(name) {
                next_seq = next_seq.max(last + 1);
            }
        }
        Ok(EpochWriter {
            epochs_dir,
            flush_rows: flush_rows.max(1),
            flush_interval,
            buffer: Vec::new(),
            seen: HashSet::new(),
            next_seq,
            last_flush: now,
            rows_written: 0,
        })
    }

    /// The first sequence number no part file holds: rows from here on must be pushed again.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Buffers `row`; false (and nothing buffered) when a part file holds it already or this
    /// (trial, epoch) was taken before.
    pub fn push(&mut self, seq: u64, row: EpochRow) -> bool {
        let pending = self.buffer.last().map_or(self.next_seq, |(s, _)| s + 1);
        if seq < pending || !self.seen.insert((row.trial_id.clone(), row.metrics.epoch)) {
            return false;
        }
        self.buffer.push((seq, row));
        true
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Rows are waiting and either there are `flush_rows` of them or `flush_interval` passed
    /// since the last flush.
    pub fn should_flush(&self, now: Instant) -> bool {
        !self.buffer.is_empty()
            && (self.buffer.len() >= self.flush_rows
                || now.saturating_duration_since(self.last_flush) >= self.flush_interval)
    }

    /// Writes every buffered row to a new part file and returns its path (`None` when nothing
    /// was buffered). On error the rows stay buffered for the next try.
    pub fn flush(&mut self, now: Instant) -> Result<Option<PathBuf>> {
        self.last_flush = now;
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let first = self.buffer[0].0;
        let last = self.buffer[self.buffer.len() - 1].0;
        let path = self
            .epochs_dir
            .join(format!("part-{first:012}-{last:012}.parquet"));
        let rows: Vec<EpochRow> = self.buffer.iter().map(|(_, r)| r.clone()).collect();
        write_atomically(&path, &epochs_batch(&rows)?)?;
        self.next_seq = last + 1;
        self.rows_written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{
        LeaseOutcome, QueuedTrial, ReportOutcome, Scheduler, SchedulerConfig, WorkerInfo,
    };
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use proto::Arch;
    use std::collections::HashMap;

    fn hp(arch: Arch, hidden: u32, epochs: u32, validation: f64) -> Hyperparams {
        Hyperparams {
            arch,
            hidden,
            epochs,
            validation,
            ..Hyperparams::default()
        }
    }

    fn metrics(epoch: u32, val_acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0 / f64::from(epoch),
            train_acc: 0.5,
            val_loss: if val_acc.is_nan() { f64::NAN } else { 0.3 },
            val_acc,
            test_loss: 0.4,
            test_acc: 0.6,
            seconds: 2.0,
        }
    }

    /// Runs a small sweep through the scheduler and the writer: trial 0 (ffv0, validation) and
    /// trial 1 (cnn, no validation) finish, trial 2 stays queued. Flushes after every `per_flush` rows.
    fn run_sweep(dir: &Path, per_flush: usize) -> (Vec<TrialRecord>, usize) {
        let t0 = Instant::now();
        let trials = [
            hp(Arch::Ffv0, 32, 3, 0.1),
            hp(Arch::Cnn, 8, 2, 0.0),
            hp(Arch::Ffv1, 16, 2, 0.1),
        ];
        let mut s = Scheduler::new(
            trials
                .iter()
                .map(|h| QueuedTrial {
                    id: h.trial_id(),
                    experiment: "e".into(),
                    hparams: h.clone(),
                })
                .collect(),
            SchedulerConfig::default(),
            t0,
            Utc::now(),
        );
        let mut writer =
            EpochWriter::create(dir, per_flush, Duration::from_secs(3600), t0).unwrap();
        let w = s.register(
            WorkerInfo {
                name: "host:1".into(),
                device: "cpu".into(),
                slots: 1,
            },
            t0,
        );
        let mut files = 0;
        let mut seq = 0;
        for _ in 0..2 {
            let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
                panic!("expected a lease")
            };
            for epoch in 1..=l.hparams.epochs {
                let val = if l.hparams.validation > 0.0 {
                    0.7 + f64::from(epoch) / 100.0
                } else {
                    f64::NAN
                };
                // Every epoch reported twice: the repeat must not reach the files.
                for _ in 0..2 {
                    if let ReportOutcome::Accepted(r) = s
                        .report_epoch(&w, &l.trial_id, l.attempt, metrics(epoch, val), t0)
                        .unwrap()
                    {
                        assert!(writer.push(seq, (*r).into()));
                        seq += 1;
                    }
                }
                if writer.should_flush(t0) {
                    files += usize::from(writer.flush(t0).unwrap().is_some());
                    write_trials(dir, &s.records()).unwrap();
                }
            }
            s.finish(&w, &l.trial_id, l.attempt, t0).unwrap();
        }
        files += usize::from(writer.flush(t0).unwrap().is_some());
        assert!(
            writer.flush(t0).unwrap().is_none(),
            "an empty buffer writes no file"
        );
        write_trials(dir, &s.records()).unwrap();
        assert_eq!(writer.rows_written(), 5);
        (s.records(), files)
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        let file = File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    fn parquet_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn epoch_batches_read_back_typed_and_without_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, files) = run_sweep(tmp.path(), 2);
        let parts = parquet_files(&tmp.path().join(EPOCHS_DIR));
        assert_eq!(parts.len(), files);
        assert_eq!(files, 3, "5 rows in batches of 2");
        let mut keys = HashSet::new();
        let mut null_vals = 0;
        for part in &parts {
            let name = part.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("part-") && name.ends_with(".parquet"),
                "{name}"
            );
            for batch in read(part) {
                assert_eq!(batch.schema().fields(), epochs_schema().fields());
                let schema = batch.schema();
                let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
                assert_eq!(
                    ty("recorded_at"),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                );
                assert_eq!(ty("val_acc"), DataType::Float64);
                assert_eq!(ty("seed"), DataType::UInt64);
                let ids = batch
                    .column_by_name("trial_id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let epochs = batch
                    .column_by_name("epoch")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let val = batch
                    .column_by_name("val_acc")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap();
                null_vals += val.null_count();
                for i in 0..batch.num_rows() {
                    assert!(
                        keys.insert((ids.value(i).to_owned(), epochs.value(i))),
                        "duplicate row"
                    );
                }
            }
        }
        assert_eq!(keys.len(), 5);
        assert_eq!(null_vals, 2, "the cnn trial has no validation split");
        let leftovers: Vec<_> = parts
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn trials_file_has_one_typed_row_per_trial() {
        let tmp = tempfile::tempdir().unwrap();
        let (records, _) = run_sweep(tmp.path(), 100);
        assert_eq!(
            parquet_files(tmp.path())
                .iter()
                .filter(|p| p.is_file())
                .count(),
            1,
            "no temp file left"
        );
        let batches = read(&tmp.path().join(TRIALS_FILE));
        let batch = arrow::compute::concat_batches(&trials_schema(), &batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema().fields(), trials_schema().fields());
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let status = col("status");
        let status = status.as_any().downcast_ref::<StringArray>().unwrap();
        let statuses: Vec<&str> = (0..3).map(|i| status.value(i)).collect();
        assert_eq!(statuses, ["finished", "finished", "queued"]);
        let started = col("started_at");
        assert_eq!(started.null_count(), 1, "the queued trial never started");
        let best = col("best_epoch");
        let best = best.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(best.value(0), 3);
        assert_eq!(records[0].best_epoch, Some(3));
        let by = col("best_by");
        let by = by.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((by.value(0), by.value(1)), ("val_acc", "test_acc"));
        assert!(by.is_null(2));
    }

    #[test]
    fn should_flush_by_rows_or_time() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut w = EpochWriter::create(tmp.path(), 3, Duration::from_secs(10), t0).unwrap();
        let h = Hyperparams::default();
        let row = |epoch| EpochRow {
            trial_id: h.trial_id(),
            experiment: "e".into(),
            hparams: h.clone(),
            metrics: metrics(epoch, 0.5),
            worker: "w".into(),
            device: "cpu".into(),
            recorded_at: Utc::now(),
        };
        assert!(
            !w.should_flush(t0 + Duration::from_secs(60)),
            "nothing buffered"
        );
        assert!(w.push(0, row(1)));
        assert!(!w.push(1, row(1)), "a (trial, epoch) is taken once");
        assert!(!w.should_flush(t0 + Duration::from_secs(9)));
        assert!(w.should_flush(t0 + Duration::from_secs(10)));
        w.push(2, row(2));
        w.push(3, row(3));
        assert!(w.should_flush(t0));
        let first = w.flush(t0).unwrap().unwrap();
        assert_eq!(w.buffered(), 0);
        // A crashed write leaves a temp file: the next writer removes it.
        std::fs::write(tmp.path().join("epochs/.part-x.parquet.tmp"), b"half").unwrap();
        // A new writer on the same folder knows which rows the parts hold already.
        let mut w2 = EpochWriter::create(tmp.path(), 3, Duration::from_secs(10), t0).unwrap();
        assert_eq!(w2.next_seq(), 4);
        assert!(!tmp.path().join("epochs/.part-x.parquet.tmp").exists());
        assert!(!w2.push(3, row(3)), "row 3 is in a part already");
        assert!(w2.push(4, row(4)));
        let second = w2.flush(t0).unwrap().unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name(&first), "part-000000000000-000000000003.parquet");
        assert_eq!(name(&second), "part-000000000004-000000000004.parquet");
        assert_eq!(part_range(&name(&second)), Some((4, 4)));
        assert_eq!(part_range("part-000000-1700000000000.parquet"), None);
    }

    fn find_duckdb() -> Option<PathBuf> {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/venv/bin/duckdb");
        if local.is_file() {
            return Some(local);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("duckdb"))
            .find(|p| p.is_file())
    }

    fn duckdb(bin: &Path, sql: &str) -> String {
        let out = std::process::Command::new(bin)
            .args(["-csv", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "duckdb failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn duckdb_reads_the_results() {
        let Some(bin) = find_duckdb() else {
            println!("skipped: duckdb not found");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        run_sweep(tmp.path(), 2);
        let dir = tmp.path().display();
        let out = duckdb(
            &bin,
            &format!("SELECT arch, coalesce(CAST(max(val_acc) AS VARCHAR), 'null') AS best, count(*) AS n FROM '{dir}/epochs/*.parquet' GROUP BY arch ORDER BY arch"),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["arch,best,n", "cnn,null,2", "ffv0,0.73,3"], "{out}");
        let out = duckdb(
            &bin,
            &format!("DESCRIBE SELECT * FROM '{dir}/trials.parquet'"),
        );
        let types: HashMap<&str, &str> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split(',');
                Some((cols.next()?, cols.next()?))
            })
            .collect();
        assert_eq!(
            types.get("started_at"),
            Some(&"TIMESTAMP WITH TIME ZONE"),
            "{out}"
        );
        assert_eq!(types.get("best_val_acc"), Some(&"DOUBLE"), "{out}");
        assert_eq!(types.get("hidden"), Some(&"BIGINT"), "{out}");
        assert_eq!(types.get("seed"), Some(&"UBIGINT"), "{out}");
        assert_eq!(types.get("status"), Some(&"VARCHAR"), "{out}");
        let out = duckdb(&bin, &format!("SELECT count(*) FROM (SELECT DISTINCT trial_id, epoch FROM '{dir}/epochs/*.parquet')"));
        assert_eq!(out.lines().nth(1), Some("5"), "{out}");
    }
}
