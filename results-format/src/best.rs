//! The one rule that picks a trial's best epoch.
//!
//! An epoch is judged on one epoch column and a direction, a [`Goal`] (the experiment's
//! `metric` and `mode`; validation accuracy, larger is better, by default; a bare [`Metric`]
//! means its natural direction: accuracies up, losses down): the better value wins; on a tie
//! the lower tie-breaker wins (validation loss for accuracies; see [`Metric::tie_breaker`]),
//! then the earlier epoch. The coordinator's scheduler applies it epoch by epoch as reports
//! arrive ([`Best::update`]), the worker likewise to keep that epoch's weights, the report
//! over a trial's recorded epochs ([`best_epoch`]); all three give the same epoch.
//!
//! The test set never chooses anything while a validation split exists. A trial trained
//! without one (its `val_*` are NaN or null) is judged on the same measure on the test set
//! ([`Metric::on_test_set`]); in [`Best::update`] a validation-based best always beats a
//! test-based one.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Whether larger or smaller values are better (the sweep's `mode`); the search crate owns it.
pub use search::Mode;

/// An epoch column a trial can be judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Metric {
    TrainLoss,
    TrainAcc,
    ValLoss,
    #[default]
    ValAcc,
    TestLoss,
    TestAcc,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::TrainLoss,
        Metric::TrainAcc,
        Metric::ValLoss,
        Metric::ValAcc,
        Metric::TestLoss,
        Metric::TestAcc,
    ];

    /// The column's name in `epochs/*.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::TrainLoss => "train_loss",
            Metric::TrainAcc => "train_acc",
            Metric::ValLoss => "val_loss",
            Metric::ValAcc => "val_acc",
            Metric::TestLoss => "test_loss",
            Metric::TestAcc => "test_acc",
        }
    }

    /// Accuracies go up, losses down.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::TrainAcc | Metric::ValAcc | Metric::TestAcc)
    }

    /// The natural direction: `max` for accuracies, `min` for losses.
    pub fn natural_mode(self) -> Mode {
        if self.higher_is_better() {
            Mode::Max
        } else {
            Mode::Min
        }
    }

    /// Whether this is a test-set column (`test_*`): the test set chooses nothing, so a sweep
    /// may not name one as its metric.
    pub fn is_test(self) -> bool {
        matches!(self, Metric::TestLoss | Metric::TestAcc)
    }

    /// The same measure on the test set, for a trial without a validation split.
    pub fn on_test_set(self) -> Metric {
        match self {
            Metric::ValAcc => Metric::TestAcc,
            Metric::ValLoss => Metric::TestLoss,
            m => m,
        }
    }

    /// What decides between two epochs with the same value, as a number where lower is
    /// better: the loss of an accuracy (validation first), the accuracy of a loss, negated.
    pub fn tie_breaker(self, e: &impl EpochValues) -> Option<f64> {
        let neg = |v: f64| -v;
        match self {
            Metric::ValAcc => e.get(Metric::ValLoss),
            Metric::TestAcc => e.get(Metric::ValLoss).or(e.get(Metric::TestLoss)),
            Metric::TrainAcc => e.get(Metric::TrainLoss),
            Metric::ValLoss => e.get(Metric::ValAcc).map(neg),
            Metric::TestLoss => e.get(Metric::TestAcc).map(neg),
            Metric::TrainLoss => e.get(Metric::TrainAcc).map(neg),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown metric {s:?}, expected one of {}",
                    Metric::ALL.map(Metric::as_str).join(", ")
                )
            })
    }
}

/// What an epoch is judged on: a metric and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Goal {
    pub metric: Metric,
    pub mode: Mode,
}

impl Goal {
    pub fn new(metric: Metric, mode: Mode) -> Goal {
        Goal { metric, mode }
    }

    /// The same goal on the test set (for a trial without a validation split).
    pub fn on_test_set(self) -> Goal {
        Goal {
            metric: self.metric.on_test_set(),
            ..self
        }
    }
}

impl Default for Goal {
    /// Validation accuracy, larger is better.
    fn default() -> Self {
        Metric::ValAcc.into()
    }
}

impl From<Metric> for Goal {
    /// `metric` in its natural direction.
    fn from(metric: Metric) -> Goal {
        Goal {
            metric,
            mode: metric.natural_mode(),
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.metric, self.mode)
    }
}

/// The values of one epoch, whatever holds them: the wire's metrics while a sweep runs, a
/// Parquet row afterwards. `None` for a value that is missing (no validation split).
pub trait EpochValues {
    fn epoch(&self) -> u32;
    fn get(&self, metric: Metric) -> Option<f64>;
}

impl EpochValues for proto::EpochMetrics {
    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn get(&self, metric: Metric) -> Option<f64> {
        let v = match metric {
            Metric::TrainLoss => self.train_loss,
            Metric::TrainAcc => self.train_acc,
            Metric::ValLoss => self.val_loss,
            Metric::ValAcc => self.val_acc,
            Metric::TestLoss => self.test_loss,
            Metric::TestAcc => self.test_acc,
        };
        (!v.is_nan()).then_some(v)
    }
}

/// An epoch's standing under a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub value: f64,
    /// [`Metric::tie_breaker`]: lower is better.
    pub tie: Option<f64>,
}

impl Score {
    /// `a` against `b` under `goal`: `Less` when `a` is better, `Equal` on a full tie.
    pub fn cmp(goal: impl Into<Goal>, a: Score, b: Score) -> Ordering {
        let by_value = match goal.into().mode {
            Mode::Max => b.value.total_cmp(&a.value),
            Mode::Min => a.value.total_cmp(&b.value),
        };
        by_value.then(lower_first(a.tie, b.tie))
    }

    /// The epoch's score, `None` when it has no value for `metric`.
    pub fn of(metric: Metric, e: &impl EpochValues) -> Option<Score> {
        Some(Score {
            value: e.get(metric)?,
            tie: metric.tie_breaker(e),
        })
    }
}

/// Lower first, `None` last.
pub fn lower_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The epoch of `epochs` that is best on `goal` (the earliest on a full tie), `None` when
/// no epoch has a value for its metric.
pub fn best_epoch<E: EpochValues>(goal: impl Into<Goal>, epochs: &[E]) -> Option<&E> {
    let goal = goal.into();
    let mut best: Option<(&E, Score)> = None;
    for e in epochs {
        let Some(s) = Score::of(goal.metric, e) else {
            continue;
        };
        if best.is_none_or(|(_, b)| Score::cmp(goal, s, b).is_lt()) {
            best = Some((e, s));
        }
    }
    best.map(|(e, _)| e)
}

/// A trial's best epoch so far, as the coordinator keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Best {
    pub epoch: u32,
    /// The value of `metric` at that epoch.
    pub value: f64,
    pub tie: Option<f64>,
    /// The metric asked for, or its test-set twin when the trial has no validation split.
    pub metric: Metric,
}

impl Best {
    /// `best` after epoch `e` was recorded, judged on `goal` (on its test-set twin when `e`
    /// has no value for its metric). A validation-based best always beats a test-based one.
    pub fn update(best: Option<Best>, goal: impl Into<Goal>, e: &impl EpochValues) -> Option<Best> {
        let goal = goal.into();
        let metric = goal.metric;
        let fallback = metric.on_test_set();
        let (used, score) = match Score::of(metric, e) {
            Some(s) => (metric, s),
            None => match Score::of(fallback, e) {
                Some(s) => (fallback, s),
                None => return best,
            },
        };
        let candidate = Best {
            epoch: e.epoch(),
            value: score.value,
            tie: score.tie,
            metric: used,
        };
        let better = match best {
            None => true,
            Some(b) if b.metric != used => used == metric,
            Some(b) => Score::cmp(Goal::new(used, goal.mode), score, b.score()).is_lt(),
        };
        Some(if better {
            candidate
        } else {
            best.expect("checked")
        })
    }

    pub fn score(&self) -> Score {
        Score {
            value: self.value,
            tie: self.tie,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::EpochMetrics;

    fn m(epoch: u32, val_acc: f64, val_loss: f64, test_acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss,
            val_acc,
            test_loss: 0.4,
            test_acc,
            seconds: 1.0,
        }
    }

    fn live(metric: impl Into<Goal> + Copy, epochs: &[EpochMetrics]) -> Option<u32> {
        epochs
            .iter()
            .fold(None, |b, e| Best::update(b, metric, e))
            .map(|b| b.epoch)
    }

    #[test]
    fn highest_accuracy_then_lower_loss_then_earlier_epoch() {
        let epochs = [
            m(1, 0.80, 0.5, 0.7),
            m(2, 0.85, 0.4, 0.7),
            m(3, 0.85, 0.3, 0.7), // same accuracy, lower loss: wins
            m(4, 0.85, 0.3, 0.9), // full tie on validation: the earlier epoch stays
            m(5, 0.84, 0.1, 0.9),
        ];
        assert_eq!(
            best_epoch(Metric::ValAcc, &epochs).map(|e| e.epoch),
            Some(3)
        );
        assert_eq!(live(Metric::ValAcc, &epochs), Some(3));
        // Lowest validation loss: epoch 5.
        assert_eq!(
            best_epoch(Metric::ValLoss, &epochs).map(|e| e.epoch),
            Some(5)
        );
        assert_eq!(live(Metric::ValLoss, &epochs), Some(5));
    }

    #[test]
    fn without_validation_the_test_set_twin_decides_and_validation_always_wins() {
        let nan = f64::NAN;
        let no_val = [
            m(1, nan, nan, 0.6),
            m(2, nan, nan, 0.7),
            m(3, nan, nan, 0.65),
        ];
        let b = no_val
            .iter()
            .fold(None, |b, e| Best::update(b, Metric::ValAcc, e));
        assert_eq!(b.map(|b| (b.epoch, b.metric)), Some((2, Metric::TestAcc)));
        // The report's strict form finds nothing on val_acc, and epoch 2 on test_acc.
        assert!(best_epoch(Metric::ValAcc, &no_val).is_none());
        assert_eq!(
            best_epoch(Metric::TestAcc, &no_val).map(|e| e.epoch),
            Some(2)
        );
        // A validation-based epoch beats a better test-based one.
        let mixed = Best::update(b, Metric::ValAcc, &m(4, 0.1, 2.0, 0.1)).unwrap();
        assert_eq!((mixed.epoch, mixed.metric), (4, Metric::ValAcc));
        let kept = Best::update(Some(mixed), Metric::ValAcc, &m(5, nan, nan, 0.99)).unwrap();
        assert_eq!(kept.epoch, 4);
    }

    #[test]
    fn a_goal_against_its_metrics_nature_is_followed_and_ties_still_go_to_the_lower_loss() {
        let epochs = [
            m(1, 0.70, 0.9, 0.6),
            m(2, 0.85, 0.4, 0.8),
            m(3, 0.70, 0.8, 0.7), // ties epoch 1 on val_acc, lower val_loss: wins under min
        ];
        let worst = Goal::new(Metric::ValAcc, Mode::Min);
        assert_eq!(best_epoch(worst, &epochs).map(|e| e.epoch), Some(3));
        assert_eq!(live(worst, &epochs), Some(3));
        let highest_loss = Goal::new(Metric::ValLoss, Mode::Max);
        assert_eq!(best_epoch(highest_loss, &epochs).map(|e| e.epoch), Some(1));
        assert_eq!(live(highest_loss, &epochs), Some(1));
        assert_eq!(Goal::default(), Goal::new(Metric::ValAcc, Mode::Max));
        assert_eq!(Goal::from(Metric::TrainLoss).mode, Mode::Min);
        assert!(Metric::TestAcc.is_test() && !Metric::ValLoss.is_test());
    }

    #[test]
    fn metric_names_parse_and_say_what_is_expected() {
        for metric in Metric::ALL {
            assert_eq!(metric.as_str().parse::<Metric>(), Ok(metric));
        }
        let err = "val_f1".parse::<Metric>().unwrap_err();
        assert!(
            err.contains("val_f1") && err.contains("val_acc, test_loss"),
            "{err}"
        );
    }
}
