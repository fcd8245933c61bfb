//! The coordinator's integration tests, gathered in one test binary (ripgrep's
//! `tests/tests.rs` is the model): one link of tonic, arrow and parquet instead of one per
//! file. Select a group by its module path, e.g. `cargo test -p coordinator --test
//! integration sweep_fuzz::`.
//!
//! - `sweep`, `sweep_fuzz`: sweep files (the shipped ones, every error, generated ones);
//! - `sweep_search`: the search settings of issue 12 (random draws, tpe spaces, distributions,
//!   metric, mode, stop rules, the synthetic objective) and every error they can have;
//! - `service`, `bad_input`, `security`: a real service on 127.0.0.1:0 ([`common::Sandbox`])
//!   driven by real gRPC clients, well-behaved, hostile and unauthenticated;
//! - `metrics`: `/metrics` (token, TLS, what it counts), the plaintext health port,
//!   reflection v1alpha;
//! - `build_and_dataset`: the worker's build and protocol at `Register`, the machine in the
//!   epoch rows, `FetchDataset` (issue 10).

mod common;

mod bad_input;
mod build_and_dataset;
mod metrics;
mod security;
mod service;
mod sweep;
mod sweep_fuzz;
mod sweep_search;
