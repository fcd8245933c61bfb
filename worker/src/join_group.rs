//! `worker join`'s fused groups (issue 13): a lease with members is K same-shape trials that
//! train as one [`Group`] on one OS thread, each member still its own trial to the
//! coordinator.
//!
//! The story is [`crate::join_trial::run_trial`]'s, once per member: every member's attempt
//! is held (heartbeats carry them all), each finished epoch of each member is reported with its own
//! checkpoint, at a rung epoch training waits for that member's verdict, and at the end each
//! member uploads its artifacts ([`Group::member_trial`]) and `Finish`es or `Fail`s. Between
//! two epochs the group follows the coordinator's thread plan as a solo trial does
//! ([`crate::between_epochs`]): it waits briefly for the answer to the epoch's last report,
//! then trains the next epoch, every member at once, on the count the plan asks for. What
//! happens to one member happens to it alone: a stop rule's verdict, a refused report or a
//! lost lease drops it from the group (the others go on), a non-finite loss ends it. Only an
//! error of the whole group (libtorch's) fails every member.
//!
//! A group resumes when every member's lease comes with a checkpoint of one epoch; otherwise
//! (members at different epochs, an unusable checkpoint) the whole group trains from epoch 1
//! and the epochs already recorded are answered `duplicate`.

use crate::between_epochs::{answer_to, plan_wait, switch_threads, Verdict};
use crate::client::{Answer, Attempt, Coordinator, Leased};
use crate::data::Subset;
use crate::device::{self, PlannedThreads, ThreadSwitch};
use crate::fused::{Group, GroupSink};
use crate::join::{refuse, Ctx};
use crate::join_trial::{
    conclude, ending, exploded, panic_message, Ending, Trained, MAX_CHECKPOINT,
};
use crate::{Error, Result};
use proto::{EpochMetrics, Hyperparams};
use results_format::Goal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tch::Device;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// One member as the training thread sees it.
struct MemberJob {
    h: Hyperparams,
    attempt: Attempt,
    start_epoch: u32,
    checkpoint: Vec<u8>,
    goal: Goal,
    rungs: Vec<u32>,
    divergence: Option<f64>,
    out_dir: PathBuf,
    /// Raised when a report of this member was refused: training drops it.
    refused: Arc<AtomicBool>,
    /// The answers to this member's reports; closed once a report was refused (the member is
    /// someone else's now) or reporting failed.
    verdicts: std_mpsc::Receiver<Verdict>,
}

/// What the reporting side keeps of each member.
struct MemberLink {
    attempt: Attempt,
    out_dir: PathBuf,
    divergence: bool,
    refused: Arc<AtomicBool>,
    /// `None` once the member is dropped: a rung wait then ends at once.
    verdicts: Option<std_mpsc::Sender<Verdict>>,
}

/// Trains a leased group and reports each member. Members whose hyperparameters cannot be
/// trained are refused; the others train as one group (or, when one is left, alone). Only
/// errors talking to the coordinator come back from here.
pub(crate) async fn run_group(ctx: &Ctx, slot: usize, leased: Leased) -> Result<()> {
    let mut head = leased;
    let mut all = std::mem::take(&mut head.members);
    all.insert(0, head);
    let mut members = Vec::with_capacity(all.len());
    for m in all {
        match m.hparams.clone() {
            Err(reason) => refuse(&ctx.coord, &m.attempt, &reason).await?,
            Ok(h) => members.push((m, h)),
        }
    }
    if ctx.noop || members.len() < 2 {
        for (m, h) in members {
            if ctx.noop {
                crate::synthetic::run_noop(&ctx.coord, m, &h, ctx.threads as u32).await?;
            } else {
                crate::join_trial::run_trial(ctx, slot, m, h).await?;
            }
        }
        return Ok(());
    }
    let trials: Vec<String> = members
        .iter()
        .map(|(m, _)| m.attempt.trial_id.clone())
        .collect();
    info!(slot, members = members.len(), trials = ?trials, start_epoch = members[0].0.start_epoch,
        "fused group of {} leased", members.len());
    let attempts: Vec<Attempt> = members.iter().map(|(m, _)| m.attempt.clone()).collect();
    let _held = ctx.coord.hold(&attempts);
    ctx.coord.planned_threads().clear();
    let data = ctx.data_for(&attempts).await?;
    let (jobs, mut links) = split(ctx, members);
    let job = GroupJob {
        data,
        subset: ctx.subset,
        device: ctx.device,
        threads: ctx.threads,
        planned: ctx.coord.planned_threads().clone(),
        members: jobs,
    };
    let (epochs, training) = start(job, slot)?;
    let forwarded = forward(&ctx.coord, epochs, &mut links).await;
    if forwarded.is_err() {
        // Talking to the coordinator failed: training stops at its next report or rung.
        for l in &mut links {
            l.refused.store(true, Ordering::SeqCst);
            l.verdicts = None;
        }
    }
    let joined = tokio::task::spawn_blocking(move || training.join())
        .await
        .expect("join task");
    let result = match forwarded {
        Ok(()) => conclude_all(&ctx.coord, joined, &links).await,
        Err(e) => Err(e),
    };
    for l in &links {
        let _ = std::fs::remove_dir_all(&l.out_dir);
    }
    result
}

/// Each member's half for the training thread and half for the reporting task.
fn split(ctx: &Ctx, members: Vec<(Leased, Hyperparams)>) -> (Vec<MemberJob>, Vec<MemberLink>) {
    let mut jobs = Vec::with_capacity(members.len());
    let mut links = Vec::with_capacity(members.len());
    for (m, h) in members {
        let out_dir = ctx
            .scratch
            .join(format!("{}-{}", m.attempt.trial_id, m.attempt.attempt));
        let refused = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std_mpsc::channel();
        links.push(MemberLink {
            attempt: m.attempt.clone(),
            out_dir: out_dir.clone(),
            divergence: m.divergence.is_some(),
            refused: refused.clone(),
            verdicts: Some(tx),
        });
        jobs.push(MemberJob {
            h,
            attempt: m.attempt,
            start_epoch: m.start_epoch,
            checkpoint: m.checkpoint,
            goal: m.goal,
            rungs: m.rung_epochs,
            divergence: m.divergence,
            out_dir,
            refused,
            verdicts: rx,
        });
    }
    (jobs, links)
}

/// What the training thread needs, owned.
struct GroupJob {
    data: Arc<dataset::FashionMnist>,
    subset: Subset,
    device: Device,
    /// Threads the group starts with ...
    threads: usize,
    /// ... and what the coordinator's plan asks for, applied between epochs.
    planned: PlannedThreads,
    members: Vec<MemberJob>,
}

/// Each member's outcome once training ended: `Ok` when it trained out (or a rule stopped
/// it) and its artifacts are written.
type Outcomes = Vec<Result<()>>;

/// The training thread of a group and where its members' epochs come out.
type Training = (
    mpsc::Receiver<(usize, Trained)>,
    std::thread::JoinHandle<Result<Outcomes>>,
);

/// Starts training `job` on an OS thread of its own: each member's finished epochs come out
/// of the returned channel (bounded: training waits while reports lag behind).
fn start(job: GroupJob, slot: usize) -> Result<Training> {
    let (tx, rx) = mpsc::channel(2);
    let thread = std::thread::Builder::new()
        .name(format!("train-group-{slot}"))
        .spawn(move || train(job, tx))
        .map_err(|e| Error::io(std::path::Path::new("train-group"), e))?;
    Ok((rx, thread))
}

/// The training thread: build (or resume) the group, train it, hand each member's epochs to
/// `epochs`, write the artifacts of every member that ended well.
fn train(job: GroupJob, epochs: mpsc::Sender<(usize, Trained)>) -> Result<Outcomes> {
    device::set_threads(job.threads);
    let mut group = build(&job)?;
    group.checkpoint_every_epoch = true;
    let mut sink = Sink {
        job: &job,
        epochs,
        samples: u64::try_from(group.splits.train.len()).unwrap_or(0),
        first_loss: group
            .members
            .iter()
            .map(|m| m.history.first().map(|e| e.train_loss))
            .collect(),
        unanswered: None,
        switch: ThreadSwitch::new(job.planned.clone(), job.threads),
        trials: group
            .members
            .iter()
            .map(|m| m.trial_id.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    let outcomes = group.run(&mut sink)?;
    drop(sink);
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| artifacts(&group, &job, i, outcome))
        .collect())
}

/// The training thread's side of the reports: each member's epochs go to the reporting task,
/// a rung waits for that member's verdict, and between two epochs the group waits briefly for
/// the epoch's answers, then switches threads as planned (as a solo trial does).
struct Sink<'a> {
    job: &'a GroupJob,
    epochs: mpsc::Sender<(usize, Trained)>,
    /// Training samples per epoch (for the throughput heartbeats report).
    samples: u64,
    /// Each member's first training loss (the divergence rule's baseline).
    first_loss: Vec<Option<f64>>,
    /// The member whose report was handed over last and whose answer was not awaited yet.
    unanswered: Option<usize>,
    switch: ThreadSwitch,
    /// The members' trial ids, for the logs.
    trials: String,
}

impl GroupSink for Sink<'_> {
    fn epoch(&mut self, i: usize, e: &crate::train::Epoch<'_>) -> Result<()> {
        let m = &self.job.members[i];
        if m.attempt.is_lost() || m.refused.load(Ordering::SeqCst) {
            return Err(Error::Abandoned(
                "the coordinator re-leased this trial".into(),
            ));
        }
        let trained = Trained {
            metrics: e.metrics,
            threads: e.threads,
            checkpoint: e.checkpoint.map(<[u8]>::to_vec).unwrap_or_default(),
            samples: self.samples,
            gpu_memory: crate::gpu::process_memory(self.job.device),
        };
        self.epochs
            .blocking_send((i, trained))
            .map_err(|_| Error::Abandoned("reporting stopped".into()))?;
        self.unanswered = Some(i);
        if let Some(why) = exploded(m.divergence, &mut self.first_loss[i], &e.metrics) {
            return Err(Error::Stopped(why));
        }
        if m.rungs.contains(&e.metrics.epoch) {
            self.unanswered = None;
            let answer = answer_to(&m.verdicts, e.metrics.epoch, None)?;
            if let Some(why) = answer.and_then(|v| v.stop) {
                return Err(Error::Stopped(why));
            }
        }
        Ok(())
    }

    fn between_epochs(&mut self, epoch: u32, seconds: f64, threads: u32) -> Result<()> {
        // Reports are answered in the order they were handed over, so the last one's answer
        // comes after all of this epoch's and carries the newest plan. Whatever it says of
        // its member is said again at the member's next report (a rule's stop is kept), so
        // a rung still waits for it; a member dropped meanwhile has no answer to wait for.
        if let Some(i) = self.unanswered.take() {
            let _ = answer_to(
                &self.job.members[i].verdicts,
                epoch,
                Some(plan_wait(seconds)),
            );
        }
        switch_threads(&mut self.switch, &self.trials, epoch + 1, threads, seconds);
        Ok(())
    }
}

/// Member `i`'s artifacts, written when its outcome lets it finish.
fn artifacts(group: &Group, job: &GroupJob, i: usize, outcome: Result<()>) -> Result<()> {
    let m = &job.members[i];
    match &outcome {
        Ok(()) | Err(Error::Stopped(_)) => {}
        Err(Error::Diverged { .. }) if m.divergence.is_some() => {}
        Err(_) => return outcome,
    }
    let extra = serde_json::json!({
        "threads": job.threads,
        "device": device::device_name(job.device),
        "fused_members": group.members.len(),
    });
    group
        .member_trial(i, &job.data, job.subset)
        .and_then(|t| t.save_artifacts(&m.out_dir, extra))?;
    outcome
}

/// The group, every member restored from its lease's checkpoint when all have one of the
/// same epoch; else every member from scratch.
fn build(job: &GroupJob) -> Result<Group> {
    let hparams: Vec<Hyperparams> = job.members.iter().map(|m| m.h.clone()).collect();
    let new = || {
        let mut g = Group::new(&hparams, &job.data, job.subset, job.device)?;
        for (i, m) in job.members.iter().enumerate() {
            g.set_goal(i, m.goal);
        }
        Ok::<_, Error>(g)
    };
    let mut group = new()?;
    let start = job.members[0].start_epoch;
    if start == 0 {
        return Ok(group);
    }
    if job.members.iter().any(|m| m.start_epoch != start) {
        warn!("members of the group stand at different epochs: the group trains from epoch 1");
        return new();
    }
    for (i, m) in job.members.iter().enumerate() {
        if let Err(e) = group.restore(i, &m.checkpoint) {
            warn!(trial = %m.h.trial_id(), error = %e, "checkpoint unusable, the group trains from epoch 1");
            return new();
        }
    }
    info!(
        epoch = start,
        members = job.members.len(),
        "fused group resumed from its members' checkpoints"
    );
    Ok(group)
}

/// Reports each member's epochs as training hands them over, every answer going back to
/// training; a refused report drops that member (its flag is raised, its answers end, which
/// ends a rung wait), the others go on.
async fn forward(
    coord: &Coordinator,
    mut epochs: mpsc::Receiver<(usize, Trained)>,
    links: &mut [MemberLink],
) -> Result<()> {
    while let Some((i, t)) = epochs.recv().await {
        let link = &mut links[i];
        let a = &link.attempt;
        let m: EpochMetrics = t.metrics;
        coord.epoch_trained(t.samples, m.seconds, t.gpu_memory);
        let mut checkpoint = t.checkpoint;
        if checkpoint.len() > MAX_CHECKPOINT {
            warn!(trial = %a.trial_id, bytes = checkpoint.len(), max = MAX_CHECKPOINT,
                "checkpoint too large for the coordinator, epoch reported without it");
            checkpoint = Vec::new();
        }
        let stop = match coord
            .report(a, &m, t.threads, checkpoint, t.gpu_memory)
            .await
        {
            Ok(Answer::Ok) => {
                info!(trial = %a.trial_id, epoch = m.epoch, val_acc = m.val_acc, test_acc = m.test_acc,
                    seconds = m.seconds, threads = t.threads, fused = true, "epoch finished");
                None
            }
            Ok(Answer::Stop(why)) => {
                info!(trial = %a.trial_id, epoch = m.epoch, reason = %why, "trial stopped by a rule; the group goes on without it");
                Some(why)
            }
            Ok(Answer::LeaseLost(s)) | Err(Error::Rpc(s)) => {
                warn!(trial = %a.trial_id, attempt = a.attempt, status = %s.message(),
                    "report rejected, dropping the member from the group");
                link.refused.store(true, Ordering::SeqCst);
                link.verdicts = None;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(verdicts) = &link.verdicts {
            let _ = verdicts.send(Verdict {
                epoch: m.epoch,
                stop,
            });
        }
    }
    Ok(())
}

/// Makes the call each member's ending calls for.
async fn conclude_all(
    coord: &Coordinator,
    joined: std::thread::Result<Result<Outcomes>>,
    links: &[MemberLink],
) -> Result<()> {
    let endings: Vec<Ending> = match joined {
        Ok(Ok(outcomes)) => outcomes
            .into_iter()
            .zip(links)
            .map(|(o, l)| ending(Ok(o), l.divergence))
            .collect(),
        // The whole group failed: every member fails with its reason.
        Ok(Err(e)) => links
            .iter()
            .map(|_| Ending::Fail {
                reason: e.to_string(),
                retryable: e.is_retryable(),
            })
            .collect(),
        Err(panic) => {
            let e = Error::Panicked(panic_message(panic.as_ref()));
            links
                .iter()
                .map(|_| Ending::Fail {
                    reason: e.to_string(),
                    retryable: e.is_retryable(),
                })
                .collect()
        }
    };
    for (e, l) in endings.into_iter().zip(links) {
        if l.refused.load(Ordering::SeqCst) {
            continue;
        }
        conclude(coord, &l.attempt, e, &l.out_dir).await?;
    }
    Ok(())
}
