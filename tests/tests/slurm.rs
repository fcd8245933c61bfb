//! A real Slurm runs the sweep: munged, slurmctld and slurmd from Debian's packages on this
//! machine (`scripts/slurm-local.sh`, one node, started and stopped by each test), jobs
//! submitted with `sbatch` as a user would, real workers through `srun`, real training on a
//! subset of Fashion-MNIST, results read with the DuckDB CLI.
//!
//! - `deploy/slurm/sweep.sbatch` on `sweeps/smoke.toml` in the smallest allocation it must
//!   take (`--ntasks=2 --cpus-per-task=1`, one node): every trial finished, every
//!   (trial, epoch) once, the token folder private; its metrics scraped while it runs, as
//!   Prometheus would (the file_sd target it writes, TLS from a CA of the user's, the token).
//! - The same script interrupted twice mid-sweep (`scontrol requeue`, then `scancel` and a new
//!   `sbatch`): the finished sweep has every (trial, epoch) exactly once.
//! - `deploy/slurm/workers.sbatch` as a job array joining a coordinator outside Slurm.
//!
//! Needs root (slurmd starts job steps as the submitting user) and the tools of
//! `bash scripts/ci-tools.sh`, besides what `e2e.rs` needs (data, DuckDB, the workspace's
//! binaries). Without root or tools a test prints SKIPPED and passes, unless
//! HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1 (CI sets it): then it fails, saying what is missing.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tests::{bin, free_port, repo, sql, Lines};

const SUBSET: [&str; 4] = ["--train-limit", "2000", "--test-limit", "400"];

/// Programs the tests run, besides the workspace's binaries and DuckDB.
const TOOLS: [&str; 11] = [
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sinfo",
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "scancel",
    "openssl",
];

/// Whether Slurm can run here; `Err` says why not.
fn slurm_available() -> Result<(), String> {
    let uid = tests::effective_uid();
    if uid != Some(0) {
        return Err(format!(
            "not root (effective uid {}): slurmd must be",
            uid.map_or("unknown".into(), |u| u.to_string())
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| !std::env::split_paths(&path).any(|p| p.join(t).is_file()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} not on PATH (bash scripts/ci-tools.sh installs them)",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// `true` when `test` can run; otherwise prints SKIPPED, or fails under
/// HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1.
fn can_run(test: &str) -> bool {
    match slurm_available() {
        Ok(()) => true,
        Err(why) if std::env::var("HYPERSWEEP_REQUIRE_CLUSTER_TOOLS").is_ok_and(|v| v == "1") => {
            panic!("{test}: {why}; HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1 says it must run")
        }
        Err(why) => {
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            false
        }
    }
}

/// A single-node Slurm of `scripts/slurm-local.sh` with its files in a temporary folder and
/// ports of its own; stopped (jobs cancelled, daemons gone) when dropped, panic or not.
struct Slurm {
    dir: tempfile::TempDir,
    ports: [u16; 2],
}

impl Slurm {
    fn up() -> Slurm {
        let dir = tempfile::Builder::new()
            .prefix("hs-slurm")
            .tempdir()
            .unwrap();
        // munged wants every folder above its socket searchable by all.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let slurm = Slurm {
            dir,
            ports: [free_port(), free_port()],
        };
        let out = slurm.script("up");
        assert!(
            out.status.success(),
            "slurm-local.sh up: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            slurm.logs()
        );
        slurm
    }

    fn script(&self, what: &str) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/slurm-local.sh"))
            .arg(what)
            .arg(self.dir.path())
            .env("SLURM_LOCAL_CTLD_PORT", self.ports[0].to_string())
            .env("SLURM_LOCAL_D_PORT", self.ports[1].to_string())
            .output()
            .unwrap()
    }

    /// A Slurm client command (sbatch, squeue, scontrol, scancel) talking to this Slurm.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.dir.path().join("slurm.conf"));
        c
    }

    /// `sbatch` from `submit` (the submit directory), with the workspace's binaries
    /// (HYPERSWEEP_BIN) and the environment a job inherits.
    fn sbatch(&self, submit: &Path) -> Command {
        let mut c = self.cmd("sbatch");
        c.current_dir(submit)
            .env("HYPERSWEEP_BIN", bin("coordinator").parent().unwrap())
            .env("RUST_LOG", "info")
            .env("OMP_NUM_THREADS", "1")
            .args(["--output", "job-%j.out"]);
        c
    }

    /// The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, ...), GONE once Slurm has
    /// forgotten it (MinJobAge).
    fn state(&self, job: &str) -> String {
        let out = self
            .cmd("scontrol")
            .args(["show", "job", "-o", job])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        s.split_whitespace()
            .find_map(|f| f.strip_prefix("JobState="))
            .unwrap_or("GONE")
            .to_owned()
    }

    /// Waits until `job` is in one of `states`; fails after `timeout`.
    fn wait_state(&self, job: &str, states: &[&str], timeout: Duration, submit: &Path) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state(job);
            if states.contains(&s.as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} still {s} after {timeout:?}, not {states:?}\n{}\n{}",
                job_log(submit, job),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Lets a requeued `job` start again now: Slurm holds a requeued job back for two minutes
    /// (its begin time), and an update while the job is still completing is overridden, so
    /// this waits for it to be pending first, and for the node to be idle: released while
    /// slurmd was still killing the old run, the job started at once, slurmd refused the
    /// launch ("Job 1 already killed") and the job ended for good (seen once here). Idle is
    /// not enough either: slurmd refuses a credential created in the same second as the
    /// old run's was revoked (credential times are whole seconds; seen once in CI: requeued
    /// at :35.05, released and refused at :35.81), so the node must have been idle for 2 s.
    fn release_requeued(&self, job: &str, submit: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut idle_since: Option<Instant> = None;
        loop {
            idle_since = match (self.nodes_idle(), idle_since) {
                (false, _) => None,
                (true, None) => Some(Instant::now()),
                (true, since) => since,
            };
            let idle_long = idle_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(2));
            match self.state(job).as_str() {
                "PENDING" if idle_long => {
                    let _ = self
                        .cmd("scontrol")
                        .args(["update", &format!("JobId={job}"), "StartTime=now"])
                        .stderr(Stdio::null())
                        .status();
                }
                "RUNNING" => return,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "requeued job {job} did not run again within 60 s ({})\n{}\n{}",
                self.state(job),
                job_log(submit, job),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until no process of `job` is left (squeue lists it no more: neither running nor
    /// completing); fails after `timeout`.
    fn wait_finished(&self, job: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .cmd("squeue")
                .args(["-h", "-o", "%t", "-j", job])
                .output()
                .unwrap();
            let states = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if states.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} still {states} after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The ends of slurmctld's and slurmd's logs, for failure messages.
    /// True when every node of the cluster is idle (`sinfo`'s compact states), not still
    /// completing a job.
    fn nodes_idle(&self) -> bool {
        let out = self
            .cmd("sinfo")
            .args(["-h", "-N", "-o", "%t"])
            .output()
            .unwrap();
        let states = String::from_utf8_lossy(&out.stdout);
        !states.trim().is_empty() && states.split_whitespace().all(|s| s == "idle")
    }

    fn logs(&self) -> String {
        ["slurmctld", "slurmd"]
            .iter()
            .map(|d| {
                let p = self.dir.path().join(format!("log/{d}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {d}.log (end)\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!(
                "slurm-local.sh down: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The job id `sbatch --parsable` printed.
fn job_id(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.parse::<u64>().is_ok(), "sbatch printed {id:?}");
    id
}

/// The job's output file (`--output job-%j.out` in the submit directory).
fn job_log(submit: &Path, job: &str) -> String {
    std::fs::read_to_string(submit.join(format!("job-{job}.out"))).unwrap_or_default()
}

/// How many epochs the coordinator has acknowledged, by its log (an epoch is acknowledged
/// after its commit to state.redb).
fn acknowledged(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("coordinator::") && l.contains("epoch finished"))
        .count()
}

/// Waits until the job's log shows at least `n` acknowledged epochs.
fn wait_acknowledged(submit: &Path, job: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while acknowledged(&job_log(submit, job)) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} epochs acknowledged after {timeout:?}:\n{}",
            job_log(submit, job)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every trial of `results` finished and every one of its (trial, epoch) rows there once:
/// `trials` trials, `epochs` rows.
fn assert_complete(results: &Path, trials: usize, epochs: usize) {
    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(*) FILTER (status = 'finished') FROM '{r}/trials.parquet'"
        )),
        [format!("{trials},{trials}")]
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        [format!("{epochs},{epochs}")],
        "every (trial, epoch) exactly once"
    );
    // Rows for epochs 1..=epochs of each trial, nothing else.
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM '{r}/epochs/*.parquet' e JOIN '{r}/trials.parquet' t USING (trial_id) \
             WHERE e.epoch < 1 OR e.epoch > t.epochs"
        )),
        ["0"]
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn sweep_sbatch_runs_the_smoke_sweep_on_two_cpus() {
    let _exclusive = tests::exclusive();
    if !can_run("sweep_sbatch_runs_the_smoke_sweep_on_two_cpus") {
        return;
    }
    let slurm = Slurm::up();
    let submit = tempfile::tempdir().unwrap();
    // Metrics on: the job's certificate signed by a CA of the user's, which the scrape (as
    // Prometheus would) trusts; the job names itself in a file_sd folder while it runs.
    let ca = make_ca(submit.path());
    let targets = submit.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let scraper = {
        let (targets, submit, ca) = (targets.clone(), submit.path().to_owned(), ca.clone());
        std::thread::spawn(move || scrape_the_job(&targets, &submit, &ca))
    };
    let started = Instant::now();
    let out = slurm
        .sbatch(submit.path())
        .env("HYPERSWEEP_TLS_CA", &ca)
        .env("HYPERSWEEP_METRICS_PORT", "auto")
        .env("HYPERSWEEP_PROMETHEUS_SD_DIR", &targets)
        .args(["--parsable", "--wait", "--ntasks=2", "--cpus-per-task=1"])
        .arg(repo().join("deploy/slurm/sweep.sbatch"))
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--data-dir")
        .arg(repo().join("data/fashion-mnist"))
        .args(SUBSET)
        .arg("--no-report")
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let log = job_log(submit.path(), &job);
    assert!(
        out.status.success(),
        "sbatch --wait: {}\n{}\n{log}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        slurm.logs()
    );
    eprintln!("sweep.sbatch on smoke.toml: {:.1?}", started.elapsed());

    // It said what it used and how it split the allocation.
    for want in [
        "binaries from $HYPERSWEEP_BIN",
        "listening on https://",
        "workers: 1 (one per node, CPU only), 2 slots of 1 threads each",
        "sweep smoke: 4 trials finished, 0 failed",
    ] {
        assert!(
            log.contains(want),
            "the job's output lacks {want:?}:\n{log}"
        );
    }
    let results = submit.path().join("results/smoke");
    assert_complete(&results, 4, 8);
    // Both slots trained: trials on two worker processes.
    assert_eq!(
        sql(&format!(
            "SELECT count(DISTINCT worker) > 1 FROM '{}/epochs/*.parquet'",
            results.display()
        )),
        ["true"]
    );
    let secrets = results.join(format!(".slurm-{job}"));
    assert_eq!(mode(&secrets), 0o700, "{}", secrets.display());
    assert_eq!(mode(&secrets.join("token")), 0o600);
    assert_eq!(mode(&secrets.join("key.pem")), 0o600);

    // Scraped over TLS, trusting the CA alone, with the job's token; 401 without it.
    let (with_token, without) = scraper.join().unwrap();
    assert!(
        with_token.contains("hypersweep_trials{state=\"queued\"}"),
        "{with_token}\n{log}"
    );
    assert_eq!(without, "401");
    let left: Vec<_> = std::fs::read_dir(&targets).unwrap().collect();
    assert!(left.is_empty(), "the job left its target file: {left:?}");
}

/// A CA of the user's for `HYPERSWEEP_TLS_CA`: `DIR/ca.pem` and `DIR/ca.key`.
fn make_ca(under: &Path) -> std::path::PathBuf {
    let dir = under.join("ca");
    std::fs::create_dir(&dir).unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=hypersweep test ca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Waits (up to 2 minutes) for a job's target file in `targets`, then scrapes the target over
/// HTTPS with Python's TLS client, trusting only `ca/ca.pem` and checking the address in the
/// certificate, until a scrape with the job's token answers: that answer's body, and the
/// status of a scrape without the token.
fn scrape_the_job(targets: &Path, submit: &Path, ca: &Path) -> (String, String) {
    const SCRAPE: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
target, ca, token = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().strip()
ctx = ssl.create_default_context(cafile=ca)
def get(headers):
    req = urllib.request.Request("https://%s/metrics" % target, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return str(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return str(e.code), ""
status, body = get({"Authorization": "Bearer " + token})
if status != "200":
    sys.exit("status %s" % status)
print(get({})[0])
print(body)
"#;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let Some(file) = std::fs::read_dir(targets).unwrap().flatten().next() else {
            continue;
        };
        let name = file.file_name().to_string_lossy().into_owned();
        let Some(job) = name
            .strip_prefix("hypersweep-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Ok(sd) = std::fs::read_to_string(file.path()) else {
            continue;
        };
        let sd: serde_json::Value = serde_json::from_str(&sd).expect("the target file is JSON");
        let target = sd[0]["targets"][0].as_str().unwrap().to_owned();
        assert_eq!(sd[0]["labels"]["sweep"], "smoke", "{sd}");
        assert_eq!(sd[0]["labels"]["slurm_job_id"], job, "{sd}");
        let token = submit.join(format!("results/smoke/.slurm-{job}/token"));
        let out = Command::new("python3")
            .args(["-c", SCRAPE, &target])
            .arg(ca.join("ca.pem"))
            .arg(&token)
            .output()
            .unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (without, body) = text.split_once('\n').unwrap_or_default();
            return (body.to_owned(), without.to_owned());
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    panic!("no scrape of the job's metrics within 2 minutes; last try: {last}");
}

/// A sweep long enough to be interrupted twice: two CNNs (about half a second an epoch here)
/// and an MLP, 28 epochs in all.
const LONG_SWEEP: &str = r#"
name = "requeue"
seed = 7

[defaults]
batch_size = 64
validation = 0.1
lr = 0.05

[[experiment]]
name = "cnn"
arch = "cnn"
hidden = [4, 6]
epochs = 10

[[experiment]]
name = "mlp"
arch = "ffv2"
hidden = 16
momentum = 0.9
epochs = 8
"#;

#[test]
fn interrupted_sweep_resumes_with_every_epoch_once() {
    let _exclusive = tests::exclusive();
    if !can_run("interrupted_sweep_resumes_with_every_epoch_once") {
        return;
    }
    let slurm = Slurm::up();
    let submit = tempfile::tempdir().unwrap();
    let s = submit.path();
    std::fs::write(s.join("requeue.toml"), LONG_SWEEP).unwrap();
    let script = repo().join("deploy/slurm/sweep.sbatch");
    let data = repo().join("data/fashion-mnist");
    let submit_job = |wait: bool| {
        let mut c = slurm.sbatch(s);
        c.args(["--parsable", "--ntasks=2", "--cpus-per-task=1"]);
        if wait {
            c.arg("--wait");
        }
        c.arg(&script)
            .arg("requeue.toml")
            .arg("--data-dir")
            .arg(&data)
            .args(SUBSET)
            .arg("--no-report");
        c.output().unwrap()
    };

    let t0 = Instant::now();
    let step = |what: &str| eprintln!("{:>6.1?} {what}", t0.elapsed());
    // 1. Requeued (as preemption or a node failure would) after two acknowledged epochs.
    let job = job_id(&submit_job(false));
    wait_acknowledged(s, &job, 2, Duration::from_secs(120));
    step("two epochs acknowledged: scontrol requeue");
    let out = slurm
        .cmd("scontrol")
        .args(["requeue", &job])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    slurm.release_requeued(&job, s);

    // 2. The same job again resumes; cancelled after two more epochs.
    let before = acknowledged(&job_log(s, &job));
    wait_acknowledged(s, &job, before + 2, Duration::from_secs(180));
    step("requeued job acknowledged two more epochs: scancel");
    let log = job_log(s, &job);
    assert!(
        log.contains("restart 1"),
        "not run again after the requeue:\n{log}"
    );
    assert!(log.contains("resuming results/requeue"), "{log}");
    let out = slurm.cmd("scancel").arg(&job).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    slurm.wait_state(&job, &["CANCELLED", "GONE"], Duration::from_secs(60), s);
    // Its processes gone too (the old coordinator held state.redb's lock).
    slurm.wait_finished(&job, Duration::from_secs(60));
    let log = job_log(s, &job);
    assert!(
        !log.contains("trials finished"),
        "the sweep ended before it was cancelled:\n{log}"
    );

    step("cancelled job gone");
    // 3. A new job on the same results folder finishes the sweep.
    let out = submit_job(true);
    step("second job finished");
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let log2 = job_log(s, &second);
    assert!(
        out.status.success(),
        "sbatch --wait: {}\n{log2}\n{}",
        String::from_utf8_lossy(&out.stderr),
        slurm.logs()
    );
    assert!(log2.contains("resuming results/requeue"), "{log2}");
    assert!(
        log2.contains("sweep requeue: 3 trials finished, 0 failed"),
        "{log2}"
    );
    assert_complete(&s.join("results/requeue"), 3, 28);
    // Each job had a token folder of its own.
    for j in [&job, &second] {
        assert_eq!(mode(&s.join(format!("results/requeue/.slurm-{j}"))), 0o700);
    }
}

/// A coordinator outside Slurm (a login or service node), listening on this machine's
/// address with a token, killed when dropped.
struct Coordinator {
    child: Child,
    lines: Lines,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This machine's first IPv4 address beyond loopback (`hostname -I`), as a login node's
/// would be; 127.0.0.1 on a machine that has none (jobs run on this same machine).
fn host_address() -> String {
    let out = Command::new("hostname").arg("-I").output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find(|a| !a.contains(':'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

#[test]
fn workers_sbatch_array_joins_a_coordinator_outside_slurm() {
    let _exclusive = tests::exclusive();
    if !can_run("workers_sbatch_array_joins_a_coordinator_outside_slurm") {
        return;
    }
    let slurm = Slurm::up();
    let submit = tempfile::tempdir().unwrap();
    let s = submit.path();
    let token = s.join("token");
    std::fs::write(&token, "a-token-of-the-login-node-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("{}:{}", host_address(), free_port());
    let results = s.join("results/smoke");
    let mut child = Command::new(bin("coordinator"))
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args(["--listen", &addr, "--local-workers", "0", "--token-file"])
        .arg(&token)
        .args(["--plain", "--no-report"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    let mut coord = Coordinator { child, lines };
    coord
        .lines
        .wait("coordinator listening", Duration::from_secs(60))
        .expect("the coordinator exited before listening");

    // Two array tasks of one CPU each: two workers of one slot.
    let out = slurm
        .sbatch(s)
        .args([
            "--parsable",
            "--wait",
            "--array=0-1",
            "--ntasks=1",
            "--cpus-per-task=1",
        ])
        .args(["--output", "job-%A_%a.out"])
        .arg(repo().join("deploy/slurm/workers.sbatch"))
        .arg(format!("http://{addr}"))
        .arg("--token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(repo().join("data/fashion-mnist"))
        .args(SUBSET)
        .output()
        .unwrap();
    let array = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let logs: Vec<String> = (0..2)
        .map(|i| job_log(s, &format!("{array}_{i}")))
        .collect();
    assert!(
        out.status.success(),
        "sbatch --wait --array: {}\n{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        logs.join("\n"),
        slurm.logs()
    );
    let status = coord.child.wait().unwrap();
    coord.lines.drain();
    assert!(status.success(), "{}", coord.lines.seen.join("\n"));
    for (i, log) in logs.iter().enumerate() {
        assert!(
            log.contains(&format!("array task {i} of job {array}")),
            "{log}"
        );
        assert!(log.contains("sweep done, leaving"), "{log}");
    }
    assert_complete(&results, 4, 8);
    // Both array tasks joined this one coordinator. Which of them trained is timing: on a
    // fast machine the first worker can finish the four small trials before Slurm starts
    // the second task (CI saw exactly that), so the test asserts registration, not work.
    let registered: std::collections::BTreeSet<&str> = coord
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("worker registered"))
        .filter_map(|l| l.split("name=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        registered.len(),
        2,
        "both array tasks registered: {registered:?}\n{}",
        coord.lines.seen.join("\n")
    );
    let trained = sql(&format!(
        "SELECT count(DISTINCT worker) FROM '{}/epochs/*.parquet'",
        results.display()
    ));
    assert!(
        trained == ["1"] || trained == ["2"],
        "the epochs name one or two workers: {trained:?}"
    );
}
