//! Ranking trials and picking the best one.
//!
//! Each trial's best epoch is chosen by the one best-epoch rule ([`results_format::best`]: the
//! best value of its goal, ties to the better tie-breaker, then the earlier epoch), on its
//! experiment's goal (`metric` and `mode` in `trials.parquet`; validation accuracy when the
//! file has none), exactly as the coordinator chose it and as the worker kept that epoch's
//! weights. Trials are ranked by the same comparison at their best epochs, on the goal every
//! eligible trial shares (or the metric asked for, or validation accuracy when experiments
//! differ, with a note), then by trial id. Only finished or stopped trials whose artifacts
//! exist are eligible; the others are listed after them. When no eligible trial has
//! validation numbers (a sweep without a validation split), the choice falls back to the
//! metric's test-set twin (test accuracy) and says so.

use proto::Artifact;
use results_format::best::{best_epoch, lower_first, Score};
use results_format::{EpochRow, Goal, Metric, Mode, ResultsDir, TrialRow};
use std::cmp::Ordering;

/// What the best trial is chosen on: an epoch column ([`results_format::Metric`], validation
/// accuracy by default), judged by the one best-epoch rule of [`results_format::best`].
pub type SelectionMetric = Metric;

/// One trial as the report sees it.
#[derive(Debug, Clone)]
pub struct RankedTrial {
    /// Its position in `trials.parquet`: the order its experiment made it in.
    pub index: usize,
    pub row: TrialRow,
    pub epochs: Vec<EpochRow>,
    /// What its best epoch is chosen on.
    pub goal: Goal,
    /// 1-based rank among eligible trials; `None` for the others.
    pub rank: Option<usize>,
    /// Why the trial cannot be the best one, if it cannot.
    pub ineligible: Option<String>,
    /// The epoch chosen on the trial's goal, with its row.
    pub best: Option<EpochRow>,
    /// The ranking metric's value at that epoch.
    pub score: Option<f64>,
    tie: Option<f64>,
}

/// The ranking, and how it was made.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub trials: Vec<RankedTrial>,
    /// The metric trials are ranked on: asked for, or the eligible trials' shared one.
    pub requested: SelectionMetric,
    /// The metric actually used (test accuracy when there is no validation split).
    pub used: SelectionMetric,
    /// Which way is better on it.
    pub mode: Mode,
    /// Set when the choice was made on the test set, saying why.
    pub test_set_note: Option<String>,
    /// Set when the experiments judge their trials on different goals, saying what the
    /// ranking used instead.
    pub goal_note: Option<String>,
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
    if !row.status.has_result() {
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

/// Ranks `trials` (with their epochs) on `requested`, or, when `None`, on the goal of their
/// experiments (each trial's best epoch is always its own goal's, unless a metric is asked
/// for).
pub fn rank(
    trials: Vec<(TrialRow, Vec<EpochRow>)>,
    requested: Option<SelectionMetric>,
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
    let goal_of = |row: &TrialRow| requested.map_or_else(|| row.goal(), Goal::from);
    let (ranked_on, goal_note) = ranking_goal(&trials, &ineligible, requested, goal_of);
    let (used, test_set_note) = selection(ranked_on.metric, has_val);
    let on_test = used != ranked_on.metric;
    let rank_goal = Goal::new(used, ranked_on.mode);
    let mut out: Vec<RankedTrial> = trials
        .into_iter()
        .zip(ineligible)
        .enumerate()
        .map(|(index, ((row, epochs), ineligible))| {
            let mut goal = goal_of(&row);
            if on_test {
                goal = goal.on_test_set();
            }
            RankedTrial {
                index,
                ..scored(row, epochs, ineligible, goal, rank_goal)
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let eligible = a.ineligible.is_some().cmp(&b.ineligible.is_some());
        let score = match (a.score, b.score) {
            (Some(x), Some(y)) => Score::cmp(
                rank_goal,
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
        requested: ranked_on.metric,
        used,
        mode: ranked_on.mode,
        test_set_note,
        goal_note,
    }
}

/// What trials are ranked on: the metric asked for; else the goal every eligible trial
/// shares; else validation accuracy, with a note naming the goals that differ.
fn ranking_goal(
    trials: &[(TrialRow, Vec<EpochRow>)],
    ineligible: &[Option<String>],
    requested: Option<SelectionMetric>,
    goal_of: impl Fn(&TrialRow) -> Goal,
) -> (Goal, Option<String>) {
    if let Some(m) = requested {
        return (Goal::from(m), None);
    }
    let mut goals: Vec<Goal> = Vec::new();
    for ((row, _), inel) in trials.iter().zip(ineligible) {
        let g = goal_of(row);
        if inel.is_none() && !goals.contains(&g) {
            goals.push(g);
        }
    }
    match goals.as_slice() {
        [] => (Goal::default(), None),
        [one] => (*one, None),
        many => {
            let list: Vec<String> = many.iter().map(Goal::to_string).collect();
            let note = format!(
                "the experiments judge their trials on different goals ({}): each trial's best \
                 epoch is its own experiment's, and trials are ranked on {} at those epochs",
                list.join(", "),
                Goal::default()
            );
            (Goal::default(), Some(note))
        }
    }
}

/// A trial at its best epoch on `goal`, scored on `rank_goal` at that epoch, or, with no
/// epoch rows, by the trial table's summary.
fn scored(
    row: TrialRow,
    epochs: Vec<EpochRow>,
    ineligible: Option<String>,
    goal: Goal,
    rank_goal: Goal,
) -> RankedTrial {
    let best = best_epoch(goal, &epochs).copied();
    let used = rank_goal.metric;
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
        index: 0,
        row,
        epochs,
        goal,
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
