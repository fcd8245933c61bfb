//! Ranking trials and picking the best one.
//!
//! Each trial's best epoch is chosen by the one best-epoch rule ([`results_format::best`]: the best
//! value of the selection metric, ties to the better tie-breaker, then the earlier epoch);
//! trials are ranked by the same comparison at their best epochs, then by trial id. Only
//! finished trials whose artifacts exist are eligible; the others are listed after them.
//! When no eligible trial has validation numbers (a sweep without a validation split), the
//! choice falls back to the metric's test-set twin (test accuracy) and says so.

use proto::Artifact;
use results_format::best::{best_epoch, lower_first, Score};
use results_format::{EpochRow, Metric, ResultsDir, TrialRow, TrialStatus};
use std::cmp::Ordering;

/// What the best trial is chosen on: an epoch column ([`results_format::Metric`], validation
/// accuracy by default), judged by the one best-epoch rule of [`results_format::best`].
pub type SelectionMetric = Metric;

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
pub fn ineligibility(row: &TrialRow, dir: &ResultsDir) -> Option<String> {
    if row.status != TrialStatus::Finished {
        return Some(format!("status {}", row.status));
    }
    let id = &row.trial_id;
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        return Some(format!("trial id {id:?} is not a safe folder name"));
    }
    let id = proto::TrialId(id.clone());
    // The last one a worker uploads first: a trial missing one usually misses those after it.
    for a in Artifact::ALL.into_iter().rev() {
        if !dir.artifact(&id, a).is_file() {
            return Some(format!("missing artifacts/{id}/{a}"));
        }
    }
    None
}

/// Ranks `trials` (with their epochs) on `requested`.
pub fn rank(
    trials: Vec<(TrialRow, Vec<EpochRow>)>,
    requested: SelectionMetric,
    dir: &ResultsDir,
) -> Ranking {
    let ineligible: Vec<Option<String>> = trials
        .iter()
        .map(|(row, _)| ineligibility(row, dir))
        .collect();
    let has_val = trials.iter().zip(&ineligible).any(|((row, epochs), inel)| {
        inel.is_none()
            && (epochs
                .iter()
                .any(|e| e.val_acc.is_some() || e.val_loss.is_some())
                || row.best_val_acc.is_some())
    });
    let (used, test_set_note) = selection(requested, has_val);
    let mut out: Vec<RankedTrial> = trials
        .into_iter()
        .zip(ineligible)
        .map(|((row, epochs), ineligible)| scored(row, epochs, ineligible, used))
        .collect();
    out.sort_by(|a, b| {
        let eligible = a.ineligible.is_some().cmp(&b.ineligible.is_some());
        let score = match (a.score, b.score) {
            (Some(x), Some(y)) => Score::cmp(
                used,
                Score {
                    value: x,
                    tie: a.tie,
                },
                Score {
                    value: y,
                    tie: b.tie,
                },
            ),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => lower_first(a.tie, b.tie),
        };
        eligible
            .then(score)
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

/// A trial at its best epoch on `used`, or, with no epoch rows, by the trial table's summary.
fn scored(
    row: TrialRow,
    epochs: Vec<EpochRow>,
    ineligible: Option<String>,
    used: SelectionMetric,
) -> RankedTrial {
    let best = best_epoch(used, &epochs).copied();
    let (score, tie) = match best.and_then(|e| Score::of(used, &e)) {
        Some(s) => (Some(s.value), s.tie),
        None => (
            match used {
                Metric::ValAcc => row.best_val_acc,
                Metric::TestAcc => row.test_acc,
                _ => None,
            },
            None,
        ),
    };
    RankedTrial {
        row,
        epochs,
        rank: None,
        ineligible,
        best,
        score,
        tie,
    }
}

/// The metric actually used, and a note when the test set chooses: asked for, or because no
/// eligible trial has validation numbers (a sweep without a validation split).
fn selection(requested: SelectionMetric, has_val: bool) -> (SelectionMetric, Option<String>) {
    let twin = requested.on_test_set();
    if matches!(requested, Metric::TestAcc | Metric::TestLoss) {
        let note = format!("the best trial was chosen on the test set ({requested}), as requested: its test accuracy is an optimistic estimate");
        (requested, Some(note))
    } else if !has_val && twin != requested {
        let note = format!("this sweep has no validation split (val_* are empty), so the best trial was chosen on the test set ({twin}) instead of {requested}: its test accuracy is an optimistic estimate");
        (twin, Some(note))
    } else {
        (requested, None)
    }
}
