//! The coordinator binary's security end to end: it refuses to listen beyond loopback without
//! a token, serves TLS with a token to its local workers and to `worker join`, refuses a wrong
//! token and a plaintext client, and never puts the token on a command line.
//!
//! Needs the workspace's binaries (`cargo test --workspace` builds them) and, for the sweep
//! that trains, the data and libtorch of `bash scripts/setup.sh`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tests::{bin, command_lines, repo, Lines};

const TOKEN: &str = "e2e-token-9f8e7d6c5b4a3210";
const SUBSET: [&str; 4] = ["--train-limit", "3000", "--test-limit", "500"];

fn coordinator() -> Command {
    let mut c = Command::new(bin("coordinator"));
    c.env("HYPERSWEEP_WORKER", bin("worker"))
        .env("RUST_LOG", "info")
        .env_remove("SWEEP_TOKEN_FILE");
    c
}

fn worker() -> Command {
    let mut c = Command::new(bin("worker"));
    c.env("RUST_LOG", "info").env_remove("SWEEP_TOKEN_FILE");
    c
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end, failing the test when that takes longer than `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of a `coordinator listening addr=HOST:PORT` line.
fn port_of(line: &str) -> u16 {
    let addr = line.split("addr=").nth(1).expect("addr= in the line");
    let addr = addr.split_whitespace().next().unwrap();
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A token file only its owner can read, a wrong one, and a self-signed certificate for
/// localhost and 127.0.0.1 with its key.
struct Files {
    dir: tempfile::TempDir,
    token: PathBuf,
    wrong_token: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    };
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    Files {
        token: write("token", &format!("{TOKEN}\n")),
        wrong_token: write("wrong", "not-the-token-0123456789\n"),
        cert: write("cert.pem", &ck.cert.pem()),
        key: write("key.pem", &ck.signing_key.serialize_pem()),
        dir,
    }
}

#[test]
fn a_non_loopback_listen_without_a_token_refuses_to_start_and_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = output_within(
        coordinator()
            .current_dir(tmp.path())
            .arg("run")
            .arg(repo().join("sweeps/smoke.toml"))
            .arg("--results")
            .arg(&results)
            .args(["--listen", "0.0.0.0:0", "--local-workers", "1", "--plain"]),
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0 is not a loopback address")
            && err.contains("--token-file")
            && err.contains("SWEEP_TOKEN_FILE"),
        "{err}"
    );
    assert!(!results.exists(), "nothing may start without a token");

    // A token too short to be one is refused naming its file.
    let short = tmp.path().join("short-token");
    std::fs::write(&short, "abc\n").unwrap();
    let out = output_within(
        coordinator()
            .arg("run")
            .arg(repo().join("sweeps/smoke.toml"))
            .arg("--results")
            .arg(&results)
            .args(["--listen", "0.0.0.0:0", "--plain"])
            .env("SWEEP_TOKEN_FILE", &short),
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("short-token") && err.contains("at least 16"),
        "{err}"
    );
}

#[test]
fn remote_workers_need_the_token_and_tls_and_a_wrong_one_stops_at_once() {
    let _exclusive = tests::exclusive();
    let f = files();
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("one.toml");
    std::fs::write(
        &sweep,
        "name = \"one\"\n[[experiment]]\nname = \"a\"\narch = \"ffv0\"\nhidden = 8\nlr = 0.1\nepochs = 2\n",
    )
    .unwrap();
    let mut coord = coordinator()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(tmp.path().join("results"))
        .args(["--listen", "127.0.0.1:0", "--local-workers", "0", "--plain"])
        .args(["--no-report"])
        .arg("--tls-cert")
        .arg(&f.cert)
        .arg("--tls-key")
        .arg(&f.key)
        // Through the environment, as a service manager would.
        .env("SWEEP_TOKEN_FILE", &f.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    let port = port_of(
        &lines
            .wait("coordinator listening", Duration::from_secs(30))
            .expect("the coordinator exited before listening"),
    );
    let https = format!("https://127.0.0.1:{port}");

    // A wrong token: refused, and the worker stops at once instead of retrying.
    let out = output_within(
        worker()
            .args(["join", "--coordinator", &https, "--noop", "--device", "cpu"])
            .arg("--tls-ca")
            .arg(&f.cert)
            .arg("--token-file")
            .arg(&f.wrong_token),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("does not match"),
        "{err}"
    );
    assert!(
        !err.contains("\"one\"") && !err.contains("sweep=one"),
        "{err}"
    );
    // The coordinator logged it with the peer's address.
    let refused = lines
        .wait("refused a call", Duration::from_secs(10))
        .expect("the coordinator exited");
    assert!(refused.contains("peer=127.0.0.1:"), "{refused}");

    // No token at all: the same, with the hint to give one.
    let out = output_within(
        worker()
            .args(["join", "--coordinator", &https, "--noop", "--device", "cpu"])
            .arg("--tls-ca")
            .arg(&f.cert),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires a token"),
        "{}",
        text(&out)
    );

    // Plaintext against the TLS listener: never gets in.
    let out = output_within(
        worker()
            .args(["join", "--coordinator", &format!("http://127.0.0.1:{port}")])
            .args(["--noop", "--device", "cpu", "--reconnect-timeout", "2"])
            .arg("--token-file")
            .arg(&f.token),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https://"),
        "{}",
        text(&out)
    );

    // A worker that does not trust the certificate fails on TLS, not after minutes.
    let out = output_within(
        worker()
            .args(["join", "--coordinator", &https, "--noop", "--device", "cpu"])
            .arg("--token-file")
            .arg(&f.token),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{}",
        text(&out)
    );

    // The right token over TLS finishes the sweep.
    let out = output_within(
        worker()
            .args(["join", "--coordinator", &https, "--noop", "--device", "cpu"])
            .arg("--tls-ca")
            .arg(&f.cert)
            .arg("--token-file")
            .arg(&f.token),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    let status = coord.wait().unwrap();
    assert!(status.success(), "coordinator: {status:?}");
    drop(f.dir);
}

#[test]
fn a_sweep_with_token_and_tls_finishes_with_a_local_worker_and_the_token_is_in_no_command_line() {
    let _exclusive = tests::exclusive();
    let f = files();
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let mut coord = coordinator()
        .current_dir(tmp.path())
        .arg("run")
        .arg(repo().join("sweeps/smoke.toml"))
        .arg("--results")
        .arg(&results)
        .args([
            "--listen",
            "0.0.0.0:0",
            "--local-workers",
            "1",
            "--threads",
            "1",
        ])
        .args(["--plain", "--no-report"])
        .arg("--token-file")
        .arg(&f.token)
        .arg("--tls-cert")
        .arg(&f.cert)
        .arg("--tls-key")
        .arg(&f.key)
        .args(SUBSET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut coord);
    let port = port_of(
        &lines
            .wait("coordinator listening", Duration::from_secs(30))
            .expect("the coordinator exited before listening"),
    );

    // The local worker connects over TLS with the token file; the token itself is on no
    // command line.
    let needle = format!("--coordinator https://127.0.0.1:{port} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    let local = loop {
        if let Some(cmd) = command_lines().into_iter().find(|c| c.contains(&needle)) {
            break cmd;
        }
        assert!(Instant::now() < deadline, "the local worker never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(local.contains("--token-file "), "{local}");
    assert!(local.contains("--tls-ca "), "{local}");
    for cmd in command_lines() {
        assert!(
            !cmd.contains(TOKEN),
            "the token is on a command line: {cmd}"
        );
    }

    let started = Instant::now();
    let status = loop {
        if let Some(s) = coord.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the sweep did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    coord
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let log = std::fs::read_to_string(results.join("logs/worker-1.log")).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{stdout}\nworker log:\n{log}");
    assert!(stdout.contains("4 trials finished, 0 failed"), "{stdout}");
    // The warning about clear text is not given: this is TLS.
    let log = lines.drain();
    assert!(!log.iter().any(|l| l.contains("clear text")), "{log:?}");
    drop(f.dir);
}
