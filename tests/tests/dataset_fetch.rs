//! The dataset travels with the sweep (issue 10): the cpu worker bundle, unpacked outside the
//! checkout and started under `env -i` with a fresh `HOME` and `XDG_CACHE_HOME` (and, where
//! Debian's package is installed, `/usr/share/datasets/fashion-mnist` hidden in a mount
//! namespace of its own), finds no Fashion-MNIST, fetches it from its coordinator (started in
//! another empty folder, with a token) into its cache, and trains; a second worker on that
//! cache downloads nothing. A download cut in the middle, by the coordinator's test knob or by
//! `kill -9`, leaves no file a later worker trusts, and a damaged cached file is found,
//! deleted and fetched again.

use crate::bundle::{cpu_bundle, unpack};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tests::{assert_ok, bin, repo, Lines};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Bytes per chunk of `FetchDataset` (coordinator/src/service/dataset.rs).
const CHUNK: u64 = 1 << 20;
/// The coordinator's log line for each finished `FetchDataset` stream.
const SENT: &str = "dataset sent";

/// Two small trials.
const TWO_MLPS: &str = "name = \"two\"\nseed = 5\n[defaults]\nepochs = 1\nlr = 0.1\n\
    validation = 0.1\n[[experiment]]\nname = \"a\"\narch = \"ffv0\"\nhidden = [8, 16]\n";
/// Four trials long enough (seconds, where loading the cached data takes a fraction of one)
/// that both slots of a worker register before one of them could finish the sweep alone.
const FOUR_CNNS: &str = "name = \"four\"\nseed = 5\n[defaults]\nepochs = 2\n\
    validation = 0.1\n[[experiment]]\nname = \"c\"\narch = \"cnn\"\nhidden = [6, 8]\n\
    lr = [0.05, 0.1]\n";

/// A coordinator started from an empty folder of its own, serving the checkout's data.
struct Coordinator {
    child: Child,
    lines: Lines,
    url: String,
    token: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    /// `coordinator run` of `sweep` (a sweep file's text) for remote workers only, behind a
    /// token, with `env` (the test knob) in its environment.
    fn start(sweep: &str, env: &[(&str, &str)]) -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let text = sweep;
        let sweep = dir.path().join("sweep.toml");
        std::fs::write(&sweep, text).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "dataset-test-token-0123456789\n").unwrap();
        let mut cmd = Command::new(bin("coordinator"));
        cmd.current_dir(dir.path())
            .arg("run")
            .arg(&sweep)
            .args(["--listen", "127.0.0.1:0", "--local-workers", "0", "--plain"])
            .args(["--no-report", "--data-dir"])
            .arg(repo().join("data/fashion-mnist"))
            .arg("--token-file")
            .arg(&token)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = Lines::of(&mut child);
        let listening = lines
            .wait("coordinator listening", Duration::from_secs(60))
            .expect("the coordinator exited before listening");
        let port = listening
            .split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.rsplit(':').next())
            .unwrap_or_else(|| panic!("no port in {listening:?}"));
        Coordinator {
            child,
            lines,
            url: format!("http://127.0.0.1:{port}"),
            token,
            _dir: dir,
        }
    }

    /// Waits for the sweep to end (it must succeed) and returns the log's `dataset sent` lines.
    fn finish(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        let seen = self.lines.drain().to_vec();
        assert!(
            status.success(),
            "coordinator {status:?}:\n{}",
            seen.join("\n")
        );
        sent_lines(&seen)
    }

    /// Stops a coordinator whose sweep cannot end (its knob breaks every download).
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        sent_lines(self.lines.drain())
    }
}

fn sent_lines(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| l.contains(SENT)).cloned().collect()
}

/// The cpu bundle unpacked in a temporary folder, and a fresh home for its worker.
struct Bare {
    worker: PathBuf,
    home: tempfile::TempDir,
    _unpacked: tempfile::TempDir,
}

impl Bare {
    fn new() -> Bare {
        let unpacked = unpack(&cpu_bundle());
        let worker = unpacked.path().join(format!(
            "hypersweep-worker-{VERSION}-linux-x86_64-cpu/worker"
        ));
        assert!(worker.is_file());
        Bare {
            worker,
            home: tempfile::tempdir().unwrap(),
            _unpacked: unpacked,
        }
    }

    /// `$XDG_CACHE_HOME`: not `$HOME/.cache`, so that the test sees which one is used.
    fn xdg_cache(&self) -> PathBuf {
        self.home.path().join("xdg-cache")
    }

    fn cache(&self) -> PathBuf {
        self.xdg_cache().join("hypersweep/fashion-mnist")
    }

    /// `worker join` of `coordinator` with a scrubbed environment, from inside the fresh
    /// home, where no Fashion-MNIST can be found: `/usr/share/datasets/fashion-mnist`, when
    /// this machine has it, is hidden under an empty folder in a mount namespace of the
    /// worker's own.
    fn join(&self, coordinator: &Coordinator, extra: &[&str]) -> Command {
        let mut argv: Vec<String> = vec![
            "env".into(),
            "-i".into(),
            format!("HOME={}", self.home.path().display()),
            format!("XDG_CACHE_HOME={}", self.xdg_cache().display()),
            "RUST_LOG=info".into(),
            self.worker.display().to_string(),
            "join".into(),
            "--coordinator".into(),
            coordinator.url.clone(),
            "--token-file".into(),
            coordinator.token.display().to_string(),
            "--device".into(),
            "cpu".into(),
            "--test-limit".into(),
            "200".into(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let system = Path::new(dataset::SYSTEM_DIR);
        let mut cmd = if system.exists() {
            assert_eq!(
                tests::effective_uid(),
                Some(0),
                "{} exists and the worker would find it: hiding it needs root",
                system.display()
            );
            let empty = self.home.path().join("empty");
            std::fs::create_dir_all(&empty).unwrap();
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind \"$0\" {} && exec \"$@\"",
                    system.display()
                ))
                .arg(&empty)
                .args(&argv);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        cmd.current_dir(self.home.path());
        cmd
    }
}

/// Runs `cmd` to its end within `limit` (killed after it: a hung worker fails the test).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the worker did not finish within {limit:?}");
        }
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The file names in `dir`, sorted; hidden temporaries included.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// The names the checkout's data has, i.e. what a full cache holds besides its lock.
fn data_names() -> Vec<String> {
    let mut n: Vec<String> = names(&repo().join("data/fashion-mnist"));
    n.push(dataset::cache::LOCK_FILE.to_owned());
    n.sort();
    n
}

fn bytes_of(line: &str) -> u64 {
    line.split("bytes=")
        .nth(1)
        .and_then(|b| b.split_whitespace().next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line:?}"))
}

#[test]
fn a_bare_bundle_worker_fetches_the_dataset_once_and_a_second_downloads_nothing() {
    let _exclusive = tests::exclusive();
    let bare = Bare::new();

    // Two slots, one machine, one cache: the first fetches, the other waits for the lock and
    // finds the files.
    let coord = Coordinator::start(FOUR_CNNS, &[]);
    let out = output_within(
        &mut bare.join(&coord, &["--slots", "2", "--train-limit", "4000"]),
        Duration::from_secs(300),
    );
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "fetching it from the coordinator"), 1, "{err}");
    assert_eq!(
        count(&err, "fetched from the coordinator and verified"),
        1,
        "{err}"
    );
    assert_eq!(count(&err, "Fashion-MNIST from the cache"), 1, "{err}");
    let sent = coord.finish();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let on_disk: u64 = dataset::FILES
        .iter()
        .map(|f| {
            let p = dataset::file_path(&repo().join("data/fashion-mnist"), f).unwrap();
            std::fs::metadata(p).unwrap().len()
        })
        .sum();
    assert_eq!(bytes_of(&sent[0]), on_disk);

    // The cache holds the four files, whole and verified, under XDG_CACHE_HOME.
    assert_eq!(names(&bare.cache()), data_names());
    let data = dataset::load(&bare.cache()).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert!(!bare.home.path().join(".cache").exists());

    // A second worker on the same cache, for another coordinator: nothing crosses the wire.
    let coord = Coordinator::start(TWO_MLPS, &[]);
    let out = output_within(
        &mut bare.join(&coord, &["--train-limit", "1000"]),
        Duration::from_secs(300),
    );
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "Fashion-MNIST from the cache"), 1, "{err}");
    assert_eq!(count(&err, "fetching it from the coordinator"), 0, "{err}");
    assert_eq!(coord.finish(), Vec::<String>::new());
}

#[test]
fn a_cut_download_leaves_nothing_trusted_and_a_damaged_cached_file_is_fetched_again() {
    let _exclusive = tests::exclusive();
    let bare = Bare::new();

    // The coordinator cuts every stream after 3 chunks: the worker tries again within its
    // reconnect budget, then stops, and leaves neither a file nor a temporary.
    let coord = Coordinator::start(TWO_MLPS, &[("HYPERSWEEP_TEST_DATASET_FAULT", "cut:3")]);
    let out = output_within(
        &mut bare.join(
            &coord,
            &["--reconnect-timeout", "2", "--train-limit", "1000"],
        ),
        Duration::from_secs(120),
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("test knob"), "{err}");
    assert!(count(&err, "trying again") >= 1, "{err}");
    assert_eq!(names(&bare.cache()), [dataset::cache::LOCK_FILE]);
    assert!(coord.kill().is_empty(), "no stream ended whole");

    // The coordinator stalls after 3 chunks and the worker is killed mid-file: what is left is
    // a hidden temporary, which nothing trusts.
    let coord = Coordinator::start(TWO_MLPS, &[("HYPERSWEEP_TEST_DATASET_FAULT", "stall:3")]);
    let mut worker = bare
        .join(&coord, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = wait_for_partial(&bare.cache(), 3 * CHUNK);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(partial.is_file());
    let left = names(&bare.cache());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|n| n.starts_with('.')),
        "only hidden names: {left:?}"
    );
    assert!(dataset::locate(Some(&bare.cache())).is_err());
    coord.kill();

    // A later worker removes the temporary, fetches the four files and trains.
    let coord = Coordinator::start(TWO_MLPS, &[]);
    let out = output_within(
        &mut bare.join(&coord, &["--train-limit", "1000"]),
        Duration::from_secs(300),
    );
    assert_ok(&out);
    assert_eq!(coord.finish().len(), 1);
    assert_eq!(names(&bare.cache()), data_names());

    // One cached file damaged: found, deleted, and only it fetched again.
    let labels = dataset::file_path(&bare.cache(), &dataset::TEST_LABELS).unwrap();
    let mut bytes = std::fs::read(&labels).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&labels, &bytes).unwrap();
    let coord = Coordinator::start(TWO_MLPS, &[]);
    let out = output_within(
        &mut bare.join(&coord, &["--train-limit", "1000"]),
        Duration::from_secs(300),
    );
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, "damaged, deleted"), 1, "{err}");
    let sent = coord.finish();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("t10k-labels-idx1-ubyte"), "{}", sent[0]);
    assert_eq!(bytes_of(&sent[0]), bytes.len() as u64);
    assert_eq!(names(&bare.cache()), data_names());
    dataset::load(&bare.cache()).unwrap();
}

/// Waits until the cache holds a temporary of at least `bytes` (the chunks sent before the
/// coordinator stalled); returns its path.
fn wait_for_partial(cache: &Path, bytes: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for name in names(cache) {
            let path = cache.join(&name);
            if stdx_is_temp(&name) && std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes) {
                return path;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no temporary of {bytes} bytes in {}: {:?}",
            cache.display(),
            names(cache)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary name of `stdx::fs::temp_path` (`.<name>.tmp-<pid>-<n>`).
fn stdx_is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}
