//! The hyperparameter keys a sweep file may set, and how one value of each is read and checked.

use figment::value::{Num, Value};
use proto::{Arch, Hyperparams, Objective};

/// A hyperparameter key of a sweep file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    Arch,
    Lr,
    Hidden,
    Dropout,
    Epochs,
    BatchSize,
    Momentum,
    WeightDecay,
    Validation,
    Seed,
    Objective,
}

/// What kind of value a hyperparameter takes, which decides the distributions it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A real number: `uniform`, `loguniform` or `choice`.
    Real,
    /// A whole number: `int` or `choice`.
    Whole,
    /// A name (`arch`, `objective`): `choice` only.
    Name,
}

impl Param {
    pub const ALL: [Param; 11] = [
        Param::Arch,
        Param::Lr,
        Param::Hidden,
        Param::Dropout,
        Param::Epochs,
        Param::BatchSize,
        Param::Momentum,
        Param::WeightDecay,
        Param::Validation,
        Param::Seed,
        Param::Objective,
    ];

    /// The keys in the order error messages list them.
    pub const NAMES: &'static str = "arch, lr, hidden, dropout, epochs, batch_size, momentum, \
                                     weight_decay, validation, seed, objective";

    pub fn kind(self) -> Kind {
        match self {
            Param::Lr
            | Param::Dropout
            | Param::Momentum
            | Param::WeightDecay
            | Param::Validation => Kind::Real,
            Param::Hidden | Param::Epochs | Param::BatchSize | Param::Seed => Kind::Whole,
            Param::Arch | Param::Objective => Kind::Name,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Param::Arch => "arch",
            Param::Lr => "lr",
            Param::Hidden => "hidden",
            Param::Dropout => "dropout",
            Param::Epochs => "epochs",
            Param::BatchSize => "batch_size",
            Param::Momentum => "momentum",
            Param::WeightDecay => "weight_decay",
            Param::Validation => "validation",
            Param::Seed => "seed",
            Param::Objective => "objective",
        }
    }

    pub fn from_key(key: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name() == key)
    }
}

/// One hyperparameter set to one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    Arch(Arch),
    Lr(f64),
    Hidden(u32),
    Dropout(f64),
    Epochs(u32),
    BatchSize(u32),
    Momentum(f64),
    WeightDecay(f64),
    Validation(f64),
    Seed(u64),
    Objective(Objective),
}

impl Setting {
    /// `param` (a [`Kind::Real`] one) set to `x`, unchecked; `None` for another kind.
    pub fn real(param: Param, x: f64) -> Option<Setting> {
        Some(match param {
            Param::Lr => Setting::Lr(x),
            Param::Dropout => Setting::Dropout(x),
            Param::Momentum => Setting::Momentum(x),
            Param::WeightDecay => Setting::WeightDecay(x),
            Param::Validation => Setting::Validation(x),
            _ => return None,
        })
    }

    /// `param` (a [`Kind::Whole`] one) set to `i`; `None` for another kind or when `i` does
    /// not fit the field.
    pub fn whole(param: Param, i: i64) -> Option<Setting> {
        let small = || u32::try_from(i).ok();
        Some(match param {
            Param::Hidden => Setting::Hidden(small()?),
            Param::Epochs => Setting::Epochs(small()?),
            Param::BatchSize => Setting::BatchSize(small()?),
            Param::Seed => Setting::Seed(u64::try_from(i).ok()?),
            _ => return None,
        })
    }

    /// The problem of this value, checked alone as [`Setting::parse`] checks it.
    pub fn problem(self) -> Option<String> {
        let mut h = Hyperparams::default();
        self.apply(&mut h);
        h.validate()
            .err()
            .map(|e| format!("{} {}", e.key, e.reason))
    }

    /// The value as a sweep file would write it.
    pub fn value_text(self) -> String {
        use proto::trial::canon_f64;
        match self {
            Setting::Arch(a) => a.to_string(),
            Setting::Objective(o) => o.to_string(),
            Setting::Lr(x)
            | Setting::Dropout(x)
            | Setting::Momentum(x)
            | Setting::WeightDecay(x)
            | Setting::Validation(x) => canon_f64(x),
            Setting::Hidden(v) | Setting::Epochs(v) | Setting::BatchSize(v) => v.to_string(),
            Setting::Seed(v) => v.to_string(),
        }
    }

    /// The hyperparameter this sets.
    pub fn param(self) -> Param {
        match self {
            Setting::Arch(_) => Param::Arch,
            Setting::Lr(_) => Param::Lr,
            Setting::Hidden(_) => Param::Hidden,
            Setting::Dropout(_) => Param::Dropout,
            Setting::Epochs(_) => Param::Epochs,
            Setting::BatchSize(_) => Param::BatchSize,
            Setting::Momentum(_) => Param::Momentum,
            Setting::WeightDecay(_) => Param::WeightDecay,
            Setting::Validation(_) => Param::Validation,
            Setting::Seed(_) => Param::Seed,
            Setting::Objective(_) => Param::Objective,
        }
    }

    pub fn apply(self, h: &mut Hyperparams) {
        match self {
            Setting::Arch(v) => h.arch = v,
            Setting::Lr(v) => h.lr = v,
            Setting::Hidden(v) => h.hidden = v,
            Setting::Dropout(v) => h.dropout = v,
            Setting::Epochs(v) => h.epochs = v,
            Setting::BatchSize(v) => h.batch_size = v,
            Setting::Momentum(v) => h.momentum = v,
            Setting::WeightDecay(v) => h.weight_decay = v,
            Setting::Validation(v) => h.validation = v,
            Setting::Seed(v) => h.seed = v,
            Setting::Objective(v) => h.objective = v,
        }
    }

    /// Reads one scalar value of `param` and checks its range; the error is a lowercase
    /// message that names the key.
    pub fn parse(param: Param, value: &Value) -> Result<Setting, String> {
        let key = param.name();
        let setting = match param {
            Param::Arch => match value {
                Value::String(_, s) => Setting::Arch(s.parse::<Arch>().map_err(|e| e.reason)?),
                other => return Err(format!("{key} must be a string, found {}", describe(other))),
            },
            Param::Objective => match value {
                Value::String(_, s) => {
                    Setting::Objective(s.parse::<Objective>().map_err(|e| e.reason)?)
                }
                other => return Err(format!("{key} must be a string, found {}", describe(other))),
            },
            Param::Lr => Setting::Lr(float(key, value)?),
            Param::Dropout => Setting::Dropout(float(key, value)?),
            Param::Momentum => Setting::Momentum(float(key, value)?),
            Param::WeightDecay => Setting::WeightDecay(float(key, value)?),
            Param::Validation => Setting::Validation(float(key, value)?),
            Param::Hidden => Setting::Hidden(unsigned(key, value, u32::MAX.into())? as u32),
            Param::Epochs => Setting::Epochs(unsigned(key, value, u32::MAX.into())? as u32),
            Param::BatchSize => Setting::BatchSize(unsigned(key, value, u32::MAX.into())? as u32),
            Param::Seed => Setting::Seed(unsigned(key, value, u64::MAX)?),
        };
        // Every range check of `Hyperparams::validate` looks at one field alone, so checking the
        // value on top of the defaults reports exactly this value's problem.
        match setting.problem() {
            Some(problem) => Err(problem),
            None => Ok(setting),
        }
    }
}

fn float(key: &str, value: &Value) -> Result<f64, String> {
    match value {
        Value::Num(_, n) => match integer(n) {
            Some(i) => Ok(i as f64),
            None => Ok(n.to_f64().unwrap_or(f64::NAN)),
        },
        other => Err(format!("{key} must be a number, found {}", describe(other))),
    }
}

fn unsigned(key: &str, value: &Value, max: u64) -> Result<u64, String> {
    let n = match value {
        Value::Num(_, n) => *n,
        other => {
            return Err(format!(
                "{key} must be a whole number, found {}",
                describe(other)
            ))
        }
    };
    match integer(&n) {
        Some(i) if i < 0 => Err(format!("{key} must not be negative, got {i}")),
        Some(i) if i > i128::from(max) => Err(format!("{key} must be at most {max}, got {i}")),
        Some(i) => Ok(i as u64),
        None => Err(format!(
            "{key} must be a whole number, found float {}",
            n.to_f64().unwrap_or(f64::NAN)
        )),
    }
}

fn integer(n: &Num) -> Option<i128> {
    n.to_i128()
        .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
}

/// A short description of a value for "found ..." messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("string {s:?}"),
        Value::Char(_, c) => format!("string {:?}", c.to_string()),
        Value::Bool(_, b) => format!("boolean {b}"),
        Value::Num(_, n) => match integer(n) {
            Some(i) => format!("integer {i}"),
            None => format!("float {}", n.to_f64().unwrap_or(f64::NAN)),
        },
        Value::Empty(..) => "nothing".into(),
        Value::Dict(..) => "a table".into(),
        Value::Array(..) => "a list".into(),
    }
}

/// The candidate closest to `key` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    key: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(key, c), c))
        .filter(|&(d, c)| d <= 2 && d < c.len().max(key.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: Num) -> Value {
        Value::from(n)
    }

    #[test]
    fn reads_and_checks_values() {
        assert_eq!(
            Setting::parse(Param::Lr, &num(Num::I64(1))),
            Ok(Setting::Lr(1.0))
        );
        assert_eq!(
            Setting::parse(Param::Lr, &num(Num::F64(0.5))),
            Ok(Setting::Lr(0.5))
        );
        assert_eq!(
            Setting::parse(Param::Arch, &Value::from("cnn")),
            Ok(Setting::Arch(Arch::Cnn))
        );
        assert_eq!(
            Setting::parse(Param::Seed, &num(Num::U8(3))),
            Ok(Setting::Seed(3))
        );
        let err = |p, v: Value| Setting::parse(p, &v).unwrap_err();
        assert!(err(Param::Lr, num(Num::F64(0.0))).starts_with("lr must be"));
        assert!(err(Param::Lr, num(Num::I64(-1))).starts_with("lr must be"));
        assert!(err(Param::Lr, Value::from("0.1")).contains("found string \"0.1\""));
        assert!(err(Param::Dropout, num(Num::F64(1.0))).contains("[0, 1)"));
        assert!(err(Param::Hidden, num(Num::F64(32.5))).contains("whole number"));
        assert!(err(Param::Hidden, num(Num::I64(-3))).contains("negative"));
        assert!(err(Param::Epochs, num(Num::I64(1 << 40))).contains("at most"));
        assert!(err(Param::Arch, Value::from("mlp")).contains("unknown architecture \"mlp\""));
        assert!(err(Param::Arch, Value::from(true)).contains("found boolean true"));
        assert_eq!(
            Setting::parse(Param::Objective, &Value::from("synthetic")),
            Ok(Setting::Objective(Objective::Synthetic))
        );
        assert!(err(Param::Objective, Value::from("fake")).contains("\"train\" or \"synthetic\""));
        assert_eq!(Setting::whole(Param::Hidden, -1), None);
        assert_eq!(Setting::real(Param::Hidden, 1.0), None);
        assert_eq!(Setting::Lr(0.05).value_text(), "0.05");
    }

    #[test]
    fn suggests_close_keys_only() {
        let names = Param::ALL.map(Param::name);
        assert_eq!(did_you_mean("lrr", names), Some("lr"));
        assert_eq!(did_you_mean("hiden", names), Some("hidden"));
        assert_eq!(did_you_mean("banana", names), None);
        assert_eq!(did_you_mean("xy", names), None);
    }
}
