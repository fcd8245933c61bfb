//! `worker join`: lease trials from a coordinator and train them until the sweep is done.
//!
//! A process trains one trial at a time (`--slots N` is N processes: see [`crate::slots`]).
//! Its slot is a loop on the async runtime: lease, train on a dedicated OS thread (training
//! never blocks the runtime), forward each epoch through a bounded channel to `ReportEpoch`,
//! upload the artifacts, `Finish` (or `Fail`). [`run_trial`] tells that story one step per
//! function. Talking to the coordinator (retries, registering again, what a failed call
//! means) is [`crate::client`]'s; a heartbeat task keeps the held lease alive and raises its
//! lost flag when the coordinator takes it back.
//!
//! Every `ReportEpoch` carries the trial's checkpoint after that epoch; a lease with
//! `start_epoch > 0` comes with the checkpoint to restore, and training continues after it.
//! When the coordinator restarts, it no longer knows this worker's id (NOT_FOUND): the worker
//! registers again and goes on leasing; the trials it was training are abandoned (their
//! reports are rejected) and resume elsewhere from their last checkpoint.

use crate::cli::JoinArgs;
use crate::client::{Answer, Attempt, Coordinator, Leased, Offer};
use crate::connect::Connection;
use crate::data::Subset;
use crate::train::Trial;
use crate::{device, Error, Result};
use proto::pb;
use proto::{Artifact, EpochMetrics, Hyperparams};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tch::Device;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Largest checkpoint sent with a report: the coordinator takes messages up to 64 MiB.
const MAX_CHECKPOINT: usize = 60 << 20;

/// One finished epoch on its way from the training thread: its metrics, the thread count it
/// trained with and the checkpoint after it.
type Epoch = (EpochMetrics, u32, Vec<u8>);

struct Ctx {
    coord: Coordinator,
    /// `None` with `--noop`.
    data: Option<Arc<dataset::FashionMnist>>,
    subset: Subset,
    device: Device,
    threads: usize,
    scratch: PathBuf,
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
        Some(Arc::new(load_data(&args).await?))
    };

    // Plaintext or TLS, with the token interceptor: see connect.rs.
    let conn = Connection::from_args(&args)?;
    let registration = pb::RegisterRequest {
        name,
        device: device::device_name(dev),
        slots: 1,
        threads: threads as u32,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let budget = Duration::from_secs(args.reconnect_timeout);
    let coord = Coordinator::join(&conn, registration, budget).await?;

    let scratch = std::env::temp_dir().join(format!("hypersweep-worker-{}", std::process::id()));
    let ctx = Arc::new(Ctx {
        coord,
        data,
        subset: Subset {
            train: args.data.train_limit,
            test: args.data.test_limit,
        },
        device: dev,
        threads,
        scratch: scratch.clone(),
    });
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone()));
    let result = tokio::spawn(slot_loop(ctx.clone(), slot.unwrap_or(0)))
        .await
        .expect("slot task panicked");
    heartbeat.abort();
    let _ = std::fs::remove_dir_all(&scratch);
    info!("sweep done, leaving");
    result
}

/// Finds, reads and verifies Fashion-MNIST, off the async runtime.
async fn load_data(args: &JoinArgs) -> Result<dataset::FashionMnist> {
    let data_dir = dataset::locate(args.data.data_dir.as_deref())?;
    let data = tokio::task::spawn_blocking(move || dataset::load(&data_dir))
        .await
        .expect("loader thread")?;
    Ok(data)
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

async fn heartbeat_loop(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.coord.heartbeat_interval());
    loop {
        tick.tick().await;
        ctx.coord.heartbeat().await;
    }
}

/// Leases and runs trials until the sweep is done. Only errors talking to the coordinator
/// end it early.
async fn slot_loop(ctx: Arc<Ctx>, slot: usize) -> Result<()> {
    loop {
        match ctx.coord.lease().await? {
            Offer::Trial(leased) => match (leased.hparams.clone(), &ctx.data) {
                (Err(reason), _) => refuse(&ctx.coord, &leased.attempt, &reason).await?,
                (Ok(h), Some(data)) => run_trial(&ctx, data, slot, leased, h).await?,
                (Ok(h), None) => run_noop(&ctx.coord, leased, &h, ctx.threads as u32).await?,
            },
            Offer::Wait(pause) => tokio::time::sleep(pause).await,
            Offer::Done => return Ok(()),
        }
    }
}

/// A lease whose hyperparameters cannot be trained anywhere: `Fail`, not retryable.
async fn refuse(coord: &Coordinator, attempt: &Attempt, reason: &str) -> Result<()> {
    warn!(trial = %attempt.trial_id, attempt = attempt.attempt, %reason, "trial failed");
    if let Answer::LeaseLost(s) = coord.fail(attempt, reason, false).await? {
        lease_lost(attempt, &s);
    }
    Ok(())
}

/// Logs that the coordinator took `attempt` back; the slot leases anew.
fn lease_lost(attempt: &Attempt, status: &tonic::Status) {
    warn!(trial = %attempt.trial_id, attempt = attempt.attempt, status = %status.message(),
        "the coordinator no longer holds this lease for us; leasing anew");
}

/// Trains one leased trial and reports it: held while it trains, each epoch forwarded as it
/// finishes, then the call its ending calls for. Errors of the trial itself are reported to
/// the coordinator with `Fail`; only errors talking to the coordinator come back from here.
async fn run_trial(
    ctx: &Ctx,
    data: &Arc<dataset::FashionMnist>,
    slot: usize,
    leased: Leased,
    h: Hyperparams,
) -> Result<()> {
    let attempt = leased.attempt.clone();
    info!(slot, trial = %attempt.trial_id, attempt = attempt.attempt, label = %h.label(), "trial leased");
    let out_dir = ctx
        .scratch
        .join(format!("{}-{}", attempt.trial_id, attempt.attempt));
    let job = Job {
        h,
        data: data.clone(),
        subset: ctx.subset,
        device: ctx.device,
        threads: ctx.threads,
        start_epoch: leased.start_epoch,
        checkpoint: leased.checkpoint,
        attempt: attempt.clone(),
        out_dir: out_dir.clone(),
    };
    let (forwarded, joined) = {
        // While it trains, heartbeats keep the lease alive (and may take it back).
        let _held = ctx.coord.hold(std::slice::from_ref(&attempt));
        let (epochs, training) = start_training(job, slot)?;
        let forwarded = forward_epochs(&ctx.coord, &attempt, epochs).await;
        (forwarded, join_training(training).await)
    };
    let result = match forwarded {
        Ok(Forwarded::All) => conclude(&ctx.coord, &attempt, ending(joined), &out_dir).await,
        // A report was refused: the trial is someone else's now (or will be once its lease
        // lapses), nothing more to say about it.
        Ok(Forwarded::Stopped) => Ok(()),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

/// What the training thread needs, owned.
struct Job {
    h: Hyperparams,
    data: Arc<dataset::FashionMnist>,
    subset: Subset,
    device: Device,
    threads: usize,
    /// Epochs already recorded; `checkpoint` holds the state after them.
    start_epoch: u32,
    checkpoint: Vec<u8>,
    /// Its lost flag stops training at the next epoch.
    attempt: Attempt,
    /// Where the artifacts go once every epoch is trained.
    out_dir: PathBuf,
}

/// Starts training `job` on an OS thread of its own: each finished epoch comes out of the
/// returned channel (bounded: training waits while reports lag behind).
fn start_training(
    job: Job,
    slot: usize,
) -> Result<(mpsc::Receiver<Epoch>, JoinHandle<Result<()>>)> {
    let (tx, rx) = mpsc::channel::<Epoch>(2);
    let out_dir = job.out_dir.clone();
    let thread = std::thread::Builder::new()
        .name(format!("train-{slot}"))
        .spawn(move || train(job, tx))
        .map_err(|e| Error::io(&out_dir, e))?;
    Ok((rx, thread))
}

/// The training thread: resume or start, train every remaining epoch into `epochs`, write the
/// artifacts. Stops with [`Error::Abandoned`] when the lease is lost or nobody listens.
fn train(job: Job, epochs: mpsc::Sender<Epoch>) -> Result<()> {
    device::set_threads(job.threads);
    let mut trial = start_or_resume(&job)?;
    trial.checkpoint_every_epoch = true;
    trial.run(&mut |e: &crate::train::Epoch<'_>| {
        if job.attempt.is_lost() {
            return Err(Error::Abandoned(
                "the coordinator re-leased this trial".into(),
            ));
        }
        let checkpoint = e.checkpoint.map(<[u8]>::to_vec).unwrap_or_default();
        epochs
            .blocking_send((e.metrics, e.threads, checkpoint))
            .map_err(|_| Error::Abandoned("reporting stopped".into()))
    })?;
    drop(epochs);
    trial.save_artifacts(
        &job.out_dir,
        serde_json::json!({ "threads": job.threads, "device": device::device_name(job.device) }),
    )
}

/// The trial, restored from the lease's checkpoint when it has one. An unusable checkpoint
/// is dropped: epochs retrained from scratch are answered `duplicate`, slower, never wrong.
fn start_or_resume(job: &Job) -> Result<Trial> {
    let new = || Trial::new(&job.h, &job.data, job.subset, job.device);
    let mut trial = new()?;
    if job.start_epoch > 0 {
        match trial.restore(&job.checkpoint) {
            Ok(epoch) => info!(trial = %job.h.trial_id(), epoch, "resumed from the checkpoint"),
            Err(e) => {
                warn!(trial = %job.h.trial_id(), error = %e, "checkpoint unusable, training from epoch 1");
                trial = new()?;
            }
        }
    }
    Ok(trial)
}

/// Whether every epoch training produced was reported.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    All,
    /// The coordinator refused a report: training is told to stop, the trial is abandoned.
    Stopped,
}

/// Reports each epoch as training hands it over, until training ends or a report is
/// refused. Dropping `epochs` on return stops training at its next epoch.
async fn forward_epochs(
    coord: &Coordinator,
    attempt: &Attempt,
    mut epochs: mpsc::Receiver<Epoch>,
) -> Result<Forwarded> {
    while let Some((m, threads, mut checkpoint)) = epochs.recv().await {
        if checkpoint.len() > MAX_CHECKPOINT {
            // Past the coordinator's message limit the whole report would be refused: send
            // the metrics alone (a re-leased trial then retrains from its last checkpoint).
            warn!(trial = %attempt.trial_id, bytes = checkpoint.len(), max = MAX_CHECKPOINT,
                "checkpoint too large for the coordinator, epoch reported without it");
            checkpoint = Vec::new();
        }
        let refused = match coord.report(attempt, &m, threads, checkpoint).await {
            Ok(Answer::Ok) => {
                info!(trial = %attempt.trial_id, epoch = m.epoch, val_acc = m.val_acc, test_acc = m.test_acc, seconds = m.seconds, threads, "epoch finished");
                continue;
            }
            Ok(Answer::LeaseLost(s)) => s,
            // Any other refusal of an epoch ends this attempt too: its lease lapses and the
            // trial resumes elsewhere from its last checkpoint.
            Err(Error::Rpc(s)) => s,
            Err(e) => return Err(e),
        };
        warn!(trial = %attempt.trial_id, attempt = attempt.attempt, status = %refused.message(), "report rejected, abandoning the trial");
        return Ok(Forwarded::Stopped);
    }
    Ok(Forwarded::All)
}

/// Waits, off the runtime, for the training thread to end; `Err` holds its panic.
async fn join_training(thread: JoinHandle<Result<()>>) -> std::thread::Result<Result<()>> {
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join task")
}

/// The call that ends a trial, decided from how its training thread ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Every epoch trained and the artifacts written: upload them, then `Finish`.
    Finish,
    /// `Fail`, saying whether another attempt could succeed.
    Fail { reason: String, retryable: bool },
    /// Training stopped because the lease was lost: the trial is someone else's, nothing to
    /// send.
    Abandoned(String),
}

/// How the training thread ended, as the call to make. A panic is a failure like any other,
/// reported at once (retryable: it may be this machine's), so that the trial does not wait
/// out its lease.
fn ending(joined: std::thread::Result<Result<()>>) -> Ending {
    let failed = |e: Error| Ending::Fail {
        reason: e.to_string(),
        retryable: e.is_retryable(),
    };
    match joined {
        Ok(Ok(())) => Ending::Finish,
        Ok(Err(Error::Abandoned(why))) => Ending::Abandoned(why),
        Ok(Err(e)) => failed(e),
        Err(panic) => failed(Error::Panicked(panic_message(panic.as_ref()))),
    }
}

/// A panic's message: the `&str` or `String` it was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Makes the call `ending` calls for about `attempt`, whose artifacts are in `dir`.
async fn conclude(
    coord: &Coordinator,
    attempt: &Attempt,
    ending: Ending,
    dir: &Path,
) -> Result<()> {
    let (trial, n) = (&attempt.trial_id, attempt.attempt);
    let answer = match ending {
        Ending::Finish => {
            let answer = upload_and_finish(coord, attempt, dir).await?;
            if let Answer::Ok = answer {
                info!(trial = %trial, attempt = n, "trial finished");
            }
            answer
        }
        Ending::Abandoned(why) => {
            warn!(trial = %trial, attempt = n, %why, "trial abandoned");
            return Ok(());
        }
        Ending::Fail { reason, retryable } => {
            warn!(trial = %trial, attempt = n, error = %reason, "trial failed");
            coord.fail(attempt, &reason, retryable).await?
        }
    };
    if let Answer::LeaseLost(s) = answer {
        lease_lost(attempt, &s);
    }
    Ok(())
}

/// Uploads the artifacts in `dir`, then `Finish`.
async fn upload_and_finish(coord: &Coordinator, attempt: &Attempt, dir: &Path) -> Result<Answer> {
    for artifact in Artifact::ALL {
        let name = artifact.file_name();
        let path = dir.join(name);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        if let lost @ Answer::LeaseLost(_) = coord.upload(attempt, name, &bytes).await? {
            return Ok(lost);
        }
    }
    coord.finish(attempt).await
}

/// `--noop`: every epoch (after the lease's `start_epoch`) reported at once with made-up
/// metrics (and the worker's thread count), then `Finish`.
async fn run_noop(
    coord: &Coordinator,
    leased: Leased,
    h: &Hyperparams,
    threads: u32,
) -> Result<()> {
    let attempt = leased.attempt;
    let _held = coord.hold(std::slice::from_ref(&attempt));
    for epoch in leased.start_epoch.saturating_add(1)..=h.epochs {
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
        if let Answer::LeaseLost(s) = coord.report(&attempt, &m, threads, Vec::new()).await? {
            lease_lost(&attempt, &s);
            return Ok(());
        }
    }
    if let Answer::LeaseLost(s) = coord.finish(&attempt).await? {
        lease_lost(&attempt, &s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of a real thread that ran `body`, as `join` hands it over.
    fn joined(
        body: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> std::thread::Result<Result<()>> {
        std::thread::spawn(body).join()
    }

    #[test]
    fn a_panicking_training_thread_fails_its_trial_at_once() {
        let e = ending(joined(|| {
            panic!("index 7 is out of bounds for dimension 0")
        }));
        assert_eq!(
            e,
            Ending::Fail {
                reason: "training panicked: index 7 is out of bounds for dimension 0".into(),
                retryable: true,
            }
        );
        // A formatted panic carries a `String`.
        let layer = 3;
        let e = ending(joined(move || panic!("layer {layer} got a wrong shape")));
        assert!(
            matches!(&e, Ending::Fail { reason, retryable: true } if reason.ends_with("layer 3 got a wrong shape")),
            "{e:?}"
        );
        let e = ending(joined(|| std::panic::panic_any(42)));
        assert!(
            matches!(&e, Ending::Fail { reason, retryable: true } if reason.contains("without a message")),
            "{e:?}"
        );
    }

    #[test]
    fn a_trained_trial_finishes_a_lost_one_is_left_and_a_failed_one_says_so() {
        assert_eq!(ending(joined(|| Ok(()))), Ending::Finish);
        assert_eq!(
            ending(joined(|| Err(Error::Abandoned("reporting stopped".into())))),
            Ending::Abandoned("reporting stopped".into())
        );
        assert_eq!(
            ending(joined(|| Err(Error::Diverged {
                epoch: 2,
                loss: f64::NAN
            }))),
            Ending::Fail {
                reason: "training diverged: loss is NaN at epoch 2".into(),
                retryable: false,
            }
        );
        let io = || {
            Err(Error::io(
                Path::new("/x"),
                std::io::Error::other("disk full"),
            ))
        };
        assert!(matches!(
            ending(joined(io)),
            Ending::Fail {
                retryable: true,
                ..
            }
        ));
    }
}
