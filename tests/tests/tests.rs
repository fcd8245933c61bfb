//! The end-to-end tests, gathered in one test binary (ripgrep's `tests/tests.rs` is the
//! model): one link instead of one per file. Select a group by its module path, e.g.
//! `cargo test -p tests --test integration faults::`.
//!
//! Tests that train or kill processes hold [`tests::exclusive`] for their whole run, so that
//! no two of them share the 2 cores of a CI machine (side by side, training ran 16× slower).
//!
//! - `bundle`: the cpu worker bundle unpacked outside the checkout and run under `env -i`;
//! - `dataset_fetch`: that bundle's worker fetching Fashion-MNIST from its coordinator into its
//!   cache, once per machine; a cut download and a damaged cached file (issue 10);
//! - `deploy`: the Kubernetes overlays, Dockerfile, systemd units and Prometheus configs
//!   checked with kubectl, kubernetes-validate, hadolint, systemd-analyze and promtool;
//! - `e2e`: `coordinator run` with local workers, remote workers, bad input, the lab4 table;
//! - `faults`: workers and the coordinator `kill -9`ed mid-sweep; `--slots`;
//! - `fuse`: issue 13's fused groups: three same-shape trials leased and trained as one;
//! - `netns`: a worker's link cut in network namespaces (root);
//! - `load`: 200 simulated workers and a `kill -9`;
//! - `metrics`: `/metrics` scraped during a real sweep, checked by promtool;
//! - `local_workers`: `coordinator run` restarts a killed local worker, gives up on a broken one;
//! - `malloc`: the worker restarts itself with glibc's malloc thresholds raised (issue 13);
//! - `search`: issue 12 end to end: a stop at a rung, divergence, a `kill -9` during a TPE
//!   sweep, the report's model of the selected epoch;
//! - `security_e2e`: token and TLS through the binaries;
//! - `slurm`: `deploy/slurm/*.sbatch` on a real single-node Slurm the tests start and stop;
//! - `threads`: issue 13's thread plan: a long trial gets the idle core once the queue is
//!   empty; `--pin-threads` keeps one thread.

mod bundle;
mod dataset_fetch;
mod deploy;
mod e2e;
mod faults;
mod fuse;
mod load;
mod local_workers;
mod malloc;
mod metrics;
mod netns;
mod search;
mod security_e2e;
mod slurm;
mod threads;
