//! Workers: registering (ids that carry the coordinator's incarnation), who is alive or
//! lost, and forgetting lost ones.

use super::{Result, Scheduler, SchedulerError, WorkerId, WorkerInfo, WorkerState};
use std::time::Instant;

impl Scheduler {
    /// Registered workers not lost.
    pub fn alive_workers(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.lost)
            .map(|(id, _)| id)
    }

    /// Registered workers, lost ones included.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Forgets lost workers that hold no lease (their calls become `UnknownWorker`, and a
    /// worker that comes back registers again). Returns how many were forgotten.
    pub fn forget_lost_workers(&mut self) -> usize {
        let holding: std::collections::HashSet<&WorkerId> = self
            .trials
            .iter()
            .filter_map(|t| t.lease.as_ref().map(|l| &l.worker))
            .collect();
        let lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| w.lost && !holding.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lost {
            self.workers.remove(id);
        }
        lost.len()
    }

    /// Adds a worker and returns its new id.
    pub fn register(&mut self, info: WorkerInfo, now: Instant) -> WorkerId {
        let id = if self.incarnation == 0 {
            WorkerId(format!("w{}", self.next_worker))
        } else {
            WorkerId(format!("w{}-r{}", self.next_worker, self.incarnation))
        };
        self.next_worker += 1;
        let info = WorkerInfo {
            slots: info.slots.max(1),
            ..info
        };
        self.workers.insert(
            id.clone(),
            WorkerState {
                info,
                last_seen: now,
                lost: false,
                held: 0,
                load: None,
            },
        );
        id
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&WorkerInfo> {
        self.workers.get(id).map(|w| &w.info)
    }

    /// True once the worker was silent for a lease timeout (until it calls again).
    pub fn is_lost(&self, id: &WorkerId) -> Option<bool> {
        self.workers.get(id).map(|w| w.lost)
    }

    /// The workers registered under `name` in this start of the coordinator, alive or lost.
    pub fn workers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a WorkerId> + 'a {
        self.workers
            .iter()
            .filter(move |(_, w)| w.info.name == name)
            .map(|(id, _)| id)
    }

    /// Marks the worker alive; fails when it never registered.
    pub(super) fn touch(&mut self, worker: &WorkerId, now: Instant) -> Result<()> {
        let w = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| SchedulerError::UnknownWorker(worker.0.clone()))?;
        w.last_seen = w.last_seen.max(now);
        w.lost = false;
        Ok(())
    }
}
