//! Keeping leases alive and ending them: heartbeats, leases that lapse, workers whose
//! process is gone. An attempt that ends badly requeues its trial at the front, fails it once
//! it used `max_attempts`, or, when a rule had stopped it, ends it `stopped`.

use super::{ActiveLease, Expired, Result, Scheduler, WorkerId};
use proto::TrialId;
use results_format::TrialStatus;
use std::time::Instant;

impl Scheduler {
    /// Refreshes the leases `worker` says it runs and returns those it no longer holds
    /// (expired, re-leased, finished, unknown): the worker must abandon them.
    pub fn heartbeat(
        &mut self,
        worker: &WorkerId,
        running: &[(TrialId, u32)],
        now: Instant,
    ) -> Result<Vec<(TrialId, u32)>> {
        self.touch(worker, now)?;
        let deadline = now + self.config.lease_timeout;
        let mut abandon = Vec::new();
        for (trial, attempt) in running {
            let held = self.index.get(trial).and_then(|&i| {
                self.trials[i]
                    .lease
                    .as_mut()
                    .filter(|l| &l.worker == worker && l.attempt == *attempt)
            });
            match held {
                Some(lease) => lease.deadline = deadline,
                None => abandon.push((trial.clone(), *attempt)),
            }
        }
        Ok(abandon)
    }

    /// Requeues (at the front) every trial whose lease lapsed, or fails it once it used
    /// `max_attempts`; marks workers silent for a lease timeout as lost.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let timeout = self.config.lease_timeout;
        for w in self.workers.values_mut() {
            if !w.lost && now.saturating_duration_since(w.last_seen) >= timeout {
                w.lost = true;
            }
        }
        self.end_leases(
            now,
            |l| l.deadline <= now,
            |lease, name| {
                format!(
                "lease expired after {} ms without a heartbeat on worker {} ({name}), attempt {}",
                timeout.as_millis(),
                lease.worker,
                lease.attempt
            )
            },
        )
    }

    /// The process of `worker` is known to be gone (a local worker that exited): it is lost,
    /// and every lease it held ends now as an expired one would, without waiting for the
    /// lease timeout.
    pub fn drop_worker(&mut self, worker: &WorkerId, now: Instant) -> Vec<Expired> {
        if let Some(w) = self.workers.get_mut(worker) {
            w.lost = true;
        }
        self.end_leases(
            now,
            |l| &l.worker == worker,
            |lease, name| {
                format!(
                    "worker {} ({name}) exited during attempt {}",
                    lease.worker, lease.attempt
                )
            },
        )
    }

    /// Ends the leases `ended` picks: each is an attempt that ended badly (`why` says how), and
    /// its trial is requeued at the front, or failed once it used `max_attempts`.
    pub(super) fn end_leases(
        &mut self,
        now: Instant,
        ended: impl Fn(&ActiveLease) -> bool,
        why: impl Fn(&ActiveLease, &str) -> String,
    ) -> Vec<Expired> {
        let wall = self.wall(now);
        let mut expired = Vec::new();
        for (i, t) in self.trials.iter_mut().enumerate() {
            let Some(lease) = t.lease.take_if(|l| ended(l)) else {
                continue;
            };
            self.active_leases -= 1;
            if let Some(w) = self.workers.get_mut(&lease.worker) {
                w.held = w.held.saturating_sub(1);
            }
            let name = self
                .workers
                .get(&lease.worker)
                .map(|w| w.info.name.as_str())
                .unwrap_or("?");
            t.last_error = Some(why(&lease, name));
            t.failures += 1;
            if let Some(end) = t.end_status() {
                // A stopped trial is never trained again: it ends here, artifacts or not.
                t.status = end;
                t.finished_at = Some(wall);
            } else if t.failures >= self.config.max_attempts {
                t.status = TrialStatus::Failed;
                t.finished_at = Some(wall);
            } else {
                t.status = TrialStatus::Queued;
            }
            expired.push((
                i,
                Expired {
                    trial_id: t.id.clone(),
                    attempt: lease.attempt,
                    worker: lease.worker,
                    failed: t.status == TrialStatus::Failed,
                    status: t.status,
                },
            ));
        }
        // Requeued trials go to the front, in their original queue order among themselves.
        for (i, _) in expired.iter().rev() {
            if self.trials[*i].status == TrialStatus::Queued {
                self.queue.push_front(*i);
            }
        }
        expired.into_iter().map(|(_, e)| e).collect()
    }
}
