//! `loadgen`: many simulated workers against one coordinator, for a fixed time.
//!
//! ```text
//! loadgen --coordinator http://127.0.0.1:50051 --workers 200 --seconds 60 \
//!     [--token-file FILE] [--checkpoint-bytes 1024] [--acked-out acked.csv]
//! ```
//!
//! Each simulated worker is what `worker join --noop` is, without a process of its own: its
//! own gRPC connection (HTTP/2 over TCP), `Register`, then `Lease` → one `ReportEpoch` per
//! epoch (valid, finite metrics and a fake checkpoint of `--checkpoint-bytes` bytes, which
//! the coordinator commits with the epoch) → `Finish`, and a `Heartbeat` at the interval the
//! coordinator asks for. Connecting and registering happen before the clock starts. When the
//! time is up a worker takes no new lease but completes the trial it holds (its remaining
//! epochs and `Finish`), so every lease taken ends in `Finish` unless a call failed.
//!
//! What the JSON summary line (stdout) counts:
//! - `reports_acked`: `ReportEpoch` calls answered OK with `duplicate: false`, i.e. a new
//!   (trial, epoch) row the coordinator made durable before answering. Those after the
//!   deadline (completing held trials) are included; so is their time in `elapsed_s`.
//! - `duplicates`: answered `duplicate: true` (nothing written); `double_acked`: a key
//!   acknowledged as new twice (a coordinator bug; always 0).
//! - `errors`: every call that failed (register, lease, report, finish, heartbeat).
//! - `p50_ms`, `p99_ms`, `max_ms`: `ReportEpoch` latency seen by the client, request to
//!   answer; `lease_p50_ms`, `lease_p99_ms` the same for `Lease`.
//! - `elapsed_s`: from the start of the timed phase until the last worker stopped;
//!   `reports_per_s = reports_acked / elapsed_s`.
//! - `done`: some worker was told the sweep is done (the sweep ran out of trials).
//!
//! With `--acked-out FILE` every acknowledged (trial_id, epoch) is written there as CSV (with
//! a header), so a test can check each one is in the coordinator's Parquet exactly once.
//! Exits 1 when any call failed (after printing the summary).

use anyhow::{bail, Context, Result};
use clap::Parser;
use proto::pb::{self, coordinator_client::CoordinatorClient, lease_response::Outcome};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Simulated workers leasing and reporting against one coordinator for a fixed time"
)]
struct Args {
    /// The coordinator, e.g. http://127.0.0.1:50051 (plaintext).
    #[arg(long, value_name = "URL")]
    coordinator: String,
    /// Simulated workers, each with its own connection.
    #[arg(long, default_value_t = 200)]
    workers: usize,
    /// Length of the timed phase; then workers complete the trial they hold and stop.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// File holding the coordinator's shared token.
    #[arg(long, value_name = "FILE", env = "SWEEP_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Size of the fake checkpoint sent with every report (0: none).
    #[arg(long, default_value_t = 1024)]
    checkpoint_bytes: usize,
    /// Write every acknowledged (trial_id, epoch) here, as CSV with a header.
    #[arg(long, value_name = "FILE")]
    acked_out: Option<PathBuf>,
    /// Keep trying to connect for this long (the coordinator may still be starting).
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
}

/// `authorization: Bearer <token>` on every call, as `worker join` sends it.
#[derive(Clone)]
struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = CoordinatorClient<InterceptedService<Channel, Token>>;

/// What one simulated worker did.
#[derive(Default)]
struct Stats {
    leases: u64,
    finishes: u64,
    reports_acked: u64,
    duplicates: u64,
    waits: u64,
    done: bool,
    errors: u64,
    error_samples: Vec<String>,
    report_us: Vec<u64>,
    lease_us: Vec<u64>,
    acked: Vec<(String, u32)>,
}

impl Stats {
    fn error(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(format!("{what}: {e}"));
        }
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Plausible, valid metrics: accuracies in [0, 1], finite non-negative losses.
fn metrics(epoch: u32, epochs: u32, worker: usize) -> pb::EpochMetrics {
    let acc = 0.1 + 0.8 * f64::from(epoch) / f64::from(epochs.max(1));
    let jitter = (worker % 7) as f64 * 0.001;
    let loss = 2.3 * (1.0 - acc) + 0.05 + jitter;
    pb::EpochMetrics {
        epoch,
        train_loss: loss,
        train_acc: acc,
        val_loss: loss + 0.01,
        val_acc: (acc - 0.01).max(0.0),
        test_loss: loss + 0.02,
        test_acc: (acc - 0.02).max(0.0),
        seconds: 0.001,
    }
}

/// A fake checkpoint: opaque bytes to the coordinator, which stores them with the epoch.
fn checkpoint(bytes: usize, worker: usize, epoch: u32) -> Vec<u8> {
    (0..bytes)
        .map(|i| (i as u64 ^ worker as u64 ^ u64::from(epoch)) as u8)
        .collect()
}

async fn connect(url: &str, token: &Token, patience: Duration) -> Result<Client> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("coordinator URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let start = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(CoordinatorClient::with_interceptor(channel, token.clone())
                    .max_decoding_message_size(64 << 20))
            }
            Err(_) if start.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
        }
    }
}

async fn register(client: &mut Client, i: usize) -> Result<(String, Duration), tonic::Status> {
    let reg = client
        .register(pb::RegisterRequest {
            name: format!("load-{i}"),
            device: "cpu".into(),
            slots: 1,
            threads: 1,
            version: "loadgen".into(),
            protocol: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await?
        .into_inner();
    let every = Duration::from_millis(u64::from(reg.heartbeat_interval_ms.max(50)));
    Ok((reg.worker_id, every))
}

/// Heartbeats for whatever trial the worker holds, until aborted.
async fn heartbeat(
    mut client: Client,
    worker_id: String,
    every: Duration,
    current: Arc<Mutex<Option<pb::TrialAttempt>>>,
    errors: Arc<AtomicU64>,
    beats: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let running: Vec<pb::TrialAttempt> =
            current.lock().expect("current").iter().cloned().collect();
        let sent = client
            .heartbeat(pb::HeartbeatRequest {
                worker_id: worker_id.clone(),
                running,
                ..Default::default()
            })
            .await;
        match sent {
            Ok(_) => beats.fetch_add(1, Ordering::Relaxed),
            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct Shared {
    deadline: Instant,
    checkpoint_bytes: usize,
    heartbeat_errors: Arc<AtomicU64>,
    heartbeats: Arc<AtomicU64>,
}

/// One simulated worker, registered, until the deadline (and the trial it then holds).
async fn simulate(
    i: usize,
    mut client: Client,
    worker_id: String,
    every: Duration,
    shared: Arc<Shared>,
) -> Stats {
    let mut s = Stats::default();
    let current = Arc::new(Mutex::new(None));
    let hb = tokio::spawn(heartbeat(
        client.clone(),
        worker_id.clone(),
        every,
        current.clone(),
        shared.heartbeat_errors.clone(),
        shared.heartbeats.clone(),
    ));
    while Instant::now() < shared.deadline {
        let t = Instant::now();
        let leased = client
            .lease(pb::LeaseRequest {
                worker_id: worker_id.clone(),
            })
            .await;
        s.lease_us.push(micros(t));
        let outcome = match leased {
            Ok(r) => r.into_inner().outcome,
            Err(e) => {
                s.error("lease", e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match outcome {
            Some(Outcome::Lease(lease)) => {
                s.leases += 1;
                run_trial(i, &mut client, &worker_id, lease, &current, &shared, &mut s).await;
            }
            Some(Outcome::Wait(w)) => {
                s.waits += 1;
                let left = shared.deadline.saturating_duration_since(Instant::now());
                let wait = Duration::from_millis(u64::from(w.retry_after_ms.clamp(10, 5000)));
                tokio::time::sleep(wait.min(left)).await;
            }
            Some(Outcome::Done(_)) | None => {
                s.done = true;
                break;
            }
        }
    }
    hb.abort();
    s
}

async fn run_trial(
    i: usize,
    client: &mut Client,
    worker_id: &str,
    lease: pb::Lease,
    current: &Mutex<Option<pb::TrialAttempt>>,
    shared: &Shared,
    s: &mut Stats,
) {
    let Some(epochs) = lease.hparams.as_ref().map(|h| h.epochs) else {
        s.error("lease", "a lease without hyperparameters");
        return;
    };
    let ta = pb::TrialAttempt {
        trial_id: lease.trial_id.clone(),
        attempt: lease.attempt,
    };
    *current.lock().expect("current") = Some(ta.clone());
    let mut complete = true;
    for epoch in lease.start_epoch.saturating_add(1)..=epochs {
        let req = pb::ReportEpochRequest {
            worker_id: worker_id.to_owned(),
            trial: Some(ta.clone()),
            metrics: Some(metrics(epoch, epochs, i)),
            checkpoint: checkpoint(shared.checkpoint_bytes, i, epoch),
            threads: 1,
            ..Default::default()
        };
        let t = Instant::now();
        let sent = client.report_epoch(req).await;
        s.report_us.push(micros(t));
        match sent {
            Ok(r) if r.get_ref().duplicate => s.duplicates += 1,
            Ok(_) => {
                s.reports_acked += 1;
                s.acked.push((ta.trial_id.clone(), epoch));
            }
            Err(e) => {
                s.error("report", e);
                complete = false;
                break;
            }
        }
    }
    if complete {
        let finished = client
            .finish(pb::FinishRequest {
                worker_id: worker_id.to_owned(),
                trial: Some(ta),
            })
            .await;
        match finished {
            Ok(_) => s.finishes += 1,
            Err(e) => s.error("finish", e),
        }
    }
    *current.lock().expect("current") = None;
}

/// The `q` quantile (nearest rank) of sorted microseconds, in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.workers == 0 || !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--workers must be at least 1 and --seconds a number > 0");
    }
    let token = read_token(args.token_file.as_deref())?;
    // Connect and register every worker before the clock starts.
    let (ready, setup_errors) = register_all(&args, &token).await;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + Duration::from_secs_f64(args.seconds),
        checkpoint_bytes: args.checkpoint_bytes,
        heartbeat_errors: Arc::default(),
        heartbeats: Arc::default(),
    });
    let mut running = Vec::with_capacity(ready.len());
    for (i, (client, id, every)) in ready {
        running.push(tokio::spawn(simulate(i, client, id, every, shared.clone())));
    }
    let mut all = Vec::with_capacity(running.len());
    for h in running {
        all.push(h.await.expect("worker task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(path) = &args.acked_out {
        write_acked(path, &all)?;
    }
    for e in setup_errors
        .iter()
        .chain(all.iter().flat_map(|s| s.error_samples.iter()))
        .take(10)
    {
        eprintln!("loadgen: error: {e}");
    }
    let heartbeat_errors = shared.heartbeat_errors.load(Ordering::Relaxed);
    if heartbeat_errors > 0 {
        eprintln!("loadgen: {heartbeat_errors} heartbeats failed");
    }
    let failures = heartbeat_errors + setup_errors.len() as u64;
    let summary = summarize(&args, &all, &shared, elapsed, failures);
    println!("{summary}");
    if summary["errors"].as_u64() != Some(0) || summary["double_acked"].as_u64() != Some(0) {
        std::process::exit(1);
    }
    Ok(())
}

/// The `authorization` header of every call, from `--token-file`.
fn read_token(path: Option<&std::path::Path>) -> Result<Token> {
    let Some(path) = path else {
        return Ok(Token(None));
    };
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = MetadataValue::try_from(format!("Bearer {}", raw.trim()))
        .context("the token must be printable ASCII")?;
    Ok(Token(Some(value)))
}

/// A registered worker: its client, id and heartbeat interval.
type Ready = (usize, (Client, String, Duration));

/// Connects and registers `--workers` simulated workers at once; returns those that are
/// ready and why the others are not.
async fn register_all(args: &Args, token: &Token) -> (Vec<Ready>, Vec<String>) {
    let patience = Duration::from_secs_f64(args.connect_timeout.max(0.0));
    let mut setups = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        let (url, token) = (args.coordinator.clone(), token.clone());
        setups.push(tokio::spawn(async move {
            let mut client = connect(&url, &token, patience).await?;
            let (id, every) = register(&mut client, i)
                .await
                .map_err(|s| anyhow::anyhow!("register: {} {}", s.code(), s.message()))?;
            Ok::<_, anyhow::Error>((client, id, every))
        }));
    }
    let mut ready = Vec::with_capacity(args.workers);
    let mut errors = Vec::new();
    for (i, h) in setups.into_iter().enumerate() {
        match h.await.expect("setup task") {
            Ok(r) => ready.push((i, r)),
            Err(e) => errors.push(format!("worker {i}: {e:#}")),
        }
    }
    (ready, errors)
}

/// `--acked-out`: every acknowledged (trial, epoch), as CSV.
fn write_acked(path: &std::path::Path, all: &[Stats]) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(out, "trial_id,epoch")?;
    for s in all {
        for (trial, epoch) in &s.acked {
            writeln!(out, "{trial},{epoch}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The one JSON line loadgen prints: counts, rates and latency quantiles.
fn summarize(
    args: &Args,
    all: &[Stats],
    shared: &Shared,
    elapsed: f64,
    other_errors: u64,
) -> serde_json::Value {
    let sum = |f: fn(&Stats) -> u64| all.iter().map(f).sum::<u64>();
    let acked = sum(|s| s.reports_acked);
    let sorted = |f: fn(&Stats) -> &Vec<u64>| {
        let mut v: Vec<u64> = all.iter().flat_map(|s| f(s).iter().copied()).collect();
        v.sort_unstable();
        v
    };
    let (report_us, lease_us) = (sorted(|s| &s.report_us), sorted(|s| &s.lease_us));
    let mut keys = HashSet::with_capacity(acked as usize);
    let double_acked = all
        .iter()
        .flat_map(|s| &s.acked)
        .filter(|k| !keys.insert(*k))
        .count();
    serde_json::json!({
        "workers": args.workers,
        "seconds": args.seconds,
        "elapsed_s": round3(elapsed),
        "reports_acked": acked,
        "reports_per_s": round3(acked as f64 / elapsed),
        "leases": sum(|s| s.leases),
        "finishes": sum(|s| s.finishes),
        "duplicates": sum(|s| s.duplicates),
        "double_acked": double_acked,
        "waits": sum(|s| s.waits),
        "heartbeats": shared.heartbeats.load(Ordering::Relaxed),
        "p50_ms": quantile_ms(&report_us, 0.50),
        "p99_ms": quantile_ms(&report_us, 0.99),
        "max_ms": quantile_ms(&report_us, 1.0),
        "lease_p50_ms": quantile_ms(&lease_us, 0.50),
        "lease_p99_ms": quantile_ms(&lease_us, 0.99),
        "checkpoint_bytes": args.checkpoint_bytes,
        "done": all.iter().any(|s| s.done),
        "errors": sum(|s| s.errors) + other_errors,
    })
}
