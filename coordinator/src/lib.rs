//! hypersweep's coordinator: it turns a sweep file into trials, hands them to workers over
//! gRPC, and writes every epoch of every trial to Parquet.
//!
//! - [`sweep`] reads and validates a sweep TOML (figment: file, `SWEEP_*` env, flags) and
//!   expands it into [`trial::TrialSpec`]s; [`synthetic`] generates big sweep files.
//! - [`trial`] names what the coordinator knows about a trial (its spec, its durable state).
//! - [`scheduler`] is the trial queue and lease state machine: plain data, no I/O, tested
//!   with virtual time; it judges epochs with each experiment's stop rules and asks a
//!   [`suggest::Suggester`] for a tpe experiment's next trial when nothing is queued.
//! - [`store`] is the durable state in `state.redb` (redb): what a restarted coordinator
//!   resumes from; one committer thread applies changes in group commits.
//! - [`results_writer`] writes the committed epochs and the trial table into the results
//!   folder's Parquet files (their format is the `results-format` crate's).
//! - [`service`] is the `sweep.v1.Coordinator` gRPC service: the shared [`service::SweepState`],
//!   the handlers, the wire checks, artifact uploads and [`service::serve`] (health and
//!   reflection beside it; a bound listener and a shutdown future in).
//! - [`metrics`] is the Prometheus metrics: one handle the service, the committer and the
//!   sweep's state count through, the scheduler read at each scrape, and the `/metrics`
//!   listener of `--metrics-listen`.
//! - [`security`] is the shared token and TLS: the loopback-or-token rule, the interceptor
//!   that answers `UNAUTHENTICATED`, the rustls configuration.
//! - [`commands`] are the subcommands (`run`, `check`, `status`, `report`); `run` starts and
//!   watches [`local_workers`] and draws [`progress`].
//! - [`cli`] parses the command line for the thin binary in `main.rs`.

pub mod cli;
pub mod commands;
pub mod local_workers;
pub mod metrics;
pub mod progress;
pub mod results_writer;
pub mod scheduler;
pub mod security;
pub mod service;
pub mod store;
pub mod suggest;
pub mod sweep;
pub mod synthetic;
pub mod trial;
