//! Search and early stopping end to end (issue 12): a real coordinator, real worker processes,
//! real training on subset data (the synthetic objective where training would only cost
//! time), and DuckDB reading what they left.
//!
//! - a stop arriving mid-trial: ASHA stops a hopeless trial at its rung; it ends `stopped`,
//!   with its artifacts and no epoch past the rung, and its worker trained none either;
//! - a diverging trial ends `stopped` by the divergence rule, not `failed`;
//! - a coordinator `kill -9`ed during a TPE sweep loses no stored suggestion and draws none
//!   again: the sweep ends with exactly `trials` trials;
//! - the report's saved model is the selected epoch's: its test accuracy (from
//!   `predictions.parquet`) equals that epoch's recorded `test_acc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tests::{assert_ok, bin, sql, Lines};

const SUBSET: [&str; 4] = ["--train-limit", "2000", "--test-limit", "400"];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `coordinator run SWEEP --results RESULTS` with local workers of one thread (one unless
/// `extra` says `--local-workers`), plus `extra`.
fn run(sweep: &Path, results: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("coordinator"));
    c.env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info")
        .arg("run")
        .arg(sweep)
        .arg("--results")
        .arg(results)
        .args(["--threads", "1", "--plain"])
        .args(SUBSET)
        .args(extra);
    if !extra.contains(&"--local-workers") {
        c.args(["--local-workers", "1"]);
    }
    c
}

fn finished(out: &Output) -> String {
    assert_ok(out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_stop_arriving_mid_trial_ends_it_stopped_at_its_rung_with_its_artifacts() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // Three trials in this order (longest first): two that learn, then one whose lr cannot
    // (near chance after epoch 1). ASHA, grace 1, reduction 2, 4 epochs: rungs at epochs 1
    // and 2, where a trial must reach the median of those before it.
    let sweep = write(
        tmp.path(),
        "stop.toml",
        r#"
name = "stop"
seed = 3
[defaults]
arch = "ffv1"
epochs = 4
validation = 0.1
[[experiment]]
name = "asha"
stop = { asha = { grace = 1, reduction = 2 } }
model = [{ hidden = 48, lr = 0.1 }, { hidden = 40, lr = 0.1 }, { hidden = 32, lr = 0.00001 }]
"#,
    );
    let results = tmp.path().join("results");
    let stdout = finished(&run(&sweep, &results, &["--no-report"]).output().unwrap());
    assert!(stdout.contains("0 failed"), "{stdout}");
    let r = results.display();
    // The hopeless trial stopped at rung 1, by ASHA.
    let hopeless = sql(&format!(
        "SELECT trial_id, status, stop_rule, stop_epoch, epochs_done FROM '{r}/trials.parquet' WHERE lr < 0.001"
    ));
    let fields: Vec<&str> = hopeless[0].split(',').collect();
    assert_eq!(&fields[1..], ["stopped", "asha", "1", "1"], "{hopeless:?}");
    let trial = fields[0];
    // Every stopped trial recorded no epoch past its stop, every other one all four.
    let past = sql(&format!(
        "SELECT count(*) FROM '{r}/epochs/*.parquet' e JOIN '{r}/trials.parquet' t USING (trial_id) \
         WHERE (t.status = 'stopped' AND e.epoch > t.stop_epoch) OR t.epochs_done <> (SELECT count(*) FROM '{r}/epochs/*.parquet' x WHERE x.trial_id = t.trial_id)"
    ));
    assert_eq!(past, ["0"]);
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM '{r}/trials.parquet' WHERE status = 'finished' AND epochs_done <> 4"
        )),
        ["0"]
    );
    // Its artifacts came over, the best epoch's (its only one).
    for f in proto::Artifact::ALL {
        let p = results.join("artifacts").join(trial).join(f.file_name());
        assert!(p.is_file(), "{}", p.display());
    }
    let config =
        std::fs::read_to_string(results.join("artifacts").join(trial).join("config.json")).unwrap();
    assert!(config.contains("\"best_epoch\": 1"), "{config}");
    // Its worker waited at the rung for the verdict: it trained (and reported) epoch 1 only,
    // which the answer stopped.
    let log = std::fs::read_to_string(results.join("logs/worker-1.log")).unwrap();
    let epochs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(trial) && l.contains(" epoch="))
        .collect();
    assert!(
        !epochs.is_empty() && epochs.iter().all(|l| l.contains(" epoch=1 ")),
        "{log}"
    );
    assert!(
        epochs.iter().any(|l| l.contains("trial stopped by a rule")),
        "{log}"
    );
    // `coordinator status` counts it apart and says where it stopped.
    let status = Command::new(bin("coordinator"))
        .arg("status")
        .arg(&results)
        .output()
        .unwrap();
    let status = finished(&status);
    assert!(status.contains("stopped at epoch 1 by asha"), "{status}");
    assert!(status.contains(" stopped, "), "{status}");
}

#[test]
fn a_diverging_trial_ends_stopped_by_the_divergence_rule_not_failed() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // lr 1000 with momentum: NaN within epoch 1 (reported as such, nothing recorded);
    // lr 30: a training loss that explodes a few epochs in; lr 0.1 trains normally.
    let sweep = write(
        tmp.path(),
        "diverge.toml",
        r#"
name = "diverge"
seed = 3
[defaults]
arch = "ffv1"
hidden = 16
epochs = 4
momentum = 0.9
[[experiment]]
name = "d"
stop = { divergence = { factor = 3.0 } }
lr = [1000.0, 30.0, 0.1]
"#,
    );
    let results = tmp.path().join("results");
    let stdout = finished(&run(&sweep, &results, &["--no-report"]).output().unwrap());
    assert!(stdout.contains("0 failed"), "{stdout}");
    let r = results.display();
    let rows = sql(&format!(
        "SELECT lr, status, coalesce(stop_rule, '-'), coalesce(stop_epoch, 0), epochs_done, coalesce(error, '-') \
         FROM '{r}/trials.parquet' ORDER BY lr"
    ));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0].starts_with("0.1,finished,-,0,4,-"), "{rows:?}");
    for row in &rows[1..] {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!((f[1], f[2], f[5]), ("stopped", "divergence", "-"), "{row}");
        // Stopped where the loss ran away (recorded), or where it came out NaN (not recorded).
        let (stop, done): (u32, u32) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        assert!(done == stop || done + 1 == stop, "{row}");
    }
    // Nothing past a stop in the epochs, and no non-finite number anywhere.
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM '{r}/epochs/*.parquet' e JOIN '{r}/trials.parquet' t USING (trial_id) \
             WHERE (t.status = 'stopped' AND e.epoch > t.stop_epoch) OR NOT isfinite(e.train_loss)"
        )),
        ["0"]
    );
    let nan = sql(&format!(
        "SELECT trial_id FROM '{r}/trials.parquet' WHERE lr = 1000"
    ));
    assert!(results
        .join("artifacts")
        .join(&nan[0])
        .join("config.json")
        .is_file());
}

const TPE: &str = r#"
name = "tpe-kill"
seed = 7
[defaults]
objective = "synthetic"
arch = "ffv3"
epochs = 5
[[experiment]]
name = "t"
search = "tpe"
trials = 60
lr = { loguniform = [0.001, 1.0] }
hidden = { int = [16, 256], log = true }
dropout = { uniform = [0.0, 0.5] }
"#;

/// `(index, trial)` of every "trial suggested" line.
fn suggestions(lines: &[String]) -> Vec<(u64, String)> {
    let field = |l: &str, key: &str| -> Option<String> {
        let rest = &l[l.find(&format!(" {key}="))? + key.len() + 2..];
        Some(rest.split_whitespace().next()?.to_owned())
    };
    lines
        .iter()
        .filter(|l| l.contains("trial suggested"))
        .map(|l| {
            let index = field(l, "index").and_then(|i| i.parse().ok());
            (index.expect(l), field(l, "trial").expect(l))
        })
        .collect()
}

#[test]
fn a_coordinator_killed_during_a_tpe_sweep_loses_no_suggestion_and_draws_none_again() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write(tmp.path(), "tpe.toml", TPE);
    let results = tmp.path().join("results");
    let command = || {
        let mut c = run(&sweep, &results, &["--no-report", "--local-workers", "2"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    let mut first = command().spawn().unwrap();
    let mut lines = Lines::of(&mut first);
    let got = lines.wait_n("trial suggested", 15, Duration::from_secs(120));
    assert!(
        got.is_some(),
        "the coordinator exited before its 15th suggestion"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    lines.drain();
    let before = suggestions(&lines.seen);
    assert!(before.len() >= 15);

    let second = command().output().unwrap();
    assert_ok(&second);
    let log: Vec<String> = String::from_utf8_lossy(&second.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    // Every suggestion logged before the kill was stored (it is logged once committed) ...
    let stored: usize = log
        .iter()
        .find_map(|l| {
            let rest = &l[l.find("resuming the sweep")?..];
            let n = rest
                .split(" suggestions=")
                .nth(1)?
                .split_whitespace()
                .next()?;
            n.parse().ok()
        })
        .expect("the second coordinator resumed and said how many suggestions it put back");
    assert!(
        stored >= before.len(),
        "{stored} stored, {} logged",
        before.len()
    );
    // ... and the second coordinator suggested only the indices after them, each once. (Two
    // workers ask at once: two suggestions may be logged in the other order than they were
    // stored, as 23 before 22 once.)
    let after = suggestions(&log);
    let mut indices: Vec<u64> = after.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    assert_eq!(indices, (stored as u64..60).collect::<Vec<_>>());
    // Exactly `trials` trials, all of them finished, each suggestion once.
    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT trial_id), count(*) FILTER (status = 'finished') \
             FROM '{r}/trials.parquet' WHERE experiment = 't'"
        )),
        ["60,60,60"]
    );
    let ids = sql(&format!("SELECT trial_id FROM '{r}/trials.parquet'"));
    for (index, trial) in before.iter().chain(&after) {
        assert!(ids.contains(trial), "suggestion {index} ({trial}) was lost");
    }
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        ["300,300"]
    );
}

#[test]
fn the_reports_saved_model_scores_the_selected_epochs_recorded_test_accuracy() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    // Judged on the lowest validation accuracy, so that the selected epoch (the worst) is not
    // the last: a model saved after the last epoch would score that epoch's accuracy instead.
    let sweep = write(
        tmp.path(),
        "best.toml",
        r#"
name = "best-epoch"
seed = 5
[defaults]
arch = "ffv1"
hidden = 16
epochs = 3
lr = 0.05
[[experiment]]
name = "worst"
metric = "val_acc"
mode = "min"
"#,
    );
    let results = tmp.path().join("results");
    let stdout = finished(&run(&sweep, &results, &[]).output().unwrap());
    assert!(stdout.contains("report:"), "{stdout}");
    let r = results.display();
    let selected = sql(&format!(
        "SELECT t.best_epoch, e.test_acc FROM '{r}/trials.parquet' t \
         JOIN '{r}/epochs/*.parquet' e ON e.trial_id = t.trial_id AND e.epoch = t.best_epoch"
    ));
    let f: Vec<&str> = selected[0].split(',').collect();
    assert_ne!(f[0], "3", "the test needs a selected epoch before the last");
    let saved = sql(&format!(
        "SELECT avg(CASE WHEN pred = label THEN 1.0 ELSE 0.0 END) FROM '{r}/report/predictions.parquet'"
    ));
    let (saved, recorded): (f64, f64) = (saved[0].parse().unwrap(), f[1].parse().unwrap());
    assert!(
        (saved - recorded).abs() < 1e-9,
        "the saved model scores {saved}, the selected epoch {} recorded {recorded}",
        f[0]
    );
    let last = sql(&format!(
        "SELECT test_acc FROM '{r}/epochs/*.parquet' WHERE epoch = 3"
    ));
    assert_ne!(
        last[0].parse::<f64>().unwrap(),
        recorded,
        "epochs 3 and {} must differ to tell",
        f[0]
    );
    let html = std::fs::read_to_string(results.join("report/index.html")).unwrap();
    assert!(
        html.contains("val_acc (min)"),
        "the page says what was chosen on"
    );
}
