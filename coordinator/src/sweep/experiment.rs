//! One `[[experiment]]` checked into an [`Experiment`]: its name, its single values, and its
//! axes. A key whose value is a list is an axis of that hyperparameter; a list of tables
//! under any other name (e.g. `model`) is one axis whose entries set several hyperparameters
//! together. Each hyperparameter is set in one place only, so there is no precedence to
//! learn.

use super::context::{join, key_path, not_a_hyperparameter, At, Ctx};
use super::params::{describe, Param, Setting};
use super::Result;
use figment::value::{Dict, Value};
use proto::Hyperparams;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// A validated experiment: its hyperparameters apart from the axes, and each axis as the
/// settings of each of its entries.
pub(super) struct Experiment {
    pub key: Vec<String>,
    pub name: String,
    pub hparams: Hyperparams,
    pub axes: Vec<Vec<Vec<Setting>>>,
}

impl Experiment {
    pub fn trial_count(&self) -> Option<usize> {
        self.axes
            .iter()
            .try_fold(1usize, |n, axis| n.checked_mul(axis.len()))
    }
}

/// Which key set each hyperparameter of one experiment.
struct Claims<'c> {
    ctx: &'c Ctx<'c>,
    /// `experiment "<name>"`, for messages.
    what: &'c str,
    set_by: HashMap<Param, String>,
}

impl Claims<'_> {
    /// `param` is set by `by` (at `at`); an error when another key set it already.
    fn claim(&mut self, param: Param, by: String, at: &[String]) -> Result<()> {
        match self.set_by.entry(param) {
            Entry::Occupied(first) => Err(self.ctx.error(
                at,
                At::Key,
                format!(
                    "{}: {} is set both by {} and by {by}; set it in one place",
                    self.what,
                    param.name(),
                    first.get()
                ),
            )),
            Entry::Vacant(v) => {
                v.insert(by);
                Ok(())
            }
        }
    }
}

impl<'a> Ctx<'a> {
    /// Experiment `i` (0-based) of the file, over the sweep's `base` hyperparameters.
    pub(super) fn experiment(
        &self,
        i: usize,
        dict: &Dict,
        base: &Hyperparams,
    ) -> Result<Experiment> {
        let key = key_path(&["experiment", &i.to_string()]);
        let name = self.experiment_name(i, dict, &key)?;
        let what = format!("experiment {name:?}");
        let mut hparams = base.clone();
        let mut axes: Vec<Vec<Vec<Setting>>> = Vec::new();
        let mut claims = Claims {
            ctx: self,
            what: &what,
            set_by: HashMap::new(),
        };
        for (k, value) in self.ordered(dict, &key) {
            if k == "name" {
                continue;
            }
            let at = join(&key, &[k]);
            match (Param::from_key(k), value) {
                (Some(param), Value::Array(_, items)) => {
                    axes.push(self.value_axis(&what, k, param, items, &at)?);
                    claims.claim(param, format!("axis {k:?}"), &at)?;
                }
                (Some(_), Value::Dict(..)) => {
                    return Err(self.error(
                        &at,
                        At::Value,
                        format!("{what}: {k} must be a value or a list of values, found a table"),
                    ))
                }
                (Some(param), scalar) => {
                    let s = Setting::parse(param, scalar)
                        .map_err(|m| self.error(&at, At::Value, format!("{what}: {m}")))?;
                    claims.claim(param, format!("key {k:?}"), &at)?;
                    s.apply(&mut hparams);
                }
                (None, Value::Array(_, items))
                    if items.iter().any(|v| matches!(v, Value::Dict(..))) =>
                {
                    let (axis, params) = self.table_axis(&what, k, items, &at)?;
                    for param in params {
                        claims.claim(param, format!("axis {k:?}"), &at)?;
                    }
                    axes.push(axis);
                }
                (None, Value::Array(_, items)) if items.is_empty() => {
                    return Err(self.error(
                        &at,
                        At::Value,
                        format!("{what}: axis {k:?} is empty; give it at least one entry"),
                    ))
                }
                (None, _) => {
                    return Err(self.error(
                        &at,
                        At::Key,
                        format!(
                            "{what}: {}",
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

    /// An experiment's `name`: required, non-empty printable text.
    fn experiment_name(&self, i: usize, dict: &Dict, key: &[String]) -> Result<String> {
        match dict.get("name") {
            None => Err(self.error(
                key,
                At::Key,
                format!("experiment {} has no name: add name = \"...\" to it", i + 1),
            )),
            Some(Value::String(_, s))
                if !s.trim().is_empty() && !s.chars().any(char::is_control) =>
            {
                Ok(s.clone())
            }
            Some(Value::String(_, s)) => Err(self.error(
                &join(key, &["name"]),
                At::Value,
                format!("experiment name {s:?} must be non-empty printable text"),
            )),
            Some(other) => Err(self.error(
                &join(key, &["name"]),
                At::Value,
                format!(
                    "experiment name must be a string, found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// `lr = [0.05, 0.1]`: an axis of single values of one hyperparameter.
    fn value_axis(
        &self,
        what: &str,
        k: &str,
        param: Param,
        items: &[Value],
        at: &[String],
    ) -> Result<Vec<Vec<Setting>>> {
        if items.is_empty() {
            return Err(self.error(
                at,
                At::Value,
                format!("{what}: axis {k:?} is empty; give it at least one value"),
            ));
        }
        let mut axis = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            let item_at = join(at, &[&j.to_string()]);
            if matches!(item, Value::Array(..) | Value::Dict(..)) {
                return Err(self.error(
                    &item_at,
                    At::Value,
                    format!(
                        "{what}: axis {k:?} must list single values, found {}; an axis of \
                         tables needs a name that is not a hyperparameter, e.g. model = [{{ ... }}]",
                        describe(item)
                    ),
                ));
            }
            let s = Setting::parse(param, item)
                .map_err(|m| self.error(&item_at, At::Value, format!("{what}: {m}")))?;
            axis.push(vec![s]);
        }
        Ok(axis)
    }

    /// `model = [{ arch = "ffv1", hidden = 32 }, ...]`: an axis whose entries set several
    /// hyperparameters together; returns it and every hyperparameter its entries set.
    fn table_axis(
        &self,
        what: &str,
        k: &str,
        items: &[Value],
        at: &[String],
    ) -> Result<(Vec<Vec<Setting>>, Vec<Param>)> {
        let mut axis = Vec::with_capacity(items.len());
        let mut params: Vec<Param> = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let entry_at = join(at, &[&j.to_string()]);
            let entry_what = format!("{what}: axis {k:?} entry {}", j + 1);
            let Value::Dict(_, entry) = item else {
                return Err(self.error(
                    &entry_at,
                    At::Value,
                    format!("{entry_what} must be a table, found {}", describe(item)),
                ));
            };
            let mut settings = Vec::with_capacity(entry.len());
            for (ek, ev) in self.ordered(entry, &entry_at) {
                let (param, s) = self.table_entry(&entry_what, ek, ev, &join(&entry_at, &[ek]))?;
                if !params.contains(&param) {
                    params.push(param);
                }
                settings.push(s);
            }
            axis.push(settings);
        }
        Ok((axis, params))
    }

    /// One `key = value` of a table axis' entry: a hyperparameter and a single value.
    fn table_entry(
        &self,
        entry_what: &str,
        ek: &str,
        ev: &Value,
        at: &[String],
    ) -> Result<(Param, Setting)> {
        let Some(param) = Param::from_key(ek) else {
            return Err(self.error(
                at,
                At::Key,
                format!("{entry_what}: {}", not_a_hyperparameter(ek, "")),
            ));
        };
        if matches!(ev, Value::Array(..) | Value::Dict(..)) {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{entry_what}: {ek} must be a single value, found {}",
                    describe(ev)
                ),
            ));
        }
        let s = Setting::parse(param, ev)
            .map_err(|m| self.error(at, At::Value, format!("{entry_what}: {m}")))?;
        Ok((param, s))
    }
}
