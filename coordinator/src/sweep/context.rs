//! Where a bad setting came from, for every error of a sweep file: the file with line and
//! column (from the spanned parse, [`SourceMap`]), the `SWEEP_*` variable, or the flag.

use super::env::EnvVar;
use super::params::{did_you_mean, Param};
use super::source::SourceMap;
use super::{Origin, Overrides, SweepError};
use figment::error::Kind;
use figment::value::{Dict, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Which part of an entry an error points at.
#[derive(Clone, Copy)]
pub(super) enum At {
    Key,
    Value,
}

/// What every check needs to say where a problem is.
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub map: &'a SourceMap,
    pub env: &'a [EnvVar],
    pub overrides: &'a Overrides,
}

pub(super) fn key_path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub(super) fn join(base: &[String], more: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

pub(super) fn not_a_hyperparameter(key: &str, also: &str) -> String {
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
    pub(super) fn origin(&self, key: &[String], at: At) -> Origin {
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

    pub(super) fn error(&self, key: &[String], at: At, message: impl Into<String>) -> SweepError {
        SweepError::Invalid {
            origin: self.origin(key, at),
            key: key.join("."),
            message: message.into(),
        }
    }

    pub(super) fn figment_error(&self, e: figment::Error) -> SweepError {
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
    pub(super) fn ordered<'d>(
        &self,
        dict: &'d Dict,
        path: &[String],
    ) -> Vec<(&'d String, &'d Value)> {
        let from_file = self.map.keys_in_order(path);
        let mut out: Vec<_> = from_file
            .iter()
            .filter_map(|k| dict.get_key_value(k))
            .collect();
        out.extend(dict.iter().filter(|(k, _)| !from_file.contains(k)));
        out
    }
}
