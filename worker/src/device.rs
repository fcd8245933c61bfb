//! Devices and threads.

use crate::{Error, Result};
use tch::Device;

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU if there is one, else the CPU),
/// checking that a requested GPU exists.
pub fn parse_device(s: &str) -> Result<Device> {
    let gpus = if s == "cpu" {
        0
    } else {
        tch::Cuda::device_count()
    };
    let bad = |why: String| Error::InvalidArgument(format!("--device {s:?}: {why}"));
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if gpus > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        _ => {
            let idx = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| bad("expected cpu, cuda, cuda:N or auto".into()))?,
                None => return Err(bad("expected cpu, cuda, cuda:N or auto".into())),
            };
            if (idx as i64) < gpus {
                Ok(Device::Cuda(idx))
            } else if gpus == 0 {
                Err(bad(if cfg!(hypersweep_cuda) {
                    "no CUDA device is visible".into()
                } else {
                    "this worker was built against a CPU-only libtorch (build with a CUDA \
                     libtorch, e.g. LIBTORCH_USE_PYTORCH=1 with a CUDA torch 2.11.0)"
                        .into()
                }))
            } else {
                Err(bad(format!("only {gpus} CUDA device(s) visible")))
            }
        }
    }
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
}
