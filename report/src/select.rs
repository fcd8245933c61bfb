//! Ranking trials and picking the best one.
//!
//! Each trial's best epoch is the one that is best on the selection metric; trials are ranked by
//! that value, ties broken by the lower validation loss at that epoch, then by trial id. Only
//! finished trials whose artifacts exist are eligible; the others are listed after them.
//! When no eligible trial has validation numbers (a sweep without a validation split), the
//! choice falls back to test accuracy and says so.

use crate::load::{EpochRow, TrialRow};
use std::cmp::Ordering;
use std::path::Path;

/// What the best trial is chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectionMetric {
    /// Highest validation accuracy (the default).
    #[default]
    ValAcc,
    /// Lowest validation loss.
    ValLoss,
    /// Highest test accuracy: reporting only, the test set then no longer estimates generalisation.
    TestAcc,
}

impl SelectionMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectionMetric::ValAcc => "val_acc",
            SelectionMetric::ValLoss => "val_loss",
            SelectionMetric::TestAcc => "test_acc",
        }
    }
    fn higher_is_better(self) -> bool {
        !matches!(self, SelectionMetric::ValLoss)
    }
    fn value(self, e: &EpochRow) -> Option<f64> {
        match self {
            SelectionMetric::ValAcc => e.val_acc,
            SelectionMetric::ValLoss => e.val_loss,
            SelectionMetric::TestAcc => e.test_acc,
        }
    }
    /// The tie-breaker at the chosen epoch, as a value where lower is better.
    fn tie_breaker(self, e: &EpochRow) -> Option<f64> {
        match self {
            SelectionMetric::ValAcc => e.val_loss,
            SelectionMetric::ValLoss => e.val_acc.map(|a| -a),
            SelectionMetric::TestAcc => e.val_loss.or(e.test_loss),
        }
    }
}

impl std::str::FromStr for SelectionMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "val_acc" => Ok(SelectionMetric::ValAcc),
            "val_loss" => Ok(SelectionMetric::ValLoss),
            "test_acc" => Ok(SelectionMetric::TestAcc),
            _ => Err(format!(
                "unknown selection metric {s:?}, expected val_acc, val_loss or test_acc"
            )),
        }
    }
}

impl std::fmt::Display for SelectionMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trial as the report sees it.
#[derive(Debug, Clone)]
pub struct RankedTrial {
    pub row: TrialRow,
    pub epochs: Vec<EpochRow>,
    /// 1-based rank among eligible trials; `None` for the others.
    pub rank: Option<usize>,
    /// Why the trial cannot be the best one, if it cannot.
    pub ineligible: Option<String>,
    /// The epoch chosen by the selection metric, with its row.
    pub best: Option<EpochRow>,
    /// The selection metric's value at that epoch.
    pub score: Option<f64>,
    tie: Option<f64>,
}

/// The ranking, and how it was made.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub trials: Vec<RankedTrial>,
    /// The metric asked for.
    pub requested: SelectionMetric,
    /// The metric actually used (test accuracy when there is no validation split).
    pub used: SelectionMetric,
    /// Set when the choice was made on the test set, saying why.
    pub test_set_note: Option<String>,
}

impl Ranking {
    /// The best eligible trial.
    pub fn best(&self) -> Option<&RankedTrial> {
        self.trials.first().filter(|t| t.rank.is_some())
    }
}

/// Why a trial is not eligible, if it is not: it must be finished, have a safe id, and have its
/// artifacts.
pub fn ineligibility(row: &TrialRow, artifacts: &Path) -> Option<String> {
    if row.status != "finished" {
        return Some(format!("status {}", row.status));
    }
    let id = &row.trial_id;
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        return Some(format!("trial id {id:?} is not a safe folder name"));
    }
    for f in [
        "predictions.safetensors",
        "model.safetensors",
        "config.json",
    ] {
        if !artifacts.join(id).join(f).is_file() {
            return Some(format!("missing artifacts/{id}/{f}"));
        }
    }
    None
}

fn pick_epoch(metric: SelectionMetric, epochs: &[EpochRow]) -> Option<EpochRow> {
    let mut best: Option<&EpochRow> = None;
    for e in epochs {
        let Some(v) = metric.value(e) else { continue };
        best = match best {
            None => Some(e),
            Some(b) => {
                let bv = metric.value(b).expect("chosen epochs have a value");
                let ord = if metric.higher_is_better() {
                    v.total_cmp(&bv)
                } else {
                    bv.total_cmp(&v)
                };
                let better = match ord {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    // Equal: lower tie-breaker wins, then the earlier epoch (kept).
                    Ordering::Equal => {
                        cmp_opt_low(metric.tie_breaker(e), metric.tie_breaker(b)).is_lt()
                    }
                };
                Some(if better { e } else { b })
            }
        };
    }
    best.copied()
}

/// Lower first, `None` last.
fn cmp_opt_low(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Ranks `trials` (with their epochs) on `requested`.
pub fn rank(
    trials: Vec<(TrialRow, Vec<EpochRow>)>,
    requested: SelectionMetric,
    artifacts: &Path,
) -> Ranking {
    let ineligible: Vec<Option<String>> = trials
        .iter()
        .map(|(row, _)| ineligibility(row, artifacts))
        .collect();
    let has_val = trials.iter().zip(&ineligible).any(|((row, epochs), inel)| {
        inel.is_none()
            && (epochs
                .iter()
                .any(|e| e.val_acc.is_some() || e.val_loss.is_some())
                || row.best_val_acc.is_some())
    });
    let (used, test_set_note) = match requested {
        SelectionMetric::TestAcc => (
            SelectionMetric::TestAcc,
            Some("the best trial was chosen on the test set (test_acc), as requested: its test accuracy is an optimistic estimate".to_string()),
        ),
        m if !has_val => (
            SelectionMetric::TestAcc,
            Some(format!(
                "this sweep has no validation split (val_* are empty), so the best trial was chosen on the test set (test_acc) instead of {m}: its test accuracy is an optimistic estimate"
            )),
        ),
        m => (m, None),
    };
    let mut out: Vec<RankedTrial> = trials
        .into_iter()
        .zip(ineligible)
        .map(|((row, epochs), inel)| {
            let best = pick_epoch(used, &epochs);
            let (score, tie) = match &best {
                Some(e) => (used.value(e), used.tie_breaker(e)),
                // No epoch rows: fall back on the trial table's summary columns.
                None => (
                    match used {
                        SelectionMetric::ValAcc => row.best_val_acc,
                        SelectionMetric::TestAcc => row.test_acc,
                        SelectionMetric::ValLoss => None,
                    },
                    None,
                ),
            };
            RankedTrial {
                row,
                epochs,
                rank: None,
                ineligible: inel,
                best,
                score,
                tie,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let elig = a.ineligible.is_some().cmp(&b.ineligible.is_some());
        let score = match (a.score, b.score) {
            (Some(x), Some(y)) if used.higher_is_better() => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        elig.then(score)
            .then(cmp_opt_low(a.tie, b.tie))
            .then_with(|| a.row.trial_id.cmp(&b.row.trial_id))
    });
    let mut next = 1;
    for t in &mut out {
        if t.ineligible.is_none() {
            t.rank = Some(next);
            next += 1;
        }
    }
    Ranking {
        trials: out,
        requested,
        used,
        test_set_note,
    }
}
