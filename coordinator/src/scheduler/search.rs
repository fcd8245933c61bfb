//! The scheduler's part of issue 12: each experiment's goal, stop rules and tpe budget;
//! suggesting a tpe trial when a worker is free and nothing is queued; judging each recorded
//! epoch with the experiment's [`Stopper`]; a loss that came out non-finite.

use super::{Result, Scheduler, SchedulerError, TrialState, WorkerId};
use crate::suggest::{Finished, Suggested};
use crate::sweep::{ExperimentPlan, SearchKind};
use crate::trial::{StopInfo, TrialSpec};
use proto::{EpochMetrics, TrialId};
use results_format::best::EpochValues;
use results_format::{Goal, TrialStatus};
use search::{Decision, EpochReport, Rule, Stopper};
use std::time::Instant;

/// How one experiment picks and judges its trials, and what its rules have recorded.
#[derive(Debug)]
pub(super) struct ExperimentState {
    pub(super) name: String,
    pub(super) search: SearchKind,
    pub(super) goal: Goal,
    pub(super) stopper: Option<Stopper<TrialId>>,
    /// Where a worker waits for the verdict on its report ([`Stopper::rung_epochs`]).
    pub(super) rung_epochs: Vec<u32>,
    pub(super) divergence: Option<f64>,
    /// tpe: trials asked for, and suggested so far (stored ones included).
    pub(super) budget: u64,
    pub(super) suggested: u64,
    /// Its same-shape trials may lease as fused groups (the sweep's `fuse`, issue 13).
    pub(super) fuse: bool,
}

impl ExperimentState {
    /// The state of `plan`; stop rules that cannot be set up (the sweep reader checks them,
    /// so only a plan built by hand gets here) are left out.
    fn of(plan: &ExperimentPlan) -> ExperimentState {
        let stopper = plan
            .epochs
            .filter(|_| plan.stop != search::StopRules::default())
            .and_then(|max_t| Stopper::new(&plan.stop, plan.goal.mode, max_t).ok());
        ExperimentState {
            name: plan.name.clone(),
            search: plan.search,
            goal: plan.goal,
            rung_epochs: stopper
                .as_ref()
                .map(Stopper::rung_epochs)
                .unwrap_or_default(),
            stopper,
            divergence: plan.stop.divergence.map(|d| d.factor),
            budget: if plan.search == SearchKind::Tpe {
                plan.trials
            } else {
                0
            },
            suggested: 0,
            fuse: plan.fuse,
        }
    }
}

impl Scheduler {
    pub(super) fn add_experiment(&mut self, plan: &ExperimentPlan) {
        if self.experiment_index.contains_key(&plan.name) {
            return;
        }
        let state = ExperimentState::of(plan);
        self.experiment_index
            .insert(plan.name.clone(), self.experiments.len());
        self.experiments.push(state);
        self.recount_to_suggest();
    }

    /// The index of experiment `name`, added as a plain grid if the plan did not list it.
    pub(super) fn experiment_of(&mut self, name: &str) -> usize {
        if let Some(&i) = self.experiment_index.get(name) {
            return i;
        }
        self.add_experiment(&ExperimentPlan::grid(name));
        self.experiments.len() - 1
    }

    /// Adds a suggested trial (queued, not leased) and counts its index against its
    /// experiment's budget; returns its index, `None` when the trial exists already (then
    /// only the index is counted: it is never drawn again).
    pub(super) fn add_suggested(&mut self, s: &Suggested) -> Option<usize> {
        let exp = self.experiment_of(&s.experiment);
        let e = &mut self.experiments[exp];
        e.suggested = e.suggested.max(s.index + 1);
        self.recount_to_suggest();
        let spec = TrialSpec::new(s.experiment.clone(), s.hparams.clone());
        if self.index.contains_key(&spec.id) {
            return None;
        }
        let i = self.trials.len();
        self.index.insert(spec.id.clone(), i);
        let mut state = TrialState::new(spec, exp);
        state.config = Some(s.config.clone());
        self.trials.push(state);
        Some(i)
    }

    /// Trials the tpe experiments have still to suggest.
    fn recount_to_suggest(&mut self) {
        self.to_suggest = self
            .experiments
            .iter()
            .map(|e| e.budget.saturating_sub(e.suggested))
            .sum();
    }

    /// The next suggestion of the first tpe experiment with trials to come, added to the
    /// trials; `None` when no experiment has any (or the suggester gave up on them).
    pub(super) fn suggest_next(&mut self) -> Option<(usize, Suggested)> {
        while self.to_suggest > 0 {
            let exp = self
                .experiments
                .iter()
                .position(|e| e.search == SearchKind::Tpe && e.suggested < e.budget)?;
            let finished = self.finished_of(exp);
            let (name, index) = (
                self.experiments[exp].name.clone(),
                self.experiments[exp].suggested,
            );
            let index_of = &self.index;
            let suggested = match &self.suggester {
                Some(suggester) => {
                    suggester.suggest(&name, index, &finished, &mut |id| index_of.contains_key(id))
                }
                None => Err("the sweep has no suggester".into()),
            };
            match suggested {
                Ok(s) if s.index == index => {
                    if let Some(i) = self.add_suggested(&s) {
                        return Some((i, s));
                    }
                    self.give_up(exp, "it suggested an existing trial".into());
                }
                Ok(s) => self.give_up(exp, format!("it answered index {} for {index}", s.index)),
                Err(e) => self.give_up(exp, e),
            }
        }
        None
    }

    /// Stops suggesting for experiment `exp`, which then has fewer trials than asked.
    fn give_up(&mut self, exp: usize, why: String) {
        let e = &mut self.experiments[exp];
        let left = e.budget.saturating_sub(e.suggested);
        e.budget = e.suggested;
        self.recount_to_suggest();
        let e = &self.experiments[exp];
        self.notices.push(format!(
            "experiment {:?}: tpe gave up after {} of {} trials: {why}",
            e.name,
            e.suggested,
            e.suggested + left
        ));
    }

    /// The trials of experiment `exp` that have a result, in the order they were suggested.
    fn finished_of(&self, exp: usize) -> Vec<Finished> {
        let goal = self.experiments[exp].goal;
        self.trials
            .iter()
            .filter(|t| t.exp == exp)
            .filter_map(|t| {
                let config = t.config.clone()?;
                if let Some(stop) = &t.stop {
                    return Some(Finished {
                        config,
                        value: stop.metric,
                        stopped_at: Some(stop.epoch),
                    });
                }
                let best = t.best.filter(|b| b.metric == goal.metric)?;
                (t.status == TrialStatus::Finished).then_some(Finished {
                    config,
                    value: best.value,
                    stopped_at: None,
                })
            })
            .collect()
    }

    /// Feeds a newly recorded epoch of trial `i` to its experiment's stop rules; a stop is
    /// kept on the trial ([`Scheduler::stop_of`]).
    pub(super) fn judge(&mut self, i: usize, metrics: &EpochMetrics) {
        let t = &self.trials[i];
        let exp = &mut self.experiments[t.exp];
        let Some(stopper) = &mut exp.stopper else {
            return;
        };
        let report = EpochReport {
            trial: t.id.clone(),
            epoch: metrics.epoch,
            metric: metrics.get(exp.goal.metric).unwrap_or(f64::NAN),
            train_loss: metrics.train_loss,
            val_loss: metrics.get(results_format::Metric::ValLoss),
        };
        if let Decision::Stop(stop) = stopper.on_epoch(&report) {
            self.trials[i].stop = Some(StopInfo {
                rule: stop.rule(),
                epoch: stop.epoch,
                metric: stop.metric,
                reason: format!("stopped at epoch {}: {}", stop.epoch, stop.reason),
            });
        }
    }

    /// Replays a recorded epoch into its experiment's stop rules (a restart): the rules end
    /// in the state the first coordinator had.
    pub(super) fn replay_epoch(&mut self, trial: &TrialId, metrics: &EpochMetrics) {
        let Some(&i) = self.index.get(trial) else {
            return;
        };
        let stop = self.trials[i].stop.clone();
        self.judge(i, metrics);
        // The stored verdict is the one that was acted on.
        if stop.is_some() {
            self.trials[i].stop = stop;
        }
    }

    /// Whether any experiment has stop rules (then a restart replays the recorded epochs).
    pub fn has_stop_rules(&self) -> bool {
        self.experiments.iter().any(|e| e.stopper.is_some())
    }

    /// The stop decided for `trial`, if a rule stopped it.
    pub fn stop_of(&self, trial: &TrialId) -> Option<&StopInfo> {
        self.trial(trial).ok()?.stop.as_ref()
    }

    /// The leased trial's epoch `epoch` came out with a non-finite loss (`loss` was `value`):
    /// with the divergence rule the trial stops there (`stopped`, nothing recorded for that
    /// epoch); without it the trial fails, as any non-finite loss did before stop rules.
    /// Returns the trial's stop, `None` when it failed.
    #[allow(clippy::too_many_arguments)] // one call, each argument a field of the request
    pub fn diverged(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        epoch: u32,
        loss: &str,
        value: f64,
        now: Instant,
    ) -> Result<Option<StopInfo>> {
        let i = self.holder(worker, trial, attempt, now)?;
        let t = &mut self.trials[i];
        let next = t.recorded.saturating_add(1);
        if epoch == 0 || epoch > t.hparams.epochs || epoch > next {
            return Err(SchedulerError::EpochOutOfRange {
                trial: trial.clone(),
                epoch,
                epochs: t.hparams.epochs,
                next: next.min(t.hparams.epochs),
            });
        }
        let reason = format!("training diverged: {loss} is {value} at epoch {epoch}");
        if self.experiments[t.exp].divergence.is_none() {
            self.fail(worker, trial, attempt, &reason, false, now)?;
            return Ok(None);
        }
        if t.stop.is_none() {
            t.stop = Some(StopInfo {
                rule: Rule::Divergence,
                epoch,
                metric: f64::NAN,
                reason: format!(
                    "stopped at epoch {epoch} by the divergence rule: {loss} is {value}"
                ),
            });
        }
        Ok(t.stop.clone())
    }
}

#[cfg(test)]
mod tests;
