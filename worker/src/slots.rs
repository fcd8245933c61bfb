//! `worker join --slots N` with N > 1: N worker processes, one trial each.
//!
//! Why processes and not N trials on threads of one process: libtorch's random generator is
//! global to the process, and tch exposes no per-trial `Generator`, so trials trained side by
//! side in one process would draw their dropout masks from one stream in an order set by
//! thread timing. A trial's numbers would then depend on its neighbours, and a trial resumed
//! from a checkpoint would not repeat an uninterrupted run. In a process of its own, every
//! trial is reproducible per seed.
//!
//! The supervisor (the process the user started) runs its own executable again N times with
//! the same arguments and `HYPERSWEEP_WORKER_SLOT=i` in the environment. Slot `i` registers as
//! `<name>/<i>` with one slot and, unless `--threads` says otherwise, the machine's cores
//! divided by N. Each slot holds a pipe to the supervisor on its standard input and exits when
//! it closes, so killing the supervisor (even with `kill -9`) stops every slot; their leases
//! expire and the trials resume elsewhere from their last checkpoint.

use crate::cli::JoinArgs;
use crate::{Error, Result};
use std::process::{Child, Command, Stdio};
use tracing::{info, warn};

/// Set by the supervisor in each slot process: the slot's index.
pub const SLOT_ENV: &str = "HYPERSWEEP_WORKER_SLOT";

/// The slot this process is, when a supervisor started it; `None` for a process started by
/// hand.
pub fn this_slot(args: &JoinArgs) -> Result<Option<usize>> {
    let Some(raw) = std::env::var_os(SLOT_ENV) else {
        return Ok(None);
    };
    let slot = raw
        .to_str()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&i| i < args.slots.max(1))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{SLOT_ENV}={raw:?} is not a slot of --slots {} (it is set by `worker join \
                 --slots N` for the processes it starts; unset it)",
                args.slots
            ))
        })?;
    Ok(Some(slot))
}

/// Whether this process should start slot processes instead of joining itself.
pub fn is_supervisor(args: &JoinArgs) -> bool {
    args.slots > 1 && std::env::var_os(SLOT_ENV).is_none()
}

/// Starts `args.slots` slot processes and waits for all of them. Fails, naming them, when any
/// slot failed; the others go on serving the sweep until it is done.
pub fn supervise(args: &JoinArgs) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Slot(format!("cannot find this executable to start slots: {e}")))?;
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let mut children: Vec<Child> = Vec::with_capacity(args.slots);
    for slot in 0..args.slots {
        let child = Command::new(&exe)
            .args(&argv)
            .env(SLOT_ENV, slot.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(&exe, e));
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
        }
    }
    info!(
        slots = args.slots,
        pids = ?children.iter().map(Child::id).collect::<Vec<_>>(),
        "started one worker process per slot"
    );
    // Held until every slot has exited: `Child::wait` would close them, and a slot exits when
    // its stdin closes.
    let _pipes: Vec<_> = children.iter_mut().map(|c| c.stdin.take()).collect();
    let mut failed = Vec::new();
    for (slot, child) in children.iter_mut().enumerate() {
        match child.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                warn!(slot, %status, "slot process failed");
                failed.push(format!("slot {slot}: {status}"));
            }
            Err(e) => failed.push(format!("slot {slot}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Slot(format!(
            "{} of {} slot processes failed ({}); their errors are above",
            failed.len(),
            args.slots,
            failed.join(", ")
        )))
    }
}
