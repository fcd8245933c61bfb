//! `coordinator run SWEEP`: the sweep from file to results.
//!
//! It validates the whole sweep file and the security flags first (nothing is written or
//! started on bad input), prepares the results folder (resume, or `--fresh`), opens the
//! sweep's state, serves gRPC (loopback on a free port unless `--listen`), starts and watches
//! the local workers, follows the progress until every trial is finished or failed, flushes
//! the Parquet results, and writes the report.

use crate::cli::RunArgs;
use crate::local_workers::{LocalWorkerSecurity, LocalWorkers, Stuck};
use crate::metrics;
use crate::progress::{Display, DRAW_EVERY};
use crate::security::ServerSecurity;
use crate::service::{self, ServiceConfig, SweepState};
use crate::sweep::{self, Sweep};
use anyhow::{bail, Context, Result};
use results_format::{ResultsDir, TrialStatus};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The folder a sweep's results go to.
pub fn results_dir(args: &RunArgs, sweep: &Sweep) -> PathBuf {
    args.results
        .clone()
        .unwrap_or_else(|| Path::new("results").join(&sweep.name))
}

/// How many local workers, with how many libtorch threads each.
struct LocalPlan {
    workers: usize,
    threads: usize,
    /// The threads never change (`--threads` or `--pin-threads`); otherwise `threads` is
    /// what each trial starts with and the coordinator lends idle cores (issue 13).
    pinned: bool,
}

impl LocalPlan {
    /// One worker per core, the cores divided among them, unless the flags say otherwise.
    fn from_args(args: &RunArgs) -> Result<LocalPlan> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = args.local_workers.unwrap_or(cores);
        if workers == 0 && args.listen.is_none() {
            bail!("--local-workers 0 without --listen: no worker could ever join");
        }
        let threads = args.threads.unwrap_or((cores / workers.max(1)).max(1));
        Ok(LocalPlan {
            workers,
            threads,
            pinned: args.threads.is_some() || args.pin_threads,
        })
    }
}

fn service_config(args: &RunArgs, sweep: &Sweep, dir: &ResultsDir) -> Result<ServiceConfig> {
    if !(args.lease_timeout.is_finite() && args.lease_timeout > 0.0) {
        bail!(
            "--lease-timeout must be a number of seconds > 0, got {}",
            args.lease_timeout
        );
    }
    let mut config = ServiceConfig::new(sweep.name.clone(), dir.path());
    config.lease_timeout = Duration::from_secs_f64(args.lease_timeout);
    config.heartbeat_interval = (config.lease_timeout / 5).max(Duration::from_millis(50));
    config.max_attempts = args.max_attempts.max(1);
    config.retry_failed = args.retry_failed;
    config.dataset_dir = dataset_dir(args);
    config.pin_threads = args.pin_threads;
    Ok(config)
}

/// The Fashion-MNIST this coordinator serves to workers that have none (issue 10), found as a
/// worker finds its own. Without one it warns and runs on: sweeps that need no data (`--noop`
/// workers) still work, and workers with their own copy never ask.
fn dataset_dir(args: &RunArgs) -> Option<PathBuf> {
    match dataset::locate(args.data.data_dir.as_deref()) {
        Ok(dir) => {
            info!(dir = %dir.display(), "serving Fashion-MNIST to workers that have none");
            Some(dir)
        }
        Err(e) => {
            warn!(error = %e, "no Fashion-MNIST here: workers without their own copy will have \
                nothing to fetch (give --data-dir DIR, or run `bash scripts/setup.sh data`)");
            None
        }
    }
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
    if let Some(addr) = args.metrics_listen {
        security.check_listener("--metrics-listen", addr)?;
    }
    let plan = LocalPlan::from_args(&args)?;
    let dir = ResultsDir::new(results_dir(&args, &sweep));
    let config = service_config(&args, &sweep, &dir)?;
    let local_security = LocalWorkerSecurity::new(&args, &security, plan.workers)?;
    prepare_results(&dir, args.fresh)?;

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let side = SideListeners::bind(&args).await?;
    let state = SweepState::open_plan(scheduler_plan(&sweep), config)?;
    announce(&sweep, &state, &dir, addr);

    let side = side.spawn(&state, &security);
    let server = service::spawn(listener, Arc::clone(&state), security);
    let started = Instant::now();
    let mut workers = LocalWorkers::start(
        &args,
        plan.workers,
        (plan.threads, plan.pinned),
        addr,
        &dir,
        &local_security,
        &state,
    )?;
    let outcome = follow(&args, &sweep, &state, &mut workers, started).await;
    if outcome.is_ok() {
        linger_until_told_done(&state).await;
    }
    state
        .finish_results()
        .await
        .context("writing the final results")?;
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop());
    // Workers that are still there got `Done` or will see their stdin close.
    workers.stop().await;
    if let Ok(Err(e)) = stopped.await {
        warn!(error = %e, "server stopped with an error");
    }
    outcome?;

    let failed = summarize(&sweep, &state, &dir, started.elapsed());
    let progress = state.progress();
    let trained = state
        .records()
        .iter()
        .any(|r| r.hparams.objective.is_train());
    if !args.no_report && progress.finished + progress.stopped > 0 {
        if trained {
            build_report(&dir).await?;
        } else {
            println!(
                "no report: every trial is synthetic (no model to evaluate); see trials.parquet"
            );
        }
    }
    // Last: a scrape after the sweep still sees its final numbers while the report is built.
    side.stop().await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The listeners beside gRPC, `--metrics-listen` and `--health-listen`: bound before the
/// state opens (a port in use stops the run before anything starts), served once it is open.
struct SideListeners {
    metrics: Option<TcpListener>,
    health: Option<TcpListener>,
}

/// The [`SideListeners`] serving.
struct SideServers {
    metrics: Option<metrics::http::Running>,
    health: Option<service::Running>,
}

impl SideListeners {
    async fn bind(args: &RunArgs) -> Result<SideListeners> {
        async fn bind(flag: &str, addr: Option<SocketAddr>) -> Result<Option<TcpListener>> {
            let Some(addr) = addr else { return Ok(None) };
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {flag} {addr}"))?;
            Ok(Some(l))
        }
        Ok(SideListeners {
            metrics: bind("--metrics-listen", args.metrics_listen).await?,
            health: bind("--health-listen", args.health_listen).await?,
        })
    }

    fn spawn(self, state: &SweepState, security: &ServerSecurity) -> SideServers {
        SideServers {
            metrics: self
                .metrics
                .map(|l| metrics::http::spawn(l, state.metrics().clone(), security)),
            health: self
                .health
                .map(|l| service::health::spawn(l, state.health())),
        }
    }
}

impl SideServers {
    /// Stops both; as for the main server, a client that keeps a connection open (a prober's
    /// idle HTTP/2 connection) delays the exit by at most 5 s.
    async fn stop(self) {
        let bounded = Duration::from_secs(5);
        if let Some(m) = self.metrics {
            if tokio::time::timeout(bounded, m.stop()).await.is_err() {
                warn!("the metrics listener did not stop within 5 s");
            }
        }
        if let Some(h) = self.health {
            match tokio::time::timeout(bounded, h.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "the health listener stopped with an error"),
                Err(_) => warn!("the health listener did not stop within 5 s (a client kept its connection open)"),
            }
        }
    }
}

/// What the scheduler gets of the sweep: its trials, its experiments, the tpe suggester.
fn scheduler_plan(sweep: &Sweep) -> crate::scheduler::Plan {
    crate::scheduler::Plan {
        trials: sweep.trials.clone(),
        experiments: sweep.experiments.clone(),
        suggester: crate::suggest::TpeSuggester::of(sweep)
            .map(|s| Box::new(s) as Box<dyn crate::suggest::Suggester>),
    }
}

/// Says what the folder already held (on a resume) and that the sweep starts.
fn announce(sweep: &Sweep, state: &SweepState, dir: &ResultsDir, addr: SocketAddr) {
    let restored = state.restored();
    if state.incarnation() > 1 {
        let stopped = if restored.stopped > 0 {
            format!(", {} stopped", restored.stopped)
        } else {
            String::new()
        };
        let suggested = if restored.suggestions > 0 {
            format!(" ({} stored tpe suggestions)", restored.suggestions)
        } else {
            String::new()
        };
        eprintln!(
            "resuming {}: {} finished{stopped}, {} failed{}, {} to continue, {} new{suggested}",
            dir.path().display(),
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
        to_suggest = sweep.to_suggest(),
        epochs = sweep.total_epochs(),
        results = %dir.path().display(),
        %addr,
        "sweep starting"
    );
}

/// Idle workers ask again every `retry_after`: keep serving until each live one was told
/// `Done` (a remote worker would otherwise find the port closed and exit with an error after
/// `--reconnect-timeout`), but not for long.
async fn linger_until_told_done(state: &SweepState) {
    let linger = Instant::now() + state.retry_after() * 3;
    while !state.every_worker_told_done() && Instant::now() < linger {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the outcome and every failed trial's reason; returns how many failed.
fn summarize(sweep: &Sweep, state: &SweepState, dir: &ResultsDir, elapsed: Duration) -> usize {
    let progress = state.progress();
    let stopped = if progress.stopped > 0 {
        format!(", {} stopped early", progress.stopped)
    } else {
        String::new()
    };
    println!(
        "sweep {}: {} trials finished{stopped}, {} failed in {:.1}s; results in {}",
        sweep.name,
        progress.finished,
        progress.failed,
        elapsed.as_secs_f64(),
        dir.path().display()
    );
    for r in state
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
    progress.failed
}

/// The report of a finished run, on a blocking thread; a report that cannot be built is a
/// warning, not a failed run (`coordinator report` can rebuild it).
async fn build_report(dir: &ResultsDir) -> Result<()> {
    let path = dir.path().to_path_buf();
    match tokio::task::spawn_blocking(move || {
        report::generate(&path, &report::ReportOptions::default())
    })
    .await?
    {
        Ok(summary) => println!("{}", summary.text),
        Err(e) => warn!(error = %e, "the report could not be built"),
    }
    Ok(())
}

/// With `fresh`, deletes an earlier run's outputs. Without it a folder with a state file is
/// resumed (the state checks that it is the same sweep), and a folder with results but no
/// state (written by a version without resume, or damaged) is refused: its epochs would mix
/// with this run's.
fn prepare_results(dir: &ResultsDir, fresh: bool) -> Result<()> {
    let existing = dir.existing_outputs();
    if !existing.is_empty() && !fresh {
        if dir.state().is_file() {
            return Ok(());
        }
        bail!(
            "{} holds results ({}) but no {} to resume from; pass --fresh to delete them and \
             start over, or --results DIR to write elsewhere",
            dir.path().display(),
            existing.join(", "),
            results_format::layout::STATE_FILE
        );
    }
    for o in existing {
        let p = dir.path().join(o);
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(dir.path())
        .with_context(|| format!("creating results folder {}", dir.path().display()))
}

/// Follows the sweep until every trial is finished or failed, keeping the local workers
/// running. Fails on Ctrl-C, and when no worker can finish the sweep: every local worker was
/// given up and no remote one may join.
async fn follow(
    args: &RunArgs,
    sweep: &Sweep,
    state: &Arc<SweepState>,
    workers: &mut LocalWorkers,
    started: Instant,
) -> Result<()> {
    let mut rx = state.subscribe();
    let mut display = Display::new(args.plain, sweep.total_epochs());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = || {
        anyhow::anyhow!(
            "interrupted; finished epochs are in the results folder, run the same command to resume"
        )
    };
    // The sweep changes on every report; a snapshot walks every trial, so it is taken (and
    // drawn) at most every DRAW_EVERY: a sweep of many short trials is not slowed by its own
    // display. `is_done` is cheap and checked on every change.
    let mut last_draw: Option<Instant> = None;
    loop {
        rx.borrow_and_update();
        if !state.is_done() && last_draw.is_some_and(|t| t.elapsed() < DRAW_EVERY) {
            tokio::select! {
                _ = tokio::time::sleep(DRAW_EVERY) => {}
                _ = &mut ctrl_c => {
                    display.finish(&state.progress());
                    return Err(interrupted());
                }
            }
            continue;
        }
        last_draw = Some(Instant::now());
        let progress = state.progress();
        display.update(&progress, started);
        if progress.is_done() {
            display.finish(&progress);
            return Ok(());
        }
        if let Err(stuck) = workers.supervise(state, args.listen.is_some()) {
            display.finish(&progress);
            let done = progress.finished + progress.failed;
            return Err(match stuck {
                Stuck::GaveUp {
                    worker,
                    exits,
                    log,
                    tail,
                } => anyhow::anyhow!(
                    "every local worker exited before the sweep finished ({done} of {} trials \
                     done): local worker {worker} exited {exits} times in a row without \
                     registering; last lines of {}:\n{tail}",
                    progress.total,
                    log.display()
                ),
                Stuck::CannotStart(e) => e.context(format!(
                    "restarting a local worker ({done} of {} trials done)",
                    progress.total
                )),
            });
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                display.finish(&progress);
                return Err(interrupted());
            }
        }
    }
}
