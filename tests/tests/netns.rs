//! Multi-host: the coordinator and two workers on three hosts of their own (Linux network
//! namespaces joined by veth pairs to a bridge in a fourth, hub namespace). Worker A's link is
//! cut in the middle of a trial for longer than the lease timeout, then restored: the trial is
//! finished by worker B from A's last acknowledged epoch, A's late reports are rejected, A
//! leases anew and trains another trial, and nothing is duplicated in Parquet.
//!
//! Topology (`<pid>` keeps concurrent runs apart; every name is removed on drop, panic or not):
//!
//! ```text
//!   ns hs<pid>c  eth0 10.211.0.1 ──veth── vc ┐
//!   ns hs<pid>a  eth0 10.211.0.2 ──veth── va ├─ br0 in ns hs<pid>h   (the cut: `va` down)
//!   ns hs<pid>b  eth0 10.211.0.3 ──veth── vb ┘
//! ```
//!
//! The link is cut on the bridge side, so A notices nothing: its calls hang in TCP
//! retransmission, as across a real partition, and complete when the link is back. Each host
//! caps TCP's retransmission back-off at 1 s (`net.ipv4.tcp_rto_max_ms`, Linux 6.15+; skipped
//! where the kernel lacks it) so that the restored link is used within a second, not after
//! the next exponential back-off (up to ~13 s after a 6 s cut).
//!
//! Needs root and iproute2 (`ip netns`), besides what `e2e.rs` needs (libtorch, data, DuckDB,
//! the workspace binaries). Without them the test fails, saying so, unless
//! `HYPERSWEEP_SKIP_NETNS=1` is set: then it prints that it was skipped and passes.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tests::{bin, repo, sql, Lines};

/// Runs `ip ARGS`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const SUBNET: &str = "10.211.0";
const COORD_IP: &str = "10.211.0.1";
const PORT: u16 = 50051;
const LEASE_TIMEOUT_S: f64 = 2.0;

/// The namespaces and links of one run; `Drop` deletes them (and with them every veth and the
/// bridge), also when the test panics.
struct Topology {
    hub: String,
    /// Namespaces created so far, hub first.
    created: Vec<String>,
    pid: u32,
}

impl Topology {
    /// The hub with its bridge and one host per name in `hosts` (`c`, `a`, `b`: namespace
    /// `hs<pid><name>`, address `10.211.0.<i+1>`, bridge port `v<name>`).
    fn build(hosts: &[&str]) -> Result<Topology, String> {
        let pid = std::process::id();
        let mut t = Topology {
            hub: format!("hs{pid}h"),
            created: Vec::new(),
            pid,
        };
        let hub = t.hub.clone();
        ip(&["netns", "add", &hub])?;
        t.created.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = t.ns(host);
            ip(&["netns", "add", &ns])?;
            t.created.push(ns.clone());
            let port = format!("v{host}");
            // Created in the hub, its peer straight in the host: no name in the root
            // namespace, so nothing there can clash.
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let addr = format!("{SUBNET}.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Best effort (Linux 6.15+): see the module's comment.
            let _ = Command::new("ip")
                .args(["netns", "exec", &ns, "sysctl", "-qw"])
                .arg("net.ipv4.tcp_rto_max_ms=1000")
                .stderr(Stdio::null())
                .status();
        }
        Ok(t)
    }

    fn ns(&self, host: &str) -> String {
        format!("hs{}{host}", self.pid)
    }

    /// Takes `host`'s bridge port down (`up = false`) or up again.
    fn link(&self, host: &str, up: bool) {
        let port = format!("v{host}");
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// `program` run inside `host`'s namespace (`ip netns exec` execs it: the child's pid is
    /// the program's).
    fn command(&self, host: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).arg(program);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}

/// Whether this machine can build the topology at all; `Err` says why not.
fn netns_available() -> Result<(), String> {
    let uid = tests::effective_uid();
    if uid != Some(0) {
        return Err(format!(
            "not root (effective uid {})",
            uid.map_or("unknown".into(), |u| u.to_string())
        ));
    }
    let probe = format!("hs{}probe", std::process::id());
    ip(&["netns", "add", &probe])?;
    ip(&["netns", "del", &probe])
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc {
    child: Child,
    lines: Lines,
    name: &'static str,
}

impl Proc {
    fn spawn(mut c: Command, name: &'static str) -> Proc {
        let mut child = c
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let lines = Lines::of(&mut child);
        Proc { child, lines, name }
    }

    /// Waits for the next line containing `needle`.
    fn wait(&mut self, needle: &str, timeout: Duration) -> String {
        let name = self.name;
        self.lines
            .wait(needle, timeout)
            .unwrap_or_else(|| panic!("{name} exited before logging {needle:?}:\n{}", self.log()))
    }

    /// Waits until the process exits, failing after `timeout`.
    fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.lines.drain();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let seen = &self.lines.seen;
        seen[seen.len().saturating_sub(40)..].join("\n")
    }

    fn logged(&self, needle: &str) -> Vec<&String> {
        self.lines
            .seen
            .iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

impl Drop for Proc {
    /// Kills and reaps the process; shows its log when the test failed (the last 60 lines) or
    /// `HYPERSWEEP_TEST_LOGS` is set (all of it).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let all = std::env::var_os("HYPERSWEEP_TEST_LOGS").is_some();
        if all || std::thread::panicking() {
            self.lines.drain();
            let seen = &self.lines.seen;
            let from = if all {
                0
            } else {
                seen.len().saturating_sub(60)
            };
            eprintln!("--- {} ---\n{}", self.name, seen[from..].join("\n"));
        }
    }
}

/// `key=value` from a tracing line.
fn field<'l>(line: &'l str, key: &str) -> &'l str {
    let pat = format!(" {key}=");
    let at = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + pat.len();
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
}

/// A CNN long enough that worker B is still training it when A comes back (B trains 9 of its
/// 10 epochs, ~1.5 s each in a debug build), queued first (longest first), and a short MLP
/// that A trains after it lost the CNN.
const SWEEP: &str = r#"
name = "netns"
seed = 21

[defaults]
batch_size = 64
validation = 0.1

[[experiment]]
name = "long"
arch = "cnn"
hidden = 4
lr = 0.05
epochs = 10

[[experiment]]
name = "short"
arch = "ffv1"
hidden = 16
lr = 0.1
epochs = 3
"#;
const CNN_EPOCHS: usize = 10;
const MLP_EPOCHS: usize = 3;

#[test]
fn a_worker_cut_off_the_network_mid_trial_loses_it_to_another_host_without_duplicates() {
    let _exclusive = tests::exclusive();
    if let Err(why) = netns_available() {
        if std::env::var("HYPERSWEEP_SKIP_NETNS").is_ok_and(|v| v == "1") {
            eprintln!(
                "SKIPPED netns multi-host test: network namespaces unavailable ({why}); \
                 HYPERSWEEP_SKIP_NETNS=1 is set"
            );
            return;
        }
        panic!(
            "the multi-host test needs root and iproute2's `ip netns` to build its network \
             ({why}); run it as root, or set HYPERSWEEP_SKIP_NETNS=1 to skip it explicitly"
        );
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("netns.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let results = tmp.path().join("results");
    // A non-loopback listener needs the shared token.
    let token = tmp.path().join("token");
    std::fs::write(
        &token,
        format!("netns-test-token-{:016x}\n", std::process::id()),
    )
    .unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let data = repo().join("data/fashion-mnist");

    // Declared before the processes: dropped (namespaces deleted) after they are killed.
    let net =
        Topology::build(&["c", "a", "b"]).unwrap_or_else(|e| panic!("building the network: {e}"));

    let mut coord = {
        let mut c = net.command("c", &bin("coordinator"));
        c.arg("run")
            .arg(&sweep)
            .arg("--results")
            .arg(&results)
            .arg("--token-file")
            .arg(&token)
            .args(["--listen", &format!("{COORD_IP}:{PORT}")])
            .args(["--local-workers", "0", "--max-attempts", "5"])
            .args(["--lease-timeout", &LEASE_TIMEOUT_S.to_string()])
            .args(["--plain", "--no-report"]);
        Proc::spawn(c, "coordinator")
    };
    coord.wait("coordinator listening", Duration::from_secs(30));

    let url = format!("http://{COORD_IP}:{PORT}");
    let join = |host: &str, name: &'static str| {
        let mut c = net.command(host, &bin("worker"));
        c.args(["join", "--coordinator", &url, "--token-file"])
            .arg(&token)
            .args(["--device", "cpu", "--threads", "1", "--name", name])
            // Calls hung across the cut are not errors; this bounds only how long a worker
            // keeps knocking once the coordinator has gone.
            .args(["--reconnect-timeout", "5", "--data-dir"])
            .arg(&data)
            .args(["--train-limit", "2000", "--test-limit", "400"]);
        Proc::spawn(c, name)
    };

    // A trains the CNN; cut right after its first acknowledged epoch.
    let mut a = join("a", "worker-a");
    let leased = a.wait("trial leased", Duration::from_secs(60));
    let cnn = field(&leased, "trial").to_owned();
    assert!(cnn.starts_with("cnn-"), "A leased {leased}");
    let first = a.wait("epoch finished", Duration::from_secs(60));
    assert_eq!(field(&first, "trial"), cnn);
    let registered_a = coord.wait("name=worker-a", Duration::from_secs(5));
    let id_a = field(&registered_a, "worker").to_owned();

    net.link("a", false);
    let cut = Instant::now();
    let expired = coord.wait("lease expired", Duration::from_secs(15));
    assert_eq!(field(&expired, "worker"), id_a, "{expired}");
    assert_eq!(field(&expired, "trial"), cnn, "{expired}");
    assert!(expired.contains("requeued"), "{expired}");

    // B joins only now, so the first trial it leases is the requeued CNN.
    let mut b = join("b", "worker-b");
    let leased_b = b.wait("trial leased", Duration::from_secs(60));
    assert_eq!(field(&leased_b, "trial"), cnn, "{leased_b}");
    assert_eq!(field(&leased_b, "attempt"), "2", "{leased_b}");
    net.link("a", true);
    let cut_for = cut.elapsed();
    assert!(
        cut_for > Duration::from_secs_f64(LEASE_TIMEOUT_S),
        "cut for {cut_for:?}"
    );

    // A's late report reaches the coordinator and is refused; A goes on with the other trial.
    let rejected = a.wait("report rejected", Duration::from_secs(30));
    assert_eq!(field(&rejected, "trial"), cnn, "{rejected}");
    assert!(rejected.contains("stale"), "{rejected}");
    let next = a.wait("trial leased", Duration::from_secs(30));
    assert!(
        field(&next, "trial").starts_with("ffv1-"),
        "A leased {next} after losing the CNN (B finished the CNN first?)"
    );

    let status = coord.exit(Duration::from_secs(90));
    assert!(status.success(), "coordinator: {status:?}\n{}", coord.log());
    // The worker that finished last gets `Done`. One that was idle at the end may find the
    // coordinator gone instead (it does not wait for idle remote workers): it keeps leasing
    // for --reconnect-timeout and exits with that error. Either way it did not crash.
    let mut exits = Vec::new();
    for w in [&mut a, &mut b] {
        let status = w.exit(Duration::from_secs(20));
        exits.push(format!("{} {status}", w.name));
        let gone = w
            .logged("coordinator unreachable")
            .iter()
            .any(|l| l.contains("lease"));
        assert!(
            status.success() || gone,
            "{}: {status:?}\n{}",
            w.name,
            w.log()
        );
    }

    // The coordinator told A to drop the lease it had lost (A's heartbeats from the cut,
    // delivered late) and B resumed the CNN from A's last acknowledged checkpoint.
    assert!(
        coord
            .logged("worker told to abandon a trial")
            .iter()
            .any(|l| field(l, "worker") == id_a && field(l, "trial") == cnn),
        "{}",
        coord.log()
    );
    assert!(
        !b.logged("resumed from the checkpoint").is_empty(),
        "{}",
        b.log()
    );
    assert!(
        a.logged("checkpoint unusable").is_empty() && b.logged("checkpoint unusable").is_empty()
    );

    let r = results.display();
    assert_eq!(
        sql(&format!(
            "SELECT arch, status, attempts, worker, epochs_done FROM '{r}/trials.parquet' ORDER BY arch"
        )),
        [
            format!("cnn,finished,2,worker-b,{CNN_EPOCHS}"),
            format!("ffv1,finished,1,worker-a,{MLP_EPOCHS}"),
        ]
    );
    // One row per (trial, epoch): nothing A sent late was written.
    let total = CNN_EPOCHS + MLP_EPOCHS;
    assert_eq!(
        sql(&format!(
            "SELECT count(*), count(DISTINCT (trial_id, epoch)) FROM '{r}/epochs/*.parquet'"
        )),
        [format!("{total},{total}")]
    );
    // The CNN's epochs: A's up to the cut, B's after, each epoch once and in order.
    let by = sql(&format!(
        "SELECT string_agg(worker, ' ' ORDER BY epoch), min(epoch), max(epoch) \
         FROM '{r}/epochs/*.parquet' WHERE trial_id = '{cnn}'"
    ));
    let line = by[0].clone();
    let (workers, range) = line.split_once(',').unwrap();
    assert_eq!(range, format!("1,{CNN_EPOCHS}"));
    let workers: Vec<&str> = workers.split(' ').collect();
    let by_a = workers.iter().take_while(|w| **w == "worker-a").count();
    assert!(
        by_a >= 1 && workers[by_a..].iter().all(|w| *w == "worker-b") && by_a < CNN_EPOCHS,
        "CNN epochs by worker: {workers:?}"
    );
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM '{r}/epochs/*.parquet' WHERE arch = 'ffv1' AND worker = 'worker-a'"
        )),
        [MLP_EPOCHS.to_string()]
    );
    eprintln!(
        "netns: A's link cut for {:.1} s after {by_a} CNN epoch(s); B trained the other {}; \
         {}; whole test {:.1} s",
        cut_for.as_secs_f64(),
        CNN_EPOCHS - by_a,
        exits.join(", "),
        started.elapsed().as_secs_f64()
    );
}
