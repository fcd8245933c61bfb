//! The single writer of the state: a thread that applies every change queued meanwhile in one
//! transaction (group commit: one fsync for many concurrent reports), answers each caller,
//! then hands the committed epoch rows on in sequence order.

use super::{Op, Store, StoreError};
use crate::metrics::Metrics;
use results_format::EpochRecord;
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{debug, error};

struct Batch {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Most changes applied in one transaction.
const MAX_GROUP: usize = 4096;

/// The single writer of the store; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Batch>,
}

impl Committer {
    /// Starts the writer thread. `committed` gets the epoch rows of every commit, in sequence
    /// order, after the commit; `metrics` counts each commit (size, time, epoch rows).
    pub fn spawn(
        store: Store,
        metrics: Metrics,
        mut committed: impl FnMut(Vec<(u64, EpochRecord)>) + Send + 'static,
    ) -> Committer {
        let (tx, rx) = mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name("state-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(b) => group.push(b),
                            Err(_) => break,
                        }
                    }
                    let ops: Vec<Op> = group.iter_mut().flat_map(|b| b.ops.drain(..)).collect();
                    let started = Instant::now();
                    let result = store.apply(&ops).map_err(|e| e.to_string());
                    debug!(batches = group.len(), ops = ops.len(), "state committed");
                    match &result {
                        Ok(()) => {
                            let changes = ops.len();
                            let rows: Vec<(u64, EpochRecord)> = ops
                                .into_iter()
                                .filter_map(|op| match op {
                                    Op::Epoch(seq, row) => Some((seq, *row)),
                                    _ => None,
                                })
                                .collect();
                            // Counted before any caller is answered: a scrape after an
                            // acknowledged report sees it.
                            metrics.committed(changes, rows.len(), started.elapsed());
                            if !rows.is_empty() {
                                committed(rows);
                            }
                        }
                        Err(e) => error!(error = %e, "committing the sweep state failed"),
                    }
                    for b in group {
                        let _ = b.done.send(result.clone());
                    }
                }
            })
            .expect("spawning the state writer thread");
        Committer { tx }
    }

    /// Queues `ops` (applied in the order of the calls) and returns a future that resolves once
    /// they are durable. Call it while holding the scheduler's lock so that the order of
    /// commits is the order of the scheduler's decisions; await it after releasing the lock.
    pub fn submit(&self, ops: Vec<Op>) -> impl std::future::Future<Output = Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let sent = self.tx.send(Batch { ops, done }).is_ok();
        async move {
            if !sent {
                return Err(StoreError::CommitterGone.to_string());
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError::CommitterGone.to_string()))
        }
    }
}
