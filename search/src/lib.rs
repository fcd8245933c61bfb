//! hypersweep's search algorithms: what to try next and when to give up on a trial. Plain data
//! and methods, no I/O, no clock, no async: the coordinator feeds them what it has recorded and
//! stores what they answer, so a restarted coordinator gets the same answers by feeding the
//! same records again.
//!
//! - [`space`]: a search space of named parameters, each a distribution (`uniform`,
//!   `loguniform`, `int` with or without `log`, `choice` among n options), validated with
//!   errors that name the parameter, and counted when finite.
//! - [`random`]: random search, seeded by the sweep's seed and the experiment's name; a draw
//!   that repeats an existing trial is drawn again, within a bound.
//! - [`tpe`]: the Tree-structured Parzen Estimator as Optuna's `TPESampler` applies it with
//!   independent sampling (per parameter, Parzen estimators from [`parzen`], truncated normals
//!   from [`truncnorm`]); it suggests from finished trials only, so it never waits for pending ones.
//! - [`stop`]: the early-stopping rules over per-epoch reports (ASHA as Ray Tune's
//!   `ASHAScheduler`, the median rule, divergence), as one state machine whose state is a
//!   function of the reports fed to it, in order.
//! - [`synthetic`]: the synthetic objective, a closed-form stand-in for training.

mod parzen;
pub mod random;
mod rng;
pub mod space;
pub mod stop;
pub mod synthetic;
pub mod tpe;
mod truncnorm;

pub use random::RandomSearch;
pub use space::{Config, Distribution, Param, Space, Value};
pub use stop::asha::AshaConfig;
pub use stop::divergence::DivergenceConfig;
pub use stop::median::MedianConfig;
pub use stop::{Decision, EpochReport, Rule, Stop, StopReason, StopRules, Stopper};
pub use tpe::{Observation, Tpe, TpeConfig};

use std::fmt;

/// Whether a larger or a smaller metric is better (the sweep's `mode = "max" | "min"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Max,
    Min,
}

impl Mode {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Mode::Max => a > b,
            Mode::Min => a < b,
        }
    }

    /// `x` turned so that larger is better (what Ray does with `metric_op`).
    pub(crate) fn signed(self, x: f64) -> f64 {
        match self {
            Mode::Max => x,
            Mode::Min => -x,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Max => "max",
            Mode::Min => "min",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a search could not be set up or continued. Messages name the parameter or the rule;
/// the caller adds the experiment and where in the sweep file it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("the search space is empty: give at least one parameter a distribution or a list")]
    EmptySpace,
    #[error("parameter {0:?} is given twice")]
    DuplicateParam(String),
    #[error("parameter {param:?}: {reason}")]
    InvalidParam { param: String, reason: String },
    #[error(
        "the search space has only {available} configurations, fewer than the {wanted} trials asked for"
    )]
    TooFewConfigurations { available: u128, wanted: u64 },
    #[error(
        "no new configuration: {draws} draws and {scanned} scanned configurations all repeat \
         existing trials (ask for fewer trials or widen the space)"
    )]
    Exhausted { draws: u32, scanned: u128 },
    #[error("stop rule {rule}: {reason}")]
    InvalidRule { rule: &'static str, reason: String },
    #[error("stop rules need an experiment of at least 1 epoch, got 0")]
    NoEpochs,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
