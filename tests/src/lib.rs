//! Helpers the end-to-end tests in `tests/` share: where the repository and the workspace's
//! binaries are, the DuckDB CLI, checks on finished processes and waiting on a child's log.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Held for the whole run of every test that trains or kills processes: on 2 cores, two
/// training processes side by side slowed each other 16×, so such tests never overlap (the
/// cheap ones still run in parallel). A test that panicked while holding it does not poison
/// the others. The Slurm tests rely on it too: one Slurm (one munge key, one node) at a time.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The effective user id of this process, from `/proc/self/status` (tests that start daemons
/// or build network namespaces need root and say so when they are not).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/<profile>/<name>`: a test runs from `target/<profile>/deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} not built (run `cargo test --workspace`)",
        p.display()
    );
    p
}

/// The DuckDB CLI of `scripts/setup.sh` (`.deps/venv`), else `duckdb` on PATH.
pub fn duckdb() -> PathBuf {
    let local = repo().join(".deps/venv/bin/duckdb");
    if local.is_file() {
        return local;
    }
    PathBuf::from("duckdb")
}

/// Runs a query with the DuckDB CLI, returns CSV lines without the header.
pub fn sql(query: &str) -> Vec<String> {
    let out = Command::new(duckdb())
        .args(["-csv", "-noheader", "-c", query])
        .output()
        .expect("the DuckDB CLI (bash scripts/setup.sh duckdb)");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Fails with the process's exit status, stdout and stderr unless it succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Command lines of every process, as `/proc/*/cmdline` shows them (to `ps` as well), with
/// spaces between the arguments. A process that has exited (a zombie) shows an empty one.
pub fn command_lines() -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            all.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    all
}

/// Live processes (not zombies) whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            if cmd.contains(needle) && !zombie {
                pids.push(pid);
            }
        }
    }
    pids
}

/// `name` in `.deps/venv/bin` (where scripts/ci-tools.sh puts the PyPI tools), else on PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let local = repo().join(".deps/venv/bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The cluster tools `names` (kubectl, promtool, ...: `bash scripts/ci-tools.sh` installs
/// them), in order; `None` (the test or check is skipped, loudly) when one is missing,
/// unless HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1 (CI): then it fails.
pub fn cluster_tools(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().flatten().collect());
    }
    let why = format!(
        "{test}: {} not found in .deps/venv/bin or on PATH (bash scripts/ci-tools.sh installs them)",
        missing.join(", ")
    );
    if std::env::var("HYPERSWEEP_REQUIRE_CLUSTER_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{why}; HYPERSWEEP_REQUIRE_CLUSTER_TOOLS=1 says they must be there");
    }
    // Straight to stderr, past the test harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
    None
}

/// The metric columns two runs of the same trials must agree on, bit for bit.
pub const METRICS: &str =
    "trial_id, epoch, train_loss, train_acc, val_loss, val_acc, test_loss, test_acc";

/// How many epoch rows of results folder `a` and of `b` differ in [`METRICS`], both ways
/// (DuckDB `EXCEPT`): 0 when both runs recorded the same numbers.
pub fn rows_differing(a: &Path, b: &Path) -> usize {
    let (a, b) = (a.display(), b.display());
    let n = sql(&format!(
        "SELECT count(*) FROM ( \
           (SELECT {METRICS} FROM '{a}/epochs/*.parquet' EXCEPT SELECT {METRICS} FROM '{b}/epochs/*.parquet') \
           UNION ALL \
           (SELECT {METRICS} FROM '{b}/epochs/*.parquet' EXCEPT SELECT {METRICS} FROM '{a}/epochs/*.parquet'))"
    ));
    n[0].parse().unwrap()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stderr, read on a thread (so the pipe never fills and blocks the
/// child), for tests that wait on what a process logs.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line received so far, oldest first.
    pub seen: Vec<String>,
}

impl Lines {
    /// Takes `child`'s stderr, which must have been `Stdio::piped()`.
    pub fn of(child: &mut Child) -> Lines {
        let stderr = child.stderr.take().expect("stderr must be piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line containing `needle`; `None` when the stream ended first. Panics after
    /// `timeout`, showing the last lines seen.
    pub fn wait(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_n(needle, 1, timeout)
    }

    /// Waits until `count` more lines containing `needle` arrived and returns the last of
    /// them; `None` when the stream ended first. Panics after `timeout`.
    pub fn wait_n(&mut self, needle: &str, count: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut found = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line.clone());
                    if hit {
                        found += 1;
                        if found == count {
                            return Some(line);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {count}× {needle:?} within {timeout:?}; last lines:\n{}",
                    self.seen[self.seen.len().saturating_sub(30)..].join("\n")
                ),
            }
        }
    }

    /// Reads to the end of the stream (call it once the process has exited); gives up after
    /// 5 s without a line, in case a grandchild still holds the pipe.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        &self.seen
    }
}
