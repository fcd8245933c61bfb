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
//!
//! Search and stopping (issue 12, `scheduler/search.rs`): each experiment judges its trials
//! on its goal (metric and mode) and, with a `stop` table, feeds every recorded epoch to its
//! [`search::Stopper`]; a stopped trial records no later epoch and ends as `stopped` once its
//! worker has uploaded its artifacts (or its lease ends). When a worker asks for a trial and
//! none is queued, the scheduler asks its [`Suggester`] for the next trial of a tpe
//! experiment, from the trials that have a result, without waiting for pending ones; the
//! lease carries the suggestion so that the service stores it before answering.
//! `scheduler/durable.rs` restores all of it, `scheduler/view.rs` reports it.

mod durable;
mod expiry;
pub mod fuse;
mod search;
mod threads;
mod view;
mod workers;

pub use view::{Progress, RunningTrial};

use self::search::ExperimentState;
use crate::suggest::{Suggested, Suggester};
use crate::sweep::ExperimentPlan;
use crate::trial::{StopInfo, TrialSpec};
use chrono::{DateTime, Utc};
use proto::{EpochMetrics, Hyperparams, TrialId};
use results_format::{Best, EpochRecord, Goal, TrialStatus};
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
    /// Never change a worker's thread count (`coordinator run --pin-threads`, issue 13).
    pub pin_threads: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_timeout: Duration::from_secs(30),
            max_attempts: 3,
            pin_threads: false,
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerInfo {
    pub name: String,
    pub device: String,
    /// Trials it runs at once; it is never given more leases than this.
    pub slots: u32,
    // issue 10: empty when the worker did not say.
    /// Its build, e.g. `0.5.0 (cuda build, libtorch 2.11.0, CUDA 13.0)`.
    pub build: String,
    pub host: String,
    /// The device's model, e.g. `NVIDIA H200`.
    pub device_name: String,
    // issue 13: what the thread plan needs (`scheduler/threads.rs`).
    /// libtorch threads per trial it registered with: what it gets back when work waits.
    pub threads: u32,
    /// Cores it may use on `host`; 0: not said (its threads are never planned).
    pub cores: u32,
    /// The user fixed its threads: never changed.
    pub threads_pinned: bool,
    /// The most trials it trains as one fused group (`worker join --max-fuse`); 0 or 1: none.
    pub max_fuse: u32,
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
    /// What the trial's best epoch is chosen on (its experiment's metric and mode).
    pub goal: Goal,
    /// Epochs after which the worker waits for the verdict on its report.
    pub rung_epochs: Vec<u32>,
    /// The divergence rule's factor, when the experiment has the rule.
    pub divergence: Option<f64>,
    /// A trial suggested for this lease: the service stores it before answering.
    pub suggested: Option<Box<Suggested>>,
    /// The other members of its fused group (issue 13), each an ordinary lease of its own
    /// trial held by the same worker; empty for a trial leased alone.
    pub members: Vec<Lease>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// A new epoch: write it.
    Accepted(Box<EpochRecord>),
    /// This epoch of this trial is already recorded (a retry or a retrained epoch): nothing to write.
    Duplicate,
    /// The trial was stopped at an earlier epoch: nothing past it is recorded.
    AfterStop,
}

/// Everything the scheduler needs to know of a sweep: its trials, how each experiment picks
/// and judges them, and who suggests a tpe experiment's trials.
#[derive(Debug, Default)]
pub struct Plan {
    pub trials: Vec<TrialSpec>,
    /// Experiments the trials name that are not listed here are plain grids.
    pub experiments: Vec<ExperimentPlan>,
    pub suggester: Option<Box<dyn Suggester>>,
}

impl From<Vec<TrialSpec>> for Plan {
    fn from(trials: Vec<TrialSpec>) -> Plan {
        Plan {
            trials,
            ..Plan::default()
        }
    }
}

/// A lease that lapsed in [`Scheduler::expire`] or ended with its worker's process
/// ([`Scheduler::drop_worker`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub trial_id: TrialId,
    pub attempt: u32,
    pub worker: WorkerId,
    /// True when the trial ran out of attempts and is now failed.
    pub failed: bool,
    /// Its status now: queued again, failed, or stopped (a rule had stopped it).
    pub status: TrialStatus,
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
    /// Trials a stopping rule had ended: they stay `stopped`.
    pub stopped: usize,
    /// Stored tpe suggestions put back (set by the service, which reads them).
    pub suggestions: usize,
}

#[derive(Debug, Clone)]
struct TrialState {
    id: TrialId,
    experiment: String,
    /// Its experiment's index in `Scheduler::experiments`.
    exp: usize,
    hparams: Hyperparams,
    status: TrialStatus,
    attempts: u32,
    failures: u32,
    lease: Option<ActiveLease>,
    /// The worker of the latest attempt.
    last_worker: Option<WorkerId>,
    worker_name: Option<String>,
    device: Option<String>,
    worker_build: Option<String>,
    /// Epochs 1..=recorded are recorded.
    recorded: u32,
    best: Option<Best>,
    final_test_acc: Option<f64>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// A stopping rule's verdict: the trial trains no further and ends as `stopped`.
    stop: Option<StopInfo>,
    /// The configuration TPE drew (a tpe experiment's trials only).
    config: Option<Vec<f64>>,
}

impl TrialState {
    fn new(spec: TrialSpec, exp: usize) -> TrialState {
        TrialState {
            id: spec.id,
            experiment: spec.experiment,
            exp,
            hparams: spec.hparams,
            status: TrialStatus::Queued,
            attempts: 0,
            failures: 0,
            lease: None,
            last_worker: None,
            worker_name: None,
            device: None,
            worker_build: None,
            recorded: 0,
            best: None,
            final_test_acc: None,
            started_at: None,
            finished_at: None,
            last_error: None,
            stop: None,
            config: None,
        }
    }

    /// Where the trial ends when its lease ends badly: `stopped` once a rule stopped it.
    fn end_status(&self) -> Option<TrialStatus> {
        self.stop.is_some().then_some(TrialStatus::Stopped)
    }
}

#[derive(Debug, Clone)]
struct WorkerState {
    info: WorkerInfo,
    last_seen: Instant,
    lost: bool,
    /// Leases it holds now.
    held: u32,
    load: Option<WorkerLoad>,
}

/// The trial queue and every lease.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Every experiment, in the sweep's order, then those only trials name.
    experiments: Vec<ExperimentState>,
    experiment_index: HashMap<String, usize>,
    suggester: Option<Box<dyn Suggester>>,
    /// Trials tpe experiments will still suggest: with `queue` and `active_leases`, what
    /// makes `is_done` O(1).
    to_suggest: u64,
    /// Things the service should log (a search that gave up), taken by
    /// [`Scheduler::take_notices`].
    notices: Vec<String>,
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
        Scheduler::with_plan(Plan::from(trials), config, now, wall)
    }

    /// [`Scheduler::new`] for a whole plan: its trials, its experiments (goals, stop rules,
    /// tpe budgets) and its suggester.
    pub fn with_plan(
        plan: Plan,
        config: SchedulerConfig,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Self {
        let mut s = Scheduler {
            config: SchedulerConfig {
                max_attempts: config.max_attempts.max(1),
                ..config
            },
            experiments: Vec::new(),
            experiment_index: HashMap::new(),
            suggester: plan.suggester,
            to_suggest: 0,
            notices: Vec::new(),
            trials: Vec::with_capacity(plan.trials.len()),
            index: HashMap::with_capacity(plan.trials.len()),
            queue: VecDeque::new(),
            workers: HashMap::new(),
            active_leases: 0,
            next_worker: 1,
            incarnation: 0,
            epoch_instant: now,
            epoch_wall: wall,
        };
        for e in &plan.experiments {
            s.add_experiment(e);
        }
        for t in plan.trials {
            if s.index.contains_key(&t.id) {
                continue;
            }
            let exp = s.experiment_of(&t.experiment);
            s.index.insert(t.id.clone(), s.trials.len());
            s.trials.push(TrialState::new(t, exp));
        }
        let mut order: Vec<usize> = (0..s.trials.len()).collect();
        // Stable: equal costs keep input order.
        let cost = |i: usize| s.trials[i].hparams.relative_cost();
        order.sort_by(|&a, &b| cost(b).total_cmp(&cost(a)));
        s.queue = order.into();
        s
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The wall-clock time of `now`.
    pub fn wall(&self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.epoch_instant);
        self.epoch_wall + chrono::Duration::from_std(since).unwrap_or(chrono::Duration::zero())
    }

    /// Hands `worker` the most urgent queued trial or, when none is queued, a new suggestion
    /// of a tpe experiment (carried in [`Lease::suggested`]). A worker that trains fused
    /// groups (`max_fuse > 1`) gets with a queued trial the next queued trials of its fuse
    /// class ([`fuse::take_group`]), each its own lease, in [`Lease::members`].
    pub fn lease(&mut self, worker: &WorkerId, now: Instant) -> Result<LeaseOutcome> {
        self.touch(worker, now)?;
        let w = &self.workers[worker];
        // A fused group is one unit of the worker's slots but holds one lease per member.
        if w.held >= w.info.slots.saturating_mul(w.info.max_fuse.max(1)) {
            return Ok(LeaseOutcome::Wait);
        }
        let max_fuse = w.info.max_fuse as usize;
        let mut queue = std::mem::take(&mut self.queue);
        let group = fuse::take_group(&mut queue, |i| self.fuse_class(i), max_fuse);
        self.queue = queue;
        let (group, suggested) = match group.first() {
            Some(_) => (group, None),
            None => match self.suggest_next() {
                Some((i, s)) => (vec![i], Some(Box::new(s))),
                None => {
                    return Ok(if self.is_done() {
                        LeaseOutcome::Done
                    } else {
                        LeaseOutcome::Wait
                    })
                }
            },
        };
        let mut leases: Vec<Lease> = group.iter().map(|&i| self.grant(i, worker, now)).collect();
        let mut head = leases.remove(0);
        head.suggested = suggested;
        head.members = leases;
        Ok(LeaseOutcome::Lease(head))
    }

    /// Leases trial `i` (taken off the queue) to `worker`: a new attempt, its own deadline.
    fn grant(&mut self, i: usize, worker: &WorkerId, now: Instant) -> Lease {
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
        t.worker_build = Some(info.build).filter(|b| !b.is_empty());
        t.started_at = Some(wall);
        let exp = &self.experiments[t.exp];
        Lease {
            trial_id: t.id.clone(),
            attempt: t.attempts,
            hparams: t.hparams.clone(),
            recorded: t.recorded,
            goal: exp.goal,
            rung_epochs: exp.rung_epochs.clone(),
            divergence: exp.divergence,
            suggested: None,
            members: Vec::new(),
        }
    }

    /// Records one epoch of a leased trial, trained on `threads` threads (`None`: not said),
    /// and, with stop rules, judges it: whether the trial goes on is [`Scheduler::stop_of`]
    /// afterwards.
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
        if t.stop.is_some() && metrics.epoch >= next {
            return Ok(ReportOutcome::AfterStop);
        }
        if metrics.epoch < next {
            return Ok(ReportOutcome::Duplicate);
        }
        t.recorded = metrics.epoch;
        // The one best-epoch rule (results_format::best) on the experiment's goal (validation
        // accuracy by default), ties to the lower tie-breaker; a trial without validation is
        // judged on the test set.
        t.best = Best::update(t.best, self.experiments[t.exp].goal, &metrics);
        if metrics.epoch == epochs {
            t.final_test_acc = Some(metrics.test_acc);
        }
        self.judge(i, &metrics);
        let t = &self.trials[i];
        let info = &self.workers[worker].info;
        Ok(ReportOutcome::Accepted(Box::new(EpochRecord {
            trial_id: t.id.clone(),
            experiment: t.experiment.clone(),
            hparams: t.hparams.clone(),
            metrics,
            worker: info.name.clone(),
            device: info.device.clone(),
            recorded_at: wall,
            device_name: info.device_name.clone(),
            host: info.host.clone(),
            // Not the scheduler's to know: the service sets it from the report.
            gpu_peak_memory_bytes: None,
            threads,
        })))
    }

    /// The trial trained every epoch, or every epoch up to where a rule stopped it (it then
    /// ends as `stopped`).
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
        if t.recorded < t.hparams.epochs && t.stop.is_none() {
            return Err(SchedulerError::Incomplete {
                trial: trial.clone(),
                recorded: t.recorded,
                epochs: t.hparams.epochs,
            });
        }
        t.lease = None;
        self.lease_released(worker);
        let t = &mut self.trials[i];
        t.status = t.end_status().unwrap_or(TrialStatus::Finished);
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
        if let Some(end) = t.end_status() {
            // Stopped by a rule, then its worker failed (e.g. writing the artifacts): still a
            // result, never `failed`, never trained again.
            t.status = end;
            t.finished_at = Some(wall);
            t.last_error = Some(reason.to_owned());
        } else if retryable && t.failures < max_attempts {
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
            && matches!(
                t.status,
                TrialStatus::Running | TrialStatus::Finished | TrialStatus::Stopped
            )
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

    /// Every trial is finished, failed or stopped, and tpe has nothing left to suggest. O(1):
    /// a trial is unfinished exactly when it is queued or leased.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.active_leases == 0 && self.to_suggest == 0
    }

    /// What the service should log since the last call (a search that gave up).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
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

    fn trial(&self, id: &TrialId) -> Result<&TrialState> {
        self.index
            .get(id)
            .map(|&i| &self.trials[i])
            .ok_or_else(|| SchedulerError::UnknownTrial(id.clone()))
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

mod census;
pub use census::{AliveWorker, Census, WorkerLoad};

#[cfg(test)]
mod tests;
