//! A hyperparameter given as a distribution instead of values: `lr = { loguniform = [0.001,
//! 1.0] }`, `dropout = { uniform = [0.0, 0.5] }`, `hidden = { int = [16, 256], log = true }`,
//! `arch = { choice = ["ffv1", "ffv2"] }`. Read here into an [`AxisKind`], every bound
//! checked as a value of its hyperparameter, every problem at its key and position.

use super::context::{join, At, Ctx};
use super::experiment::AxisKind;
use super::params::{describe, did_you_mean, Kind, Param, Setting};
use super::Result;
use figment::value::{Dict, Num, Value};
use search::Distribution;

/// The keys a distribution table may have.
const KINDS: [&str; 4] = ["uniform", "loguniform", "int", "choice"];

impl Ctx<'_> {
    /// `param = { ... }` at `at`: one distribution of the hyperparameter.
    pub(super) fn distribution(
        &self,
        what: &str,
        param: Param,
        table: &Dict,
        at: &[String],
    ) -> Result<AxisKind> {
        let key = param.name();
        for k in table.keys() {
            if !KINDS.contains(&k.as_str()) && k != "log" {
                let mut msg = format!(
                    "{what}: {key}: unknown key {k:?} in a distribution (expected one of \
                     uniform, loguniform, int with an optional log, choice)"
                );
                if let Some(s) = did_you_mean(k, KINDS.into_iter().chain(["log"])) {
                    msg.push_str(&format!("; did you mean {s:?}?"));
                }
                return Err(self.error(&join(at, &[k]), At::Key, msg));
            }
        }
        let kinds: Vec<&str> = KINDS
            .into_iter()
            .filter(|k| table.contains_key(*k))
            .collect();
        let [kind] = kinds.as_slice() else {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: {key} must be a value, a list of values, or one distribution: \
                     {{ uniform = [lo, hi] }}, {{ loguniform = [lo, hi] }}, {{ int = [lo, hi], \
                     log = true|false }} or {{ choice = [...] }}; found {}",
                    if kinds.is_empty() {
                        "a table without any".to_string()
                    } else {
                        format!("{} at once", kinds.join(" and "))
                    }
                ),
            ));
        };
        let kind_at = join(at, &[kind]);
        let log = self.log_flag(what, key, kind, table, at)?;
        let value = &table[*kind];
        if *kind == "choice" {
            return self.choice(what, param, value, &kind_at);
        }
        self.range(what, param, kind, value, log, &kind_at)
    }

    /// `{ uniform | loguniform | int = [lo, hi] }` of `param`, checked to fit its kind of value.
    fn range(
        &self,
        what: &str,
        param: Param,
        kind: &str,
        value: &Value,
        log: bool,
        kind_at: &[String],
    ) -> Result<AxisKind> {
        let key = param.name();
        let fits = matches!(
            (param.kind(), kind),
            (Kind::Real, "uniform" | "loguniform") | (Kind::Whole, "int")
        );
        if !fits {
            let use_instead = match param.kind() {
                Kind::Real => {
                    "{ uniform = [lo, hi] }, { loguniform = [lo, hi] } or { choice = [...] }"
                }
                Kind::Whole => {
                    "{ int = [lo, hi] } (with log = true for a log scale) or { choice = [...] }"
                }
                Kind::Name => "{ choice = [...] }",
            };
            return Err(self.error(
                kind_at,
                At::Key,
                format!("{what}: {key} cannot be drawn from {kind}: use {use_instead}"),
            ));
        }
        let (lo, hi) = self.bounds(what, key, value, kind_at)?;
        let dist = match kind {
            "uniform" => Distribution::Uniform { lo, hi },
            "loguniform" => Distribution::LogUniform { lo, hi },
            _ => {
                let whole = |x: f64| (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64);
                let (Some(l), Some(h)) = (whole(lo), whole(hi)) else {
                    return Err(self.error(
                        kind_at,
                        At::Value,
                        format!(
                            "{what}: {key}: int bounds must be whole numbers, got [{lo}, {hi}]"
                        ),
                    ));
                };
                Distribution::Int { lo: l, hi: h, log }
            }
        };
        self.check_range(what, param, dist, kind_at)?;
        Ok(AxisKind::Range(param, dist))
    }

    /// `log = true|false`, allowed with `int` only.
    fn log_flag(
        &self,
        what: &str,
        key: &str,
        kind: &str,
        table: &Dict,
        at: &[String],
    ) -> Result<bool> {
        let Some(v) = table.get("log") else {
            return Ok(false);
        };
        let log_at = join(at, &["log"]);
        if kind != "int" {
            return Err(self.error(
                &log_at,
                At::Key,
                format!("{what}: {key}: log goes with int only; for a real number on a log scale use {{ loguniform = [lo, hi] }}"),
            ));
        }
        match v {
            Value::Bool(_, b) => Ok(*b),
            other => Err(self.error(
                &log_at,
                At::Value,
                format!(
                    "{what}: {key}: log must be true or false, found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// `[lo, hi]`: two numbers.
    fn bounds(&self, what: &str, key: &str, value: &Value, at: &[String]) -> Result<(f64, f64)> {
        let number = |v: &Value| match v {
            Value::Num(_, n) => Some(num(n)),
            _ => None,
        };
        match value {
            Value::Array(_, items) if items.len() == 2 => {
                match (number(&items[0]), number(&items[1])) {
                    (Some(lo), Some(hi)) => Ok((lo, hi)),
                    _ => Err(self.error(
                        at,
                        At::Value,
                        format!(
                            "{what}: {key}: bounds must be two numbers [lo, hi], found {} and {}",
                            describe(&items[0]),
                            describe(&items[1])
                        ),
                    )),
                }
            }
            other => Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: {key}: bounds must be a list of two numbers [lo, hi], found {}",
                    match other {
                        Value::Array(_, items) => format!("a list of {}", items.len()),
                        other => describe(other),
                    }
                ),
            )),
        }
    }

    /// The distribution is usable (the search crate's checks) and every value it can draw is a
    /// valid value of the hyperparameter (both ends checked; a real upper bound is never drawn
    /// itself, so `dropout = { uniform = [0.0, 1.0] }` is fine).
    fn check_range(
        &self,
        what: &str,
        param: Param,
        dist: Distribution,
        at: &[String],
    ) -> Result<()> {
        let key = param.name();
        search::Space::new(vec![search::Param::new(key, dist)])
            .map_err(|e| self.error(at, At::Value, format!("{what}: {e}")))?;
        let ends: [Option<Setting>; 2] = match dist {
            Distribution::Uniform { lo, hi } | Distribution::LogUniform { lo, hi } => [
                Setting::real(param, lo),
                Setting::real(param, hi.next_down()),
            ],
            Distribution::Int { lo, hi, .. } => {
                [Setting::whole(param, lo), Setting::whole(param, hi)]
            }
            Distribution::Choice { .. } => return Ok(()),
        };
        for end in ends {
            let problem = match end {
                None => Some(format!("{key} does not fit its field")),
                Some(s) => s.problem(),
            };
            if let Some(p) = problem {
                return Err(self.error(
                    at,
                    At::Value,
                    format!("{what}: every value of the distribution must be valid, but {p}"),
                ));
            }
        }
        Ok(())
    }

    /// `{ choice = [...] }`: options, each a single value of the hyperparameter.
    fn choice(&self, what: &str, param: Param, value: &Value, at: &[String]) -> Result<AxisKind> {
        let key = param.name();
        let Value::Array(_, items) = value else {
            return Err(self.error(
                at,
                At::Value,
                format!(
                    "{what}: {key}: choice must be a list of values, found {}",
                    describe(value)
                ),
            ));
        };
        let options = self.single_values(
            what,
            param,
            items,
            at,
            format!("{what}: {key}: choice is empty; give it at least one value"),
            |item| {
                format!(
                    "{what}: {key}: choice must list single values, found {}",
                    describe(item)
                )
            },
        )?;
        Ok(AxisKind::Choice(options))
    }
}

/// A number as a float: integers (signed or not) first, as `params.rs` reads them.
fn num(n: &Num) -> f64 {
    n.to_i128()
        .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
        .map(|i| i as f64)
        .or_else(|| n.to_f64())
        .unwrap_or(f64::NAN)
}
