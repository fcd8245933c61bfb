//! `SWEEP_*` environment variables: which ones a sweep reads, and their values.

use super::{Origin, Result, SweepError, ENV_PREFIX};
use figment::value::Value;

/// One `SWEEP_*` variable, with the key path it sets.
#[derive(Debug)]
pub(super) struct EnvVar {
    pub var: String,
    pub key: Vec<String>,
    pub value: Value,
}

/// `SWEEP_*` variables that `coordinator run` reads itself (through clap), not settings of the
/// sweep: skipped here rather than refused as unknown. `SWEEP_TOKEN_FILE` is `--token-file`.
const NOT_SWEEP_SETTINGS: &[&str] = &["token_file"];

pub(super) fn read_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<EnvVar>> {
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
