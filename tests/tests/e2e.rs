//! End to end: a real coordinator process on a loopback port, real worker processes, real
//! training on a subset of Fashion-MNIST, and the DuckDB CLI reading the Parquet it leaves.
//!
//! Needs `bash scripts/setup.sh` (libtorch, data, DuckDB CLI in .deps/venv) and the workspace's
//! binaries, which `cargo test --workspace` builds before it runs any test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{assert_ok, bin, repo, sql};

const SUBSET: [&str; 4] = ["--train-limit", "3000", "--test-limit", "500"];

fn coordinator() -> Command {
    let mut c = Command::new(bin("coordinator"));
    c.env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info");
    c
}

#[test]
fn smoke_sweep_with_two_local_workers_lands_in_parquet_that_duckdb_reads() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = coordinator()
        .current_dir(tmp.path())
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args(["--local-workers", "2", "--threads", "1", "--plain"])
        .args(SUBSET)
        .output()
        .unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 trials finished, 0 failed"), "{stdout}");

    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(*) FILTER (status = 'finished') FROM '{r}/trials.parquet'"
        )),
        ["4,4"]
    );
    // One row per (trial, epoch), never a duplicate.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        ["8,8"]
    );
    // issue 13: every epoch row says how many threads it trained with (`--threads 1`).
    assert_eq!(
        sql(&format!(
            "SELECT count(*), min(threads), max(threads) FROM '{r}/epochs/*.parquet'"
        )),
        ["8,1,1"]
    );
    // Both local workers joined (which of them trains what depends on timing: a worker that
    // loads its data first may take all four small trials).
    for i in 1..=2 {
        let log = std::fs::read_to_string(results.join(format!("logs/worker-{i}.log"))).unwrap();
        assert!(log.contains("registered"), "worker {i}:\n{log}");
    }
    // The README's query works as written.
    let per_arch = sql(&format!(
        "SELECT arch, max(val_acc) FROM '{r}/epochs/*.parquet' GROUP BY arch ORDER BY arch"
    ));
    assert_eq!(per_arch.len(), 2);
    for line in per_arch {
        let acc: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&acc) && acc > 0.3, "{line}");
    }
    // Typed columns.
    let types = sql(&format!(
        "SELECT column_name || ':' || column_type FROM (DESCRIBE SELECT * FROM '{r}/trials.parquet') \
         WHERE column_name IN ('lr', 'hidden', 'started_at')  ORDER BY 1"
    ));
    assert_eq!(
        types,
        [
            "hidden:BIGINT",
            "lr:DOUBLE",
            "started_at:TIMESTAMP WITH TIME ZONE"
        ]
    );

    // Artifacts came over gRPC and the report was built.
    let trial: String = sql(&format!(
        "SELECT trial_id FROM '{r}/trials.parquet' LIMIT 1"
    ))
    .remove(0);
    for f in [
        "config.json",
        "model.safetensors",
        "predictions.safetensors",
    ] {
        assert!(
            results.join("artifacts").join(&trial).join(f).is_file(),
            "{f}"
        );
    }
    assert!(results.join("report/index.html").is_file());

    // Running the same command again resumes the finished sweep: nothing is retrained and no
    // row is added.
    let again = coordinator()
        .current_dir(tmp.path())
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args(["--local-workers", "1", "--plain", "--no-report"])
        .args(SUBSET)
        .output()
        .unwrap();
    assert_ok(&again);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("4 finished, 0 failed, 0 to continue, 0 new"),
        "{err}"
    );
    assert_eq!(
        sql(&format!("SELECT count(*) FROM '{r}/epochs/*.parquet'")),
        ["8"]
    );
    // Adding an lr to the sweep file runs only the new trials.
    let edited = tmp.path().join("smoke.toml");
    std::fs::write(
        &edited,
        // The experiment's lr axis overrides the defaults' single lr.
        std::fs::read_to_string(repo().join("sweeps/smoke.toml")).unwrap() + "lr = [0.1, 0.05]\n",
    )
    .unwrap();
    let more = coordinator()
        .current_dir(tmp.path())
        .arg("run")
        .arg(&edited)
        .arg("--results")
        .arg(&results)
        .args(["--local-workers", "1", "--plain", "--no-report"])
        .args(SUBSET)
        .output()
        .unwrap();
    assert_ok(&more);
    let err = String::from_utf8_lossy(&more.stderr);
    assert!(
        err.contains("4 finished, 0 failed, 0 to continue, 4 new"),
        "{err}"
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)), count(*) FILTER (lr = 0.05) FROM '{r}/epochs/*.parquet'"
        )),
        ["16,16,8"]
    );
    // A folder with results but no state to resume from is refused.
    let stateless = tmp.path().join("stateless");
    std::fs::create_dir_all(stateless.join("epochs")).unwrap();
    let refused = coordinator()
        .current_dir(tmp.path())
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&stateless)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--fresh"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Restore the original sweep's view for `status` below.
    let _ = coordinator()
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args(["--local-workers", "1", "--plain", "--no-report"])
        .args(SUBSET)
        .output()
        .unwrap();

    // `status` reads the results folder.
    let st = coordinator().arg("status").arg(&results).output().unwrap();
    assert_ok(&st);
    // The summary is the last line, ended like every other.
    assert!(String::from_utf8_lossy(&st.stdout)
        .ends_with("4 trials: 4 finished, 0 running, 0 queued, 0 failed\n"));
}

/// Waits for a line containing `needle` on `child`'s stderr, returning it; the rest of the
/// stream is drained on a thread (so the child never blocks on a full pipe).
fn wait_for_line(child: &mut Child, needle: &'static str, timeout: Duration) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && line.contains(needle) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("no line with {needle:?} within {timeout:?}"))
}

/// The address a coordinator logged as `coordinator listening addr=HOST:PORT`.
fn listening_addr(coord: &mut Child) -> String {
    let line = wait_for_line(coord, "coordinator listening", Duration::from_secs(30));
    let after = line
        .split("addr=")
        .nth(1)
        .expect("addr= in the listening line");
    after.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn a_worker_killed_mid_trial_has_its_trial_finished_elsewhere_without_duplicates() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("kill.toml");
    std::fs::write(
        &sweep,
        "name = \"kill\"\nseed = 7\n\n[[experiment]]\nname = \"slow\"\narch = \"cnn\"\nhidden = 4\nlr = 0.1\nepochs = 5\n",
    )
    .unwrap();
    let results = tmp.path().join("results");
    let mut coord = coordinator()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .args([
            "--local-workers",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--lease-timeout",
            "1.5",
            "--plain",
            "--no-report",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut coord);
    let url = format!("http://{addr}");

    let join = |name: &str| {
        Command::new(bin("worker"))
            .args([
                "join",
                "--coordinator",
                &url,
                "--device",
                "cpu",
                "--threads",
                "1",
                "--name",
                name,
            ])
            .args(SUBSET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut victim = join("victim");
    wait_for_line(&mut victim, "epoch finished", Duration::from_secs(60));
    victim.kill().unwrap(); // SIGKILL, mid-trial
    victim.wait().unwrap();

    let started = Instant::now();
    let mut rescuer = join("rescuer");
    let status = rescuer.wait().unwrap();
    assert!(status.success(), "rescuer: {status:?}");
    let out = coord.wait_with_output().unwrap();
    assert_ok(&out);
    assert!(started.elapsed() < Duration::from_secs(120));

    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT status, attempts, worker, epochs_done FROM '{r}/trials.parquet'"
        )),
        ["finished,2,rescuer,5"]
    );
    let rows = sql(&format!(
        "SELECT count(*), count(DISTINCT epoch), min(epoch), max(epoch) FROM '{r}/epochs/*.parquet'"
    ));
    assert_eq!(rows, ["5,5,1,5"]);
    // The victim's epochs that made it stay attributed to it; the rescuer wrote the rest.
    let by_worker = sql(&format!(
        "SELECT worker, count(*) FROM '{r}/epochs/*.parquet' GROUP BY worker ORDER BY worker"
    ));
    assert!(
        by_worker.iter().any(|l| l.starts_with("rescuer,")),
        "{by_worker:?}"
    );
    // Both workers trained on one thread, before and after the resume.
    assert_eq!(
        sql(&format!(
            "SELECT DISTINCT threads FROM '{r}/epochs/*.parquet'"
        )),
        ["1"]
    );
}

#[test]
fn a_bad_sweep_file_is_refused_with_its_line_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("bad.toml");
    std::fs::write(
        &sweep,
        "name = \"bad\"\n\n[[experiment]]\nname = \"x\"\narch = \"ffv0\"\nlrr = [0.1]\n",
    )
    .unwrap();
    for sub in ["check", "run"] {
        let out = coordinator()
            .current_dir(tmp.path())
            .arg(sub)
            .arg(&sweep)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml:6"), "{sub}: {err}");
        assert!(err.contains("lrr"), "{sub}: {err}");
    }
    assert!(
        !tmp.path().join("results").exists(),
        "nothing may start on a bad file"
    );
}

#[test]
fn check_prints_the_lab4_table() {
    let out = coordinator()
        .arg("check")
        .arg(repo().join("sweeps/lab4.toml"))
        .arg("--quiet")
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("13 trials, 270 epochs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn local_workers_do_not_outlive_a_killed_coordinator() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("long.toml");
    std::fs::write(&sweep, "name = \"long\"\n[[experiment]]\nname = \"l\"\narch = \"cnn\"\nhidden = 8\nepochs = 50\nlr = [0.1, 0.05]\n").unwrap();
    let mut coord = coordinator()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(tmp.path().join("results"))
        .args(["--local-workers", "2", "--threads", "1", "--plain"])
        .args(SUBSET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut coord);
    let port = addr.rsplit(':').next().unwrap();
    let needle = format!("--coordinator http://127.0.0.1:{port} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tests::pids_with(&needle).len() < 2 {
        assert!(Instant::now() < deadline, "local workers never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    coord.kill().unwrap(); // SIGKILL: no chance to clean up
    coord.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tests::pids_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "local workers outlived the coordinator: {:?}",
            tests::pids_with(&needle)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
