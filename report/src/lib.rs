//! hypersweep's report: from a sweep's results folder to `results/<sweep>/report/`.
//!
//! [`generate`] tells the story in steps: read the trial table and the per-epoch metrics
//! (through the `results-format` crate's one reader), rank the trials and pick the best
//! finished or stopped one on its experiments' goal ([`select`], with the one best-epoch rule
//! of `results_format::best`), write the best trial's evaluation (`best_trial`: the test-set
//! predictions of its best epoch's weights, which the worker saved, scored as scikit-learn
//! would, [`metrics`]; tables, confusion matrix, hardest samples, a copy of its model), draw
//! the learning curves (`figures`, with `plot`'s embedded font), draw each searched
//! experiment's optimization history and slices and list the trials stopped early
//! (`search_views`, with `plot_search`), and write one self-contained `index.html` (`html`). Every file is written whole (`output`). Nothing here links
//! libtorch: the worker saved the softmax outputs, and this crate only reads them.

mod best_trial;
mod error;
mod figures;
mod html;
pub mod metrics;
mod output;
mod plot;
mod plot_search;
mod search_views;
pub mod select;

pub use error::{Error, Result};
pub use select::SelectionMetric;

use output::Output;
use results_format::{EpochRow, ResultsDir, TrialRow};
use select::{RankedTrial, Ranking};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Classes of Fashion-MNIST.
pub const NUM_CLASSES: usize = dataset::CLASS_NAMES.len();

/// How the report is made.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// What the best trial is chosen on: `None` (the default) for the goal of its experiments
    /// (`metric` and `mode` in `trials.parquet`, validation accuracy when the file has none).
    pub metric: Option<SelectionMetric>,
    /// How many of the highest-entropy test samples to list and draw.
    pub hardest: usize,
    /// Where Fashion-MNIST is, for drawing the hardest samples; `None` searches as
    /// [`dataset::locate`] does. When the data cannot be found or does not match the
    /// predictions, `hardest.csv` is still written and `index.html` says why there are no images.
    pub data_dir: Option<PathBuf>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            metric: None,
            hardest: 9,
            data_dir: None,
        }
    }
}

/// What [`generate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    /// `<results>/report`.
    pub report_dir: PathBuf,
    /// `<results>/report/index.html`.
    pub index: PathBuf,
    pub best_trial: proto::TrialId,
    /// The best trial's short label, e.g. `ffv3 h64 p0.25 lr0.1`.
    pub best_label: String,
    /// The metric the choice was made on (test accuracy when the sweep has no validation split).
    pub selected_on: SelectionMetric,
    /// True when the best trial was chosen on the test set.
    pub chosen_on_test_set: bool,
    /// The best trial's chosen epoch and its numbers there.
    pub best_epoch: Option<i64>,
    pub val_acc: Option<f64>,
    pub val_loss: Option<f64>,
    /// Accuracy of the saved predictions (the best epoch's weights) on the test images they
    /// cover: the best epoch's recorded `test_acc` on the same images.
    pub test_acc: f64,
    pub macro_f1: f64,
    /// Test images the predictions cover.
    pub test_samples: usize,
    /// Trials by status, e.g. `[("finished", 12), ("failed", 1)]`.
    pub trials_by_status: Vec<(String, usize)>,
    /// Things the reader should know: test-set selection, missing images, ineligible trials.
    pub notes: Vec<String>,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// A few lines for the coordinator to print.
    pub text: String,
}

/// A file name made of `s`: anything but ASCII letters, digits, `-`, `_` and `.` becomes `_`.
pub fn file_stem(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

/// The results folder as read: every trial with its epochs, in the trial table's order.
struct Sweep {
    trials: Vec<(TrialRow, Vec<EpochRow>)>,
    /// Trials by status, e.g. `[("finished", 12), ("failed", 1)]`.
    by_status: Vec<(String, usize)>,
    /// Trial ids in `epochs/` that `trials.parquet` does not have.
    orphans: usize,
}

fn read_sweep(dir: &ResultsDir) -> Result<Sweep> {
    let trials = results_format::read::read_trials(&dir.trials())?;
    let mut epochs = results_format::read::read_epochs(&dir.epochs())?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in &trials {
        *by_status.entry(t.status.to_string()).or_default() += 1;
    }
    let trials = trials
        .into_iter()
        .map(|t| {
            let e = epochs.remove(&t.trial_id).unwrap_or_default();
            (t, e)
        })
        .collect();
    Ok(Sweep {
        trials,
        by_status: by_status.into_iter().collect(),
        orphans: epochs.len(),
    })
}

/// Why there is nothing to report on: the trials by status, and a missing artifact if that is
/// what kept a finished trial out.
fn no_eligible_trial(dir: &ResultsDir, by_status: &[(String, usize)], ranking: &Ranking) -> Error {
    let status = if by_status.is_empty() {
        "trials.parquet has no rows".to_string()
    } else {
        by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = ranking
        .trials
        .iter()
        .find_map(|t| {
            t.ineligible
                .as_ref()
                .filter(|r| r.starts_with("missing"))
                .cloned()
        })
        .map(|r| format!("; e.g. {r}"))
        .unwrap_or_default();
    Error::NoEligibleTrial {
        dir: dir.path().to_path_buf(),
        reason: format!("{status}{why}"),
    }
}

/// What the reader should know about the choice and the input.
fn ranking_notes(ranking: &Ranking, orphans: usize) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    if let Some(n) = &ranking.test_set_note {
        notes.push(n.clone());
    }
    if let Some(n) = &ranking.goal_note {
        notes.push(n.clone());
    }
    let not_eligible = ranking.trials.iter().filter(|t| t.rank.is_none()).count();
    if not_eligible > 0 {
        notes.push(format!(
            "{not_eligible} trial(s) are listed but could not be chosen (not finished, or artifacts missing)"
        ));
    }
    if orphans > 0 {
        notes.push(format!(
            "{orphans} trial id(s) in epochs/ are not in trials.parquet and were ignored"
        ));
    }
    notes
}

/// Reads `<results_dir>`, writes `<results_dir>/report/`, and says what it wrote.
///
/// Fails with [`Error::NoEligibleTrial`] (writing nothing) when no trial is finished with its
/// artifacts, and with a message naming the file on unreadable input.
pub fn generate(results_dir: &Path, opts: &ReportOptions) -> Result<ReportSummary> {
    let dir = ResultsDir::new(results_dir);
    let sweep = read_sweep(&dir)?;
    let ranking = select::rank(sweep.trials, opts.metric, &dir);
    let Some(best) = ranking.best() else {
        return Err(no_eligible_trial(&dir, &sweep.by_status, &ranking));
    };
    let mut notes = ranking_notes(&ranking, sweep.orphans);

    let mut out = Output::create(dir.report())?;
    let mut figures = html::Figures::default();
    let best_id = proto::TrialId(best.row.trial_id.clone());
    let selected_epoch = best.best.map(|e| e.epoch).or(best.row.best_epoch);
    let evaluated = best_trial::write(
        &mut out,
        &dir,
        &best_id,
        selected_epoch,
        opts,
        &mut figures,
        &mut notes,
    )?;
    figures::draw(&mut out, &ranking, &mut figures)?;
    search_views::draw(&mut out, &ranking, &mut figures)?;
    let page = html::Page {
        results_dir,
        ranking: &ranking,
        best,
        hparams: &evaluated.hparams,
        scored: &evaluated.scored,
        trials_by_status: &sweep.by_status,
        notes: &notes,
        figures: &figures,
    };
    let index = out.root.join("index.html");
    out.write(&index, page.render().as_bytes())?;
    Ok(summary(
        out,
        index,
        &ranking,
        best,
        &evaluated,
        sweep.by_status,
        notes,
    ))
}

/// The summary of what [`generate`] did, with the lines `coordinator` prints.
fn summary(
    out: Output,
    index: PathBuf,
    ranking: &Ranking,
    best: &RankedTrial,
    evaluated: &best_trial::BestOutputs,
    trials_by_status: Vec<(String, usize)>,
    notes: Vec<String>,
) -> ReportSummary {
    let chosen_on_test_set = matches!(
        ranking.used,
        SelectionMetric::TestAcc | SelectionMetric::TestLoss
    );
    let best_epoch = best.best.map(|e| e.epoch).or(best.row.best_epoch);
    let (hparams, scored) = (&evaluated.hparams, &evaluated.scored);
    let mut text = format!(
        "best trial {} ({}) chosen on {}{}: epoch {}, val_acc {}, test accuracy {:.4} on {} images, macro F1 {:.4}\nreport: {}",
        best.row.trial_id,
        hparams.label(),
        ranking.used,
        if chosen_on_test_set { " (test set)" } else { "" },
        best_epoch.map_or("?".into(), |e| e.to_string()),
        best.best.and_then(|e| e.val_acc).map_or("n/a".into(), |v| format!("{v:.4}")),
        scored.report.accuracy,
        scored.preds.len(),
        scored.report.macro_avg.f1,
        index.display(),
    );
    for n in &notes {
        let _ = write!(text, "\nnote: {n}");
    }
    ReportSummary {
        report_dir: out.root,
        index,
        best_trial: proto::TrialId(best.row.trial_id.clone()),
        best_label: hparams.label(),
        selected_on: ranking.used,
        chosen_on_test_set,
        best_epoch,
        val_acc: best.best.and_then(|e| e.val_acc),
        val_loss: best.best.and_then(|e| e.val_loss),
        test_acc: scored.report.accuracy,
        macro_f1: scored.report.macro_avg.f1,
        test_samples: scored.preds.len(),
        trials_by_status,
        notes,
        files: out.files,
        text,
    }
}
