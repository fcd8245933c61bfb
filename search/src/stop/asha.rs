//! ASHA, asynchronous successive halving (Li et al. 2018), as Ray Tune's `ASHAScheduler`
//! (`AsyncHyperBandScheduler` with its default single bracket, `s = 0`) applies it; the code
//! follows `ray/tune/schedulers/async_hyperband.py` (Ray 2.x) step by step:
//!
//! - rungs at `grace · reduction^k` for `k < int(ln(max_t / grace) / ln(reduction) + 1)`,
//!   kept in descending order; a rung at or past `max_t` is never consulted;
//! - a result at epoch `t < max_t` is checked against the highest rung `m <= t` that has no
//!   value of this trial yet (rungs the trial already has are skipped, not stopped at); the
//!   trial stops if its value is below the cutoff, the `(1 - 1/reduction)` quantile of the
//!   values recorded at that rung before it (numpy's `nanpercentile`, linear interpolation;
//!   no cutoff while the rung is empty), and its value is recorded there either way;
//! - a result at `max_t` ends the trial (Ray's `STOP`; here it simply completes) and, as Ray's
//!   `on_trial_complete`, is offered to the bracket once more, as is the last result of a
//!   trial stopped by any rule;
//! - values are compared as Ray does with `metric_op`: negated for `mode = min`.
//!
//! With whole-number rungs (an integer reduction) a trial reaching epoch `m` is checked at rung
//! `m` exactly; with a fractional reduction (Ray allows one) two rungs may fall within one epoch
//! and the lower one is checked at a later epoch, exactly as in Ray. [`Asha::rung_epochs`] says
//! at which epochs a check happens, by running that rule for a trial that never stops.
//!
//! Where this differs from Ray: nothing in the decisions. Ray keeps the brackets in a pickled
//! checkpoint; here the state is rebuilt by replaying the recorded epochs in order. Ray's
//! `brackets > 1` (a random bracket per trial) and `stop_last_trials = False` are not offered.

use crate::Mode;
use std::collections::HashMap;
use std::hash::Hash;

/// The settings of `stop = { asha = { grace, reduction } }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AshaConfig {
    /// The first rung's epoch (Ray's `grace_period`), at least 1 and at most `max_t`.
    pub grace: u32,
    /// How much each rung's epoch grows, and `1/reduction` the share of trials a rung lets
    /// through (Ray's `reduction_factor`), above 1.
    pub reduction: f64,
}

impl AshaConfig {
    /// Why these settings are unusable with `max_t` epochs, if they are (Ray's assertions).
    pub(crate) fn problem(&self, max_t: u32) -> Option<String> {
        if self.grace == 0 {
            Some("grace must be at least 1 epoch, got 0".into())
        } else if self.grace > max_t {
            Some(format!(
                "grace ({}) must be at most the experiment's epochs ({max_t})",
                self.grace
            ))
        } else if !(self.reduction.is_finite() && self.reduction > 1.0) {
            Some(format!(
                "reduction must be a number above 1, got {}",
                self.reduction
            ))
        } else {
            None
        }
    }
}

/// A trial checked at a rung: where, against what, and whether it stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Check {
    /// The rung's milestone (`grace · reduction^k`, an epoch count, fractional with a
    /// fractional reduction).
    pub(crate) rung: f64,
    /// The cutoff in the metric's own units, `None` while the rung was empty.
    pub(crate) cutoff: Option<f64>,
    pub(crate) stop: bool,
}

#[derive(Debug, Clone)]
struct Rung<K> {
    milestone: f64,
    /// Each trial's value at this rung, larger is better.
    recorded: HashMap<K, f64>,
}

/// Ray's `_Bracket` plus the `max_t` rule of `AsyncHyperBandScheduler.on_trial_result`.
#[derive(Debug, Clone)]
pub(crate) struct Asha<K> {
    reduction: f64,
    max_t: u32,
    mode: Mode,
    /// Descending milestones, as Ray keeps them.
    rungs: Vec<Rung<K>>,
}

impl<K: Clone + Eq + Hash> Asha<K> {
    /// The bracket of a validated `config` (see [`AshaConfig::problem`]).
    pub(crate) fn new(config: AshaConfig, max_t: u32, mode: Mode) -> Self {
        let rf = config.reduction;
        let min_t = f64::from(config.grace);
        let max_rungs = ((f64::from(max_t) / min_t).ln() / rf.ln() + 1.0) as i64;
        let rungs = (0..max_rungs.max(0))
            .rev()
            .map(|k| Rung {
                milestone: min_t * rf.powf(k as f64),
                recorded: HashMap::new(),
            })
            .collect();
        Asha {
            reduction: rf,
            max_t,
            mode,
            rungs,
        }
    }

    /// The epochs below `max_t` at which a trial is checked (and may be stopped), ascending.
    pub(crate) fn rung_epochs(&self) -> Vec<u32> {
        let mut has = vec![false; self.rungs.len()];
        (1..self.max_t)
            .filter(|&epoch| {
                let due = (0..self.rungs.len())
                    .find(|&i| f64::from(epoch) >= self.rungs[i].milestone && !has[i]);
                due.inspect(|&i| has[i] = true).is_some()
            })
            .collect()
    }

    /// `on_trial_result` for the trial's report of `epoch`: `Some` when it was checked at a rung.
    /// At `max_t` the trial ends and is only recorded, as Ray's `on_trial_complete` does.
    pub(crate) fn on_report(&mut self, trial: &K, epoch: u32, value: f64) -> Option<Check> {
        if epoch >= self.max_t {
            self.on_end(trial, epoch, value);
            return None;
        }
        self.bracket_on_result(trial, epoch, value)
    }

    /// `on_trial_complete`: the trial's last report offered to the bracket once more.
    pub(crate) fn on_end(&mut self, trial: &K, epoch: u32, value: f64) {
        self.bracket_on_result(trial, epoch, value);
    }

    /// Ray's `_Bracket.on_result`.
    fn bracket_on_result(&mut self, trial: &K, epoch: u32, value: f64) -> Option<Check> {
        let t = f64::from(epoch);
        let signed = self.mode.signed(value);
        let percent = (1.0 - 1.0 / self.reduction) * 100.0;
        let rung = self
            .rungs
            .iter_mut()
            .find(|r| t >= r.milestone && !r.recorded.contains_key(trial))?;
        let cutoff = nanpercentile(rung.recorded.values().copied().collect(), percent);
        let stop = cutoff.is_some_and(|c| signed < c);
        rung.recorded.insert(trial.clone(), signed);
        Some(Check {
            rung: rung.milestone,
            cutoff: cutoff.map(|c| self.mode.signed(c)),
            stop,
        })
    }
}

/// numpy's `nanpercentile(values, percent)` with its default linear interpolation, by numpy's
/// arithmetic (`q = percent / 100`, index `(n - 1) q`, `_lerp`); `None` when no value is a
/// number (numpy answers NaN, which Ray's `<` treats as no cutoff).
pub(crate) fn nanpercentile(mut values: Vec<f64>, percent: f64) -> Option<f64> {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let q = percent / 100.0;
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return Some(values[n - 1]);
    }
    if virtual_index < 0.0 {
        return Some(values[0]);
    }
    let previous = virtual_index.floor();
    let gamma = virtual_index - previous;
    let (a, b) = (values[previous as usize], values[previous as usize + 1]);
    let diff = b - a;
    Some(if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(grace: u32, reduction: f64, max_t: u32, mode: Mode) -> Asha<&'static str> {
        Asha::new(AshaConfig { grace, reduction }, max_t, mode)
    }

    fn milestones(a: &Asha<&'static str>) -> Vec<f64> {
        a.rungs.iter().map(|r| r.milestone).collect()
    }

    #[test]
    fn rungs_are_rays() {
        // int(ln(20)/ln(3) + 1) = int(3.73) = 3 rungs: 9, 3, 1 (descending, as Ray).
        let a = asha(1, 3.0, 20, Mode::Max);
        assert_eq!(milestones(&a), vec![9.0, 3.0, 1.0]);
        assert_eq!(a.rung_epochs(), vec![1, 3, 9]);
        // Ray's docstring bracket _Bracket(1, 10, 2, 0): int(ln 10 / ln 2 + 1) = 4 rungs.
        assert_eq!(
            milestones(&asha(1, 2.0, 10, Mode::Max)),
            vec![8.0, 4.0, 2.0, 1.0]
        );
        // A rung at max_t (27 = 3^3) is never a stopping epoch.
        assert_eq!(asha(1, 3.0, 27, Mode::Max).rung_epochs(), vec![1, 3, 9]);
        // grace = max_t: no epoch below max_t to stop at.
        assert_eq!(asha(5, 3.0, 5, Mode::Max).rung_epochs(), Vec::<u32>::new());
        // Fractional reduction 1.5 from 2: milestones 2, 3, 4.5, 6.75 below 8. Epoch 2 → rung
        // 2; 3 → rung 3; 4 → nothing new (4.5 > 4; 3 and 2 recorded); 5 → rung 4.5;
        // 6 → nothing; 7 → rung 6.75.
        let a = asha(2, 1.5, 8, Mode::Max);
        assert_eq!(milestones(&a), vec![6.75, 4.5, 3.0, 2.0]);
        assert_eq!(a.rung_epochs(), vec![2, 3, 5, 7]);
        // Reduction 1.2 from 1, max_t 5: int(ln 5 / ln 1.2 + 1) = 9 rungs, 1.2^k up to 4.2998.
        // Epoch 1 → rung 1; epoch 2 → the highest rung due, 1.728 (1.2 and 1.44 are left
        // behind); 3 → 2.985984 (2.0736 and 2.48832 left behind); 4 → 3.5831808.
        let a = asha(1, 1.2, 5, Mode::Max);
        assert_eq!(a.rungs.len(), 9);
        assert_eq!(a.rung_epochs(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn nanpercentile_is_numpys_linear_interpolation() {
        // np.nanpercentile([2, 4], 50) = 3; ([1, 2, 3, 4], 66.67): index 3 · 0.6667 = 2 → 3;
        // ([5], 75) = 5; NaNs are dropped; nothing left → None.
        assert_eq!(nanpercentile(vec![4.0, 2.0], 50.0), Some(3.0));
        let p = nanpercentile(vec![4.0, 1.0, 3.0, 2.0], (1.0 - 1.0 / 3.0) * 100.0).unwrap();
        assert!((p - 3.0).abs() < 1e-12, "{p}");
        assert_eq!(nanpercentile(vec![5.0], 75.0), Some(5.0));
        assert_eq!(nanpercentile(vec![f64::NAN, 1.0, 3.0], 50.0), Some(2.0));
        assert_eq!(nanpercentile(vec![f64::NAN], 50.0), None);
        // (1 - 1/4) · 100 = 75 of [0.1, 0.2, 0.3, 0.4, 0.5]: index 3 → 0.4.
        assert_eq!(
            nanpercentile(vec![0.1, 0.2, 0.3, 0.4, 0.5], 75.0),
            Some(0.4)
        );
    }

    #[test]
    fn rays_docstring_example() {
        // Ray: b = _Bracket(1, 10, 2, 0); on_result(trial1, 1, 2) → CONTINUE (rung empty);
        // on_result(trial2, 1, 4) → CONTINUE (cutoff of [2] = 2, 4 >= 2); the rung-1 cutoff is
        // then the 50th percentile of [2, 4] = 3; on_result(trial3, 1, 1) → STOP (1 < 3).
        let mut a = asha(1, 2.0, 10, Mode::Max);
        let c1 = a.on_report(&"t1", 1, 2.0).unwrap();
        assert_eq!((c1.rung, c1.cutoff, c1.stop), (1.0, None, false));
        let c2 = a.on_report(&"t2", 1, 4.0).unwrap();
        assert_eq!((c2.cutoff, c2.stop), (Some(2.0), false));
        let c3 = a.on_report(&"t3", 1, 1.0).unwrap();
        assert_eq!((c3.cutoff, c3.stop), (Some(3.0), true));
        // Recorded either way: the rung now holds [2, 4, 1], 50th percentile 2.
        let c4 = a.on_report(&"t4", 1, 1.5).unwrap();
        assert_eq!((c4.cutoff, c4.stop), (Some(2.0), true));
    }

    #[test]
    fn a_hand_written_history_with_reduction_3() {
        // grace 1, reduction 3, max_t 10: rungs 9, 3, 1; cutoff = 66.67th percentile.
        let mut a = asha(1, 3.0, 10, Mode::Max);
        // Epoch 1: A 0.50 (rung empty, continue), B 0.60 (cutoff of [0.5] = 0.5, continue),
        // C 0.40 (cutoff of [0.5, 0.6]: index 0.667 → 0.5 + 0.1 · 0.667 = 0.5667; 0.40 < it: stop),
        // D 0.70 (cutoff of [0.4, 0.5, 0.6]: index 1.333 → 0.5 + 0.1 · 0.333 = 0.5333; continue).
        assert!(!a.on_report(&"A", 1, 0.50).unwrap().stop);
        assert!(!a.on_report(&"B", 1, 0.60).unwrap().stop);
        let c = a.on_report(&"C", 1, 0.40).unwrap();
        assert!(c.stop && (c.cutoff.unwrap() - 0.566_666_666_666_666_7).abs() < 1e-12);
        let d = a.on_report(&"D", 1, 0.70).unwrap();
        assert!(!d.stop && (d.cutoff.unwrap() - 0.533_333_333_333_333_3).abs() < 1e-12);
        // Epoch 2 is no rung: nothing checked.
        assert_eq!(a.on_report(&"A", 2, 0.10), None);
        // Epoch 3: A 0.65 (rung 3 empty, continue); D 0.64 (cutoff of [0.65] = 0.65: stop);
        // B 0.66 (cutoff of [0.64, 0.65]: 0.64 + 0.01 · 0.667 = 0.6467: continue).
        assert!(!a.on_report(&"A", 3, 0.65).unwrap().stop);
        assert!(a.on_report(&"D", 3, 0.64).unwrap().stop);
        assert!(!a.on_report(&"B", 3, 0.66).unwrap().stop);
        // Epoch 10 = max_t: never checked, only recorded (at rung 9, which B skipped here).
        assert_eq!(a.on_report(&"B", 10, 0.0), None);
    }

    #[test]
    fn min_mode_stops_the_larger_values() {
        // Losses 1.0 then 2.0 at rung 1 with reduction 2: cutoff of [-1.0] is -1.0 in Ray's
        // negated units, 1.0 in ours; 2.0 (−2.0 < −1.0) stops, 0.5 does not.
        let mut a = asha(1, 2.0, 4, Mode::Min);
        assert!(!a.on_report(&"a", 1, 1.0).unwrap().stop);
        let c = a.on_report(&"b", 1, 2.0).unwrap();
        assert_eq!((c.cutoff, c.stop), (Some(1.0), true));
        assert!(!a.on_report(&"c", 1, 0.5).unwrap().stop);
    }
}
