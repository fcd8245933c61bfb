//! Early stopping: the rules of an experiment's `stop` table over its trials' per-epoch
//! reports, as one state machine.
//!
//! [`Stopper::on_epoch`] takes each trial's report of each epoch, in the order the coordinator
//! records them, and answers continue or stop. Its state is a function of the reports fed to it
//! and their order alone (no clock, no randomness), so a restarted coordinator that feeds the
//! recorded epochs again in their recorded order ([`Stopper::replay`]) is in the same state
//! and gives the same answers as the one that crashed. A report that repeats an epoch the trial
//! already reported changes nothing (it gets the answer its trial has).
//!
//! Rules, in the order they are asked (every rule records every report whatever the verdict):
//! divergence ([`divergence`]), ASHA ([`asha`]), median ([`median`]). The first that stops the
//! trial gives the reason. No rule stops a trial at `max_t`, its last epoch, except divergence.

pub mod asha;
pub mod divergence;
pub mod median;

use crate::{Error, Mode, Result};
use asha::{Asha, AshaConfig};
use divergence::{Diverged, DivergenceConfig};
use median::{Median, MedianConfig};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;

/// An experiment's `stop` table: any of the three rules, several at once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StopRules {
    pub asha: Option<AshaConfig>,
    pub median: Option<MedianConfig>,
    pub divergence: Option<DivergenceConfig>,
}

/// One trial's report of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport<K> {
    pub trial: K,
    /// 1-based.
    pub epoch: u32,
    /// The experiment's metric at this epoch.
    pub metric: f64,
    pub train_loss: f64,
    /// `None` when the trial has no validation split.
    pub val_loss: Option<f64>,
}

/// Which rule stopped a trial (`as_str` is the name trials.parquet can carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Asha,
    Median,
    Divergence,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Asha => "asha",
            Rule::Median => "median",
            Rule::Divergence => "divergence",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a trial was stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    /// Worse than the rung's cutoff (the metric's units). `rung` is the rung's milestone.
    Asha {
        rung: f64,
        cutoff: f64,
    },
    /// Worse than the median of `samples` other trials' values at the same epoch.
    Median {
        median: f64,
        samples: usize,
    },
    Diverged(Diverged),
}

impl StopReason {
    pub fn rule(&self) -> Rule {
        match self {
            StopReason::Asha { .. } => Rule::Asha,
            StopReason::Median { .. } => Rule::Median,
            StopReason::Diverged(_) => Rule::Divergence,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Asha { rung, cutoff } => {
                write!(
                    f,
                    "asha: worse than the cutoff {cutoff} of the rung at {rung} epochs"
                )
            }
            StopReason::Median { median, samples } => write!(
                f,
                "median: worse than the median {median} of {samples} other trials at this epoch"
            ),
            StopReason::Diverged(Diverged::NonFinite { loss, value }) => {
                write!(f, "divergence: {loss} is {value}")
            }
            StopReason::Diverged(Diverged::Exploded {
                train_loss,
                first,
                factor,
            }) => write!(
                f,
                "divergence: train_loss {train_loss} is above {factor} × the first epoch's {first}"
            ),
        }
    }
}

/// A stop: at which epoch (the last the trial records), its metric there, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    pub epoch: u32,
    pub metric: f64,
    pub reason: StopReason,
}

impl Stop {
    pub fn rule(&self) -> Rule {
        self.reason.rule()
    }
}

/// The answer to an epoch report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Continue,
    Stop(Stop),
}

/// The stopping rules of one experiment and what they have recorded.
#[derive(Debug, Clone)]
pub struct Stopper<K> {
    mode: Mode,
    max_t: u32,
    asha: Option<Asha<K>>,
    median: Option<Median>,
    divergence: Option<DivergenceConfig>,
    /// Each trial's last reported epoch, and the training loss of its first report (its
    /// epoch 1, unless the history fed in lacks that epoch), the divergence rule's baseline.
    trials: HashMap<K, (u32, f64)>,
    stopped: HashMap<K, Stop>,
}

impl<K: Clone + Eq + Hash> Stopper<K> {
    /// The rules of `rules` for trials of `max_t` epochs (the experiment's `epochs`) judged on a
    /// metric where `mode` is better; an error names the rule and the setting.
    pub fn new(rules: &StopRules, mode: Mode, max_t: u32) -> Result<Self> {
        let invalid = |rule, reason| Err(Error::InvalidRule { rule, reason });
        if max_t == 0 {
            return Err(Error::NoEpochs);
        }
        if let Some(reason) = rules.asha.and_then(|c| c.problem(max_t)) {
            return invalid("asha", reason);
        }
        if let Some(reason) = rules.median.and_then(|c| c.problem()) {
            return invalid("median", reason);
        }
        if let Some(reason) = rules.divergence.and_then(|c| c.problem()) {
            return invalid("divergence", reason);
        }
        Ok(Stopper {
            mode,
            max_t,
            asha: rules.asha.map(|c| Asha::new(c, max_t, mode)),
            median: rules.median.map(|c| Median::new(c, max_t, mode)),
            divergence: rules.divergence,
            trials: HashMap::new(),
            stopped: HashMap::new(),
        })
    }

    /// A stopper fed `history`, the recorded reports in their recorded order: the state a
    /// restarted coordinator resumes with. [`Stopper::stopped`] then tells which trials were
    /// stopped, and further reports get the answers the first coordinator would have given.
    pub fn replay(
        rules: &StopRules,
        mode: Mode,
        max_t: u32,
        history: impl IntoIterator<Item = EpochReport<K>>,
    ) -> Result<Self> {
        let mut stopper = Stopper::new(rules, mode, max_t)?;
        for report in history {
            stopper.on_epoch(&report);
        }
        Ok(stopper)
    }

    /// The epochs below `max_t` after which a rule may stop a trial by comparing it with
    /// others: there a worker must wait for the answer to its report before training on.
    /// (Divergence needs no wait: it depends on the trial's own numbers.)
    pub fn rung_epochs(&self) -> Vec<u32> {
        let mut epochs = BTreeSet::new();
        if let Some(asha) = &self.asha {
            epochs.extend(asha.rung_epochs());
        }
        if let Some(median) = &self.median {
            epochs.extend(median.decision_epochs());
        }
        epochs.into_iter().collect()
    }

    /// The stop of `trial`, if a rule stopped it.
    pub fn stopped(&self, trial: &K) -> Option<&Stop> {
        self.stopped.get(trial)
    }

    /// Records `report` and answers whether its trial goes on. A stopped trial's reports, and a
    /// report of an epoch its trial already reported, change nothing.
    pub fn on_epoch(&mut self, report: &EpochReport<K>) -> Decision {
        if let Some(stop) = self.stopped.get(&report.trial) {
            return Decision::Stop(*stop);
        }
        let first_train_loss = match self.trials.get_mut(&report.trial) {
            Some((last, _)) if report.epoch <= *last => return Decision::Continue,
            Some((last, first)) => {
                *last = report.epoch;
                Some(*first)
            }
            None => {
                let entry = (report.epoch, report.train_loss);
                self.trials.insert(report.trial.clone(), entry);
                None
            }
        };
        let (trial, epoch, metric) = (&report.trial, report.epoch, report.metric);
        let mut reason = self.divergence.and_then(|c| {
            divergence::check(c, first_train_loss, report.train_loss, report.val_loss)
                .map(StopReason::Diverged)
        });
        if let Some(asha) = &mut self.asha {
            if reason.is_none() {
                reason = asha
                    .on_report(trial, epoch, metric)
                    .filter(|c| c.stop)
                    .map(|c| StopReason::Asha {
                        rung: c.rung,
                        cutoff: c.cutoff.unwrap_or(f64::NAN),
                    });
            }
        }
        if let Some(median) = &mut self.median {
            let below = median.on_report(epoch, metric);
            reason = reason.or(below.map(|b| StopReason::Median {
                median: b.median,
                samples: b.samples,
            }));
        }
        let Some(reason) = reason else {
            return Decision::Continue;
        };
        // Ray offers a trial's last result to the bracket once more when it ends
        // (`on_trial_complete`); for a trial that diverged that is what records its value.
        if let Some(asha) = &mut self.asha {
            asha.on_end(trial, epoch, metric);
        }
        let stop = Stop {
            epoch,
            metric,
            reason,
        };
        self.stopped.insert(trial.clone(), stop);
        Decision::Stop(stop)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn max_t(&self) -> u32 {
        self.max_t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    fn report(trial: u32, epoch: u32, metric: f64) -> EpochReport<u32> {
        EpochReport {
            trial,
            epoch,
            metric,
            train_loss: 1.0 - metric,
            val_loss: Some(1.0 - metric),
        }
    }

    fn rules(asha: bool, median: bool, divergence: bool) -> StopRules {
        StopRules {
            asha: asha.then_some(AshaConfig {
                grace: 1,
                reduction: 3.0,
            }),
            median: median.then_some(MedianConfig::new(2)),
            divergence: divergence.then_some(DivergenceConfig { factor: 3.0 }),
        }
    }

    #[test]
    fn bad_settings_name_the_rule() {
        let err = |r: StopRules, max_t| Stopper::<u32>::new(&r, Mode::Max, max_t).unwrap_err();
        let asha = |grace, reduction| StopRules {
            asha: Some(AshaConfig { grace, reduction }),
            ..Default::default()
        };
        assert_eq!(
            err(asha(11, 3.0), 10).to_string(),
            "stop rule asha: grace (11) must be at most the experiment's epochs (10)"
        );
        assert!(err(asha(1, 1.0), 10).to_string().contains("reduction"));
        assert!(err(asha(0, 3.0), 10).to_string().contains("grace"));
        let median = StopRules {
            median: Some(MedianConfig::new(0)),
            ..Default::default()
        };
        assert!(err(median, 10)
            .to_string()
            .starts_with("stop rule median: "));
        let divergence = StopRules {
            divergence: Some(DivergenceConfig { factor: 0.0 }),
            ..Default::default()
        };
        assert!(err(divergence, 10)
            .to_string()
            .starts_with("stop rule divergence: "));
    }

    #[test]
    fn rung_epochs_are_where_a_comparison_can_stop_a_trial() {
        let s = |r: StopRules, max_t| Stopper::<u32>::new(&r, Mode::Max, max_t).unwrap();
        // ASHA grace 1, reduction 3, 20 epochs: rungs 1, 3, 9.
        assert_eq!(s(rules(true, false, true), 20).rung_epochs(), vec![1, 3, 9]);
        // The median rule from grace 2 to the epoch before the last: 2..=5 of 6.
        assert_eq!(
            s(rules(false, true, false), 6).rung_epochs(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(
            s(rules(true, true, false), 6).rung_epochs(),
            vec![1, 2, 3, 4, 5]
        );
        // Divergence alone never makes a worker wait.
        assert_eq!(
            s(rules(false, false, true), 6).rung_epochs(),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn a_hand_written_history_through_all_three_rules() {
        let mut s = Stopper::new(&rules(true, true, true), Mode::Max, 5).unwrap();
        let stop_rule = |d: Decision| match d {
            Decision::Stop(stop) => Some(stop.rule()),
            Decision::Continue => None,
        };
        // Epoch 1 (ASHA rung 1, cutoff = 66.67th percentile of earlier values):
        // 1: 0.5 first at the rung; 2: 0.6 ≥ 0.5; 3: 0.7 ≥ 0.5 + 0.1 · 0.667 = 0.567.
        assert_eq!(stop_rule(s.on_epoch(&report(1, 1, 0.5))), None);
        assert_eq!(stop_rule(s.on_epoch(&report(2, 1, 0.6))), None);
        assert_eq!(stop_rule(s.on_epoch(&report(3, 1, 0.7))), None);
        // 4: train loss NaN → divergence first (ASHA would not have stopped 0.65 either way,
        // and it still records 0.65 at rung 1, as Ray's on_trial_complete).
        let nan = EpochReport {
            train_loss: f64::NAN,
            ..report(4, 1, 0.65)
        };
        assert_eq!(stop_rule(s.on_epoch(&nan)), Some(Rule::Divergence));
        // 5: 0.55 < cutoff of [0.5, 0.6, 0.65, 0.7] (index 2 → 0.65 + 0.05 · 0 = 0.65): ASHA.
        let d = s.on_epoch(&report(5, 1, 0.55));
        let Decision::Stop(stop) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            (stop.epoch, stop.rule()),
            (1, Rule::Asha),
            "{}",
            stop.reason
        );
        assert!(matches!(stop.reason, StopReason::Asha { rung, cutoff }
            if rung == 1.0 && (cutoff - 0.65).abs() < 1e-12));
        // A stopped trial's later report is answered with its stop and changes nothing.
        assert_eq!(s.on_epoch(&report(5, 2, 0.9)), Decision::Stop(stop));
        // Epoch 2 (no ASHA rung; median from grace 2 with 3 samples): 1: 0.60, 2: 0.70, 3: 0.80
        // continue (too few before them); 1 again at epoch 2 is a repeat: nothing recorded.
        for (t, v) in [(1, 0.60), (2, 0.70), (3, 0.80)] {
            assert_eq!(stop_rule(s.on_epoch(&report(t, 2, v))), None);
        }
        assert_eq!(s.on_epoch(&report(1, 2, 0.0)), Decision::Continue);
        // Epoch 3 (ASHA rung 3): 3: 0.85 first at rung 3; 2: 0.75 < cutoff 0.85 → ASHA.
        assert_eq!(stop_rule(s.on_epoch(&report(3, 3, 0.85))), None);
        assert_eq!(stop_rule(s.on_epoch(&report(2, 3, 0.75))), Some(Rule::Asha));
        // 1: 0.80 vs rung 3 [0.75, 0.85] cutoff 0.75 + 0.1 · 0.667 = 0.817 → ASHA again.
        assert_eq!(stop_rule(s.on_epoch(&report(1, 3, 0.80))), Some(Rule::Asha));
        // A training loss above 3 × the first: trial 3 started at 1 - 0.7 = 0.3; 0.95 > 0.9.
        let exploded = EpochReport {
            train_loss: 0.95,
            ..report(3, 4, 0.86)
        };
        assert_eq!(stop_rule(s.on_epoch(&exploded)), Some(Rule::Divergence));
        assert_eq!(s.stopped(&3).map(|s| s.epoch), Some(4));
    }

    #[test]
    fn the_median_rule_compares_with_others_at_the_same_epoch() {
        let mut s = Stopper::new(&rules(false, true, false), Mode::Max, 10).unwrap();
        for t in 1..=3 {
            assert_eq!(s.on_epoch(&report(t, 1, 0.9)), Decision::Continue);
            assert_eq!(s.on_epoch(&report(t, 2, 0.5)), Decision::Continue);
        }
        // Trial 4 at epoch 2: median of [0.5, 0.5, 0.5] = 0.5; 0.4 is worse. (Epoch 1's 0.9s
        // do not count: only values at the same epoch do.)
        s.on_epoch(&report(4, 1, 0.1));
        assert!(matches!(
            s.on_epoch(&report(4, 2, 0.4)),
            Decision::Stop(Stop {
                epoch: 2,
                reason: StopReason::Median { samples: 3, .. },
                ..
            })
        ));
    }

    /// A deterministic interleaving of `n` trials of the synthetic objective with noise, through
    /// `stopper`: every report recorded (as the coordinator records it) with the answer given.
    fn simulate(
        stopper: &mut Stopper<u32>,
        n: u32,
        max_t: u32,
    ) -> Vec<(EpochReport<u32>, Decision)> {
        let mut next_epoch: Vec<u32> = vec![1; n as usize];
        let mut out = Vec::new();
        let mut tick: u32 = 0;
        while next_epoch.iter().any(|&e| e <= max_t) {
            tick += 1;
            // Several trials run at once; which reports next is scrambled but fixed.
            let t = (tick.wrapping_mul(2_654_435_761) >> 7) % n;
            let e = next_epoch[t as usize];
            if e > max_t {
                continue;
            }
            let lr = 10f64.powf(-3.0 + 3.0 * f64::from(t) / f64::from(n));
            let noise = 0.01 * f64::from((t * 31 + e * 17) % 7) - 0.03;
            let metric = synthetic::val_acc(lr, 64.0 + f64::from(t), 0.2, e) + noise;
            // Trial 5 blows up at epoch 4.
            let train_loss = if t == 5 && e >= 4 { 10.0 } else { 1.0 - metric };
            let r = EpochReport {
                trial: t,
                epoch: e,
                metric,
                train_loss,
                val_loss: Some(1.0 - metric),
            };
            let d = stopper.on_epoch(&r);
            next_epoch[t as usize] = if matches!(d, Decision::Stop(_)) {
                u32::MAX
            } else {
                e + 1
            };
            out.push((r, d));
        }
        out
    }

    #[test]
    fn replaying_the_recorded_epochs_gives_the_same_decisions() {
        let (r, max_t) = (rules(true, true, true), 9);
        let mut first = Stopper::new(&r, Mode::Max, max_t).unwrap();
        let history = simulate(&mut first, 24, max_t);
        let stops = history
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Stop(_)))
            .count();
        let asha_stops = history
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Stop(s) if s.rule() == Rule::Asha))
            .count();
        assert!(asha_stops >= 5 && stops > asha_stops, "{stops} stops");
        // A coordinator that crashed after any number of recorded reports replays them in
        // order, then gets the rest: every later answer is the one the first one gave.
        for cut in [
            0,
            1,
            17,
            history.len() / 2,
            history.len() - 1,
            history.len(),
        ] {
            let (before, after) = history.split_at(cut);
            let mut restarted =
                Stopper::replay(&r, Mode::Max, max_t, before.iter().map(|(r, _)| r.clone()))
                    .unwrap();
            for (report, decision) in after {
                assert_eq!(
                    restarted.on_epoch(report),
                    *decision,
                    "cut {cut}, {report:?}"
                );
            }
            for t in 0..24 {
                assert_eq!(restarted.stopped(&t), first.stopped(&t), "trial {t}");
            }
        }
        // And a report that arrives again after the restart (the worker retrained the epoch
        // it never got an answer for) gets the same answer as the first time.
        let (last_report, last_decision) = history.last().unwrap();
        let mut restarted = Stopper::replay(
            &r,
            Mode::Max,
            max_t,
            history[..history.len() - 1].iter().map(|(r, _)| r.clone()),
        )
        .unwrap();
        assert_eq!(restarted.on_epoch(last_report), *last_decision);
        assert_eq!(restarted.on_epoch(last_report), *last_decision);
    }
}
