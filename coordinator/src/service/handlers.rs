//! The `sweep.v1.Coordinator` handlers: each validates its request ([`super::validate`]),
//! asks the scheduler through the [`SweepState`], waits for the commit when the answer
//! changed durable state, logs, and answers. The scheduler's refusals map to gRPC codes in
//! one place, [`code`].

use super::artifacts::Upload;
use super::state::{durable, Pending, SweepState};
use super::validate::{self, clip, invalid, trial_attempt, worker_id, MAX_REASON, MAX_RUNNING};
use super::MAX_WORKERS;
use crate::scheduler::{LeaseOutcome, ReportOutcome, SchedulerError, WorkerId, WorkerInfo};
use crate::store::Op;
use proto::pb::coordinator_server::Coordinator;
use proto::{pb, EpochMetrics, TrialId};
use std::sync::Arc;
use std::time::Duration;
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

    /// A lease for the wire, with the checkpoint to resume from.
    async fn grant(
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
        })
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        validate::labels(&r.name, &r.device)?;
        if r.slots == 0 {
            return Err(invalid("slots must be at least 1"));
        }
        let info = WorkerInfo {
            name: r.name,
            device: r.device,
            slots: r.slots,
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
            threads = r.threads, version = %clip(&r.version, 64), "worker registered");
        let c = self.state.config();
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
        let outcome = self.state.with_scheduler(|s, now| s.lease(&worker, now))?;
        let outcome = match outcome {
            LeaseOutcome::Lease(l) => Outcome::Lease(self.grant(&worker, l).await?),
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
        let r = request.into_inner();
        let worker = worker_id(r.worker_id)?;
        let (trial, attempt) = trial_attempt(r.trial)?;
        let metrics = r.metrics.ok_or_else(|| invalid("missing field metrics"))?;
        let metrics =
            EpochMetrics::try_from(metrics).map_err(|e| invalid(format!("metrics: {e}")))?;
        let checkpoint = r.checkpoint;
        // 0: a worker that does not say how many threads it trained with.
        let threads = (r.threads > 0).then_some(r.threads);
        let (outcome, commit) = self.state.change(|s, now, ops| {
            let outcome = s.report_epoch(&worker, &trial, attempt, metrics, threads, now)?;
            if let ReportOutcome::Accepted(rec) = &outcome {
                ops.push(Op::Epoch(self.state.next_seq(), rec.clone()));
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
            .state
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
        let (finished, commit) = self.state.change(|s, now, ops| {
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
        let (status, commit) = self.state.change(|s, now, ops| {
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
        let artifact = validate::artifact_name(&first.name)?;
        let holds = |s: &crate::scheduler::Scheduler| s.check_artifact(&worker, &trial, attempt);
        self.state.read(holds)?;

        let upload = Upload::start(self.state.dir(), &trial, artifact).await?;
        let max = self.state.config().max_artifact_bytes;
        let received = upload.receive(first.data, &mut stream, max).await;
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
