//! hypersweep's coordinator: it turns a sweep file into trials, hands them to workers over
//! gRPC, and writes every epoch of every trial to Parquet.
//!
//! - [`sweep`] reads and validates a sweep TOML (figment: file, `SWEEP_*` env, flags) and
//!   expands it into trials; [`sweep::Sweep`] is what the rest of the crate schedules.
//! - [`scheduler`] is the trial queue and lease state machine: plain data, no I/O, tested
//!   with virtual time.
//! - [`store`] is the durable state in `state.redb` (redb): what a restarted coordinator
//!   resumes from; one committer thread applies changes in group commits.
//! - [`results`] writes `trials.parquet` and `epochs/*.parquet` (each file whole, renamed into place).
//! - [`service`] is the `sweep.v1.Coordinator` gRPC service over the scheduler and the results,
//!   plus health and reflection; [`service::serve`] takes a bound listener and a shutdown future.
//! - [`security`] is the shared token and TLS: the loopback-or-token rule, the interceptor
//!   that answers `UNAUTHENTICATED`, the rustls configuration.
//! - [`run`] is `coordinator run`: server, local worker processes, progress, report.
//! - [`cli`] parses the command line for the thin binary in `main.rs`.

pub mod cli;
pub mod results;
pub mod run;
pub mod scheduler;
pub mod security;
pub mod service;
pub mod status;
pub mod store;
pub mod sweep;
