//! The trial queue and the lease state machine.
//!
//! Plain data and methods: no I/O, no clock of its own. Every call that depends on time takes
//! `now: Instant`; wall-clock timestamps (for `trials.parquet`) are derived from the
//! `(Instant, DateTime<Utc>)` pair given to [`Scheduler::new`], so tests drive it with
//! virtual time (`start + Duration`).
//!
//! Invariants:
//! - a trial is held by at most one lease; every call about a trial names the attempt it
//!   holds, and calls from any other attempt are [`SchedulerError::StaleAttempt`];
//! - epochs of a trial are recorded in order, each exactly once: a re-leased trial that
//!   retrains an epoch already recorded gets [`ReportOutcome::Duplicate`];
//! - [`LeaseOutcome::Done`] is answered only once every trial is finished or failed;
//! - worker ids carry the coordinator's incarnation (`w3-r2`: third worker of the second
//!   start), so calls from a worker registered before a restart are `UnknownWorker`.
//!
//! Durability: [`Scheduler::durable`] is the part of a trial's state that survives a restart
//! (the service writes it to [`crate::store`] with every change), and [`Scheduler::restore`]
//! puts it back; leases and workers are not durable, a restored running trial is queued again.

use chrono::{DateTime, Utc};
use proto::{EpochMetrics, Hyperparams, TrialId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Why the scheduler refused a call. [`crate::service`] maps each kind to a gRPC code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown worker {0}")]
    UnknownWorker(String),
    #[error("unknown trial {0}")]
    UnknownTrial(TrialId),
    #[error("trial {trial} is not leased (status {status})")]
    NotLeased { trial: TrialId, status: TrialStatus },
    #[error("trial {trial} attempt {attempt} from worker {worker} is stale: {holder}")]
    StaleAttempt {
        trial: TrialId,
        attempt: u32,
        worker: String,
        /// Who holds the trial now, in words.
        holder: String,
    },
    #[error(
        "trial {trial}: epoch {epoch} is out of range (epochs {epochs}, next expected {next})"
    )]
    EpochOutOfRange {
        trial: TrialId,
        epoch: u32,
        epochs: u32,
        next: u32,
    },
    #[error("trial {trial} cannot finish: {recorded} of {epochs} epochs reported")]
    Incomplete {
        trial: TrialId,
        recorded: u32,
        epochs: u32,
    },
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

/// Timings and limits of the lease protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// A lease lapses this long after its last heartbeat or report; a worker silent this long is lost.
    pub lease_timeout: Duration,
    /// Attempts that may end badly (lease expired, retryable failure) before the trial is
    /// failed. Attempts cut short by a coordinator restart are not counted.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_timeout: Duration::from_secs(30),
            max_attempts: 3,
        }
    }
}

/// One trial to run, as the sweep expands it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedTrial {
    pub id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
}

/// A worker's id, assigned at registration: `w1`, `w2`, ...
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a worker says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub name: String,
    pub device: String,
    /// Trials it runs at once; it is never given more leases than this.
    pub slots: u32,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    Lease(Lease),
    /// Every unfinished trial is leased (or the worker's slots are full): ask again later.
    Wait,
    /// Every trial is finished or failed.
    Done,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub trial_id: TrialId,
    /// 1 for the first try, incremented on every re-lease.
    pub attempt: u32,
    pub hparams: Hyperparams,
    /// Epochs already recorded (a re-leased or resumed trial): the worker may start after
    /// them when it gets a checkpoint.
    pub recorded: u32,
}

/// An epoch the scheduler accepted: everything a results row needs besides the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub trial_id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
    pub metrics: EpochMetrics,
    pub worker_name: String,
    pub device: String,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// A new epoch: write it.
    Accepted(Box<Recorded>),
    /// This epoch of this trial is already recorded (a retry or a retrained epoch): nothing to write.
    Duplicate,
}

/// A lease that lapsed in [`Scheduler::expire`].
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub trial_id: TrialId,
    pub attempt: u32,
    pub worker: WorkerId,
    /// True when the trial ran out of attempts and is now failed; false when it was requeued.
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialStatus {
    Queued,
    Running,
    Finished,
    Failed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Queued => "queued",
            TrialStatus::Running => "running",
            TrialStatus::Finished => "finished",
            TrialStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TrialStatus::Finished | TrialStatus::Failed)
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which metric chose a trial's best epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BestBy {
    /// Highest validation accuracy, ties to the lower validation loss.
    ValAcc,
    /// The trial has no validation split (val_* NaN): highest test accuracy, ties to the lower test loss.
    TestAcc,
}

impl BestBy {
    pub fn as_str(self) -> &'static str {
        match self {
            BestBy::ValAcc => "val_acc",
            BestBy::TestAcc => "test_acc",
        }
    }
}

/// Everything `trials.parquet` holds about one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub trial_id: TrialId,
    pub experiment: String,
    pub hparams: Hyperparams,
    pub status: TrialStatus,
    /// Leases handed out so far.
    pub attempts: u32,
    /// Worker name and device of the latest attempt.
    pub worker: Option<String>,
    pub device: Option<String>,
    /// When the latest attempt was leased.
    pub started_at: Option<DateTime<Utc>>,
    /// When the trial finished or failed.
    pub finished_at: Option<DateTime<Utc>>,
    pub best_epoch: Option<u32>,
    /// The best epoch's validation accuracy (its test accuracy when `best_by` is `TestAcc`).
    pub best_val_acc: Option<f64>,
    pub best_by: Option<BestBy>,
    /// Test accuracy after the final epoch.
    pub test_acc: Option<f64>,
    /// Epochs recorded so far.
    pub epochs_done: u32,
    pub last_error: Option<String>,
}

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
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    /// Registered workers not (yet) lost.
    pub workers_alive: usize,
    pub running_trials: Vec<RunningTrial>,
    /// Epochs done: every epoch of finished and failed trials, the recorded ones of others.
    pub epochs_done: u64,
}

impl Progress {
    /// Every trial is finished or failed.
    pub fn is_done(&self) -> bool {
        self.finished + self.failed == self.total
    }
}

#[derive(Debug, Clone)]
struct ActiveLease {
    worker: WorkerId,
    attempt: u32,
    deadline: Instant,
    /// The last epoch this attempt reported.
    epoch: u32,
}

/// A trial's best epoch so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Best {
    pub epoch: u32,
    pub acc: f64,
    pub loss: f64,
    pub by: BestBy,
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
}

/// What [`Scheduler::restore`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub finished: usize,
    pub failed: usize,
    /// Failed trials queued again (`--retry-failed`).
    pub retried: usize,
    /// Unfinished trials with recorded epochs: they resume after them.
    pub resumed: usize,
    /// Trials of the sweep the state did not know: they start from scratch.
    pub new: usize,
    /// Trials in the state that the sweep no longer has: left as they were.
    pub dropped: usize,
}

#[derive(Debug, Clone)]
struct TrialState {
    id: TrialId,
    experiment: String,
    hparams: Hyperparams,
    status: TrialStatus,
    attempts: u32,
    failures: u32,
    lease: Option<ActiveLease>,
    /// The worker of the latest attempt.
    last_worker: Option<WorkerId>,
    worker_name: Option<String>,
    device: Option<String>,
    /// Epochs 1..=recorded are recorded.
    recorded: u32,
    best: Option<Best>,
    final_test_acc: Option<f64>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct WorkerState {
    info: WorkerInfo,
    last_seen: Instant,
    lost: bool,
    /// Leases it holds now.
    held: u32,
}

/// The trial queue and every lease.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// In input order.
    trials: Vec<TrialState>,
    index: HashMap<TrialId, usize>,
    /// Indices into `trials`, next to lease first.
    queue: VecDeque<usize>,
    workers: HashMap<WorkerId, WorkerState>,
    /// Leases held now, by all workers: with `queue`, what makes `is_done` O(1) (a trial is
    /// unfinished exactly when it is queued or leased).
    active_leases: usize,
    next_worker: u64,
    /// Which start of the coordinator this is (0 in tests without a store).
    incarnation: u64,
    epoch_instant: Instant,
    epoch_wall: DateTime<Utc>,
}

impl Scheduler {
    /// Queues `trials` longest first ([`Hyperparams::relative_cost`]; ties keep input order).
    /// `now` and `wall` are the same moment on the monotonic and the wall clock.
    /// A trial id given twice is queued once (the first one wins).
    pub fn new(
        trials: Vec<QueuedTrial>,
        config: SchedulerConfig,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Self {
        let mut states: Vec<TrialState> = Vec::with_capacity(trials.len());
        let mut index = HashMap::with_capacity(trials.len());
        for t in trials {
            if index.contains_key(&t.id) {
                continue;
            }
            index.insert(t.id.clone(), states.len());
            states.push(TrialState {
                id: t.id,
                experiment: t.experiment,
                hparams: t.hparams,
                status: TrialStatus::Queued,
                attempts: 0,
                failures: 0,
                lease: None,
                last_worker: None,
                worker_name: None,
                device: None,
                recorded: 0,
                best: None,
                final_test_acc: None,
                started_at: None,
                finished_at: None,
                last_error: None,
            });
        }
        let mut order: Vec<usize> = (0..states.len()).collect();
        // Stable: equal costs keep input order.
        order.sort_by(|&a, &b| {
            states[b]
                .hparams
                .relative_cost()
                .total_cmp(&states[a].hparams.relative_cost())
        });
        Scheduler {
            config: SchedulerConfig {
                max_attempts: config.max_attempts.max(1),
                ..config
            },
            trials: states,
            index,
            queue: order.into(),
            workers: HashMap::new(),
            active_leases: 0,
            next_worker: 1,
            incarnation: 0,
            epoch_instant: now,
            epoch_wall: wall,
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The wall-clock time of `now`.
    pub fn wall(&self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.epoch_instant);
        self.epoch_wall + chrono::Duration::from_std(since).unwrap_or(chrono::Duration::zero())
    }

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
        })
    }

    /// Puts back the durable state of an earlier start of the coordinator (`incarnation` is
    /// this start's number, > 0) and rebuilds the queue: finished trials stay finished, failed
    /// ones stay failed unless `retry_failed`, everything else is queued again, keeping its
    /// recorded epochs; partly trained trials go first. Must be called before any lease.
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
            t.lease = None;
            t.status = match d.status {
                TrialStatus::Finished => {
                    r.finished += 1;
                    TrialStatus::Finished
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
                TrialStatus::Queued | TrialStatus::Running => TrialStatus::Queued,
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

    /// Registered workers not lost.
    pub fn alive_workers(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.lost)
            .map(|(id, _)| id)
    }

    /// Registered workers, lost ones included.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Forgets lost workers that hold no lease (their calls become `UnknownWorker`, and a
    /// worker that comes back registers again). Returns how many were forgotten.
    pub fn forget_lost_workers(&mut self) -> usize {
        let holding: std::collections::HashSet<&WorkerId> = self
            .trials
            .iter()
            .filter_map(|t| t.lease.as_ref().map(|l| &l.worker))
            .collect();
        let lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| w.lost && !holding.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lost {
            self.workers.remove(id);
        }
        lost.len()
    }

    /// Adds a worker and returns its new id.
    pub fn register(&mut self, info: WorkerInfo, now: Instant) -> WorkerId {
        let id = if self.incarnation == 0 {
            WorkerId(format!("w{}", self.next_worker))
        } else {
            WorkerId(format!("w{}-r{}", self.next_worker, self.incarnation))
        };
        self.next_worker += 1;
        let info = WorkerInfo {
            slots: info.slots.max(1),
            ..info
        };
        self.workers.insert(
            id.clone(),
            WorkerState {
                info,
                last_seen: now,
                lost: false,
                held: 0,
            },
        );
        id
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&WorkerInfo> {
        self.workers.get(id).map(|w| &w.info)
    }

    /// True once the worker was silent for a lease timeout (until it calls again).
    pub fn is_lost(&self, id: &WorkerId) -> Option<bool> {
        self.workers.get(id).map(|w| w.lost)
    }

    /// Hands `worker` the most urgent queued trial.
    pub fn lease(&mut self, worker: &WorkerId, now: Instant) -> Result<LeaseOutcome> {
        self.touch(worker, now)?;
        let w = &self.workers[worker];
        if w.held >= w.info.slots {
            return Ok(LeaseOutcome::Wait);
        }
        let Some(i) = self.queue.pop_front() else {
            return Ok(if self.is_done() {
                LeaseOutcome::Done
            } else {
                LeaseOutcome::Wait
            });
        };
        self.lease_taken(worker);
        let wall = self.wall(now);
        let info = self.workers[worker].info.clone();
        let deadline = now + self.config.lease_timeout;
        let t = &mut self.trials[i];
        t.attempts += 1;
        t.status = TrialStatus::Running;
        t.lease = Some(ActiveLease {
            worker: worker.clone(),
            attempt: t.attempts,
            deadline,
            epoch: 0,
        });
        t.last_worker = Some(worker.clone());
        t.worker_name = Some(info.name);
        t.device = Some(info.device);
        t.started_at = Some(wall);
        Ok(LeaseOutcome::Lease(Lease {
            trial_id: t.id.clone(),
            attempt: t.attempts,
            hparams: t.hparams.clone(),
            recorded: t.recorded,
        }))
    }

    /// Refreshes the leases `worker` says it runs and returns those it no longer holds
    /// (expired, re-leased, finished, unknown): the worker must abandon them.
    pub fn heartbeat(
        &mut self,
        worker: &WorkerId,
        running: &[(TrialId, u32)],
        now: Instant,
    ) -> Result<Vec<(TrialId, u32)>> {
        self.touch(worker, now)?;
        let deadline = now + self.config.lease_timeout;
        let mut abandon = Vec::new();
        for (trial, attempt) in running {
            let held = self.index.get(trial).and_then(|&i| {
                self.trials[i]
                    .lease
                    .as_mut()
                    .filter(|l| &l.worker == worker && l.attempt == *attempt)
            });
            match held {
                Some(lease) => lease.deadline = deadline,
                None => abandon.push((trial.clone(), *attempt)),
            }
        }
        Ok(abandon)
    }

    /// Requeues (at the front) every trial whose lease lapsed, or fails it once it used
    /// `max_attempts`; marks workers silent for a lease timeout as lost.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let timeout = self.config.lease_timeout;
        for w in self.workers.values_mut() {
            if !w.lost && now.saturating_duration_since(w.last_seen) >= timeout {
                w.lost = true;
            }
        }
        let wall = self.wall(now);
        let mut expired = Vec::new();
        for (i, t) in self.trials.iter_mut().enumerate() {
            let Some(lease) = t.lease.take_if(|l| l.deadline <= now) else {
                continue;
            };
            self.active_leases -= 1;
            if let Some(w) = self.workers.get_mut(&lease.worker) {
                w.held = w.held.saturating_sub(1);
            }
            let name = self
                .workers
                .get(&lease.worker)
                .map(|w| w.info.name.as_str())
                .unwrap_or("?");
            t.last_error = Some(format!(
                "lease expired after {} ms without a heartbeat on worker {} ({name}), attempt {}",
                timeout.as_millis(),
                lease.worker,
                lease.attempt
            ));
            t.failures += 1;
            let failed = t.failures >= self.config.max_attempts;
            if failed {
                t.status = TrialStatus::Failed;
                t.finished_at = Some(wall);
            } else {
                t.status = TrialStatus::Queued;
            }
            expired.push((
                i,
                Expired {
                    trial_id: t.id.clone(),
                    attempt: lease.attempt,
                    worker: lease.worker,
                    failed,
                },
            ));
        }
        // Requeued trials go to the front, in their original queue order among themselves.
        for (i, e) in expired.iter().rev() {
            if !e.failed {
                self.queue.push_front(*i);
            }
        }
        expired.into_iter().map(|(_, e)| e).collect()
    }

    /// Records one epoch of a leased trial.
    pub fn report_epoch(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        metrics: EpochMetrics,
        now: Instant,
    ) -> Result<ReportOutcome> {
        let i = self.holder(worker, trial, attempt, now)?;
        let wall = self.wall(now);
        let deadline = now + self.config.lease_timeout;
        let t = &mut self.trials[i];
        let epochs = t.hparams.epochs;
        let next = t.recorded.saturating_add(1);
        if metrics.epoch == 0 || metrics.epoch > epochs || metrics.epoch > next {
            return Err(SchedulerError::EpochOutOfRange {
                trial: trial.clone(),
                epoch: metrics.epoch,
                epochs,
                next: next.min(epochs),
            });
        }
        if let Some(lease) = t.lease.as_mut() {
            lease.deadline = deadline;
            lease.epoch = lease.epoch.max(metrics.epoch);
        }
        if metrics.epoch < next {
            return Ok(ReportOutcome::Duplicate);
        }
        t.recorded = metrics.epoch;
        let candidate = if metrics.val_acc.is_nan() {
            Best {
                epoch: metrics.epoch,
                acc: metrics.test_acc,
                loss: metrics.test_loss,
                by: BestBy::TestAcc,
            }
        } else {
            Best {
                epoch: metrics.epoch,
                acc: metrics.val_acc,
                loss: metrics.val_loss,
                by: BestBy::ValAcc,
            }
        };
        let better = match t.best {
            None => true,
            // A validation-based best always beats a test-based one.
            Some(b) if b.by != candidate.by => candidate.by == BestBy::ValAcc,
            Some(b) => candidate.acc > b.acc || (candidate.acc == b.acc && candidate.loss < b.loss),
        };
        if better {
            t.best = Some(candidate);
        }
        if metrics.epoch == epochs {
            t.final_test_acc = Some(metrics.test_acc);
        }
        let worker_name = self.workers[worker].info.name.clone();
        let device = self.workers[worker].info.device.clone();
        Ok(ReportOutcome::Accepted(Box::new(Recorded {
            trial_id: t.id.clone(),
            experiment: t.experiment.clone(),
            hparams: t.hparams.clone(),
            metrics,
            worker_name,
            device,
            recorded_at: wall,
        })))
    }

    /// The trial trained every epoch.
    pub fn finish(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        now: Instant,
    ) -> Result<()> {
        let i = self.holder(worker, trial, attempt, now)?;
        let wall = self.wall(now);
        let t = &mut self.trials[i];
        if t.recorded < t.hparams.epochs {
            return Err(SchedulerError::Incomplete {
                trial: trial.clone(),
                recorded: t.recorded,
                epochs: t.hparams.epochs,
            });
        }
        t.lease = None;
        self.lease_released(worker);
        let t = &mut self.trials[i];
        t.status = TrialStatus::Finished;
        t.finished_at = Some(wall);
        Ok(())
    }

    /// The trial cannot go on. Retryable failures requeue it (at the front) until it used
    /// `max_attempts`; others fail it at once. Returns the trial's status afterwards.
    pub fn fail(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        reason: &str,
        retryable: bool,
        now: Instant,
    ) -> Result<TrialStatus> {
        let i = self.holder(worker, trial, attempt, now)?;
        let wall = self.wall(now);
        let max_attempts = self.config.max_attempts;
        self.trials[i].lease = None;
        self.lease_released(worker);
        let t = &mut self.trials[i];
        if retryable {
            t.failures += 1;
        }
        if retryable && t.failures < max_attempts {
            t.status = TrialStatus::Queued;
            t.last_error = Some(reason.to_owned());
            self.queue.push_front(i);
        } else {
            t.status = TrialStatus::Failed;
            t.finished_at = Some(wall);
            t.last_error = Some(if retryable {
                format!("{reason} (gave up after {} failed attempts)", t.failures)
            } else {
                reason.to_owned()
            });
        }
        Ok(t.status)
    }

    /// Checks that `worker` ran the latest attempt of `trial` and that the attempt is still
    /// running or finished: the condition to accept its artifacts.
    pub fn check_artifact(&self, worker: &WorkerId, trial: &TrialId, attempt: u32) -> Result<()> {
        if !self.workers.contains_key(worker) {
            return Err(SchedulerError::UnknownWorker(worker.0.clone()));
        }
        let t = self.trial(trial)?;
        if t.last_worker.as_ref() == Some(worker)
            && t.attempts == attempt
            && matches!(t.status, TrialStatus::Running | TrialStatus::Finished)
        {
            return Ok(());
        }
        Err(SchedulerError::StaleAttempt {
            trial: trial.clone(),
            attempt,
            worker: worker.0.clone(),
            holder: format!("the trial is {} at attempt {}", t.status, t.attempts),
        })
    }

    /// Every trial is finished or failed. O(1): a trial is unfinished exactly when it is
    /// queued or leased.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.active_leases == 0
    }

    fn lease_taken(&mut self, worker: &WorkerId) {
        self.active_leases += 1;
        if let Some(w) = self.workers.get_mut(worker) {
            w.held += 1;
        }
    }

    fn lease_released(&mut self, worker: &WorkerId) {
        self.active_leases -= 1;
        if let Some(w) = self.workers.get_mut(worker) {
            w.held = w.held.saturating_sub(1);
        }
    }

    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            total: self.trials.len(),
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

    /// One record per trial, in input order.
    pub fn records(&self) -> Vec<TrialRecord> {
        self.trials
            .iter()
            .map(|t| TrialRecord {
                trial_id: t.id.clone(),
                experiment: t.experiment.clone(),
                hparams: t.hparams.clone(),
                status: t.status,
                attempts: t.attempts,
                worker: t.worker_name.clone(),
                device: t.device.clone(),
                started_at: t.started_at,
                finished_at: t.finished_at,
                best_epoch: t.best.map(|b| b.epoch),
                best_val_acc: t.best.map(|b| b.acc),
                best_by: t.best.map(|b| b.by),
                test_acc: t.final_test_acc,
                epochs_done: t.recorded,
                last_error: t.last_error.clone(),
            })
            .collect()
    }

    fn trial(&self, id: &TrialId) -> Result<&TrialState> {
        self.index
            .get(id)
            .map(|&i| &self.trials[i])
            .ok_or_else(|| SchedulerError::UnknownTrial(id.clone()))
    }

    /// Marks the worker alive; fails when it never registered.
    fn touch(&mut self, worker: &WorkerId, now: Instant) -> Result<()> {
        let w = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| SchedulerError::UnknownWorker(worker.0.clone()))?;
        w.last_seen = w.last_seen.max(now);
        w.lost = false;
        Ok(())
    }

    /// The index of `trial` when `worker` holds its lease at `attempt`.
    fn holder(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        now: Instant,
    ) -> Result<usize> {
        self.touch(worker, now)?;
        let i = *self
            .index
            .get(trial)
            .ok_or_else(|| SchedulerError::UnknownTrial(trial.clone()))?;
        let t = &self.trials[i];
        match &t.lease {
            Some(l) if &l.worker == worker && l.attempt == attempt => Ok(i),
            Some(l) => Err(SchedulerError::StaleAttempt {
                trial: trial.clone(),
                attempt,
                worker: worker.0.clone(),
                holder: format!("attempt {} on worker {} holds it", l.attempt, l.worker),
            }),
            None if attempt < t.attempts || t.last_worker.as_ref() != Some(worker) => {
                Err(SchedulerError::StaleAttempt {
                    trial: trial.clone(),
                    attempt,
                    worker: worker.0.clone(),
                    holder: format!("the trial is {} at attempt {}", t.status, t.attempts),
                })
            }
            None => Err(SchedulerError::NotLeased {
                trial: trial.clone(),
                status: t.status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Arch;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn hp(arch: Arch, hidden: u32, epochs: u32, seed: u64) -> Hyperparams {
        Hyperparams {
            arch,
            hidden,
            epochs,
            seed,
            ..Hyperparams::default()
        }
    }

    fn trial(h: Hyperparams) -> QueuedTrial {
        QueuedTrial {
            id: h.trial_id(),
            experiment: "exp".into(),
            hparams: h,
        }
    }

    fn sched(trials: Vec<Hyperparams>, max_attempts: u32) -> (Scheduler, Instant) {
        let t0 = Instant::now();
        let wall = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = Scheduler::new(
            trials.into_iter().map(trial).collect(),
            SchedulerConfig {
                lease_timeout: TIMEOUT,
                max_attempts,
            },
            t0,
            wall,
        );
        (s, t0)
    }

    fn worker(s: &mut Scheduler, name: &str, slots: u32, now: Instant) -> WorkerId {
        s.register(
            WorkerInfo {
                name: name.into(),
                device: "cpu".into(),
                slots,
            },
            now,
        )
    }

    fn lease(s: &mut Scheduler, w: &WorkerId, now: Instant) -> Lease {
        match s.lease(w, now).unwrap() {
            LeaseOutcome::Lease(l) => l,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    fn metrics(epoch: u32, val_acc: f64, val_loss: f64, test_acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 0.5,
            train_acc: 0.8,
            val_loss,
            val_acc,
            test_loss: 0.6,
            test_acc,
            seconds: 1.0,
        }
    }

    fn m(epoch: u32) -> EpochMetrics {
        metrics(epoch, 0.5 + f64::from(epoch) / 100.0, 0.4, 0.7)
    }

    fn report(
        s: &mut Scheduler,
        w: &WorkerId,
        l: &Lease,
        epoch: u32,
        now: Instant,
    ) -> Result<ReportOutcome> {
        s.report_epoch(w, &l.trial_id, l.attempt, m(epoch), now)
    }

    #[test]
    fn longest_trials_are_leased_first_ties_in_input_order() {
        let small = hp(Arch::Ffv0, 32, 2, 1);
        let cnn = hp(Arch::Cnn, 10, 2, 1);
        let small_again = hp(Arch::Ffv0, 32, 2, 2);
        let long_mlp = hp(Arch::Ffv2, 256, 10, 1);
        let (mut s, t0) = sched(
            vec![
                small.clone(),
                cnn.clone(),
                small_again.clone(),
                long_mlp.clone(),
            ],
            3,
        );
        let w = worker(&mut s, "a", 8, t0);
        let order: Vec<TrialId> = (0..4).map(|_| lease(&mut s, &w, t0).trial_id).collect();
        assert_eq!(
            order,
            vec![
                cnn.trial_id(),
                long_mlp.trial_id(),
                small.trial_id(),
                small_again.trial_id()
            ]
        );
        assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Wait);
    }

    #[test]
    fn done_only_when_every_trial_is_finished_or_failed() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1), hp(Arch::Ffv0, 32, 1, 2)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let b = worker(&mut s, "b", 1, t0);
        let la = lease(&mut s, &a, t0);
        let lb = lease(&mut s, &b, t0);
        let c = worker(&mut s, "c", 1, t0);
        assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Wait);
        assert!(matches!(
            report(&mut s, &a, &la, 1, t0).unwrap(),
            ReportOutcome::Accepted(_)
        ));
        s.finish(&a, &la.trial_id, la.attempt, t0).unwrap();
        assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Wait);
        assert!(!s.is_done());
        s.fail(&b, &lb.trial_id, lb.attempt, "nan loss", false, t0)
            .unwrap();
        assert!(s.is_done());
        assert!(s.progress().is_done());
        assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Done);
        let p = s.progress();
        assert_eq!(
            (p.total, p.finished, p.failed, p.running, p.queued),
            (2, 1, 1, 0, 0)
        );
    }

    #[test]
    fn a_worker_gets_no_more_leases_than_slots() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1), hp(Arch::Ffv0, 32, 1, 2)], 3);
        let a = worker(&mut s, "a", 1, t0);
        lease(&mut s, &a, t0);
        assert_eq!(s.lease(&a, t0).unwrap(), LeaseOutcome::Wait);
    }

    #[test]
    fn expired_lease_is_requeued_first_and_the_old_attempt_is_stale() {
        let long = hp(Arch::Cnn, 10, 3, 1);
        let short = hp(Arch::Ffv0, 32, 1, 1);
        let (mut s, t0) = sched(vec![long.clone(), short.clone()], 3);
        let a = worker(&mut s, "a", 1, t0);
        let la = lease(&mut s, &a, t0);
        assert_eq!(la.trial_id, long.trial_id());
        assert_eq!(la.attempt, 1);
        report(&mut s, &a, &la, 1, t0 + Duration::from_secs(5)).unwrap();
        // The report refreshed the lease: nothing lapses at 10 s.
        assert!(s.expire(t0 + TIMEOUT).is_empty());
        let b = worker(&mut s, "b", 2, t0 + TIMEOUT);
        let later = t0 + Duration::from_secs(15);
        let expired = s.expire(later);
        assert_eq!(
            expired,
            vec![Expired {
                trial_id: long.trial_id(),
                attempt: 1,
                worker: a.clone(),
                failed: false
            }]
        );
        assert_eq!(s.is_lost(&a), Some(true));
        assert_eq!(s.is_lost(&b), Some(false));
        let rec = &s.records()[0];
        assert_eq!(rec.status, TrialStatus::Queued);
        assert!(
            rec.last_error.as_deref().unwrap().contains("lease expired"),
            "{rec:?}"
        );
        assert!(
            rec.last_error.as_deref().unwrap().contains("worker w1 (a)"),
            "{rec:?}"
        );

        // Requeued in front of the short trial that was never leased.
        let lb = lease(&mut s, &b, later);
        assert_eq!((lb.trial_id.clone(), lb.attempt), (long.trial_id(), 2));
        // The first attempt is stale for every call.
        let err = report(&mut s, &a, &la, 2, later).unwrap_err();
        assert!(
            matches!(err, SchedulerError::StaleAttempt { attempt: 1, .. }),
            "{err}"
        );
        assert!(matches!(
            s.finish(&a, &la.trial_id, 1, later),
            Err(SchedulerError::StaleAttempt { .. })
        ));
        assert!(matches!(
            s.fail(&a, &la.trial_id, 1, "x", true, later),
            Err(SchedulerError::StaleAttempt { .. })
        ));
        let abandon = s.heartbeat(&a, &[(la.trial_id.clone(), 1)], later).unwrap();
        assert_eq!(abandon, vec![(la.trial_id.clone(), 1)]);
        assert_eq!(s.is_lost(&a), Some(false), "a call revives the worker");
        // The new attempt restarts at epoch 1: already recorded, so a duplicate.
        assert_eq!(
            report(&mut s, &b, &lb, 1, later).unwrap(),
            ReportOutcome::Duplicate
        );
        assert!(matches!(
            report(&mut s, &b, &lb, 2, later).unwrap(),
            ReportOutcome::Accepted(_)
        ));
        let p = s.progress();
        assert_eq!(p.running_trials.len(), 1);
        assert_eq!(
            (p.running_trials[0].epoch, p.running_trials[0].epochs),
            (2, 3)
        );
        assert_eq!(p.running_trials[0].worker, b);
    }

    #[test]
    fn heartbeats_keep_leases_alive() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        for k in 1..=5u64 {
            let now = t0 + Duration::from_secs(8 * k);
            assert!(s
                .heartbeat(&a, &[(l.trial_id.clone(), l.attempt)], now)
                .unwrap()
                .is_empty());
            assert!(s.expire(now).is_empty());
        }
        assert_eq!(s.expire(t0 + Duration::from_secs(50)).len(), 1);
    }

    #[test]
    fn retry_limit_fails_the_trial() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 2);
        let a = worker(&mut s, "a", 1, t0);
        let l1 = lease(&mut s, &a, t0);
        let t1 = t0 + TIMEOUT;
        assert!(!s.expire(t1)[0].failed);
        let l2 = lease(&mut s, &a, t1);
        assert_eq!(l2.attempt, 2);
        assert_eq!(l1.trial_id, l2.trial_id);
        let t2 = t1 + TIMEOUT;
        let e = s.expire(t2);
        assert!(e[0].failed, "{e:?}");
        let rec = &s.records()[0];
        assert_eq!((rec.status, rec.attempts), (TrialStatus::Failed, 2));
        assert!(rec.finished_at.is_some());
        assert_eq!(s.lease(&a, t2).unwrap(), LeaseOutcome::Done);
    }

    #[test]
    fn retryable_failures_requeue_until_max_attempts() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 2);
        let a = worker(&mut s, "a", 1, t0);
        let l1 = lease(&mut s, &a, t0);
        assert_eq!(
            s.fail(&a, &l1.trial_id, 1, "out of memory", true, t0)
                .unwrap(),
            TrialStatus::Queued
        );
        let l2 = lease(&mut s, &a, t0);
        assert_eq!(l2.attempt, 2);
        assert_eq!(
            s.fail(&a, &l2.trial_id, 2, "out of memory", true, t0)
                .unwrap(),
            TrialStatus::Failed
        );
        let rec = &s.records()[0];
        assert_eq!(
            rec.last_error.as_deref(),
            Some("out of memory (gave up after 2 failed attempts)")
        );
    }

    #[test]
    fn non_retryable_failure_fails_at_once() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        assert_eq!(
            s.fail(&a, &l.trial_id, 1, "loss is nan", false, t0)
                .unwrap(),
            TrialStatus::Failed
        );
        let rec = &s.records()[0];
        assert_eq!((rec.status, rec.attempts), (TrialStatus::Failed, 1));
        assert_eq!(rec.last_error.as_deref(), Some("loss is nan"));
        assert_eq!(s.lease(&a, t0).unwrap(), LeaseOutcome::Done);
        // After the failure the worker no longer holds it.
        assert!(matches!(
            report(&mut s, &a, &l, 1, t0),
            Err(SchedulerError::NotLeased {
                status: TrialStatus::Failed,
                ..
            })
        ));
    }

    #[test]
    fn repeated_report_is_a_duplicate_and_epochs_must_not_skip() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 3, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        let ReportOutcome::Accepted(rec) = report(&mut s, &a, &l, 1, t0).unwrap() else {
            panic!("first report must be accepted")
        };
        assert_eq!(
            (
                rec.worker_name.as_str(),
                rec.device.as_str(),
                rec.metrics.epoch
            ),
            ("a", "cpu", 1)
        );
        assert_eq!(
            rec.recorded_at,
            DateTime::from_timestamp(1_700_000_000, 0).unwrap()
        );
        assert_eq!(
            report(&mut s, &a, &l, 1, t0).unwrap(),
            ReportOutcome::Duplicate
        );
        for bad in [0, 3, 4] {
            let err = report(&mut s, &a, &l, bad, t0).unwrap_err();
            assert!(
                matches!(err, SchedulerError::EpochOutOfRange { next: 2, .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(s.records()[0].epochs_done, 1);
    }

    #[test]
    fn finish_needs_every_epoch() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 2, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        report(&mut s, &a, &l, 1, t0).unwrap();
        let err = s.finish(&a, &l.trial_id, l.attempt, t0).unwrap_err();
        assert_eq!(
            err,
            SchedulerError::Incomplete {
                trial: l.trial_id.clone(),
                recorded: 1,
                epochs: 2
            }
        );
        report(&mut s, &a, &l, 2, t0).unwrap();
        let t1 = t0 + Duration::from_secs(90);
        s.finish(&a, &l.trial_id, l.attempt, t1).unwrap();
        let rec = &s.records()[0];
        assert_eq!(rec.status, TrialStatus::Finished);
        assert_eq!(
            rec.finished_at,
            Some(DateTime::from_timestamp(1_700_000_090, 0).unwrap())
        );
        assert_eq!(
            rec.started_at,
            Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap())
        );
        assert_eq!(
            (rec.worker.as_deref(), rec.device.as_deref()),
            (Some("a"), Some("cpu"))
        );
        // Finished twice: the lease is gone.
        assert!(matches!(
            s.finish(&a, &l.trial_id, l.attempt, t1),
            Err(SchedulerError::NotLeased { .. })
        ));
    }

    #[test]
    fn best_epoch_by_val_acc_ties_to_lower_loss() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 4, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        let ms = [
            metrics(1, 0.80, 0.5, 0.70),
            metrics(2, 0.85, 0.45, 0.71),
            metrics(3, 0.85, 0.40, 0.72),
            metrics(4, 0.84, 0.39, 0.73),
        ];
        for mm in ms {
            s.report_epoch(&a, &l.trial_id, 1, mm, t0).unwrap();
        }
        let rec = &s.records()[0];
        assert_eq!(
            (rec.best_epoch, rec.best_val_acc, rec.best_by),
            (Some(3), Some(0.85), Some(BestBy::ValAcc))
        );
        assert_eq!(rec.test_acc, Some(0.73));
    }

    #[test]
    fn without_validation_the_best_epoch_is_chosen_by_test_acc() {
        let h = Hyperparams {
            validation: 0.0,
            ..hp(Arch::Ffv0, 32, 2, 1)
        };
        let (mut s, t0) = sched(vec![h], 3);
        let a = worker(&mut s, "a", 1, t0);
        let l = lease(&mut s, &a, t0);
        s.report_epoch(&a, &l.trial_id, 1, metrics(1, f64::NAN, f64::NAN, 0.75), t0)
            .unwrap();
        s.report_epoch(&a, &l.trial_id, 1, metrics(2, f64::NAN, f64::NAN, 0.74), t0)
            .unwrap();
        let rec = &s.records()[0];
        assert_eq!(
            (rec.best_epoch, rec.best_val_acc, rec.best_by),
            (Some(1), Some(0.75), Some(BestBy::TestAcc))
        );
        assert_eq!(rec.test_acc, Some(0.74));
    }

    #[test]
    fn unknown_worker_and_trial_are_errors() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
        let ghost = WorkerId("w99".into());
        assert!(matches!(
            s.lease(&ghost, t0),
            Err(SchedulerError::UnknownWorker(_))
        ));
        let a = worker(&mut s, "a", 1, t0);
        let other = hp(Arch::Ffv1, 32, 1, 1).trial_id();
        assert!(matches!(
            s.report_epoch(&a, &other, 1, m(1), t0),
            Err(SchedulerError::UnknownTrial(_))
        ));
        assert!(matches!(
            s.check_artifact(&a, &other, 1),
            Err(SchedulerError::UnknownTrial(_))
        ));
        // Heartbeating an unknown trial tells the worker to drop it.
        assert_eq!(
            s.heartbeat(&a, &[(other.clone(), 1)], t0).unwrap(),
            vec![(other, 1)]
        );
    }

    #[test]
    fn artifacts_are_accepted_from_the_latest_attempt_even_after_finish() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
        let a = worker(&mut s, "a", 1, t0);
        let b = worker(&mut s, "b", 1, t0);
        let l = lease(&mut s, &a, t0);
        s.check_artifact(&a, &l.trial_id, 1).unwrap();
        assert!(s.check_artifact(&b, &l.trial_id, 1).is_err());
        assert!(s.check_artifact(&a, &l.trial_id, 2).is_err());
        report(&mut s, &a, &l, 1, t0).unwrap();
        s.finish(&a, &l.trial_id, 1, t0).unwrap();
        s.check_artifact(&a, &l.trial_id, 1).unwrap();
    }

    #[test]
    fn restore_resumes_unfinished_trials_and_keeps_finished_ones() {
        let done = hp(Arch::Ffv0, 32, 2, 1);
        let broken = hp(Arch::Ffv0, 32, 2, 2);
        let half = hp(Arch::Ffv0, 32, 3, 3);
        let fresh = hp(Arch::Ffv0, 32, 2, 4);
        let all = vec![done.clone(), broken.clone(), half.clone(), fresh.clone()];
        // First start: `done` finishes, `broken` fails, `half` records one epoch, then the
        // coordinator dies.
        let (mut s, t0) = sched(all.clone(), 3);
        let a = worker(&mut s, "a", 3, t0);
        let mut leases = HashMap::new();
        for _ in 0..3 {
            let l = lease(&mut s, &a, t0);
            leases.insert(l.trial_id.clone(), l);
        }
        let l = &leases[&done.trial_id()];
        report(&mut s, &a, l, 1, t0).unwrap();
        report(&mut s, &a, l, 2, t0).unwrap();
        s.finish(&a, &l.trial_id, l.attempt, t0).unwrap();
        let l = &leases[&broken.trial_id()];
        s.fail(&a, &l.trial_id, l.attempt, "loss is NaN", false, t0)
            .unwrap();
        let l = &leases[&half.trial_id()];
        report(&mut s, &a, l, 1, t0).unwrap();
        let stored: HashMap<TrialId, DurableTrial> = all
            .iter()
            .filter(|h| h.trial_id() != fresh.trial_id())
            .map(|h| (h.trial_id(), s.durable(&h.trial_id()).unwrap()))
            .collect();
        assert_eq!(stored[&half.trial_id()].status, TrialStatus::Running);

        // Second start.
        let (mut s2, t0) = sched(all.clone(), 3);
        let r = s2.restore(stored.clone(), false, 2);
        assert_eq!(
            r,
            Restored {
                finished: 1,
                failed: 1,
                retried: 0,
                resumed: 1,
                new: 1,
                dropped: 0
            }
        );
        let b = worker(&mut s2, "b", 4, t0);
        assert_eq!(b.0, "w1-r2", "worker ids carry the incarnation");
        let first = lease(&mut s2, &b, t0);
        assert_eq!(
            first.trial_id,
            half.trial_id(),
            "partly trained trials go first"
        );
        assert_eq!((first.recorded, first.attempt), (1, 2));
        assert_eq!(
            report(&mut s2, &b, &first, 1, t0).unwrap(),
            ReportOutcome::Duplicate
        );
        assert!(matches!(
            report(&mut s2, &b, &first, 2, t0).unwrap(),
            ReportOutcome::Accepted(_)
        ));
        let second = lease(&mut s2, &b, t0);
        assert_eq!(
            (second.trial_id.clone(), second.recorded),
            (fresh.trial_id(), 0)
        );
        assert_eq!(
            s2.lease(&b, t0).unwrap(),
            LeaseOutcome::Wait,
            "nothing else to run"
        );
        // A worker of the first start is unknown now.
        assert!(matches!(
            s2.lease(&a, t0),
            Err(SchedulerError::UnknownWorker(_))
        ));

        // --retry-failed queues the failed trial again, with its failures forgotten.
        let (mut s3, t0) = sched(all, 3);
        let r = s3.restore(stored, true, 3);
        assert_eq!((r.failed, r.retried), (0, 1));
        let c = worker(&mut s3, "c", 4, t0);
        let leased: Vec<TrialId> = (0..3).map(|_| lease(&mut s3, &c, t0).trial_id).collect();
        assert!(leased.contains(&broken.trial_id()));
        assert!(!leased.contains(&done.trial_id()));
    }

    #[test]
    fn failures_not_attempts_count_against_max_attempts() {
        // Attempts cut short by a restart are not failures: a trial leased 5 times over 5
        // starts of the coordinator still gets its max_attempts tries.
        let h = hp(Arch::Ffv0, 32, 2, 1);
        let mut stored = HashMap::new();
        let (mut s, t0) = sched(vec![h.clone()], 2);
        let a = worker(&mut s, "a", 1, t0);
        lease(&mut s, &a, t0);
        let mut d = s.durable(&h.trial_id()).unwrap();
        d.attempts = 5;
        stored.insert(h.trial_id(), d);
        let (mut s2, t0) = sched(vec![h.clone()], 2);
        s2.restore(stored, false, 6);
        let b = worker(&mut s2, "b", 1, t0);
        let l = lease(&mut s2, &b, t0);
        assert_eq!(l.attempt, 6);
        assert!(!s2.expire(t0 + TIMEOUT)[0].failed, "first failure of 2");
        let l = lease(&mut s2, &b, t0 + TIMEOUT);
        assert_eq!(l.attempt, 7);
        assert!(s2.expire(t0 + TIMEOUT * 2)[0].failed, "second failure of 2");
    }

    #[test]
    fn lost_workers_without_leases_can_be_forgotten() {
        let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 2, 1)], 3);
        let busy = worker(&mut s, "busy", 1, t0);
        let idle = worker(&mut s, "idle", 1, t0);
        lease(&mut s, &busy, t0);
        // Both silent past the timeout: both lost, but `busy` still holds its lease until
        // expiry runs.
        let later = t0 + TIMEOUT / 2;
        s.heartbeat(&busy, &[], later).unwrap();
        for w in s.workers.values_mut() {
            w.lost = true;
        }
        assert_eq!(s.forget_lost_workers(), 1);
        assert_eq!(s.workers(), 1);
        assert!(matches!(
            s.lease(&idle, later),
            Err(SchedulerError::UnknownWorker(_))
        ));
    }
}
