//! Issue 13's thread plan end to end: a real `coordinator run` with 2 local workers of 1
//! thread on 2 cores, a long CNN trial (leased first) beside short MLP trials. Once the MLPs
//! are done and nothing waits, the idle worker's core goes to the CNN at its next epoch; the
//! epoch rows (read with the DuckDB CLI) say so. With `--pin-threads` every epoch trains on 1.
//! A fused group follows the plan as a solo trial does: once the other worker is idle, every
//! member trains on 2 threads from the same epoch on.

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

/// `coordinator run` of `sweep` into `dir/results` with 2 local workers on 2 cores (the
/// process's affinity: a larger machine behaves as this one) on `train` training images,
/// plus `extra`.
fn run(dir: &Path, sweep: &str, train: &str, extra: &[&str]) -> String {
    let file = dir.join("threads.toml");
    std::fs::write(&file, sweep).unwrap();
    let out = Command::new("taskset")
        .args(["-c", "0,1"])
        .arg(bin("coordinator"))
        .env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info")
        .arg("run")
        .arg(&file)
        .arg("--results")
        .arg(dir.join("results"))
        // Heartbeats every 0.4 s: the plan reaches the worker within an epoch.
        .args(["--local-workers", "2", "--lease-timeout", "2"])
        .args([
            "--plain",
            "--no-report",
            "--train-limit",
            train,
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

/// Whether this machine has one core, so nothing to lend (the test is then skipped).
fn one_core() -> bool {
    let one = std::thread::available_parallelism().map_or(1, |n| n.get()) < 2;
    if one {
        eprintln!("skipped: one core, nothing to lend");
    }
    one
}

#[test]
fn idle_cores_go_to_the_long_trial_once_the_queue_is_empty_and_pinned_runs_keep_one_thread() {
    let _exclusive = tests::exclusive();
    if one_core() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = run(tmp.path(), SWEEP, "3000", &[]);
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
    let r = run(pinned.path(), SWEEP, "3000", &["--pin-threads"]);
    assert_eq!(cnn_threads(&r), ["1"; 8]);
    assert_eq!(
        sql(&format!(
            "SELECT count(*), max(threads) FROM '{r}/epochs/*.parquet'"
        )),
        ["17,1"]
    );
}

/// Three same-shape MLPs (one fused group, leased first: longest first) beside a shorter MLP
/// of another shape, which keeps the other worker busy for the group's first epochs (about 3 of
/// 10 here); batches of 256 on 256 units, so that 2 threads pay (1.2 s against 0.77 s per
/// group epoch on the quiet development machine).
const GROUP_SWEEP: &str = r#"
name = "group-threads"
seed = 5
[defaults]
validation = 0.1
[[experiment]]
name = "group"
arch = "ffv2"
hidden = 256
batch_size = 256
lr = [0.05, 0.1, 0.2]
epochs = 10
[[experiment]]
name = "short"
arch = "ffv1"
hidden = 256
lr = 0.1
epochs = 12
"#;

#[test]
fn a_fused_group_takes_the_idle_core_for_all_its_members_at_one_epoch() {
    let _exclusive = tests::exclusive();
    if one_core() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = run(tmp.path(), GROUP_SWEEP, "30000", &[]);
    let logs = worker_logs(Path::new(&r));
    assert!(logs.contains("fused group of 3 leased"), "{logs}");
    // Every member has a row of every epoch, and the members of one epoch agree on its
    // threads: the group switches as one.
    let per_epoch = sql(&format!(
        "SELECT epoch, count(*), count(DISTINCT threads), min(threads) FROM '{r}/epochs/*.parquet' \
         WHERE experiment = 'group' GROUP BY epoch ORDER BY epoch"
    ));
    assert_eq!(per_epoch.len(), 10, "{per_epoch:?}");
    let threads: Vec<String> = per_epoch
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let cols: Vec<&str> = row.split(',').collect();
            let epoch = (k + 1).to_string();
            assert_eq!(cols[..3], [epoch.as_str(), "3", "1"], "{per_epoch:?}");
            cols[3].to_owned()
        })
        .collect();
    // Leased while the short trial was queued: the first epoch trained on its worker's 1.
    assert_eq!(threads[0], "1", "{threads:?}");
    // The short trial ran beside the group on one thread, and so did every group epoch that
    // started (its row's time less its seconds, no earlier than its real start) before the
    // short trial's last row: the other worker was busy.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), max(threads) FROM '{r}/epochs/*.parquet' WHERE experiment = 'short'"
        )),
        ["12,1"]
    );
    let beside = sql(&format!(
        "SELECT count(*), max(threads) FROM '{r}/epochs/*.parquet' WHERE experiment = 'group' \
         AND recorded_at - to_microseconds(CAST(seconds * 1e6 AS BIGINT)) < \
         (SELECT max(recorded_at) FROM '{r}/epochs/*.parquet' WHERE experiment = 'short')"
    ));
    assert!(beside[0].ends_with(",1"), "{beside:?} {threads:?}");
    // Once it was done and nothing was queued, the idle worker's core went to the group, to
    // its last epoch unless an epoch on 2 threads was not a tenth faster than on 1 (other
    // processes keep the cores busy): the worker then says so and keeps 1 for good.
    let lent = threads.iter().position(|t| t == "2");
    let lent = lent.unwrap_or_else(|| panic!("the idle core was never lent: {threads:?}"));
    assert!(
        logs.contains("threads planned by the coordinator"),
        "{logs}"
    );
    if let Some(back) = threads[lent..].iter().position(|t| t == "1") {
        assert!(
            threads[lent + back..].iter().all(|t| t == "1"),
            "{threads:?}"
        );
        assert!(
            logs.contains("lent threads were slower"),
            "{threads:?}\n{logs}"
        );
    }
    eprintln!("group threads per epoch: {threads:?}; started beside the short trial: {beside:?}");
}

/// Every local worker's log, concatenated.
fn worker_logs(results: &Path) -> String {
    let mut logs = String::new();
    for e in std::fs::read_dir(results.join("logs")).unwrap() {
        logs += &std::fs::read_to_string(e.unwrap().path()).unwrap();
    }
    logs
}
