//! `worker join`: lease trials from a coordinator and train them until the sweep is done.
//!
//! A process trains one trial at a time (`--slots N` is N processes: see [`crate::slots`]).
//! Its slot is a loop on the async runtime: lease, train on a dedicated OS thread (training
//! never blocks the runtime), forward each epoch through a bounded channel to `ReportEpoch`,
//! upload the artifacts, `Finish` (or `Fail`). [`crate::join_trial::run_trial`] tells that
//! story one step per function; this file is the lease loop around it. Talking to the
//! coordinator (retries, registering again, what a failed call means) is [`crate::client`]'s; a heartbeat task keeps the held lease alive and raises its
//! lost flag when the coordinator takes it back.
//!
//! Every `ReportEpoch` carries the trial's checkpoint after that epoch; a lease with
//! `start_epoch > 0` comes with the checkpoint to restore, and training continues after it.
//!
//! Stopping (issue 12): after an epoch the lease lists as a rung, training waits for the
//! answer to its report (elsewhere it trains on while the report is in flight); an answer
//! that stops the trial ends training there. Under the divergence rule the worker stops by
//! itself when the training loss rises past the factor (the coordinator reaches the same
//! verdict from the same numbers), and reports a non-finite loss as such instead of metrics.
//! A stopped trial uploads its artifacts (the best epoch's, as every trial) and `Finish`es.
//! Trials that train nothing (`--noop`, the synthetic objective) are [`crate::synthetic`]'s;
//! the data is loaded at the first trial that trains.
//! When the coordinator restarts, it no longer knows this worker's id (NOT_FOUND): the worker
//! registers again and goes on leasing; the trials it was training are abandoned (their
//! reports are rejected) and resume elsewhere from their last checkpoint.

use crate::cli::JoinArgs;
use crate::client::{Answer, Attempt, Coordinator, Offer};
use crate::connect::Connection;
use crate::data::Subset;
use crate::device;
use crate::synthetic::{run_noop, run_synthetic};
use crate::{Error, Result};
use proto::pb;
use proto::Objective;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tch::Device;
use tracing::{info, warn};

pub(crate) struct Ctx {
    pub(crate) coord: Arc<Coordinator>,
    /// `--noop`: every trial reports made-up metrics.
    pub(crate) noop: bool,
    /// Where Fashion-MNIST is looked for, and the coordinator it is fetched from when it is
    /// nowhere here (fetch.rs): loaded at the first trial that trains.
    data_args: dataset::cli::DataArgs,
    conn: Connection,
    budget: Duration,
    data: tokio::sync::OnceCell<Arc<dataset::FashionMnist>>,
    pub(crate) subset: Subset,
    pub(crate) device: Device,
    pub(crate) threads: usize,
    pub(crate) scratch: PathBuf,
}

/// Runs `worker join` until the coordinator says the sweep is done.
pub async fn run(args: JoinArgs) -> Result<()> {
    // One trial at a time in a process: `--slots N` is N processes (see slots.rs), each of
    // which comes here as slot `i` of N, on its own device when `--device` spreads them.
    let slot = crate::slots::this_slot(&args)?;
    let dev = device::for_slot(&args.device, slot.unwrap_or(0))?;
    if slot.is_none() && args.slots > 1 {
        return Err(Error::Slot(
            "--slots N runs N processes: call slots::supervise, not join::run".into(),
        ));
    }
    // The cores this process may use (its affinity mask and cgroup quota): what the
    // coordinator's thread plan shares among this host's trials.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args
        .threads
        .or(args.start_threads)
        .unwrap_or((cores / args.slots.max(1)).max(1));
    let cpus = Cpus {
        threads,
        cores,
        pinned: args.threads.is_some(),
        max_fuse: args.max_fuse,
    };
    let mut name = args.name.clone().unwrap_or_else(default_name);
    if let Some(i) = slot {
        name = format!("{name}/{i}");
    }

    if slot.is_some() {
        watch_stdin("the `worker join --slots` that started this slot is gone");
    } else if args.exit_on_stdin_eof {
        watch_stdin("coordinator went away");
    }
    // Plaintext or TLS, with the token interceptor: see connect.rs.
    let conn = Connection::from_args(&args)?;
    let budget = Duration::from_secs(args.reconnect_timeout);
    let coord = Arc::new(Coordinator::join(&conn, registration(name, dev, cpus), budget).await?);

    let scratch = std::env::temp_dir().join(format!("hypersweep-worker-{}", std::process::id()));
    let ctx = Arc::new(Ctx {
        coord,
        noop: args.noop,
        data_args: args.data.clone(),
        conn,
        budget,
        data: tokio::sync::OnceCell::new(),
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

/// A worker's threads and cores, as it registers them (issue 13).
#[derive(Debug, Clone, Copy)]
struct Cpus {
    /// Threads per trial: what every trial starts with.
    threads: usize,
    /// The cores this process may use.
    cores: usize,
    /// `--threads` fixed them: the coordinator never changes them.
    pinned: bool,
    /// `--max-fuse`: the most trials it trains as one fused group.
    max_fuse: u32,
}

/// What this worker says about itself: its name, device, threads and cores, its build and
/// protocol (build_info.rs), its host and the device's model (gpu.rs).
fn registration(name: String, dev: Device, cpus: Cpus) -> pb::RegisterRequest {
    let build = crate::build_info::BUILD;
    pb::RegisterRequest {
        name,
        device: device::device_name(dev),
        slots: 1,
        threads: u32::try_from(cpus.threads).unwrap_or(u32::MAX),
        cores: u32::try_from(cpus.cores).unwrap_or(u32::MAX),
        threads_pinned: cpus.pinned,
        max_fuse: cpus.max_fuse,
        version: build.version.into(),
        protocol: proto::PROTOCOL_VERSION,
        build_variant: build.variant.as_str().into(),
        libtorch_version: build.libtorch.into(),
        cuda_version: build.cuda.unwrap_or_default().into(),
        host: crate::gpu::host(),
        device_name: crate::gpu::device_name(dev),
    }
}

impl Ctx {
    /// Fashion-MNIST, found here or fetched from the coordinator into the cache (fetch.rs), read
    /// and verified the first time a trial trains: a worker that only runs synthetic trials
    /// loads no data.
    pub(crate) async fn data(&self) -> Result<Arc<dataset::FashionMnist>> {
        self.data
            .get_or_try_init(|| async {
                let rpc = Coordinator::connect(&self.conn, self.budget).await?;
                let data = crate::fetch::load(&self.data_args, &self.conn, &rpc, self.budget);
                Ok::<_, Error>(Arc::new(data.await?))
            })
            .await
            .cloned()
    }

    /// [`Ctx::data`] for the leased `attempts`: when this worker cannot read the data, each
    /// is failed as retryable (another worker may have the data: the trials are not to
    /// blame) before the error is returned.
    pub(crate) async fn data_for(
        &self,
        attempts: &[Attempt],
    ) -> Result<Arc<dataset::FashionMnist>> {
        match self.data().await {
            Ok(data) => Ok(data),
            Err(e) => {
                let reason = format!("this worker cannot read the data: {e}");
                for a in attempts {
                    if let Answer::LeaseLost(s) = self.coord.fail(a, &reason, true).await? {
                        lease_lost(a, &s);
                    }
                }
                Err(e)
            }
        }
    }
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
            Offer::Trial(leased) if !leased.members.is_empty() => {
                crate::join_group::run_group(&ctx, slot, leased).await?
            }
            Offer::Trial(leased) => match leased.hparams.clone() {
                Err(reason) => refuse(&ctx.coord, &leased.attempt, &reason).await?,
                Ok(h) if h.objective == Objective::Synthetic => {
                    run_synthetic(&ctx.coord, leased, &h).await?
                }
                Ok(h) if ctx.noop => run_noop(&ctx.coord, leased, &h, ctx.threads as u32).await?,
                Ok(h) => crate::join_trial::run_trial(&ctx, slot, leased, h).await?,
            },
            Offer::Wait(pause) => tokio::time::sleep(pause).await,
            Offer::Done => return Ok(()),
        }
    }
}

/// A lease whose hyperparameters cannot be trained anywhere: `Fail`, not retryable.
pub(crate) async fn refuse(coord: &Coordinator, attempt: &Attempt, reason: &str) -> Result<()> {
    warn!(trial = %attempt.trial_id, attempt = attempt.attempt, %reason, "trial failed");
    if let Answer::LeaseLost(s) = coord.fail(attempt, reason, false).await? {
        lease_lost(attempt, &s);
    }
    Ok(())
}

/// Logs that the coordinator took `attempt` back; the slot leases anew.
pub(crate) fn lease_lost(attempt: &Attempt, status: &tonic::Status) {
    warn!(trial = %attempt.trial_id, attempt = attempt.attempt, status = %status.message(),
        "the coordinator no longer holds this lease for us; leasing anew");
}
