//! Devices and threads.
//!
//! `--device` says where a worker trains: `cpu`; `cuda:N`, GPU N for the worker and every
//! one of its slots; `cuda`, the visible GPUs shared round-robin among the slots (slot `i` on
//! GPU `i mod count`; several slots may share one); `auto`, the same when there is a GPU and
//! the CPU otherwise. GPUs are counted and numbered as CUDA sees them, after
//! `CUDA_VISIBLE_DEVICES`. [`assign`] is the rule, on a device count given to it.

use crate::{Error, Result};
use tch::Device;

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Cpu,
    /// A GPU if there is one, else the CPU.
    Auto,
    /// The visible GPUs, shared among the slots.
    AnyGpu,
    /// This GPU for every slot.
    Gpu(usize),
}

const EXPECTED: &str = "expected cpu, cuda, cuda:N or auto";

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_request(s: &str) -> Result<Request, String> {
    match s {
        "cpu" => Ok(Request::Cpu),
        "auto" => Ok(Request::Auto),
        "cuda" => Ok(Request::AnyGpu),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Request::Gpu)
            .ok_or_else(|| EXPECTED.to_owned()),
    }
}

/// The device of slot `slot` (0 for a worker without slots) when `gpus` GPUs are visible.
pub fn assign(request: Request, slot: usize, gpus: usize) -> Result<Device, String> {
    let none = || {
        if cfg!(hypersweep_cuda) {
            "no CUDA device is visible".to_owned()
        } else {
            "this worker was built against a CPU-only libtorch (build with a CUDA libtorch, \
             e.g. LIBTORCH_USE_PYTORCH=1 with a CUDA torch 2.11.0, or use the cuda worker bundle)"
                .to_owned()
        }
    };
    match request {
        Request::Cpu => Ok(Device::Cpu),
        Request::Auto if gpus == 0 => Ok(Device::Cpu),
        Request::Auto | Request::AnyGpu if gpus > 0 => Ok(Device::Cuda(slot % gpus)),
        Request::AnyGpu => Err(none()),
        Request::Gpu(n) if n < gpus => Ok(Device::Cuda(n)),
        Request::Gpu(_) if gpus == 0 => Err(none()),
        Request::Gpu(_) => Err(format!("only {gpus} CUDA device(s) visible")),
        Request::Auto => unreachable!("auto is decided by the GPU count above"),
    }
}

/// The device `--device s` gives slot `slot`, checking that the GPU exists.
pub fn for_slot(s: &str, slot: usize) -> Result<Device> {
    let bad = |why: String| Error::InvalidArgument(format!("--device {s:?}: {why}"));
    let request = parse_request(s).map_err(bad)?;
    let gpus = match request {
        Request::Cpu => 0,
        _ => usize::try_from(tch::Cuda::device_count()).unwrap_or(0),
    };
    assign(request, slot, gpus).map_err(bad)
}

/// [`for_slot`] of a process without slots (`worker train`).
pub fn parse_device(s: &str) -> Result<Device> {
    for_slot(s, 0)
}

/// Short device name for logs and results: `cpu`, `cuda:0`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Sets libtorch's intra-op threads (and one inter-op thread). libtorch's default is one
/// thread per core, which, with several training processes on one machine, oversubscribes
/// the cores: two 2-thread processes on 2 cores ran the CNN 16× slower than one.
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
    static INTEROP: std::sync::Once = std::sync::Once::new();
    INTEROP.call_once(|| tch::set_num_interop_threads(1));
}

/// The thread count the coordinator's plan asks for (issue 13), shared by the task that talks
/// to the coordinator (which sets it from `ReportEpoch` and heartbeat answers) and the
/// training thread (which applies it between epochs, so that every epoch trains on one
/// count). 0: nothing asked.
#[derive(Debug, Clone, Default)]
pub struct PlannedThreads(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl PlannedThreads {
    /// What the coordinator asked for; 0 (keep) changes nothing.
    pub fn ask(&self, n: u32) {
        if n > 0 {
            self.0.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets what was asked: a new trial starts on the registered count.
    pub fn clear(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The count asked for, if any.
    pub fn asked(&self) -> Option<usize> {
        let asked = self.0.load(std::sync::atomic::Ordering::Relaxed);
        usize::try_from(asked).ok().filter(|&n| n > 0)
    }

    /// Sets libtorch's threads to what was asked, if anything and if it differs; call it only
    /// between epochs. Returns the new count when it changed.
    pub fn apply(&self) -> Option<usize> {
        let asked = self.asked()?;
        let now = usize::try_from(tch::get_num_threads()).unwrap_or(0);
        (asked != now).then(|| {
            set_threads(asked);
            asked
        })
    }
}

/// The training thread's side of the plan: between epochs it applies what the coordinator
/// asks, and for the rest of a trial it declines lent threads once an epoch on them was not
/// clearly faster than the last one on the registered count. The coordinator sees only its
/// own workers: when other processes keep the "idle" cores busy, OpenMP's threads wait for
/// each other at every barrier, and 2 threads ran a CNN epoch 3–16× slower than 1 on the
/// 2-core development machine under a load average of ~10 (measured 2026-11-30).
#[derive(Debug)]
pub struct ThreadSwitch {
    plan: PlannedThreads,
    /// The registered count, what the trial started on.
    base: usize,
    /// Seconds of the last epoch trained on `base`.
    base_seconds: Option<f64>,
    declined: bool,
}

/// What [`ThreadSwitch::between_epochs`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch {
    /// The next epoch trains on this many threads, as planned.
    Planned(usize),
    /// The lent threads did not pay: back to the registered count for the rest of the trial
    /// (the caller sets it: [`set_threads`]).
    Declined { lent: f64, base: f64 },
}

impl ThreadSwitch {
    pub fn new(plan: PlannedThreads, base: usize) -> ThreadSwitch {
        ThreadSwitch {
            plan,
            base: base.max(1),
            base_seconds: None,
            declined: false,
        }
    }

    /// The registered count.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Call between epochs with the epoch just trained (its thread count and seconds);
    /// says what changed for the next one.
    pub fn between_epochs(&mut self, trained_on: u32, seconds: f64) -> Option<Switch> {
        let lent = usize::try_from(trained_on).unwrap_or(0) > self.base;
        if !lent {
            self.base_seconds = Some(seconds);
        } else if !self.declined {
            if let Some(base) = self.base_seconds.filter(|&b| !paid(b, seconds)) {
                self.declined = true;
                return Some(Switch::Declined {
                    lent: seconds,
                    base,
                });
            }
        }
        if self.declined {
            return None;
        }
        self.plan.apply().map(Switch::Planned)
    }
}

/// Whether an epoch on lent threads (`lent` seconds) was clearly faster than the last one on
/// the registered count (`base` seconds): by a tenth at least.
fn paid(base: f64, lent: f64) -> bool {
    lent < 0.9 * base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("auto").is_ok());
        for bad in ["gpu", "cuda:x", "cuda0", ""] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected cpu, cuda, cuda:N or auto"),
                "{bad}: {err}"
            );
        }
        if tch::Cuda::device_count() == 0 {
            assert!(parse_device("cuda:0").is_err());
        }
        assert!(parse_device("cuda:99").is_err());
    }

    #[test]
    fn slots_are_spread_round_robin_over_the_visible_gpus_or_pinned() {
        let on = |r, gpus| -> Vec<Device> {
            (0..5).map(|slot| assign(r, slot, gpus).unwrap()).collect()
        };
        use Device::{Cpu, Cuda};
        assert_eq!(
            on(Request::AnyGpu, 2),
            [Cuda(0), Cuda(1), Cuda(0), Cuda(1), Cuda(0)]
        );
        assert_eq!(
            on(Request::Auto, 3),
            [Cuda(0), Cuda(1), Cuda(2), Cuda(0), Cuda(1)]
        );
        assert_eq!(on(Request::Auto, 0), [Cpu; 5]);
        assert_eq!(on(Request::Gpu(1), 2), [Cuda(1); 5]);
        assert_eq!(on(Request::Cpu, 8), [Cpu; 5]);
        assert!(assign(Request::Gpu(2), 0, 2)
            .unwrap_err()
            .contains("only 2 CUDA device(s) visible"));
        for r in [Request::AnyGpu, Request::Gpu(0)] {
            let err = assign(r, 0, 0).unwrap_err();
            assert!(err.contains("CUDA") || err.contains("CPU-only"), "{err}");
        }
        assert_eq!(parse_request("cuda:3"), Ok(Request::Gpu(3)));
        assert_eq!(parse_request("cuda"), Ok(Request::AnyGpu));
    }

    #[test]
    fn a_planned_count_is_kept_until_cleared_and_zero_keeps_it() {
        // Not `apply`: libtorch's thread count is global to this test process.
        let plan = PlannedThreads::default();
        assert_eq!(plan.asked(), None, "nothing asked");
        plan.ask(2);
        plan.clone().ask(0);
        assert_eq!(plan.asked(), Some(2), "0 keeps, and clones share the plan");
        plan.clear();
        assert_eq!(plan.asked(), None);
    }

    #[test]
    fn lent_threads_are_kept_only_while_they_pay() {
        assert!(paid(10.0, 6.0), "1.6× faster: the quiet machine");
        assert!(
            !paid(4.0, 28.0),
            "7× slower: the cores were not idle after all"
        );
        assert!(!paid(10.0, 9.5), "5% is noise");
        let mut switch = ThreadSwitch::new(PlannedThreads::default(), 1);
        // Epochs on the registered count only remember their time; nothing asked, no change.
        assert_eq!(switch.between_epochs(1, 4.0), None);
        // An epoch on 2 lent threads that took 28 s: back to 1 for good.
        assert_eq!(
            switch.between_epochs(2, 28.0),
            Some(Switch::Declined {
                lent: 28.0,
                base: 4.0
            })
        );
        switch.plan.ask(2);
        assert_eq!(
            switch.between_epochs(1, 4.0),
            None,
            "declined: asks are ignored"
        );
    }
}
