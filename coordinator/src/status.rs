//! `coordinator status RESULTS`: the trial table of a results folder, read from
//! `trials.parquet` (rewritten whole on every flush while a sweep runs, so this works on a
//! live sweep as well as a finished one).

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::fmt::Write;
use std::path::Path;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub trial_id: String,
    pub experiment: String,
    pub arch: String,
    pub hidden: i64,
    pub dropout: f64,
    pub lr: f64,
    pub epochs: i64,
    pub status: String,
    pub attempts: i64,
    pub epochs_done: i64,
    pub best_epoch: Option<i64>,
    pub best_val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub worker: Option<String>,
    pub error: Option<String>,
}

/// Reads `<results>/trials.parquet`.
pub fn read(results: &Path) -> Result<Vec<StatusRow>> {
    let path = results.join(crate::results::TRIALS_FILE);
    if !path.exists() {
        bail!(
            "{} not found: is {} a results folder of `coordinator run`?",
            path.display(),
            results.display()
        );
    }
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("{}: no column {name:?}", path.display()))
        };
        let strs = |name: &str| -> Result<Vec<Option<String>>> {
            let c = cast(col(name)?, &DataType::Utf8)?;
            let a = c.as_string::<i32>();
            Ok((0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
                .collect())
        };
        let ints = |name: &str| -> Result<Vec<Option<i64>>> {
            let c = cast(col(name)?, &DataType::Int64)?;
            let a = c.as_primitive::<Int64Type>();
            Ok((0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect())
        };
        let floats = |name: &str| -> Result<Vec<Option<f64>>> {
            let c = cast(col(name)?, &DataType::Float64)?;
            let a = c.as_primitive::<Float64Type>();
            Ok((0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect())
        };
        let (id, exp, arch, status, worker, error) = (
            strs("trial_id")?,
            strs("experiment")?,
            strs("arch")?,
            strs("status")?,
            strs("worker")?,
            strs("error")?,
        );
        let (hidden, epochs, attempts, done, best_epoch) = (
            ints("hidden")?,
            ints("epochs")?,
            ints("attempts")?,
            ints("epochs_done")?,
            ints("best_epoch")?,
        );
        let (dropout, lr, best, test) = (
            floats("dropout")?,
            floats("lr")?,
            floats("best_val_acc")?,
            floats("test_acc")?,
        );
        for i in 0..batch.num_rows() {
            rows.push(StatusRow {
                trial_id: id[i].clone().unwrap_or_default(),
                experiment: exp[i].clone().unwrap_or_default(),
                arch: arch[i].clone().unwrap_or_default(),
                hidden: hidden[i].unwrap_or_default(),
                dropout: dropout[i].unwrap_or_default(),
                lr: lr[i].unwrap_or_default(),
                epochs: epochs[i].unwrap_or_default(),
                status: status[i].clone().unwrap_or_default(),
                attempts: attempts[i].unwrap_or_default(),
                epochs_done: done[i].unwrap_or_default(),
                best_epoch: best_epoch[i],
                best_val_acc: best[i],
                test_acc: test[i],
                worker: worker[i].clone(),
                error: error[i].clone(),
            });
        }
    }
    Ok(rows)
}

/// The table `coordinator status` prints, best validation accuracy first within each status.
pub fn render(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<10} {:<5} {:>6} {:>7} {:>7} {:<9} {:>8} {:>4} {:>9} {:>8} {:>8}  worker",
        "trial",
        "experiment",
        "arch",
        "hidden",
        "dropout",
        "lr",
        "status",
        "epochs",
        "try",
        "best_ep",
        "best_val",
        "test"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for r in rows {
        let _ = writeln!(
            out,
            "{:<18} {:<10} {:<5} {:>6} {:>7} {:>7} {:<9} {:>8} {:>4} {:>9} {:>8} {:>8}  {}",
            r.trial_id,
            r.experiment,
            r.arch,
            r.hidden,
            r.dropout,
            r.lr,
            r.status,
            format!("{}/{}", r.epochs_done, r.epochs),
            r.attempts,
            r.best_epoch.map_or("-".to_owned(), |e| e.to_string()),
            opt(r.best_val_acc),
            opt(r.test_acc),
            r.worker.as_deref().unwrap_or("-"),
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:<18} error: {e}", "");
        }
    }
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "{} trials: {} finished, {} running, {} queued, {} failed",
        rows.len(),
        count("finished"),
        count("running"),
        count("queued"),
        count("failed")
    );
    out
}
