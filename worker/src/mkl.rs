//! MKL's fastest kernels on every x86 processor, AMD's included (issue 13).
//!
//! libtorch's float matrix products go to the MKL linked into it, and MKL chooses its
//! kernels by vendor before instruction set: on a processor that is not Intel's it asks
//! `mkl_serv_intel_cpu_true`, gets 0, and takes its AVX2 "zen" kernels even where the
//! processor has AVX-512. Defined here, in the executable, that function answers for MKL
//! (an executable's symbols come first in the dynamic linker's lookup, and libtorch calls
//! MKL's through its symbol table): MKL then chooses by instruction set alone, as it does on
//! Intel's processors, and checks each set with `cpuid` as it always does: a processor
//! without AVX-512 gets MKL's AVX2 kernels for Intel's processors rather than its "zen" ones
//! (not measured: the development machine has AVX-512).
//!
//! On the 2-core development machine (AMD EPYC with AVX-512, libtorch 2.11.0's MKL, 2
//! threads), side by side with `HYPERSWEEP_MKL=vendor` in one run of
//! `worker/examples/fused_speed.rs --k 9`: solo `ffv2` h64 trials trained 5.6 trial-epochs per
//! second instead of 4.5 (1.25×), a fused group of nine 19.3 instead of 11.3 (1.7×). In
//! PyTorch on that machine, with the same answer given to its MKL, a `[64, 784] × [784, 576]`
//! product (the group of nine's input layer) took 146 µs instead of 305 µs. Other libraries
//! (oneDNN's convolutions) choose by instruction set already.
//!
//! `HYPERSWEEP_MKL=vendor` gives MKL its own answer back (Intel or not, from
//! `/proc/cpuinfo`), for instance to compare with PyTorch as shipped on the same processor, or
//! to reproduce a run of a build from before this module: with it, `ffv2` and `cnn` trials
//! came out bit for bit as that build's (metrics and weights). Without it the kernels sum in
//! another order, so on such a processor a trial's numbers differ from those builds' in their
//! last bits, as they would on another processor. Local workers inherit the variable from
//! `coordinator run`.
//!
//! No crate does this, and no MKL setting does either: `MKL_DEBUG_CPU_TYPE` is gone since MKL
//! 2020, and `MKL_ENABLE_INSTRUCTIONS` only lowers the choice. The build script exports the
//! symbol from every binary of this package (`--export-dynamic-symbol`).

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Whether MKL has asked [`mkl_serv_intel_cpu_true`] in this process: the proof that the
/// definition here is the one MKL calls.
static ASKED: AtomicBool = AtomicBool::new(false);

/// Whether MKL asked this executable's [`mkl_serv_intel_cpu_true`] (it asks at its first
/// product).
pub fn asked() -> bool {
    ASKED.load(Ordering::Relaxed)
}

/// The environment variable that hands MKL's vendor check back to MKL.
pub const VAR: &str = "HYPERSWEEP_MKL";

/// MKL's question "is this an Intel processor?", answered for it: yes, unless
/// `HYPERSWEEP_MKL=vendor`. MKL asks when it detects the processor; the answer is read once.
/// (A value [`check`] refuses counts as unset here: MKL cannot be given an error.)
// `no_mangle` is `unsafe_code` to the linter: two definitions of one symbol are undefined
// behaviour. Here a second definition is the whole point, and the function has the C
// signature MKL declares (`int mkl_serv_intel_cpu_true(void)`).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> c_int {
    ASKED.store(true, Ordering::Relaxed);
    static ANSWER: OnceLock<c_int> = OnceLock::new();
    *ANSWER.get_or_init(|| c_int::from(answer(std::env::var(VAR).ok().as_deref(), vendor)))
}

/// The answer for the setting `var`; `vendor` reads the processor's vendor.
fn answer(var: Option<&str>, vendor: impl FnOnce() -> Option<String>) -> bool {
    match parse(var) {
        Ok(Setting::Vendor) => vendor().is_some_and(|v| v == "GenuineIntel"),
        Ok(Setting::InstructionSet) | Err(_) => true,
    }
}

/// How MKL chooses its kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// By instruction set alone (`HYPERSWEEP_MKL` unset or empty).
    InstructionSet,
    /// As MKL itself would, by vendor first (`HYPERSWEEP_MKL=vendor`).
    Vendor,
}

fn parse(var: Option<&str>) -> Result<Setting, String> {
    match var {
        None | Some("") => Ok(Setting::InstructionSet),
        Some("vendor") => Ok(Setting::Vendor),
        Some(other) => Err(format!(
            "{VAR}={other:?}: expected \"vendor\" (MKL's own choice of kernels) or nothing \
             (kernels by instruction set, the default)"
        )),
    }
}

/// Refuses a `HYPERSWEEP_MKL` that means nothing, before anything trains: call it first in
/// `main`, where the error can reach the user.
pub fn check() -> crate::Result<()> {
    let var = std::env::var_os(VAR).map(|v| v.to_string_lossy().into_owned());
    parse(var.as_deref())
        .map(|_| ())
        .map_err(crate::Error::InvalidArgument)
}

/// The processor's vendor as `/proc/cpuinfo` names it (`GenuineIntel`, `AuthenticAMD`).
fn vendor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id")?.split(':').nth(1))
        .map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build script's export works: libtorch's MKL calls this executable's definition
    /// (on every processor: MKL asks before it chooses a kernel).
    #[test]
    fn libtorchs_mkl_asks_this_executable() {
        let a = tch::Tensor::ones([64, 784], (tch::Kind::Float, tch::Device::Cpu));
        let _ = a.matmul(&a.tr());
        assert!(
            asked(),
            "MKL did not call worker::mkl::mkl_serv_intel_cpu_true"
        );
    }

    #[test]
    fn mkl_chooses_by_instruction_set_unless_told_vendor() {
        let amd = || Some("AuthenticAMD".to_string());
        let intel = || Some("GenuineIntel".to_string());
        assert!(answer(None, amd));
        assert!(answer(Some(""), amd));
        assert!(!answer(Some("vendor"), amd));
        assert!(answer(Some("vendor"), intel));
        assert!(!answer(Some("vendor"), || None));
        assert!(answer(Some("Vendor"), amd), "refused by check, not obeyed");
        assert!(parse(Some("vendor")).is_ok() && parse(Some("")).is_ok() && parse(None).is_ok());
        let err = parse(Some("intel")).unwrap_err();
        assert!(
            err.contains("HYPERSWEEP_MKL=\"intel\"") && err.contains("\"vendor\""),
            "{err}"
        );
    }
}
