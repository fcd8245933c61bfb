//! `coordinator run` keeps its local workers running. A local worker killed mid-trial (as an
//! OOM kill or a libtorch crash would) is started again, its trial resumes from its last
//! checkpoint, and the sweep ends with the numbers of an uninterrupted run; a worker that can
//! never start ends the run with the last lines of its log instead of being restarted forever.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tests::{assert_ok, bin, pids_with, rows_differing, sql, Lines};

/// Issue 9's scenario (ffv1 and ffv2, hidden 32, 6 epochs, validation 0.1, seed 55) with a
/// third learning rate, so that local-1 still has trials to be killed in after two restarts:
/// an epoch on the whole training set takes a fraction of a second.
const SWEEP: &str = r#"
name = "crashes"
seed = 55
[defaults]
# Trials train alone: a member resumed alone is only within a tolerance of its fused run.
fuse = false
hidden = 32
epochs = 6
validation = 0.1
[[experiment]]
name = "mlp"
arch = ["ffv1", "ffv2"]
lr = [0.05, 0.1, 0.2]
"#;
const TRIALS: usize = 6;
const SUBSET: [&str; 2] = ["--test-limit", "1000"];
const KILLS: usize = 3;

fn run(dir: &Path, extra: &[&str]) -> Command {
    let sweep = dir.join("crashes.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    cmd.env("HYPERSWEEP_WORKER", bin("worker"))
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(dir.join("results"))
        .args(["--threads", "1", "--plain", "--no-report"])
        .args(SUBSET)
        .args(extra);
    cmd
}

/// The value of `key=` in a log line (tracing's plain format).
fn field<'l>(line: &'l str, key: &str) -> &'l str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 2;
    line[start..].split_whitespace().next().unwrap()
}

#[test]
fn a_local_worker_killed_three_times_is_restarted_and_the_sweep_gives_the_uninterrupted_numbers() {
    let _exclusive = tests::exclusive();
    let reference = tempfile::tempdir().unwrap();
    assert_ok(
        &run(reference.path(), &["--local-workers", "1"])
            .output()
            .unwrap(),
    );

    let tmp = tempfile::tempdir().unwrap();
    // Five attempts: a trial may be hit by more than one of the three kills.
    let mut coord = run(tmp.path(), &["--local-workers", "2", "--max-attempts", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    let listening = lines
        .wait("coordinator listening", Duration::from_secs(30))
        .unwrap();
    let port = field(&listening, "addr")
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let local_1 = format!("--coordinator http://127.0.0.1:{port} ");
    let mut id_of_local_1 = String::new();
    for kill in 1..=KILLS {
        // Mid-trial: right after local-1 reports an early epoch, with epochs left to train.
        loop {
            // Every line: registrations tell which worker id is local-1 now.
            let line = lines
                .wait("", Duration::from_secs(60))
                .expect("the coordinator exited");
            if line.contains("worker registered") && line.contains("name=local-1") {
                id_of_local_1 = field(&line, "worker").to_owned();
            } else if line.contains("epoch finished")
                && field(&line, "worker") == id_of_local_1
                && field(&line, "epoch").parse::<u32>().unwrap() <= 3
            {
                break;
            }
        }
        let pids: Vec<u32> = pids_with(&local_1)
            .into_iter()
            .filter(|&p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).contains("local-1\0")
            })
            .collect();
        assert_eq!(
            pids.len(),
            1,
            "kill {kill}: local-1 is one process: {pids:?}"
        );
        let killed = Command::new("kill")
            .args(["-9", &pids[0].to_string()])
            .status();
        assert!(killed.unwrap().success());
        lines
            .wait("starting local worker again", Duration::from_secs(30))
            .expect("no restart");
    }
    let status = coord.wait().unwrap();
    let log = lines.drain().join("\n");
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(log.matches("local worker exited").count(), KILLS, "{log}");

    let results = tmp.path().join("results");
    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FILTER (status = 'finished'), sum(attempts) >= {TRIALS} + {KILLS} \
             FROM '{r}/trials.parquet'"
        )),
        [format!("{TRIALS},true")],
        "every kill ended an attempt mid-trial"
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        [format!("{0},{0}", TRIALS * 6)]
    );
    assert_eq!(
        rows_differing(&results, &reference.path().join("results")),
        0
    );
    let worker_logs: String = (1..=2)
        .map(|n| std::fs::read_to_string(results.join(format!("logs/worker-{n}.log"))).unwrap())
        .collect();
    assert!(
        worker_logs.contains("resumed from the checkpoint"),
        "no trial resumed from a checkpoint:\n{worker_logs}"
    );
}

/// A stand-in for a worker that cannot start (a missing libtorch).
fn broken_worker(dir: &Path) -> PathBuf {
    let path = dir.join("worker");
    std::fs::write(
        &path,
        "#!/bin/sh\necho \"worker: error while loading shared libraries: libtorch_cpu.so: \
         cannot open shared object file: No such file or directory\" >&2\nexit 127\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

#[test]
fn a_local_worker_that_never_starts_ends_the_run_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["--local-workers", "1"])
        .env("HYPERSWEEP_WORKER", broken_worker(tmp.path()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("every local worker exited before the sweep finished (0 of 6 trials done)")
            && stderr.contains("exited 3 times in a row without registering")
            && stderr.contains("libtorch_cpu.so: cannot open shared object file"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("starting local worker again").count(),
        2,
        "{stderr}"
    );
}
