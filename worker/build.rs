//! Makes the worker binary find its libtorch without LD_LIBRARY_PATH, able to use CUDA when
//! the libtorch it is built against has it, and able to say which build it is
//! (`src/build_info.rs`).
//!
//! torch-sys passes `-rpath` only to its own C++ compile, so a crate that links libtorch must
//! add it for its own binaries. `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (links = "tch")
//! to crates that depend on it directly. The rpath is absolute: `scripts/bundle-worker.sh`
//! replaces it with an `$ORIGIN`-relative one in the copies it bundles.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-check-cfg=cfg(hypersweep_cuda)");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    let cuda = lib
        .as_deref()
        .is_some_and(|lib| Path::new(lib).join("libtorch_cuda.so").exists());
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // MKL asks the executable's `mkl_serv_intel_cpu_true` (src/mkl.rs): pull it out of the
    // library (`-u`: nothing in the program calls it) and put it in the dynamic symbol table,
    // where MKL's lookup finds it.
    println!("cargo:rustc-link-arg=-Wl,-u,mkl_serv_intel_cpu_true");
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=mkl_serv_intel_cpu_true");
    // The linker drops libtorch_cuda.so under --as-needed (nothing references its symbols
    // directly) and CUDA is then silently unavailable: keep it when it is there.
    if cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-cfg=hypersweep_cuda");
    }
    let versions = lib
        .as_deref()
        .map(|lib| Versions::of(Path::new(lib)))
        .unwrap_or_default();
    println!(
        "cargo:rustc-env=HYPERSWEEP_BUILD_VARIANT={}",
        if cuda { "cuda" } else { "cpu" }
    );
    println!(
        "cargo:rustc-env=HYPERSWEEP_LIBTORCH_VERSION={}",
        versions.libtorch.as_deref().unwrap_or("unknown")
    );
    // A CPU build has no CUDA, whatever the libtorch it came from was compiled for.
    let cuda_version = match (cuda, versions.cuda) {
        (false, _) => "none".to_owned(),
        (true, Some(v)) => v,
        (true, None) => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=HYPERSWEEP_CUDA_VERSION={cuda_version}");
}

/// The libtorch and CUDA versions of a libtorch folder, read from the files each kind of
/// folder has beside its `lib/`: the PyTorch wheel's `torch/version.py` (`__version__ =
/// '2.11.0+cu130'`, `cuda = '13.0'`; what `LIBTORCH_USE_PYTORCH` and the CUDA bundle's folder
/// use), else `build-version` (`2.11.0` from scripts/setup.sh, `2.11.0+cu130` in PyTorch's
/// libtorch zips, whose `+cuXYZ` then gives the CUDA version).
#[derive(Default)]
struct Versions {
    libtorch: Option<String>,
    cuda: Option<String>,
}

impl Versions {
    fn of(lib: &Path) -> Versions {
        let Some(root) = lib.parent() else {
            return Versions::default();
        };
        let version_py = root.join("version.py");
        let build_version = root.join("build-version");
        // Only files that exist: Cargo reruns a build script on every build while one it
        // watches is missing, and that would recompile the worker every time.
        for file in [&version_py, &build_version] {
            if file.exists() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
        let mut v = Versions::default();
        if let Ok(text) = std::fs::read_to_string(&version_py) {
            v.libtorch = py_string(&text, "__version__").map(|s| local_split(&s).0);
            v.cuda = py_string(&text, "cuda");
        }
        if let Ok(text) = std::fs::read_to_string(&build_version) {
            let (version, local) = local_split(text.trim());
            v.libtorch.get_or_insert(version);
            if v.cuda.is_none() {
                v.cuda = local.as_deref().and_then(cuda_of_local);
            }
        }
        v
    }
}

/// `2.11.0+cu130` → (`2.11.0`, `cu130`).
fn local_split(version: &str) -> (String, Option<String>) {
    match version.split_once('+') {
        Some((v, local)) => (v.to_owned(), Some(local.to_owned())),
        None => (version.to_owned(), None),
    }
}

/// `cu130` → `13.0`, `cu128` → `12.8`; `cpu` → none.
fn cuda_of_local(local: &str) -> Option<String> {
    let digits = local.strip_prefix("cu")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(format!("{major}.{minor}"))
}

/// The string value of `name = '...'` or `name: Optional[str] = '...'` (quotes either way)
/// in a Python file; `None` for `None`.
fn py_string(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.split(':').next()?.trim() != name {
            return None;
        }
        let value = value.trim();
        let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = value.strip_prefix(quote)?.split(quote).next()?;
        Some(inner.to_owned())
    })
}
