//! An experiment's search settings (issue 12): `search = "grid" | "random" | "tpe"`,
//! `trials = N`, `metric` (a `train_*` or `val_*` epoch column, never a `test_*` one),
//! `mode = "max" | "min"`, and the `stop` table of early-stopping rules (`asha`, `median`,
//! `divergence`, several at once). Checked here one key at a time; what depends on the rest
//! of the experiment (the epochs the rules stop within, the validation split the metric
//! needs) is checked once its axes are read (`experiment.rs`).

use super::context::{join, At, Ctx};
use super::params::{describe, did_you_mean};
use super::{Result, MAX_TRIALS};
use figment::value::{Dict, Num, Value};
use results_format::{Goal, Metric, Mode};
use search::{AshaConfig, DivergenceConfig, MedianConfig, StopRules};
use std::fmt;

/// The keys of an experiment that are settings of its search, not hyperparameters.
/// `fuse` (issue 13) is also a key of `[defaults]`.
pub(super) const SETTINGS: [&str; 6] = ["search", "trials", "metric", "mode", "stop", "fuse"];

/// How an experiment picks its trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SearchKind {
    /// Every combination of its axes (lists), row-major.
    #[default]
    Grid,
    /// `trials` configurations drawn from its distributions when the sweep is read.
    Random,
    /// `trials` configurations suggested by TPE while the sweep runs, from finished trials.
    Tpe,
}

impl SearchKind {
    pub const ALL: [SearchKind; 3] = [SearchKind::Grid, SearchKind::Random, SearchKind::Tpe];

    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Grid => "grid",
            SearchKind::Random => "random",
            SearchKind::Tpe => "tpe",
        }
    }
}

impl fmt::Display for SearchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An experiment's search settings, each checked alone.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SearchSettings {
    pub kind: SearchKind,
    /// `trials`, given with `random` and `tpe` only.
    pub trials: Option<u64>,
    pub goal: Goal,
    pub stop: StopRules,
    /// `fuse = true | false` (issue 13): whether same-shape trials may train fused; unset,
    /// the sweep's `[defaults]` decide (on by default).
    pub fuse: Option<bool>,
}

impl SearchSettings {
    pub fn has_stop_rules(&self) -> bool {
        self.stop != StopRules::default()
    }
}

impl Ctx<'_> {
    /// The search settings of the experiment `dict` at `key` (`what` names it in messages).
    pub(super) fn search_settings(
        &self,
        what: &str,
        dict: &Dict,
        key: &[String],
    ) -> Result<SearchSettings> {
        let at = |k: &str| join(key, &[k]);
        let text = |k: &str| -> Result<Option<&str>> {
            match dict.get(k) {
                None => Ok(None),
                Some(Value::String(_, s)) => Ok(Some(s.as_str())),
                Some(other) => Err(self.error(
                    &at(k),
                    At::Value,
                    format!("{what}: {k} must be a string, found {}", describe(other)),
                )),
            }
        };
        let kind = match text("search")? {
            None => SearchKind::Grid,
            Some(s) => SearchKind::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| {
                    self.error(
                        &at("search"),
                        At::Value,
                        format!(
                            "{what}: search must be \"grid\", \"random\" or \"tpe\", found {s:?}"
                        ),
                    )
                })?,
        };
        let trials = self.trials(what, kind, dict.get("trials"), key)?;
        let metric = match text("metric")? {
            None => Metric::ValAcc,
            Some(m) => self.metric(what, m, &at("metric"))?,
        };
        let mode = match text("mode")? {
            None => metric.natural_mode(),
            Some("max") => Mode::Max,
            Some("min") => Mode::Min,
            Some(m) => {
                return Err(self.error(
                    &at("mode"),
                    At::Value,
                    format!("{what}: mode must be \"max\" or \"min\", found {m:?}"),
                ))
            }
        };
        let stop = match dict.get("stop") {
            None => StopRules::default(),
            Some(v) => self.stop_rules(what, v, &at("stop"))?,
        };
        let fuse = dict
            .get("fuse")
            .map(|v| self.fuse_flag(what, v, &at("fuse")))
            .transpose()?;
        Ok(SearchSettings {
            kind,
            trials,
            goal: Goal::new(metric, mode),
            stop,
            fuse,
        })
    }

    /// `fuse = true | false`, in an experiment or in `[defaults]`.
    pub(super) fn fuse_flag(&self, what: &str, value: &Value, at: &[String]) -> Result<bool> {
        match value {
            Value::Bool(_, b) => Ok(*b),
            other => Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: fuse must be true or false (whether trials of one shape may train \
                     as one stacked model), found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// `trials = N`: required with `random` and `tpe`, refused with `grid`.
    fn trials(
        &self,
        what: &str,
        kind: SearchKind,
        value: Option<&Value>,
        key: &[String],
    ) -> Result<Option<u64>> {
        let at = join(key, &["trials"]);
        match (kind, value) {
            (SearchKind::Grid, None) => Ok(None),
            (SearchKind::Grid, Some(_)) => Err(self.error(
                &at,
                At::Key,
                format!(
                    "{what}: trials is for search = \"random\" or \"tpe\"; a grid's trials are \
                     the combinations of its axes"
                ),
            )),
            (_, None) => Err(self.error(
                &join(key, &["search"]),
                At::Value,
                format!(
                    "{what}: search = \"{kind}\" needs trials = N, the number of trials to run"
                ),
            )),
            (_, Some(v)) => match whole(v) {
                Some(n) if (1..=MAX_TRIALS as i128).contains(&n) => Ok(Some(n as u64)),
                _ => Err(self.error(
                    &at,
                    At::Value,
                    format!(
                        "{what}: trials must be a whole number from 1 to {MAX_TRIALS}, found {}",
                        describe(v)
                    ),
                )),
            },
        }
    }

    /// `metric`: an epoch column, never a test-set one.
    fn metric(&self, what: &str, name: &str, at: &[String]) -> Result<Metric> {
        let metric: Metric = name.parse().map_err(|_| {
            let columns = ["train_loss", "train_acc", "val_loss", "val_acc"];
            let mut msg = format!(
                "{what}: metric {name:?} is not an epoch column (expected one of {})",
                columns.join(", ")
            );
            if let Some(s) = did_you_mean(name, columns) {
                msg.push_str(&format!("; did you mean {s:?}?"));
            }
            self.error(at, At::Value, msg)
        })?;
        if metric.is_test() {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: metric {name:?} is a test-set column, and the test set chooses \
                     nothing (it would no longer estimate how the chosen model does on new \
                     data): use a train_* or val_* column, e.g. {:?}",
                    if metric == Metric::TestLoss {
                        "val_loss"
                    } else {
                        "val_acc"
                    }
                ),
            ));
        }
        Ok(metric)
    }

    /// `stop = { asha = {...}, median = {...}, divergence = {...} }`.
    fn stop_rules(&self, what: &str, value: &Value, at: &[String]) -> Result<StopRules> {
        let Value::Dict(_, rules) = value else {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: stop must be a table of rules, e.g. stop = {{ asha = {{ grace = 1, \
                     reduction = 3 }} }}, found {}",
                    describe(value)
                ),
            ));
        };
        let mut out = StopRules::default();
        for (name, settings) in self.ordered(rules, at) {
            let rule_at = join(at, &[name]);
            let fields: &[&str] = match name.as_str() {
                "asha" => &["grace", "reduction"],
                "median" => &["grace", "min_samples"],
                "divergence" => &["factor"],
                other => {
                    let rules = ["asha", "median", "divergence"];
                    let mut msg = format!(
                        "{what}: unknown stop rule {other:?} (expected asha, median or divergence)"
                    );
                    if let Some(s) = did_you_mean(other, rules) {
                        msg.push_str(&format!("; did you mean {s:?}?"));
                    }
                    return Err(self.error(&rule_at, At::Key, msg));
                }
            };
            let get = |field: &str| -> Result<Option<&Value>> {
                self.rule_field(what, name, settings, fields, &rule_at)
                    .map(|t| t.get(field))
            };
            let number = |field: &str, required: bool| -> Result<Option<f64>> {
                self.rule_number(what, name, field, get(field)?, required, &rule_at)
            };
            match name.as_str() {
                "asha" => {
                    out.asha = Some(AshaConfig {
                        grace: self.rule_whole(
                            what,
                            name,
                            "grace",
                            number("grace", true)?,
                            &rule_at,
                        )?,
                        reduction: number("reduction", true)?.unwrap_or(f64::NAN),
                    })
                }
                "median" => {
                    let mut config = MedianConfig::new(self.rule_whole(
                        what,
                        name,
                        "grace",
                        number("grace", true)?,
                        &rule_at,
                    )?);
                    if let Some(n) = number("min_samples", false)? {
                        config.min_samples =
                            self.rule_whole(what, name, "min_samples", Some(n), &rule_at)? as usize;
                    }
                    out.median = Some(config);
                }
                _ => {
                    out.divergence = Some(DivergenceConfig {
                        factor: number("factor", true)?.unwrap_or(f64::NAN),
                    })
                }
            }
        }
        Ok(out)
    }

    /// A rule's settings table, with only the keys it knows.
    fn rule_field<'v>(
        &self,
        what: &str,
        rule: &str,
        settings: &'v Value,
        fields: &[&str],
        at: &[String],
    ) -> Result<&'v Dict> {
        let Value::Dict(_, table) = settings else {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: stop rule {rule} must be a table of its settings ({}), found {}",
                    fields.join(", "),
                    describe(settings)
                ),
            ));
        };
        if let Some(k) = table.keys().find(|k| !fields.contains(&k.as_str())) {
            let mut msg = format!(
                "{what}: stop rule {rule}: unknown setting {k:?} (expected {})",
                fields.join(", ")
            );
            if let Some(s) = did_you_mean(k, fields.iter().copied()) {
                msg.push_str(&format!("; did you mean {s:?}?"));
            }
            return Err(self.error(&join(at, &[k]), At::Key, msg));
        }
        Ok(table)
    }

    fn rule_number(
        &self,
        what: &str,
        rule: &str,
        field: &str,
        value: Option<&Value>,
        required: bool,
        at: &[String],
    ) -> Result<Option<f64>> {
        match value {
            None if required => Err(self.error(
                at,
                At::Value,
                format!("{what}: stop rule {rule} needs {field}"),
            )),
            None => Ok(None),
            Some(Value::Num(_, n)) => Ok(Some(as_f64(n))),
            Some(other) => Err(self.error(
                &join(at, &[field]),
                At::Value,
                format!(
                    "{what}: stop rule {rule}: {field} must be a number, found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn rule_whole(
        &self,
        what: &str,
        rule: &str,
        field: &str,
        value: Option<f64>,
        at: &[String],
    ) -> Result<u32> {
        match value {
            Some(x) if x.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&x) => Ok(x as u32),
            other => Err(self.error(
                &join(at, &[field]),
                At::Value,
                format!(
                    "{what}: stop rule {rule}: {field} must be a whole number of at least 1, got {}",
                    other.map_or("nothing".into(), |x| x.to_string())
                ),
            )),
        }
    }
}

fn as_f64(n: &Num) -> f64 {
    n.to_i128()
        .map(|i| i as f64)
        .or_else(|| n.to_u128().map(|u| u as f64))
        .or_else(|| n.to_f64())
        .unwrap_or(f64::NAN)
}

fn whole(v: &Value) -> Option<i128> {
    match v {
        Value::Num(_, n) => n
            .to_i128()
            .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok())),
        _ => None,
    }
}
