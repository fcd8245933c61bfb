//! glibc's allocator settings for training (issue 13).
//!
//! glibc's `malloc` hands every block above its mmap threshold (128 KiB at first, raised
//! only when such a block is freed) pages of its own: mapped at the allocation, unmapped at
//! the free, and zero-filled page by page at first touch. A training step's activations and
//! gradients are such blocks (a CNN batch's 2 MB activations, a fused group's 1.8 MB weight
//! gradient), allocated and freed at every step, so every step paid its page faults again,
//! until the process happened to free a large enough block. The CNN benchmark
//! (`worker/examples/cnn_variants.rs --variant worker`, no dataset loaded) trained 13.3 s per
//! 938 steps on one thread against 6.3 s with the thresholds below; lab4's workers had been
//! fast by chance (loading the dataset frees such blocks). This takes the chance away.
//!
//! The thresholds are read from the environment when the process starts, and the workspace
//! denies `unsafe` (so no `mallopt`): [`tune`] re-executes the worker once with them set, the
//! same executable, arguments and process id. Set either variable, or `GLIBC_TUNABLES`,
//! yourself to choose other values; `HYPERSWEEP_MALLOC=system` keeps glibc's defaults.
//! No crate does this: an allocator crate (jemalloc, mimalloc) replaces Rust's allocator,
//! not the one libtorch's C++ allocates with.

/// Blocks up to this size come from the heap, reused from one step to the next (glibc's
/// largest threshold on 64-bit).
pub const MMAP_THRESHOLD: u64 = 32 << 20;
/// Free memory at the top of the heap kept, not returned to the system, up to this size.
pub const TRIM_THRESHOLD: u64 = 128 << 20;

const MMAP_VAR: &str = "MALLOC_MMAP_THRESHOLD_";
const TRIM_VAR: &str = "MALLOC_TRIM_THRESHOLD_";

/// Whether the allocator was left as the environment says: a threshold or glibc tunables
/// already set, or `HYPERSWEEP_MALLOC=system`.
fn left_alone(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    [MMAP_VAR, TRIM_VAR, "GLIBC_TUNABLES"]
        .iter()
        .any(|v| var(v).is_some())
        || var("HYPERSWEEP_MALLOC").is_some_and(|v| v == "system")
}

/// Call first in `main`: re-executes this process with glibc's thresholds raised, unless
/// they are set (or refused, see the module documentation). Returns only when it did not
/// re-execute: nothing to do, or the exec failed (then training runs on glibc's defaults,
/// slower, and a warning says why).
pub fn tune() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || left_alone(|v| std::env::var_os(v)) {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let error = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(MMAP_VAR, MMAP_THRESHOLD.to_string())
            .env(TRIM_VAR, TRIM_THRESHOLD.to_string())
            .exec();
        // Logging is not set up yet: this runs before anything else.
        eprintln!(
            "warning: could not restart {} with glibc's malloc thresholds raised ({error}): \
             training runs on glibc's defaults, slower",
            exe.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn thresholds_set_by_the_user_or_refused_are_left_alone() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| OsString::from(x))
            }
        };
        assert!(!left_alone(env(&[])));
        assert!(!left_alone(env(&[("HYPERSWEEP_MALLOC", "tuned")])));
        assert!(left_alone(env(&[("HYPERSWEEP_MALLOC", "system")])));
        assert!(left_alone(env(&[(MMAP_VAR, "1000000")])));
        assert!(left_alone(env(&[(TRIM_VAR, "0")])));
        assert!(left_alone(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.mmap_threshold=1000000"
        )])));
    }
}
