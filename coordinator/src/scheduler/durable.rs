//! What survives a restart: each trial's [`DurableTrial`], the stored suggestions of tpe
//! experiments, and the recorded epochs the stop rules are rebuilt from. Put back in that
//! order by `SweepState::open`: suggestions first (they are trials too), then every trial's
//! state, then the epochs in their recorded order.

use super::{Restored, Scheduler};
use crate::suggest::Suggested;
use crate::trial::DurableTrial;
use proto::{EpochMetrics, TrialId};
use results_format::TrialStatus;
use std::collections::HashMap;

impl Scheduler {
    /// The trial's durable state, `None` for an unknown id.
    pub fn durable(&self, id: &TrialId) -> Option<DurableTrial> {
        let t = self.trial(id).ok()?;
        Some(DurableTrial {
            status: t.status,
            attempts: t.attempts,
            failures: t.failures,
            recorded: t.recorded,
            best: t.best,
            final_test_acc: t.final_test_acc,
            worker_name: t.worker_name.clone(),
            device: t.device.clone(),
            started_at: t.started_at,
            finished_at: t.finished_at,
            last_error: t.last_error.clone(),
            worker_build: t.worker_build.clone(),
            stop: t.stop.clone(),
        })
    }

    /// Puts back the suggestions an earlier start stored, in their order: each is a trial of
    /// its experiment again (queued until [`Scheduler::restore`] says more), and the next
    /// suggestion of that experiment takes the next index. Suggestions of an experiment that
    /// no longer searches with tpe are left out. Returns how many were put back.
    pub fn restore_suggestions(&mut self, stored: &[Suggested]) -> usize {
        let mut restored = 0;
        for s in stored {
            let is_tpe = self
                .experiment_index
                .get(&s.experiment)
                .is_some_and(|&e| self.experiments[e].search == crate::sweep::SearchKind::Tpe);
            if !is_tpe {
                continue;
            }
            if let Some(i) = self.add_suggested(s) {
                self.queue.push_back(i);
                restored += 1;
            }
        }
        restored
    }

    /// Puts back the durable state of an earlier start of the coordinator (`incarnation` is
    /// this start's number, > 0) and rebuilds the queue: finished and stopped trials stay so,
    /// failed ones stay failed unless `retry_failed`, a trial a rule had stopped ends stopped,
    /// everything else is queued again, keeping its recorded epochs; partly trained trials go
    /// first. Must be called before any lease.
    pub fn restore(
        &mut self,
        stored: HashMap<TrialId, DurableTrial>,
        retry_failed: bool,
        incarnation: u64,
    ) -> Restored {
        self.incarnation = incarnation;
        let mut r = Restored::default();
        let mut seen = 0;
        for t in &mut self.trials {
            let Some(d) = stored.get(&t.id) else {
                r.new += 1;
                continue;
            };
            seen += 1;
            t.attempts = d.attempts;
            t.failures = d.failures;
            t.recorded = d.recorded.min(t.hparams.epochs);
            t.best = d.best;
            t.final_test_acc = d.final_test_acc;
            t.worker_name = d.worker_name.clone();
            t.device = d.device.clone();
            t.started_at = d.started_at;
            t.finished_at = d.finished_at;
            t.last_error = d.last_error.clone();
            t.worker_build = d.worker_build.clone();
            t.stop = d.stop.clone();
            t.lease = None;
            t.status = match d.status {
                TrialStatus::Finished => {
                    r.finished += 1;
                    TrialStatus::Finished
                }
                // Resume never restarts a stopped trial, even one whose worker had not yet
                // uploaded its artifacts when the coordinator went down.
                _ if t.stop.is_some() => {
                    r.stopped += 1;
                    TrialStatus::Stopped
                }
                TrialStatus::Failed if !retry_failed => {
                    r.failed += 1;
                    TrialStatus::Failed
                }
                TrialStatus::Failed => {
                    r.retried += 1;
                    t.failures = 0;
                    t.finished_at = None;
                    TrialStatus::Queued
                }
                TrialStatus::Queued | TrialStatus::Running | TrialStatus::Stopped => {
                    TrialStatus::Queued
                }
            };
            if t.status == TrialStatus::Queued && t.recorded > 0 {
                r.resumed += 1;
            }
        }
        r.dropped = stored.len() - seen;
        // Keep the cost order of `new`, partly trained trials first.
        let order: Vec<usize> = self.queue.drain(..).collect();
        let (partial, rest): (Vec<usize>, Vec<usize>) = order
            .into_iter()
            .filter(|&i| self.trials[i].status == TrialStatus::Queued)
            .partition(|&i| self.trials[i].recorded > 0);
        self.queue = partial.into_iter().chain(rest).collect();
        r
    }

    /// Feeds the recorded epochs, in their recorded (sequence) order, to the stop rules of
    /// their experiments: afterwards every rule answers as the first coordinator's would.
    pub fn replay_epochs<'a>(
        &mut self,
        epochs: impl IntoIterator<Item = (&'a TrialId, &'a EpochMetrics)>,
    ) {
        for (trial, metrics) in epochs {
            self.replay_epoch(trial, metrics);
        }
    }
}
