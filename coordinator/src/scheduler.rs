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

use crate::trial::{DurableTrial, TrialSpec};
use chrono::{DateTime, Utc};
use proto::{EpochMetrics, Hyperparams, TrialId};
use results_format::{Best, EpochRecord, Metric, TrialRecord, TrialStatus};
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

#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// A new epoch: write it.
    Accepted(Box<EpochRecord>),
    /// This epoch of this trial is already recorded (a retry or a retrained epoch): nothing to write.
    Duplicate,
}

/// A lease that lapsed in [`Scheduler::expire`] or ended with its worker's process
/// ([`Scheduler::drop_worker`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub trial_id: TrialId,
    pub attempt: u32,
    pub worker: WorkerId,
    /// True when the trial ran out of attempts and is now failed; false when it was requeued.
    pub failed: bool,
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
        trials: Vec<TrialSpec>,
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
        self.end_leases(
            now,
            |l| l.deadline <= now,
            |lease, name| {
                format!(
                "lease expired after {} ms without a heartbeat on worker {} ({name}), attempt {}",
                timeout.as_millis(),
                lease.worker,
                lease.attempt
            )
            },
        )
    }

    /// The process of `worker` is known to be gone (a local worker that exited): it is lost,
    /// and every lease it held ends now as an expired one would, without waiting for the
    /// lease timeout.
    pub fn drop_worker(&mut self, worker: &WorkerId, now: Instant) -> Vec<Expired> {
        if let Some(w) = self.workers.get_mut(worker) {
            w.lost = true;
        }
        self.end_leases(
            now,
            |l| &l.worker == worker,
            |lease, name| {
                format!(
                    "worker {} ({name}) exited during attempt {}",
                    lease.worker, lease.attempt
                )
            },
        )
    }

    /// Ends the leases `ended` picks: each is an attempt that ended badly (`why` says how), and
    /// its trial is requeued at the front, or failed once it used `max_attempts`.
    fn end_leases(
        &mut self,
        now: Instant,
        ended: impl Fn(&ActiveLease) -> bool,
        why: impl Fn(&ActiveLease, &str) -> String,
    ) -> Vec<Expired> {
        let wall = self.wall(now);
        let mut expired = Vec::new();
        for (i, t) in self.trials.iter_mut().enumerate() {
            let Some(lease) = t.lease.take_if(|l| ended(l)) else {
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
            t.last_error = Some(why(&lease, name));
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

    /// The workers registered under `name` in this start of the coordinator, alive or lost.
    pub fn workers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a WorkerId> + 'a {
        self.workers
            .iter()
            .filter(move |(_, w)| w.info.name == name)
            .map(|(id, _)| id)
    }

    /// Records one epoch of a leased trial, trained on `threads` threads (`None`: not said).
    pub fn report_epoch(
        &mut self,
        worker: &WorkerId,
        trial: &TrialId,
        attempt: u32,
        metrics: EpochMetrics,
        threads: Option<u32>,
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
        // The one best-epoch rule (results_format::best): validation accuracy, ties to the lower
        // validation loss; a trial without validation is judged on the test set.
        t.best = Best::update(t.best, Metric::ValAcc, &metrics);
        if metrics.epoch == epochs {
            t.final_test_acc = Some(metrics.test_acc);
        }
        let worker_name = self.workers[worker].info.name.clone();
        let device = self.workers[worker].info.device.clone();
        Ok(ReportOutcome::Accepted(Box::new(EpochRecord {
            trial_id: t.id.clone(),
            experiment: t.experiment.clone(),
            hparams: t.hparams.clone(),
            metrics,
            worker: worker_name,
            device,
            recorded_at: wall,
            threads,
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
                best: t.best,
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
mod tests;
