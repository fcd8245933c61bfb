//! The coordinator as one `worker join` process sees it.
//!
//! [`Coordinator`] wraps the gRPC client that [`crate::connect`] builds with everything a
//! call needs besides its request: the worker id (and registering again when a restarted
//! coordinator no longer knows it), retrying transient failures within the reconnect budget,
//! and what a failed call means ([`classify`]). Calls about a leased trial answer
//! [`Answer::Ok`] or [`Answer::LeaseLost`]; an `Err` is a failure retrying could not fix (the
//! coordinator stayed unreachable past the budget, or refused the call for another reason),
//! and what it ends is the caller's choice: `worker join` abandons a trial whose report was
//! refused and stops on any other.
//!
//! Leases are per trial attempt ([`Attempt`]), each with its own lost flag: the heartbeat
//! reports every attempt the process [`Coordinator::hold`]s and raises the flag of any the
//! coordinator takes back, and a call that finds its lease gone raises its own. A process
//! holds one trial today; a fused group of trials would hold all of its members, and each
//! member's lease could be lost on its own.

use crate::connect::{Client, Connection};
use crate::{Error, Result};
use proto::pb::{self, lease_response::Outcome};
use proto::{EpochMetrics, Hyperparams};
use results_format::{Goal, Metric, Mode};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Bytes per artifact chunk.
const CHUNK: usize = 1 << 20;

/// The coordinator of one `worker join` process: see the module documentation.
pub struct Coordinator {
    rpc: Client,
    registration: pb::RegisterRequest,
    /// Replaced when the worker registers again after a coordinator restart.
    worker_id: RwLock<String>,
    /// Serialises re-registration so that the trial and the heartbeat, noticing a restart
    /// together, register once.
    reregister: tokio::sync::Mutex<()>,
    /// How long transient failures are retried before a call gives up.
    budget: Duration,
    heartbeat_interval: Duration,
    /// The trial attempts this process holds leases on now, reported by every heartbeat.
    held: Mutex<Vec<Attempt>>,
    /// Training samples per second of the last epoch (an `f64`'s bits), reported by every
    /// heartbeat for the coordinator's metrics.
    samples_per_second: AtomicU64,
    /// The GPU memory at the end of the last epoch, for heartbeats.
    gpu_memory_bytes: AtomicU64,
    /// The threads the coordinator's plan asks for (issue 13), from report and heartbeat
    /// answers; never set when this worker's threads are pinned.
    planned_threads: crate::device::PlannedThreads,
}

/// One attempt at one trial, leased to this worker: what every call about the trial names.
/// Clones share the lost flag.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub trial_id: String,
    /// 1 for the first lease of the trial, one more on every re-lease.
    pub attempt: u32,
    /// The worker id the lease was given to: after registering again, calls about this
    /// attempt still carry the old id and learn that the lease is gone.
    worker_id: String,
    /// Raised when the coordinator no longer holds this attempt for this worker.
    lost: Arc<AtomicBool>,
}

impl Attempt {
    /// Whether the coordinator took this attempt back (a heartbeat said so, or a call found
    /// its lease gone): its training should stop, the trial resumes elsewhere.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    fn wire(&self) -> pb::TrialAttempt {
        pb::TrialAttempt {
            trial_id: self.trial_id.clone(),
            attempt: self.attempt,
        }
    }

    fn is(&self, wire: &pb::TrialAttempt) -> bool {
        self.trial_id == wire.trial_id && self.attempt == wire.attempt
    }
}

/// The coordinator's answer to a request for work.
#[derive(Debug)]
// One offer per lease call, moved once into the slot loop: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Offer {
    /// A trial to train.
    Trial(Leased),
    /// Nothing to do now: ask again after this long.
    Wait(Duration),
    /// The sweep is done.
    Done,
}

/// A leased trial: which attempt, what to train, and where to resume.
#[derive(Debug)]
pub struct Leased {
    pub attempt: Attempt,
    /// The reason, when the lease's hyperparameters are missing or invalid: the trial cannot
    /// run on any worker.
    pub hparams: Result<Hyperparams, String>,
    /// Epochs already recorded; the trial resumes after them from `checkpoint`.
    pub start_epoch: u32,
    /// The state after `start_epoch` (empty when it is 0): [`crate::checkpoint`] bytes.
    pub checkpoint: Vec<u8>,
    /// What the trial's best epoch is chosen on (its experiment's metric and mode).
    pub goal: Goal,
    /// Epochs after which the worker waits for the verdict on its report.
    pub rung_epochs: Vec<u32>,
    /// The divergence rule's factor, when the experiment has it.
    pub divergence: Option<f64>,
    /// The other members of its fused group (issue 13), each an ordinary lease of its own
    /// trial; empty for a trial leased alone.
    pub members: Vec<Leased>,
}

/// How a call about a leased trial ended, once transient failures were retried away.
#[derive(Debug)]
#[must_use]
pub enum Answer {
    Ok,
    /// A stopping rule ended the trial (an answer to a report): train no further, upload the
    /// artifacts, then `Finish`. The text says which rule and why.
    Stop(String),
    /// The coordinator no longer holds this attempt for this worker: it took the trial back
    /// (FAILED_PRECONDITION), or it restarted and forgot this worker (NOT_FOUND). The
    /// attempt's lost flag is raised; the trial resumes elsewhere from its last checkpoint.
    LeaseLost(tonic::Status),
}

/// What a failed call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The link or the coordinator is down for now: retried within the reconnect budget.
    Transient,
    /// NOT_FOUND: the coordinator restarted and no longer knows this worker id.
    UnknownWorker,
    /// FAILED_PRECONDITION: the trial's attempt is no longer this worker's.
    NotHeld,
    /// Anything else: retrying cannot help.
    Fatal,
}

/// What the failure `e` of a call to the coordinator means.
pub fn classify(e: &Error) -> Failure {
    match e {
        Error::Transport(_) => Failure::Transient,
        Error::Rpc(s) => match s.code() {
            // Cancelled / DeadlineExceeded: the call ran past the channel's timeout.
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded => Failure::Transient,
            tonic::Code::NotFound => Failure::UnknownWorker,
            tonic::Code::FailedPrecondition => Failure::NotHeld,
            _ => Failure::Fatal,
        },
        _ => Failure::Fatal,
    }
}

impl Coordinator {
    /// Connects to the coordinator of `conn` (retrying within `budget`) and registers as
    /// `registration`. A refused registration is final: a wrong or missing token, or
    /// plaintext against a TLS listener, never gets better, so it stops with what to check.
    pub async fn join(
        conn: &Connection,
        registration: pb::RegisterRequest,
        budget: Duration,
    ) -> Result<Coordinator> {
        let rpc = Coordinator::connect(conn, budget).await?;
        Coordinator::register(conn, rpc, registration, budget).await
    }

    /// Connects to the coordinator of `conn`, retrying within `budget` (the first half of
    /// [`Coordinator::join`]; `worker join` fetches the dataset on such a connection before it
    /// joins).
    pub async fn connect(conn: &Connection, budget: Duration) -> Result<Client> {
        let channel = retry(budget, "connect", || conn.connect()).await?;
        Ok(conn.client(channel))
    }

    /// Registers as `registration` on the connected `rpc` (the second half of
    /// [`Coordinator::join`]).
    async fn register(
        conn: &Connection,
        mut rpc: Client,
        registration: pb::RegisterRequest,
        budget: Duration,
    ) -> Result<Coordinator> {
        let reg = rpc
            .register(registration.clone())
            .await
            .map_err(|s| conn.register_error(s))?
            .into_inner();
        info!(worker = %reg.worker_id, name = %registration.name, device = %registration.device,
            device_name = %registration.device_name, threads = registration.threads,
            sweep = %reg.sweep_name, coordinator = %reg.coordinator_version,
            protocol = reg.protocol, "registered");
        Ok(Coordinator {
            rpc,
            registration,
            worker_id: RwLock::new(reg.worker_id),
            reregister: tokio::sync::Mutex::new(()),
            budget,
            heartbeat_interval: Duration::from_millis(u64::from(reg.heartbeat_interval_ms.max(50))),
            held: Mutex::new(Vec::new()),
            samples_per_second: AtomicU64::new(0f64.to_bits()),
            gpu_memory_bytes: AtomicU64::new(0),
            planned_threads: crate::device::PlannedThreads::default(),
        })
    }

    /// What the coordinator's plan asks this worker's threads to be (issue 13): the training
    /// thread applies it between epochs.
    pub fn planned_threads(&self) -> &crate::device::PlannedThreads {
        &self.planned_threads
    }

    /// Keeps a thread count the coordinator asked for (0: keep), unless the user pinned them.
    fn plan_says(&self, threads: u32) {
        if !self.registration.threads_pinned {
            self.planned_threads.ask(threads);
        }
    }

    /// How often the coordinator wants a heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn worker_id(&self) -> String {
        self.worker_id.read().expect("worker id").clone()
    }

    /// Asks for work, registering again first if the coordinator restarted.
    pub async fn lease(&self) -> Result<Offer> {
        loop {
            let worker_id = self.worker_id();
            let req = pb::LeaseRequest {
                worker_id: worker_id.clone(),
            };
            let resp = self
                .call("lease", |mut c| {
                    let r = req.clone();
                    async move { c.lease(r).await }
                })
                .await;
            match resp {
                Ok(resp) => return Ok(offer(resp, worker_id)),
                Err(e) if classify(&e) == Failure::UnknownWorker => {
                    self.reregister(&worker_id).await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Holds `attempts` until the returned guard drops: every heartbeat in between reports
    /// them (which keeps their leases alive) and raises the lost flag of any the coordinator
    /// takes back.
    pub fn hold(&self, attempts: &[Attempt]) -> Holding<'_> {
        self.held
            .lock()
            .expect("held attempts")
            .extend_from_slice(attempts);
        Holding {
            coordinator: self,
            attempts: attempts.to_vec(),
        }
    }

    /// One heartbeat: reports the attempts held now, raises the lost flag of those the
    /// coordinator says to abandon, and registers again if it restarted. Failures are logged:
    /// the next heartbeat is the retry.
    pub async fn heartbeat(&self) {
        let running = self.held_now().iter().map(Attempt::wire).collect();
        let worker_id = self.worker_id();
        let req = pb::HeartbeatRequest {
            worker_id: worker_id.clone(),
            running,
            samples_per_second: f64::from_bits(self.samples_per_second.load(Ordering::Relaxed)),
            gpu_memory_bytes: self.gpu_memory_bytes.load(Ordering::Relaxed),
        };
        match self.rpc.clone().heartbeat(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                self.plan_says(resp.threads);
                for gone in resp.abandon {
                    if let Some(a) = self.held_now().iter().find(|a| a.is(&gone)) {
                        warn!(trial = %a.trial_id, attempt = a.attempt, "coordinator took the lease back, abandoning");
                        a.lose();
                    }
                }
            }
            Err(s) => match Error::Rpc(s) {
                e if classify(&e) == Failure::UnknownWorker => {
                    if let Err(e) = self.reregister(&worker_id).await {
                        warn!(error = %e, "registering again failed");
                    }
                }
                e => warn!(error = %e, "heartbeat failed"),
            },
        }
    }

    /// The last epoch went through `samples` training samples in `seconds` and this process
    /// held `gpu_memory` bytes of GPU memory at its end: what the next heartbeats report (a
    /// non-positive or non-finite time leaves the throughput as it was; CPU workers report 0
    /// bytes).
    pub fn epoch_trained(&self, samples: u64, seconds: f64, gpu_memory: Option<u64>) {
        self.gpu_memory_bytes
            .store(gpu_memory.unwrap_or(0), Ordering::Relaxed);
        let rate = samples as f64 / seconds;
        if seconds > 0.0 && rate.is_finite() {
            self.samples_per_second
                .store(rate.to_bits(), Ordering::Relaxed);
        }
    }

    fn held_now(&self) -> Vec<Attempt> {
        self.held.lock().expect("held attempts").clone()
    }

    /// Reports one finished epoch of `a`, trained on `threads` threads (0: unknown), with the
    /// state after it (empty: none) and this process's GPU memory
    /// ([`crate::gpu::process_memory`]); the answer may stop the trial.
    pub async fn report(
        &self,
        a: &Attempt,
        metrics: &EpochMetrics,
        threads: u32,
        checkpoint: Vec<u8>,
        gpu_peak_memory_bytes: Option<u64>,
    ) -> Result<Answer> {
        let req = pb::ReportEpochRequest {
            worker_id: a.worker_id.clone(),
            trial: Some(a.wire()),
            metrics: Some(metrics.into()),
            checkpoint,
            gpu_peak_memory_bytes,
            diverged: None,
            threads,
        };
        self.reported(a, req).await
    }

    /// Reports that epoch `epoch` of `a` came out with `loss` = `value`, not a finite number
    /// (under the divergence rule): the answer stops the trial.
    pub async fn diverged(
        &self,
        a: &Attempt,
        epoch: u32,
        loss: &str,
        value: f64,
    ) -> Result<Answer> {
        let req = pb::ReportEpochRequest {
            worker_id: a.worker_id.clone(),
            trial: Some(a.wire()),
            metrics: None,
            checkpoint: Vec::new(),
            gpu_peak_memory_bytes: None,
            threads: 0,
            diverged: Some(pb::Diverged {
                epoch,
                loss: loss.to_owned(),
                value,
            }),
        };
        self.reported(a, req).await
    }

    /// One `ReportEpoch` about `a`: a stop in its answer is [`Answer::Stop`].
    async fn reported(&self, a: &Attempt, req: pb::ReportEpochRequest) -> Result<Answer> {
        let answer = self
            .call("report", |mut c| {
                let r = req.clone();
                async move { c.report_epoch(r).await }
            })
            .await;
        if let Ok(r) = &answer {
            self.plan_says(r.threads);
        }
        match answer {
            Ok(r) if r.stop => Ok(Answer::Stop(r.stop_reason)),
            Ok(_) => Ok(Answer::Ok),
            Err(e) => lost(a, e),
        }
    }

    /// Uploads one artifact of `a`, `name` with contents `bytes`, in chunks.
    pub async fn upload(&self, a: &Attempt, name: &str, bytes: &[u8]) -> Result<Answer> {
        self.about(a, "upload", |mut c| {
            let chunks = artifact_chunks(a, name, bytes);
            async move { c.upload_artifact(tokio_stream::iter(chunks)).await }
        })
        .await
    }

    /// `a` trained all its epochs (and its artifacts are uploaded).
    pub async fn finish(&self, a: &Attempt) -> Result<Answer> {
        let req = pb::FinishRequest {
            worker_id: a.worker_id.clone(),
            trial: Some(a.wire()),
        };
        self.about(a, "finish", |mut c| {
            let r = req.clone();
            async move { c.finish(r).await }
        })
        .await
    }

    /// `a` cannot go on; `retryable` says whether another attempt could succeed.
    pub async fn fail(&self, a: &Attempt, reason: &str, retryable: bool) -> Result<Answer> {
        let req = pb::FailRequest {
            worker_id: a.worker_id.clone(),
            trial: Some(a.wire()),
            reason: reason.to_owned(),
            retryable,
        };
        self.about(a, "fail", |mut c| {
            let r = req.clone();
            async move { c.fail(r).await }
        })
        .await
    }

    /// A call about attempt `a`: a lost lease is an answer (and raises `a`'s flag), not an
    /// error.
    async fn about<T, F, Fut>(&self, a: &Attempt, what: &str, f: F) -> Result<Answer>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self.call(what, f).await {
            Ok(_) => Ok(Answer::Ok),
            Err(e) => lost(a, e),
        }
    }

    /// One call, `f` on a clone of the client, retried while it fails transiently.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        retry(self.budget, what, || {
            let sent = f(self.rpc.clone());
            async move { Ok(sent.await?.into_inner()) }
        })
        .await
    }

    /// Registers again when the coordinator forgot `stale` (it restarted). Concurrent callers
    /// with the same stale id register once.
    async fn reregister(&self, stale: &str) -> Result<()> {
        let _one = self.reregister.lock().await;
        if self.worker_id() != stale {
            return Ok(());
        }
        let reg = self
            .call("register", |mut c| {
                let r = self.registration.clone();
                async move { c.register(r).await }
            })
            .await
            .map_err(|e| match e {
                // A coordinator of another release came back: its refusal says what matches.
                Error::Rpc(s) if s.code() == tonic::Code::FailedPrecondition => {
                    crate::connect::refused_protocol(&s)
                }
                e => e,
            })?;
        warn!(old = %stale, new = %reg.worker_id, "the coordinator restarted; registered again");
        *self.worker_id.write().expect("worker id") = reg.worker_id;
        Ok(())
    }
}

/// The failed call `e` about attempt `a`: a lost lease is an answer (and raises `a`'s flag),
/// anything else an error.
fn lost(a: &Attempt, e: Error) -> Result<Answer> {
    match (classify(&e), e) {
        (Failure::UnknownWorker | Failure::NotHeld, Error::Rpc(s)) => {
            a.lose();
            Ok(Answer::LeaseLost(s))
        }
        (_, e) => Err(e),
    }
}

/// Attempts held by [`Coordinator::hold`]; dropping it lets them go.
#[must_use]
pub struct Holding<'a> {
    coordinator: &'a Coordinator,
    attempts: Vec<Attempt>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut held = self.coordinator.held.lock().expect("held attempts");
        held.retain(|h| !self.attempts.iter().any(|a| Arc::ptr_eq(&a.lost, &h.lost)));
    }
}

/// The lease response as an [`Offer`] to worker `worker_id`.
fn offer(resp: pb::LeaseResponse, worker_id: String) -> Offer {
    match resp.outcome {
        Some(Outcome::Lease(lease)) => Offer::Trial(leased(lease, &worker_id)),
        Some(Outcome::Wait(w)) => Offer::Wait(Duration::from_millis(u64::from(
            w.retry_after_ms.clamp(10, 5000),
        ))),
        Some(Outcome::Done(_)) | None => Offer::Done,
    }
}

/// One lease (and its fused group's members, each its own) to worker `worker_id`.
fn leased(lease: pb::Lease, worker_id: &str) -> Leased {
    let goal = goal(&lease.metric, &lease.mode);
    let hparams = match (lease.hparams.map(Hyperparams::try_from), &goal) {
        (_, Err(e)) => Err(format!("invalid lease: {e}")),
        (Some(Ok(h)), _) => Ok(h),
        (Some(Err(e)), _) => Err(format!("invalid hyperparameters in lease: {e}")),
        (None, _) => Err("lease without hyperparameters".into()),
    };
    Leased {
        attempt: Attempt {
            trial_id: lease.trial_id,
            attempt: lease.attempt,
            worker_id: worker_id.to_owned(),
            lost: Arc::default(),
        },
        hparams,
        start_epoch: lease.start_epoch,
        checkpoint: lease.checkpoint,
        goal: goal.unwrap_or_default(),
        rung_epochs: lease.rung_epochs,
        divergence: lease.divergence_factor,
        members: lease
            .members
            .into_iter()
            .map(|m| leased(m, worker_id))
            .collect(),
    }
}

/// The lease's metric and mode (empty: validation accuracy, its natural direction).
fn goal(metric: &str, mode: &str) -> Result<Goal, String> {
    let metric = match metric {
        "" => Metric::ValAcc,
        m => m.parse::<Metric>()?,
    };
    let mode = match mode {
        "" => metric.natural_mode(),
        "max" => Mode::Max,
        "min" => Mode::Min,
        m => return Err(format!("mode {m:?} is not \"max\" or \"min\"")),
    };
    Ok(Goal::new(metric, mode))
}

/// `bytes` as the chunks of one upload: the first names the attempt and the artifact (an
/// empty artifact is one empty chunk).
fn artifact_chunks(a: &Attempt, name: &str, bytes: &[u8]) -> Vec<pb::ArtifactChunk> {
    let mut chunks: Vec<pb::ArtifactChunk> = bytes
        .chunks(CHUNK)
        .map(|c| pb::ArtifactChunk {
            data: c.to_vec(),
            ..Default::default()
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(pb::ArtifactChunk::default());
    }
    chunks[0].worker_id = a.worker_id.clone();
    chunks[0].trial = Some(a.wire());
    chunks[0].name = name.into();
    chunks
}

/// Retries `f` while it fails transiently ([`classify`]) until `budget` has passed.
async fn retry<T, F, Fut>(budget: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if classify(&e) == Failure::Transient && start.elapsed() < budget => {
                warn!(error = %e, what, "coordinator unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn calls_fail_transiently_lose_the_lease_or_fatally() {
        let rpc = |code| classify(&Error::Rpc(Status::new(code, "x")));
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Cancelled,
            Code::DeadlineExceeded,
        ] {
            assert_eq!(rpc(code), Failure::Transient, "{code:?}");
        }
        assert_eq!(rpc(Code::NotFound), Failure::UnknownWorker);
        assert_eq!(rpc(Code::FailedPrecondition), Failure::NotHeld);
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            assert_eq!(rpc(code), Failure::Fatal, "{code:?}");
        }
        assert_eq!(
            classify(&Error::Tls("bad certificate".into())),
            Failure::Fatal
        );
    }

    #[tokio::test]
    async fn retry_gives_up_on_what_is_not_transient_and_after_the_budget() {
        let mut tries = 0;
        let r: Result<()> = retry(Duration::from_secs(5), "test", || {
            tries += 1;
            async { Err(Error::Rpc(Status::failed_precondition("stale"))) }
        })
        .await;
        assert!(matches!(r, Err(Error::Rpc(_))));
        assert_eq!(tries, 1);

        // Tries at 0, 0.1 and 0.3 s (the delay doubles), then the budget is spent.
        let mut tries = 0;
        let started = Instant::now();
        let budget = Duration::from_millis(250);
        let r: Result<()> = retry(budget, "test", || {
            tries += 1;
            async { Err(Error::Rpc(Status::unavailable("down"))) }
        })
        .await;
        assert!(matches!(r, Err(Error::Rpc(_))));
        assert_eq!(tries, 3);
        let waited = started.elapsed();
        assert!(
            waited >= budget && waited < Duration::from_secs(3),
            "{waited:?}"
        );

        let mut tries = 0;
        let r = retry(Duration::from_secs(5), "test", || {
            tries += 1;
            let fail = tries < 3;
            async move {
                if fail {
                    Err(Error::Rpc(Status::unavailable("down")))
                } else {
                    Ok(7)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
    }

    fn lease(hparams: Option<pb::Hyperparams>) -> pb::LeaseResponse {
        pb::LeaseResponse {
            outcome: Some(Outcome::Lease(pb::Lease {
                trial_id: "ffv0-1".into(),
                attempt: 2,
                hparams,
                start_epoch: 1,
                checkpoint: vec![1, 2, 3],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_lease_becomes_an_offer_with_its_own_lost_flag() {
        let good: pb::Hyperparams = (&Hyperparams::default()).into();
        let Offer::Trial(l) = offer(lease(Some(good)), "w1".into()) else {
            panic!("not a trial")
        };
        assert_eq!(
            (l.attempt.trial_id.as_str(), l.attempt.attempt),
            ("ffv0-1", 2)
        );
        assert_eq!(l.attempt.worker_id, "w1");
        assert_eq!(l.hparams.unwrap(), Hyperparams::default());
        assert_eq!((l.start_epoch, l.checkpoint), (1, vec![1, 2, 3]));
        let shared = l.attempt.clone();
        assert!(!shared.is_lost());
        l.attempt.lose();
        assert!(shared.is_lost(), "clones share the flag");

        let Offer::Trial(l) = offer(lease(None), "w1".into()) else {
            panic!("not a trial")
        };
        assert_eq!(l.hparams.unwrap_err(), "lease without hyperparameters");
        let bad = pb::Hyperparams {
            arch: "resnet".into(),
            ..(&Hyperparams::default()).into()
        };
        let Offer::Trial(l) = offer(lease(Some(bad)), "w1".into()) else {
            panic!("not a trial")
        };
        assert!(l
            .hparams
            .unwrap_err()
            .starts_with("invalid hyperparameters in lease"));

        let mut odd = lease(Some((&Hyperparams::default()).into()));
        if let Some(Outcome::Lease(l)) = &mut odd.outcome {
            l.metric = "val_loss".into();
            l.rung_epochs = vec![1, 3];
            l.divergence_factor = Some(2.0);
        }
        let Offer::Trial(l) = offer(odd, "w1".into()) else {
            panic!("not a trial")
        };
        assert_eq!(l.goal, Goal::new(Metric::ValLoss, Mode::Min));
        assert_eq!((l.rung_epochs, l.divergence), (vec![1, 3], Some(2.0)));
        let mut bad_mode = lease(Some((&Hyperparams::default()).into()));
        if let Some(Outcome::Lease(l)) = &mut bad_mode.outcome {
            l.mode = "up".into();
        }
        let Offer::Trial(l) = offer(bad_mode, "w1".into()) else {
            panic!("not a trial")
        };
        assert!(l.hparams.unwrap_err().contains("mode \"up\""));

        let wait = |ms| pb::LeaseResponse {
            outcome: Some(Outcome::Wait(pb::Wait { retry_after_ms: ms })),
        };
        assert!(
            matches!(offer(wait(0), "w".into()), Offer::Wait(d) if d == Duration::from_millis(10))
        );
        assert!(
            matches!(offer(wait(60_000), "w".into()), Offer::Wait(d) if d == Duration::from_secs(5))
        );
        assert!(matches!(
            offer(pb::LeaseResponse { outcome: None }, "w".into()),
            Offer::Done
        ));
    }

    #[test]
    fn an_artifact_is_chunked_with_its_name_in_the_first_chunk() {
        let a = Attempt {
            trial_id: "t".into(),
            attempt: 3,
            worker_id: "w2".into(),
            lost: Arc::default(),
        };
        let bytes = vec![7u8; CHUNK + 10];
        let chunks = artifact_chunks(&a, "model.safetensors", &bytes);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].name, "model.safetensors");
        assert_eq!(chunks[0].worker_id, "w2");
        assert_eq!(chunks[0].trial, Some(a.wire()));
        assert!(chunks[1].name.is_empty() && chunks[1].trial.is_none());
        assert_eq!(chunks[0].data.len() + chunks[1].data.len(), bytes.len());
        let empty = artifact_chunks(&a, "config.json", &[]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].name, "config.json");
    }
}
