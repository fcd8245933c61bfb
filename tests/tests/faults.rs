//! Fault injection with real processes: workers and the coordinator are `kill -9`ed in the
//! middle of a small sweep, over and over, and the results must equal those of an
//! uninterrupted run: every trial finished, exactly one row per (trial, epoch), and the same
//! metrics to the last bit (same seeds, same device type, one thread).
//!
//! Needs what `tests/tests/e2e.rs` needs: `bash scripts/setup.sh` and the workspace binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tests::{assert_ok, bin, command_lines, free_port, rows_differing, sql, Lines};

const SUBSET: [&str; 4] = ["--train-limit", "2000", "--test-limit", "400"];

/// Two trials that exercise every part of a checkpoint: dropout (the RNG), momentum and
/// weight decay (the optimizer's buffers), a CNN and an MLP.
const SWEEP: &str = r#"
name = "faults"
seed = 11

[defaults]
# Trials train alone, bit for bit as before fused groups (issue 13).
fuse = false
batch_size = 64
validation = 0.1
momentum = 0.9
weight_decay = 0.0005

[[experiment]]
name = "mlp"
arch = "ffv3"
hidden = 32
dropout = 0.25
lr = 0.05
epochs = 8

[[experiment]]
name = "cnn"
arch = "cnn"
hidden = 4
lr = 0.02
epochs = 5
"#;
const TRIALS: usize = 2;
const EPOCHS: usize = 13;

fn write_sweep(dir: &Path) -> PathBuf {
    let p = dir.join("faults.toml");
    std::fs::write(&p, SWEEP).unwrap();
    p
}

/// The results of an uninterrupted run: one local worker, one thread.
fn reference() -> &'static Path {
    static REF: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &REF.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results");
        let out = Command::new(bin("coordinator"))
            .env("HYPERSWEEP_WORKER", bin("worker"))
            .arg("run")
            .arg(write_sweep(tmp.path()))
            .arg("--results")
            .arg(&results)
            .args([
                "--local-workers",
                "1",
                "--threads",
                "1",
                "--plain",
                "--no-report",
            ])
            .args(SUBSET)
            .output()
            .unwrap();
        assert_ok(&out);
        (tmp, results)
    })
    .1
}

/// Every trial finished, one row per (trial, epoch), and the same metrics as `reference`.
fn assert_same_as_reference(results: &Path) {
    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(*) FILTER (status = 'finished') FROM '{r}/trials.parquet'"
        )),
        [format!("{TRIALS},{TRIALS}")]
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        [format!("{EPOCHS},{EPOCHS}")]
    );
    assert_eq!(
        rows_differing(results, reference()),
        0,
        "metrics differ from the uninterrupted run"
    );
    for trial in sql(&format!("SELECT trial_id FROM '{r}/trials.parquet'")) {
        for f in proto::Artifact::ALL {
            assert!(
                results
                    .join("artifacts")
                    .join(&trial)
                    .join(f.file_name())
                    .is_file(),
                "{trial}/{f}"
            );
        }
    }
}

fn worker_join(url: &str, name: &str) -> Child {
    Command::new(bin("worker"))
        .args([
            "join",
            "--coordinator",
            url,
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .args(["--name", name, "--reconnect-timeout", "60"])
        .args(SUBSET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How many times the worker behind `lines` restored a checkpoint (after it exited); fails
/// on an unusable one.
fn count_resumed(lines: &mut Lines) -> usize {
    lines.drain();
    assert!(
        !lines.seen.iter().any(|l| l.contains("checkpoint unusable")),
        "{}",
        lines.seen.join("\n")
    );
    lines
        .seen
        .iter()
        .filter(|l| l.contains("resumed from the checkpoint"))
        .count()
}

/// `coordinator run` of the fault sweep into `results`, with no local workers, on a free
/// loopback port, plus `extra` flags; returns it once it listens, with its log and URL.
fn coordinator_for_remote_workers(
    dir: &Path,
    results: &Path,
    extra: &[&str],
) -> (Child, Lines, String) {
    let port = free_port();
    let mut coord = Command::new(bin("coordinator"))
        .arg("run")
        .arg(write_sweep(dir))
        .arg("--results")
        .arg(results)
        .args([
            "--local-workers",
            "0",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--plain", "--no-report"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    lines.wait("coordinator listening", Duration::from_secs(30));
    (coord, lines, format!("http://127.0.0.1:{port}"))
}

#[test]
fn workers_killed_five_times_mid_trial_lose_nothing() {
    let _exclusive = tests::exclusive();
    reference();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    // Its log is kept (read on a thread) so the pipe never fills, though nothing waits on it.
    let (mut coord, _coord_log, url) = coordinator_for_remote_workers(
        tmp.path(),
        &results,
        &["--lease-timeout", "1.5", "--max-attempts", "10"],
    );

    let mut resumed = 0;
    for kill in 1..=5 {
        let mut victim = worker_join(&url, &format!("victim-{kill}"));
        let mut lines = Lines::of(&mut victim);
        // Killed right after an epoch was acknowledged, and then after a delay that lands
        // inside the next epoch, alternately.
        lines.wait("epoch finished", Duration::from_secs(120));
        if kill % 2 == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        resumed += count_resumed(&mut lines);
    }
    let mut rescuer = worker_join(&url, "rescuer");
    let mut lines = Lines::of(&mut rescuer);
    let status = rescuer.wait().unwrap();
    assert!(status.success(), "rescuer: {status:?}");
    resumed += count_resumed(&mut lines);
    // Re-leased trials continued from their checkpoints (had they started over, the metrics
    // would still match, so this is checked on its own).
    assert!(
        resumed >= 3,
        "only {resumed} leases resumed from a checkpoint"
    );
    let status = coord.wait().unwrap();
    assert!(status.success(), "coordinator: {status:?}");
    assert_same_as_reference(&results);
    let r = results.display();
    // Resumed trials continued where the victims stopped: some epochs were reported by
    // victims, and no trial started over (the rescuer did not retrain the victims' epochs).
    let victims = sql(&format!(
        "SELECT count(*) FROM '{r}/epochs/*.parquet' WHERE worker LIKE 'victim-%'"
    ));
    assert!(victims[0].parse::<usize>().unwrap() >= 5, "{victims:?}");
    let attempts = sql(&format!("SELECT sum(attempts) FROM '{r}/trials.parquet'"));
    assert!(attempts[0].parse::<usize>().unwrap() >= 6, "{attempts:?}");
}

#[test]
fn the_coordinator_killed_five_times_resumes_and_loses_nothing() {
    let _exclusive = tests::exclusive();
    reference();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let sweep = write_sweep(tmp.path());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The same command every time: one local worker (it dies with the coordinator) and the
    // port a remote worker keeps reconnecting to across restarts.
    let run = || {
        Command::new(bin("coordinator"))
            .env("HYPERSWEEP_WORKER", bin("worker"))
            .env("RUST_LOG", "info")
            .arg("run")
            .arg(&sweep)
            .arg("--results")
            .arg(&results)
            .args(["--local-workers", "1", "--threads", "1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--lease-timeout", "2", "--plain", "--no-report"])
            .args(SUBSET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut remote: Option<(Child, Lines)> = None;
    for kill in 1..=5 {
        let mut coord = run();
        let mut lines = Lines::of(&mut coord);
        lines.wait("coordinator listening", Duration::from_secs(30));
        if remote.is_none() {
            let mut child = worker_join(&url, "remote");
            let lines = Lines::of(&mut child);
            remote = Some((child, lines));
        }
        // Killed after `kill` newly accepted epochs (the state is written before each is
        // acknowledged), at varying points of the sweep.
        let got = lines.wait_n("epoch finished", 1 + kill % 2, Duration::from_secs(120));
        assert!(got.is_some(), "the coordinator exited before kill {kill}");
        if kill == 3 {
            std::thread::sleep(Duration::from_millis(100));
        }
        coord.kill().unwrap(); // SIGKILL
        coord.wait().unwrap();
    }
    let final_run = run().wait_with_output().unwrap();
    assert_ok(&final_run);
    let stderr = String::from_utf8_lossy(&final_run.stderr);
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_same_as_reference(&results);
    let log = std::fs::read_to_string(results.join("logs/worker-1.log")).unwrap();
    assert!(!log.contains("checkpoint unusable"), "{log}");
    let mut resumed = log.matches("resumed from the checkpoint").count();
    // The remote worker outlived every coordinator and registered again with the next one.
    let (mut child, mut lines) = remote.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    resumed += count_resumed(&mut lines);
    assert!(
        lines.seen.iter().any(|l| l.contains("registered again")),
        "the remote worker never registered again:\n{}",
        lines.seen.join("\n")
    );
    // Trials cut short by a restart continued from their checkpoints.
    assert!(
        resumed >= 2,
        "only {resumed} leases resumed from a checkpoint"
    );
}

/// `worker join --slots 2` is two worker processes, `NAME/0` and `NAME/1`, that train the
/// sweep's two trials side by side and still give the numbers of the one-process reference
/// run (one libtorch generator per process). Killing the process that started them, even
/// with SIGKILL, stops both.
#[test]
fn two_slots_are_two_processes_with_the_reference_numbers() {
    let _exclusive = tests::exclusive();
    reference();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (mut coord, mut coord_lines, url) =
        coordinator_for_remote_workers(tmp.path(), &results, &[]);
    let name = format!("slots-{}", std::process::id());
    let mut worker = Command::new(bin("worker"))
        .args(["join", "--coordinator", &url])
        .args([
            "--device",
            "cpu",
            "--slots",
            "2",
            "--threads",
            "1",
            "--name",
            &name,
        ])
        .args(SUBSET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker_lines = Lines::of(&mut worker);
    let status = coord.wait().unwrap();
    coord_lines.drain();
    assert!(status.success(), "{}", coord_lines.seen.join("\n"));
    let status = worker.wait().unwrap();
    worker_lines.drain();
    assert!(
        status.success(),
        "worker: {status}\n{}\ncoordinator:\n{}",
        worker_lines.seen.join("\n"),
        coord_lines.seen.join("\n")
    );
    for slot in 0..2 {
        let registered = format!("name={name}/{slot} ");
        assert!(
            coord_lines
                .seen
                .iter()
                .any(|l| l.contains("worker registered") && l.contains(&registered)),
            "no registration of {name}/{slot}:\n{}",
            coord_lines.seen.join("\n")
        );
    }
    assert_same_as_reference(&results);
    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(DISTINCT worker) FROM '{r}/trials.parquet'"
        )),
        ["2"],
        "each slot trained one of the two trials"
    );

    // The supervisor killed: its slots (waiting for a coordinator that is not there) follow.
    let name = format!("orphans-{}", std::process::id());
    let mut supervisor = Command::new(bin("worker"))
        .args([
            "join",
            "--coordinator",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .args(["--device", "cpu", "--slots", "2", "--name", &name])
        .args(["--reconnect-timeout", "120"])
        .args(SUBSET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = || command_lines().iter().filter(|c| c.contains(&name)).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while running() < 3 {
        assert!(
            Instant::now() < deadline,
            "the slot processes never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() > 0 {
        assert!(
            Instant::now() < deadline,
            "slot processes outlived their supervisor: {:?}",
            command_lines()
                .into_iter()
                .filter(|c| c.contains(&name))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
