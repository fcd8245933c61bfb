//! `worker` restarts itself once with glibc's malloc thresholds raised (`worker::malloc`):
//! the same process id and arguments, the thresholds in its environment; a threshold the user
//! set, or `HYPERSWEEP_MALLOC=system`, is left alone.

use std::process::{Command, Stdio};
use std::time::Duration;
use tests::{bin, Lines};

/// `name=value` of `pid`'s environment, if set.
fn environ_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// The environment a worker starts with, and the thresholds it must then run with.
type Case = (
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn a_worker_runs_with_the_malloc_thresholds_raised_unless_told_not_to() {
    let cases: [Case; 3] = [
        (&[], Some("33554432"), Some("134217728")),
        (&[("HYPERSWEEP_MALLOC", "system")], None, None),
        (&[("MALLOC_MMAP_THRESHOLD_", "65536")], Some("65536"), None),
    ];
    for (env, mmap, trim) in cases {
        // No coordinator listens there: the worker retries until killed, after `main` began.
        let mut c = Command::new(bin("worker"));
        c.args([
            "join",
            "--coordinator",
            "http://127.0.0.1:1",
            "--name",
            "malloc-probe",
        ])
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .env_remove("MALLOC_TRIM_THRESHOLD_")
        .env_remove("GLIBC_TUNABLES")
        .env_remove("HYPERSWEEP_MALLOC")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut worker = c.spawn().unwrap();
        let pid = worker.id();
        let mut lines = Lines::of(&mut worker);
        let retrying = lines.wait("coordinator unreachable", Duration::from_secs(30));
        let seen = (
            environ_var(pid, "MALLOC_MMAP_THRESHOLD_"),
            environ_var(pid, "MALLOC_TRIM_THRESHOLD_"),
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        );
        worker.kill().unwrap();
        worker.wait().unwrap();
        assert!(retrying.is_some(), "{env:?}: the worker never ran");
        assert_eq!(
            (seen.0.as_deref(), seen.1.as_deref()),
            (mmap, trim),
            "{env:?}: the thresholds of process {pid}"
        );
        let cmdline = String::from_utf8_lossy(&seen.2).replace('\0', " ");
        assert!(
            cmdline.contains("join --coordinator http://127.0.0.1:1 --name malloc-probe"),
            "{env:?}: the arguments kept: {cmdline}"
        );
    }
}
