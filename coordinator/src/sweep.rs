//! Sweep files: a TOML file naming a sweep, its base seed, `[defaults]` and one or more
//! `[[experiment]]` tables, each a grid over its axes, expanded into [`TrialSpec`]s.
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
//! (of any name, e.g. `model`) whose entries set several hyperparameters together. Trials
//! come in file order of experiments, then of axes, row-major (the first axis varies
//! slowest). A trial's id is [`Hyperparams::trial_id`]; a configuration produced twice is
//! kept once, by the first experiment that produced it, and counted in
//! [`Sweep::duplicates_dropped`].

mod params;
mod source;

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use params::{describe, did_you_mean, Param, Setting};
use proto::{Hyperparams, TrialId};
use serde::Deserialize;
use source::SourceMap;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use crate::trial::TrialSpec;
pub use source::LineCol;

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
    /// Every distinct trial, in expansion order.
    pub trials: Vec<TrialSpec>,
    /// How many expanded configurations were equal to an earlier one and dropped.
    pub duplicates_dropped: usize,
}

impl Sweep {
    /// The sum of the epochs of every trial.
    pub fn total_epochs(&self) -> u64 {
        self.trials
            .iter()
            .map(|t| u64::from(t.hparams.epochs))
            .sum()
    }
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
struct RawSweep {
    name: Option<Value>,
    seed: Option<Value>,
    #[serde(default)]
    defaults: Dict,
    #[serde(default)]
    experiment: Vec<Dict>,
}

/// One `SWEEP_*` variable, with the key path it sets.
#[derive(Debug)]
struct EnvVar {
    var: String,
    key: Vec<String>,
    value: Value,
}

/// `SWEEP_*` variables that `coordinator run` reads itself (through clap), not settings of the
/// sweep: skipped here rather than refused as unknown. `SWEEP_TOKEN_FILE` is `--token-file`.
const NOT_SWEEP_SETTINGS: &[&str] = &["token_file"];

fn read_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<EnvVar>> {
    let mut out = Vec::new();
    for (var, raw) in vars {
        let Some(rest) = var
            .get(..ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            .map(|_| var[ENV_PREFIX.len()..].to_ascii_lowercase())
        else {
            continue;
        };
        if NOT_SWEEP_SETTINGS.contains(&rest.as_str()) {
            continue;
        }
        let key: Vec<String> = rest.split("__").map(str::to_string).collect();
        let known = match key.as_slice() {
            [k] => k == "name" || k == "seed",
            [d, k] => {
                d == "defaults"
                    && !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
            _ => false,
        };
        if !known {
            return Err(SweepError::Invalid {
                origin: Origin::Env { var },
                key: key.join("."),
                message: "unknown setting: a sweep reads only SWEEP_NAME, SWEEP_SEED and \
                          SWEEP_DEFAULTS__<KEY> (e.g. SWEEP_DEFAULTS__LR)"
                    .into(),
            });
        }
        let value = env_value(&key, raw);
        out.push(EnvVar { var, key, value });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// A name is text whatever it looks like; a number is read as Rust reads it (figment's own
/// parser misses exponents such as `1e-3`); anything else as figment reads env values.
fn env_value(key: &[String], raw: String) -> Value {
    let t = raw.trim();
    if key[0] == "name" {
        Value::from(raw)
    } else if let Ok(i) = t.parse::<i64>() {
        Value::from(i)
    } else if let Some(x) = t
        .parse::<f64>()
        .ok()
        .filter(|_| t.bytes().any(|b| b.is_ascii_digit()))
    {
        Value::from(x)
    } else if raw.contains('\\') && !raw.is_ascii() {
        // figment's parser takes a character count for a byte offset when it unescapes a
        // quoted string: a non-ASCII character before a backslash panics or garbles the text.
        // No setting has such a value, so it stays text and is refused as such.
        Value::from(raw)
    } else {
        raw.parse::<Value>().unwrap_or_else(|never| match never {})
    }
}

/// Which part of an entry an error points at.
#[derive(Clone, Copy)]
enum At {
    Key,
    Value,
}

/// What every check needs to say where a problem is.
struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    map: &'a SourceMap,
    env: &'a [EnvVar],
    overrides: &'a Overrides,
}

fn key_path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn join(base: &[String], more: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

fn not_a_hyperparameter(key: &str, also: &str) -> String {
    let mut msg = format!(
        "key {key:?} is not a hyperparameter (expected one of {}{also})",
        Param::NAMES
    );
    if let Some(s) = did_you_mean(key, Param::ALL.map(Param::name)) {
        let _ = write!(msg, "; did you mean {s:?}?");
    }
    msg
}

impl Ctx<'_> {
    fn origin(&self, key: &[String], at: At) -> Origin {
        let first = key.first().map(String::as_str);
        if first == Some("name") && self.overrides.name.is_some() {
            return Origin::Flag { flag: "--name" };
        }
        if first == Some("seed") && self.overrides.seed.is_some() {
            return Origin::Flag { flag: "--seed" };
        }
        // The last variable in merge order is the one whose value figment kept.
        if let Some(var) = self.env.iter().rev().find(|v| key.starts_with(&v.key)) {
            return Origin::Env {
                var: var.var.clone(),
            };
        }
        let pos = match at {
            At::Key => self.map.key_position(self.text, key),
            At::Value => self.map.value_position(self.text, key),
        };
        Origin::File {
            path: self.path.to_path_buf(),
            at: pos,
        }
    }

    fn error(&self, key: &[String], at: At, message: impl Into<String>) -> SweepError {
        SweepError::Invalid {
            origin: self.origin(key, at),
            key: key.join("."),
            message: message.into(),
        }
    }

    fn figment_error(&self, e: figment::Error) -> SweepError {
        let mut key = e.path.clone();
        let message = match &e.kind {
            Kind::UnknownField(field, expected) => {
                key.push(field.clone());
                let mut msg = format!(
                    "unknown key {field:?} (expected one of {})",
                    expected.join(", ")
                );
                if let Some(s) = did_you_mean(field, expected.iter().copied()) {
                    let _ = write!(msg, "; did you mean {s:?}?");
                }
                msg
            }
            Kind::InvalidType(actual, _) if key.first().is_some_and(|k| k == "experiment") => {
                format!(
                    "experiment must be a list of tables, written [[experiment]], found {actual}"
                )
            }
            Kind::InvalidType(actual, _) if key.first().is_some_and(|k| k == "defaults") => {
                format!("defaults must be a table, written [defaults], found {actual}")
            }
            other if key.is_empty() => other.to_string(),
            other => format!("{}: {other}", key.join(".")),
        };
        self.error(&key, At::Key, message)
    }

    /// Keys of `dict` in the order the file has them, then any the file lacks (from the
    /// environment) in name order.
    fn ordered<'d>(&self, dict: &'d Dict, path: &[String]) -> Vec<(&'d String, &'d Value)> {
        let from_file = self.map.keys_in_order(path);
        let mut out: Vec<_> = from_file
            .iter()
            .filter_map(|k| dict.get_key_value(k))
            .collect();
        out.extend(dict.iter().filter(|(k, _)| !from_file.contains(k)));
        out
    }

    fn validate(&self, raw: RawSweep) -> Result<Plan> {
        let name_key = key_path(&["name"]);
        let name = match raw.name {
            None => {
                return Err(self.error(
                    &name_key,
                    At::Key,
                    "missing key \"name\": give the sweep a name, e.g. name = \"lab4\" \
                     (results go to results/<name>/)",
                ))
            }
            Some(Value::String(_, s)) if is_safe_name(&s) => s,
            Some(Value::String(_, s)) => {
                return Err(self.error(
                    &name_key,
                    At::Value,
                    format!(
                        "sweep name {s:?} is not a safe folder name (use 1 to 64 letters, digits, \
                         '-', '_' or '.', starting with a letter or digit)"
                    ),
                ))
            }
            Some(other) => {
                return Err(self.error(
                    &name_key,
                    At::Value,
                    format!("name must be a string, found {}", describe(&other)),
                ))
            }
        };

        let mut base = Hyperparams::default();
        if let Some(seed) = &raw.seed {
            let seed_key = key_path(&["seed"]);
            if let Value::Array(..) = seed {
                return Err(self.error(
                    &seed_key,
                    At::Value,
                    "seed must be a single whole number here; for repeats put a list of seeds \
                     in an [[experiment]]",
                ));
            }
            Setting::parse(Param::Seed, seed)
                .map_err(|m| self.error(&seed_key, At::Value, m))?
                .apply(&mut base);
        }

        let defaults_key = key_path(&["defaults"]);
        for (key, value) in self.ordered(&raw.defaults, &defaults_key) {
            let at = join(&defaults_key, &[key]);
            let Some(param) = Param::from_key(key) else {
                return Err(self.error(
                    &at,
                    At::Key,
                    format!("defaults: {}", not_a_hyperparameter(key, "")),
                ));
            };
            if matches!(value, Value::Array(..) | Value::Dict(..)) {
                return Err(self.error(
                    &at,
                    At::Value,
                    format!(
                        "defaults: {key} must be a single value, found {}; axes belong in an [[experiment]]",
                        describe(value)
                    ),
                ));
            }
            Setting::parse(param, value)
                .map_err(|m| self.error(&at, At::Value, format!("defaults: {m}")))?
                .apply(&mut base);
        }

        if raw.experiment.is_empty() {
            return Err(self.error(
                &key_path(&["experiment"]),
                At::Key,
                "no experiments: add at least one [[experiment]] table with a name",
            ));
        }
        let mut experiments = Vec::with_capacity(raw.experiment.len());
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        let mut total: usize = 0;
        for (i, dict) in raw.experiment.iter().enumerate() {
            let exp = self.experiment(i, dict, &base)?;
            match names.entry(exp.name.clone()) {
                Entry::Occupied(first) => {
                    let first_at = self
                        .map
                        .key_position(self.text, first.get())
                        .map_or(String::new(), |p| format!(" (first at line {})", p.line));
                    return Err(self.error(
                        &join(&exp.key, &["name"]),
                        At::Value,
                        format!(
                            "experiment name {:?} is used twice{first_at}; give each experiment its own name",
                            exp.name
                        ),
                    ));
                }
                Entry::Vacant(v) => {
                    v.insert(join(&exp.key, &["name"]));
                }
            }
            total = exp
                .trial_count()
                .and_then(|n| total.checked_add(n))
                .filter(|&n| n <= MAX_TRIALS)
                .ok_or_else(|| {
                    self.error(
                        &exp.key,
                        At::Key,
                        format!(
                            "experiment {:?}: the sweep expands to more than {MAX_TRIALS} trials; \
                             split it or shorten its axes",
                            exp.name
                        ),
                    )
                })?;
            experiments.push(exp);
        }
        Ok(Plan {
            name,
            experiments,
            total,
        })
    }

    fn experiment(&self, i: usize, dict: &Dict, base: &Hyperparams) -> Result<Experiment> {
        let key = key_path(&["experiment", &i.to_string()]);
        let name = match dict.get("name") {
            None => {
                return Err(self.error(
                    &key,
                    At::Key,
                    format!("experiment {} has no name: add name = \"...\" to it", i + 1),
                ))
            }
            Some(Value::String(_, s))
                if !s.trim().is_empty() && !s.chars().any(char::is_control) =>
            {
                s.clone()
            }
            Some(Value::String(_, s)) => {
                return Err(self.error(
                    &join(&key, &["name"]),
                    At::Value,
                    format!("experiment name {s:?} must be non-empty printable text"),
                ))
            }
            Some(other) => {
                return Err(self.error(
                    &join(&key, &["name"]),
                    At::Value,
                    format!(
                        "experiment name must be a string, found {}",
                        describe(other)
                    ),
                ))
            }
        };
        let ctx = format!("experiment {name:?}");
        let mut hparams = base.clone();
        let mut axes: Vec<Vec<Vec<Setting>>> = Vec::new();
        // Which key set each hyperparameter: one place only, so there is no precedence to learn.
        let mut set_by: HashMap<Param, String> = HashMap::new();
        let mut claim = |param: Param, by: String, at: &[String]| -> Result<()> {
            match set_by.entry(param) {
                Entry::Occupied(first) => Err(self.error(
                    at,
                    At::Key,
                    format!(
                        "{ctx}: {} is set both by {} and by {by}; set it in one place",
                        param.name(),
                        first.get()
                    ),
                )),
                Entry::Vacant(v) => {
                    v.insert(by);
                    Ok(())
                }
            }
        };

        for (k, value) in self.ordered(dict, &key) {
            if k == "name" {
                continue;
            }
            let at = join(&key, &[k]);
            match (Param::from_key(k), value) {
                (Some(param), Value::Array(_, items)) => {
                    if items.is_empty() {
                        return Err(self.error(
                            &at,
                            At::Value,
                            format!("{ctx}: axis {k:?} is empty; give it at least one value"),
                        ));
                    }
                    let mut axis = Vec::with_capacity(items.len());
                    for (j, item) in items.iter().enumerate() {
                        let item_at = join(&at, &[&j.to_string()]);
                        if matches!(item, Value::Array(..) | Value::Dict(..)) {
                            return Err(self.error(
                                &item_at,
                                At::Value,
                                format!(
                                    "{ctx}: axis {k:?} must list single values, found {}; an axis of \
                                     tables needs a name that is not a hyperparameter, e.g. model = [{{ ... }}]",
                                    describe(item)
                                ),
                            ));
                        }
                        let s = Setting::parse(param, item)
                            .map_err(|m| self.error(&item_at, At::Value, format!("{ctx}: {m}")))?;
                        axis.push(vec![s]);
                    }
                    claim(param, format!("axis {k:?}"), &at)?;
                    axes.push(axis);
                }
                (Some(_), Value::Dict(..)) => {
                    return Err(self.error(
                        &at,
                        At::Value,
                        format!("{ctx}: {k} must be a value or a list of values, found a table"),
                    ))
                }
                (Some(param), scalar) => {
                    let s = Setting::parse(param, scalar)
                        .map_err(|m| self.error(&at, At::Value, format!("{ctx}: {m}")))?;
                    claim(param, format!("key {k:?}"), &at)?;
                    s.apply(&mut hparams);
                }
                (None, Value::Array(_, items))
                    if items.iter().any(|v| matches!(v, Value::Dict(..))) =>
                {
                    let mut axis = Vec::with_capacity(items.len());
                    let mut params: Vec<Param> = Vec::new();
                    for (j, item) in items.iter().enumerate() {
                        let entry_at = join(&at, &[&j.to_string()]);
                        let entry_ctx = format!("{ctx}: axis {k:?} entry {}", j + 1);
                        let Value::Dict(_, entry) = item else {
                            return Err(self.error(
                                &entry_at,
                                At::Value,
                                format!("{entry_ctx} must be a table, found {}", describe(item)),
                            ));
                        };
                        let mut settings = Vec::with_capacity(entry.len());
                        for (ek, ev) in self.ordered(entry, &entry_at) {
                            let ev_at = join(&entry_at, &[ek]);
                            let Some(param) = Param::from_key(ek) else {
                                return Err(self.error(
                                    &ev_at,
                                    At::Key,
                                    format!("{entry_ctx}: {}", not_a_hyperparameter(ek, "")),
                                ));
                            };
                            if matches!(ev, Value::Array(..) | Value::Dict(..)) {
                                return Err(self.error(
                                    &ev_at,
                                    At::Value,
                                    format!(
                                        "{entry_ctx}: {ek} must be a single value, found {}",
                                        describe(ev)
                                    ),
                                ));
                            }
                            let s = Setting::parse(param, ev).map_err(|m| {
                                self.error(&ev_at, At::Value, format!("{entry_ctx}: {m}"))
                            })?;
                            if !params.contains(&param) {
                                params.push(param);
                            }
                            settings.push(s);
                        }
                        axis.push(settings);
                    }
                    for param in params {
                        claim(param, format!("axis {k:?}"), &at)?;
                    }
                    axes.push(axis);
                }
                (None, Value::Array(_, items)) if items.is_empty() => {
                    return Err(self.error(
                        &at,
                        At::Value,
                        format!("{ctx}: axis {k:?} is empty; give it at least one entry"),
                    ))
                }
                (None, _) => {
                    return Err(self.error(
                        &at,
                        At::Key,
                        format!(
                            "{ctx}: {}",
                            not_a_hyperparameter(k, ", or an axis given as a list of tables")
                        ),
                    ))
                }
            }
        }
        Ok(Experiment {
            key,
            name,
            hparams,
            axes,
        })
    }
}

/// A validated sweep, not yet expanded.
struct Plan {
    name: String,
    experiments: Vec<Experiment>,
    total: usize,
}

/// A validated experiment: its hyperparameters apart from the axes, and each axis as the
/// settings of each of its entries.
struct Experiment {
    key: Vec<String>,
    name: String,
    hparams: Hyperparams,
    axes: Vec<Vec<Vec<Setting>>>,
}

impl Experiment {
    fn trial_count(&self) -> Option<usize> {
        self.axes
            .iter()
            .try_fold(1usize, |n, axis| n.checked_mul(axis.len()))
    }
}

impl Plan {
    fn expand(self, ctx: &Ctx<'_>) -> Result<Sweep> {
        let mut trials: Vec<TrialSpec> = Vec::with_capacity(self.total);
        let mut seen: HashMap<TrialId, usize> = HashMap::with_capacity(self.total);
        let mut duplicates_dropped = 0;
        for exp in &self.experiments {
            let mut idx = vec![0usize; exp.axes.len()];
            'grid: loop {
                let mut h = exp.hparams.clone();
                for (axis, &i) in exp.axes.iter().zip(&idx) {
                    for s in &axis[i] {
                        s.apply(&mut h);
                    }
                }
                // Each value was checked alone; `validate` looks at each field alone, so this
                // holds, but a future cross-field rule would surface here rather than in training.
                h.validate().map_err(|e| {
                    ctx.error(&exp.key, At::Key, format!("experiment {:?}: {e}", exp.name))
                })?;
                // ffv0-ffv2 have no dropout layer: a dropout axis over them would otherwise
                // give identical runs under different ids.
                let h = h.normalized();
                let id = h.trial_id();
                match seen.entry(id) {
                    Entry::Occupied(first) => {
                        let first = &trials[*first.get()];
                        if first.hparams != h {
                            return Err(ctx.error(
                                &exp.key,
                                At::Key,
                                format!(
                                    "experiment {:?}: trial id {} is shared by two different \
                                     configurations ({} and {}); change one of them",
                                    exp.name,
                                    first.id,
                                    first.hparams.canonical(),
                                    h.canonical()
                                ),
                            ));
                        }
                        duplicates_dropped += 1;
                    }
                    Entry::Vacant(v) => {
                        let id = v.key().clone();
                        v.insert(trials.len());
                        trials.push(TrialSpec {
                            id,
                            experiment: exp.name.clone(),
                            hparams: h,
                        });
                    }
                }
                // Row-major: the last axis varies fastest.
                let mut k = idx.len();
                loop {
                    if k == 0 {
                        break 'grid;
                    }
                    k -= 1;
                    idx[k] += 1;
                    if idx[k] < exp.axes[k].len() {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }
        Ok(Sweep {
            name: self.name,
            source: ctx.path.to_path_buf(),
            trials,
            duplicates_dropped,
        })
    }
}
