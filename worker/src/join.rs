//! `worker join`: lease trials from a coordinator and train them until the sweep is done.
//!
//! A process trains one trial at a time (`--slots N` is N processes: see [`crate::slots`]).
//! Its slot is a loop on the async runtime: lease, train on a dedicated OS thread (training
//! never blocks the runtime), forward each epoch through a bounded channel to `ReportEpoch`,
//! upload the artifacts, `Finish`. A heartbeat task keeps the running lease alive and raises
//! the abandon flag of any lease the coordinator no longer gives this worker.
//!
//! Every `ReportEpoch` carries the trial's checkpoint after that epoch; a lease with
//! `start_epoch > 0` comes with the checkpoint to restore, and training continues after it.
//! When the coordinator restarts, it no longer knows this worker's id (NOT_FOUND): the worker
//! registers again and goes on leasing; the trials it was training are abandoned (their
//! reports are rejected) and resume elsewhere from their last checkpoint.

use crate::cli::JoinArgs;
use crate::connect::{Client, Connection};
use crate::data::Subset;
use crate::train::Trial;
use crate::{device, Error, Result};
use proto::pb::{self, lease_response::Outcome};
use proto::{EpochMetrics, Hyperparams};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tch::Device;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Bytes per artifact chunk.
const CHUNK: usize = 1 << 20;
/// Largest checkpoint sent with a report: the coordinator takes messages up to 64 MiB.
const MAX_CHECKPOINT: usize = 60 << 20;

type Running = Arc<Mutex<HashMap<(String, u32), Arc<AtomicBool>>>>;

struct Ctx {
    client: Client,
    /// Replaced when the worker registers again after a coordinator restart.
    worker_id: std::sync::RwLock<String>,
    /// Serialises re-registration so that the slot and the heartbeat, noticing a restart
    /// together, register once.
    reregister: tokio::sync::Mutex<()>,
    registration: pb::RegisterRequest,
    /// `None` with `--noop`.
    data: Option<Arc<dataset::FashionMnist>>,
    subset: Subset,
    device: Device,
    threads: usize,
    running: Running,
    scratch: PathBuf,
    reconnect_timeout: Duration,
}

/// Runs `worker join` until the coordinator says the sweep is done.
pub async fn run(args: JoinArgs) -> Result<()> {
    let dev = device::parse_device(&args.device)?;
    // One trial at a time in a process: `--slots N` is N processes (see slots.rs), each of
    // which comes here as slot `i` of N.
    let slot = crate::slots::this_slot(&args)?;
    if slot.is_none() && args.slots > 1 {
        return Err(Error::Slot(
            "--slots N runs N processes: call slots::supervise, not join::run".into(),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.slots.max(1)).max(1));
    let mut name = args.name.clone().unwrap_or_else(default_name);
    if let Some(i) = slot {
        name = format!("{name}/{i}");
    }

    if slot.is_some() {
        watch_stdin("the `worker join --slots` that started this slot is gone");
    } else if args.exit_on_stdin_eof {
        watch_stdin("coordinator went away");
    }

    let data = if args.noop {
        None
    } else {
        let data_dir = dataset::locate(args.data.data_dir.as_deref())?;
        let data = tokio::task::spawn_blocking(move || dataset::load(&data_dir))
            .await
            .expect("loader thread")?;
        Some(Arc::new(data))
    };
    let subset = Subset {
        train: args.data.train_limit,
        test: args.data.test_limit,
    };

    // Plaintext or TLS, with the token interceptor: see connect.rs.
    let conn = Connection::from_args(&args)?;
    let reconnect_timeout = Duration::from_secs(args.reconnect_timeout);
    let channel = retry(reconnect_timeout, "connect", || {
        let conn = conn.clone();
        async move { conn.connect().await }
    })
    .await?;
    let mut client = conn.client(channel);
    let registration = pb::RegisterRequest {
        name: name.clone(),
        device: device::device_name(dev),
        slots: 1,
        threads: threads as u32,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let reg = client
        .register(registration.clone())
        .await
        // A wrong or missing token never gets better: stop with what to check.
        .map_err(|s| conn.register_error(s))?
        .into_inner();
    info!(worker = %reg.worker_id, %name, device = %device::device_name(dev), threads, sweep = %reg.sweep_name, "registered");

    let scratch = std::env::temp_dir().join(format!("hypersweep-worker-{}", std::process::id()));
    let ctx = Arc::new(Ctx {
        client,
        worker_id: std::sync::RwLock::new(reg.worker_id),
        reregister: tokio::sync::Mutex::new(()),
        registration,
        data,
        subset,
        device: dev,
        threads,
        running: Arc::default(),
        scratch: scratch.clone(),
        reconnect_timeout,
    });
    let heartbeat = tokio::spawn(heartbeat_loop(
        ctx.clone(),
        Duration::from_millis(u64::from(reg.heartbeat_interval_ms.max(50))),
    ));
    let result = tokio::spawn(slot_loop(ctx.clone(), slot.unwrap_or(0)))
        .await
        .expect("slot task panicked");
    heartbeat.abort();
    let _ = std::fs::remove_dir_all(&scratch);
    info!("sweep done, leaving");
    result
}

impl Ctx {
    fn worker_id(&self) -> String {
        self.worker_id.read().expect("worker id").clone()
    }

    /// Registers again when the coordinator forgot `stale` (it restarted). Concurrent callers
    /// with the same stale id register once.
    async fn reregister(&self, stale: &str) -> Result<()> {
        let _one = self.reregister.lock().await;
        if self.worker_id() != stale {
            return Ok(());
        }
        let mut client = self.client.clone();
        let reg = retry(self.reconnect_timeout, "register", || {
            let mut c = client.clone();
            let r = self.registration.clone();
            async move { Ok(c.register(r).await?.into_inner()) }
        })
        .await?;
        client = self.client.clone();
        let _ = &mut client;
        warn!(old = %stale, new = %reg.worker_id, "the coordinator restarted; registered again");
        *self.worker_id.write().expect("worker id") = reg.worker_id;
        Ok(())
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Rpc(s) if s.code() == tonic::Code::NotFound)
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Local workers must never outlive their coordinator, nor slot processes their `worker join`:
/// the parent holds our stdin open and we exit when it closes, whatever killed the parent.
/// `who` says in the log which parent went away.
fn watch_stdin(who: &'static str) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                Ok(0) | Err(_) => {
                    warn!("{who} (stdin closed), exiting");
                    std::process::exit(3);
                }
                Ok(_) => {}
            }
        }
    });
}

/// Retries `f` on transport errors and UNAVAILABLE until `budget` has passed.
async fn retry<T, F, Fut>(budget: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && start.elapsed() < budget => {
                warn!(error = %e, what, "coordinator unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_transient(e: &Error) -> bool {
    match e {
        Error::Transport(_) => true,
        // Cancelled / DeadlineExceeded: the call ran past the channel's timeout.
        Error::Rpc(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    }
}

async fn heartbeat_loop(ctx: Arc<Ctx>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let running: Vec<pb::TrialAttempt> = ctx
            .running
            .lock()
            .expect("running map")
            .keys()
            .map(|(t, a)| pb::TrialAttempt {
                trial_id: t.clone(),
                attempt: *a,
            })
            .collect();
        let mut client = ctx.client.clone();
        let worker_id = ctx.worker_id();
        match client
            .heartbeat(pb::HeartbeatRequest {
                worker_id: worker_id.clone(),
                running,
            })
            .await
        {
            Ok(resp) => {
                for ab in resp.into_inner().abandon {
                    if let Some(flag) = ctx
                        .running
                        .lock()
                        .expect("running map")
                        .get(&(ab.trial_id.clone(), ab.attempt))
                    {
                        warn!(trial = %ab.trial_id, attempt = ab.attempt, "coordinator took the lease back, abandoning");
                        flag.store(true, Ordering::SeqCst);
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                if let Err(e) = ctx.reregister(&worker_id).await {
                    warn!(error = %e, "registering again failed");
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn slot_loop(ctx: Arc<Ctx>, slot: usize) -> Result<()> {
    loop {
        let mut client = ctx.client.clone();
        let worker_id = ctx.worker_id();
        let resp = retry(ctx.reconnect_timeout, "lease", || {
            let mut c = client.clone();
            let w = worker_id.clone();
            async move {
                Ok(c.lease(pb::LeaseRequest { worker_id: w })
                    .await?
                    .into_inner())
            }
        })
        .await;
        let resp = match resp {
            Err(e) if is_not_found(&e) => {
                ctx.reregister(&worker_id).await?;
                continue;
            }
            r => r?,
        };
        client = ctx.client.clone();
        match resp.outcome {
            Some(Outcome::Lease(lease)) => {
                let hparams = match lease.hparams.clone().map(Hyperparams::try_from) {
                    Some(Ok(h)) => h,
                    other => {
                        let reason = match other {
                            Some(Err(e)) => format!("invalid hyperparameters in lease: {e}"),
                            _ => "lease without hyperparameters".into(),
                        };
                        let trial = Some(pb::TrialAttempt {
                            trial_id: lease.trial_id.clone(),
                            attempt: lease.attempt,
                        });
                        client
                            .fail(pb::FailRequest {
                                worker_id: worker_id.clone(),
                                trial,
                                reason,
                                retryable: false,
                            })
                            .await?;
                        continue;
                    }
                };
                let trial_id = lease.trial_id.clone();
                let ran = match &ctx.data {
                    Some(data) => run_trial(&ctx, data, slot, &worker_id, lease, hparams).await,
                    None => run_noop(&ctx, &worker_id, lease, &hparams).await,
                };
                match ran {
                    // The coordinator restarted or gave the trial to someone else: the trial
                    // resumes elsewhere from its last checkpoint; this slot leases anew.
                    Err(Error::Rpc(s))
                        if matches!(
                            s.code(),
                            tonic::Code::NotFound | tonic::Code::FailedPrecondition
                        ) =>
                    {
                        warn!(trial = %trial_id, status = %s.message(), "the coordinator no longer holds this lease for us; leasing anew");
                    }
                    r => r?,
                }
            }
            Some(Outcome::Wait(w)) => {
                tokio::time::sleep(Duration::from_millis(u64::from(
                    w.retry_after_ms.clamp(10, 5000),
                )))
                .await;
            }
            Some(Outcome::Done(_)) | None => return Ok(()),
        }
    }
}

/// Trains one leased trial and reports it. Errors of the trial itself are reported to the
/// coordinator with `Fail`; only errors talking to the coordinator come back from here.
async fn run_trial(
    ctx: &Arc<Ctx>,
    data: &Arc<dataset::FashionMnist>,
    slot: usize,
    worker_id: &str,
    lease: pb::Lease,
    h: Hyperparams,
) -> Result<()> {
    let (trial_id, attempt) = (lease.trial_id, lease.attempt);
    let (start_epoch, checkpoint) = (lease.start_epoch, lease.checkpoint);
    let key = (trial_id.clone(), attempt);
    let abandon = Arc::new(AtomicBool::new(false));
    ctx.running
        .lock()
        .expect("running map")
        .insert(key.clone(), abandon.clone());
    info!(slot, trial = %trial_id, attempt, label = %h.label(), "trial leased");
    let ta = || {
        Some(pb::TrialAttempt {
            trial_id: trial_id.clone(),
            attempt,
        })
    };

    // Each epoch's metrics and the checkpoint after it.
    let (tx, mut rx) = mpsc::channel::<(EpochMetrics, Vec<u8>)>(2);
    let out_dir = ctx.scratch.join(format!("{trial_id}-{attempt}"));
    let thread = {
        let (data, subset, dev, threads, abandon, out_dir) = (
            data.clone(),
            ctx.subset,
            ctx.device,
            ctx.threads,
            abandon.clone(),
            out_dir.clone(),
        );
        std::thread::Builder::new()
            .name(format!("train-{slot}"))
            .spawn(move || -> Result<()> {
                device::set_threads(threads);
                let mut trial = Trial::new(&h, &data, subset, dev)?;
                if start_epoch > 0 {
                    match trial.restore(&checkpoint) {
                        Ok(epoch) => {
                            info!(trial = %h.trial_id(), epoch, "resumed from the checkpoint")
                        }
                        Err(e) => {
                            // Epochs retrained from scratch are answered `duplicate`: slower,
                            // never wrong.
                            warn!(trial = %h.trial_id(), error = %e, "checkpoint unusable, training from epoch 1");
                            trial = Trial::new(&h, &data, subset, dev)?;
                        }
                    }
                }
                trial.checkpoint_every_epoch = true;
                trial.run(&mut |m: &EpochMetrics, ckpt: Option<&[u8]>| {
                    if abandon.load(Ordering::SeqCst) {
                        return Err(Error::Abandoned(
                            "the coordinator re-leased this trial".into(),
                        ));
                    }
                    tx.blocking_send((*m, ckpt.map(<[u8]>::to_vec).unwrap_or_default()))
                        .map_err(|_| Error::Abandoned("reporting stopped".into()))
                })?;
                drop(tx);
                trial.save_artifacts(
                    &out_dir,
                    serde_json::json!({ "threads": threads, "device": device::device_name(dev) }),
                )
            })
            .map_err(|e| Error::io(&ctx.scratch, e))?
    };

    let mut report_err = None;
    while let Some((m, mut checkpoint)) = rx.recv().await {
        if checkpoint.len() > MAX_CHECKPOINT {
            // Past the coordinator's message limit the whole report would be refused: send
            // the metrics alone (a re-leased trial then retrains from its last checkpoint).
            warn!(trial = %trial_id, bytes = checkpoint.len(), max = MAX_CHECKPOINT,
                "checkpoint too large for the coordinator, epoch reported without it");
            checkpoint = Vec::new();
        }
        let req = pb::ReportEpochRequest {
            worker_id: worker_id.to_owned(),
            trial: ta(),
            metrics: Some((&m).into()),
            checkpoint,
        };
        let mut client = ctx.client.clone();
        let sent = retry(ctx.reconnect_timeout, "report", || {
            let mut c = client.clone();
            let r = req.clone();
            async move { Ok(c.report_epoch(r).await?) }
        })
        .await;
        client = ctx.client.clone();
        let _ = &mut client;
        match sent {
            Ok(_) => {
                info!(trial = %trial_id, epoch = m.epoch, val_acc = m.val_acc, test_acc = m.test_acc, seconds = m.seconds, "epoch finished")
            }
            Err(Error::Rpc(s))
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                warn!(trial = %trial_id, attempt, status = %s.message(), "report rejected, abandoning the trial");
                abandon.store(true, Ordering::SeqCst);
                report_err = Some(Error::Rpc(s));
                break;
            }
            Err(e) => {
                abandon.store(true, Ordering::SeqCst);
                report_err = Some(e);
                break;
            }
        }
    }
    drop(rx);
    let trained = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join task");
    ctx.running.lock().expect("running map").remove(&key);
    let trained =
        trained.unwrap_or_else(|_| Err(Error::Abandoned("training thread panicked".into())));

    if let Some(e) = report_err {
        let _ = std::fs::remove_dir_all(&out_dir);
        return match e {
            Error::Rpc(_) => Ok(()), // the trial is someone else's now
            e => Err(e),
        };
    }
    let client = ctx.client.clone();
    match trained {
        Ok(()) => {
            let uploaded = async {
                for name in [
                    "config.json",
                    "model.safetensors",
                    "predictions.safetensors",
                ] {
                    retry(ctx.reconnect_timeout, "upload", || {
                        let mut c = client.clone();
                        let (t, d) = (trial_id.clone(), out_dir.clone());
                        async move { upload(&mut c, worker_id, &t, attempt, &d, name).await }
                    })
                    .await?;
                }
                retry(ctx.reconnect_timeout, "finish", || {
                    let mut c = client.clone();
                    let r = pb::FinishRequest {
                        worker_id: worker_id.to_owned(),
                        trial: ta(),
                    };
                    async move { Ok(c.finish(r).await?) }
                })
                .await
            }
            .await;
            let _ = std::fs::remove_dir_all(&out_dir);
            uploaded?;
            info!(trial = %trial_id, attempt, "trial finished");
        }
        Err(Error::Abandoned(why)) => warn!(trial = %trial_id, attempt, %why, "trial abandoned"),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out_dir);
            warn!(trial = %trial_id, attempt, error = %e, "trial failed");
            retry(ctx.reconnect_timeout, "fail", || {
                let mut c = client.clone();
                let r = pb::FailRequest {
                    worker_id: worker_id.to_owned(),
                    trial: ta(),
                    reason: e.to_string(),
                    retryable: e.is_retryable(),
                };
                async move { Ok(c.fail(r).await?) }
            })
            .await?;
        }
    }
    Ok(())
}

/// `--noop`: every epoch (after the lease's `start_epoch`) reported at once with made-up
/// metrics, then `Finish`.
async fn run_noop(ctx: &Ctx, worker_id: &str, lease: pb::Lease, h: &Hyperparams) -> Result<()> {
    let mut client = ctx.client.clone();
    let trial = Some(pb::TrialAttempt {
        trial_id: lease.trial_id,
        attempt: lease.attempt,
    });
    for epoch in lease.start_epoch.saturating_add(1)..=h.epochs {
        let acc = 0.5 + 0.4 * f64::from(epoch) / f64::from(h.epochs);
        let m = EpochMetrics {
            epoch,
            train_loss: 1.0 - acc / 2.0,
            train_acc: acc,
            val_loss: 1.0 - acc / 2.0,
            val_acc: acc,
            test_loss: 1.0 - acc / 2.0,
            test_acc: acc,
            seconds: 0.0,
        };
        let req = pb::ReportEpochRequest {
            worker_id: worker_id.to_owned(),
            trial: trial.clone(),
            metrics: Some((&m).into()),
            checkpoint: Vec::new(),
        };
        client.report_epoch(req).await?;
    }
    client
        .finish(pb::FinishRequest {
            worker_id: worker_id.to_owned(),
            trial,
        })
        .await?;
    Ok(())
}

async fn upload(
    client: &mut Client,
    worker_id: &str,
    trial_id: &str,
    attempt: u32,
    dir: &std::path::Path,
    name: &str,
) -> Result<()> {
    let path = dir.join(name);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| Error::io(&path, e))?;
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
    chunks[0].worker_id = worker_id.into();
    chunks[0].trial = Some(pb::TrialAttempt {
        trial_id: trial_id.into(),
        attempt,
    });
    chunks[0].name = name.into();
    client.upload_artifact(tokio_stream::iter(chunks)).await?;
    Ok(())
}
