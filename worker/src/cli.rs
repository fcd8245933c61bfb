//! The worker's command line: `worker train` runs one trial here; `worker join` serves a
//! coordinator until its sweep is done.

use clap::{Args, Parser, Subcommand, ValueEnum};
use proto::{Arch, Hyperparams};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version = crate::build_info::VERSION_LINE,
    about = "hypersweep worker: trains Fashion-MNIST trials with libtorch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one trial here and print its epochs.
    Train(TrainArgs),
    /// Join a coordinator and train the trials it hands out until its sweep is done.
    Join(JoinArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Network: ffv0, ffv1, ffv2, ffv3 or cnn.
    #[arg(long)]
    pub arch: String,
    /// Hidden units (MLPs) or channels (cnn).
    #[arg(long, default_value_t = 32)]
    pub hidden: u32,
    /// Dropout probability (ffv3), in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// SGD learning rate, > 0.
    #[arg(long)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    #[arg(long, default_value_t = 55)]
    pub seed: u64,
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Fraction of the 60,000 training images held out for validation (stratified); 0 trains
    /// on all of them, as the notebook did.
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads. Default 1: safe when several trials share a machine; raise
    /// it when this trial has the machine to itself.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the trial's config.json, model.safetensors and predictions.safetensors here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: dataset::cli::DataArgs,
}

impl TrainArgs {
    /// The validated hyperparameters, or a one-line error naming the flag.
    pub fn hyperparams(&self) -> Result<Hyperparams, String> {
        let arch: Arch = self
            .arch
            .parse()
            .map_err(|e: proto::InvalidHyperparams| format!("--{e}"))?;
        let h = Hyperparams {
            arch,
            hidden: self.hidden,
            dropout: self.dropout,
            lr: self.lr,
            epochs: self.epochs,
            batch_size: self.batch_size,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            validation: self.validation,
            seed: self.seed,
            objective: proto::Objective::Train,
        };
        h.validate()
            .map_err(|e| format!("--{}: {}", e.key.replace('_', "-"), e.reason))?;
        if h.dropout > 0.0 && !h.uses_dropout() {
            return Err(format!(
                "--dropout: {} has no dropout layer (only ffv3 does)",
                h.arch
            ));
        }
        Ok(h)
    }
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The coordinator's address, e.g. http://10.0.0.5:50051; https://... connects with TLS.
    #[arg(long, value_name = "URL")]
    pub coordinator: String,
    /// cpu; cuda:N (GPU N for every slot); cuda (the visible GPUs, CUDA_VISIBLE_DEVICES
    /// respected, shared round-robin among the slots); auto (as cuda when there is a GPU,
    /// else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Trials run at once. N > 1 starts N worker processes (registered as NAME/0 ...
    /// NAME/N-1), because libtorch's random generator is per process: so every trial stays
    /// reproducible per seed. They stop when this process does.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// libtorch intra-op threads per trial (per slot process), fixed: the coordinator never
    /// changes them. Default: the machine's cores divided by --slots, which the coordinator
    /// may raise at an epoch boundary while cores of this machine are idle.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Like the default, but this many threads to start each trial with (the coordinator may
    /// raise them while cores are idle); `coordinator run` gives it to its local workers.
    #[arg(long, value_name = "N", conflicts_with = "threads")]
    pub start_threads: Option<usize>,
    /// The most same-shape MLP trials of one experiment this worker trains as one fused
    /// (stacked) model (issue 13); 1: every trial alone. Default 9: on a 2-core CPU nine
    /// stacked h64 MLPs trained 1.5× (1 thread) to 2.2× (2 threads) the trial-epochs per
    /// second of nine solo runs, more than groups of three (README, "Measured"); CNNs never
    /// fuse, and a sweep's `fuse = false` turns it off. Each member stays its own trial (rows, checkpoints, artifacts).
    #[arg(long, value_name = "N", default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fuse: u32,
    /// Name shown in results and logs. Default: host:pid.
    #[arg(long)]
    pub name: Option<String>,
    /// File holding the coordinator's shared token, sent as `authorization: Bearer <token>`
    /// on every call (required when the coordinator has one). Never the token itself on the
    /// command line: it would show in the process list.
    #[arg(long, value_name = "FILE", env = "SWEEP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for the coordinator's TLS certificate (a private CA or the
    /// coordinator's self-signed certificate). Implies TLS. Default with an https:// URL: the
    /// system's trusted roots.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify the coordinator's certificate against (and send as SNI) instead of the
    /// URL's host, e.g. when connecting by IP address. Implies TLS.
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// PEM client certificate, for a coordinator that requires client certificates
    /// (with --tls-key). Implies TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Give up when the coordinator cannot be reached for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub reconnect_timeout: u64,
    /// Exit when standard input closes (used by the coordinator for its local workers, so
    /// that they never outlive it).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
    /// Train nothing: report every epoch at once with made-up metrics and upload no artifacts.
    /// For measuring the orchestration overhead of the real gRPC path.
    #[arg(long, hide = true)]
    pub noop: bool,
    #[command(flatten)]
    pub data: dataset::cli::DataArgs,
}
