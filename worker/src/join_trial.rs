//! One leased trial, trained alone (the fused groups are [`crate::join_group`]'s): its
//! training on a dedicated OS thread behind a bounded channel, each finished epoch forwarded
//! to `ReportEpoch` (with a wait for the verdict at rung epochs), the thread's ending read
//! (a panic is a failure at once), then the artifacts and `Finish` or `Fail`. The lease loop
//! that hands trials here is [`crate::join`].

use crate::between_epochs::{answer_to, plan_wait, switch_threads, Verdict};
use crate::client::{Answer, Attempt, Coordinator, Leased};
use crate::data::Subset;
use crate::device;
use crate::join::{lease_lost, Ctx};
use crate::train::Trial;
use crate::{Error, Result};
use proto::{Artifact, EpochMetrics, Hyperparams};
use results_format::Goal;
use search::stop::divergence::{self, DivergenceConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Device;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Largest checkpoint sent with a report: the coordinator takes messages up to 64 MiB.
pub(crate) const MAX_CHECKPOINT: usize = 60 << 20;

/// One finished epoch on its way from the training thread to the coordinator.
pub(crate) struct Trained {
    pub(crate) metrics: EpochMetrics,
    /// The thread count it trained with.
    pub(crate) threads: u32,
    /// The checkpoint after it (empty: none).
    pub(crate) checkpoint: Vec<u8>,
    /// Training samples it went through (for the throughput heartbeats report).
    pub(crate) samples: u64,
    /// This process's GPU memory at its end.
    pub(crate) gpu_memory: Option<u64>,
}

/// Trains one leased trial and reports it: held while it trains, each epoch forwarded as it
/// finishes, then the call its ending calls for. Errors of the trial itself are reported to
/// the coordinator with `Fail`; only errors talking to the coordinator come back from here.
pub(crate) async fn run_trial(
    ctx: &Ctx,
    slot: usize,
    leased: Leased,
    h: Hyperparams,
) -> Result<()> {
    let attempt = leased.attempt.clone();
    info!(slot, trial = %attempt.trial_id, attempt = attempt.attempt, label = %h.label(), "trial leased");
    let out_dir = ctx
        .scratch
        .join(format!("{}-{}", attempt.trial_id, attempt.attempt));
    let divergence = leased.divergence;
    let (verdict_tx, verdicts) = std::sync::mpsc::channel();
    let (forwarded, joined) = {
        // While the data loads (the first time) and the trial trains, heartbeats keep the
        // lease alive (and may take it back).
        let _held = ctx.coord.hold(std::slice::from_ref(&attempt));
        // A trial starts on the registered count: cores lent to the last trial are not this
        // one's until the plan says so again.
        ctx.coord.planned_threads().clear();
        let data = ctx.data_for(std::slice::from_ref(&attempt)).await?;
        let job = Job {
            h,
            data,
            subset: ctx.subset,
            device: ctx.device,
            threads: ctx.threads,
            planned: ctx.coord.planned_threads().clone(),
            start_epoch: leased.start_epoch,
            checkpoint: leased.checkpoint,
            attempt: attempt.clone(),
            out_dir: out_dir.clone(),
            goal: leased.goal,
            rungs: leased.rung_epochs.clone(),
            divergence,
            verdicts,
        };
        let (epochs, training) = start_training(job, slot)?;
        let forwarded = forward_epochs(&ctx.coord, &attempt, epochs, verdict_tx).await;
        (forwarded, join_training(training).await)
    };
    let result = match forwarded {
        Ok(Forwarded::All) => {
            let ending = ending(joined, divergence.is_some());
            conclude(&ctx.coord, &attempt, ending, &out_dir).await
        }
        // A report was refused: the trial is someone else's now (or will be once its lease
        // lapses), nothing more to say about it.
        Ok(Forwarded::Refused) => Ok(()),
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
    /// Threads every trial starts with ...
    threads: usize,
    /// ... and what the coordinator's plan asks for, applied between epochs (issue 13).
    planned: device::PlannedThreads,
    /// Epochs already recorded; `checkpoint` holds the state after them.
    start_epoch: u32,
    checkpoint: Vec<u8>,
    /// Its lost flag stops training at the next epoch.
    attempt: Attempt,
    /// Where the artifacts go once training ends.
    out_dir: PathBuf,
    /// What the best epoch is chosen on: the artifacts are that epoch's.
    goal: Goal,
    /// After these epochs training waits for the verdict on the report.
    rungs: Vec<u32>,
    /// The divergence rule's factor, if the experiment has the rule.
    divergence: Option<f64>,
    /// The answers to the reports, from the task that reports.
    verdicts: std::sync::mpsc::Receiver<Verdict>,
}

/// Starts training `job` on an OS thread of its own: each finished epoch comes out of the
/// returned channel (bounded: training waits while reports lag behind).
fn start_training(
    job: Job,
    slot: usize,
) -> Result<(mpsc::Receiver<Trained>, JoinHandle<Result<()>>)> {
    let (tx, rx) = mpsc::channel::<Trained>(2);
    let out_dir = job.out_dir.clone();
    let thread = std::thread::Builder::new()
        .name(format!("train-{slot}"))
        .spawn(move || train(job, tx))
        .map_err(|e| Error::io(&out_dir, e))?;
    Ok((rx, thread))
}

/// The training thread: resume or start, train every remaining epoch into `epochs` (waiting
/// for the verdict at rungs), write the artifacts (the best epoch's) once training ends, by
/// itself or stopped by a rule. Stops with [`Error::Abandoned`] when the lease is lost or
/// nobody listens.
fn train(job: Job, epochs: mpsc::Sender<Trained>) -> Result<()> {
    device::set_threads(job.threads);
    let mut trial = start_or_resume(&job)?;
    trial.checkpoint_every_epoch = true;
    let samples = u64::try_from(trial.splits.train.len()).unwrap_or(0);
    let mut first_train_loss = trial.history.first().map(|m| m.train_loss);
    let mut switch = device::ThreadSwitch::new(job.planned.clone(), job.threads);
    let trained = trial.run(&mut |e: &crate::train::Epoch<'_>| {
        if job.attempt.is_lost() {
            return Err(Error::Abandoned(
                "the coordinator re-leased this trial".into(),
            ));
        }
        let m = &e.metrics;
        let trained = Trained {
            metrics: e.metrics,
            threads: e.threads,
            checkpoint: e.checkpoint.map(<[u8]>::to_vec).unwrap_or_default(),
            samples,
            gpu_memory: crate::gpu::process_memory(job.device),
        };
        epochs
            .blocking_send(trained)
            .map_err(|_| Error::Abandoned("reporting stopped".into()))?;
        if let Some(why) = exploded(job.divergence, &mut first_train_loss, m) {
            return Err(Error::Stopped(why));
        }
        // A rung's verdict is awaited; elsewhere the answer only briefly, for its plan.
        let limit = (!job.rungs.contains(&m.epoch)).then(|| plan_wait(m.seconds));
        let answer = answer_to(&job.verdicts, m.epoch, limit)?;
        if let Some(why) = answer.and_then(|v| v.stop) {
            return Err(Error::Stopped(why));
        }
        let trial_id = job.h.trial_id().to_string();
        switch_threads(&mut switch, &trial_id, m.epoch + 1, e.threads, m.seconds);
        Ok(())
    });
    drop(epochs);
    match trained {
        Ok(()) | Err(Error::Stopped(_)) => {}
        Err(Error::Diverged { .. }) if job.divergence.is_some() => {}
        Err(e) => return Err(e),
    }
    trial.save_artifacts(
        &job.out_dir,
        serde_json::json!({ "threads": job.threads, "device": device::device_name(job.device) }),
    )?;
    trained
}

/// Under the divergence rule, why epoch `m` ends the trial when its training loss rose above
/// the factor times the first epoch's (`first` is set at the first epoch); the coordinator
/// gets the same verdict from the same numbers (`search::stop::divergence`).
pub(crate) fn exploded(
    factor: Option<f64>,
    first: &mut Option<f64>,
    m: &EpochMetrics,
) -> Option<String> {
    let config = DivergenceConfig { factor: factor? };
    let baseline = *first;
    first.get_or_insert(m.train_loss);
    let val_loss = (!m.val_loss.is_nan()).then_some(m.val_loss);
    divergence::check(config, baseline, m.train_loss, val_loss)
        .map(|d| format!("diverged at epoch {}: {d:?}", m.epoch))
}

/// The trial, restored from the lease's checkpoint when it has one. An unusable checkpoint
/// is dropped: epochs retrained from scratch are answered `duplicate`, slower, never wrong.
fn start_or_resume(job: &Job) -> Result<Trial> {
    let new = || {
        let mut t = Trial::new(&job.h, &job.data, job.subset, job.device)?;
        t.set_goal(job.goal);
        Ok::<_, Error>(t)
    };
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
    Refused,
}

/// Reports each epoch as training hands it over, until training ends or a report is
/// refused; every answer goes back to training through `verdicts` (training waits for a rung
/// epoch's, and briefly for the others', whose thread plan then applies at once).
/// Dropping `epochs` on return stops training at its next epoch.
async fn forward_epochs(
    coord: &Coordinator,
    attempt: &Attempt,
    mut epochs: mpsc::Receiver<Trained>,
    verdicts: std::sync::mpsc::Sender<Verdict>,
) -> Result<Forwarded> {
    while let Some(Trained {
        metrics: m,
        threads,
        mut checkpoint,
        samples,
        gpu_memory,
    }) = epochs.recv().await
    {
        coord.epoch_trained(samples, m.seconds, gpu_memory);
        if checkpoint.len() > MAX_CHECKPOINT {
            // Past the coordinator's message limit the whole report would be refused: send
            // the metrics alone (a re-leased trial then retrains from its last checkpoint).
            warn!(trial = %attempt.trial_id, bytes = checkpoint.len(), max = MAX_CHECKPOINT,
                "checkpoint too large for the coordinator, epoch reported without it");
            checkpoint = Vec::new();
        }
        let refused = match coord
            .report(attempt, &m, threads, checkpoint, gpu_memory)
            .await
        {
            Ok(Answer::Ok) => {
                info!(trial = %attempt.trial_id, epoch = m.epoch, val_acc = m.val_acc, test_acc = m.test_acc, seconds = m.seconds, threads, gpu_memory, "epoch finished");
                let _ = verdicts.send(Verdict {
                    epoch: m.epoch,
                    stop: None,
                });
                continue;
            }
            Ok(Answer::Stop(why)) => {
                info!(trial = %attempt.trial_id, epoch = m.epoch, reason = %why, "trial stopped by a rule");
                // Training waits at a rung for this; elsewhere (divergence) it stopped itself.
                let _ = verdicts.send(Verdict {
                    epoch: m.epoch,
                    stop: Some(why),
                });
                continue;
            }
            Ok(Answer::LeaseLost(s)) => s,
            // Any other refusal of an epoch ends this attempt too: its lease lapses and the
            // trial resumes elsewhere from its last checkpoint.
            Err(Error::Rpc(s)) => s,
            Err(e) => return Err(e),
        };
        warn!(trial = %attempt.trial_id, attempt = attempt.attempt, status = %refused.message(), "report rejected, abandoning the trial");
        return Ok(Forwarded::Refused);
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
#[derive(Debug, PartialEq)]
pub(crate) enum Ending {
    /// Every epoch trained and the artifacts written: upload them, then `Finish`.
    Finish,
    /// A rule stopped the trial and the artifacts are written: upload them, then `Finish`.
    Stopped(String),
    /// Under the divergence rule, a loss came out non-finite (the artifacts of the epochs
    /// before it are written): report it, upload them, then `Finish`.
    Diverged {
        epoch: u32,
        loss: &'static str,
        value: f64,
    },
    /// `Fail`, saying whether another attempt could succeed.
    Fail { reason: String, retryable: bool },
    /// Training stopped because the lease was lost: the trial is someone else's, nothing to
    /// send.
    Abandoned(String),
}

/// How the training thread ended, as the call to make (`divergence_rule`: the experiment has
/// the divergence rule, which makes a non-finite loss a stop rather than a failure). A panic
/// is a failure like any other, reported at once (retryable: it may be this machine's), so
/// that the trial does not wait out its lease.
pub(crate) fn ending(joined: std::thread::Result<Result<()>>, divergence_rule: bool) -> Ending {
    let failed = |e: Error| Ending::Fail {
        reason: e.to_string(),
        retryable: e.is_retryable(),
    };
    match joined {
        Ok(Ok(())) => Ending::Finish,
        Ok(Err(Error::Stopped(why))) => Ending::Stopped(why),
        Ok(Err(Error::Diverged { epoch, which, loss })) if divergence_rule => Ending::Diverged {
            epoch,
            loss: which,
            value: loss,
        },
        Ok(Err(Error::Abandoned(why))) => Ending::Abandoned(why),
        Ok(Err(e)) => failed(e),
        Err(panic) => failed(Error::Panicked(panic_message(panic.as_ref()))),
    }
}

/// A panic's message: the `&str` or `String` it was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Makes the call `ending` calls for about `attempt`, whose artifacts are in `dir`.
pub(crate) async fn conclude(
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
        Ending::Stopped(why) => {
            let answer = upload_and_finish(coord, attempt, dir).await?;
            if let Answer::Ok = answer {
                info!(trial = %trial, attempt = n, reason = %why, "stopped trial ended with its artifacts");
            }
            answer
        }
        Ending::Diverged { epoch, loss, value } => {
            warn!(trial = %trial, attempt = n, epoch, loss, value, "training diverged, stopping the trial");
            match coord.diverged(attempt, epoch, loss, value).await? {
                Answer::Stop(_) | Answer::Ok => upload_and_finish(coord, attempt, dir).await?,
                lost @ Answer::LeaseLost(_) => lost,
            }
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

/// Uploads the artifacts in `dir`, then `Finish`. `config.json` is always there; the model
/// and predictions are not when no epoch was ever best (a trial that diverged in its first).
async fn upload_and_finish(coord: &Coordinator, attempt: &Attempt, dir: &Path) -> Result<Answer> {
    for artifact in Artifact::ALL {
        let name = artifact.file_name();
        let path = dir.join(name);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && artifact != Artifact::Config => {
                continue
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        if let lost @ Answer::LeaseLost(_) = coord.upload(attempt, name, &bytes).await? {
            return Ok(lost);
        }
    }
    coord.finish(attempt).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_stops_itself_when_the_training_loss_rises_past_the_factor() {
        let m = |epoch, train_loss| EpochMetrics {
            epoch,
            train_loss,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.5,
            test_loss: 1.0,
            test_acc: 0.5,
            seconds: 0.0,
        };
        let mut first = None;
        assert_eq!(exploded(Some(3.0), &mut first, &m(1, 2.0)), None);
        assert_eq!(first, Some(2.0));
        assert_eq!(
            exploded(Some(3.0), &mut first, &m(2, 6.0)),
            None,
            "3 × 2.0 is not above"
        );
        let why = exploded(Some(3.0), &mut first, &m(3, 6.5)).unwrap();
        assert!(why.contains("epoch 3"), "{why}");
        // Without the rule, nothing stops.
        assert_eq!(exploded(None, &mut None, &m(3, 1e9)), None);
    }

    /// The outcome of a real thread that ran `body`, as `join` hands it over.
    fn joined(
        body: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> std::thread::Result<Result<()>> {
        std::thread::spawn(body).join()
    }

    #[test]
    fn a_panicking_training_thread_fails_its_trial_at_once() {
        let e = ending(
            joined(|| panic!("index 7 is out of bounds for dimension 0")),
            false,
        );
        assert_eq!(
            e,
            Ending::Fail {
                reason: "training panicked: index 7 is out of bounds for dimension 0".into(),
                retryable: true,
            }
        );
        // A formatted panic carries a `String`.
        let layer = 3;
        let e = ending(
            joined(move || panic!("layer {layer} got a wrong shape")),
            false,
        );
        assert!(
            matches!(&e, Ending::Fail { reason, retryable: true } if reason.ends_with("layer 3 got a wrong shape")),
            "{e:?}"
        );
        let e = ending(joined(|| std::panic::panic_any(42)), false);
        assert!(
            matches!(&e, Ending::Fail { reason, retryable: true } if reason.contains("without a message")),
            "{e:?}"
        );
    }

    #[test]
    fn a_trained_trial_finishes_a_lost_one_is_left_and_a_failed_one_says_so() {
        assert_eq!(ending(joined(|| Ok(())), false), Ending::Finish);
        assert_eq!(
            ending(
                joined(|| Err(Error::Abandoned("reporting stopped".into()))),
                false
            ),
            Ending::Abandoned("reporting stopped".into())
        );
        let diverged = || {
            Err(Error::Diverged {
                epoch: 2,
                which: "train_loss",
                loss: f64::INFINITY,
            })
        };
        assert_eq!(
            ending(joined(diverged), false),
            Ending::Fail {
                reason: "training diverged: train_loss is inf at epoch 2".into(),
                retryable: false,
            }
        );
        // Under the divergence rule it is a stop, reported as such.
        assert_eq!(
            ending(joined(diverged), true),
            Ending::Diverged {
                epoch: 2,
                loss: "train_loss",
                value: f64::INFINITY
            }
        );
        assert_eq!(
            ending(joined(|| Err(Error::Stopped("asha".into()))), false),
            Ending::Stopped("asha".into())
        );
        let io = || {
            Err(Error::io(
                Path::new("/x"),
                std::io::Error::other("disk full"),
            ))
        };
        assert!(matches!(
            ending(joined(io), false),
            Ending::Fail {
                retryable: true,
                ..
            }
        ));
    }
}
