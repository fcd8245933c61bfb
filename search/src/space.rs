//! The search space: named parameters, each a distribution, and the configurations drawn from it.

use crate::{Error, Result};
use std::collections::HashSet;
use std::fmt;

/// The largest magnitude an integer bound may have: every integer up to it is exact as an `f64`,
/// the form the samplers compute in.
pub const MAX_INT_BOUND: i64 = 1 << 53;

/// How one parameter is distributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// A real number, uniform in `[lo, hi]`.
    Uniform { lo: f64, hi: f64 },
    /// A positive real number whose logarithm is uniform in `[ln lo, ln hi]`.
    LogUniform { lo: f64, hi: f64 },
    /// A whole number in `[lo, hi]`, uniform, or with `log` uniform in its logarithm (`lo >= 1`).
    Int { lo: i64, hi: i64, log: bool },
    /// One of `n` options, as an index `0..n`; what an index means (a value, or a group of values
    /// set together) is the caller's business.
    Choice { n: usize },
}

impl Distribution {
    /// The kind in the sweep format's words, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Distribution::Uniform { .. } => "uniform",
            Distribution::LogUniform { .. } => "loguniform",
            Distribution::Int { log: false, .. } => "int",
            Distribution::Int { log: true, .. } => "int (log)",
            Distribution::Choice { .. } => "choice",
        }
    }

    /// Why this distribution is unusable, if it is.
    fn problem(&self) -> Option<String> {
        match *self {
            Distribution::Uniform { lo, hi } | Distribution::LogUniform { lo, hi } => {
                let kind = self.kind();
                if !(lo.is_finite() && hi.is_finite()) {
                    Some(format!(
                        "{kind} bounds must be finite numbers, got [{lo}, {hi}]"
                    ))
                } else if lo >= hi {
                    Some(format!(
                        "{kind} needs lo < hi, got [{lo}, {hi}] (for a single value write the value itself)"
                    ))
                } else if matches!(self, Distribution::LogUniform { .. }) && lo <= 0.0 {
                    Some(format!(
                        "loguniform needs lo > 0 (it draws the logarithm), got [{lo}, {hi}]"
                    ))
                } else {
                    None
                }
            }
            Distribution::Int { lo, hi, log } => {
                if lo.abs() > MAX_INT_BOUND || hi.abs() > MAX_INT_BOUND {
                    Some(format!(
                        "int bounds must be within ±{MAX_INT_BOUND}, got [{lo}, {hi}]"
                    ))
                } else if lo >= hi {
                    Some(format!(
                        "int needs lo < hi, got [{lo}, {hi}] (for a single value write the value itself)"
                    ))
                } else if log && lo < 1 {
                    Some(format!(
                        "int with log = true needs lo >= 1 (it draws the logarithm), got [{lo}, {hi}]"
                    ))
                } else {
                    None
                }
            }
            Distribution::Choice { n } => {
                (n == 0).then(|| "choice needs at least one option, got none".to_string())
            }
        }
    }

    /// How many values the distribution has, `None` when it is continuous.
    pub fn cardinality(&self) -> Option<u128> {
        match *self {
            Distribution::Uniform { .. } | Distribution::LogUniform { .. } => None,
            Distribution::Int { lo, hi, .. } => Some((hi - lo) as u128 + 1),
            Distribution::Choice { n } => Some(n as u128),
        }
    }

    /// Whether `value` is of this distribution's kind and inside its range.
    pub fn contains(&self, value: Value) -> bool {
        match (*self, value) {
            (Distribution::Uniform { lo, hi }, Value::Float(x))
            | (Distribution::LogUniform { lo, hi }, Value::Float(x)) => lo <= x && x <= hi,
            (Distribution::Int { lo, hi, .. }, Value::Int(i)) => lo <= i && i <= hi,
            (Distribution::Choice { n }, Value::Choice(k)) => k < n,
            _ => false,
        }
    }
}

/// A named parameter of a search space.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub distribution: Distribution,
}

impl Param {
    pub fn new(name: impl Into<String>, distribution: Distribution) -> Self {
        Param {
            name: name.into(),
            distribution,
        }
    }
}

/// One parameter's value in a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Of a `Uniform` or `LogUniform` parameter.
    Float(f64),
    /// Of an `Int` parameter.
    Int(i64),
    /// The index of the option drawn from a `Choice` parameter.
    Choice(usize),
}

impl Value {
    /// The value as a number: the float, the integer, or the choice index.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            Value::Choice(k) => k as f64,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(x) => write!(f, "{x}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Choice(k) => write!(f, "#{k}"),
        }
    }
}

/// One value per parameter of a [`Space`], in the space's order.
pub type Config = Vec<Value>;

/// A validated search space: distinct names, every distribution usable. The order of the
/// parameters is the order in which samplers draw them, so it is part of what a seed reproduces.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    params: Vec<Param>,
}

impl Space {
    /// Checks every parameter; the first problem is reported with the parameter's name.
    pub fn new(params: Vec<Param>) -> Result<Space> {
        if params.is_empty() {
            return Err(Error::EmptySpace);
        }
        let mut seen = HashSet::new();
        for p in &params {
            if !seen.insert(p.name.as_str()) {
                return Err(Error::DuplicateParam(p.name.clone()));
            }
            if let Some(reason) = p.distribution.problem() {
                return Err(Error::InvalidParam {
                    param: p.name.clone(),
                    reason,
                });
            }
        }
        Ok(Space { params })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The number of distinct configurations when every parameter is an `Int` or a `Choice`
    /// (saturating at `u128::MAX`), `None` when some parameter is continuous.
    pub fn configurations(&self) -> Option<u128> {
        self.params.iter().try_fold(1u128, |acc, p| {
            p.distribution.cardinality().map(|c| acc.saturating_mul(c))
        })
    }

    /// An error when the space is finite and has fewer than `trials` configurations (the
    /// caller adds which experiment it is).
    pub fn check_capacity(&self, trials: u64) -> Result<()> {
        match self.configurations() {
            Some(available) if available < u128::from(trials) => Err(Error::TooFewConfigurations {
                available,
                wanted: trials,
            }),
            _ => Ok(()),
        }
    }

    /// The configuration with mixed-radix index `index` of a finite space (the last parameter
    /// varies fastest), `None` when the space is continuous or the index is past its end.
    pub fn config_at(&self, mut index: u128) -> Option<Config> {
        let total = self.configurations()?;
        if index >= total {
            return None;
        }
        let mut out = vec![Value::Choice(0); self.params.len()];
        for (slot, p) in out.iter_mut().zip(&self.params).rev() {
            let c = p.distribution.cardinality()?;
            let k = index % c;
            index /= c;
            *slot = match p.distribution {
                Distribution::Int { lo, .. } => Value::Int(lo + k as i64),
                _ => Value::Choice(k as usize),
            };
        }
        Some(out)
    }

    /// Whether `config` has one value of the right kind and range for every parameter.
    pub fn contains(&self, config: &[Value]) -> bool {
        config.len() == self.params.len()
            && self
                .params
                .iter()
                .zip(config)
                .all(|(p, &v)| p.distribution.contains(v))
    }

    /// `name=value` pairs, for logs and messages.
    pub fn describe(&self, config: &[Value]) -> String {
        self.params
            .iter()
            .zip(config)
            .map(|(p, v)| format!("{}={v}", p.name))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(params: &[(&str, Distribution)]) -> Result<Space> {
        Space::new(params.iter().map(|(n, d)| Param::new(*n, *d)).collect())
    }

    #[test]
    fn bad_distributions_name_the_parameter_and_the_rule() {
        let cases = [
            (Distribution::Uniform { lo: 1.0, hi: 1.0 }, "lo < hi"),
            (
                Distribution::Uniform {
                    lo: 0.0,
                    hi: f64::NAN,
                },
                "finite",
            ),
            (Distribution::LogUniform { lo: 0.0, hi: 1.0 }, "lo > 0"),
            (Distribution::LogUniform { lo: 2.0, hi: 1.0 }, "lo < hi"),
            (
                Distribution::Int {
                    lo: 0,
                    hi: 10,
                    log: true,
                },
                "lo >= 1",
            ),
            (
                Distribution::Int {
                    lo: 5,
                    hi: 5,
                    log: false,
                },
                "lo < hi",
            ),
            (
                Distribution::Int {
                    lo: 0,
                    hi: i64::MAX,
                    log: false,
                },
                "within",
            ),
            (Distribution::Choice { n: 0 }, "at least one option"),
        ];
        for (d, want) in cases {
            let err = space(&[("ok", Distribution::Choice { n: 2 }), ("lr", d)]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("parameter \"lr\": "), "{msg}");
            assert!(msg.contains(want), "{msg} should say {want}");
        }
        let dup = space(&[
            ("lr", Distribution::Choice { n: 2 }),
            ("lr", Distribution::Choice { n: 3 }),
        ])
        .unwrap_err();
        assert_eq!(dup, Error::DuplicateParam("lr".into()));
        assert_eq!(space(&[]).unwrap_err(), Error::EmptySpace);
    }

    #[test]
    fn counts_finite_spaces_and_refuses_too_many_trials() {
        let s = space(&[
            ("arch", Distribution::Choice { n: 2 }),
            (
                "hidden",
                Distribution::Int {
                    lo: 32,
                    hi: 34,
                    log: false,
                },
            ),
        ])
        .unwrap();
        assert_eq!(s.configurations(), Some(6));
        assert!(s.check_capacity(6).is_ok());
        let err = s.check_capacity(7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the search space has only 6 configurations, fewer than the 7 trials asked for"
        );
        // Every index names a distinct configuration, the last parameter varying fastest.
        let all: Vec<Config> = (0..6).map(|i| s.config_at(i).unwrap()).collect();
        assert_eq!(all[0], vec![Value::Choice(0), Value::Int(32)]);
        assert_eq!(all[1], vec![Value::Choice(0), Value::Int(33)]);
        assert_eq!(all[5], vec![Value::Choice(1), Value::Int(34)]);
        assert!(all.iter().all(|c| s.contains(c)));
        assert_eq!(s.config_at(6), None);

        let continuous = space(&[
            ("arch", Distribution::Choice { n: 2 }),
            ("lr", Distribution::LogUniform { lo: 1e-3, hi: 1.0 }),
        ])
        .unwrap();
        assert_eq!(continuous.configurations(), None);
        assert!(continuous.check_capacity(1_000_000).is_ok());
    }
}
