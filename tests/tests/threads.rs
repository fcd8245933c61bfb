//! Issue 13's thread plan end to end: a real `coordinator run` with 2 local workers of 1
//! thread on 2 cores, a long CNN trial (leased first) beside short MLP trials. Once the MLPs
//! are done and nothing waits, the idle worker's core goes to the CNN at its next epoch; the
//! epoch rows (read with the DuckDB CLI) say so. With `--pin-threads` every epoch trains on 1.

use std::path::Path;
use std::process::Command;
use tests::{assert_ok, bin, sql};

const SWEEP: &str = r#"
name = "threads"
seed = 5
[defaults]
# The MLPs train alone, one worker each, as the plan this test checks expects.
fuse = false
validation = 0.1
[[experiment]]
name = "long"
arch = "cnn"
hidden = 8
lr = 0.1
epochs = 8
[[experiment]]
name = "short"
arch = "ffv1"
hidden = 32
lr = [0.05, 0.1, 0.2]
epochs = 3
"#;

/// `coordinator run` of [`SWEEP`] into `dir/results` with 2 local workers on 2 cores (the
/// process's affinity: a larger machine behaves as this one), plus `extra`.
fn run(dir: &Path, extra: &[&str]) -> String {
    let sweep = dir.join("threads.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let out = Command::new("taskset")
        .args(["-c", "0,1"])
        .arg(bin("coordinator"))
        .env("HYPERSWEEP_WORKER", bin("worker"))
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(dir.join("results"))
        // Heartbeats every 0.4 s: the plan reaches the worker within an epoch.
        .args(["--local-workers", "2", "--lease-timeout", "2"])
        .args([
            "--plain",
            "--no-report",
            "--train-limit",
            "3000",
            "--test-limit",
            "500",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&out);
    dir.join("results").display().to_string()
}

/// The CNN's thread count per epoch, in epoch order.
fn cnn_threads(r: &str) -> Vec<String> {
    sql(&format!(
        "SELECT threads FROM '{r}/epochs/*.parquet' WHERE arch = 'cnn' ORDER BY epoch"
    ))
}

#[test]
fn idle_cores_go_to_the_long_trial_once_the_queue_is_empty_and_pinned_runs_keep_one_thread() {
    let _exclusive = tests::exclusive();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("skipped: one core, nothing to lend");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = run(tmp.path(), &[]);
    let cnn = cnn_threads(&r);
    assert_eq!(cnn.len(), 8, "{cnn:?}");
    // Leased first, while the MLPs were queued: its first epoch trained on its worker's 1.
    assert_eq!(cnn[0], "1", "{cnn:?}");
    // Once the MLPs were done and nothing was queued, the idle worker's core was lent. (On a
    // machine whose cores other processes keep busy, an epoch on 2 threads can be slower than
    // on 1: the worker then goes back to 1 for the rest of the trial, so the 2s need not last.)
    let lent = cnn.iter().position(|t| t == "2");
    let lent = lent.unwrap_or_else(|| panic!("the idle core was never lent: {cnn:?}"));
    // Lent until the end, or declined once and for good: never 2 again after going back.
    if let Some(back) = cnn[lent..].iter().position(|t| t == "1") {
        assert!(cnn[lent + back..].iter().all(|t| t == "1"), "{cnn:?}");
    }
    // The MLPs ran while work was queued or beside the CNN: one thread each, all of them.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), min(threads), max(threads) FROM '{r}/epochs/*.parquet' WHERE arch = 'ffv1'"
        )),
        ["9,1,1"]
    );

    let pinned = tempfile::tempdir().unwrap();
    let r = run(pinned.path(), &["--pin-threads"]);
    assert_eq!(cnn_threads(&r), ["1"; 8]);
    assert_eq!(
        sql(&format!(
            "SELECT count(*), max(threads) FROM '{r}/epochs/*.parquet'"
        )),
        ["17,1"]
    );
}
