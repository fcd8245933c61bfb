//! What a worker says about the machine it trains on (issue 10): the host name, the device's
//! model (`NVIDIA H200`, or the CPU's model name from `/proc/cpuinfo`) and, on a GPU, this
//! process's GPU memory.
//!
//! tch 0.24 exposes neither GPU names nor memory, and the workspace denies `unsafe`: both come
//! from NVML through `nvml-wrapper`, which loads the driver's `libnvidia-ml.so.1` at run time.
//! Without a driver there is no NVML, and the GPU's name falls back to `CUDA device N` and its
//! memory to none. NVML numbers every GPU of the machine; CUDA numbers only those in
//! `CUDA_VISIBLE_DEVICES`, in that order ([`nvml_target`] maps one onto the other).
//!
//! The memory is the process's as the driver counts it, read at the end of each epoch:
//! libtorch's caching allocator keeps what it reserved until the process ends, so the reading
//! is the process's peak so far (the largest trial it trained, plus the CUDA context).

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use std::sync::OnceLock;
use tch::Device;

/// NVML, loaded once per process; `None` without an NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| {
        // The driver installs libnvidia-ml.so.1; the unversioned name (nvml-wrapper's
        // default) comes only with development packages.
        Nvml::builder()
            .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
            .init()
            .or_else(|_| Nvml::init())
            .ok()
    })
    .as_ref()
}

/// This machine's host name.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The model of `device`: the GPU's name, or the CPU's.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => nvml_device(i)
            .and_then(|d| d.name().ok())
            .unwrap_or_else(|| format!("CUDA device {i}")),
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| cpu_model(&c))
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
    }
}

/// This process's memory on `device` as the driver reports it, in bytes; `None` on the CPU,
/// without NVML, or when the driver does not list the process (a container with its own PID
/// namespace sees other PIDs than the driver).
pub fn process_memory(device: Device) -> Option<u64> {
    let Device::Cuda(i) = device else {
        return None;
    };
    let pid = std::process::id();
    let processes = nvml_device(i)?.running_compute_processes().ok()?;
    processes
        .iter()
        .find(|p| p.pid == pid)
        .and_then(|p| match p.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(bytes),
            UsedGpuMemory::Unavailable => None,
        })
}

/// NVML's handle of CUDA device `cuda_index`.
fn nvml_device(cuda_index: usize) -> Option<nvml_wrapper::Device<'static>> {
    let nvml = nvml()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    match nvml_target(cuda_index, visible.as_deref())? {
        Target::Index(n) => nvml.device_by_index(n).ok(),
        Target::Uuid(uuid) => nvml.device_by_uuid(uuid).ok(),
    }
}

/// Which GPU NVML calls CUDA's device `cuda_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Index(u32),
    Uuid(String),
}

/// CUDA's device `cuda_index` as NVML knows it, given `CUDA_VISIBLE_DEVICES`: unset, the same
/// index (NVML numbers by PCI bus, CUDA fastest first: on a machine with GPUs of different
/// models set `CUDA_DEVICE_ORDER=PCI_BUS_ID`, as for PyTorch); set, its entry `cuda_index`, an
/// index or a `GPU-…`/`MIG-…` UUID. CUDA stops at the first entry it cannot use, and so does
/// this.
fn nvml_target(cuda_index: usize, visible: Option<&str>) -> Option<Target> {
    let Some(visible) = visible else {
        return u32::try_from(cuda_index).ok().map(Target::Index);
    };
    let entry = visible.split(',').map(str::trim).nth(cuda_index)?;
    if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
        Some(Target::Uuid(entry.to_owned()))
    } else {
        entry.parse().ok().map(Target::Index)
    }
}

/// The first `model name` of a `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_devices_map_onto_nvml_through_cuda_visible_devices() {
        assert_eq!(nvml_target(1, None), Some(Target::Index(1)));
        assert_eq!(nvml_target(0, Some("2,3")), Some(Target::Index(2)));
        assert_eq!(nvml_target(1, Some("2, 3")), Some(Target::Index(3)));
        assert_eq!(nvml_target(2, Some("2,3")), None);
        assert_eq!(
            nvml_target(0, Some("GPU-8f6e1b2a-0000")),
            Some(Target::Uuid("GPU-8f6e1b2a-0000".into()))
        );
        assert_eq!(nvml_target(0, Some("")), None);
    }

    #[test]
    fn the_cpu_model_comes_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454 48-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9454 48-Core Processor\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("AMD EPYC 9454 48-Core Processor")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn without_a_gpu_there_is_no_gpu_memory_and_the_cpu_has_a_name() {
        assert_eq!(process_memory(Device::Cpu), None);
        assert!(!device_name(Device::Cpu).is_empty());
        assert!(!host().is_empty());
    }
}
