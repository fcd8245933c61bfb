//! Issue 13's fused groups end to end: a real `coordinator run` with one local worker (which
//! registers `--max-fuse 9` by default) on three same-shape MLP trials that differ in lr. The
//! worker leases them as one group and trains them as one stacked model (its log says so);
//! every member still lands as its own trial, with its own rows and artifacts. The same sweep
//! with `fuse = false` trains each trial alone, within the published tolerance of the fused
//! numbers (README, "Fused same-shape trials"). A worker `kill -9`ed once every member reported
//! its first epoch is restarted, the group resumes from its members' checkpoints as one, and
//! the rows equal an uninterrupted fused run's bit for bit. A group whose worker is killed the
//! same way and is followed by a `worker join --max-fuse 1` resumes each member alone, as a
//! solo trial from the ordinary checkpoint the group wrote for it: the group's rows stay bit
//! for bit, and every member stays within the tolerance of both the fused and the solo run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tests::{assert_ok, bin, pids_with, rows_differing, sql, Lines, METRICS};

/// Learning rates up to 0.1: at seed 9 on 2,000 images an lr 0.2 member sits at a
/// bifurcation. Its fused and solo runs were 2e-7 apart in loss after epoch 1 and, with one
/// order of summation (the hand-written backward pass with MKL's AVX2 first layer), 1.2 apart
/// after epoch 3 (its loss rose in epoch 3); with autograd or oneDNN's first layer they stayed
/// together. A test of the tolerance must not hang on which branch rounding picks.
const SWEEP: &str = r#"
name = "fuse"
seed = 9
[defaults]
validation = 0.1
[[experiment]]
name = "mlp"
arch = "ffv2"
hidden = 32
lr = [0.02, 0.05, 0.1]
epochs = 3
"#;

/// `coordinator run` of [`SWEEP`] (with `fuse = false` in `[defaults]` when `fuse` is false)
/// into `dir/results` with one local worker of one thread on `train` training images.
fn command(dir: &Path, fuse: bool, train: &str) -> Command {
    let mut c = coordinator(dir, fuse, train);
    c.args(["--local-workers", "1", "--threads", "1"]);
    c
}

/// [`command`] without its local worker's flags.
fn coordinator(dir: &Path, fuse: bool, train: &str) -> Command {
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
        .args(["--plain", "--no-report"])
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

/// The port of the coordinator behind `lines`, once it logged `coordinator listening`.
fn listening_port(lines: &mut Lines) -> String {
    let listening = lines
        .wait("coordinator listening", Duration::from_secs(30))
        .expect("the coordinator exited");
    listening
        .split_whitespace()
        .find_map(|f| f.strip_prefix("addr="))
        .and_then(|a| a.rsplit(':').next())
        .unwrap()
        .to_owned()
}

/// Waits until the coordinator behind `lines` recorded epoch 1 of each of the three members
/// (each member's epochs are reported in order, so the first three are those).
fn wait_for_every_first_epoch(lines: &mut Lines) {
    for _ in 0..3 {
        let line = lines
            .wait("epoch finished", Duration::from_secs(120))
            .expect("the coordinator exited");
        assert!(
            line.contains(" epoch=1 "),
            "an epoch past 1 before the kill: {line}"
        );
    }
}

/// After one `kill -9`: the three trials finished with two attempts each, and every
/// (trial, epoch) of the 3 × 3 is in the results exactly once.
fn assert_resumed_once_and_every_row_once(results: &Path) {
    let r = results.display();
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
    eprintln!("fused against fuse = false: losses {loss:e}, accuracies {acc:e} apart");
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
    let port = listening_port(&mut lines);
    // Every member's epoch 1 is recorded: kill the worker while the group trains epoch 2.
    wait_for_every_first_epoch(&mut lines);
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
    let logs = worker_logs(&results);
    assert_eq!(logs.matches("fused group of 3 leased").count(), 2, "{logs}");
    assert!(
        logs.contains("fused group resumed from its members' checkpoints"),
        "{logs}"
    );
    assert_resumed_once_and_every_row_once(&results);
    assert_eq!(rows_differing(&reference, &results), 0);
}

/// `worker join` of the coordinator at `port` as `name`, one thread on the CPU (as
/// [`command`]'s local worker), training at most `max_fuse` trials as one group on `train`
/// training images; its log piped.
fn join(port: &str, name: &str, max_fuse: &str, train: &str) -> Child {
    Command::new(bin("worker"))
        .args(["join", "--coordinator", &format!("http://127.0.0.1:{port}")])
        .args(["--device", "cpu", "--threads", "1", "--max-fuse", max_fuse])
        .args([
            "--name",
            name,
            "--train-limit",
            train,
            "--test-limit",
            "500",
        ])
        .env("RUST_LOG", "info")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How a worker exited, and its whole log.
fn finished(worker: &mut Child) -> (ExitStatus, String) {
    let mut lines = Lines::of(worker);
    let status = worker.wait().unwrap();
    (status, lines.drain().join("\n"))
}

#[test]
fn a_group_whose_worker_is_killed_resumes_each_member_alone_within_the_tolerance() {
    let _exclusive = tests::exclusive();
    // Not the 12,000 images above: on every size tried from 3,000 to 60,000, last-bit
    // differences (1-ulp changes of a member's epoch-1 weights, or fused against solo
    // products) sent some member of this sweep down another path, 6e-3 to 0.5 apart in loss
    // (on 12,000, lr 0.05 resumed alone from its fused checkpoint ended 5.8e-3 in loss and
    // 0.016 in test accuracy from both runs); on 2,000, none of 32 1-ulp changes moved any
    // member by more than 1e-4 (with lr 0.05, 0.1 and 0.2 then; a later change of summation
    // order moved the lr 0.2 one by 1.2: see `SWEEP`). Its epochs are short, so the group may
    // report some epoch 2 before the kill lands: the asserts allow it.
    const TRAIN: &str = "2000";
    let tmp = tempfile::tempdir().unwrap();
    let reference = run(&tmp.path().join("reference"), true, TRAIN);
    let solo = run(&tmp.path().join("solo"), false, TRAIN);

    // No local worker: the worker after the kill is one that trains every trial alone.
    let dir = tmp.path().join("killed");
    let mut coord = coordinator(&dir, true, TRAIN)
        .args(["--local-workers", "0", "--listen", "127.0.0.1:0"])
        .args(["--lease-timeout", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    let port = listening_port(&mut lines);
    let mut fused = join(&port, "fused", "9", TRAIN);
    let mut fused_lines = Lines::of(&mut fused);
    wait_for_every_first_epoch(&mut lines);
    fused.kill().unwrap(); // SIGKILL
    fused.wait().unwrap();
    let fused_log = fused_lines.drain().join("\n");
    assert_eq!(
        fused_log.matches("fused group of 3 leased").count(),
        1,
        "{fused_log}"
    );

    // Each member's lease lapses and it is queued again alone, at its recorded epoch.
    let mut alone = join(&port, "alone", "1", TRAIN);
    let (alone_status, alone_log) = finished(&mut alone);
    assert!(alone_status.success(), "{alone_status}\n{alone_log}");
    let status = coord.wait().unwrap();
    let log = lines.drain().join("\n");
    assert!(status.success(), "{status}\n{log}");
    assert!(!alone_log.contains("fused group"), "{alone_log}");
    assert_eq!(alone_log.matches("trial leased").count(), 3, "{alone_log}");
    assert!(!alone_log.contains("checkpoint unusable"), "{alone_log}");
    assert_eq!(
        alone_log.matches("resumed from the checkpoint").count(),
        3,
        "{alone_log}"
    );

    let results = dir.join("results");
    let (r, reference_r) = (results.display(), reference.display());
    assert_resumed_once_and_every_row_once(&results);
    // Epoch 1 of every member came from the group, the last epoch from the member alone.
    let by_worker = sql(&format!(
        "SELECT epoch, worker, count(*) FROM '{r}/epochs/*.parquet' GROUP BY ALL ORDER BY ALL"
    ));
    assert_eq!(
        by_worker
            .iter()
            .filter(|l| l.starts_with("1,") || l.starts_with("3,"))
            .collect::<Vec<_>>(),
        ["1,fused,3", "3,alone,3"],
        "(epoch, worker, rows): {by_worker:?}"
    );
    // What the group recorded is the uninterrupted fused run's, bit for bit ...
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM (SELECT {METRICS} FROM '{r}/epochs/*.parquet' \
             WHERE worker = 'fused' EXCEPT SELECT {METRICS} FROM '{reference_r}/epochs/*.parquet')"
        )),
        ["0"]
    );
    // ... and every member resumed alone stays within the published tolerance of both its
    // uninterrupted fused run and its solo run.
    for (other, name) in [(&reference, "fused"), (&solo, "solo")] {
        let (loss, acc, rows) = largest_gaps(&results, other);
        eprintln!(
            "resumed alone against the {name} run: losses {loss:e}, accuracies {acc:e} apart"
        );
        assert_eq!(rows, 9);
        assert!(loss < 5e-3, "losses {loss} apart from the {name} run");
        assert!(acc < 0.0051, "accuracies {acc} apart from the {name} run");
    }
}
