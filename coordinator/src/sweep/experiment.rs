//! One `[[experiment]]` checked into an [`Experiment`]: its name, its search settings
//! (`search.rs`), its single values, and its axes. A key whose value is a list is an axis of
//! that hyperparameter; a list of tables under any other name (e.g. `model`) is one axis whose
//! entries set several hyperparameters together; a table of a hyperparameter is a
//! distribution (`distribution.rs`). Under `grid` the lists are expanded; under `random` and
//! `tpe` a list is a choice among its values and a grouped axis a choice among its groups.
//! Each hyperparameter is set in one place only, so there is no precedence to learn.

use super::context::{join, key_path, At, Ctx};
use super::params::{describe, did_you_mean, Param, Setting};
use super::search::{SearchKind, SearchSettings, SETTINGS};
use super::Result;
use figment::value::{Dict, Value};
use proto::Hyperparams;
use search::Distribution;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::Write as _;

/// A validated experiment: its search settings, its hyperparameters apart from the axes, and
/// its axes.
pub(super) struct Experiment {
    pub key: Vec<String>,
    pub name: String,
    pub settings: SearchSettings,
    pub hparams: Hyperparams,
    pub axes: Vec<Axis>,
}

/// One axis of an experiment, in file order.
pub(super) struct Axis {
    /// Where it is written.
    pub key: Vec<String>,
    /// Its key: a hyperparameter, or the name of a grouped axis.
    pub name: String,
    pub kind: AxisKind,
}

/// What an axis holds.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AxisKind {
    /// A list of values, or of tables (a grouped axis): each entry's settings.
    Entries(Vec<Vec<Setting>>),
    /// `{ choice = [...] }`: single values of one hyperparameter.
    Choice(Vec<Vec<Setting>>),
    /// `{ uniform | loguniform | int = [lo, hi] }` of one hyperparameter.
    Range(Param, Distribution),
}

impl AxisKind {
    /// The entries a list or a choice offers; `None` for a range.
    pub fn options(&self) -> Option<&[Vec<Setting>]> {
        match self {
            AxisKind::Entries(e) | AxisKind::Choice(e) => Some(e),
            AxisKind::Range(..) => None,
        }
    }

    /// Whether any value of the axis sets `param`.
    pub fn sets(&self, param: Param) -> bool {
        match self {
            AxisKind::Range(p, _) => *p == param,
            AxisKind::Entries(e) | AxisKind::Choice(e) => {
                e.iter().flatten().any(|s| s.param() == param)
            }
        }
    }
}

impl Experiment {
    /// Trials it plans: a grid's combinations, or `trials` of a random or tpe search.
    pub fn trial_count(&self) -> Option<usize> {
        match self.settings.trials {
            Some(n) => usize::try_from(n).ok(),
            None => self.axes.iter().try_fold(1usize, |n, axis| {
                n.checked_mul(axis.kind.options().map_or(1, <[_]>::len))
            }),
        }
    }

    /// The epochs of every trial, when no axis sets them.
    pub fn fixed_epochs(&self) -> Option<u32> {
        (!self.axes.iter().any(|a| a.kind.sets(Param::Epochs))).then_some(self.hparams.epochs)
    }

    /// The lowest validation fraction a trial can get.
    fn least_validation(&self) -> f64 {
        let mut least = self.hparams.validation;
        for axis in &self.axes {
            match &axis.kind {
                AxisKind::Range(Param::Validation, d) => {
                    if let Distribution::Uniform { lo, .. } | Distribution::LogUniform { lo, .. } =
                        d
                    {
                        least = least.min(*lo);
                    }
                }
                kind => {
                    for s in kind.options().into_iter().flatten().flatten() {
                        if let Setting::Validation(v) = s {
                            least = least.min(*v);
                        }
                    }
                }
            }
        }
        least
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

/// The message for a key of an experiment that is neither a hyperparameter, a setting nor an
/// axis of tables.
fn unknown_key(what: &str, key: &str) -> String {
    let mut msg = format!(
        "{what}: key {key:?} is not a hyperparameter (expected one of {}, a setting of the \
         experiment ({}), or an axis given as a list of tables)",
        Param::NAMES,
        SETTINGS.join(", ")
    );
    let known = Param::ALL.map(Param::name).into_iter().chain(SETTINGS);
    if let Some(s) = did_you_mean(key, known) {
        let _ = write!(msg, "; did you mean {s:?}?");
    }
    msg
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
        let settings = self.search_settings(&what, dict, &key)?;
        let mut exp = Experiment {
            key,
            name,
            settings,
            hparams: base.clone(),
            axes: Vec::new(),
        };
        let mut claims = Claims {
            ctx: self,
            what: &what,
            set_by: HashMap::new(),
        };
        for (k, value) in self.ordered(dict, &exp.key) {
            if k == "name" || SETTINGS.contains(&k.as_str()) {
                continue;
            }
            let at = join(&exp.key, &[k]);
            self.entry(&what, &mut exp, &mut claims, k, value, at)?;
        }
        self.check_search(&what, &exp)?;
        Ok(exp)
    }

    /// One `key = value` of an experiment: a single value, an axis or a distribution.
    fn entry(
        &self,
        what: &str,
        exp: &mut Experiment,
        claims: &mut Claims<'_>,
        k: &str,
        value: &Value,
        at: Vec<String>,
    ) -> Result<()> {
        let kind = match (Param::from_key(k), value) {
            (Some(param), Value::Array(_, items)) => {
                claims.claim(param, format!("axis {k:?}"), &at)?;
                AxisKind::Entries(self.value_axis(what, k, param, items, &at)?)
            }
            (Some(param), Value::Dict(_, table)) => {
                claims.claim(param, format!("key {k:?}"), &at)?;
                self.distribution(what, param, table, &at)?
            }
            (Some(param), scalar) => {
                let s = Setting::parse(param, scalar)
                    .map_err(|m| self.error(&at, At::Value, format!("{what}: {m}")))?;
                claims.claim(param, format!("key {k:?}"), &at)?;
                s.apply(&mut exp.hparams);
                return Ok(());
            }
            (None, Value::Array(_, items))
                if items.iter().any(|v| matches!(v, Value::Dict(..))) =>
            {
                let (axis, params) = self.table_axis(what, k, items, &at)?;
                for param in params {
                    claims.claim(param, format!("axis {k:?}"), &at)?;
                }
                AxisKind::Entries(axis)
            }
            (None, Value::Array(_, items)) if items.is_empty() => {
                return Err(self.error(
                    &at,
                    At::Value,
                    format!("{what}: axis {k:?} is empty; give it at least one entry"),
                ))
            }
            (None, _) => return Err(self.error(&at, At::Key, unknown_key(what, k))),
        };
        exp.axes.push(Axis {
            key: at,
            name: k.to_owned(),
            kind,
        });
        Ok(())
    }

    /// What the search settings need of the axes: distributions only under random and tpe;
    /// one `epochs` for stop rules and tpe; rules that fit those epochs; a validation split
    /// for a `val_*` metric that chooses (tpe, stop rules).
    fn check_search(&self, what: &str, exp: &Experiment) -> Result<()> {
        let s = &exp.settings;
        if s.kind == SearchKind::Grid {
            if let Some(axis) = exp
                .axes
                .iter()
                .find(|a| a.kind.options().is_none() || matches!(a.kind, AxisKind::Choice(_)))
            {
                return Err(self.error(
                    &axis.key,
                    At::Value,
                    format!(
                        "{what}: {} is a distribution, which needs search = \"random\" or \"tpe\" \
                         (under grid, list its values: {} = [...])",
                        axis.name, axis.name
                    ),
                ));
            }
        }
        let needs_epochs = s.has_stop_rules() || s.kind == SearchKind::Tpe;
        if needs_epochs && exp.fixed_epochs().is_none() {
            let axis = exp
                .axes
                .iter()
                .find(|a| a.kind.sets(Param::Epochs))
                .expect("an axis sets epochs");
            return Err(self.error(
                &axis.key,
                At::Key,
                format!(
                    "{what}: epochs must be one value in an experiment with stop rules or \
                     search = \"tpe\" (the rules' last epoch, max_t, is the experiment's epochs)"
                ),
            ));
        }
        if s.has_stop_rules() {
            let mode = s.goal.mode;
            search::Stopper::<u32>::new(&s.stop, mode, exp.hparams.epochs).map_err(|e| {
                self.error(
                    &join(&exp.key, &["stop"]),
                    At::Value,
                    format!("{what}: {e}"),
                )
            })?;
        }
        let validation_metric = matches!(
            s.goal.metric,
            results_format::Metric::ValAcc | results_format::Metric::ValLoss
        );
        if validation_metric && (needs_epochs) && exp.least_validation() <= 0.0 {
            return Err(self.error(
                &exp.key,
                At::Key,
                format!(
                    "{what}: metric {} needs a validation split in every trial (validation > 0) \
                     to choose with stop rules or tpe; the test set chooses nothing",
                    s.goal.metric
                ),
            ));
        }
        Ok(())
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
        self.single_values(
            what,
            param,
            items,
            at,
            format!("{what}: axis {k:?} is empty; give it at least one value"),
            |item| {
                format!(
                    "{what}: axis {k:?} must list single values, found {}; an axis of \
                     tables needs a name that is not a hyperparameter, e.g. model = [{{ ... }}]",
                    describe(item)
                )
            },
        )
    }

    /// `items`, a non-empty list of single values of `param` (an axis, or a distribution's
    /// `choice`), each parsed as one setting. `empty` is the error for an empty list,
    /// `nested` words the one for an item that is itself a list or a table.
    pub(super) fn single_values(
        &self,
        what: &str,
        param: Param,
        items: &[Value],
        at: &[String],
        empty: String,
        nested: impl Fn(&Value) -> String,
    ) -> Result<Vec<Vec<Setting>>> {
        if items.is_empty() {
            return Err(self.error(at, At::Value, empty));
        }
        let mut values = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            let item_at = join(at, &[&j.to_string()]);
            if matches!(item, Value::Array(..) | Value::Dict(..)) {
                return Err(self.error(&item_at, At::Value, nested(item)));
            }
            let s = Setting::parse(param, item)
                .map_err(|m| self.error(&item_at, At::Value, format!("{what}: {m}")))?;
            values.push(vec![s]);
        }
        Ok(values)
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
                format!(
                    "{entry_what}: {}",
                    super::context::not_a_hyperparameter(ek, "")
                ),
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
