//! `coordinator run --metrics-listen` during a real sweep: `sweeps/smoke.toml` on subset
//! data with a local worker, scraped every 50 ms with the token by a plain HTTP client. The
//! counters only rise, they move while trials finish, the last scrape holds the sweep's
//! totals as the results folder has them, `promtool check metrics` (Debian's `prometheus`)
//! accepts what is served, and no scrape carries sweep data. `--health-listen` answers
//! SERVING meanwhile. And the token rule of `--metrics-listen` is checked before anything
//! starts.

use crate::deploy::METRICS;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tests::{bin, cluster_tools, free_port, repo, sql};

const TOKEN: &str = "metrics-e2e-token-0123456789abcdef";

/// One scrape: the text, and each sample's value by its series (name and labels as served).
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }

    /// Every sample of the metric `name`, whatever its labels.
    fn family(&self, name: &str) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(s, _)| s.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
            .map(|(s, v)| (s.as_str(), *v))
            .collect()
    }
}

/// `GET /metrics` over HTTP/1.1 with `token` as a bearer token: the status and body.
/// Written by hand (a request line and two headers) so the test needs no HTTP client crate.
fn get(addr: SocketAddr, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: coordinator\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {raw:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn scrape(addr: SocketAddr) -> std::io::Result<Scrape> {
    let (status, text) = get(addr, Some(TOKEN))?;
    if status != 200 {
        return Err(std::io::Error::other(format!("status {status}: {text}")));
    }
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect();
    Ok(Scrape { text, samples })
}

/// Whether `grpc.health.v1` on `addr` says the server (`""`) is SERVING. The runtime (and
/// with it the connection) is gone on return, as a prober's would be.
fn health_serving(addr: SocketAddr) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let Ok(channel) = endpoint.connect().await else {
            return false;
        };
        let mut c = HealthClient::new(channel);
        c.check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
    })
}

/// `promtool check metrics` on `text`: accepted, and nothing to say.
fn promtool_accepts(promtool: &Path, text: &str) {
    let mut p = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\n{text}",
        out.status
    );
}

/// Total size of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn metrics_follow_a_real_sweep_and_promtool_accepts_them() {
    let _exclusive = tests::exclusive();
    let promtool = cluster_tools("metrics (promtool check metrics)", &["promtool"]);
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let token = tmp.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let health: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let stderr = std::fs::File::create(tmp.path().join("coordinator.log")).unwrap();
    // One local worker: the trials run one after another, so scrapes see the sweep move.
    // A 1 s lease timeout makes heartbeats (which carry the throughput) every 200 ms; 12,000
    // images make the sweep last several of them (with 3,000 it took ~1 s and, under load,
    // no scrape fell between the first epoch and the worker leaving).
    let mut child = Command::new(bin("coordinator"))
        .env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info")
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args([
            "--local-workers",
            "1",
            "--threads",
            "1",
            "--plain",
            "--lease-timeout",
            "1",
        ])
        .args(["--train-limit", "12000", "--test-limit", "500"])
        .arg("--token-file")
        .arg(&token)
        .arg(format!("--metrics-listen={metrics}"))
        .arg(format!("--health-listen={health}"))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap();

    // Scrape every 50 ms until the coordinator exits; the metrics listener closes last,
    // after the report, so the last scrape is taken after the sweep ended.
    let exited = Arc::new(AtomicBool::new(false));
    let scraper = {
        let exited = Arc::clone(&exited);
        std::thread::spawn(move || {
            let (mut scrapes, mut refused, mut serving) = (Vec::new(), None, false);
            while !exited.load(Ordering::SeqCst) {
                if let Ok(s) = scrape(metrics) {
                    if refused.is_none() {
                        refused = get(metrics, None).ok();
                    }
                    scrapes.push(s);
                    serving = serving || health_serving(health);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (scrapes, refused, serving)
        })
    };
    // Read to the end: the coordinator prints the report's summary after its own.
    let stdout: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    let summary = stdout
        .iter()
        .find(|l| l.starts_with("sweep smoke:"))
        .cloned()
        .unwrap_or_default();
    let status = child.wait().unwrap();
    exited.store(true, Ordering::SeqCst);
    let (scrapes, refused, serving_seen) = scraper.join().unwrap();
    assert!(status.success(), "{status}\n{}", log());
    assert!(summary.contains("4 trials finished, 0 failed"), "{summary}");
    assert!(serving_seen, "the health port never said SERVING");

    // Without the token: 401, and nothing of the metrics.
    let (code, body) = refused.expect("a refused scrape");
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("hypersweep_"), "{body}");

    // The counters only rise, and they moved while the sweep ran.
    assert!(scrapes.len() >= 3, "{} scrapes\n{}", scrapes.len(), log());
    let epochs: Vec<f64> = scrapes
        .iter()
        .map(|s| s.get("hypersweep_epochs_recorded_total"))
        .collect();
    let finished: Vec<f64> = scrapes
        .iter()
        .map(|s| s.get("hypersweep_trials{state=\"finished\"}"))
        .collect();
    for series in [&epochs, &finished] {
        assert!(series.windows(2).all(|w| w[0] <= w[1]), "{series:?}");
    }
    assert_eq!(
        (epochs[0], finished[0]),
        (0.0, 0.0),
        "the first scrape saw a trained epoch"
    );
    let during = scrapes
        .iter()
        .position(|s| (1.0..8.0).contains(&s.get("hypersweep_epochs_recorded_total")))
        .unwrap_or_else(|| panic!("no scrape while the sweep ran: {epochs:?}"));
    assert!(finished[during] < 4.0, "{finished:?}");

    // The last scrape holds the sweep's totals, as the results folder has them.
    let last = scrapes.last().unwrap();
    let r = results.display();
    let rows: f64 = sql(&format!("SELECT count(*) FROM '{r}/epochs/*.parquet'"))[0]
        .parse()
        .unwrap();
    let attempts: f64 = sql(&format!("SELECT sum(attempts) FROM '{r}/trials.parquet'"))[0]
        .parse()
        .unwrap();
    for (series, value) in [
        ("hypersweep_epochs_recorded_total", rows),
        ("hypersweep_epochs_recorded_total", 8.0),
        ("hypersweep_trials{state=\"finished\"}", 4.0),
        ("hypersweep_trials{state=\"queued\"}", 0.0),
        ("hypersweep_trials{state=\"running\"}", 0.0),
        ("hypersweep_trials{state=\"failed\"}", 0.0),
        ("hypersweep_trials{state=\"stopped\"}", 0.0),
        ("hypersweep_leases_granted_total", attempts),
        ("hypersweep_attempts_failed_total", 0.0),
        ("hypersweep_dataset_bytes_served_total", 0.0),
        (
            "hypersweep_artifact_bytes_received_total",
            bytes_under(&results.join("artifacts")) as f64,
        ),
    ] {
        assert_eq!(last.get(series), value, "{series}\n{}", last.text);
    }
    assert!(last.get("hypersweep_report_latency_seconds_count") >= 8.0);
    assert!(last.get("hypersweep_commit_batch_size_count") >= 1.0);
    assert!(last.get("hypersweep_commit_latency_seconds_count") >= 1.0);
    let connected = last.family("hypersweep_workers_connected");
    assert!(
        connected
            == [(
                "hypersweep_workers_connected{device=\"cpu\",build=\"0.5.0 (cpu build, libtorch 2.11.0, CUDA none)\"}",
                1.0
            )],
        "{connected:?}"
    );
    // The worker's throughput arrived with its heartbeats.
    assert!(
        scrapes.iter().any(|s| s
            .family("hypersweep_worker_samples_per_second")
            .iter()
            .any(|(_, v)| *v > 0.0)),
        "no heartbeat carried a throughput\n{}",
        last.text
    );
    for (series, v) in last.family("hypersweep_worker_gpu_memory_bytes") {
        assert_eq!(v, 0.0, "{series}: a CPU worker");
    }

    // The served names are the documented ones (deploy/README.md, tests/tests/deploy.rs).
    let served: BTreeSet<&str> = last
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(served, METRICS.into_iter().collect(), "{}", last.text);

    // Counters, never sweep data: no trial id, no sweep name, no hyperparameter.
    for id in sql(&format!("SELECT trial_id FROM '{r}/trials.parquet'")) {
        for s in &scrapes {
            assert!(!s.text.contains(&id), "{id} in\n{}", s.text);
        }
    }
    assert!(
        !last.text.contains("smoke") && !last.text.contains("lr="),
        "{}",
        last.text
    );

    if let Some(t) = promtool {
        promtool_accepts(&t[0], &scrapes[during].text);
        promtool_accepts(&t[0], &last.text);
    }
}

#[test]
fn a_metrics_address_beyond_loopback_needs_the_token_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = Command::new(bin("coordinator"))
        .env("HYPERSWEEP_WORKER", bin("worker"))
        .env_remove("SWEEP_TOKEN_FILE")
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args(["--metrics-listen", "0.0.0.0:0", "--plain"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics-listen 0.0.0.0:0 is not a loopback address: give --token-file"),
        "{err}"
    );
    assert!(!results.exists(), "the results folder was created");
}
