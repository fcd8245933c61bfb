//! What the coordinator knows about a trial, named once for every module that handles one:
//! the sweep expands into [`TrialSpec`]s, the scheduler queues them, and [`DurableTrial`] is
//! the part of a trial's state that [`crate::store`] keeps across restarts. The trial's status
//! and best epoch are values of the results format ([`results_format::TrialStatus`],
//! [`results_format::Best`]); a stopping rule's verdict is a [`StopInfo`].

use chrono::{DateTime, Utc};
use proto::{Hyperparams, TrialId};
use results_format::{Best, StopRecord, TrialStatus};
use search::Rule;

/// One trial of a sweep, as the sweep file expands it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    /// `hparams.trial_id()`.
    pub id: TrialId,
    /// The name of the experiment that first produced this configuration.
    pub experiment: String,
    pub hparams: Hyperparams,
}

impl TrialSpec {
    pub fn new(experiment: impl Into<String>, hparams: Hyperparams) -> TrialSpec {
        TrialSpec {
            id: hparams.trial_id(),
            experiment: experiment.into(),
            hparams,
        }
    }
}

/// What survives a coordinator restart of one trial: everything but its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableTrial {
    pub status: TrialStatus,
    /// Leases handed out, over every start of the coordinator.
    pub attempts: u32,
    /// Attempts that ended badly (lease expired, retryable failure).
    pub failures: u32,
    /// Epochs 1..=recorded are recorded.
    pub recorded: u32,
    pub best: Option<Best>,
    pub final_test_acc: Option<f64>,
    pub worker_name: Option<String>,
    pub device: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// issue 10: the build of the latest attempt's worker.
    pub worker_build: Option<String>,
    /// Set once a stopping rule ended the trial (issue 12): it then ends as `stopped`.
    pub stop: Option<StopInfo>,
}

/// A stopping rule's verdict on a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct StopInfo {
    pub rule: Rule,
    /// The epoch it stopped at: the last it records, or, for a loss that came out non-finite,
    /// the epoch that did (not recorded).
    pub epoch: u32,
    /// The experiment's metric at that epoch (NaN when the epoch is not recorded): what TPE
    /// sees of a stopped trial.
    pub metric: f64,
    /// In words, for the logs and the worker.
    pub reason: String,
}

impl StopInfo {
    pub fn record(&self) -> StopRecord {
        StopRecord {
            rule: self.rule.as_str().to_owned(),
            epoch: self.epoch,
        }
    }
}
