//! Fashion-MNIST for `worker join` (issue 10): found on this machine as before (`--data-dir`,
//! `FASHION_MNIST_DIR`, `data/fashion-mnist`, `/usr/share/datasets/fashion-mnist`), else taken
//! from the cache ([`dataset::cache`], `$XDG_CACHE_HOME/hypersweep/fashion-mnist`), else
//! fetched from the coordinator with `FetchDataset` into that cache.
//!
//! A folder the user named (`--data-dir`, `FASHION_MNIST_DIR`) wins and is never second-guessed:
//! without the files there the worker stops and says so. The data is loaded at the first trial
//! that trains, while its lease is held (a worker that runs only synthetic trials loads none):
//! a worker that can get no data fails that lease as retryable, not the trial's fault, and
//! exits with the reason. Every file is written under a temporary
//! name, its size and MD5 checked, then renamed (see [`dataset::cache`]); under the cache's lock,
//! so that the slots of one machine fetch one copy: the first fetches, the others wait and
//! verify what it left. A download cut in the middle is tried again (the files already whole
//! are kept), up to [`DAMAGED_TRIES`] times for a stream that ended early or arrived damaged, and
//! for as long as the reconnect budget allows when the link is down.

use crate::client::{classify, Failure};
use crate::connect::{Client, Connection};
use crate::{Error, Result};
use dataset::cache::{Cache, Check, Locked};
use dataset::{FashionMnist, IdxFile, FILES};
use proto::pb;
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Tries for a download that ended early or arrived damaged.
pub const DAMAGED_TRIES: u32 = 3;
/// Longest wait for the next chunk: a stream that stalls is cut and tried again.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds, fetches if need be, reads and verifies Fashion-MNIST; `rpc` is the connected
/// coordinator of `conn`, `budget` the reconnect budget.
pub async fn load(
    data: &dataset::cli::DataArgs,
    conn: &Connection,
    rpc: &Client,
    budget: Duration,
) -> Result<FashionMnist> {
    let explicit = data.data_dir.as_deref();
    let searched = match dataset::locate(explicit) {
        Ok(dir) => return blocking(move || Ok(dataset::load(&dir)?)).await,
        Err(dataset::Error::NotFound { searched }) if !dataset::is_pointed_to(explicit) => searched,
        Err(e) => return Err(e.into()),
    };
    let dir = dataset::cache::default_dir().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "Fashion-MNIST not found (looked in {searched}) and nowhere to cache a copy from \
             the coordinator: set HOME or XDG_CACHE_HOME, or give --data-dir DIR"
        ))
    })?;
    let cache = Cache::new(&dir);
    // Blocks while another slot of this machine holds the lock (it is fetching).
    let locked = blocking(move || Ok(cache.lock()?)).await?;
    let payloads = tokio::task::block_in_place(|| cached(&locked))?;
    let missing: Vec<IdxFile> = FILES
        .iter()
        .filter(|f| !payloads.iter().any(|(g, _)| g == *f))
        .copied()
        .collect();
    if missing.is_empty() {
        info!(dir = %dir.display(), "Fashion-MNIST from the cache");
    } else {
        info!(dir = %dir.display(), files = ?missing.iter().map(|f| f.stem).collect::<Vec<_>>(),
            "Fashion-MNIST not found here, fetching it from the coordinator");
    }
    let mut payloads = payloads;
    let started = Instant::now();
    let fetched = fetch(conn, rpc, &locked, &missing, budget).await?;
    if !missing.is_empty() {
        let bytes: u64 = fetched.iter().map(|(_, _, n)| n).sum();
        info!(bytes, seconds = started.elapsed().as_secs_f64(), dir = %dir.display(),
            "Fashion-MNIST fetched from the coordinator and verified");
    }
    payloads.extend(fetched.into_iter().map(|(f, p, _)| (f, p)));
    drop(locked);
    Ok(assemble(&dir, payloads))
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Panicked(e.to_string()))?
}

/// The cached files that verify; damaged ones are deleted (and said so).
fn cached(locked: &Locked) -> Result<Vec<(IdxFile, Vec<u8>)>> {
    let mut ok = Vec::new();
    for (f, check) in locked.check()? {
        match check {
            Check::Verified(payload) => ok.push((f, payload)),
            Check::Missing => {}
            Check::Deleted(why) => {
                warn!(file = f.stem, %why, "cached Fashion-MNIST file damaged, deleted; fetching it again")
            }
        }
    }
    Ok(ok)
}

/// The data set from its four payloads, in [`FILES`] order.
fn assemble(dir: &Path, mut payloads: Vec<(IdxFile, Vec<u8>)>) -> FashionMnist {
    let mut take = |f: &IdxFile| {
        let i = payloads
            .iter()
            .position(|(g, _)| g == f)
            .expect("every file is cached or fetched");
        payloads.swap_remove(i).1
    };
    FashionMnist::from_payloads(dir, FILES.map(|f| take(&f)))
}

/// Fetches `missing` into the cache, trying again after a cut or a damaged download; returns
/// each file's payload and size on the wire.
async fn fetch(
    conn: &Connection,
    rpc: &Client,
    locked: &Locked,
    missing: &[IdxFile],
    budget: Duration,
) -> Result<Vec<(IdxFile, Vec<u8>, u64)>> {
    let mut done: Vec<(IdxFile, Vec<u8>, u64)> = Vec::new();
    let started = Instant::now();
    let mut damaged = 0;
    let mut delay = Duration::from_millis(100);
    loop {
        let left: Vec<IdxFile> = missing
            .iter()
            .filter(|f| !done.iter().any(|(g, _, _)| g == *f))
            .copied()
            .collect();
        if left.is_empty() {
            return Ok(done);
        }
        let e = match fetch_once(conn, rpc.clone(), locked, &left, &mut done).await {
            Ok(()) => continue,
            Err(e) => e,
        };
        let again = match &e {
            Error::Data(_) => {
                damaged += 1;
                damaged < DAMAGED_TRIES
            }
            e => classify(e) == Failure::Transient && started.elapsed() < budget,
        };
        if !again {
            return Err(e);
        }
        warn!(error = %e, "fetching Fashion-MNIST failed, trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One `FetchDataset` call for `files`: each file written into the cache as its chunks come,
/// checked, renamed, and pushed onto `done` (so a retry asks only for the rest).
async fn fetch_once(
    conn: &Connection,
    mut rpc: Client,
    locked: &Locked,
    files: &[IdxFile],
    done: &mut Vec<(IdxFile, Vec<u8>, u64)>,
) -> Result<()> {
    let request = pb::FetchDatasetRequest {
        files: files.iter().map(|f| f.stem.to_owned()).collect(),
    };
    let mut stream = rpc
        .fetch_dataset(request)
        .await
        .map_err(|s| refused(conn, s))?
        .into_inner();
    let mut current: Option<(IdxFile, dataset::cache::Partial)> = None;
    loop {
        let next = tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                Error::Rpc(tonic::Status::deadline_exceeded(format!(
                    "no dataset bytes from the coordinator for {CHUNK_TIMEOUT:?}"
                )))
            })??;
        let Some(chunk) = next else { break };
        if !chunk.name.is_empty() {
            if let Some((f, partial)) = current.take() {
                let size = partial.written();
                done.push((f, tokio::task::block_in_place(|| partial.finish())?, size));
            }
            let f = files
                .iter()
                .find(|f| chunk.name == f.stem || chunk.name == format!("{}.gz", f.stem))
                .ok_or_else(|| {
                    Error::Rpc(tonic::Status::internal(format!(
                        "the coordinator sent {:?}, which was not asked for",
                        chunk.name
                    )))
                })?;
            current = Some((*f, locked.create(f, &chunk.name, chunk.size)?));
        }
        let Some((_, partial)) = current.as_mut() else {
            return Err(Error::Rpc(tonic::Status::internal(
                "the coordinator sent dataset bytes before naming their file",
            )));
        };
        tokio::task::block_in_place(|| partial.write(&chunk.data))?;
    }
    // The stream ended: the last file must be whole (`finish` checks its size).
    if let Some((f, partial)) = current.take() {
        let size = partial.written();
        done.push((f, tokio::task::block_in_place(|| partial.finish())?, size));
    }
    let missing: Vec<&str> = files
        .iter()
        .filter(|f| !done.iter().any(|(g, _, _)| g == *f))
        .map(|f| f.stem)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Rpc(tonic::Status::unavailable(format!(
            "the coordinator's dataset stream ended without {}",
            missing.join(", ")
        ))));
    }
    Ok(())
}

/// The error a refused `FetchDataset` stops the worker with, saying what to do.
fn refused(conn: &Connection, status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::FailedPrecondition => Error::Refused(format!(
            "this worker has no Fashion-MNIST, and the coordinator cannot send it: {}",
            status.message()
        )),
        tonic::Code::Unimplemented => Error::Refused(
            "this worker has no Fashion-MNIST, and the coordinator is too old to send it (it \
             speaks sweep.v1 protocol 1, without FetchDataset): give the worker --data-dir DIR \
             or FASHION_MNIST_DIR, or run a coordinator of this worker's release"
                .into(),
        ),
        // The first call: a wrong token or plaintext against TLS says what to check.
        _ => conn.register_error(status),
    }
}
