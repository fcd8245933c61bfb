//! Reading a results folder's Parquet files back: `trials.parquet` into [`TrialRow`]s,
//! `epochs/*.parquet` into [`EpochRow`]s per trial.
//!
//! Tolerant by design, for files written by other versions or by hand: integers of any width,
//! floats, timestamps and strings are cast with arrow's `cast` kernel (a writer choosing
//! Int32 over Int64 breaks nothing), and only the columns a row cannot do without are
//! required. Errors name the file, the row and the column.

use crate::best::{EpochValues, Goal, Metric, Mode};
use crate::error::{Error, Result};
use crate::layout;
use crate::schema as col;
use crate::status::TrialStatus;
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One row of `trials.parquet`. Everything but the id and the status may be missing.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub trial_id: String,
    pub experiment: Option<String>,
    pub arch: Option<String>,
    pub hidden: Option<i64>,
    pub dropout: Option<f64>,
    pub lr: Option<f64>,
    pub epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub validation: Option<f64>,
    pub seed: Option<i64>,
    pub status: TrialStatus,
    pub attempts: Option<i64>,
    pub worker: Option<String>,
    pub device: Option<String>,
    /// Microseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub finished_at: Option<i64>,
    pub epochs_done: Option<i64>,
    pub best_epoch: Option<i64>,
    /// See [`col::BEST_VAL_ACC`].
    pub best_val_acc: Option<f64>,
    pub best_by: Option<String>,
    /// Test accuracy after the final epoch.
    pub test_acc: Option<f64>,
    pub error: Option<String>,
    /// issue 10: see [`col::WORKER_BUILD`].
    pub worker_build: Option<String>,
    // issue 12 (absent from files written before it: `None`)
    pub objective: Option<String>,
    pub search: Option<String>,
    pub metric: Option<String>,
    pub mode: Option<String>,
    pub best_metric: Option<f64>,
    pub stop_rule: Option<String>,
    pub stop_epoch: Option<i64>,
}

impl TrialRow {
    /// The hyperparameters, when every column needed to rebuild them is present.
    pub fn hyperparams(&self) -> Option<proto::Hyperparams> {
        Some(proto::Hyperparams {
            arch: self.arch.as_deref()?.parse().ok()?,
            hidden: u32::try_from(self.hidden?).ok()?,
            dropout: self.dropout?,
            lr: self.lr?,
            epochs: u32::try_from(self.epochs?).ok()?,
            batch_size: u32::try_from(self.batch_size?).ok()?,
            momentum: self.momentum?,
            weight_decay: self.weight_decay?,
            validation: self.validation?,
            seed: u64::try_from(self.seed?).ok()?,
            objective: match self.objective.as_deref() {
                None => proto::Objective::Train,
                Some(o) => o.parse().ok()?,
            },
        })
    }

    /// What the trial's best epoch is chosen on: its experiment's metric and mode, validation
    /// accuracy (max) for a file written before experiments had one.
    pub fn goal(&self) -> Goal {
        let metric = self
            .metric
            .as_deref()
            .and_then(|m| m.parse::<Metric>().ok());
        let Some(metric) = metric else {
            return Goal::default();
        };
        let mode = match self.mode.as_deref() {
            Some("max") => Mode::Max,
            Some("min") => Mode::Min,
            _ => metric.natural_mode(),
        };
        Goal::new(metric, mode)
    }

    /// A short human label: the hyperparameters' label, else the id.
    pub fn label(&self) -> String {
        match self.hyperparams() {
            Some(h) => h.label(),
            None => self.arch.clone().unwrap_or_else(|| self.trial_id.clone()),
        }
    }
}

/// One epoch of one trial, from `epochs/*.parquet`: the metric columns (`val_*` are `None`
/// without a validation split); [`read_epochs`] groups them by trial.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochRow {
    pub epoch: i64,
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    pub seconds: Option<f64>,
    /// libtorch's intra-op threads while the epoch trained (issue 13; `None` in older files).
    pub threads: Option<i64>,
}

impl EpochValues for EpochRow {
    fn epoch(&self) -> u32 {
        u32::try_from(self.epoch).unwrap_or(0)
    }

    fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::TrainLoss => self.train_loss,
            Metric::TrainAcc => self.train_acc,
            Metric::ValLoss => self.val_loss,
            Metric::ValAcc => self.val_acc,
            Metric::TestLoss => self.test_loss,
            Metric::TestAcc => self.test_acc,
        }
    }
}

/// Every record batch of one parquet file.
fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(Error::io("reading", path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|source| Error::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Arrow {
            path: path.to_path_buf(),
            source,
        })
}

/// Typed access to a batch's columns by name, with the file name in every error.
struct Columns<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn column(&self, name: &str, to: &DataType, required: bool) -> Result<Option<ArrayRef>> {
        let Some(col) = self.batch.column_by_name(name) else {
            return if required {
                Err(Error::invalid(
                    self.path,
                    format!("missing column {name:?}"),
                ))
            } else {
                Ok(None)
            };
        };
        let from = col.data_type().clone();
        let casted = cast(col, to).map_err(|e| {
            Error::invalid(
                self.path,
                format!("column {name:?} has type {from}, expected {to}: {e}"),
            )
        })?;
        Ok(Some(casted))
    }

    fn i64s(&self, name: &str, required: bool) -> Result<Vec<Option<i64>>> {
        Ok(match self.column(name, &DataType::Int64, required)? {
            Some(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("cast to Int64");
                a.iter().collect()
            }
            None => vec![None; self.batch.num_rows()],
        })
    }

    fn f64s(&self, name: &str, required: bool) -> Result<Vec<Option<f64>>> {
        Ok(match self.column(name, &DataType::Float64, required)? {
            Some(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("cast to Float64");
                a.iter().map(|v| v.filter(|x| !x.is_nan())).collect()
            }
            None => vec![None; self.batch.num_rows()],
        })
    }

    fn strs(&self, name: &str, required: bool) -> Result<Vec<Option<String>>> {
        Ok(match self.column(name, &DataType::Utf8, required)? {
            Some(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                a.iter().map(|v| v.map(str::to_owned)).collect()
            }
            None => vec![None; self.batch.num_rows()],
        })
    }

    /// Timestamps (any unit) as microseconds since the epoch; integers are taken as microseconds.
    fn micros(&self, name: &str) -> Result<Vec<Option<i64>>> {
        let Some(col) = self.batch.column_by_name(name) else {
            return Ok(vec![None; self.batch.num_rows()]);
        };
        let scale = match col.data_type() {
            DataType::Timestamp(unit, _) => {
                use arrow::datatypes::TimeUnit::*;
                match unit {
                    Second => 1_000_000.0,
                    Millisecond => 1_000.0,
                    Microsecond => 1.0,
                    Nanosecond => 0.001,
                }
            }
            _ => 1.0,
        };
        let raw = self.i64s(name, false)?;
        Ok(raw
            .into_iter()
            .map(|v| v.map(|x| (x as f64 * scale) as i64))
            .collect())
    }
}

fn required<T>(path: &Path, name: &str, row: usize, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::invalid(path, format!("row {row}: column {name:?} is null")))
}

/// Reads `trials.parquet`.
pub fn read_trials(path: &Path) -> Result<Vec<TrialRow>> {
    let mut out = Vec::new();
    for batch in read_batches(path)? {
        let c = Columns {
            path,
            batch: &batch,
        };
        let ids = c.strs(col::TRIAL_ID, true)?;
        let status = c.strs(col::STATUS, true)?;
        let experiment = c.strs(col::EXPERIMENT, false)?;
        let arch = c.strs(col::ARCH, false)?;
        let hidden = c.i64s(col::HIDDEN, false)?;
        let dropout = c.f64s(col::DROPOUT, false)?;
        let lr = c.f64s(col::LR, false)?;
        let epochs = c.i64s(col::EPOCHS, false)?;
        let batch_size = c.i64s(col::BATCH_SIZE, false)?;
        let momentum = c.f64s(col::MOMENTUM, false)?;
        let weight_decay = c.f64s(col::WEIGHT_DECAY, false)?;
        let validation = c.f64s(col::VALIDATION, false)?;
        let seed = c.i64s(col::SEED, false)?;
        let attempts = c.i64s(col::ATTEMPTS, false)?;
        let worker = c.strs(col::WORKER, false)?;
        let device = c.strs(col::DEVICE, false)?;
        let started_at = c.micros(col::STARTED_AT)?;
        let finished_at = c.micros(col::FINISHED_AT)?;
        let epochs_done = c.i64s(col::EPOCHS_DONE, false)?;
        let best_epoch = c.i64s(col::BEST_EPOCH, false)?;
        let best_val_acc = c.f64s(col::BEST_VAL_ACC, false)?;
        let best_by = c.strs(col::BEST_BY, false)?;
        let test_acc = c.f64s(col::TEST_ACC, false)?;
        let error = c.strs(col::ERROR, false)?;
        let worker_build = c.strs(col::WORKER_BUILD, false)?;
        let objective = c.strs(col::OBJECTIVE, false)?;
        let search = c.strs(col::SEARCH, false)?;
        let metric = c.strs(col::METRIC, false)?;
        let mode = c.strs(col::MODE, false)?;
        let best_metric = c.f64s(col::BEST_METRIC, false)?;
        let stop_rule = c.strs(col::STOP_RULE, false)?;
        let stop_epoch = c.i64s(col::STOP_EPOCH, false)?;
        for i in 0..batch.num_rows() {
            let row = out.len();
            out.push(TrialRow {
                trial_id: required(path, col::TRIAL_ID, row, ids[i].clone())?,
                status: required(path, col::STATUS, row, status[i].as_deref())?
                    .parse()
                    .map_err(|e| Error::invalid(path, format!("row {row}: {e}")))?,
                experiment: experiment[i].clone(),
                arch: arch[i].clone(),
                hidden: hidden[i],
                dropout: dropout[i],
                lr: lr[i],
                epochs: epochs[i],
                batch_size: batch_size[i],
                momentum: momentum[i],
                weight_decay: weight_decay[i],
                validation: validation[i],
                seed: seed[i],
                attempts: attempts[i],
                worker: worker[i].clone(),
                device: device[i].clone(),
                started_at: started_at[i],
                finished_at: finished_at[i],
                epochs_done: epochs_done[i],
                best_epoch: best_epoch[i],
                best_val_acc: best_val_acc[i],
                best_by: best_by[i].clone(),
                test_acc: test_acc[i],
                error: error[i].clone(),
                worker_build: worker_build[i].clone(),
                objective: objective[i].clone(),
                search: search[i].clone(),
                metric: metric[i].clone(),
                mode: mode[i].clone(),
                best_metric: best_metric[i],
                stop_rule: stop_rule[i].clone(),
                stop_epoch: stop_epoch[i],
            });
        }
    }
    Ok(out)
}

/// Reads every `epochs/*.parquet` (names starting with `.` are skipped: files being written).
/// Returns each trial's epochs sorted by epoch; when an epoch appears twice (a retried trial),
/// the row recorded last wins. A missing `epochs/` folder means no epochs yet.
pub fn read_epochs(dir: &Path) -> Result<BTreeMap<String, Vec<EpochRow>>> {
    let mut files: Vec<PathBuf> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(Error::io("reading", dir))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if layout::is_epochs_file(&name) && e.path().is_file() {
                    files.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", dir)(e)),
    }
    files.sort();
    // (trial, epoch) -> (recorded_at, sequence, row)
    let mut rows: BTreeMap<(String, i64), (Option<i64>, usize, EpochRow)> = BTreeMap::new();
    let mut seq = 0usize;
    for path in &files {
        for batch in read_batches(path)? {
            let c = Columns {
                path,
                batch: &batch,
            };
            let ids = c.strs(col::TRIAL_ID, true)?;
            let epoch = c.i64s(col::EPOCH, true)?;
            let train_loss = c.f64s("train_loss", false)?;
            let train_acc = c.f64s("train_acc", false)?;
            let val_loss = c.f64s("val_loss", false)?;
            let val_acc = c.f64s("val_acc", false)?;
            let test_loss = c.f64s("test_loss", false)?;
            let test_acc = c.f64s(col::TEST_ACC, false)?;
            let seconds = c.f64s(col::SECONDS, false)?;
            let threads = c.i64s(col::THREADS, false)?;
            let recorded = c.micros(col::RECORDED_AT)?;
            for i in 0..batch.num_rows() {
                let (Some(id), Some(ep)) = (ids[i].clone(), epoch[i]) else {
                    return Err(Error::invalid(
                        path,
                        format!("row {i}: trial_id and epoch must not be null"),
                    ));
                };
                let row = EpochRow {
                    epoch: ep,
                    train_loss: train_loss[i],
                    train_acc: train_acc[i],
                    val_loss: val_loss[i],
                    val_acc: val_acc[i],
                    test_loss: test_loss[i],
                    test_acc: test_acc[i],
                    seconds: seconds[i],
                    threads: threads[i],
                };
                seq += 1;
                let key = (id, ep);
                let newer = match rows.get(&key) {
                    Some((prev, _, _)) => recorded[i] >= *prev,
                    None => true,
                };
                if newer {
                    rows.insert(key, (recorded[i], seq, row));
                }
            }
        }
    }
    let mut out: BTreeMap<String, Vec<EpochRow>> = BTreeMap::new();
    for ((id, _), (_, _, row)) in rows {
        out.entry(id).or_default().push(row);
    }
    Ok(out)
}
