//! What the scheduler tells the metrics ([`crate::metrics`]): how many trials are in each
//! state and which workers are alive, with what their heartbeats last said about their work.
//! Plain data, read at each scrape: nothing here is tracked beside the scheduler's own state.

use super::{Scheduler, WorkerId};
use results_format::TrialStatus;

/// What a worker's heartbeats say about its work (issue 11: the per-worker metrics).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerLoad {
    /// Training samples per second of its last epoch.
    pub samples_per_second: f64,
    /// GPU memory in use, in bytes (0 on CPU).
    pub gpu_memory_bytes: u64,
}

/// How many trials are in each state and which workers are alive: what the metrics export
/// ([`Scheduler::census`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Census {
    /// Queued trials, and the trials tpe experiments are still to suggest.
    pub queued: usize,
    pub running: usize,
    pub finished: usize,
    pub failed: usize,
    pub stopped: usize,
    /// Registered workers not lost, in no particular order.
    pub workers: Vec<AliveWorker>,
}

/// A worker in a [`Census`].
#[derive(Debug, Clone, PartialEq)]
pub struct AliveWorker {
    pub id: WorkerId,
    pub device: String,
    pub build: String,
    /// What its last heartbeat said; `None` before its first.
    pub load: Option<WorkerLoad>,
}

impl Scheduler {
    /// Keeps what a heartbeat of `worker` said about its work (call it with the heartbeat).
    pub fn report_load(&mut self, worker: &WorkerId, load: WorkerLoad) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.load = Some(load);
        }
    }

    /// Trials by state and the workers alive (walks every trial, like [`Scheduler::progress`]).
    pub fn census(&self) -> Census {
        let mut c = Census {
            queued: usize::try_from(self.to_suggest).unwrap_or(usize::MAX),
            ..Census::default()
        };
        for t in &self.trials {
            match t.status {
                TrialStatus::Queued => c.queued += 1,
                TrialStatus::Running => c.running += 1,
                TrialStatus::Finished => c.finished += 1,
                TrialStatus::Failed => c.failed += 1,
                TrialStatus::Stopped => c.stopped += 1,
            }
        }
        c.workers = self
            .workers
            .iter()
            .filter(|(_, w)| !w.lost)
            .map(|(id, w)| AliveWorker {
                id: id.clone(),
                device: w.info.device.clone(),
                build: w.info.build.clone(),
                load: w.load,
            })
            .collect();
        c
    }
}
