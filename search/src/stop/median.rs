//! The median stopping rule, as the sweep format states it: after `grace` epochs, a trial
//! stops when its metric at epoch `e` is strictly worse than the median of the other trials'
//! metrics at epoch `e`.
//!
//! Precisely: "the other trials' metrics at epoch `e`" are the values recorded at epoch `e`,
//! before this report, by every other trial of the experiment that reached epoch `e` (running,
//! finished, or stopped at `e` or later; a trial stopped before `e` has no value there), NaN and
//! infinite ones left out. The rule decides at epochs `grace <= e < max_t` (the last epoch
//! ends the trial anyway) once at least `min_samples` such values exist (3 by default, Ray's
//! default), and records the trial's value at `e` whether or not it stops. A NaN metric counts
//! as worse than any median.
//!
//! How this compares with Ray Tune's `MedianStoppingRule` (and Google Vizier's rule it
//! implements): Ray compares the trial's *best* result so far with the median of the other
//! trials' *running means* of their results from `grace` to `e`, over the same set of trials
//! (those whose last result reached `e`), with the same `min_samples_required = 3` and the same
//! exclusion of non-finite values. Ray is therefore more lenient with a trial that was good
//! earlier and dips, and judges others by their average path rather than where they stand at
//! `e`. Ray's `grace_period` is in seconds by default (`time_attr = "time_total_s"`); here it
//! is in epochs. Ray's `hard_stop = False` (pausing) is not offered.

use crate::Mode;
use std::collections::HashMap;

/// The settings of `stop = { median = { grace } }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianConfig {
    /// The first epoch at which the rule may stop a trial, at least 1.
    pub grace: u32,
    /// The fewest other trials' values at an epoch for a median to be taken.
    pub min_samples: usize,
}

impl MedianConfig {
    /// `grace` with Ray's `min_samples_required` of 3.
    pub fn new(grace: u32) -> Self {
        MedianConfig {
            grace,
            min_samples: 3,
        }
    }

    pub(crate) fn problem(&self) -> Option<String> {
        if self.grace == 0 {
            Some("grace must be at least 1 epoch, got 0".into())
        } else if self.min_samples == 0 {
            Some("min_samples must be at least 1, got 0".into())
        } else {
            None
        }
    }
}

/// Why the median rule stopped a trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Below {
    pub(crate) median: f64,
    pub(crate) samples: usize,
}

/// The rule's state: every trial's value at every epoch, by epoch.
#[derive(Debug, Clone)]
pub(crate) struct Median {
    config: MedianConfig,
    max_t: u32,
    mode: Mode,
    by_epoch: HashMap<u32, Vec<f64>>,
}

impl Median {
    pub(crate) fn new(config: MedianConfig, max_t: u32, mode: Mode) -> Self {
        Median {
            config,
            max_t,
            mode,
            by_epoch: HashMap::new(),
        }
    }

    /// The epochs at which the rule may stop a trial.
    pub(crate) fn decision_epochs(&self) -> std::ops::Range<u32> {
        self.config.grace..self.max_t
    }

    /// A trial's first report of `epoch` (the caller drops repeats): the verdict, then the value
    /// is recorded.
    pub(crate) fn on_report(&mut self, epoch: u32, value: f64) -> Option<Below> {
        let decides = self.decision_epochs().contains(&epoch);
        let others = self.by_epoch.entry(epoch).or_default();
        let verdict = if decides {
            let mut finite: Vec<f64> = others.iter().copied().filter(|v| v.is_finite()).collect();
            (finite.len() >= self.config.min_samples)
                .then(|| median(&mut finite))
                .filter(|&m| value.is_nan() || self.mode.better(m, value))
                .map(|median| Below {
                    median,
                    samples: finite.len(),
                })
        } else {
            None
        };
        others.push(value);
        verdict
    }
}

/// numpy's `median` of a non-empty list: the middle value, or the mean of the two middle ones.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_history() {
        // grace 2, 3 samples needed, max_t 5, larger is better.
        let mut m = Median::new(MedianConfig::new(2), 5, Mode::Max);
        // Epoch 1 is before grace: never a stop, even for a bad value.
        for v in [0.5, 0.6, 0.7, 0.1] {
            assert_eq!(m.on_report(1, v), None);
        }
        // Epoch 2: A 0.6, B 0.7, C 0.8 find fewer than 3 values before them: continue.
        assert_eq!(m.on_report(2, 0.6), None);
        assert_eq!(m.on_report(2, 0.7), None);
        assert_eq!(m.on_report(2, 0.8), None);
        // D 0.65: median of [0.6, 0.7, 0.8] = 0.7 > 0.65: stop.
        assert_eq!(
            m.on_report(2, 0.65),
            Some(Below {
                median: 0.7,
                samples: 3
            })
        );
        // E 0.7: median of [0.6, 0.65, 0.7, 0.8] = (0.65 + 0.7) / 2 = 0.675 < 0.7: continue.
        assert_eq!(m.on_report(2, 0.7), None);
        // F 0.7: median of [0.6, 0.65, 0.7, 0.7, 0.8] = 0.7, a tie: continue (only a value
        // strictly worse than the median stops).
        assert_eq!(m.on_report(2, 0.7), None);
        // NaN and infinite values of others are left out; a NaN of its own stops a trial.
        assert_eq!(m.on_report(3, f64::NAN), None); // fewer than 3 finite before it
        assert_eq!(m.on_report(3, f64::INFINITY), None);
        for v in [0.1, 0.2, 0.3] {
            m.on_report(3, v);
        }
        // At epoch 3: finite [0.1, 0.2, 0.3] → median 0.2; NaN stops.
        assert_eq!(
            m.on_report(3, f64::NAN),
            Some(Below {
                median: 0.2,
                samples: 3
            })
        );
        // Epoch 5 = max_t: the trial ends anyway, no verdict.
        for v in [0.9, 0.9, 0.9] {
            m.on_report(5, v);
        }
        assert_eq!(m.on_report(5, 0.0), None);
    }

    #[test]
    fn min_mode_stops_larger_losses() {
        let mut m = Median::new(MedianConfig::new(1), 3, Mode::Min);
        for v in [1.0, 2.0, 3.0] {
            m.on_report(1, v);
        }
        assert!(m.on_report(1, 2.5).is_some()); // median 2.0 < 2.5: worse
        assert!(m.on_report(1, 1.5).is_none()); // median of [1, 2, 2.5, 3] = 2.25 > 1.5
    }
}
