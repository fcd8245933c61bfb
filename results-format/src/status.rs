//! A trial's status: the `status` column of `trials.parquet`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialStatus {
    Queued,
    Running,
    Finished,
    Failed,
    /// issue 12: ended early by a stopping rule (ASHA, median, divergence): a result, not an
    /// error. Its `stop_rule` and `stop_epoch` say which and when.
    Stopped,
}

impl TrialStatus {
    pub const ALL: [TrialStatus; 5] = [
        TrialStatus::Queued,
        TrialStatus::Running,
        TrialStatus::Finished,
        TrialStatus::Failed,
        TrialStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Queued => "queued",
            TrialStatus::Running => "running",
            TrialStatus::Finished => "finished",
            TrialStatus::Failed => "failed",
            TrialStatus::Stopped => "stopped",
        }
    }

    /// Finished, failed or stopped: the trial gets no more leases.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TrialStatus::Finished | TrialStatus::Failed | TrialStatus::Stopped
        )
    }

    /// Finished or stopped: the trial has a result (its best epoch) to rank.
    pub fn has_result(self) -> bool {
        matches!(self, TrialStatus::Finished | TrialStatus::Stopped)
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrialStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown trial status {s:?}"))
    }
}
