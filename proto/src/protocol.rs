//! Which `sweep.v1` a build speaks, and which releases speak what (issue 10).
//!
//! The protocol number is the contract's version, apart from the release version: it moves
//! only when what a worker and a coordinator say to each other changes, so that a coordinator
//! can tell at `Register` whether it can serve a worker, and say which workers would match. A
//! worker sends [`PROTOCOL_VERSION`] in `RegisterRequest.protocol`; workers built before the
//! field existed send nothing (0), which is protocol 1. A coordinator serves every protocol in
//! [`OLDEST_SERVED`]`..=`[`PROTOCOL_VERSION`] and refuses any other with FAILED_PRECONDITION and
//! [`refusal`]'s text.
//!
//! Raise [`PROTOCOL_VERSION`] whenever a call, a field the other side relies on, or the meaning
//! of one changes, add a line to [`HISTORY`], and raise [`OLDEST_SERVED`] when the coordinator
//! can no longer serve the older workers.

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol a coordinator of this build serves: protocol 1 workers lack only
/// `FetchDataset`, which they never call (they read their own Fashion-MNIST).
pub const OLDEST_SERVED: u32 = 1;

/// One protocol: its number, the worker releases that speak it, and what it added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    pub number: u32,
    pub workers: &'static str,
    pub added: &'static str,
}

/// Every protocol so far, oldest first.
pub const HISTORY: &[Protocol] = &[
    Protocol {
        number: 1,
        workers: "workers up to 0.5.0 that send no protocol number",
        added: "Register, Lease, ReportEpoch, Heartbeat, Finish, Fail, UploadArtifact",
    },
    Protocol {
        number: 2,
        workers: "workers from 0.5.0 on that send protocol 2",
        added: "the worker's build in Register, FetchDataset",
    },
];

/// The protocol of a `RegisterRequest.protocol` as it arrives: 0 (absent) is protocol 1.
pub fn of_register(wire: u32) -> u32 {
    wire.max(1)
}

/// Whether a coordinator of this build serves `protocol`.
pub fn is_served(protocol: u32) -> bool {
    (OLDEST_SERVED..=PROTOCOL_VERSION).contains(&protocol)
}

/// What a coordinator at `coordinator_version` says to a worker at `worker_version` whose
/// `protocol` it does not serve: both numbers, which workers match, and what to do.
pub fn refusal(protocol: u32, worker_version: &str, coordinator_version: &str) -> String {
    let matching: Vec<String> = HISTORY
        .iter()
        .filter(|p| is_served(p.number))
        .map(|p| format!("protocol {}: {}", p.number, p.workers))
        .collect();
    let advice = if protocol > PROTOCOL_VERSION {
        format!(
            "the worker is newer than this coordinator: run a coordinator of the worker's \
             release ({worker_version}), or a worker of this coordinator's ({coordinator_version})"
        )
    } else {
        format!("run a worker of this coordinator's release ({coordinator_version})")
    };
    format!(
        "this worker ({worker_version}) speaks sweep.v1 protocol {protocol}; this coordinator \
         ({coordinator_version}) serves protocols {OLDEST_SERVED} to {PROTOCOL_VERSION} ({}); \
         {advice}; `worker --version` prints a worker's release",
        matching.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_ends_at_this_protocol_and_absent_means_one() {
        assert_eq!(HISTORY.last().unwrap().number, PROTOCOL_VERSION);
        assert!(HISTORY.windows(2).all(|w| w[1].number == w[0].number + 1));
        assert_eq!(of_register(0), 1);
        assert_eq!(of_register(2), 2);
        assert!(is_served(of_register(0)) && is_served(PROTOCOL_VERSION));
        assert!(!is_served(PROTOCOL_VERSION + 1));
    }

    #[test]
    fn a_refusal_names_both_protocols_and_the_matching_workers() {
        let m = refusal(PROTOCOL_VERSION + 1, "9.0.0", "0.5.0");
        assert!(
            m.contains(&format!("protocol {}", PROTOCOL_VERSION + 1)),
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "serves protocols {OLDEST_SERVED} to {PROTOCOL_VERSION}"
            )),
            "{m}"
        );
        assert!(
            m.contains("workers from 0.5.0 on that send protocol 2"),
            "{m}"
        );
        assert!(
            m.contains("coordinator of the worker's release (9.0.0)"),
            "{m}"
        );
    }
}
