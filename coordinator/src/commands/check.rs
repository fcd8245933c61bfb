//! `coordinator check SWEEP`: validate a sweep file and print its trial table, running nothing.

use crate::cli::CheckArgs;
use crate::sweep::{self, Sweep};
use anyhow::Result;
use proto::trial::canon_f64;
use std::fmt::Write as _;
use std::process::ExitCode;

/// `coordinator check`: validate and print the trial table (or, with `--quiet`, one line).
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let sweep = sweep::load(&args.sweep, &args.overrides.to_overrides())?;
    if args.quiet {
        println!(
            "{}: {} trials, {} epochs, {} duplicates dropped",
            sweep.name,
            sweep.trials.len(),
            sweep.total_epochs(),
            sweep.duplicates_dropped
        );
    } else {
        print!("{}", render_table(&sweep));
    }
    Ok(ExitCode::SUCCESS)
}

/// The trial table `coordinator check` prints, then a summary line
/// `N trials, M epochs, K duplicates dropped`.
pub fn render_table(sweep: &Sweep) -> String {
    const HEADERS: [&str; 12] = [
        "id",
        "experiment",
        "arch",
        "hidden",
        "dropout",
        "lr",
        "epochs",
        "batch",
        "momentum",
        "wd",
        "val",
        "seed",
    ];
    // Text columns are left-aligned, numbers right-aligned.
    const LEFT: usize = 3;
    let mut cells: Vec<String> = Vec::with_capacity((sweep.trials.len() + 1) * HEADERS.len());
    cells.extend(HEADERS.iter().map(|h| h.to_string()));
    for t in &sweep.trials {
        let h = &t.hparams;
        cells.extend([
            t.id.to_string(),
            t.experiment.clone(),
            h.arch.to_string(),
            h.hidden.to_string(),
            canon_f64(h.dropout),
            canon_f64(h.lr),
            h.epochs.to_string(),
            h.batch_size.to_string(),
            canon_f64(h.momentum),
            canon_f64(h.weight_decay),
            canon_f64(h.validation),
            h.seed.to_string(),
        ]);
    }
    let mut widths = [0usize; HEADERS.len()];
    for row in cells.chunks(HEADERS.len()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::with_capacity(cells.len() * 8 + 64);
    let mut line = String::new();
    for row in cells.chunks(HEADERS.len()) {
        line.clear();
        for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = if i < LEFT {
                write!(line, "{cell:<w$}")
            } else {
                write!(line, "{cell:>w$}")
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let n = sweep.trials.len();
    let e = sweep.total_epochs();
    let d = sweep.duplicates_dropped;
    let _ = writeln!(
        out,
        "{n} {}, {e} {}, {d} {} dropped",
        plural(n as u64, "trial", "trials"),
        plural(e, "epoch", "epochs"),
        plural(d as u64, "duplicate", "duplicates"),
    );
    out
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}
