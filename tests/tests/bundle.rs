//! The CPU worker bundle runs where nothing of the build is: `scripts/bundle-worker.sh cpu
//! --profile dev` packs the debug worker this test run built; unpacked into an empty folder
//! outside the checkout and started with a scrubbed environment (`env -i`, a fresh `HOME`), it
//! says which build it is and trains one epoch on a subset, loading every shared library from
//! the bundle but glibc's (checked with `ldd`, and with the loader's own log of the libraries
//! the training run actually loaded).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use tests::{assert_ok, bin, repo};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a bundle leaves to the system (scripts/bundle-worker.sh says why): glibc's libraries,
/// the kernel's vDSO, libstdc++ and libgcc_s.
const SYSTEM: [&str; 10] = [
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
    "libstdc++.so.6",
    "libgcc_s.so.1",
];

#[test]
fn the_cpu_bundle_trains_from_an_empty_folder_under_env_i() {
    let _exclusive = tests::exclusive();
    let archive = cpu_bundle();
    let name = format!("hypersweep-worker-{VERSION}-linux-x86_64-cpu");
    assert_eq!(
        archive.file_name().unwrap().to_string_lossy(),
        format!("{name}.tar.zst")
    );

    let unpacked = unpack(&archive);
    assert_eq!(names(unpacked.path()), [name.as_str()], "one top folder");
    // What the loader reports is the real path: compare with the real path.
    let top = unpacked.path().join(&name).canonicalize().unwrap();
    assert_eq!(names(&top), ["lib", "worker"]);
    let libs = names(&top.join("lib"));
    for lib in [
        "libtorch_cpu.so",
        "libc10.so",
        "libcudart.so.13",
        "libcupti.so.13",
    ] {
        assert!(libs.iter().any(|l| l == lib), "{lib} missing: {libs:?}");
    }
    let cuda: Vec<_> = libs
        .iter()
        .filter(|l| l.starts_with("libcu") || l.starts_with("libnv") || l.contains("cuda"))
        .filter(|l| !["libcudart.so.13", "libcupti.so.13"].contains(&l.as_str()))
        .collect();
    assert!(
        cuda.is_empty(),
        "more of CUDA than the two runtime libraries: {cuda:?}"
    );

    let worker = top.join("worker");
    assert_runpath_is_relative(&worker);
    assert_everything_resolves_inside(&top);

    let home = tempfile::tempdir().unwrap();
    let version = scrubbed(&worker, home.path(), &[], &["--version"]);
    assert_ok(&version);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("worker {VERSION} (cpu build, libtorch 2.11.0, CUDA none)")
    );

    let data = repo().join("data/fashion-mnist");
    let data = data.to_str().unwrap();
    let train = scrubbed(
        &worker,
        home.path(),
        // The loader logs every library it loads, dlopen'ed ones included.
        &["LD_DEBUG=libs"],
        &[
            "train",
            "--arch",
            "ffv0",
            "--hidden",
            "32",
            "--lr",
            "0.1",
            "--epochs",
            "1",
            "--format",
            "json",
            "--data-dir",
            data,
            "--train-limit",
            "2000",
            "--test-limit",
            "500",
        ],
    );
    assert_ok(&train);
    let stdout = String::from_utf8_lossy(&train.stdout);
    let epochs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(epochs.len(), 1, "{stdout}");
    assert_eq!(epochs[0]["epoch"], 1);
    let acc = epochs[0]["test_acc"].as_f64().unwrap();
    assert!(acc > 0.3, "test accuracy {acc} after one epoch: {stdout}");

    let stderr = String::from_utf8_lossy(&train.stderr);
    let loaded: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("calling init: ").map(|(_, path)| path.trim()))
        .collect();
    assert!(
        loaded.iter().any(|p| p.ends_with("/libtorch_cpu.so")),
        "the loader's log shows no libtorch_cpu.so:\n{stderr}"
    );
    for path in loaded {
        let soname = path.rsplit('/').next().unwrap();
        assert!(
            Path::new(path).starts_with(&top) || SYSTEM.contains(&soname),
            "the training run loaded {path}, outside the bundle"
        );
    }
}

/// The cpu bundle of this test run's debug worker, built once for every test that needs it
/// (in the test target's scratch folder, `CARGO_TARGET_TMPDIR`).
pub fn cpu_bundle() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bundle-cpu");
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
            bundle_cpu(&out)
        })
        .clone()
}

/// `archive` unpacked into a fresh temporary folder outside the checkout.
pub fn unpack(archive: &Path) -> tempfile::TempDir {
    let unpacked = tempfile::tempdir().unwrap();
    assert!(!unpacked.path().starts_with(repo()));
    assert_ok(
        &Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(unpacked.path())
            .output()
            .unwrap(),
    );
    unpacked
}

/// Runs the script on the debug worker of this test run; returns the archive it printed.
fn bundle_cpu(out: &Path) -> PathBuf {
    let worker = bin("worker");
    let target = worker.parent().unwrap().parent().unwrap();
    let run = Command::new("bash")
        .arg(repo().join("scripts/bundle-worker.sh"))
        .args(["cpu", "--profile", "dev", "--out"])
        .arg(out)
        .env("CARGO_TARGET_DIR", target)
        // The test needs the bundle, not its smallest size.
        .env("BUNDLE_ZSTD_LEVEL", "1")
        .output()
        .unwrap();
    assert_ok(&run);
    let printed = String::from_utf8(run.stdout).unwrap();
    let archive = PathBuf::from(printed.trim());
    assert!(archive.starts_with(out) && archive.is_file(), "{printed}");
    archive
}

/// `path` run as `env -i HOME=… XDG_CACHE_HOME=… [vars] path args` from inside `home`.
fn scrubbed(path: &Path, home: &Path, vars: &[&str], args: &[&str]) -> Output {
    Command::new("env")
        .arg("-i")
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_CACHE_HOME={}", home.join(".cache").display()))
        .args(vars)
        .arg(path)
        .args(args)
        .current_dir(home)
        .output()
        .unwrap()
}

/// The sorted names in a folder.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The worker's only search path is its own `lib/`: nothing of the build machine is baked in.
fn assert_runpath_is_relative(worker: &Path) {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(worker)
        .output()
        .unwrap();
    assert_ok(&out);
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .collect();
    assert_eq!(paths.len(), 1, "{dynamic}");
    assert!(paths[0].ends_with("[$ORIGIN/lib]"), "{}", paths[0]);
}

/// `ldd` of the worker and of every bundled library, with an empty environment: every
/// library is found, in the bundle or among glibc's.
fn assert_everything_resolves_inside(top: &Path) {
    let mut files = vec![top.join("worker")];
    for lib in names(&top.join("lib")) {
        files.push(top.join("lib").join(lib));
    }
    for file in files {
        let out = Command::new("env")
            .args(["-i", "PATH=/usr/bin:/bin", "ldd"])
            .arg(&file)
            .output()
            .unwrap();
        assert_ok(&out);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((soname, rest)) = line.trim().split_once(" => ") else {
                continue;
            };
            let path = rest.split(" (").next().unwrap();
            assert!(
                Path::new(path).starts_with(top) || SYSTEM.contains(&soname),
                "{}: {soname} resolves to {path}, outside the bundle",
                file.display()
            );
        }
    }
}
