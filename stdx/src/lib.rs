//! Small things every hypersweep crate needs exactly once and `std` lacks (rust-analyzer's
//! `stdx` is the model): [`fs`] writes a file so that no reader ever sees half of it, and
//! [`logging`] sets up `tracing` the same way in every binary.

pub mod fs;
pub mod logging;
