//! Load: 200 simulated workers (this package's `loadgen` binary, one gRPC connection each)
//! lease and report concurrently against one coordinator for 5 s. Then the coordinator is
//! killed with SIGKILL, so that acknowledged rows still buffered for Parquet exist only in its
//! state, and started again on the same results folder. Every report it acknowledged must
//! then be in `epochs/*.parquet` exactly once (none lost, none duplicated, none it did not
//! acknowledge) and every acknowledged `Finish` a finished trial. Nothing here depends on
//! timing: throughput is printed, never asserted (`bash scripts/bench.sh load` measures it).
//!
//! Needs the DuckDB CLI and the workspace binaries (see `e2e.rs`); no libtorch, no data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{bin, free_port, sql};

/// A coordinator killed (SIGKILL) and reaped when dropped.
struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const WORKERS: usize = 200;
const SECONDS: &str = "5";

/// 3 architectures × 80 learning rates × 100 seeds = 24,000 trials of 3 epochs: more than
/// 200 workers report in 5 s, so the sweep never runs out.
fn write_sweep(dir: &Path) -> PathBuf {
    let lrs: Vec<String> = (1..=80)
        .map(|i| format!("{:.4}", 0.0005 * f64::from(i)))
        .collect();
    let seeds: Vec<String> = (0..100).map(|i: u32| i.to_string()).collect();
    let p = dir.join("load.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"load\"\nseed = 1\n\n[defaults]\nepochs = 3\n\n[[experiment]]\nname = \"load\"\n\
             arch = [\"ffv0\", \"ffv1\", \"ffv2\"]\nlr = [{}]\nseed = [{}]\n",
            lrs.join(", "),
            seeds.join(", ")
        ),
    )
    .unwrap();
    p
}

/// Part files in `epochs/` (DuckDB refuses a glob that matches nothing).
fn has_parts(results: &Path) -> bool {
    std::fs::read_dir(results.join("epochs")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
    })
}

#[test]
fn two_hundred_workers_lose_no_acknowledged_report_even_to_a_kill_9() {
    let _exclusive = tests::exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write_sweep(tmp.path());
    let results = tmp.path().join("results");
    let log = tmp.path().join("coordinator.log");
    let acked = tmp.path().join("acked.csv");
    let port = free_port();
    let start = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        Coordinator(
            Command::new(bin("coordinator"))
                .arg("run")
                .arg(&sweep)
                .arg("--results")
                .arg(&results)
                .args(["--local-workers", "0"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--plain", "--no-report"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };

    let mut coord = start();
    // loadgen keeps connecting until the coordinator listens.
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--coordinator", &format!("http://127.0.0.1:{port}")])
        .args(["--workers", &WORKERS.to_string(), "--seconds", SECONDS])
        .arg("--acked-out")
        .arg(&acked)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadgen: {:?}\n{stdout}\n{stderr}\ncoordinator log:\n{}",
        out.status,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    assert_eq!(n("workers"), WORKERS as u64);
    assert_eq!(n("errors"), 0, "{summary}\n{stderr}");
    assert_eq!(n("double_acked"), 0, "{summary}");
    // Every trial was leased once and never expired: no epoch came twice.
    assert_eq!(n("duplicates"), 0, "{summary}");
    assert_eq!(n("leases"), n("finishes"), "{summary}");
    assert!(n("leases") >= WORKERS as u64, "{summary}");
    let reports = n("reports_acked");
    let lines = std::fs::read_to_string(&acked).unwrap().lines().count() as u64;
    assert_eq!(
        lines,
        reports + 1,
        "acked.csv: a header and one line per report"
    );

    // SIGKILL: whatever the writer had not flushed to Parquet yet is only in state.redb.
    let _ = coord.0.kill();
    let _ = coord.0.wait();
    let a = acked.display();
    let r = results.display();
    let missing = || -> u64 {
        if !has_parts(&results) {
            return reports;
        }
        sql(&format!(
            "SELECT count(*) FROM read_csv('{a}') a ANTI JOIN '{r}/epochs/*.parquet' e USING (trial_id, epoch)"
        ))[0]
            .parse()
            .unwrap()
    };
    let missing_at_kill = missing();

    // The same command again: it rewrites the committed rows that no part file holds.
    let _coord = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while missing() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} acknowledged reports still missing from Parquet a minute after the restart",
            missing()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Exactly the acknowledged reports, each once.
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        [format!("{reports},{reports}")]
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM (SELECT trial_id, epoch FROM '{r}/epochs/*.parquet' \
             EXCEPT SELECT trial_id, epoch FROM read_csv('{a}'))"
        )),
        ["0"],
        "rows in Parquet that no worker was told were recorded"
    );
    // Every acknowledged Finish is a finished trial (trials.parquet is rewritten on start).
    let finishes = n("finishes");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let finished = sql(&format!(
            "SELECT count(*) FILTER (status = 'finished') FROM '{r}/trials.parquet'"
        ));
        if finished == [finishes.to_string()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{finished:?} finished trials, {finishes} finishes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "the coordinator logged errors:\n{log}"
    );
    eprintln!("loadgen summary: {summary}");
    eprintln!(
        "load: {reports} reports acknowledged ({} /s, p50 {} ms, p99 {} ms), 0 errors; {missing_at_kill} \
         not in Parquet yet at the kill -9, all there once each after the restart",
        summary["reports_per_s"], summary["p50_ms"], summary["p99_ms"]
    );
}
