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
    Asha { rung: f64, cutoff: f64 },
    /// Worse than the median of `samples` other trials' values at the same epoch.
    Median { median: f64, samples: usize },
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
                write!(f, "asha: worse than the cutoff {cutoff} of the rung at {rung} epochs")
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
    /// Each trial's last reported epoch and its first training loss.
    trials: HashMap<K, (u32, f64)>,
    stopped: HashMap<K, Stop>,
}

impl<K: Clone + Eq + Hash> Stopper<K> {
    /// The rules of `rules` for trials of `max_t` epochs (the experiment's `epochs`) judged on a
    /// metric where `mode` is better; an error names the rule and the setting.
    pub fn new(rules: &StopRules, mode: Mode, max_t: u32) -> Result<Self> {
        let invalid = |rule, reason| Err(Error::InvalidRule { rule, reason });
        if max_t == 0 {
            return invalid("*", "the experiment must have at least 1 epoch".into());
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
