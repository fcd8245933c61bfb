//! Issue 13's fused groups end to end: a real `coordinator run` with one local worker (which
//! registers `--max-fuse 9` by default) on three same-shape MLP trials that differ in lr. The
//! worker leases them as one group and trains them as one stacked model (its log says so);
//! every member still lands as its own trial, with its own rows and artifacts. The same sweep
//! with `fuse = false` trains each trial alone, within the published tolerance of the fused
//! numbers (README, "Fused same-shape trials"). A worker `kill -9`ed once every member reported
//! its first epoch is restarted, the group resumes from its members' checkpoints as one, and
//! the rows equal an uninterrupted fused run's bit for bit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tests::{assert_ok, bin, pids_with, rows_differing, sql, Lines};

const SWEEP: &str = r#"
name = "fuse"
seed = 9
[defaults]
validation = 0.1
[[experiment]]
name = "mlp"
arch = "ffv2"
hidden = 32
lr = [0.05, 0.1, 0.2]
epochs = 3
"#;

/// `coordinator run` of [`SWEEP`] (with `fuse = false` in `[defaults]` when `fuse` is false)
/// into `dir/results` with one local worker of one thread on `train` training images.
fn command(dir: &Path, fuse: bool, train: &str) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let sweep = dir.join("fuse.toml");
    let text = if fuse {
        SWEEP.to_owned()
    } else {
        SWEEP.replace("[defaults]\n", "[defaults]\nfuse = false\n")
    };
    std::fs::write(&sweep, text).unwrap();
    let mut c = Command::new(bin("coordinator"));
    c.env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info")
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(dir.join("results"))
        .args([
            "--local-workers",
            "1",
            "--threads",
            "1",
            "--plain",
            "--no-report",
        ])
        .args(["--train-limit", train, "--test-limit", "500"]);
    c
}

/// [`command`] run to its end; returns the results folder.
fn run(dir: &Path, fuse: bool, train: &str) -> PathBuf {
    assert_ok(&command(dir, fuse, train).output().unwrap());
    dir.join("results")
}

/// Every local worker's log, concatenated.
fn worker_logs(results: &Path) -> String {
    let mut logs = String::new();
    for e in std::fs::read_dir(results.join("logs")).unwrap() {
        logs += &std::fs::read_to_string(e.unwrap().path()).unwrap();
    }
    logs
}

/// The rows of both runs side by side: the largest difference in any loss and in any
/// accuracy, and the number of rows matched.
fn largest_gaps(a: &Path, b: &Path) -> (f64, f64, usize) {
    let (a, b) = (a.display(), b.display());
    let row = sql(&format!(
        "SELECT max(greatest(abs(a.train_loss - b.train_loss), abs(a.val_loss - b.val_loss), \
                abs(a.test_loss - b.test_loss))), \
                max(greatest(abs(a.train_acc - b.train_acc), abs(a.val_acc - b.val_acc), \
                abs(a.test_acc - b.test_acc))), count(*) \
         FROM '{a}/epochs/*.parquet' a JOIN '{b}/epochs/*.parquet' b USING (trial_id, epoch)"
    ));
    let v: Vec<&str> = row[0].split(',').collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
    )
}

#[test]
fn three_same_shape_trials_train_as_one_group_and_each_lands_as_its_own_trial() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let fused = run(&tmp.path().join("fused"), true, "2000");
    let r = fused.display();
    let logs = worker_logs(&fused);
    assert_eq!(logs.matches("fused group of 3 leased").count(), 1, "{logs}");
    assert_eq!(logs.matches("trial finished").count(), 3, "{logs}");
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(*) FILTER (status = 'finished'), sum(attempts) \
             FROM '{r}/trials.parquet'"
        )),
        ["3,3,3"]
    );
    // Each member's epochs once, in its own rows.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)), count(DISTINCT trial_id) \
             FROM '{r}/epochs/*.parquet'"
        )),
        ["9,9,3"]
    );
    // Each member's artifacts, as a solo trial's.
    for id in sql(&format!("SELECT trial_id FROM '{r}/trials.parquet'")) {
        let dir = fused.join("artifacts").join(&id);
        for name in ["config.json", "model.safetensors"] {
            assert!(dir.join(name).is_file(), "{id}: no {name}");
        }
    }

    // fuse = false: each trial alone, its numbers within the tolerance of its fused run's.
    let solo = run(&tmp.path().join("solo"), false, "2000");
    let logs = worker_logs(&solo);
    assert!(!logs.contains("fused group"), "{logs}");
    assert_eq!(logs.matches("trial leased").count(), 3, "{logs}");
    let (loss, acc, rows) = largest_gaps(&fused, &solo);
    assert_eq!(rows, 9);
    assert!(loss < 5e-3, "losses {loss} apart");
    assert!(
        acc < 0.0051,
        "accuracies {acc} apart (one validation image is 0.005)"
    );
}

#[test]
fn a_group_whose_worker_is_killed_resumes_as_one_and_equals_the_uninterrupted_run() {
    let _exclusive = tests::exclusive();
    // Epochs long enough (a second or so) that the kill lands before a second epoch is in.
    const TRAIN: &str = "12000";
    let tmp = tempfile::tempdir().unwrap();
    let reference = run(&tmp.path().join("reference"), true, TRAIN);

    let dir = tmp.path().join("killed");
    let mut coord = command(&dir, true, TRAIN)
        .args(["--lease-timeout", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    let listening = lines
        .wait("coordinator listening", Duration::from_secs(30))
        .expect("the coordinator exited");
    let port = listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("addr="))
        .and_then(|a| a.rsplit(':').next())
        .unwrap()
        .to_owned();
    // Every member's epoch 1 is recorded: kill the worker while the group trains epoch 2.
    let mut firsts = 0;
    while firsts < 3 {
        let line = lines
            .wait("epoch finished", Duration::from_secs(120))
            .expect("the coordinator exited");
        assert!(
            line.contains(" epoch=1 "),
            "an epoch past 1 before the kill: {line}"
        );
        firsts += 1;
    }
    let pids = pids_with(&format!("--coordinator http://127.0.0.1:{port} "));
    assert_eq!(pids.len(), 1, "one local worker: {pids:?}");
    let killed = Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = coord.wait().unwrap();
    let log = lines.drain().join("\n");
    assert!(status.success(), "{status}\n{log}");

    let results = dir.join("results");
    let r = results.display();
    let logs = worker_logs(&results);
    assert_eq!(logs.matches("fused group of 3 leased").count(), 2, "{logs}");
    assert!(
        logs.contains("fused group resumed from its members' checkpoints"),
        "{logs}"
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FILTER (status = 'finished'), sum(attempts) FROM '{r}/trials.parquet'"
        )),
        ["3,6"]
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        ["9,9"]
    );
    assert_eq!(rows_differing(&reference, &results), 0);
}
