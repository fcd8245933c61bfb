//! The coordinator's command line.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "hypersweep coordinator: runs hyperparameter sweeps over gRPC workers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run a sweep: serve trials to local (and, with --listen, remote) workers until every
    /// trial has finished, then write the report.
    Run(RunArgs),
    /// Validate a sweep file and print its trial table without running anything.
    Check(CheckArgs),
    /// Print the trial table of a results folder (live while a sweep runs).
    Status(StatusArgs),
    /// (Re)build the report of a results folder.
    Report(ReportArgs),
}

/// Flags that override the sweep file (which `SWEEP_*` environment variables override too).
#[derive(Debug, Clone, Args)]
pub struct SweepOverrides {
    /// The sweep's name (its results folder), instead of the file's `name`.
    #[arg(long)]
    pub name: Option<String>,
    /// The base seed, instead of the file's `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SweepOverrides {
    pub fn to_overrides(&self) -> crate::sweep::Overrides {
        crate::sweep::Overrides {
            name: self.name.clone(),
            seed: self.seed,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The sweep file (TOML).
    pub sweep: PathBuf,
    #[command(flatten)]
    pub overrides: SweepOverrides,
    /// Print only the summary line, not the table.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The sweep file (TOML).
    pub sweep: PathBuf,
    #[command(flatten)]
    pub overrides: SweepOverrides,
    /// Results folder. Default: results/<sweep name> under the current directory.
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Address to serve gRPC on. Default: 127.0.0.1 on a free port (local workers only);
    /// give e.g. 0.0.0.0:50051 to let remote workers `worker join`. A non-loopback address
    /// needs --token-file.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Serve Prometheus metrics at ADDR, path /metrics (off unless given). A non-loopback
    /// address needs --token-file, and scrapes must then send `Authorization: Bearer
    /// <token>`; with --tls-cert the metrics are served over TLS too.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve grpc.health.v1, and nothing else, in plaintext and without a token at ADDR: for
    /// probes that cannot speak TLS (Kubernetes' grpc probe). It tells only SERVING or not.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Local worker processes to start. Default: one per core, one thread each.
    #[arg(long, value_name = "N")]
    pub local_workers: Option<usize>,
    /// libtorch threads of each local worker, fixed for the whole run (as --pin-threads).
    /// Default: cores / local workers to start with; cores left idle once no trial waits
    /// are lent to the running trials at their next epoch.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Never change any worker's thread count (local or remote): every epoch trains on the
    /// count its worker started with, so the numbers repeat exactly, at the price of idle
    /// cores at the end of a sweep.
    #[arg(long)]
    pub pin_threads: bool,
    /// Device of the local workers: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The worker binary. Default: `worker` beside this executable, then on PATH.
    #[arg(long, value_name = "PATH", env = "HYPERSWEEP_WORKER")]
    pub worker_bin: Option<PathBuf>,
    /// Seconds without a heartbeat or report after which a lease expires and its trial is
    /// queued again.
    #[arg(long, default_value_t = 30.0)]
    pub lease_timeout: f64,
    /// Attempts per trial before it is marked failed.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Delete the results of an earlier run in the results folder and start over. Without it
    /// the run resumes the sweep from its results folder (`state.redb`): finished trials are
    /// kept, unfinished ones continue after their last recorded epoch, new trials of an
    /// edited sweep file run.
    #[arg(long, conflicts_with = "retry_failed")]
    pub fresh: bool,
    /// When resuming, run the trials that failed before again (from their last checkpoint).
    #[arg(long)]
    pub retry_failed: bool,
    /// Skip the report at the end.
    #[arg(long)]
    pub no_report: bool,
    /// No live progress bars, plain log lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Extra argument for every local worker's `worker join` (repeatable), e.g.
    /// `--worker-arg=--noop` to measure orchestration overhead alone.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub worker_arg: Vec<String>,
    /// Data options handed to local workers.
    #[command(flatten)]
    pub data: dataset::cli::DataArgs,
}

/// Who may call the coordinator (see `coordinator::security`).
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// File holding the shared token every call must carry (`authorization: Bearer <token>`);
    /// required with a non-loopback --listen, enforced on loopback too when given. Local
    /// workers get the same file. A file, never the token itself: a command line is visible
    /// to every user in the process list.
    #[arg(long, value_name = "FILE", env = "SWEEP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate (chain) to serve TLS with (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require every client to present a certificate signed by one
    /// (mutual TLS). Local workers then need theirs through --worker-arg=--tls-cert=PEM
    /// --worker-arg=--tls-key=PEM.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl SecurityArgs {
    pub fn to_options(&self) -> crate::security::SecurityOptions {
        crate::security::SecurityOptions {
            token_file: self.token_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// A results folder, e.g. results/lab4.
    pub results: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A results folder, e.g. results/lab4.
    pub results: PathBuf,
}
