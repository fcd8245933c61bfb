//! The `sweep.v1.Coordinator` gRPC service over the [`Scheduler`] and the Parquet results.
//!
//! [`Shared`] holds the scheduler behind a mutex taken only for in-memory work (never across an
//! await or file I/O), a watch channel marked changed with every state change ([`Progress`]
//! snapshots are computed on demand),
//! the [`Committer`] of the durable state, and the sender of a writer task that owns the
//! [`EpochWriter`] and does its file I/O on blocking threads.
//!
//! Every change of a trial is queued to the committer while the scheduler's lock is held (so
//! commits follow the scheduler's order) and the call is answered only once it is durable: an
//! acknowledged epoch survives `kill -9`. The committer hands committed epoch rows to the
//! Parquet writer in sequence order. On start, [`Shared::new`] opens `state.redb`, restores
//! every trial and queues the rows the part files lack. [`serve`] runs the service with gRPC health and reflection on an already
//! bound listener until a shutdown future completes, expiring leases in the background.
//!
//! Every request is validated before it reaches the scheduler: missing or malformed fields are
//! `INVALID_ARGUMENT`; the scheduler's refusals map to codes in one place, [`code`].

use crate::results::{self, EpochRow, EpochWriter, ResultsError};
use crate::scheduler::{
    LeaseOutcome, Progress, QueuedTrial, ReportOutcome, Restored, Scheduler, SchedulerConfig,
    SchedulerError, TrialRecord, WorkerId, WorkerInfo,
};
use crate::store::{Committer, Op, Store, StoreError};
use proto::pb::coordinator_server::{Coordinator, CoordinatorServer};
use proto::{pb, EpochMetrics, TrialId};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the coordinator service needs a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the results writer stopped")]
    WriterGone,
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Artifact names a worker may upload; anything else is rejected.
pub const ARTIFACT_NAMES: &[&str] = &[
    "model.safetensors",
    "predictions.safetensors",
    "checkpoint.safetensors",
    "config.json",
];

/// Longest worker name, device or id accepted from the wire.
const MAX_LABEL: usize = 256;
/// Longest failure reason kept.
const MAX_REASON: usize = 4096;
/// Most trials one heartbeat may list.
const MAX_RUNNING: usize = 4096;
/// Most workers registered at once: past it lost workers are forgotten, and if that is not
/// enough, registration is refused with RESOURCE_EXHAUSTED (a runaway client cannot grow the
/// coordinator's memory without bound).
pub const MAX_WORKERS: usize = 16_384;
/// Epoch rows queued for the writer before reporters wait.
const WRITER_QUEUE: usize = 4096;
/// Largest gRPC message accepted (a `ReportEpoch` carries the trial's checkpoint).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Longest a call may run on the server, body upload included; the worker's own limit is
/// 300 s, so this only frees what a client abandoned or a stuck call holds.
pub const SERVER_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything the service needs to know; [`ServiceConfig::new`] fills in defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub sweep_name: String,
    /// `results/<sweep>/` by default: `trials.parquet`, `epochs/`, `artifacts/`.
    pub results_dir: PathBuf,
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_attempts: u32,
    /// Write an epochs part file once this many rows are buffered ...
    pub flush_rows: usize,
    /// ... or this long after the last one (also the pace of `trials.parquet` rewrites).
    pub flush_interval: Duration,
    /// Largest artifact accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// On resume, queue the trials that failed before again.
    pub retry_failed: bool,
}

impl ServiceConfig {
    pub fn new(sweep_name: impl Into<String>, results_dir: impl Into<PathBuf>) -> Self {
        ServiceConfig {
            sweep_name: sweep_name.into(),
            results_dir: results_dir.into(),
            lease_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_attempts: 3,
            flush_rows: 256,
            flush_interval: Duration::from_secs(5),
            max_artifact_bytes: 256 << 20,
            retry_failed: false,
        }
    }
}

enum WriterMsg {
    /// A committed row and its sequence number.
    Row(u64, Box<EpochRow>),
    /// Flush every buffered row and rewrite `trials.parquet`, then answer.
    Finish(oneshot::Sender<Result<(), ResultsError>>),
}

/// The state the gRPC service, the expiry loop, the writer task and the run loop share.
pub struct Shared {
    config: ServiceConfig,
    scheduler: Arc<Mutex<Scheduler>>,
    /// Bumped on every change; [`Shared::progress`] computes the snapshot on demand, so a
    /// call never walks every trial (that made big sweeps CPU-bound).
    changes: watch::Sender<u64>,
    writer: mpsc::Sender<WriterMsg>,
    committer: Committer,
    store: Store,
    /// The next epoch sequence number; taken under the scheduler's lock.
    next_seq: AtomicU64,
    restored: Restored,
    incarnation: u64,
    upload_seq: AtomicU64,
    /// Workers that were answered `Done`.
    told_done: Mutex<std::collections::HashSet<WorkerId>>,
}

/// A commit queued under the scheduler's lock; await it after releasing the lock.
type Pending = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

fn durable(s: &Scheduler, id: &TrialId, ops: &mut Vec<Op>) {
    if let Some(d) = s.durable(id) {
        ops.push(Op::Trial(id.clone(), d));
    }
}

fn lock(m: &Mutex<Scheduler>) -> MutexGuard<'_, Scheduler> {
    // The scheduler's methods leave it consistent at every return, so a panic elsewhere
    // while holding the lock does not invalidate it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Opens (or creates) the sweep's state in the results folder, restores what an earlier
    /// run of the same sweep recorded, queues the rest of `trials`, and starts the state
    /// committer and the results writer task. Must be called inside a tokio runtime.
    pub fn new(trials: Vec<QueuedTrial>, config: ServiceConfig) -> Result<Arc<Shared>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServiceError::NoRuntime)?;
        let now = Instant::now();
        std::fs::create_dir_all(&config.results_dir).map_err(|source| ResultsError::Io {
            action: "creating",
            path: config.results_dir.clone(),
            source,
        })?;
        let opened = Store::open(&config.results_dir, &config.sweep_name)?;
        let mut scheduler = Scheduler::new(
            trials,
            SchedulerConfig {
                lease_timeout: config.lease_timeout,
                max_attempts: config.max_attempts,
            },
            now,
            chrono::Utc::now(),
        );
        let restored = scheduler.restore(opened.trials, config.retry_failed, opened.incarnation);
        let mut writer = EpochWriter::create(
            &config.results_dir,
            config.flush_rows,
            config.flush_interval,
            now,
        )?;
        // Rows committed before a crash that no part file holds yet.
        let mut rewritten = 0;
        for (seq, row) in opened.store.epochs_from(writer.next_seq())? {
            rewritten += usize::from(writer.push(seq, row));
        }
        if opened.incarnation > 1 {
            info!(
                state = %opened.store.path().display(),
                start = opened.incarnation,
                finished = restored.finished,
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
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let committer = {
            let tx = tx.clone();
            Committer::spawn(opened.store.clone(), move |rows| {
                for (seq, row) in rows {
                    if tx
                        .blocking_send(WriterMsg::Row(seq, Box::new(row)))
                        .is_err()
                    {
                        error!(seq, "results writer stopped; the row stays in the state and is written on the next start");
                    }
                }
            })
        };
        runtime.spawn(writer_task(
            writer,
            Arc::clone(&scheduler),
            changes_rx,
            rx,
            config.results_dir.clone(),
            config.flush_interval,
        ));
        Ok(Arc::new(Shared {
            config,
            scheduler,
            changes,
            writer: tx,
            committer,
            store: opened.store,
            next_seq: AtomicU64::new(opened.next_seq),
            restored,
            incarnation: opened.incarnation,
            upload_seq: AtomicU64::new(0),
            told_done: Mutex::default(),
        }))
    }

    /// What the state of earlier runs held.
    pub fn restored(&self) -> Restored {
        self.restored
    }

    /// How many times a coordinator started on this results folder (1: the first run).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Runs `f` on the scheduler; the changes it pushes are queued for commit before the lock
    /// is released, in the scheduler's order. Await the returned future before answering.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut Scheduler, Instant, &mut Vec<Op>) -> T,
    ) -> (T, Option<Pending>) {
        let mut s = lock(&self.scheduler);
        let mut ops = Vec::new();
        let out = f(&mut s, Instant::now(), &mut ops);
        let pending = (!ops.is_empty()).then(|| Box::pin(self.committer.submit(ops)) as Pending);
        self.publish(&s);
        (out, pending)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
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
        let told = self.told_done.lock().unwrap_or_else(|p| p.into_inner());
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
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriterMsg::Finish(tx))
            .await
            .map_err(|_| ServiceError::WriterGone)?;
        rx.await.map_err(|_| ServiceError::WriterGone)??;
        Ok(())
    }

    /// Expires lapsed leases (see [`Scheduler::expire`]); [`serve`] calls it periodically.
    pub fn expire(&self, now: Instant) {
        let (expired, _commit) = self.change(|s, _, ops| {
            let expired = s.expire(now);
            for e in &expired {
                durable(s, &e.trial_id, ops);
            }
            expired
        });
        // Nobody waits for this commit; the next start finds the trials requeued anyway.
        for e in expired {
            if e.failed {
                warn!(trial = %e.trial_id, attempt = e.attempt, worker = %e.worker, "lease expired, trial failed: no attempts left");
            } else {
                warn!(trial = %e.trial_id, attempt = e.attempt, worker = %e.worker, "lease expired, trial requeued");
            }
        }
    }

    /// Runs `f` on the scheduler and publishes the progress afterwards.
    fn with_scheduler<T>(&self, f: impl FnOnce(&mut Scheduler, Instant) -> T) -> T {
        let mut s = lock(&self.scheduler);
        let out = f(&mut s, Instant::now());
        self.publish(&s);
        out
    }

    fn publish(&self, _s: &Scheduler) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

async fn writer_task(
    writer: EpochWriter,
    scheduler: Arc<Mutex<Scheduler>>,
    mut progress: watch::Receiver<u64>,
    mut rx: mpsc::Receiver<WriterMsg>,
    dir: PathBuf,
    flush_interval: Duration,
) {
    let writer = Arc::new(Mutex::new(writer));
    let period = flush_interval.clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut trials_written: Option<Instant> = None;
    loop {
        let mut force = None;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(WriterMsg::Row(seq, row)) => {
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    if !w.push(seq, *row) {
                        warn!(seq, "dropped a repeated epoch row");
                    }
                }
                Some(WriterMsg::Finish(done)) => force = Some(Some(done)),
                None => force = Some(None),
            },
            _ = tick.tick() => {}
        }
        let trials_dirty = progress.has_changed().unwrap_or(false) || trials_written.is_none();
        let now = Instant::now();
        let should = {
            let w = writer.lock().unwrap_or_else(|p| p.into_inner());
            w.should_flush(now)
                || (trials_dirty
                    && trials_written
                        .is_none_or(|t| now.saturating_duration_since(t) >= flush_interval))
        };
        if !should && force.is_none() {
            continue;
        }
        progress.borrow_and_update();
        let records = lock(&scheduler).records();
        let (w, d) = (Arc::clone(&writer), dir.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(path) = w.flush(now)? {
                debug!(path = %path.display(), "epoch rows written");
            }
            results::write_trials(&d, &records).map(drop)
        })
        .await
        .unwrap_or_else(|join| {
            Err(ResultsError::Io {
                action: "writing results in",
                path: dir.clone(),
                source: std::io::Error::other(join.to_string()),
            })
        });
        trials_written = Some(now);
        match force {
            Some(Some(done)) => {
                let _ = done.send(result);
            }
            Some(None) => {
                if let Err(e) = result {
                    error!(error = %e, "final results flush failed");
                }
                return;
            }
            None => {
                if let Err(e) = result {
                    error!(error = %e, "writing results failed, will retry");
                }
            }
        }
    }
}

/// The gRPC code for each way the scheduler refuses a call.
pub fn code(e: &SchedulerError) -> Code {
    match e {
        SchedulerError::UnknownWorker(_) | SchedulerError::UnknownTrial(_) => Code::NotFound,
        SchedulerError::NotLeased { .. }
        | SchedulerError::StaleAttempt { .. }
        | SchedulerError::Incomplete { .. } => Code::FailedPrecondition,
        SchedulerError::EpochOutOfRange { .. } => Code::InvalidArgument,
    }
}

impl From<SchedulerError> for Status {
    fn from(e: SchedulerError) -> Self {
        Status::new(code(&e), e.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

/// At most `max` bytes of `s`, cut at a char boundary, for echoing wire text in messages.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn worker_id(s: String) -> Result<WorkerId, Status> {
    if s.is_empty() {
        return Err(invalid("missing field worker_id"));
    }
    if s.len() > MAX_LABEL {
        return Err(invalid(format!(
            "worker_id is longer than {MAX_LABEL} bytes"
        )));
    }
    Ok(WorkerId(s))
}

fn trial_id(s: String) -> Result<TrialId, Status> {
    if s.is_empty() {
        return Err(invalid("missing field trial_id"));
    }
    if !TrialId::is_well_formed(&s) {
        return Err(invalid(format!("malformed trial id {:?}", clip(&s, 64))));
    }
    Ok(TrialId(s))
}

fn trial_attempt(t: Option<pb::TrialAttempt>) -> Result<(TrialId, u32), Status> {
    let t = t.ok_or_else(|| invalid("missing field trial"))?;
    let id = trial_id(t.trial_id)?;
    if t.attempt == 0 {
        return Err(invalid(
            "missing field trial.attempt (attempts are 1-based)",
        ));
    }
    Ok((id, t.attempt))
}

/// A plain file name from the allow-list.
pub fn check_artifact_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(invalid("missing field name"));
    }
    if name.contains(['/', '\\', '\0']) || name.contains("..") || name.starts_with('.') {
        return Err(invalid(format!(
            "artifact name {:?} is not a plain file name",
            clip(name, 64)
        )));
    }
    if !ARTIFACT_NAMES.contains(&name) {
        return Err(invalid(format!(
            "artifact name {:?} is not one of {}",
            clip(name, 64),
            ARTIFACT_NAMES.join(", ")
        )));
    }
    Ok(())
}

/// A call the scheduler refused: logged when it comes from a worker that lost its lease (a
/// late report after a partition or a restart), then mapped to its gRPC code.
fn refused(e: SchedulerError, worker: &WorkerId, what: &str) -> Status {
    if matches!(
        e,
        SchedulerError::StaleAttempt { .. }
            | SchedulerError::NotLeased { .. }
            | SchedulerError::UnknownWorker(_)
    ) {
        warn!(worker = %worker, error = %e, "{what} rejected");
    }
    e.into()
}

/// Waits for a commit queued by [`Shared::change`].
async fn committed(pending: Option<Pending>, trial: &TrialId, what: &str) -> Result<(), Status> {
    let Some(pending) = pending else {
        return Ok(());
    };
    pending.await.map_err(|e| {
        error!(trial = %trial, error = %e, "recording the {what} failed");
        Status::internal(format!("recording the {what} failed: {e}"))
    })
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The `sweep.v1.Coordinator` service.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    pub fn new(shared: Arc<Shared>) -> Self {
        CoordinatorService { shared }
    }

    async fn receive_artifact(
        &self,
        stream: &mut Streaming<pb::ArtifactChunk>,
        first_data: Vec<u8>,
        tmp: &Path,
    ) -> Result<u64, Status> {
        use tokio::io::AsyncWriteExt;
        let max = self.shared.config.max_artifact_bytes;
        let io = |e: std::io::Error| {
            error!(path = %tmp.display(), error = %e, "writing artifact failed");
            Status::internal(format!("writing artifact: {e}"))
        };
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut total = 0u64;
        let mut data = first_data;
        loop {
            total += data.len() as u64;
            if total > max {
                return Err(Status::resource_exhausted(format!(
                    "artifact larger than {max} bytes"
                )));
            }
            file.write_all(&data).await.map_err(io)?;
            match stream.message().await? {
                Some(chunk) => data = chunk.data,
                None => break,
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok(total)
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.name.len() > MAX_LABEL || r.device.len() > MAX_LABEL {
            return Err(invalid(format!(
                "name and device must be at most {MAX_LABEL} bytes"
            )));
        }
        if r.slots == 0 {
            return Err(invalid("slots must be at least 1"));
        }
        let info = WorkerInfo {
            name: r.name,
            device: r.device,
            slots: r.slots,
        };
        let id = self.shared.with_scheduler(|s, now| {
            if s.workers() >= MAX_WORKERS {
                let forgotten = s.forget_lost_workers();
                debug!(forgotten, "forgot lost workers");
            }
            if s.workers() >= MAX_WORKERS {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_WORKERS} workers are registered already"
                )));
            }
            Ok(s.register(info.clone(), now))
        })?;
        info!(worker = %id, name = %info.name, device = %info.device, slots = info.slots,
            threads = r.threads, version = %clip(&r.version, 64), "worker registered");
        let c = &self.shared.config;
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id.0,
            heartbeat_interval_ms: millis(c.heartbeat_interval),
            lease_timeout_ms: millis(c.lease_timeout),
            sweep_name: c.sweep_name.clone(),
        }))
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        use pb::lease_response::Outcome;
        let worker = worker_id(request.into_inner().worker_id)?;
        let outcome = self.shared.with_scheduler(|s, now| s.lease(&worker, now))?;
        let outcome = match outcome {
            LeaseOutcome::Lease(l) => {
                // The checkpoint after the last committed epoch; epochs the worker then
                // retrains that were recorded meanwhile are answered `duplicate`.
                let checkpoint = if l.recorded > 0 {
                    let store = self.shared.store.clone();
                    let id = l.trial_id.clone();
                    tokio::task::spawn_blocking(move || store.checkpoint(&id))
                        .await
                        .map_err(|e| Status::internal(format!("reading the checkpoint: {e}")))?
                        .unwrap_or_else(|e| {
                            warn!(trial = %l.trial_id, error = %e, "unreadable checkpoint, the trial starts over");
                            None
                        })
                } else {
                    None
                };
                let (start_epoch, checkpoint) = checkpoint.unwrap_or_default();
                info!(worker = %worker, trial = %l.trial_id, attempt = l.attempt, start_epoch,
                    label = %l.hparams.label(), "trial leased");
                Outcome::Lease(pb::Lease {
                    trial_id: l.trial_id.0,
                    attempt: l.attempt,
                    hparams: Some(pb::Hyperparams::from(&l.hparams)),
                    start_epoch,
                    checkpoint,
                })
            }
            LeaseOutcome::Wait => Outcome::Wait(pb::Wait {
                retry_after_ms: millis(self.shared.retry_after()),
            }),
            LeaseOutcome::Done => {
                self.shared
                    .told_done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(worker.clone());
                Outcome::Done(pb::Done {})
            }
        };
        Ok(Response::new(pb::LeaseResponse {
            outcome: Some(outcome),
        }))
    }

    async fn report_epoch(
        &self,
        request: Request<pb::ReportEpochRequest>,
    ) -> Result<Response<pb::ReportEpochResponse>, Status> {
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        let metrics = r.metrics.ok_or_else(|| invalid("missing field metrics"))?;
        let metrics =
            EpochMetrics::try_from(metrics).map_err(|e| invalid(format!("metrics: {e}")))?;
        let checkpoint = r.checkpoint;
        let (outcome, commit) = self.shared.change(|s, now, ops| {
            let outcome = s.report_epoch(&worker, &trial, attempt, metrics, now)?;
            if let ReportOutcome::Accepted(rec) = &outcome {
                let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
                ops.push(Op::Epoch(seq, Box::new(EpochRow::from((**rec).clone()))));
                durable(s, &trial, ops);
                if !checkpoint.is_empty() {
                    ops.push(Op::Checkpoint(trial.clone(), metrics.epoch, checkpoint));
                }
            }
            Ok::<_, SchedulerError>(outcome)
        });
        let outcome = outcome.map_err(|e| refused(e, &worker, "epoch report"))?;
        committed(commit, &trial, "epoch").await?;
        let duplicate = match outcome {
            ReportOutcome::Accepted(_) => {
                info!(worker = %worker, trial = %trial, attempt, epoch = metrics.epoch,
                    val_acc = metrics.val_acc, test_acc = metrics.test_acc, "epoch finished");
                false
            }
            ReportOutcome::Duplicate => {
                debug!(worker = %worker, trial = %trial, attempt, epoch = metrics.epoch, "epoch already recorded");
                true
            }
        };
        Ok(Response::new(pb::ReportEpochResponse { duplicate }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        if r.running.len() > MAX_RUNNING {
            return Err(invalid(format!(
                "at most {MAX_RUNNING} running trials per heartbeat"
            )));
        }
        let running = r
            .running
            .into_iter()
            .map(|t| trial_attempt(Some(t)))
            .collect::<Result<Vec<_>, Status>>()?;
        let abandon = self
            .shared
            .with_scheduler(|s, now| s.heartbeat(&worker, &running, now))?;
        for (trial, attempt) in &abandon {
            info!(worker = %worker, trial = %trial, attempt, "worker told to abandon a trial");
        }
        Ok(Response::new(pb::HeartbeatResponse {
            abandon: abandon
                .into_iter()
                .map(|(id, attempt)| pb::TrialAttempt {
                    trial_id: id.0,
                    attempt,
                })
                .collect(),
        }))
    }

    async fn finish(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        let (finished, commit) = self.shared.change(|s, now, ops| {
            s.finish(&worker, &trial, attempt, now)?;
            durable(s, &trial, ops);
            ops.push(Op::DropCheckpoint(trial.clone()));
            Ok::<_, SchedulerError>(())
        });
        finished.map_err(|e| refused(e, &worker, "finish"))?;
        committed(commit, &trial, "finish").await?;
        info!(worker = %worker, trial = %trial, attempt, "trial finished");
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        let reason = if r.reason.is_empty() {
            "no reason given"
        } else {
            clip(&r.reason, MAX_REASON)
        };
        let (status, commit) = self.shared.change(|s, now, ops| {
            let status = s.fail(&worker, &trial, attempt, reason, r.retryable, now)?;
            durable(s, &trial, ops);
            Ok::<_, SchedulerError>(status)
        });
        let status = status.map_err(|e| refused(e, &worker, "failure report"))?;
        committed(commit, &trial, "failure").await?;
        warn!(worker = %worker, trial = %trial, attempt, retryable = r.retryable, reason, status = %status, "trial attempt failed");
        Ok(Response::new(pb::FailResponse {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::UploadArtifactResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| invalid("empty artifact stream"))?;
        let worker = worker_id(first.worker_id)?;
        let (trial, attempt) = trial_attempt(first.trial)?;
        check_artifact_name(&first.name)?;
        lock(&self.shared.scheduler).check_artifact(&worker, &trial, attempt)?;

        let dir = self
            .shared
            .config
            .results_dir
            .join("artifacts")
            .join(trial.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            error!(path = %dir.display(), error = %e, "creating artifact folder failed");
            Status::internal(format!("creating artifact folder: {e}"))
        })?;
        let seq = self.shared.upload_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.{seq}.tmp", first.name));
        let dest = dir.join(&first.name);
        let received = self.receive_artifact(&mut stream, first.data, &tmp).await;
        // The lease may have moved on while the bytes streamed in.
        let still_current = lock(&self.shared.scheduler).check_artifact(&worker, &trial, attempt);
        let result = match (received, still_current) {
            (Ok(bytes), Ok(())) => tokio::fs::rename(&tmp, &dest)
                .await
                .map(|()| bytes)
                .map_err(|e| {
                    error!(path = %dest.display(), error = %e, "renaming artifact failed");
                    Status::internal(format!("storing artifact: {e}"))
                }),
            (Err(status), _) => Err(status),
            (Ok(_), Err(e)) => Err(e.into()),
        };
        match result {
            Ok(bytes) => {
                info!(worker = %worker, trial = %trial, attempt, name = %first.name, bytes, "artifact stored");
                Ok(Response::new(pb::UploadArtifactResponse { bytes }))
            }
            Err(status) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                warn!(worker = %worker, trial = %trial, attempt, name = %first.name, error = %status.message(), "artifact rejected");
                Err(status)
            }
        }
    }
}

/// Serves the coordinator, gRPC health (`sweep.v1.Coordinator` SERVING) and reflection on
/// `listener` until `shutdown` completes, expiring lapsed leases every quarter lease timeout.
///
/// `security` says what is enforced (its `Default`: nothing, as for loopback): its
/// token on the coordinator service and reflection (health stays open for load balancers, see
/// [`crate::security`]) and its TLS on the whole listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    security: crate::security::ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CoordinatorServer<CoordinatorService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection =
        tonic::service::interceptor::InterceptedService::new(reflection, security.interceptor());

    let period = (shared.config.lease_timeout / 4).max(Duration::from_millis(10));
    let expiry = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                shared.expire(Instant::now());
            }
        })
    };
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, sweep = %shared.config.sweep_name, "coordinator listening");
        security.log(addr);
    }
    let mut builder = tonic::transport::Server::builder()
        // Calls answer in milliseconds; one still running after this is stuck (or a client
        // trickling a 64 MiB checkpoint at under 1 Mbit/s). It is answered CANCELLED, which
        // workers retry, and its task and buffers are freed.
        .timeout(SERVER_CALL_TIMEOUT)
        // A worker whose machine vanished leaves a half-open connection: pings close it.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(60)));
    if let Some(tls) = security.tls_config() {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            // Bounded: a ReportEpoch carries a checkpoint, anything larger is refused with
            // RESOURCE_EXHAUSTED before it is buffered.
            CoordinatorServer::new(CoordinatorService::new(shared))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            security.interceptor(),
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    expiry.abort();
    result?;
    Ok(())
}
