//! The search space of a `random` or `tpe` experiment: each axis as a parameter of a
//! [`search::Space`] (a distribution, or a choice among a list's values or a grouped axis'
//! groups), and the way back from a drawn configuration to a trial's hyperparameters.

use super::experiment::{AxisKind, Experiment};
use super::params::{Param, Setting};
use proto::Hyperparams;
use search::{Config, Distribution, Space, Value};
use std::fmt::Write as _;

/// What one parameter of the space sets.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// One hyperparameter, to the drawn number.
    Number(Param),
    /// The settings of the drawn option.
    Options(Vec<Vec<Setting>>),
}

/// An experiment's search space and its base hyperparameters (those no axis sets).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    base: Hyperparams,
    space: Space,
    targets: Vec<Target>,
}

impl SearchSpace {
    /// The space of `exp`'s axes, in file order (the order draws are made in), or the search
    /// crate's reason it cannot be one (an experiment without axes).
    pub(super) fn of(exp: &Experiment) -> Result<SearchSpace, search::Error> {
        let mut params = Vec::with_capacity(exp.axes.len());
        let mut targets = Vec::with_capacity(exp.axes.len());
        for axis in &exp.axes {
            let (dist, target) = match &axis.kind {
                AxisKind::Range(param, dist) => (*dist, Target::Number(*param)),
                AxisKind::Entries(options) | AxisKind::Choice(options) => (
                    Distribution::Choice { n: options.len() },
                    Target::Options(options.clone()),
                ),
            };
            params.push(search::Param::new(axis.name.clone(), dist));
            targets.push(target);
        }
        Ok(SearchSpace {
            base: exp.hparams.clone(),
            space: Space::new(params)?,
            targets,
        })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The hyperparameters of `config` (a configuration of [`Self::space`]), normalized (no
    /// dropout where the network has none) and checked.
    pub fn hparams(&self, config: &[Value]) -> Result<Hyperparams, String> {
        if !self.space.contains(config) {
            return Err(format!(
                "configuration {} is not in the search space",
                self.space.describe(config)
            ));
        }
        let mut h = self.base.clone();
        for (target, value) in self.targets.iter().zip(config) {
            let settings = match (target, *value) {
                (Target::Number(p), Value::Float(x)) => Setting::real(*p, x).into_iter().collect(),
                (Target::Number(p), Value::Int(i)) => Setting::whole(*p, i).into_iter().collect(),
                (Target::Options(options), Value::Choice(k)) => options[k].clone(),
                _ => Vec::new(),
            };
            for s in settings {
                s.apply(&mut h);
            }
        }
        h.validate().map_err(|e| e.to_string())?;
        Ok(h.normalized())
    }

    /// A configuration as numbers, the form `state.redb` keeps it in.
    pub fn to_numbers(config: &[Value]) -> Vec<f64> {
        config.iter().map(|v| v.as_f64()).collect()
    }

    /// The configuration `numbers` ([`Self::to_numbers`]) stand for, `None` when they do not
    /// fit this space (the sweep file changed since they were stored).
    pub fn from_numbers(&self, numbers: &[f64]) -> Option<Config> {
        if numbers.len() != self.space.params().len() {
            return None;
        }
        let config: Config = self
            .space
            .params()
            .iter()
            .zip(numbers)
            .map(|(p, &x)| match p.distribution {
                Distribution::Uniform { .. } | Distribution::LogUniform { .. } => Value::Float(x),
                Distribution::Int { .. } => Value::Int(x as i64),
                Distribution::Choice { .. } => Value::Choice(x as usize),
            })
            .collect();
        self.space.contains(&config).then_some(config)
    }

    /// One line per parameter, e.g. `lr  loguniform [0.001, 1]`, for `coordinator check`.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.space
            .params()
            .iter()
            .zip(&self.targets)
            .map(|(p, target)| {
                let text = match (p.distribution, target) {
                    (Distribution::Uniform { lo, hi }, _)
                    | (Distribution::LogUniform { lo, hi }, _) => {
                        format!("{} [{lo}, {hi}]", p.distribution.kind())
                    }
                    (Distribution::Int { lo, hi, log }, _) => {
                        format!("int [{lo}, {hi}]{}", if log { " log" } else { "" })
                    }
                    (Distribution::Choice { .. }, Target::Options(options)) => choices(options),
                    (Distribution::Choice { n }, _) => format!("choice of {n}"),
                };
                (p.name.clone(), text)
            })
            .collect()
    }
}

/// `choice of 0.05, 0.1` or `choice of {arch=ffv1 hidden=32} | {arch=ffv2 hidden=64}`.
fn choices(options: &[Vec<Setting>]) -> String {
    let mut out = String::from("choice of ");
    let single = options.iter().all(|o| o.len() == 1);
    for (i, option) in options.iter().enumerate() {
        if i > 0 {
            out.push_str(if single { ", " } else { " | " });
        }
        let values: Vec<String> = option
            .iter()
            .map(|s| {
                if single {
                    s.value_text()
                } else {
                    format!("{}={}", s.param().name(), s.value_text())
                }
            })
            .collect();
        if single {
            out.push_str(&values.join(" "));
        } else {
            let _ = write!(out, "{{{}}}", values.join(" "));
        }
    }
    out
}
