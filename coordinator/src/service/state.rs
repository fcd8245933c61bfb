//! [`SweepState`]: the running sweep, shared by the gRPC handlers, the lease-expiry loop, the
//! results writer and `coordinator run`.
//!
//! It holds the [`Scheduler`] behind a mutex taken only for in-memory work (never across an
//! await or file I/O), a watch channel marked changed with every state change (progress
//! snapshots are computed on demand), the [`Committer`] of the durable state, the
//! [`ResultsWriter`], the [`Metrics`] everyone counts through (their state gauges read the
//! scheduler at each scrape) and the [`Health`] statuses.
//!
//! The commit protocol: every change of a trial is queued to the committer while the
//! scheduler's lock is held ([`SweepState::change`]), so commits follow the scheduler's order,
//! and the call is answered only once the commit is durable: an acknowledged epoch survives
//! `kill -9`. The committer hands committed epoch rows to the results writer in sequence
//! order. On start, [`SweepState::open`] opens `state.redb`, restores every trial and queues
//! the rows the part files lack.

use super::dataset::DatasetServer;
use super::{Health, Result, ServiceConfig, ServiceError};
use crate::metrics::Metrics;
use crate::results_writer::{EpochWriter, ResultsWriter};
use crate::scheduler::{Plan, Progress, Restored, Scheduler, SchedulerConfig, WorkerId};
use crate::store::{Committer, Op, Opened, Store};
use crate::trial::TrialSpec;
use proto::TrialId;
use results_format::{ResultsDir, TrialRecord};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The running sweep; see the module's documentation.
pub struct SweepState {
    config: ServiceConfig,
    dir: ResultsDir,
    scheduler: Arc<Mutex<Scheduler>>,
    /// Bumped on every change; [`SweepState::progress`] computes the snapshot on demand, so a
    /// call never walks every trial (that made big sweeps CPU-bound).
    changes: watch::Sender<u64>,
    writer: ResultsWriter,
    committer: Committer,
    store: Store,
    /// The next epoch sequence number; taken under the scheduler's lock.
    next_seq: AtomicU64,
    restored: Restored,
    incarnation: u64,
    /// Workers that were answered `Done`.
    told_done: Mutex<HashSet<WorkerId>>,
    metrics: Metrics,
    health: Health,
    /// issue 10: Fashion-MNIST for workers that have none.
    dataset: Arc<DatasetServer>,
}

/// A commit queued under the scheduler's lock; await it after releasing the lock.
pub type Pending = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The scheduler's methods leave it consistent at every return, so a panic elsewhere
    // while holding the lock does not invalidate it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Queues the trial's durable state, as the scheduler has it now, for commit.
pub fn durable(s: &Scheduler, id: &TrialId, ops: &mut Vec<Op>) {
    if let Some(d) = s.durable(id) {
        ops.push(Op::Trial(id.clone(), d));
    }
}

/// The plan's scheduler with what an earlier run of the sweep recorded put back: tpe
/// suggestions first, then every trial's state, then the recorded epochs into the stop rules.
fn restore_scheduler(
    plan: Plan,
    config: &ServiceConfig,
    opened: &mut Opened,
    now: Instant,
) -> Result<(Scheduler, Restored)> {
    let mut scheduler = Scheduler::with_plan(
        plan,
        SchedulerConfig {
            lease_timeout: config.lease_timeout,
            max_attempts: config.max_attempts,
            pin_threads: config.pin_threads,
        },
        now,
        chrono::Utc::now(),
    );
    let suggestions = scheduler.restore_suggestions(&opened.suggestions);
    let trials = std::mem::take(&mut opened.trials);
    let mut restored = scheduler.restore(trials, config.retry_failed, opened.incarnation);
    restored.suggestions = suggestions;
    if scheduler.has_stop_rules() {
        // Every recorded epoch, in commit order: the rules answer as before the restart.
        let rows = opened.store.epochs_from(0)?;
        scheduler.replay_epochs(rows.iter().map(|(_, r)| (&r.trial_id, &r.metrics)));
    }
    Ok((scheduler, restored))
}

impl SweepState {
    /// [`SweepState::open_plan`] of plain trials (grid experiments judged on validation
    /// accuracy, no stop rules, nothing to suggest).
    pub fn open(trials: Vec<TrialSpec>, config: ServiceConfig) -> Result<Arc<SweepState>> {
        SweepState::open_plan(Plan::from(trials), config)
    }

    /// Opens (or creates) the sweep's state in the results folder, restores what an earlier
    /// run of the same sweep recorded (tpe suggestions first, then every trial's state, then
    /// the recorded epochs into the stop rules), queues the rest of the plan's trials, and
    /// starts the state committer and the results writer task. Must be called inside a tokio
    /// runtime.
    pub fn open_plan(plan: Plan, config: ServiceConfig) -> Result<Arc<SweepState>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServiceError::NoRuntime)?;
        let now = Instant::now();
        let dir = ResultsDir::new(&config.results_dir);
        std::fs::create_dir_all(dir.path())
            .map_err(results_format::Error::io("creating", dir.path()))?;
        let mut opened = Store::open(&dir, &config.sweep_name)?;
        let (scheduler, restored) = restore_scheduler(plan, &config, &mut opened, now)?;
        let mut epochs = EpochWriter::create(&dir, config.flush_rows, config.flush_interval, now)?;
        // Rows committed before a crash that no part file holds yet.
        let mut rewritten = 0;
        for (seq, row) in opened.store.epochs_from(epochs.next_seq())? {
            rewritten += usize::from(epochs.push(seq, row));
        }
        if opened.incarnation > 1 {
            info!(
                state = %opened.store.path().display(),
                start = opened.incarnation,
                finished = restored.finished,
                stopped = restored.stopped,
                suggestions = restored.suggestions,
                failed = restored.failed,
                retried = restored.retried,
                resumed = restored.resumed,
                new = restored.new,
                not_in_sweep = restored.dropped,
                epoch_rows_to_rewrite = rewritten,
                "resuming the sweep from its results folder"
            );
        }
        let (changes, changes_rx) = watch::channel(0u64);
        let scheduler = Arc::new(Mutex::new(scheduler));
        let writer = ResultsWriter::spawn(
            &runtime,
            epochs,
            Arc::clone(&scheduler),
            changes_rx,
            dir.clone(),
            config.flush_interval,
        );
        let metrics = {
            let scheduler = Arc::clone(&scheduler);
            Metrics::new(move || lock(&scheduler).census())
        };
        let committer = {
            let writer = writer.clone();
            Committer::spawn(opened.store.clone(), metrics.clone(), move |rows| {
                for (seq, row) in rows {
                    if writer.blocking_row(seq, row).is_err() {
                        error!(seq, "results writer stopped; the row stays in the state and is written on the next start");
                    }
                }
            })
        };
        let dataset = Arc::new(DatasetServer::new(config.dataset_dir.clone()));
        Ok(Arc::new(SweepState {
            config,
            dir,
            scheduler,
            changes,
            writer,
            committer,
            store: opened.store,
            next_seq: AtomicU64::new(opened.next_seq),
            restored,
            incarnation: opened.incarnation,
            told_done: Mutex::default(),
            metrics,
            health: Health::default(),
            dataset,
        }))
    }

    /// The metrics of this sweep: what `--metrics-listen` serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The health statuses every health listener answers from.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What the state of earlier runs held.
    pub fn restored(&self) -> Restored {
        self.restored
    }

    /// How many times a coordinator started on this results folder (1: the first run).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn dir(&self) -> &ResultsDir {
        &self.dir
    }

    /// What `FetchDataset` serves.
    pub(super) fn dataset(&self) -> &Arc<DatasetServer> {
        &self.dataset
    }

    /// Bytes of Fashion-MNIST sent to workers since this coordinator started (for the
    /// metric `hypersweep_dataset_bytes_served_total`).
    pub fn dataset_bytes_served(&self) -> u64 {
        self.dataset.bytes_served()
    }

    /// Runs `f` on the scheduler; the changes it pushes are queued for commit before the lock
    /// is released, in the scheduler's order. Await the returned future before answering.
    pub(super) fn change<T>(
        &self,
        f: impl FnOnce(&mut Scheduler, Instant, &mut Vec<Op>) -> T,
    ) -> (T, Option<Pending>) {
        let mut s = lock(&self.scheduler);
        let mut ops = Vec::new();
        let out = f(&mut s, Instant::now(), &mut ops);
        let pending = (!ops.is_empty()).then(|| Box::pin(self.committer.submit(ops)) as Pending);
        self.publish();
        (out, pending)
    }

    /// Runs `f` on the scheduler (a change nothing durable records) and publishes it.
    pub(super) fn with_scheduler<T>(&self, f: impl FnOnce(&mut Scheduler, Instant) -> T) -> T {
        let mut s = lock(&self.scheduler);
        let out = f(&mut s, Instant::now());
        self.publish();
        out
    }

    /// Reads the scheduler without changing it.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Scheduler) -> T) -> T {
        f(&lock(&self.scheduler))
    }

    fn publish(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The next sequence number of an epoch row; take it under the scheduler's lock (inside
    /// [`SweepState::change`]) so that sequence order is commit order.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The durable state (its reads block: call them on a blocking thread).
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn told_done(&self, worker: WorkerId) {
        lock(&self.told_done).insert(worker);
    }

    /// The sweep right now (walks every trial: call it at display pace, not per event).
    pub fn progress(&self) -> Progress {
        lock(&self.scheduler).progress()
    }

    /// Every trial is finished or failed (cheap).
    pub fn is_done(&self) -> bool {
        lock(&self.scheduler).is_done()
    }

    /// Every worker still alive was answered `Done`: the server may stop without leaving a
    /// remote worker to find it gone.
    pub fn every_worker_told_done(&self) -> bool {
        let told = lock(&self.told_done);
        lock(&self.scheduler)
            .alive_workers()
            .all(|w| told.contains(w))
    }

    /// How long an idle worker waits before it asks for a lease again.
    pub fn retry_after(&self) -> Duration {
        self.config.heartbeat_interval.min(Duration::from_secs(1))
    }

    /// A receiver that is marked changed on every change of the sweep's state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// One record per trial, in sweep order.
    pub fn records(&self) -> Vec<TrialRecord> {
        lock(&self.scheduler).records()
    }

    /// Writes every buffered epoch row and rewrites `trials.parquet`; call at the end of the sweep.
    pub async fn finish_results(&self) -> Result<()> {
        self.writer
            .finish()
            .await
            .map_err(|_| ServiceError::WriterGone)??;
        Ok(())
    }

    /// Expires lapsed leases (see [`Scheduler::expire`]); [`super::serve`] calls it periodically.
    pub fn expire(&self, now: Instant) {
        self.end_leases("lease expired", |s| s.expire(now));
    }

    /// How many times a worker named `name` registered with this coordinator.
    pub fn registrations(&self, name: &str) -> usize {
        lock(&self.scheduler).workers_named(name).count()
    }

    /// The process of the worker(s) named `name` exited (a local worker): their leases end now
    /// instead of after the lease timeout, and their trials resume elsewhere from the last
    /// checkpoint. Returns how many leases ended.
    pub fn worker_exited(&self, name: &str) -> usize {
        let now = Instant::now();
        self.end_leases("worker exited", |s| {
            let ids: Vec<WorkerId> = s.workers_named(name).cloned().collect();
            ids.iter().flat_map(|id| s.drop_worker(id, now)).collect()
        })
    }

    /// Ends the leases `f` ends, commits the trials' new states and logs each.
    fn end_leases(
        &self,
        what: &str,
        f: impl FnOnce(&mut Scheduler) -> Vec<crate::scheduler::Expired>,
    ) -> usize {
        let (expired, _commit) = self.change(|s, _, ops| {
            let expired = f(s);
            for e in &expired {
                durable(s, &e.trial_id, ops);
            }
            expired
        });
        self.metrics.leases_expired(expired.len());
        // Nobody waits for this commit; the next start finds the trials requeued anyway.
        for e in &expired {
            if e.failed {
                warn!(trial = %e.trial_id, attempt = e.attempt, worker = %e.worker, "{what}, trial failed: no attempts left");
            } else if e.status == results_format::TrialStatus::Stopped {
                warn!(trial = %e.trial_id, attempt = e.attempt, worker = %e.worker, "{what}, the stopped trial ends without its worker's artifacts");
            } else {
                warn!(trial = %e.trial_id, attempt = e.attempt, worker = %e.worker, "{what}, trial requeued");
            }
        }
        expired.len()
    }
}
