//! Reading a sweep's results folder: `trials.parquet`, `epochs/*.parquet`, and a trial's
//! `predictions.safetensors` and `config.json`.
//!
//! Column types are read tolerantly: integers of any width, floats, timestamps and strings are
//! cast with arrow's `cast` kernel, so a writer choosing Int32 over Int64 breaks nothing.

use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One row of `trials.parquet`. Everything but the id and the status may be missing.
#[derive(Debug, Clone, PartialEq, Default)]
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
    pub status: String,
    pub attempts: Option<i64>,
    pub worker: Option<String>,
    pub device: Option<String>,
    /// Microseconds since the Unix epoch.
    pub started_at: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub finished_at: Option<i64>,
    pub best_epoch: Option<i64>,
    pub best_val_acc: Option<f64>,
    pub test_acc: Option<f64>,
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
        })
    }

    /// A short human label: the hyperparameters' label, else the id.
    pub fn label(&self) -> String {
        match self.hyperparams() {
            Some(h) => h.label(),
            None => self.arch.clone().unwrap_or_else(|| self.trial_id.clone()),
        }
    }
}

/// One epoch of one trial, from `epochs/*.parquet`. `val_*` are `None` without a validation split.
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
}

/// Every record batch of one parquet file.
fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
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
        let ids = c.strs("trial_id", true)?;
        let status = c.strs("status", true)?;
        let experiment = c.strs("experiment", false)?;
        let arch = c.strs("arch", false)?;
        let hidden = c.i64s("hidden", false)?;
        let dropout = c.f64s("dropout", false)?;
        let lr = c.f64s("lr", false)?;
        let epochs = c.i64s("epochs", false)?;
        let batch_size = c.i64s("batch_size", false)?;
        let momentum = c.f64s("momentum", false)?;
        let weight_decay = c.f64s("weight_decay", false)?;
        let validation = c.f64s("validation", false)?;
        let seed = c.i64s("seed", false)?;
        let attempts = c.i64s("attempts", false)?;
        let worker = c.strs("worker", false)?;
        let device = c.strs("device", false)?;
        let started_at = c.micros("started_at")?;
        let finished_at = c.micros("finished_at")?;
        let best_epoch = c.i64s("best_epoch", false)?;
        let best_val_acc = c.f64s("best_val_acc", false)?;
        let test_acc = c.f64s("test_acc", false)?;
        for i in 0..batch.num_rows() {
            let row = out.len();
            out.push(TrialRow {
                trial_id: required(path, "trial_id", row, ids[i].clone())?,
                status: required(path, "status", row, status[i].clone())?,
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
                best_epoch: best_epoch[i],
                best_val_acc: best_val_acc[i],
                test_acc: test_acc[i],
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
                let e = e.map_err(|e| Error::io(dir, e))?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && name.ends_with(".parquet") && e.path().is_file() {
                    files.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, e)),
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
            let ids = c.strs("trial_id", true)?;
            let epoch = c.i64s("epoch", true)?;
            let train_loss = c.f64s("train_loss", false)?;
            let train_acc = c.f64s("train_acc", false)?;
            let val_loss = c.f64s("val_loss", false)?;
            let val_acc = c.f64s("val_acc", false)?;
            let test_loss = c.f64s("test_loss", false)?;
            let test_acc = c.f64s("test_acc", false)?;
            let seconds = c.f64s("seconds", false)?;
            let recorded = c.micros("recorded_at")?;
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

/// A trial's test-set predictions: softmax probabilities and true labels, in test-set order.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// `n * 10` probabilities, row-major.
    pub probs: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.probs[i * crate::NUM_CLASSES..(i + 1) * crate::NUM_CLASSES]
    }
}

/// Reads `predictions.safetensors`: `probs` (F32 `[N, 10]`, rows summing to 1) and `labels`
/// (I64 `[N]`, values 0..=9; I32 and U8 are accepted too).
pub fn read_predictions(path: &Path) -> Result<Predictions> {
    use safetensors::{Dtype, SafeTensors};
    let k = crate::NUM_CLASSES;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(path, format!("not a safetensors file: {e}")))?;
    let probs_t = st
        .tensor("probs")
        .map_err(|_| Error::invalid(path, "missing tensor \"probs\" (F32 [N, 10])"))?;
    let labels_t = st
        .tensor("labels")
        .map_err(|_| Error::invalid(path, "missing tensor \"labels\" (I64 [N])"))?;
    if probs_t.dtype() != Dtype::F32 || probs_t.shape().len() != 2 || probs_t.shape()[1] != k {
        return Err(Error::invalid(
            path,
            format!(
                "tensor \"probs\" is {:?} {:?}, expected F32 [N, {k}]",
                probs_t.dtype(),
                probs_t.shape()
            ),
        ));
    }
    let n = probs_t.shape()[0];
    if labels_t.shape() != [n] {
        return Err(Error::invalid(
            path,
            format!(
                "tensor \"labels\" has shape {:?}, expected [{n}] like \"probs\"",
                labels_t.shape()
            ),
        ));
    }
    let probs: Vec<f32> = probs_t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let raw_labels: Vec<i64> = match labels_t.dtype() {
        Dtype::I64 => labels_t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => labels_t
            .data()
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect(),
        Dtype::U8 => labels_t.data().iter().map(|&b| i64::from(b)).collect(),
        other => {
            return Err(Error::invalid(
                path,
                format!("tensor \"labels\" is {other:?}, expected I64"),
            ))
        }
    };
    let mut labels = Vec::with_capacity(n);
    for (i, &l) in raw_labels.iter().enumerate() {
        if !(0..k as i64).contains(&l) {
            return Err(Error::invalid(
                path,
                format!("labels[{i}] = {l}, expected 0..={}", k - 1),
            ));
        }
        labels.push(l as usize);
    }
    for (i, row) in probs.chunks_exact(k).enumerate() {
        if row.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::invalid(
                path,
                format!("probs row {i} has a negative or non-finite value: expected softmax probabilities"),
            ));
        }
        let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(Error::invalid(
                path,
                format!("probs row {i} sums to {sum:.6}, expected 1 (softmax probabilities, not logits)"),
            ));
        }
    }
    Ok(Predictions { probs, labels })
}

/// The `hparams` of an artifact's `config.json` (other keys are ignored).
pub fn read_config(path: &Path) -> Result<proto::Hyperparams> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("not valid JSON: {e}")))?;
    let hp = value
        .get("hparams")
        .ok_or_else(|| Error::invalid(path, "missing key \"hparams\""))?;
    serde_json::from_value(hp.clone())
        .map_err(|e| Error::invalid(path, format!("key \"hparams\": {e}")))
}
