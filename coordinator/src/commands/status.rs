//! `coordinator status RESULTS`: the trial table of a results folder, read from
//! `trials.parquet` through the results format's one reader (the file is rewritten whole on
//! every flush while a sweep runs, so this works on a live sweep as well as a finished one).

use anyhow::{bail, Context, Result};
use results_format::{ResultsDir, TrialRow, TrialStatus};
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

/// `coordinator status RESULTS`: prints the table.
pub fn status(results: &Path) -> Result<ExitCode> {
    let rows = read(&ResultsDir::new(results))?;
    print!("{}", render(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Reads `<results>/trials.parquet`.
pub fn read(results: &ResultsDir) -> Result<Vec<TrialRow>> {
    let path = results.trials();
    if !path.exists() {
        bail!(
            "{} not found: is {} a results folder of `coordinator run`?",
            path.display(),
            results.path().display()
        );
    }
    results_format::read::read_trials(&path).with_context(|| format!("reading {}", path.display()))
}

/// The table `coordinator status` prints: one line per trial in the file's (sweep) order,
/// its error below it if it has one, then the count by status.
pub fn render(rows: &[TrialRow]) -> String {
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
    let acc = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let int = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{:<18} {:<10} {:<5} {:>6} {:>7} {:>7} {:<9} {:>8} {:>4} {:>9} {:>8} {:>8}  {}",
            r.trial_id,
            text(&r.experiment),
            text(&r.arch),
            int(r.hidden),
            num(r.dropout),
            num(r.lr),
            r.status,
            format!("{}/{}", int(r.epochs_done), int(r.epochs)),
            int(r.attempts),
            int(r.best_epoch),
            acc(r.best_val_acc),
            acc(r.test_acc),
            r.worker.as_deref().unwrap_or("-"),
        );
        if let (Some(rule), Some(epoch)) = (&r.stop_rule, r.stop_epoch) {
            let _ = writeln!(out, "{:<18} stopped at epoch {epoch} by {rule}", "");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:<18} error: {e}", "");
        }
    }
    let count = |s: TrialStatus| rows.iter().filter(|r| r.status == s).count();
    // `stopped` only when a stopping rule ended some trial: the line stays what it was for
    // sweeps without stop rules.
    let stopped = match count(TrialStatus::Stopped) {
        0 => String::new(),
        n => format!("{n} stopped, "),
    };
    let _ = writeln!(
        out,
        "{} trials: {} finished, {stopped}{} running, {} queued, {} failed",
        rows.len(),
        count(TrialStatus::Finished),
        count(TrialStatus::Running),
        count(TrialStatus::Queued),
        count(TrialStatus::Failed)
    );
    out
}
