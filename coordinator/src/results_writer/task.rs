//! The task that owns the [`EpochWriter`]: committed epoch rows come in through a bounded
//! channel (from the state committer's thread), part files go out when enough rows wait or
//! the flush interval passes, and `trials.parquet` is rewritten from the scheduler's records
//! whenever the sweep changed and the interval passed. File I/O runs on blocking threads:
//! the runtime never waits on Parquet encoding.

use super::EpochWriter;
use crate::scheduler::Scheduler;
use results_format::{write, EpochRecord, Error, ResultsDir};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

/// Epoch rows queued for the writer before the committer waits.
const QUEUE: usize = 4096;

enum Msg {
    /// A committed row and its sequence number.
    Row(u64, Box<EpochRecord>),
    /// Flush every buffered row and rewrite `trials.parquet`, then answer.
    Finish(oneshot::Sender<Result<(), Error>>),
}

/// The handle of the results writer task; cheap to clone.
#[derive(Clone)]
pub struct ResultsWriter {
    tx: mpsc::Sender<Msg>,
}

/// The writer task is gone (it only stops when every handle is dropped, or on a panic).
#[derive(Debug, thiserror::Error)]
#[error("the results writer stopped")]
pub struct WriterGone;

impl ResultsWriter {
    /// Starts the task on the current runtime. `changes` is marked changed with every change
    /// of the sweep; `scheduler` gives the records of `trials.parquet`.
    pub fn spawn(
        runtime: &tokio::runtime::Handle,
        writer: EpochWriter,
        scheduler: Arc<Mutex<Scheduler>>,
        changes: watch::Receiver<u64>,
        dir: ResultsDir,
        flush_interval: Duration,
    ) -> ResultsWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(run(writer, scheduler, changes, rx, dir, flush_interval));
        ResultsWriter { tx }
    }

    /// Queues a committed row, from a thread outside the runtime (the committer's). Rows
    /// must come in sequence order.
    pub fn blocking_row(&self, seq: u64, row: EpochRecord) -> Result<(), WriterGone> {
        self.tx
            .blocking_send(Msg::Row(seq, Box::new(row)))
            .map_err(|_| WriterGone)
    }

    /// Writes every buffered row and rewrites `trials.parquet`; call at the end of the sweep.
    pub async fn finish(&self) -> Result<Result<(), Error>, WriterGone> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Finish(tx))
            .await
            .map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the loop was asked to do besides its periodic work.
enum Forced {
    /// `finish`: flush and answer.
    Finish(oneshot::Sender<Result<(), Error>>),
    /// Every handle is gone: flush one last time and stop.
    Closed,
}

async fn run(
    writer: EpochWriter,
    scheduler: Arc<Mutex<Scheduler>>,
    mut changes: watch::Receiver<u64>,
    mut rx: mpsc::Receiver<Msg>,
    dir: ResultsDir,
    flush_interval: Duration,
) {
    let writer = Arc::new(Mutex::new(writer));
    let period = flush_interval.clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut trials_written: Option<Instant> = None;
    loop {
        let mut forced = None;
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Row(seq, row)) => {
                    if !lock(&writer).push(seq, *row) {
                        warn!(seq, "dropped a repeated epoch row");
                    }
                }
                Some(Msg::Finish(done)) => forced = Some(Forced::Finish(done)),
                None => forced = Some(Forced::Closed),
            },
            _ = tick.tick() => {}
        }
        let trials_dirty = changes.has_changed().unwrap_or(false) || trials_written.is_none();
        let now = Instant::now();
        let due = lock(&writer).should_flush(now)
            || (trials_dirty
                && trials_written
                    .is_none_or(|t| now.saturating_duration_since(t) >= flush_interval));
        if !due && forced.is_none() {
            continue;
        }
        changes.borrow_and_update();
        let result = flush(&writer, &scheduler, &dir, now).await;
        trials_written = Some(now);
        match forced {
            Some(Forced::Finish(done)) => {
                let _ = done.send(result);
            }
            Some(Forced::Closed) => {
                if let Err(e) = result {
                    error!(error = %e, "final results flush failed");
                }
                return;
            }
            None => {
                if let Err(e) = result {
                    error!(error = %e, "writing results failed, will retry");
                }
            }
        }
    }
}

/// Writes the buffered rows as a part file and rewrites `trials.parquet`, on a blocking thread.
async fn flush(
    writer: &Arc<Mutex<EpochWriter>>,
    scheduler: &Mutex<Scheduler>,
    dir: &ResultsDir,
    now: Instant,
) -> Result<(), Error> {
    let records = lock(scheduler).records();
    let (w, d) = (Arc::clone(writer), dir.clone());
    tokio::task::spawn_blocking(move || {
        if let Some(path) = lock(&w).flush(now)? {
            debug!(path = %path.display(), "epoch rows written");
        }
        write::write_trials(&d, &records).map(drop)
    })
    .await
    .unwrap_or_else(|join| {
        Err(Error::Io {
            action: "writing results in",
            path: dir.path().to_path_buf(),
            source: std::io::Error::other(join.to_string()),
        })
    })
}
