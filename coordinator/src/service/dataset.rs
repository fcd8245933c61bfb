//! `FetchDataset` (issue 10): the coordinator's copy of Fashion-MNIST, streamed in chunks to
//! workers that have none, on the same listener, token and TLS as every other call.
//!
//! The coordinator finds its copy as a worker does (`dataset::locate`, in `coordinator run`)
//! and verifies it once, on the first fetch (magic, counts, length, MD5 of the uncompressed
//! bytes: `dataset::read_idx`), so that a damaged copy is refused with its reason instead of
//! being handed to every worker. Files go out as the coordinator keeps them (`.gz` or raw):
//! the worker checks the size, then the MD5 of the uncompressed bytes, as for any copy.
//!
//! [`DatasetServer::bytes_served`] counts what was sent (for the metrics); the test knob
//! [`FAULT_ENV`] cuts or stalls every stream after N chunks, so that the tests can break a
//! download in the middle deterministically.

use proto::pb;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Test knob, never for production: `cut:N` ends every dataset stream with UNAVAILABLE after
/// N chunks, `stall:N` stops sending after N chunks and holds the stream open until the worker
/// goes away. Read once when the service starts.
pub const FAULT_ENV: &str = "HYPERSWEEP_TEST_DATASET_FAULT";

/// What [`FAULT_ENV`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Cut(u64),
    Stall(u64),
}

impl Fault {
    /// `cut:N` or `stall:N`; anything else is `None` with a warning.
    pub fn parse(value: &str) -> Option<Fault> {
        let parsed = match value.split_once(':') {
            Some(("cut", n)) => n.parse().ok().map(Fault::Cut),
            Some(("stall", n)) => n.parse().ok().map(Fault::Stall),
            _ => None,
        };
        if parsed.is_none() {
            warn!(value, "ignoring {FAULT_ENV}: expected cut:N or stall:N");
        }
        parsed
    }

    fn after(self) -> u64 {
        match self {
            Fault::Cut(n) | Fault::Stall(n) => n,
        }
    }
}

/// One verified file, ready to send.
#[derive(Debug, Clone)]
struct Served {
    /// `train-images-idx3-ubyte`, ...
    stem: &'static str,
    /// The name as kept: the stem, or the stem + `.gz`.
    name: String,
    path: PathBuf,
    size: u64,
}

/// The coordinator's copy of Fashion-MNIST and what was served of it.
pub struct DatasetServer {
    /// Where `coordinator run` found the data; `None`: it found none.
    dir: Option<PathBuf>,
    /// The four files once verified, or why they cannot be served.
    verified: tokio::sync::OnceCell<Result<Vec<Served>, String>>,
    bytes_served: AtomicU64,
    fault: Option<Fault>,
}

impl DatasetServer {
    /// Serves the copy in `dir` (`None`: every fetch is refused, saying what to do), with the
    /// test knob [`FAULT_ENV`] read from the environment.
    pub fn new(dir: Option<PathBuf>) -> DatasetServer {
        let fault = std::env::var(FAULT_ENV).ok().and_then(|v| Fault::parse(&v));
        if let Some(fault) = fault {
            warn!(
                ?fault,
                "test knob {FAULT_ENV} set: dataset streams will break"
            );
        }
        DatasetServer {
            dir,
            verified: tokio::sync::OnceCell::new(),
            bytes_served: AtomicU64::new(0),
            fault,
        }
    }

    /// Bytes of Fashion-MNIST sent to workers since the coordinator started (what
    /// `hypersweep_dataset_bytes_served_total` exports).
    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::Relaxed)
    }

    /// The four files, verified on the first call.
    async fn files(&self) -> Result<&[Served], Status> {
        let verified = self
            .verified
            .get_or_init(|| async {
                let Some(dir) = self.dir.clone() else {
                    return Err(
                        "this coordinator has no Fashion-MNIST to send (it looked where \
                                workers look: --data-dir, FASHION_MNIST_DIR, data/fashion-mnist, \
                                /usr/share/datasets/fashion-mnist); give the coordinator \
                                --data-dir DIR, or the worker its own copy with --data-dir"
                            .to_owned(),
                    );
                };
                tokio::task::spawn_blocking(move || verify(&dir))
                    .await
                    .unwrap_or_else(|e| Err(format!("verifying the dataset: {e}")))
            })
            .await;
        verified
            .as_deref()
            .map_err(|why| Status::failed_precondition(why.clone()))
    }

    /// Starts streaming the files `request` names (all four when it names none) to `peer`.
    pub async fn fetch(
        self: &Arc<Self>,
        request: pb::FetchDatasetRequest,
        peer: Option<SocketAddr>,
    ) -> Result<mpsc::Receiver<Result<pb::DatasetChunk, Status>>, Status> {
        let all = self.files().await?;
        let wanted: Vec<Served> = if request.files.is_empty() {
            all.to_vec()
        } else {
            let mut wanted = Vec::new();
            for stem in &request.files {
                let file = all.iter().find(|f| f.stem == stem).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "no dataset file {:?}; the files are {}",
                        super::validate::clip(stem, 64),
                        all.iter().map(|f| f.stem).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if !wanted.iter().any(|w: &Served| w.stem == file.stem) {
                    wanted.push(file.clone());
                }
            }
            wanted
        };
        let (tx, rx) = mpsc::channel(4);
        let server = Arc::clone(self);
        tokio::spawn(async move { server.send(wanted, tx, peer).await });
        Ok(rx)
    }

    /// Sends `files` down `tx`, chunk by chunk, counting the bytes; logs how it ended.
    async fn send(
        &self,
        files: Vec<Served>,
        tx: mpsc::Sender<Result<pb::DatasetChunk, Status>>,
        peer: Option<SocketAddr>,
    ) {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        let mut sent = Sent::default();
        match self.send_files(&files, &tx, &mut sent).await {
            Ok(()) => info!(peer, files = ?names, bytes = sent.bytes, "dataset sent"),
            Err(why) => {
                warn!(peer, files = ?names, bytes = sent.bytes, %why, "dataset stream ended early")
            }
        }
    }

    async fn send_files(
        &self,
        files: &[Served],
        tx: &mpsc::Sender<Result<pb::DatasetChunk, Status>>,
        sent: &mut Sent,
    ) -> Result<(), String> {
        for f in files {
            let mut file = tokio::fs::File::open(&f.path)
                .await
                .map_err(|e| format!("{}: {e}", f.path.display()))?;
            let mut first = true;
            let mut left = f.size;
            while first || left > 0 {
                self.knob(tx, sent.chunks).await?;
                let mut data = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
                file.read_exact(&mut data)
                    .await
                    .map_err(|e| format!("{}: {e}", f.path.display()))?;
                let len = data.len() as u64;
                let chunk = pb::DatasetChunk {
                    name: if first { f.name.clone() } else { String::new() },
                    size: if first { f.size } else { 0 },
                    data,
                };
                tx.send(Ok(chunk))
                    .await
                    .map_err(|_| "the worker went away".to_owned())?;
                self.bytes_served.fetch_add(len, Ordering::Relaxed);
                sent.bytes += len;
                sent.chunks += 1;
                left -= len;
                first = false;
            }
        }
        Ok(())
    }

    /// The test knob, before chunk number `chunks` (0-based) goes out.
    async fn knob(
        &self,
        tx: &mpsc::Sender<Result<pb::DatasetChunk, Status>>,
        chunks: u64,
    ) -> Result<(), String> {
        match self.fault {
            Some(fault) if chunks >= fault.after() => {
                let why = format!("{fault:?} by the test knob {FAULT_ENV}");
                if let Fault::Cut(_) = fault {
                    let _ = tx
                        .send(Err(Status::unavailable(format!("dataset stream {why}"))))
                        .await;
                } else {
                    tx.closed().await;
                }
                Err(why)
            }
            _ => Ok(()),
        }
    }
}

#[derive(Default)]
struct Sent {
    bytes: u64,
    chunks: u64,
}

/// The four files in `dir`, each verified (`dataset::read_idx`), or why they cannot be served.
fn verify(dir: &std::path::Path) -> Result<Vec<Served>, String> {
    let unusable = |e: &dyn std::fmt::Display| {
        format!(
            "this coordinator's copy of Fashion-MNIST in {} is unusable: {e}; replace it (bash \
             scripts/setup.sh data) or give the worker its own copy with --data-dir",
            dir.display()
        )
    };
    let mut files = Vec::new();
    for f in dataset::FILES {
        let path = dataset::file_path(dir, &f)
            .ok_or_else(|| unusable(&format!("{} is missing", f.stem)))?;
        dataset::read_idx(&path, &f).map_err(|e| unusable(&e))?;
        let size = std::fs::metadata(&path)
            .map_err(|e| unusable(&format!("{}: {e}", path.display())))?
            .len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(Served {
            stem: f.stem,
            name,
            path,
            size,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knob_parses_cut_and_stall_and_nothing_else() {
        assert_eq!(Fault::parse("cut:3"), Some(Fault::Cut(3)));
        assert_eq!(Fault::parse("stall:0"), Some(Fault::Stall(0)));
        for bad in ["", "cut", "cut:x", "slow:3"] {
            assert_eq!(Fault::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn without_a_copy_a_fetch_is_refused_saying_what_to_do() {
        let server = Arc::new(DatasetServer::new(None));
        let err = server
            .fetch(pb::FetchDatasetRequest::default(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("--data-dir"), "{}", err.message());
        assert_eq!(server.bytes_served(), 0);
    }

    #[tokio::test]
    async fn a_damaged_copy_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        for f in dataset::FILES {
            std::fs::write(dir.path().join(f.stem), b"not idx").unwrap();
        }
        let server = Arc::new(DatasetServer::new(Some(dir.path().to_path_buf())));
        let err = server
            .fetch(pb::FetchDatasetRequest::default(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("unusable"), "{}", err.message());
    }
}
