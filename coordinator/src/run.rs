//! `coordinator run`, `check` and `report`: the sweep from file to results.
//!
//! `run` validates the whole sweep file first (nothing starts on a bad file), binds the gRPC
//! listener (loopback on a free port unless `--listen`), starts local `worker join`
//! processes that hold a pipe to it on stdin (they exit when it goes away), follows the
//! scheduler's progress, flushes the Parquet results, and writes the report.

use crate::cli::{CheckArgs, RunArgs};
use crate::scheduler::{Progress, QueuedTrial, TrialStatus};
use crate::security::{self, ServerSecurity};
use crate::service::{self, ServiceConfig, Shared};
use crate::sweep::{self, Sweep};
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// Logs go to stderr; `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` gives JSON lines.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `coordinator check`: validate and print the trial table.
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let sweep = sweep::load(&args.sweep, &args.overrides.to_overrides())?;
    if args.quiet {
        println!(
            "{}: {} trials, {} epochs, {} duplicates dropped",
            sweep.name,
            sweep.trials.len(),
            sweep.total_epochs(),
            sweep.duplicates_dropped
        );
    } else {
        print!("{}", sweep::render_table(&sweep));
    }
    Ok(ExitCode::SUCCESS)
}

/// `coordinator report RESULTS`.
pub fn report(results: &Path) -> Result<ExitCode> {
    let summary = report::generate(results, &report::ReportOptions::default())
        .with_context(|| format!("building the report of {}", results.display()))?;
    println!("{}", summary.text);
    Ok(ExitCode::SUCCESS)
}

/// The folder a sweep's results go to.
pub fn results_dir(args: &RunArgs, sweep: &Sweep) -> PathBuf {
    args.results
        .clone()
        .unwrap_or_else(|| Path::new("results").join(&sweep.name))
}

/// `coordinator run`.
pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let sweep = sweep::load(&args.sweep, &args.overrides.to_overrides())?;
    // Before anything is written or started: a non-loopback address needs a token, and every
    // security file is read and checked now.
    let listen = args
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let security = ServerSecurity::from_options(&args.security.to_options(), listen)?;
    let results = results_dir(&args, &sweep);
    prepare_results(&results, args.fresh)?;
    std::fs::create_dir_all(&results)
        .with_context(|| format!("creating results folder {}", results.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local_workers = args.local_workers.unwrap_or(cores);
    if local_workers == 0 && args.listen.is_none() {
        bail!("--local-workers 0 without --listen: no worker could ever join");
    }
    let threads = args
        .threads
        .unwrap_or((cores / local_workers.max(1)).max(1));
    if !(args.lease_timeout.is_finite() && args.lease_timeout > 0.0) {
        bail!(
            "--lease-timeout must be a number of seconds > 0, got {}",
            args.lease_timeout
        );
    }

    let local = LocalWorkerSecurity::new(&args, &security, local_workers)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;

    let mut config = ServiceConfig::new(sweep.name.clone(), results.clone());
    config.lease_timeout = Duration::from_secs_f64(args.lease_timeout);
    config.heartbeat_interval = (config.lease_timeout / 5).max(Duration::from_millis(50));
    config.max_attempts = args.max_attempts.max(1);
    config.retry_failed = args.retry_failed;
    let trials: Vec<QueuedTrial> = sweep
        .trials
        .iter()
        .map(|t| QueuedTrial {
            id: t.id.clone(),
            experiment: t.experiment.clone(),
            hparams: t.hparams.clone(),
        })
        .collect();
    let shared = Shared::new(trials, config)?;
    let restored = shared.restored();
    if shared.incarnation() > 1 {
        eprintln!(
            "resuming {}: {} finished, {} failed{}, {} to continue, {} new",
            results.display(),
            restored.finished,
            restored.failed + restored.retried,
            if restored.retried > 0 {
                format!(" ({} retried)", restored.retried)
            } else {
                String::new()
            },
            restored.resumed,
            restored.new
        );
    }
    info!(
        sweep = %sweep.name,
        trials = sweep.trials.len(),
        epochs = sweep.total_epochs(),
        results = %results.display(),
        %addr,
        "sweep starting"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service::serve(
        listener,
        Arc::clone(&shared),
        security,
        async {
            let _ = stop_rx.await;
        },
    ));

    let started = Instant::now();
    let mut workers = spawn_local_workers(&args, local_workers, threads, addr, &results, &local)?;
    let outcome = follow(&args, &sweep, &shared, &mut workers, started).await;
    if outcome.is_ok() {
        // Idle workers ask again every retry_after: keep serving until each live one was
        // told `Done` (a remote worker would otherwise find the port closed and exit with an
        // error after --reconnect-timeout), but not for long.
        let linger = Instant::now() + shared.retry_after() * 3;
        while !shared.every_worker_told_done() && Instant::now() < linger {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    shared
        .finish_results()
        .await
        .context("writing the final results")?;
    let _ = stop_tx.send(());
    // Workers that are still there got `Done` or will see their stdin close.
    for (_, child) in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let _ = child.start_kill();
    }
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "server stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "server task failed"),
        _ => {}
    }
    outcome?;

    let elapsed = started.elapsed();
    let progress = shared.progress();
    println!(
        "sweep {}: {} trials finished, {} failed in {:.1}s; results in {}",
        sweep.name,
        progress.finished,
        progress.failed,
        elapsed.as_secs_f64(),
        results.display()
    );
    for r in shared
        .records()
        .iter()
        .filter(|r| r.status == TrialStatus::Failed)
    {
        println!(
            "  failed: {} ({}): {}",
            r.trial_id,
            r.hparams.label(),
            r.last_error.as_deref().unwrap_or("no reason given")
        );
    }
    if !args.no_report && progress.finished > 0 {
        let results2 = results.clone();
        match tokio::task::spawn_blocking(move || {
            report::generate(&results2, &report::ReportOptions::default())
        })
        .await?
        {
            Ok(summary) => println!("{}", summary.text),
            Err(e) => warn!(error = %e, "the report could not be built"),
        }
    }
    Ok(if progress.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What a run leaves in its results folder.
const RUN_OUTPUTS: [&str; 6] = [
    crate::store::STATE_FILE,
    crate::results::TRIALS_FILE,
    crate::results::EPOCHS_DIR,
    "artifacts",
    "report",
    "logs",
];

/// With `fresh`, deletes an earlier run's outputs. Without it a folder with a state file is
/// resumed (the state checks that it is the same sweep), and a folder with results but no
/// state (written by a version without resume, or damaged) is refused: its epochs would mix
/// with this run's.
fn prepare_results(results: &Path, fresh: bool) -> Result<()> {
    let existing: Vec<&str> = RUN_OUTPUTS
        .into_iter()
        .filter(|o| results.join(o).exists())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    if !fresh {
        if results.join(crate::store::STATE_FILE).is_file() {
            return Ok(());
        }
        bail!(
            "{} holds results ({}) but no {} to resume from; pass --fresh to delete them and \
             start over, or --results DIR to write elsewhere",
            results.display(),
            existing.join(", "),
            crate::store::STATE_FILE
        );
    }
    for o in existing {
        let p = results.join(o);
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The worker binary: `--worker-bin`/`HYPERSWEEP_WORKER`, else `worker` beside this
/// executable, else `worker` on PATH.
fn worker_binary(args: &RunArgs) -> PathBuf {
    if let Some(p) = &args.worker_bin {
        return p.clone();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("worker");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("worker")
}

/// What local workers (which connect to 127.0.0.1) need to pass the server's security: its
/// token file, and with TLS a CA to trust and a name the certificate is valid for.
///
/// With TLS they trust the `--tls-cert` file itself: that works for a self-signed certificate,
/// and for a CA-issued one when the file holds the chain up to its issuer (a "fullchain").
/// Otherwise give `--worker-arg=--tls-ca=CA.pem`. They verify the certificate for 127.0.0.1,
/// else for `localhost`; a certificate valid for neither needs
/// `--worker-arg=--tls-domain=NAME` (one of its names). Client certificates
/// (`--tls-client-ca`) are the user's to give: `--worker-arg=--tls-cert=PEM
/// --worker-arg=--tls-key=PEM`. Whatever `--worker-arg` already sets is not set again.
#[derive(Debug)]
struct LocalWorkerSecurity {
    scheme: &'static str,
    args: Vec<std::ffi::OsString>,
}

impl LocalWorkerSecurity {
    fn new(args: &RunArgs, security: &ServerSecurity, n: usize) -> Result<LocalWorkerSecurity> {
        let given = |flag: &str| {
            args.worker_arg
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut out = LocalWorkerSecurity {
            scheme: if security.has_tls() { "https" } else { "http" },
            args: Vec::new(),
        };
        if n == 0 {
            return Ok(out);
        }
        if let Some(token) = &args.security.token_file {
            if !given("--token-file") {
                out.args.push("--token-file".into());
                out.args.push(absolute(token)?.into());
            }
        }
        if let Some(cert) = args
            .security
            .tls_cert
            .as_ref()
            .filter(|_| security.has_tls())
        {
            if !given("--tls-ca") {
                out.args.push("--tls-ca".into());
                out.args.push(absolute(cert)?.into());
            }
            if !given("--tls-domain") {
                let pem = std::fs::read(cert)
                    .with_context(|| format!("--tls-cert {}", cert.display()))?;
                match security::local_tls_name(&pem) {
                    Some(None) => {}
                    Some(Some(name)) => {
                        out.args.push("--tls-domain".into());
                        out.args.push(name.into());
                    }
                    None => bail!(
                        "--tls-cert {} is valid for neither 127.0.0.1 nor localhost, so local                          workers (which connect to 127.0.0.1) cannot verify it: pass                          --worker-arg=--tls-domain=NAME with a name of the certificate, add                          127.0.0.1 to its subjectAltName, or use --local-workers 0",
                        cert.display()
                    ),
                }
            }
            if security.requires_client_certs() && !(given("--tls-cert") && given("--tls-key")) {
                bail!(
                    "--tls-client-ca requires client certificates, and local workers have none:                      pass --worker-arg=--tls-cert=PEM --worker-arg=--tls-key=PEM (a certificate                      signed by the client CA), or use --local-workers 0"
                );
            }
        }
        Ok(out)
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

fn spawn_local_workers(
    args: &RunArgs,
    n: usize,
    threads: usize,
    addr: SocketAddr,
    results: &Path,
    security: &LocalWorkerSecurity,
) -> Result<Vec<(PathBuf, Child)>> {
    let bin = worker_binary(args);
    let logs = results.join("logs");
    if n > 0 {
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    }
    let url = format!("{}://127.0.0.1:{}", security.scheme, addr.port());
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let log_path = logs.join(format!("worker-{}.log", i + 1));
        // Appended: a resumed run keeps the logs of the runs before it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["join", "--coordinator", &url, "--slots", "1"])
            .args(["--threads", &threads.to_string(), "--device", &args.device])
            .args(["--name", &format!("local-{}", i + 1), "--exit-on-stdin-eof"])
            // One libtorch/OpenMP pool per worker, sized by --threads.
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(d) = &args.data.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        if let Some(n) = args.data.train_limit {
            cmd.args(["--train-limit", &n.to_string()]);
        }
        if let Some(n) = args.data.test_limit {
            cmd.args(["--test-limit", &n.to_string()]);
        }
        // Files only: the token never appears on a command line.
        cmd.args(&security.args);
        cmd.args(&args.worker_arg);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting local worker {} ({}); build it with `cargo build --release` or pass --worker-bin",
                i + 1,
                bin.display()
            )
        })?;
        children.push((log_path, child));
    }
    info!(workers = n, threads, bin = %bin.display(), "local workers started");
    Ok(children)
}

/// Follows the sweep until every trial is finished or failed. Fails when no worker can
/// finish it: every local worker exited and no remote one may join.
async fn follow(
    args: &RunArgs,
    sweep: &Sweep,
    shared: &Arc<Shared>,
    workers: &mut [(PathBuf, Child)],
    started: Instant,
) -> Result<()> {
    let mut rx = shared.subscribe();
    let total_epochs = sweep.total_epochs();
    let mut display = Display::new(args.plain, total_epochs, sweep.trials.len());
    let mut exited = vec![false; workers.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // The sweep changes on every report; a snapshot walks every trial, so it is taken (and
    // drawn) at most every DRAW_EVERY: a sweep of many short trials is not slowed by its own
    // display. `is_done` is cheap and checked on every change.
    let mut last_draw: Option<Instant> = None;
    loop {
        rx.borrow_and_update();
        let done = shared.is_done();
        if !done && last_draw.is_some_and(|t| t.elapsed() < DRAW_EVERY) {
            tokio::select! {
                _ = tokio::time::sleep(DRAW_EVERY) => {}
                _ = &mut ctrl_c => {
                    display.finish(&shared.progress());
                    bail!("interrupted; finished epochs are in the results folder, run the same command to resume");
                }
            }
            continue;
        }
        last_draw = Some(Instant::now());
        let progress = shared.progress();
        display.update(&progress, progress.epochs_done, started);
        if progress.is_done() {
            display.finish(&progress);
            return Ok(());
        }
        for (i, (log, child)) in workers.iter_mut().enumerate() {
            if !exited[i] {
                if let Ok(Some(status)) = child.try_wait() {
                    exited[i] = true;
                    warn!(worker = i + 1, %status, log = %log.display(), "local worker exited");
                }
            }
        }
        if !workers.is_empty() && exited.iter().all(|&e| e) && args.listen.is_none() {
            display.finish(&progress);
            let tail = workers
                .last()
                .and_then(|(log, _)| std::fs::read_to_string(log).ok())
                .map(|t| {
                    t.lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            bail!(
                "every local worker exited before the sweep finished ({} of {} trials done); last lines of {}:\n{tail}",
                progress.finished + progress.failed,
                progress.total,
                workers.last().map(|(l, _)| l.display().to_string()).unwrap_or_default()
            );
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                display.finish(&progress);
                bail!("interrupted; finished epochs are in the results folder, run the same command to resume");
            }
        }
    }
}

/// Least time between two redraws of the progress display.
const DRAW_EVERY: Duration = Duration::from_millis(200);

/// Live progress bars on a terminal, plain log lines otherwise.
struct Display {
    bars: Option<(MultiProgress, ProgressBar, HashMap<String, ProgressBar>)>,
    last_log: Instant,
    last_counts: (usize, usize),
}

impl Display {
    fn new(plain: bool, total_epochs: u64, _trials: usize) -> Display {
        let bars = (!plain && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total_epochs));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {pos}/{len} epochs, {msg} (ETA {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            overall.set_prefix("sweep");
            (multi, overall, HashMap::new())
        });
        Display {
            bars,
            last_log: Instant::now(),
            last_counts: (0, 0),
        }
    }

    fn update(&mut self, p: &Progress, done_epochs: u64, started: Instant) {
        let counts = format!(
            "{} done, {} running, {} queued, {} failed",
            p.finished, p.running, p.queued, p.failed
        );
        if let Some((multi, overall, per_trial)) = &mut self.bars {
            overall.set_position(done_epochs);
            overall.set_message(counts);
            per_trial.retain(|id, bar| {
                let keep = p.running_trials.iter().any(|r| r.trial_id.as_str() == id);
                if !keep {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
                keep
            });
            for r in &p.running_trials {
                let bar = per_trial.entry(r.trial_id.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(u64::from(r.epochs)));
                    b.set_style(
                        ProgressStyle::with_template(
                            "  {prefix:<18} [{bar:20}] epoch {pos}/{len} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b.set_prefix(r.trial_id.to_string());
                    b
                });
                bar.set_position(u64::from(r.epoch));
                bar.set_message(format!("{} on {}", r.label, r.worker_name));
            }
        } else if (p.finished, p.failed) != self.last_counts
            || self.last_log.elapsed() >= Duration::from_secs(10)
        {
            self.last_counts = (p.finished, p.failed);
            self.last_log = Instant::now();
            let running: Vec<String> = p
                .running_trials
                .iter()
                .map(|r| format!("{} {}/{}", r.trial_id, r.epoch, r.epochs))
                .collect();
            info!(
                finished = p.finished,
                running = p.running,
                queued = p.queued,
                failed = p.failed,
                epochs = done_epochs,
                elapsed_s = started.elapsed().as_secs(),
                running_trials = %running.join(", "),
                "progress"
            );
        }
    }

    fn finish(&mut self, p: &Progress) {
        if let Some((multi, overall, per_trial)) = &mut self.bars {
            for bar in per_trial.values() {
                bar.finish_and_clear();
            }
            overall.finish_with_message(format!("{} done, {} failed", p.finished, p.failed));
            let _ = multi.clear();
        }
    }
}
