//! What the scheduler tells the outside: a [`Progress`] snapshot for display, and one
//! [`TrialRecord`] per trial for `trials.parquet`.

use super::{Scheduler, WorkerId};
use proto::TrialId;
use results_format::{TrialRecord, TrialStatus};

/// A trial that is being trained right now.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningTrial {
    pub trial_id: TrialId,
    pub label: String,
    pub attempt: u32,
    /// The last epoch this attempt reported (0 before its first).
    pub epoch: u32,
    pub epochs: u32,
    pub worker: WorkerId,
    pub worker_name: String,
}

/// A snapshot of the sweep for progress display.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Every trial, those tpe will still suggest included.
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    /// Ended early by a stopping rule (issue 12).
    pub stopped: usize,
    /// Trials tpe will still suggest.
    pub to_suggest: usize,
    /// Registered workers not (yet) lost.
    pub workers_alive: usize,
    pub running_trials: Vec<RunningTrial>,
    /// Epochs done: every epoch of finished, failed and stopped trials (a stopped trial's
    /// remaining epochs are never trained, so they count as done), the recorded ones of others.
    pub epochs_done: u64,
}

impl Progress {
    /// Every trial is finished, failed or stopped (and none is left to suggest).
    pub fn is_done(&self) -> bool {
        self.finished + self.failed + self.stopped == self.total
    }
}

impl Scheduler {
    pub fn progress(&self) -> Progress {
        let to_suggest = usize::try_from(self.to_suggest).unwrap_or(usize::MAX);
        let mut p = Progress {
            total: self.trials.len().saturating_add(to_suggest),
            to_suggest,
            workers_alive: self.workers.values().filter(|w| !w.lost).count(),
            ..Progress::default()
        };
        for t in &self.trials {
            p.epochs_done += u64::from(if t.status.is_terminal() {
                t.hparams.epochs
            } else {
                t.recorded
            });
            match t.status {
                TrialStatus::Queued => p.queued += 1,
                TrialStatus::Running => p.running += 1,
                TrialStatus::Finished => p.finished += 1,
                TrialStatus::Failed => p.failed += 1,
                TrialStatus::Stopped => p.stopped += 1,
            }
            if let Some(l) = &t.lease {
                p.running_trials.push(RunningTrial {
                    trial_id: t.id.clone(),
                    label: t.hparams.label(),
                    attempt: l.attempt,
                    epoch: l.epoch,
                    epochs: t.hparams.epochs,
                    worker: l.worker.clone(),
                    worker_name: t.worker_name.clone().unwrap_or_default(),
                });
            }
        }
        p
    }

    /// One record per trial, in input order (a tpe experiment's trials in the order they
    /// were suggested).
    pub fn records(&self) -> Vec<TrialRecord> {
        self.trials
            .iter()
            .map(|t| {
                let exp = &self.experiments[t.exp];
                TrialRecord {
                    trial_id: t.id.clone(),
                    experiment: t.experiment.clone(),
                    hparams: t.hparams.clone(),
                    status: t.status,
                    attempts: t.attempts,
                    worker: t.worker_name.clone(),
                    device: t.device.clone(),
                    started_at: t.started_at,
                    finished_at: t.finished_at,
                    best: t.best,
                    test_acc: t.final_test_acc,
                    epochs_done: t.recorded,
                    last_error: t.last_error.clone(),
                    worker_build: t.worker_build.clone(),
                    search: exp.search.as_str(),
                    goal: exp.goal,
                    stop: t.stop.as_ref().map(|s| s.record()),
                }
            })
            .collect()
    }
}
