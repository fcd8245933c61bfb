//! Sweep files: a TOML file naming a sweep, its base seed, `[defaults]` and one or more
//! `[[experiment]]` tables, each a grid over its axes or a search of its space (random or
//! TPE, issue 12), expanded into [`TrialSpec`]s and [`ExperimentPlan`]s.
//!
//! Reading happens in two stages, as everywhere in hypersweep. figment layers the file, then
//! `SWEEP_*` environment variables (`SWEEP_NAME`, `SWEEP_SEED`, `SWEEP_DEFAULTS__<KEY>`), then
//! command-line [`Overrides`], into a raw structure that rejects unknown keys; the raw values
//! are then checked one by one into a validated plan, which is expanded. figment forgets where
//! a key was written, so the file is also parsed with `toml`'s spanned parser ([`source`]):
//! every error names the file, line and column (or the environment variable, or the flag)
//! and the key. Nothing is expanded until the whole file is valid.
//!
//! In an experiment any key whose value is a list is an axis; a list of tables is one axis
//! (of any name, e.g. `model`) whose entries set several hyperparameters together; a table
//! of a hyperparameter is a distribution (`{ loguniform = [lo, hi] }`, ...). `search`,
//! `trials`, `metric`, `mode` and `stop` are the experiment's settings. Under `grid` (the
//! default) trials come in file order of experiments, then of axes, row-major (the first axis
//! varies slowest); under `random` they are drawn when the file is read, seeded by the sweep's
//! seed and the experiment's name; under `tpe` they are suggested while the sweep runs (the
//! plan holds the space, [`crate::suggest`] the sampler). A trial's id is
//! [`Hyperparams::trial_id`]; a configuration produced twice is kept once, by the first
//! experiment that produced it (which it then follows: its metric, its stop rules), counted
//! in [`Sweep::duplicates_dropped`] and, across experiments, listed in [`Sweep::shared`].
//!
//! The stages, one file each: `env` reads the `SWEEP_*` variables, `context` says where a bad
//! setting came from (file:line:col, variable or flag), `validate` checks the sweep's own
//! keys and `[defaults]`, `experiment` checks one `[[experiment]]` into its axes (`params`
//! parses each hyperparameter's value, `distribution` a distribution, `search` the search
//! settings), `space` is a searched experiment's space, and `expand` turns the valid plan
//! into trials.

mod context;
mod distribution;
mod env;
mod expand;
mod experiment;
mod params;
mod search;
mod source;
mod space;
mod validate;

use context::Ctx;
use env::read_env;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;
use source::SourceMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use self::search::SearchKind;
pub use crate::trial::TrialSpec;
pub use source::LineCol;
pub use space::SearchSpace;

use ::search::StopRules;
use proto::TrialId;
use results_format::Goal;

/// The prefix of the environment variables that override a sweep file.
pub const ENV_PREFIX: &str = "SWEEP_";

/// The most trials one sweep may expand to; past this a sweep is refused before anything is
/// allocated for it (a trial costs about 200 bytes).
pub const MAX_TRIALS: usize = 1_000_000;

/// Overrides given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--name`: the sweep's name (and so its results folder).
    pub name: Option<String>,
    /// `--seed`: the base seed of every trial that does not set its own.
    pub seed: Option<u64>,
}

/// A valid sweep, expanded into trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// A safe folder name: results go to `results/<name>/`.
    pub name: String,
    /// The file the sweep was read from.
    pub source: PathBuf,
    /// The base seed (the top-level `seed`, or `[defaults]`' one): every search's seed.
    pub seed: u64,
    /// Every distinct trial known when the file is read (grid and random), in expansion
    /// order. A tpe experiment's trials come later, one suggestion at a time.
    pub trials: Vec<TrialSpec>,
    /// Every experiment, in file order: how it searches and judges its trials.
    pub experiments: Vec<ExperimentPlan>,
    /// How many expanded configurations were equal to an earlier one and dropped.
    pub duplicates_dropped: usize,
    /// The dropped ones that an earlier experiment had: they run once, as its trials.
    pub shared: Vec<Shared>,
}

impl Sweep {
    /// The sum of the epochs of every trial, those tpe will suggest included.
    pub fn total_epochs(&self) -> u64 {
        let planned: u64 = self
            .trials
            .iter()
            .map(|t| u64::from(t.hparams.epochs))
            .sum();
        let suggested: u64 = self
            .experiments
            .iter()
            .filter(|e| e.search == SearchKind::Tpe)
            .map(|e| e.trials * u64::from(e.epochs.unwrap_or(0)))
            .sum();
        planned + suggested
    }

    /// Trials tpe will suggest while the sweep runs.
    pub fn to_suggest(&self) -> u64 {
        self.experiments
            .iter()
            .filter(|e| e.search == SearchKind::Tpe)
            .map(|e| e.trials)
            .sum()
    }
}

/// How one experiment picks and judges its trials.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentPlan {
    pub name: String,
    pub search: SearchKind,
    /// `trials` of a random or tpe search; the combinations of a grid's axes.
    pub trials: u64,
    /// What a trial's best epoch is chosen on (`metric`, `mode`; `val_acc`, `max` by default).
    pub goal: Goal,
    /// Its `stop` table (empty without one).
    pub stop: StopRules,
    /// The epochs of every trial, when no axis sets them (always with stop rules and tpe:
    /// the rules' `max_t`).
    pub epochs: Option<u32>,
    /// The space of a random or tpe search.
    pub space: Option<SearchSpace>,
    /// Whether its same-shape trials may train fused (issue 13): `fuse` of the experiment,
    /// else of `[defaults]`, else true.
    pub fuse: bool,
}

impl ExperimentPlan {
    /// An experiment of plain trials: a grid judged on validation accuracy, no stop rules.
    pub fn grid(name: impl Into<String>) -> ExperimentPlan {
        ExperimentPlan {
            name: name.into(),
            search: SearchKind::Grid,
            trials: 0,
            goal: Goal::default(),
            stop: StopRules::default(),
            epochs: None,
            space: None,
            fuse: true,
        }
    }
}

/// A configuration that a later experiment lists too: it runs once, as a trial of `follows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub trial: TrialId,
    /// The later experiment.
    pub experiment: String,
    /// The experiment the trial belongs to.
    pub follows: String,
}

/// Where a bad setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The sweep file, at a position when the file holds the key.
    File { path: PathBuf, at: Option<LineCol> },
    /// An environment variable, e.g. `SWEEP_DEFAULTS__LR`.
    Env { var: String },
    /// A command-line flag, e.g. `--seed`.
    Flag { flag: &'static str },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, at: Some(at) } => {
                write!(f, "{}:{}:{}", path.display(), at.line, at.column)
            }
            Origin::File { path, at: None } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// Why a sweep could not be loaded. Display is one line a user can act on, e.g.
/// `sweeps/lab4.toml:12:1: experiment "grid": key "lrr" is not a hyperparameter (...)`.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read sweep file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid {
        origin: Origin,
        /// The key path, dot-separated, list positions counted from 0 (e.g. `experiment.1.lr`).
        key: String,
        message: String,
    },
}

impl SweepError {
    /// The line in the sweep file the error points at, if it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SweepError::Invalid {
                origin: Origin::File { at: Some(at), .. },
                ..
            } => Some(at.line),
            _ => None,
        }
    }

    /// Where the bad setting came from (`None` when the file could not be read).
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            SweepError::Invalid { origin, .. } => Some(origin),
            SweepError::Read { .. } => None,
        }
    }
}

pub type Result<T, E = SweepError> = std::result::Result<T, E>;

/// Reads, validates and expands the sweep file at `path`, with `SWEEP_*` overrides from the
/// process environment and then `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Sweep> {
    let env = std::env::vars_os().filter_map(|(k, v)| {
        let k = k.into_string().ok()?;
        let is_ours = k
            .get(..ENV_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX));
        is_ours.then(|| (k, v.to_string_lossy().into_owned()))
    });
    load_with_env(path, overrides, env)
}

/// [`load`] with an explicit environment instead of the process's (variables without the
/// `SWEEP_` prefix are ignored).
pub fn load_with_env(
    path: &Path,
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Sweep> {
    let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text, overrides, env)
}

/// [`load_with_env`] of `text`, which `path` names in messages and in [`Sweep::source`].
pub fn load_str(
    path: &Path,
    text: &str,
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Sweep> {
    let syntax = |e: source::SyntaxError| SweepError::Invalid {
        origin: Origin::File {
            path: path.to_path_buf(),
            at: e.at,
        },
        key: String::new(),
        message: format!("invalid toml: {}", e.message),
    };
    let map = SourceMap::parse(text).map_err(syntax)?;
    let doc = map.document(text).map_err(syntax)?;
    let env = read_env(env)?;
    let ctx = Ctx {
        path,
        text,
        map: &map,
        env: &env,
        overrides,
    };

    let mut figment = Figment::from(Serialized::defaults(doc));
    for var in &env {
        figment = figment.merge(Serialized::default(&var.key.join("."), var.value.clone()));
    }
    if let Some(name) = &overrides.name {
        figment = figment.merge(Serialized::default("name", name));
    }
    if let Some(seed) = overrides.seed {
        figment = figment.merge(Serialized::default("seed", seed));
    }
    let raw: RawSweep = figment.extract().map_err(|e| ctx.figment_error(e))?;
    let plan = ctx.validate(raw)?;
    plan.expand(&ctx)
}

/// True when `name` can be used as a folder name as is: 1 to 64 ASCII letters, digits,
/// `-`, `_` or `.`, starting with a letter or digit.
pub fn is_safe_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The file, environment and flags merged by figment, before any value is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSweep {
    name: Option<Value>,
    seed: Option<Value>,
    #[serde(default)]
    defaults: Dict,
    #[serde(default)]
    experiment: Vec<Dict>,
}
