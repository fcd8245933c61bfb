//! The sweep's own keys checked into a [`Plan`]: its name, its base seed, `[defaults]`, and
//! the list of experiments (each checked by `experiment.rs`), with their names unique and
//! their trials counted against [`MAX_TRIALS`].

use super::context::{join, key_path, not_a_hyperparameter, At, Ctx};
use super::expand::Plan;
use super::experiment::Experiment;
use super::params::{describe, Param, Setting};
use super::search::SETTINGS;
use super::{is_safe_name, RawSweep, Result, MAX_TRIALS};
use figment::value::{Dict, Value};
use proto::Hyperparams;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

impl Ctx<'_> {
    pub(super) fn validate(&self, raw: RawSweep) -> Result<Plan> {
        let name = self.sweep_name(raw.name)?;
        let mut base = Hyperparams::default();
        if let Some(seed) = &raw.seed {
            self.base_seed(seed)?.apply(&mut base);
        }
        let fuse = self.defaults(&raw.defaults, &mut base)?;
        let (experiments, total) = self.experiments(&raw.experiment, &base)?;
        Ok(Plan {
            name,
            seed: base.seed,
            fuse,
            experiments,
            total,
        })
    }

    /// `name`: required, a safe folder name (results go to `results/<name>/`).
    fn sweep_name(&self, name: Option<Value>) -> Result<String> {
        let name_key = key_path(&["name"]);
        match name {
            None => Err(self.error(
                &name_key,
                At::Key,
                "missing key \"name\": give the sweep a name, e.g. name = \"lab4\" \
                 (results go to results/<name>/)",
            )),
            Some(Value::String(_, s)) if is_safe_name(&s) => Ok(s),
            Some(Value::String(_, s)) => Err(self.error(
                &name_key,
                At::Value,
                format!(
                    "sweep name {s:?} is not a safe folder name (use 1 to 64 letters, digits, \
                     '-', '_' or '.', starting with a letter or digit)"
                ),
            )),
            Some(other) => Err(self.error(
                &name_key,
                At::Value,
                format!("name must be a string, found {}", describe(&other)),
            )),
        }
    }

    /// The top-level `seed`: one number (repeats are a list of seeds in an experiment).
    fn base_seed(&self, seed: &Value) -> Result<Setting> {
        let seed_key = key_path(&["seed"]);
        if let Value::Array(..) = seed {
            return Err(self.error(
                &seed_key,
                At::Value,
                "seed must be a single whole number here; for repeats put a list of seeds \
                 in an [[experiment]]",
            ));
        }
        Setting::parse(Param::Seed, seed).map_err(|m| self.error(&seed_key, At::Value, m))
    }

    /// `[defaults]`: single values of hyperparameters, applied to `base`, and `fuse` (issue
    /// 13; true unless set), which it returns.
    fn defaults(&self, defaults: &Dict, base: &mut Hyperparams) -> Result<bool> {
        let defaults_key = key_path(&["defaults"]);
        let mut fuse = true;
        for (key, value) in self.ordered(defaults, &defaults_key) {
            let at = join(&defaults_key, &[key]);
            if key == "fuse" {
                fuse = self.fuse_flag("defaults", value, &at)?;
                continue;
            }
            if SETTINGS.contains(&key.as_str()) {
                return Err(self.error(
                    &at,
                    At::Key,
                    format!("defaults: {key} is a setting of each [[experiment]], not a default"),
                ));
            }
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
                .apply(base);
        }
        Ok(fuse)
    }

    /// Every `[[experiment]]`, with unique names, and the sweep's trial count.
    fn experiments(&self, dicts: &[Dict], base: &Hyperparams) -> Result<(Vec<Experiment>, usize)> {
        if dicts.is_empty() {
            return Err(self.error(
                &key_path(&["experiment"]),
                At::Key,
                "no experiments: add at least one [[experiment]] table with a name",
            ));
        }
        let mut experiments = Vec::with_capacity(dicts.len());
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        let mut total: usize = 0;
        for (i, dict) in dicts.iter().enumerate() {
            let exp = self.experiment(i, dict, base)?;
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
        Ok((experiments, total))
    }
}
