//! The coordinator's durable state: `<results>/state.redb`, an embedded ACID database (redb).
//!
//! Four tables:
//! - `meta`: the format, the sweep's name and the incarnation (how many times a coordinator
//!   started on this folder; it makes worker ids unique across restarts);
//! - `trials`: trial id → [`DurableTrial`] (status, attempts, recorded epochs, best epoch, ...);
//! - `epochs`: sequence number → the full Parquet row of one recorded epoch. Sequence numbers
//!   grow with every accepted epoch; `epochs/part-<first>-<last>.parquet` files cover
//!   contiguous ranges of them, so on a restart the rows after the last part are written again
//!   and none twice;
//! - `checkpoints`: trial id → the worker's checkpoint after its last recorded epoch;
//! - `suggestions` (issue 12): (experiment, index) → a tpe suggestion (its hyperparameters and
//!   drawn configuration), written in the same transaction as the trial's first state and
//!   before the lease carrying it is answered: a restarted coordinator puts every one back
//!   and suggests from the next index on.
//!
//! Every change of a trial is one redb write transaction: the epoch row, the trial's new state
//! and its checkpoint commit together or not at all, whatever kills the process. Records are
//! protobuf messages (prost derive, explicit tags) so that later versions can add fields and
//! still read old state (`records.rs`).
//!
//! [`Committer`] (`committer.rs`) is the single writer: a thread that takes batches of changes from the
//! service, applies everything queued in one transaction (group commit: one fsync for many
//! concurrent reports), answers each caller, then hands the committed epoch rows to the
//! Parquet writer in sequence order.

mod committer;
mod records;

pub use committer::Committer;

use crate::suggest::Suggested;
use crate::trial::DurableTrial;
use proto::TrialId;
use records::{StoredEpoch, StoredSuggestion, StoredTrial};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use results_format::{EpochRecord, ResultsDir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FORMAT: &str = "hypersweep-state/1";

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const TRIALS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("trials");
const EPOCHS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("epochs");
const CHECKPOINTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");
const SUGGESTIONS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("suggestions");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: another coordinator is using this results folder (its state file is locked)")]
    Locked { path: PathBuf },
    #[error("{path}: {what}")]
    Db { path: PathBuf, what: String },
    #[error(
        "{path} holds the state of sweep {stored:?}, not {wanted:?}: pass --fresh to delete it \
         and start over, or --results DIR to write elsewhere"
    )]
    OtherSweep {
        path: PathBuf,
        stored: String,
        wanted: String,
    },
    #[error("{path}: {what} (this coordinator reads state format {FORMAT})")]
    Corrupt { path: PathBuf, what: String },
    #[error("the state committer stopped")]
    CommitterGone,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One change to write.
#[derive(Debug, Clone)]
pub enum Op {
    Trial(TrialId, DurableTrial),
    /// A recorded epoch and its sequence number.
    Epoch(u64, Box<EpochRecord>),
    /// The checkpoint after `epoch`; replaces the trial's previous one.
    Checkpoint(TrialId, u32, Vec<u8>),
    DropCheckpoint(TrialId),
    /// A tpe suggestion (issue 12).
    Suggestion(Box<Suggested>),
}

/// What [`Store::open`] found.
pub struct Opened {
    pub store: Store,
    /// This start's number: 1 for a new folder.
    pub incarnation: u64,
    pub trials: HashMap<TrialId, DurableTrial>,
    /// The next epoch sequence number to hand out.
    pub next_seq: u64,
    /// Every stored tpe suggestion, by experiment then index.
    pub suggestions: Vec<Suggested>,
}

/// The open state database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) `<dir>/state.redb` for sweep `sweep`, counts this start as a new
    /// incarnation and reads every trial's state.
    pub fn open(dir: &ResultsDir, sweep: &str) -> Result<Opened> {
        let path = dir.state();
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            e => db_err(&path, "opening", e),
        })?;
        let store = Store {
            db: Arc::new(db),
            path,
        };
        let incarnation = store.begin(sweep)?;
        let trials = store.read_trials()?;
        let next_seq = store.last_seq()?.map_or(0, |s| s + 1);
        let suggestions = store.read_suggestions()?;
        Ok(Opened {
            store,
            incarnation,
            trials,
            next_seq,
            suggestions,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks format and sweep name (writing them on a new folder) and bumps the incarnation.
    fn begin(&self, sweep: &str) -> Result<u64> {
        let p = &self.path;
        let txn = self.db.begin_write().map_err(|e| db_err(p, "writing", e))?;
        let incarnation = {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| db_err(p, "opening meta", e))?;
            let get = |meta: &redb::Table<'_, &str, &[u8]>, key: &str| -> Result<Option<Vec<u8>>> {
                Ok(meta
                    .get(key)
                    .map_err(|e| db_err(p, "reading meta", e))?
                    .map(|v| v.value().to_vec()))
            };
            match get(&meta, "format")? {
                None => {
                    meta.insert("format", FORMAT.as_bytes())
                        .map_err(|e| db_err(p, "writing meta", e))?;
                    meta.insert("sweep", sweep.as_bytes())
                        .map_err(|e| db_err(p, "writing meta", e))?;
                }
                Some(f) if f == FORMAT.as_bytes() => {}
                Some(f) => {
                    return Err(StoreError::Corrupt {
                        path: p.clone(),
                        what: format!("unknown state format {:?}", String::from_utf8_lossy(&f)),
                    })
                }
            }
            let stored = get(&meta, "sweep")?.unwrap_or_default();
            if stored != sweep.as_bytes() {
                return Err(StoreError::OtherSweep {
                    path: p.clone(),
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    wanted: sweep.to_owned(),
                });
            }
            let previous = get(&meta, "incarnation")?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_le_bytes);
            let incarnation = previous + 1;
            meta.insert("incarnation", incarnation.to_le_bytes().as_slice())
                .map_err(|e| db_err(p, "writing meta", e))?;
            // Create the other tables so that readers never meet a missing one.
            txn.open_table(TRIALS)
                .map_err(|e| db_err(p, "opening trials", e))?;
            txn.open_table(EPOCHS)
                .map_err(|e| db_err(p, "opening epochs", e))?;
            txn.open_table(CHECKPOINTS)
                .map_err(|e| db_err(p, "opening checkpoints", e))?;
            txn.open_table(SUGGESTIONS)
                .map_err(|e| db_err(p, "opening suggestions", e))?;
            incarnation
        };
        txn.commit().map_err(|e| db_err(p, "committing", e))?;
        Ok(incarnation)
    }

    fn read_trials(&self) -> Result<HashMap<TrialId, DurableTrial>> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, "reading", e))?;
        let table = txn
            .open_table(TRIALS)
            .map_err(|e| db_err(p, "opening trials", e))?;
        let mut out = HashMap::new();
        for entry in table.iter().map_err(|e| db_err(p, "reading trials", e))? {
            let (k, v) = entry.map_err(|e| db_err(p, "reading trials", e))?;
            let id = k.value().to_owned();
            let row = <StoredTrial as prost::Message>::decode(v.value()).map_err(|e| {
                StoreError::Corrupt {
                    path: p.clone(),
                    what: format!("trial {id}: {e}"),
                }
            })?;
            let d = row.into_domain().map_err(|what| StoreError::Corrupt {
                path: p.clone(),
                what: format!("trial {id}: {what}"),
            })?;
            out.insert(TrialId(id), d);
        }
        Ok(out)
    }

    fn read_suggestions(&self) -> Result<Vec<Suggested>> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, "reading", e))?;
        let table = txn
            .open_table(SUGGESTIONS)
            .map_err(|e| db_err(p, "opening suggestions", e))?;
        let mut out = Vec::new();
        for entry in table
            .iter()
            .map_err(|e| db_err(p, "reading suggestions", e))?
        {
            let (k, v) = entry.map_err(|e| db_err(p, "reading suggestions", e))?;
            let (experiment, index) = k.value();
            let s = <StoredSuggestion as prost::Message>::decode(v.value())
                .map_err(|e| e.to_string())
                .and_then(StoredSuggestion::into_domain)
                .map_err(|what| StoreError::Corrupt {
                    path: p.clone(),
                    what: format!("suggestion {index} of experiment {experiment:?}: {what}"),
                })?;
            out.push(s);
        }
        Ok(out)
    }

    fn last_seq(&self) -> Result<Option<u64>> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, "reading", e))?;
        let table = txn
            .open_table(EPOCHS)
            .map_err(|e| db_err(p, "opening epochs", e))?;
        let last = table.last().map_err(|e| db_err(p, "reading epochs", e))?;
        Ok(last.map(|(k, _)| k.value()))
    }

    /// Every epoch row with a sequence number `>= from`, in order.
    pub fn epochs_from(&self, from: u64) -> Result<Vec<(u64, EpochRecord)>> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, "reading", e))?;
        let table = txn
            .open_table(EPOCHS)
            .map_err(|e| db_err(p, "opening epochs", e))?;
        let mut out = Vec::new();
        for entry in table
            .range(from..)
            .map_err(|e| db_err(p, "reading epochs", e))?
        {
            let (k, v) = entry.map_err(|e| db_err(p, "reading epochs", e))?;
            let seq = k.value();
            let row = <StoredEpoch as prost::Message>::decode(v.value())
                .map_err(|e| e.to_string())
                .and_then(StoredEpoch::into_domain)
                .map_err(|what| StoreError::Corrupt {
                    path: p.clone(),
                    what: format!("epoch row {seq}: {what}"),
                })?;
            out.push((seq, row));
        }
        Ok(out)
    }

    /// The trial's last checkpoint and the epoch it was taken after.
    pub fn checkpoint(&self, trial: &TrialId) -> Result<Option<(u32, Vec<u8>)>> {
        let p = &self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, "reading", e))?;
        let table = txn
            .open_table(CHECKPOINTS)
            .map_err(|e| db_err(p, "opening checkpoints", e))?;
        let Some(v) = table
            .get(trial.as_str())
            .map_err(|e| db_err(p, "reading checkpoints", e))?
        else {
            return Ok(None);
        };
        let v = v.value();
        let Some((epoch, bytes)) = v.split_first_chunk::<4>() else {
            return Err(StoreError::Corrupt {
                path: p.clone(),
                what: format!("checkpoint of {trial} is {} bytes long", v.len()),
            });
        };
        Ok(Some((u32::from_le_bytes(*epoch), bytes.to_vec())))
    }

    /// Applies `ops` in one durable transaction.
    pub fn apply(&self, ops: &[Op]) -> Result<()> {
        let p = &self.path;
        let txn = self.db.begin_write().map_err(|e| db_err(p, "writing", e))?;
        {
            let mut trials = txn
                .open_table(TRIALS)
                .map_err(|e| db_err(p, "opening trials", e))?;
            let mut epochs = txn
                .open_table(EPOCHS)
                .map_err(|e| db_err(p, "opening epochs", e))?;
            let mut checkpoints = txn
                .open_table(CHECKPOINTS)
                .map_err(|e| db_err(p, "opening checkpoints", e))?;
            let mut suggestions = txn
                .open_table(SUGGESTIONS)
                .map_err(|e| db_err(p, "opening suggestions", e))?;
            for op in ops {
                let written = match op {
                    Op::Trial(id, d) => trials
                        .insert(
                            id.as_str(),
                            prost::Message::encode_to_vec(&StoredTrial::from_domain(d)).as_slice(),
                        )
                        .map(drop),
                    Op::Epoch(seq, row) => epochs
                        .insert(
                            *seq,
                            prost::Message::encode_to_vec(&StoredEpoch::from_domain(row))
                                .as_slice(),
                        )
                        .map(drop),
                    Op::Checkpoint(id, epoch, bytes) => {
                        let mut v = Vec::with_capacity(4 + bytes.len());
                        v.extend_from_slice(&epoch.to_le_bytes());
                        v.extend_from_slice(bytes);
                        checkpoints.insert(id.as_str(), v.as_slice()).map(drop)
                    }
                    Op::DropCheckpoint(id) => checkpoints.remove(id.as_str()).map(drop),
                    Op::Suggestion(s) => suggestions
                        .insert(
                            (s.experiment.as_str(), s.index),
                            prost::Message::encode_to_vec(&StoredSuggestion::from_domain(s))
                                .as_slice(),
                        )
                        .map(drop),
                };
                written.map_err(|e| db_err(p, "writing", e))?;
            }
        }
        txn.commit().map_err(|e| db_err(p, "committing", e))
    }
}

fn db_err(path: &Path, action: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        what: format!("{action}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use proto::{Arch, EpochMetrics, Hyperparams};
    use results_format::{Best, Metric, TrialStatus};

    fn hp() -> Hyperparams {
        Hyperparams {
            arch: Arch::Ffv3,
            hidden: 16,
            dropout: 0.25,
            lr: 0.1,
            epochs: 3,
            batch_size: 64,
            momentum: 0.9,
            weight_decay: 0.0,
            validation: 0.0,
            seed: 7,
            objective: Default::default(),
        }
    }

    fn row(epoch: u32) -> EpochRecord {
        let h = hp();
        EpochRecord {
            trial_id: h.trial_id(),
            experiment: "e".into(),
            hparams: h,
            metrics: EpochMetrics {
                epoch,
                train_loss: 0.5,
                train_acc: 0.8,
                val_loss: f64::NAN,
                val_acc: f64::NAN,
                test_loss: 0.6,
                test_acc: 0.7,
                seconds: 1.5,
            },
            worker: "local-1".into(),
            device: "cpu".into(),
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            device_name: "NVIDIA H200".into(),
            host: "gpu-1".into(),
            gpu_peak_memory_bytes: Some(1 << 30),
            threads: Some(2),
        }
    }

    #[test]
    fn state_survives_reopening_and_counts_incarnations() {
        let dir = tempfile::tempdir().unwrap();
        let id = hp().trial_id();
        let d = DurableTrial {
            status: TrialStatus::Running,
            attempts: 2,
            failures: 1,
            recorded: 1,
            best: Some(Best {
                epoch: 1,
                value: 0.7,
                tie: Some(0.6),
                metric: Metric::TestAcc,
            }),
            final_test_acc: None,
            worker_name: Some("local-1".into()),
            device: Some("cpu".into()),
            started_at: Some(row(1).recorded_at),
            finished_at: None,
            last_error: Some("lease expired".into()),
            worker_build: Some("0.5.0 (cuda build, libtorch 2.11.0, CUDA 13.0)".into()),
            stop: Some(crate::trial::StopInfo {
                rule: search::Rule::Asha,
                epoch: 1,
                metric: 0.7,
                reason: "stopped at epoch 1: asha".into(),
            }),
        };
        {
            let o = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
            assert_eq!(o.incarnation, 1);
            assert!(o.trials.is_empty());
            assert_eq!(o.next_seq, 0);
            o.store
                .apply(&[
                    Op::Trial(id.clone(), d.clone()),
                    Op::Epoch(0, Box::new(row(1))),
                    Op::Checkpoint(id.clone(), 1, vec![1, 2, 3]),
                ])
                .unwrap();
        }
        let o = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
        assert_eq!(o.incarnation, 2);
        assert_eq!(o.trials.get(&id), Some(&d));
        assert_eq!(o.next_seq, 1);
        let rows = o.store.epochs_from(0).unwrap();
        assert_eq!(rows.len(), 1);
        // NaN survives (protobuf doubles), so compare field by field.
        assert_eq!(rows[0].1.metrics.epoch, 1);
        assert!(rows[0].1.metrics.val_loss.is_nan());
        assert_eq!(rows[0].1.recorded_at, row(1).recorded_at);
        let (got, want) = (&rows[0].1, row(1));
        assert_eq!(
            (&got.device_name, &got.host, got.gpu_peak_memory_bytes),
            (&want.device_name, &want.host, want.gpu_peak_memory_bytes)
        );
        assert_eq!(o.store.checkpoint(&id).unwrap(), Some((1, vec![1, 2, 3])));
        o.store.apply(&[Op::DropCheckpoint(id.clone())]).unwrap();
        assert_eq!(o.store.checkpoint(&id).unwrap(), None);
    }

    #[test]
    fn suggestions_come_back_by_experiment_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let suggestion = |experiment: &str, index: u64| Suggested {
            experiment: experiment.into(),
            index,
            hparams: Hyperparams {
                lr: 0.01 * (index + 1) as f64,
                objective: proto::Objective::Synthetic,
                ..hp()
            },
            config: vec![0.01 * (index + 1) as f64, 2.0],
        };
        {
            let o = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
            assert!(o.suggestions.is_empty());
            let ops: Vec<Op> = [("b", 0), ("a", 1), ("a", 0), ("a", 10)]
                .into_iter()
                .map(|(e, i)| Op::Suggestion(Box::new(suggestion(e, i))))
                .collect();
            o.store.apply(&ops).unwrap();
        }
        let o = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
        let got: Vec<(String, u64)> = o
            .suggestions
            .iter()
            .map(|s| (s.experiment.clone(), s.index))
            .collect();
        let want = [("a", 0), ("a", 1), ("a", 10), ("b", 0)].map(|(e, i)| (e.to_string(), i));
        assert_eq!(got, want);
        assert_eq!(o.suggestions[2], suggestion("a", 10));
    }

    #[test]
    fn refuses_another_sweep_and_a_second_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
        let locked = Store::open(&ResultsDir::new(dir.path()), "lab")
            .err()
            .expect("locked");
        assert!(
            locked.to_string().contains("another coordinator"),
            "{locked}"
        );
        drop(first);
        let other = Store::open(&ResultsDir::new(dir.path()), "grid")
            .err()
            .expect("other sweep");
        let msg = other.to_string();
        assert!(msg.contains("\"lab\"") && msg.contains("--fresh"), "{msg}");
    }

    #[tokio::test]
    async fn committer_groups_and_forwards_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let o = Store::open(&ResultsDir::new(dir.path()), "lab").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let metrics = crate::metrics::Metrics::new(Default::default);
        let c = Committer::spawn(o.store.clone(), metrics.clone(), move |rows| {
            for (seq, _) in rows {
                tx.send(seq).unwrap();
            }
        });
        let waits: Vec<_> = (0..50)
            .map(|i| c.submit(vec![Op::Epoch(i, Box::new(row(1)))]))
            .collect();
        for w in waits {
            w.await.unwrap();
        }
        let got: Vec<u64> = rx.try_iter().collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(o.store.epochs_from(45).unwrap().len(), 5);
        // Every row counted once, in as many commits as the groups made.
        let text = metrics.encode();
        assert!(
            text.contains("hypersweep_epochs_recorded_total 50\n"),
            "{text}"
        );
        let commits = text
            .lines()
            .find_map(|l| l.strip_prefix("hypersweep_commit_batch_size_count "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap();
        assert!((1..=50).contains(&commits), "{text}");
        assert!(
            text.contains("hypersweep_commit_batch_size_sum 50.0\n"),
            "{text}"
        );
    }
}
