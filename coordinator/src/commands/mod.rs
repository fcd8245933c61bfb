//! The `coordinator` subcommands, one file each: `run`, `check`, `status`, `report`.

pub mod check;
pub mod report;
pub mod run;
pub mod status;
