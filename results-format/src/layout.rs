//! Where everything lives under a results folder (`results/<sweep>/` by default):
//!
//! ```text
//! state.redb                          the coordinator's durable state (redb)
//! trials.parquet                      one row per trial, rewritten whole on each flush
//! epochs/part-<first>-<last>.parquet  one row per (trial, epoch); <first>..<last> is the range
//!                                     of state sequence numbers the part holds (12 digits each)
//! artifacts/<trial>/<artifact>        what a worker uploaded: config.json, model.safetensors,
//!                                     predictions.safetensors (see proto::Artifact)
//! report/                             the report (index.html, figures, CSVs, best/)
//! logs/worker-<n>.log                 local workers' logs
//! ```

use proto::{Artifact, TrialId};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.redb";
pub const TRIALS_FILE: &str = "trials.parquet";
pub const EPOCHS_DIR: &str = "epochs";
pub const ARTIFACTS_DIR: &str = "artifacts";
pub const REPORT_DIR: &str = "report";
pub const LOGS_DIR: &str = "logs";

/// Everything a run leaves in its results folder (what `--fresh` deletes).
pub const RUN_OUTPUTS: [&str; 6] = [
    STATE_FILE,
    TRIALS_FILE,
    EPOCHS_DIR,
    ARTIFACTS_DIR,
    REPORT_DIR,
    LOGS_DIR,
];

/// A results folder and the paths of what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsDir(PathBuf);

impl ResultsDir {
    pub fn new(dir: impl Into<PathBuf>) -> ResultsDir {
        ResultsDir(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn state(&self) -> PathBuf {
        self.0.join(STATE_FILE)
    }

    pub fn trials(&self) -> PathBuf {
        self.0.join(TRIALS_FILE)
    }

    pub fn epochs(&self) -> PathBuf {
        self.0.join(EPOCHS_DIR)
    }

    /// `epochs/part-<first>-<last>.parquet`.
    pub fn epoch_part(&self, first: u64, last: u64) -> PathBuf {
        self.epochs().join(part_name(first, last))
    }

    pub fn artifacts(&self) -> PathBuf {
        self.0.join(ARTIFACTS_DIR)
    }

    /// `artifacts/<trial>/`. Trial ids are checked to be plain names before they get here
    /// ([`TrialId::is_well_formed`]).
    pub fn trial_artifacts(&self, trial: &TrialId) -> PathBuf {
        self.artifacts().join(trial.as_str())
    }

    pub fn artifact(&self, trial: &TrialId, artifact: Artifact) -> PathBuf {
        self.trial_artifacts(trial).join(artifact.file_name())
    }

    pub fn report(&self) -> PathBuf {
        self.0.join(REPORT_DIR)
    }

    pub fn logs(&self) -> PathBuf {
        self.0.join(LOGS_DIR)
    }

    /// `logs/worker-<n>.log`, the log of local worker `n` (1-based).
    pub fn worker_log(&self, n: usize) -> PathBuf {
        self.logs().join(format!("worker-{n}.log"))
    }

    /// The outputs of an earlier run present in this folder.
    pub fn existing_outputs(&self) -> Vec<&'static str> {
        RUN_OUTPUTS
            .into_iter()
            .filter(|o| self.0.join(o).exists())
            .collect()
    }
}

/// The name of the part file holding sequence numbers `first..=last`.
pub fn part_name(first: u64, last: u64) -> String {
    format!("part-{first:012}-{last:012}.parquet")
}

/// The sequence range of a part file's name, `part-<first>-<last>.parquet`.
pub fn part_range(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .split_once('-')?;
    if first.len() != 12 || last.len() != 12 {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// True for a file a reader of `epochs/` takes: a visible `*.parquet` (hidden names are
/// files being written).
pub fn is_epochs_file(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip() {
        assert_eq!(part_name(0, 41), "part-000000000000-000000000041.parquet");
        assert_eq!(part_range(&part_name(7, 9)), Some((7, 9)));
        assert_eq!(part_range("part-1-2.parquet"), None);
        assert_eq!(part_range("part-000000000009-000000000007.parquet"), None);
        assert!(is_epochs_file(&part_name(1, 2)));
        assert!(!is_epochs_file(
            ".part-000000000001-000000000002.parquet.tmp-1-0"
        ));
    }
}
