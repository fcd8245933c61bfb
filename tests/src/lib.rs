//! Helpers the end-to-end tests in `tests/` share: where the repository and the workspace's
//! binaries are, the DuckDB CLI, and checks on finished processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
