//! hypersweep's wire contract and the domain types that both sides of it share.
//!
//! - [`pb`] is the code `tonic`/`prost` generate from `proto/sweep.proto` (package `sweep.v1`).
//! - [`trial`] holds the domain types: [`Arch`], [`Hyperparams`] (with validation and the
//!   content-derived [`TrialId`]) and [`EpochMetrics`]. Scheduling and training code use these,
//!   never the generated types.
//! - [`artifact`] names the files a worker uploads for a finished trial.
//! - [`protocol`] is the contract's version ([`PROTOCOL_VERSION`]): which protocols a
//!   coordinator serves, and which worker releases speak which.
//! - [`convert`] is the one place where the two meet: `From` for domain → wire, `TryFrom` for
//!   wire → domain, since a message's required fields may be missing or out of range.

pub mod artifact;
pub mod convert;
pub mod protocol;
pub mod trial;

pub use artifact::Artifact;
pub use convert::ConvertError;
pub use protocol::PROTOCOL_VERSION;
pub use trial::{Arch, EpochMetrics, Hyperparams, InvalidHyperparams, Objective, TrialId};

/// Generated gRPC types and stubs for package `sweep.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("sweep.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sweep_descriptor");
}
