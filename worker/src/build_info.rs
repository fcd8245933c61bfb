//! Which build this worker is: its version, whether it links libtorch_cuda (a `cpu` or a
//! `cuda` build), and the libtorch and CUDA versions of the libtorch folder it was linked
//! against. All of it is decided at build time by `build.rs` (from that folder's
//! `version.py` or `build-version`) and baked in; `worker --version` prints it.

use std::fmt;

/// Whether the worker links `libtorch_cuda` (and so can train on a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Cpu,
    Cuda,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Cpu => "cpu",
            Variant::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker build, as `worker --version` states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// The workspace version (`[workspace.package] version`).
    pub version: &'static str,
    pub variant: Variant,
    /// libtorch's version without its local part (`2.11.0`); `unknown` when the libtorch
    /// folder said nothing.
    pub libtorch: &'static str,
    /// The CUDA version libtorch_cuda was built for (`13.0`); `None` in a cpu build.
    pub cuda: Option<&'static str>,
}

/// This binary's build.
pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    variant: if cfg!(hypersweep_cuda) {
        Variant::Cuda
    } else {
        Variant::Cpu
    },
    libtorch: env!("HYPERSWEEP_LIBTORCH_VERSION"),
    cuda: if cfg!(hypersweep_cuda) {
        Some(env!("HYPERSWEEP_CUDA_VERSION"))
    } else {
        None
    },
};

/// What `worker --version` prints after the name, e.g.
/// `0.5.0 (cuda build, libtorch 2.11.0, CUDA 13.0)`; the same text as `BUILD`'s `Display`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HYPERSWEEP_BUILD_VARIANT"),
    " build, libtorch ",
    env!("HYPERSWEEP_LIBTORCH_VERSION"),
    ", CUDA ",
    env!("HYPERSWEEP_CUDA_VERSION"),
    ")"
);

impl fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} build, libtorch {}, CUDA {})",
            self.version,
            self.variant,
            self.libtorch,
            self.cuda.unwrap_or("none")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_is_the_build_info() {
        assert_eq!(BUILD.to_string(), VERSION_LINE);
        assert_eq!(BUILD.variant.as_str(), env!("HYPERSWEEP_BUILD_VARIANT"));
        assert_eq!(BUILD.variant == Variant::Cuda, BUILD.cuda.is_some());
    }

    #[test]
    fn the_libtorch_version_is_what_tch_expects() {
        assert_eq!(BUILD.libtorch, crate::LIBTORCH_VERSION);
    }
}
