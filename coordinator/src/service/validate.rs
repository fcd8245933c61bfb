//! Checks of what arrives on the wire, before anything reaches the scheduler: a missing or
//! malformed field is `INVALID_ARGUMENT` with a message naming it. (Message-level checks of
//! hyperparameters and metrics are `proto::convert`'s `TryFrom`s; these are the fields the
//! coordinator reads itself.)

use crate::scheduler::{WorkerId, WorkerLoad};
use proto::{pb, Artifact, TrialId};
use tonic::Status;

/// Longest worker name, device or id accepted from the wire.
pub const MAX_LABEL: usize = 256;
/// Longest failure reason kept.
pub const MAX_REASON: usize = 4096;
/// Most trials one heartbeat may list.
pub const MAX_RUNNING: usize = 4096;

pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

/// At most `max` bytes of `s`, cut at a char boundary, for echoing wire text in messages.
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub fn worker_id(s: String) -> Result<WorkerId, Status> {
    if s.is_empty() {
        return Err(invalid("missing field worker_id"));
    }
    if s.len() > MAX_LABEL {
        return Err(invalid(format!(
            "worker_id is longer than {MAX_LABEL} bytes"
        )));
    }
    Ok(WorkerId(s))
}

fn trial_id(s: String) -> Result<TrialId, Status> {
    if s.is_empty() {
        return Err(invalid("missing field trial_id"));
    }
    if !TrialId::is_well_formed(&s) {
        return Err(invalid(format!("malformed trial id {:?}", clip(&s, 64))));
    }
    Ok(TrialId(s))
}

/// What a heartbeat says about the worker's work: a throughput that is a number of samples
/// per second (finite, not negative).
pub fn load(r: &pb::HeartbeatRequest) -> Result<WorkerLoad, Status> {
    if !(r.samples_per_second.is_finite() && r.samples_per_second >= 0.0) {
        return Err(invalid(format!(
            "samples_per_second must be a finite number >= 0, got {}",
            r.samples_per_second
        )));
    }
    Ok(WorkerLoad {
        samples_per_second: r.samples_per_second,
        gpu_memory_bytes: r.gpu_memory_bytes,
    })
}

pub fn trial_attempt(t: Option<pb::TrialAttempt>) -> Result<(TrialId, u32), Status> {
    let t = t.ok_or_else(|| invalid("missing field trial"))?;
    let id = trial_id(t.trial_id)?;
    if t.attempt == 0 {
        return Err(invalid(
            "missing field trial.attempt (attempts are 1-based)",
        ));
    }
    Ok((id, t.attempt))
}

/// The name and device a worker registers with.
pub fn labels(name: &str, device: &str) -> Result<(), Status> {
    if name.len() > MAX_LABEL || device.len() > MAX_LABEL {
        return Err(invalid(format!(
            "name and device must be at most {MAX_LABEL} bytes"
        )));
    }
    Ok(())
}

/// The build a worker registers with, as one line (`0.5.0 (cuda build, libtorch 2.11.0, CUDA
/// 13.0)`, what `worker --version` prints after the name); empty when it sent none (a worker
/// before issue 10).
pub fn build(r: &pb::RegisterRequest) -> String {
    if r.build_variant.is_empty() {
        return String::new();
    }
    let cuda = if r.cuda_version.is_empty() {
        "none"
    } else {
        clip(&r.cuda_version, 32)
    };
    format!(
        "{} ({} build, libtorch {}, CUDA {cuda})",
        clip(&r.version, 64),
        clip(&r.build_variant, 16),
        clip(&r.libtorch_version, 32)
    )
}

/// A plain file name that is one of the artifacts ([`Artifact::ALL`]).
pub fn artifact_name(name: &str) -> Result<Artifact, Status> {
    if name.is_empty() {
        return Err(invalid("missing field name"));
    }
    if name.contains(['/', '\\', '\0']) || name.contains("..") || name.starts_with('.') {
        return Err(invalid(format!(
            "artifact name {:?} is not a plain file name",
            clip(name, 64)
        )));
    }
    Artifact::from_file_name(name).ok_or_else(|| {
        invalid(format!(
            "artifact name {:?} is not one of {}",
            clip(name, 64),
            Artifact::ALL.map(Artifact::file_name).join(", ")
        ))
    })
}
