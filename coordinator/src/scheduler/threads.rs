//! Threads planned as well as order (issue 13): the cores of a host that no trial uses are
//! lent to the trials running on it, and taken back as soon as work waits.
//!
//! Plain data, no I/O, no clock: [`plan_host`] is the rule on one host's workers, and
//! [`Scheduler::planned_threads`] applies it for the worker that calls. Its `ReportEpoch` and
//! heartbeat answers carry the count; the worker switches at its next epoch boundary, so every
//! epoch trains on one thread count, which the epoch's row records (`threads`).
//!
//! The rule:
//! - Workers are grouped by the host they named at `Register`; two hosts never share cores.
//!   A host has the most cores any of its alive workers said it may use: the local workers of
//!   `coordinator run`, or the slot processes of one `worker join --slots N`, are one host.
//! - While a trial is queued, or a tpe experiment still has trials to suggest, every planned
//!   worker trains on the threads it registered with: queued work is never starved, and a
//!   worker that comes back and leases a trial gets its cores back.
//! - Otherwise the cores that the busy workers do not use at their registered counts go to
//!   the busy planned workers, shared evenly; odd cores go to the trials with the most work
//!   left (ties: the lower worker id). Idle workers hold no cores.
//! - A worker is planned when it said its host and cores, trains on the CPU with one slot,
//!   and neither it (`worker join --threads`) nor the coordinator (`--pin-threads`) pinned its
//!   threads. A busy worker that is not planned keeps its threads, which count as used.
//! - A worker training a fused group holds a lease per member but is one busy worker on its
//!   registered threads; the group's work left is its members' together, and the worker
//!   switches every member at once (`worker/src/join_group.rs`).
//!
//! A trial always starts on its worker's registered count (the worker resets at each lease):
//! a worker lent cores for one trial never carries them into the next.

use super::{Scheduler, WorkerId, WorkerState};

/// One alive worker of a host, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// It holds a lease now.
    pub busy: bool,
    /// Its threads may be changed.
    pub planned: bool,
    /// The threads it registered with.
    pub threads: u32,
    /// Work its trial (or fused group: every member's) has left (remaining epochs × the
    /// trial's relative cost per epoch): who gets the odd cores.
    pub work_left: f64,
}

/// The threads of each of `members`, the alive workers of a host with `cores` cores, when
/// `waiting` (work is queued) or not: see the module documentation.
pub fn plan_host(cores: u32, members: &[Member], waiting: bool) -> Vec<u32> {
    let mut plan: Vec<u32> = members.iter().map(|m| m.threads.max(1)).collect();
    let mut lent_to: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].busy && members[i].planned)
        .collect();
    if waiting || lent_to.is_empty() {
        return plan;
    }
    let used: u32 = members
        .iter()
        .filter(|m| m.busy)
        .map(|m| m.threads.max(1))
        .sum();
    let spare = cores.saturating_sub(used);
    let n = u32::try_from(lent_to.len()).unwrap_or(u32::MAX);
    let (each, odd) = (spare / n, spare % n);
    // Stable: equal work keeps the members' order.
    lent_to.sort_by(|&a, &b| members[b].work_left.total_cmp(&members[a].work_left));
    for (k, &i) in lent_to.iter().enumerate() {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        plan[i] += each + u32::from(k < odd);
    }
    plan
}

impl Scheduler {
    /// The threads `worker` should train with from its next epoch on, by its host's plan;
    /// `None` when its threads are not planned (it keeps them).
    pub fn planned_threads(&self, worker: &WorkerId) -> Option<u32> {
        let w = self.workers.get(worker)?;
        if !self.is_planned(w) {
            return None;
        }
        let mut host: Vec<(&WorkerId, &WorkerState)> = self
            .workers
            .iter()
            .filter(|(_, o)| !o.lost && o.info.cores > 0 && o.info.host == w.info.host)
            .collect();
        host.sort_by(|a, b| a.0.cmp(b.0));
        let cores = host.iter().map(|(_, o)| o.info.cores).max().unwrap_or(0);
        let waiting = !self.queue.is_empty() || self.to_suggest > 0;
        let work_left = self.work_left(&host, waiting);
        let members: Vec<Member> = host
            .iter()
            .zip(work_left)
            .map(|((_, o), work_left)| Member {
                busy: o.held > 0,
                planned: self.is_planned(o),
                threads: o.info.threads,
                work_left,
            })
            .collect();
        let plan = plan_host(cores, &members, waiting);
        host.iter()
            .position(|(id, _)| *id == worker)
            .map(|i| plan[i])
    }

    fn is_planned(&self, w: &WorkerState) -> bool {
        let i = &w.info;
        !self.config.pin_threads
            && !i.threads_pinned
            && i.cores > 0
            && i.threads > 0
            && !i.host.is_empty()
            && i.device == "cpu"
            && i.slots == 1
    }

    /// The work left of the trials each of `host`'s workers holds; walks the trials only when
    /// it can matter (two or more busy planned workers and nothing waiting).
    fn work_left(&self, host: &[(&WorkerId, &WorkerState)], waiting: bool) -> Vec<f64> {
        let mut left = vec![0.0; host.len()];
        let lent = host
            .iter()
            .filter(|(_, o)| o.held > 0 && self.is_planned(o))
            .count();
        if waiting || lent < 2 {
            return left;
        }
        for t in &self.trials {
            let Some(lease) = &t.lease else { continue };
            if let Some(i) = host.iter().position(|(id, _)| **id == lease.worker) {
                let epochs = t.hparams.epochs.max(1);
                let remaining = f64::from(epochs.saturating_sub(t.recorded));
                left[i] += t.hparams.relative_cost() * remaining / f64::from(epochs);
            }
        }
        left
    }
}

#[cfg(test)]
mod tests;
