//! The `sweep.v1.Coordinator` handlers: each validates its request ([`super::validate`]),
//! asks the scheduler through the [`SweepState`], waits for the commit when the answer
//! changed durable state, logs, and answers. The scheduler's refusals map to gRPC codes in
//! one place, [`code`].

use super::artifacts::Upload;
use super::state::{durable, Pending, SweepState};
use super::validate::{
    self, clip, invalid, trial_attempt, worker_id, MAX_LABEL, MAX_REASON, MAX_RUNNING,
};
use super::MAX_WORKERS;
use crate::scheduler::{LeaseOutcome, ReportOutcome, SchedulerError, WorkerId, WorkerInfo};
use crate::store::Op;
use proto::pb::coordinator_server::Coordinator;
use proto::{pb, protocol, EpochMetrics, TrialId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

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

/// Waits for a commit queued by [`SweepState::change`].
async fn committed(pending: Option<Pending>, trial: &TrialId, what: &str) -> Result<(), Status> {
    let Some(pending) = pending else {
        return Ok(());
    };
    pending.await.map_err(|e| {
        error!(trial = %trial, error = %e, "recording the {what} failed");
        Status::internal(format!("recording the {what} failed: {e}"))
    })
}

/// The `build` label of a worker's metrics (`hypersweep_workers_connected`): what its
/// registration says it was built from, today the crate version. The one place to change
/// when registrations describe builds better.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The `sweep.v1.Coordinator` service.
#[derive(Clone)]
pub struct CoordinatorService {
    state: Arc<SweepState>,
}

impl CoordinatorService {
    pub fn new(state: Arc<SweepState>) -> Self {
        CoordinatorService { state }
    }

    /// The checkpoint after the trial's last committed epoch, read off the runtime. An
    /// unreadable one is logged and ignored: the trial starts over (slower, never wrong).
    async fn checkpoint(&self, trial: &TrialId) -> Result<Option<(u32, Vec<u8>)>, Status> {
        let store = self.state.store().clone();
        let id = trial.clone();
        let read = tokio::task::spawn_blocking(move || store.checkpoint(&id))
            .await
            .map_err(|e| Status::internal(format!("reading the checkpoint: {e}")))?;
        Ok(read.unwrap_or_else(|e| {
            warn!(trial = %trial, error = %e, "unreadable checkpoint, the trial starts over");
            None
        }))
    }

    /// ReportEpoch: the epoch recorded (or found a duplicate), answered after its commit.
    async fn record_epoch(
        &self,
        r: pb::ReportEpochRequest,
    ) -> Result<Response<pb::ReportEpochResponse>, Status> {
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        if let Some(d) = r.diverged {
            if r.metrics.is_some() {
                return Err(invalid("metrics and diverged together: send one of them"));
            }
            return self.report_diverged(worker, trial, attempt, d).await;
        }
        let metrics = r.metrics.ok_or_else(|| invalid("missing field metrics"))?;
        let metrics =
            EpochMetrics::try_from(metrics).map_err(|e| invalid(format!("metrics: {e}")))?;
        let checkpoint = r.checkpoint;
        let gpu_memory = r.gpu_peak_memory_bytes;
        // 0: a worker that does not say how many threads it trained with.
        let threads = (r.threads > 0).then_some(r.threads);
        let (outcome, commit) = self.state.change(|s, now, ops| {
            let mut outcome = s.report_epoch(&worker, &trial, attempt, metrics, threads, now)?;
            if let ReportOutcome::Accepted(rec) = &mut outcome {
                rec.gpu_peak_memory_bytes = gpu_memory;
                ops.push(Op::Epoch(self.state.next_seq(), rec.clone()));
                durable(s, &trial, ops);
                if !checkpoint.is_empty() {
                    ops.push(Op::Checkpoint(trial.clone(), metrics.epoch, checkpoint));
                }
            }
            let planned = s.planned_threads(&worker);
            Ok::<_, SchedulerError>((outcome, s.stop_of(&trial).cloned(), planned))
        });
        let (outcome, stop, planned) = outcome.map_err(|e| refused(e, &worker, "epoch report"))?;
        committed(commit, &trial, "epoch").await?;
        let duplicate = match outcome {
            ReportOutcome::Accepted(_) => {
                info!(worker = %worker, trial = %trial, attempt, epoch = metrics.epoch,
                    val_acc = metrics.val_acc, test_acc = metrics.test_acc, "epoch finished");
                if let Some(stop) = stop.as_ref().filter(|s| s.epoch == metrics.epoch) {
                    info!(worker = %worker, trial = %trial, attempt, epoch = stop.epoch,
                        rule = %stop.rule, reason = %stop.reason, "trial stopped");
                }
                false
            }
            ReportOutcome::Duplicate | ReportOutcome::AfterStop => {
                debug!(worker = %worker, trial = %trial, attempt, epoch = metrics.epoch, "epoch already recorded or past the trial's stop");
                true
            }
        };
        Ok(Response::new(pb::ReportEpochResponse {
            duplicate,
            stop: stop.is_some(),
            stop_reason: stop.map(|s| s.reason).unwrap_or_default(),
            threads: planned.unwrap_or(0),
        }))
    }

    /// A lease for the wire, with the checkpoint to resume from, and its fused group's other
    /// members, each with its own (issue 13).
    async fn grant(
        &self,
        worker: &WorkerId,
        mut l: crate::scheduler::Lease,
    ) -> Result<pb::Lease, Status> {
        let members = std::mem::take(&mut l.members);
        if !members.is_empty() {
            info!(worker = %worker, trial = %l.trial_id, members = members.len() + 1,
                "fused group leased");
        }
        let mut lease = self.grant_one(worker, l).await?;
        for m in members {
            lease.members.push(self.grant_one(worker, m).await?);
        }
        Ok(lease)
    }

    /// One trial's lease for the wire, with the checkpoint to resume from.
    async fn grant_one(
        &self,
        worker: &WorkerId,
        l: crate::scheduler::Lease,
    ) -> Result<pb::Lease, Status> {
        // Epochs the worker then retrains that were recorded meanwhile are answered `duplicate`.
        let checkpoint = if l.recorded > 0 {
            self.checkpoint(&l.trial_id).await?
        } else {
            None
        };
        let (start_epoch, checkpoint) = checkpoint.unwrap_or_default();
        info!(worker = %worker, trial = %l.trial_id, attempt = l.attempt, start_epoch,
            label = %l.hparams.label(), "trial leased");
        Ok(pb::Lease {
            trial_id: l.trial_id.0,
            attempt: l.attempt,
            hparams: Some(pb::Hyperparams::from(&l.hparams)),
            start_epoch,
            checkpoint,
            rung_epochs: l.rung_epochs,
            metric: l.goal.metric.as_str().to_owned(),
            mode: l.goal.mode.as_str().to_owned(),
            divergence_factor: l.divergence,
            members: Vec::new(),
        })
    }

    /// `ReportEpoch` with `diverged` instead of metrics: the epoch's loss was not finite.
    async fn report_diverged(
        &self,
        worker: WorkerId,
        trial: TrialId,
        attempt: u32,
        d: pb::Diverged,
    ) -> Result<Response<pb::ReportEpochResponse>, Status> {
        if d.epoch == 0 {
            return Err(invalid("diverged.epoch: epochs are 1-based, got 0"));
        }
        if !["train_loss", "val_loss", "test_loss"].contains(&d.loss.as_str()) {
            return Err(invalid(format!(
                "diverged.loss must be train_loss, val_loss or test_loss, got {:?}",
                clip(&d.loss, 64)
            )));
        }
        if d.value.is_finite() {
            return Err(invalid(format!(
                "diverged.value must be NaN or infinite, got {}; report finite metrics in metrics",
                d.value
            )));
        }
        let (stop, commit) = self.state.change(|s, now, ops| {
            let stop = s.diverged(&worker, &trial, attempt, d.epoch, &d.loss, d.value, now)?;
            durable(s, &trial, ops);
            Ok::<_, SchedulerError>(stop)
        });
        let stop = stop.map_err(|e| refused(e, &worker, "divergence report"))?;
        committed(commit, &trial, "divergence").await?;
        let reason = match stop {
            Some(stop) => {
                info!(worker = %worker, trial = %trial, attempt, epoch = d.epoch, rule = %stop.rule, reason = %stop.reason, "trial stopped");
                stop.reason
            }
            None => {
                warn!(worker = %worker, trial = %trial, attempt, epoch = d.epoch, loss = %d.loss,
                    "trial diverged without a divergence rule: failed");
                format!(
                    "failed: {} is {} at epoch {} (no divergence rule)",
                    d.loss, d.value, d.epoch
                )
            }
        };
        Ok(Response::new(pb::ReportEpochResponse {
            duplicate: false,
            stop: true,
            stop_reason: reason,
            threads: 0,
        }))
    }
}

/// The chunks of one `FetchDataset` answer.
pub type DatasetStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::DatasetChunk, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type FetchDatasetStream = DatasetStream;

    async fn fetch_dataset(
        &self,
        request: Request<pb::FetchDatasetRequest>,
    ) -> Result<Response<DatasetStream>, Status> {
        let peer = request.remote_addr();
        let chunks = self
            .state
            .dataset()
            .fetch(request.into_inner(), peer)
            .await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(chunks),
        )))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        validate::labels(&r.name, &r.device)?;
        if r.slots == 0 {
            return Err(invalid("slots must be at least 1"));
        }
        let protocol = protocol::of_register(r.protocol);
        let version = clip(&r.version, 64);
        if !protocol::is_served(protocol) {
            warn!(name = %clip(&r.name, MAX_LABEL), version, protocol, "worker refused: protocol not served");
            return Err(Status::failed_precondition(protocol::refusal(
                protocol,
                version,
                env!("CARGO_PKG_VERSION"),
            )));
        }
        let info = WorkerInfo {
            build: validate::build(&r),
            name: r.name,
            device: r.device,
            slots: r.slots,
            host: clip(&r.host, MAX_LABEL).to_owned(),
            device_name: clip(&r.device_name, MAX_LABEL).to_owned(),
            threads: r.threads,
            cores: r.cores,
            threads_pinned: r.threads_pinned,
            max_fuse: r.max_fuse,
        };
        let id = self.state.with_scheduler(|s, now| {
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
            threads = r.threads, cores = r.cores, pinned = r.threads_pinned, max_fuse = r.max_fuse, version, protocol,
            build = %info.build, host = %info.host,
            device_name = %info.device_name, "worker registered");
        let c = self.state.config();
        Ok(Response::new(pb::RegisterResponse {
            worker_id: id.0,
            heartbeat_interval_ms: millis(c.heartbeat_interval),
            lease_timeout_ms: millis(c.lease_timeout),
            sweep_name: c.sweep_name.clone(),
            protocol: protocol::PROTOCOL_VERSION,
            coordinator_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        use pb::lease_response::Outcome;
        let worker = worker_id(request.into_inner().worker_id)?;
        // A tpe suggestion is stored with the trial's first state before the lease that
        // carries it is answered: a restart neither loses nor draws it again.
        let ((outcome, notices), commit) = self.state.change(|s, now, ops| {
            let outcome = s.lease(&worker, now);
            if let Ok(LeaseOutcome::Lease(l)) = &outcome {
                if let Some(suggested) = &l.suggested {
                    ops.push(Op::Suggestion(suggested.clone()));
                    durable(s, &l.trial_id, ops);
                }
            }
            (outcome, s.take_notices())
        });
        for notice in notices {
            warn!(worker = %worker, "{notice}");
        }
        let outcome = match outcome? {
            LeaseOutcome::Lease(l) => {
                self.state.metrics().lease_granted();
                if let Some(suggested) = &l.suggested {
                    committed(commit, &l.trial_id, "suggestion").await?;
                    info!(experiment = %suggested.experiment, index = suggested.index,
                        trial = %l.trial_id, label = %l.hparams.label(), "trial suggested");
                }
                Outcome::Lease(self.grant(&worker, l).await?)
            }
            LeaseOutcome::Wait => Outcome::Wait(pb::Wait {
                retry_after_ms: millis(self.state.retry_after()),
            }),
            LeaseOutcome::Done => {
                self.state.told_done(worker);
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
        let arrived = Instant::now();
        let answer = self.record_epoch(request.into_inner()).await;
        self.state.metrics().report_answered(arrived.elapsed());
        answer
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let load = validate::load(&r)?;
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
        let (abandon, planned) = self.state.with_scheduler(|s, now| {
            let abandon = s.heartbeat(&worker, &running, now)?;
            s.report_load(&worker, load);
            Ok::<_, SchedulerError>((abandon, s.planned_threads(&worker)))
        })?;
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
            threads: planned.unwrap_or(0),
        }))
    }

    async fn finish(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        let (finished, commit) = self.state.change(|s, now, ops| {
            s.finish(&worker, &trial, attempt, now)?;
            durable(s, &trial, ops);
            ops.push(Op::DropCheckpoint(trial.clone()));
            Ok::<_, SchedulerError>(())
        });
        finished.map_err(|e| refused(e, &worker, "finish"))?;
        committed(commit, &trial, "finish").await?;
        if self.state.read(|s| s.stop_of(&trial).is_some()) {
            info!(worker = %worker, trial = %trial, attempt, "stopped trial ended with its artifacts");
        } else {
            info!(worker = %worker, trial = %trial, attempt, "trial finished");
        }
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
        let (status, commit) = self.state.change(|s, now, ops| {
            let status = s.fail(&worker, &trial, attempt, reason, r.retryable, now)?;
            durable(s, &trial, ops);
            Ok::<_, SchedulerError>(status)
        });
        let status = status.map_err(|e| refused(e, &worker, "failure report"))?;
        committed(commit, &trial, "failure").await?;
        self.state.metrics().attempt_failed();
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
        let artifact = validate::artifact_name(&first.name)?;
        let holds = |s: &crate::scheduler::Scheduler| s.check_artifact(&worker, &trial, attempt);
        self.state.read(holds)?;

        let upload = Upload::start(self.state.dir(), &trial, artifact).await?;
        let max = self.state.config().max_artifact_bytes;
        let received = upload.receive(first.data, &mut stream, max).await;
        if let Ok(bytes) = received {
            self.state.metrics().artifact_received(bytes);
        }
        // The lease may have moved on while the bytes streamed in.
        let result = match (received, self.state.read(holds)) {
            (Ok(bytes), Ok(())) => upload.keep().await.map(|()| bytes),
            (Err(status), _) => {
                upload.discard().await;
                Err(status)
            }
            (Ok(_), Err(e)) => {
                upload.discard().await;
                Err(e.into())
            }
        };
        match result {
            Ok(bytes) => {
                info!(worker = %worker, trial = %trial, attempt, name = %artifact, bytes, "artifact stored");
                Ok(Response::new(pb::UploadArtifactResponse { bytes }))
            }
            Err(status) => {
                warn!(worker = %worker, trial = %trial, attempt, name = %artifact, error = %status.message(), "artifact rejected");
                Err(status)
            }
        }
    }
}
