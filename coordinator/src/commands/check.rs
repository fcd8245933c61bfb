//! `coordinator check SWEEP`: validate a sweep file and print its trial table (a random
//! search's sampled trials included), then each searched experiment's space and rules and
//! the configurations two experiments share, running nothing.

use crate::cli::CheckArgs;
use crate::sweep::{self, ExperimentPlan, SearchKind, Sweep};
use anyhow::Result;
use proto::trial::canon_f64;
use std::fmt::Write as _;
use std::process::ExitCode;

/// `coordinator check`: validate and print the trial table and the plan (or, with
/// `--quiet`, one line).
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let sweep = sweep::load(&args.sweep, &args.overrides.to_overrides())?;
    if args.quiet {
        println!(
            "{}: {} trials{}, {} epochs, {} duplicates dropped",
            sweep.name,
            sweep.trials.len(),
            suggested(&sweep),
            sweep.total_epochs(),
            sweep.duplicates_dropped
        );
    } else {
        print!("{}", render_table(&sweep));
        print!("{}", render_plan(&sweep));
    }
    Ok(ExitCode::SUCCESS)
}

/// ` (+N suggested by tpe while the sweep runs)` when a tpe experiment has trials to come.
fn suggested(sweep: &Sweep) -> String {
    match sweep.to_suggest() {
        0 => String::new(),
        n => format!(" (+{n} suggested by tpe while the sweep runs)"),
    }
}

/// What `coordinator check` prints after the table: each experiment that searches, stops
/// early or judges on something else than `val_acc` (its space, metric and rules), the
/// configurations an experiment shares with an earlier one, then the trials that would
/// train fused.
pub fn render_plan(sweep: &Sweep) -> String {
    let mut out = render_shared(sweep);
    out.push_str(&render_fusion(sweep));
    out
}

/// One line per fused group the sweep's trials would form (issue 13): trials of one
/// experiment that allows fusion with one [`proto::Hyperparams::fuse_key`]. A worker trains up
/// to its `--max-fuse` of them as one model; larger classes lease as several groups.
pub fn render_fusion(sweep: &Sweep) -> String {
    let mut groups: Vec<(&str, String, Vec<&crate::trial::TrialSpec>)> = Vec::new();
    for t in &sweep.trials {
        let on = sweep
            .experiments
            .iter()
            .find(|e| e.name == t.experiment)
            .is_none_or(|e| e.fuse);
        let Some(key) = t.hparams.fuse_key().filter(|_| on) else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|(e, k, _)| *e == t.experiment && *k == key)
        {
            Some((_, _, trials)) => trials.push(t),
            None => groups.push((&t.experiment, key, vec![t])),
        }
    }
    let mut out = String::new();
    for (experiment, _, trials) in groups.iter().filter(|(_, _, t)| t.len() > 1) {
        let h = &trials[0].hparams;
        let ids: Vec<&str> = trials.iter().map(|t| t.id.as_str()).collect();
        let _ = writeln!(
            out,
            "fused: experiment {experiment:?}, {} h{}: {} trials train as one model on a worker \
             with --max-fuse >= {} ({})",
            h.arch,
            h.hidden,
            trials.len(),
            trials.len(),
            ids.join(", ")
        );
    }
    out
}

/// Searched experiments, then the configurations an experiment shares with an earlier one.
fn render_shared(sweep: &Sweep) -> String {
    let mut out = String::new();
    for e in &sweep.experiments {
        let plain = e.search == SearchKind::Grid
            && e.stop == search::StopRules::default()
            && e.goal == results_format::Goal::default();
        if !plain {
            describe_experiment(&mut out, e);
        }
    }
    let mut shared: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for s in &sweep.shared {
        match shared
            .iter_mut()
            .find(|(e, f, _)| *e == s.experiment && *f == s.follows)
        {
            Some((_, _, ids)) => ids.push(s.trial.as_str()),
            None => shared.push((&s.experiment, &s.follows, vec![s.trial.as_str()])),
        }
    }
    for (experiment, follows, ids) in shared {
        let _ = writeln!(
            out,
            "note: experiment {experiment:?} lists {} {} of experiment {follows:?} ({}): each \
             runs once, as a trial of {follows:?}, judged by its metric and rules",
            ids.len(),
            plural(ids.len() as u64, "configuration", "configurations"),
            ids.join(", ")
        );
    }
    out
}

/// `experiment "x": tpe, 40 trials suggested while the sweep runs; best epoch on val_acc
/// (max)`, then its space and stop rules, indented.
fn describe_experiment(out: &mut String, e: &ExperimentPlan) {
    let how = match e.search {
        SearchKind::Grid => format!("grid of {} trials", e.trials),
        SearchKind::Random => format!("random, {} trials drawn (in the table above)", e.trials),
        SearchKind::Tpe => format!("tpe, {} trials suggested while the sweep runs", e.trials),
    };
    let _ = writeln!(
        out,
        "experiment {:?}: {how}; best epoch on {}",
        e.name, e.goal
    );
    if let Some(space) = &e.space {
        let lines = space.describe();
        let width = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, text) in lines {
            let _ = writeln!(out, "  {name:<width$}  {text}");
        }
    }
    let mut rules = Vec::new();
    if let Some(a) = e.stop.asha {
        rules.push(format!(
            "asha (grace {}, reduction {})",
            a.grace, a.reduction
        ));
    }
    if let Some(m) = e.stop.median {
        rules.push(format!(
            "median (grace {}, min_samples {})",
            m.grace, m.min_samples
        ));
    }
    if let Some(d) = e.stop.divergence {
        rules.push(format!("divergence (factor {})", d.factor));
    }
    if !rules.is_empty() {
        let rungs = e
            .epochs
            .and_then(|max_t| search::Stopper::<u32>::new(&e.stop, e.goal.mode, max_t).ok())
            .map(|s| s.rung_epochs())
            .unwrap_or_default();
        let waits = if rungs.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = rungs.iter().map(u32::to_string).collect();
            format!(
                "; workers wait for the verdict after epochs {}",
                list.join(", ")
            )
        };
        let _ = writeln!(out, "  stop: {}{waits}", rules.join(", "));
    }
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
        "{n} {}{}, {e} {}, {d} {} dropped",
        plural(n as u64, "trial", "trials"),
        suggested(sweep),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_trials_that_would_fuse() {
        let text = r#"
name = "f"
[[experiment]]
name = "grid"
model = [{ arch = "ffv2", hidden = 32 }, { arch = "ffv2", hidden = 64 }]
lr = [0.05, 0.1, 0.2]
[[experiment]]
name = "off"
fuse = false
arch = "ffv1"
lr = [0.05, 0.1]
[[experiment]]
name = "cnn"
arch = "cnn"
lr = [0.05, 0.1]
"#;
        let s = sweep::load_str(
            std::path::Path::new("f.toml"),
            text,
            &sweep::Overrides::default(),
            Vec::new(),
        )
        .unwrap();
        let fusion = render_fusion(&s);
        let lines: Vec<&str> = fusion.lines().collect();
        assert_eq!(lines.len(), 2, "{fusion}");
        assert!(
            lines[0].starts_with("fused: experiment \"grid\", ffv2 h32: 3 trials"),
            "{fusion}"
        );
        assert!(
            lines[1].starts_with("fused: experiment \"grid\", ffv2 h64: 3 trials"),
            "{fusion}"
        );
        assert!(render_plan(&s).contains(lines[0]));
    }
}
