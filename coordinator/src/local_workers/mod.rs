//! The local workers of `coordinator run`: `worker join` processes on this machine, started,
//! watched and, when one dies, started again.
//!
//! Each holds a pipe to the coordinator on stdin and exits when it closes, so none outlives
//! the coordinator. Each logs to `logs/worker-<n>.log` (appended across restarts and resumed
//! runs) and registers as `local-<n>`.
//!
//! A worker that exits before the sweep is done (an OOM kill, a libtorch crash, `kill -9`)
//! is started again after a short backoff, and its leases end at once
//! ([`SweepState::worker_exited`]), so its trial resumes from its last checkpoint without
//! waiting for the lease timeout. A worker that exits [`GIVE_UP_AFTER`] times in a row without
//! ever registering (a bad binary, a missing libtorch) is not started again: without remote
//! workers (`--listen`) the run then ends with the last lines of its log.

mod security;

pub use security::LocalWorkerSecurity;

use crate::cli::RunArgs;
use crate::service::SweepState;
use anyhow::{Context, Result};
use results_format::ResultsDir;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// Exits in a row without a registration after which a worker is not started again.
pub const GIVE_UP_AFTER: u32 = 3;
/// The wait before the first restart; it doubles with every exit in a row without a
/// registration, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Lines of a worker's log shown when the run gives up on it.
const LOG_TAIL: usize = 5;

/// How to start local worker `n` (1-based); the same every time it is restarted.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    /// `join` and its arguments shared by every local worker, before `--name`...
    join: Vec<OsString>,
    /// ... and after it: data, security and the user's `--worker-arg`s.
    extra: Vec<OsString>,
    threads: usize,
}

impl Launch {
    fn command(&self, n: usize, log: &Path) -> Result<Command> {
        // Appended: a restarted worker and a resumed run keep the logs before them.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.join)
            .args(["--name", &name(n)])
            .args(&self.extra)
            // One libtorch/OpenMP pool per worker, sized by --threads (its starting size
            // under --start-threads: the worker resizes it when the coordinator lends cores).
            .env("OMP_NUM_THREADS", self.threads.to_string())
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(cmd)
    }
}

/// The name local worker `n` registers with.
pub fn name(n: usize) -> String {
    format!("local-{n}")
}

/// One local worker and its history.
struct Slot {
    n: usize,
    log: PathBuf,
    /// `None` while waiting to be started again, or for good once given up or done.
    child: Option<Child>,
    /// Its registrations with the coordinator when the current process started.
    registrations_at_start: usize,
    /// Exits in a row without a registration.
    unregistered_exits: u32,
    restart_at: Option<Instant>,
    /// Exited successfully (the sweep told it `Done`) or given up: never started again.
    retired: bool,
    given_up: bool,
}

/// Why the local workers cannot go on.
#[derive(Debug)]
pub enum Stuck {
    /// Every local worker was given up; `worker` is the last one.
    GaveUp {
        worker: usize,
        exits: u32,
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A worker could not be started again (its binary vanished, the log folder is gone).
    CannotStart(anyhow::Error),
}

/// Every local worker of a run.
pub struct LocalWorkers {
    launch: Launch,
    slots: Vec<Slot>,
}

impl LocalWorkers {
    /// Starts `n` local workers with `threads` libtorch threads each, connecting to `addr`:
    /// fixed when `pinned`, else what each trial starts with (`worker join --start-threads`),
    /// which the coordinator's thread plan may raise while cores are idle.
    pub fn start(
        args: &RunArgs,
        n: usize,
        (threads, pinned): (usize, bool),
        addr: SocketAddr,
        dir: &ResultsDir,
        security: &LocalWorkerSecurity,
        state: &SweepState,
    ) -> Result<LocalWorkers> {
        if n > 0 {
            std::fs::create_dir_all(dir.logs())
                .with_context(|| format!("creating {}", dir.logs().display()))?;
        }
        let url = format!("{}://127.0.0.1:{}", security.scheme, addr.port());
        let threads_arg = threads.to_string();
        let join = [
            "join",
            "--coordinator",
            &url,
            "--slots",
            "1",
            if pinned {
                "--threads"
            } else {
                "--start-threads"
            },
            &threads_arg,
            "--device",
            &args.device,
            "--exit-on-stdin-eof",
        ]
        .map(OsString::from)
        .to_vec();
        let mut extra = args.data.to_args();
        // Files only: the token never appears on a command line.
        extra.extend(security.args.iter().cloned());
        extra.extend(args.worker_arg.iter().map(OsString::from));
        let mut workers = LocalWorkers {
            launch: Launch {
                bin: worker_binary(args),
                join,
                extra,
                threads,
            },
            slots: (1..=n)
                .map(|n| Slot {
                    n,
                    log: dir.worker_log(n),
                    child: None,
                    registrations_at_start: 0,
                    unregistered_exits: 0,
                    restart_at: None,
                    retired: false,
                    given_up: false,
                })
                .collect(),
        };
        for i in 0..workers.slots.len() {
            workers.spawn(i, state)?;
        }
        info!(workers = n, threads, pinned, bin = %workers.launch.bin.display(), "local workers started");
        Ok(workers)
    }

    fn spawn(&mut self, i: usize, state: &SweepState) -> Result<()> {
        let slot = &mut self.slots[i];
        let child = self
            .launch
            .command(slot.n, &slot.log)?
            .spawn()
            .with_context(|| {
                format!(
                    "starting local worker {} ({}); build it with `cargo build --release` or pass --worker-bin",
                    slot.n,
                    self.launch.bin.display()
                )
            })?;
        slot.registrations_at_start = state.registrations(&name(slot.n));
        slot.child = Some(child);
        slot.restart_at = None;
        Ok(())
    }

    /// Notices workers that exited and starts them again when their backoff has passed.
    /// Fails when, without remote workers (`remote_allowed` false), every local worker was
    /// given up while the sweep is not done.
    pub fn supervise(&mut self, state: &SweepState, remote_allowed: bool) -> Result<(), Stuck> {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if let Some(status) = self.exited(i) {
                self.after_exit(i, status, state, now);
            }
            let slot = &self.slots[i];
            if slot.child.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                info!(worker = slot.n, log = %slot.log.display(), "starting local worker again");
                if let Err(e) = self.spawn(i, state) {
                    return Err(Stuck::CannotStart(e));
                }
            }
        }
        if !remote_allowed
            && !self.slots.is_empty()
            && self.slots.iter().all(|s| s.given_up || s.retired)
            && self.slots.iter().any(|s| s.given_up)
        {
            let last = self
                .slots
                .iter()
                .rev()
                .find(|s| s.given_up)
                .expect("checked");
            return Err(Stuck::GaveUp {
                worker: last.n,
                exits: last.unregistered_exits,
                log: last.log.clone(),
                tail: log_tail(&last.log),
            });
        }
        Ok(())
    }

    fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        let child = self.slots[i].child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.slots[i].child = None;
        Some(status)
    }

    /// Decides what follows an exit: nothing (the sweep is done, or the worker was told so),
    /// a restart after the backoff, or giving up on a worker that never registers.
    fn after_exit(&mut self, i: usize, status: ExitStatus, state: &SweepState, now: Instant) {
        let slot = &mut self.slots[i];
        if status.success() || state.is_done() {
            slot.retired = true;
            return;
        }
        let registered = state.registrations(&name(slot.n)) > slot.registrations_at_start;
        let ended = state.worker_exited(&name(slot.n));
        if registered {
            slot.unregistered_exits = 0;
        } else {
            slot.unregistered_exits += 1;
        }
        if slot.unregistered_exits >= GIVE_UP_AFTER {
            slot.given_up = true;
            warn!(worker = slot.n, %status, log = %slot.log.display(),
                "local worker exited {} times in a row without registering; not starting it again",
                slot.unregistered_exits);
            return;
        }
        let backoff = (FIRST_BACKOFF * 2u32.pow(slot.unregistered_exits)).min(MAX_BACKOFF);
        slot.restart_at = Some(now + backoff);
        warn!(worker = slot.n, %status, leases_ended = ended, registered,
            restart_in_ms = backoff.as_millis() as u64, log = %slot.log.display(),
            "local worker exited");
    }

    /// Waits a little for workers that were told `Done`, then kills what is left.
    pub async fn stop(&mut self) {
        for slot in &mut self.slots {
            if let Some(child) = slot.child.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let _ = child.start_kill();
            }
        }
    }
}

/// The worker binary: `--worker-bin`/`HYPERSWEEP_WORKER`, else `worker` beside this
/// executable, else `worker` on PATH.
fn worker_binary(args: &RunArgs) -> PathBuf {
    if let Some(p) = &args.worker_bin {
        return p.clone();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("worker");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("worker")
}

/// The last lines of a log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
