//! The sweep-file reader under generated input (proptest, a fixed budget of cases): whatever
//! the file holds, loading returns `Ok` or `Err` and never panics; an `Err` is one non-empty
//! line that points inside the file; an `Ok` holds only valid, distinct, content-addressed
//! trials; and loading is deterministic.
//!
//! Four generators, from blind to structured:
//! - arbitrary bytes written to a file and read back through [`load_with_env`] (mostly not
//!   UTF-8, so this covers the read path);
//! - arbitrary text through [`load_str`];
//! - the shipped sweep files with random edits (characters deleted, replaced, TOML tokens
//!   spliced in), which gets past the TOML parser far more often than blind text;
//! - whole documents built from plausible and implausible keys, values, tables and `SWEEP_*`
//!   variables, in any order, most of which are valid TOML and many of which are valid sweeps.
//!
//! Budget: the case counts below keep this file to a few seconds in a debug build on two
//! cores. `PROPTEST_CASES=100000 cargo test -p coordinator --test integration sweep_fuzz::` runs longer
//! (the variable overrides every count here, as proptest applies its environment on top of
//! an explicit config). Failures are not persisted to `proptest-regressions/` files: a random
//! seed each run finds new inputs, proptest prints the shrunk input of a failure, and that
//! input belongs in `tests/sweep.rs` as a named test rather than in a file nobody reads.

use coordinator::commands::check::{render_plan, render_table};
use coordinator::sweep::{
    is_safe_name, load_str, load_with_env, Origin, Overrides, SearchKind, Sweep, SweepError,
    MAX_TRIALS,
};
use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, Config, TestCaseError, TestRunner};
use std::collections::HashSet;
use std::path::Path;

/// `cases` cases, no failure files, then whatever `PROPTEST_*` variables say.
fn config(cases: u32) -> Config {
    contextualize_config(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Counts of outcomes, to check that a generator reaches both sides.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    err: usize,
}

/// Runs `test` on `cases` values of `strategy`; a panic inside `test` (or inside the loader)
/// fails the run with the shrunk input.
fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> Tally
where
    S::Value: std::fmt::Debug,
{
    let tally = std::cell::RefCell::new(Tally::default());
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&strategy, |v| {
        let ok = test(v)?;
        let mut t = tally.borrow_mut();
        if ok {
            t.ok += 1;
        } else {
            t.err += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner();
    eprintln!("{tally:?}");
    tally
}

fn env_pairs(env: &[(String, String)]) -> Vec<(String, String)> {
    env.to_vec()
}

/// Checks everything a result must satisfy whatever the input; returns whether it was `Ok`.
fn check(
    path: &Path,
    text: Option<&str>,
    result: &Result<Sweep, SweepError>,
) -> Result<bool, TestCaseError> {
    let sweep = match result {
        Ok(sweep) => sweep,
        Err(e) => {
            check_error(path, text, e)?;
            return Ok(false);
        }
    };
    prop_assert!(is_safe_name(&sweep.name), "unsafe name {:?}", sweep.name);
    prop_assert_eq!(&sweep.source, path);
    prop_assert!(
        !sweep.trials.is_empty() || sweep.to_suggest() > 0,
        "a valid sweep has trials, or trials to suggest"
    );
    // A random search gets exactly its `trials`, all new (a repeat is drawn again).
    for e in sweep
        .experiments
        .iter()
        .filter(|e| e.search == SearchKind::Random)
    {
        let drawn = sweep
            .trials
            .iter()
            .filter(|t| t.experiment == e.name)
            .count();
        prop_assert_eq!(drawn as u64, e.trials, "experiment {}", e.name);
    }
    prop_assert!(sweep.trials.len() <= MAX_TRIALS);
    let mut ids = HashSet::with_capacity(sweep.trials.len());
    for t in &sweep.trials {
        let valid = t.hparams.validate();
        prop_assert!(valid.is_ok(), "trial {} is invalid: {:?}", t.id, valid);
        prop_assert_eq!(&t.id, &t.hparams.trial_id(), "id is not content-derived");
        prop_assert_eq!(&t.hparams, &t.hparams.clone().normalized());
        prop_assert!(ids.insert(t.id.clone()), "trial id {} twice", t.id);
        prop_assert!(!t.experiment.trim().is_empty());
    }
    let table = render_table(sweep);
    prop_assert_eq!(table.lines().count(), sweep.trials.len() + 2);
    let _ = render_plan(sweep);
    prop_assert!(!sweep.experiments.is_empty());
    Ok(true)
}

/// An error is one non-empty line, about the file it was given, pointing inside it.
fn check_error(path: &Path, text: Option<&str>, e: &SweepError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!shown.trim().is_empty(), "empty error: {:?}", e);
    prop_assert!(!shown.contains('\n'), "an error is one line, got {:?}", e);
    match e {
        SweepError::Read { path: p, .. } => prop_assert_eq!(p, path),
        SweepError::Invalid {
            origin, message, ..
        } => {
            prop_assert!(!message.trim().is_empty(), "empty message: {:?}", e);
            if let Origin::File { path: p, at } = origin {
                prop_assert_eq!(p, path);
                if let (Some(at), Some(text)) = (at, text) {
                    let lines = text.split('\n').count();
                    prop_assert!(
                        at.line >= 1 && at.line <= lines && at.column >= 1,
                        "position {:?} outside a {}-line file: {:?}",
                        at,
                        lines,
                        e
                    );
                }
            }
        }
    }
    Ok(())
}

/// Loads `text` twice, checks both results and that they agree.
fn check_text(
    text: &str,
    overrides: &Overrides,
    env: &[(String, String)],
) -> Result<bool, TestCaseError> {
    let path = Path::new("fuzz.toml");
    let first = load_str(path, text, overrides, env_pairs(env));
    let ok = check(path, Some(text), &first)?;
    let again = load_str(path, text, overrides, env_pairs(env));
    match (&first, &again) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        _ => prop_assert!(false, "loading twice gave {first:?} then {again:?}"),
    }
    Ok(ok)
}

#[test]
fn arbitrary_bytes_in_a_file_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.toml");
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        // Mostly ASCII, so that some of it gets past UTF-8 decoding.
        prop::collection::vec(prop_oneof![9 => 0x20u8..0x7f, 1 => any::<u8>()], 0..256),
    ];
    run(4000, bytes, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let r = load_with_env(&path, &Overrides::default(), Vec::new());
        let ok = check(&path, std::str::from_utf8(&bytes).ok(), &r)?;
        if std::str::from_utf8(&bytes).is_err() {
            prop_assert!(matches!(r, Err(SweepError::Read { .. })), "{r:?}");
        }
        Ok(ok)
    });
}

#[test]
fn arbitrary_text_never_panics() {
    run(4000, any::<String>(), |text| {
        check_text(&text, &Overrides::default(), &[])
    });
}

/// Tokens that mean something to TOML or to a sweep file, spliced into shipped files.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\"",
    "'",
    "\"\"\"",
    "#",
    "\n",
    " ",
    "\\",
    "\\u0000",
    "-",
    "+",
    "0",
    "1",
    "-1",
    "1e999",
    "nan",
    "inf",
    "-inf",
    "true",
    "1979-05-27T07:32:00Z",
    "name",
    "seed",
    "defaults",
    "experiment",
    "arch",
    "lr",
    "hidden",
    "dropout",
    "epochs",
    "batch_size",
    "momentum",
    "weight_decay",
    "validation",
    "model",
    "ffv3",
    "cnn",
    "[defaults]",
    "[[experiment]]",
    "[experiment]",
    "\nname = \"x\"\n",
    "18446744073709551616",
    "4294967296",
    "65537",
    "[]",
    "{}",
    "[[1]]",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Replace { at: usize, with: u8 },
    Insert { at: usize, token: usize },
    Duplicate { at: usize, len: usize },
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let n = b.len().max(1);
        match *e {
            Edit::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(b.len());
                b.drain(at.min(b.len())..end);
            }
            Edit::Replace { at, with } => {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = with;
                }
            }
            Edit::Insert { at, token } => {
                let at = (at % n).min(b.len());
                let t = TOKENS[token % TOKENS.len()].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            Edit::Duplicate { at, len } => {
                let at = (at % n).min(b.len());
                let end = (at + len).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(end..end, piece);
            }
        }
    }
    // Edits are byte-level; keep the result text (the read path is fuzzed above).
    String::from_utf8_lossy(&b).into_owned()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<usize>(), 1..16usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        1 => (any::<usize>(), 0x20u8..0x7f).prop_map(|(at, with)| Edit::Replace { at, with }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Edit::Insert { at, token }),
        1 => (any::<usize>(), 1..64usize).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sweeps")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn edited_shipped_sweeps_never_panic() {
    let bases = ["lab4", "grid", "smoke"].map(shipped);
    let strategy = (0..bases.len(), prop::collection::vec(edit(), 1..6));
    let tally = run(3000, strategy, |(base, edits)| {
        let text = apply(&bases[base], &edits);
        check_text(&text, &Overrides::default(), &[])
    });
    assert!(tally.ok > 0 && tally.err > 0, "{tally:?}");
}

// ---- structured documents ----

/// A TOML value as text: mostly plausible, often wrong in type or range, sometimes not TOML.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        // Integers: small, edge, and past every range the reader has.
        4 => (0i64..200).prop_map(|i| i.to_string()),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => prop::sample::select(vec![
            "0", "-1", "-0", "+7", "65536", "65537", "4294967295", "4294967296",
            "9223372036854775807", "-9223372036854775808", "9223372036854775808",
            "18446744073709551615", "0x1f", "0o17", "0b101", "1_000", "01",
        ])
        .prop_map(str::to_string),
        // Floats: fractions, edge, special.
        4 => prop::sample::select(vec![0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.99])
            .prop_map(|x: f64| format!("{x:?}")),
        1 => any::<f64>().prop_map(|x| format!("{x:?}")),
        1 => prop::sample::select(vec![
            "nan", "+nan", "-nan", "inf", "+inf", "-inf", "-0.0", "1e-3", "1E3", "1e999",
            "1e-999", "1.7976931348623157e308", "5e-324", "0.9999999999999999", "1.0", ".5",
            "1.", "NaN", "Infinity",
        ])
        .prop_map(str::to_string),
        // Strings: architectures, names, paths, odd text.
        4 => prop::sample::select(vec!["ffv0", "ffv1", "ffv2", "ffv3", "cnn"])
            .prop_map(|s| format!("{s:?}")),
        1 => prop::sample::select(vec![
            "", " ", "FFV1", "mlp", "lab4", "a-b_c.d", "../etc", "a/b", ".hidden",
            "0.1", "1e-3", "ñame", "\u{0}", "\u{7f}", "tab\there", "line\nbreak",
        ])
        .prop_map(|s| format!("{s:?}")),
        1 => "[a-z0-9._/-]{0,70}".prop_map(|s| format!("{s:?}")),
        1 => "'[ -&(-~]{0,12}'",
        // Other TOML types.
        1 => prop::sample::select(vec![
            "true", "false", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00",
            "1979-05-27T07:32:00", "\"\"\"multi\nline\"\"\"",
        ])
        .prop_map(str::to_string),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "arch", "lr", "hidden", "dropout", "epochs", "batch_size", "momentum",
            "weight_decay", "validation", "seed", "objective",
        ])
        .prop_map(str::to_string),
        // The experiment's settings (issue 12).
        2 => prop::sample::select(vec!["search", "trials", "metric", "mode", "stop"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec![
            "name", "model", "lrr", "hiden", "Lr", "\"lr\"", "'seed'", "a.b", "lr.x", "\"\"",
            "ключ", "defaults", "experiment",
        ])
        .prop_map(str::to_string),
    ]
}

fn value() -> impl Strategy<Value = String> {
    let leaf = scalar();
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            // Lists: axes, empty, nested.
            3 => prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            // Inline tables: axes of tables, or tables where a value belongs.
            1 => prop::collection::vec((key(), inner.clone()), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
            // Distributions and stop tables, well formed or not.
            1 => (distribution_kind(), prop::collection::vec(inner, 0..4)).prop_map(|(k, v)| {
                format!("{{ {k} = [{}] }}", v.join(", "))
            }),
        ]
    })
}

/// `uniform`, `loguniform`, `int`, `choice`, the rules of a `stop` table, or a near miss.
fn distribution_kind() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "uniform",
        "loguniform",
        "int",
        "choice",
        "log",
        "logunifrom",
        "asha",
        "median",
        "divergence",
        "grace",
    ])
    .prop_map(str::to_string)
}

const PARAMS: [&str; 11] = [
    "arch",
    "lr",
    "hidden",
    "dropout",
    "epochs",
    "batch_size",
    "momentum",
    "weight_decay",
    "validation",
    "seed",
    "objective",
];

/// One value that `key` accepts.
fn good_scalar(key: &str) -> BoxedStrategy<String> {
    let fraction = |k: u32, of: u32| format!("{:?}", f64::from(k) / f64::from(of));
    match key {
        "arch" => prop::sample::select(vec!["ffv0", "ffv1", "ffv2", "ffv3", "cnn"])
            .prop_map(|s| format!("{s:?}"))
            .boxed(),
        "lr" => (1u32..1000).prop_map(move |k| fraction(k, 1000)).boxed(),
        "hidden" => (1u32..300).prop_map(|k| k.to_string()).boxed(),
        "dropout" | "validation" => (0u32..95).prop_map(move |k| fraction(k, 100)).boxed(),
        "momentum" | "weight_decay" => (0u32..1000).prop_map(move |k| fraction(k, 1000)).boxed(),
        "epochs" => (1u32..50).prop_map(|k| k.to_string()).boxed(),
        "objective" => prop::sample::select(vec!["train", "synthetic"])
            .prop_map(|s| format!("{s:?}"))
            .boxed(),
        "batch_size" => (1u32..512).prop_map(|k| k.to_string()).boxed(),
        _ => any::<u32>().prop_map(|k| k.to_string()).boxed(),
    }
}

/// A value or a short axis of values that `key` accepts.
fn good_value(key: &str) -> BoxedStrategy<String> {
    let one = good_scalar(key);
    prop_oneof![
        2 => one.clone(),
        1 => prop::collection::vec(one, 1..4).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
    .boxed()
}

/// Distinct hyperparameter keys, each with a value it accepts, as `key = value` pairs.
fn good_pairs(max: usize, value: fn(&str) -> BoxedStrategy<String>) -> BoxedStrategy<Vec<String>> {
    prop::sample::subsequence(PARAMS.to_vec(), 0..max)
        .prop_flat_map(move |keys| {
            keys.into_iter()
                .map(|k| value(k).prop_map(move |v| format!("{k} = {v}")))
                .collect::<Vec<_>>()
        })
        .boxed()
}

/// `key = value` pairs as lines, the first of each key only (a repeated key is a TOML error
/// that would hide everything else).
fn lines(pairs: Vec<String>) -> String {
    let mut seen = HashSet::new();
    pairs
        .into_iter()
        .filter(|line| seen.insert(line.split(" = ").next().unwrap_or_default().to_string()))
        .map(|line| line + "\n")
        .collect()
}

/// `key = value` lines: mostly valid settings, sometimes anything at all.
fn entries(max: usize) -> impl Strategy<Value = String> {
    let wild = prop::collection::vec((key(), value()), 1..max)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect());
    // An axis of tables: `model = [{ arch = "ffv1", hidden = 32 }, ...]`.
    let tables = prop::collection::vec(good_pairs(4, good_scalar), 1..4).prop_map(|entries| {
        let tables: Vec<String> = entries
            .iter()
            .map(|kv| format!("{{ {} }}", kv.join(", ")))
            .collect();
        vec![format!("model = [{}]", tables.join(", "))]
    });
    prop_oneof![
        8 => good_pairs(max, good_value).prop_map(lines),
        2 => (good_pairs(max, good_value), wild).prop_map(|(a, b)| lines([a, b].concat())),
        1 => (good_pairs(max, good_value), tables).prop_map(|(a, b)| lines([a, b].concat())),
    ]
}

/// A valid distribution of `key`, as a sweep file writes it.
fn good_distribution(key: &str) -> BoxedStrategy<String> {
    match key {
        "lr" | "momentum" | "weight_decay" => (1u32..500, 1u32..500)
            .prop_map(|(a, b)| {
                let (lo, hi) = (a.min(b), a.max(b) + 1);
                format!(
                    "{{ loguniform = [{:?}, {:?}] }}",
                    f64::from(lo) / 1000.0,
                    f64::from(hi) / 1000.0
                )
            })
            .boxed(),
        "dropout" | "validation" => (1u32..90)
            .prop_map(|k| format!("{{ uniform = [0.0, {:?}] }}", f64::from(k) / 100.0))
            .boxed(),
        "hidden" | "batch_size" | "seed" => (1u32..100, 1u32..100, any::<bool>())
            .prop_map(|(a, b, log)| {
                format!("{{ int = [{}, {}], log = {log} }}", a.min(b), a.max(b) + 1)
            })
            .boxed(),
        "epochs" => (1u32..20)
            .prop_map(|k| format!("{{ int = [1, {}] }}", k + 1))
            .boxed(),
        _ => prop::collection::vec(good_scalar(key), 1..4)
            .prop_map(|v| format!("{{ choice = [{}] }}", v.join(", ")))
            .boxed(),
    }
}

/// The settings of a searched experiment (random or tpe, with a metric, a mode and stop
/// rules) and some distributions: mostly valid, so that random draws and tpe spaces are
/// exercised, not only refused.
fn search_block() -> impl Strategy<Value = String> {
    let settings = (
        prop::sample::select(vec!["random", "tpe", "grid"]),
        1u32..30,
        prop::sample::select(vec!["val_acc", "val_loss", "train_loss", "test_acc"]),
        prop::sample::select(vec!["", "mode = \"max\"\n", "mode = \"min\"\n"]),
        prop::sample::select(vec![
            "",
            "stop = { asha = { grace = 1, reduction = 3 } }\n",
            "stop = { median = { grace = 2 }, divergence = { factor = 2.5 } }\n",
            "stop = { asha = { grace = 50, reduction = 2 } }\n",
        ]),
    )
        .prop_map(|(search, trials, metric, mode, stop)| {
            format!("search = {search:?}\ntrials = {trials}\nmetric = {metric:?}\n{mode}{stop}")
        });
    let dists = prop::sample::subsequence(PARAMS.to_vec(), 1..4).prop_flat_map(|keys| {
        keys.into_iter()
            .map(|k| good_distribution(k).prop_map(move |v| format!("{k} = {v}\n")))
            .collect::<Vec<_>>()
    });
    (settings, dists).prop_map(|(s, d)| format!("{s}{}", d.concat()))
}

fn name_line() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("name = \"fuzz\"\n".to_string()),
        1 => Just(String::new()),
        1 => scalar().prop_map(|v| format!("name = {v}\n")),
    ]
}

fn experiment() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        10 => (0u16..1000).prop_map(|i| format!("name = \"e{i}\"\n")),
        1 => Just(String::new()),
        1 => scalar().prop_map(|v| format!("name = {v}\n")),
    ];
    let body = prop_oneof![
        3 => entries(5),
        1 => search_block(),
    ];
    (name, body).prop_map(|(n, e)| format!("\n[[experiment]]\n{n}{e}"))
}

fn defaults() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => good_pairs(4, good_scalar).prop_map(|kv| format!("\n[defaults]\n{}", lines(kv))),
        1 => entries(4).prop_map(|e| format!("\n[defaults]\n{e}")),
    ]
}

/// Shapes a sweep file must not have.
fn odd_section() -> impl Strategy<Value = String> {
    prop_oneof![
        entries(3).prop_map(|e| format!("\n[experiment]\n{e}")),
        entries(3).prop_map(|e| format!("\n[[defaults]]\n{e}")),
        (key(), value()).prop_map(|(k, v)| format!("defaults.{k} = {v}\n")),
        value().prop_map(|v| format!("experiment = {v}\n")),
        value().prop_map(|v| format!("defaults = {v}\n")),
        (key(), value()).prop_map(|(k, v)| format!("\n[[experiment.{k}]]\nx = {v}\n")),
        "[a-z_]{1,8}".prop_map(|k| format!("{k} = 1\n")),
    ]
}

/// A sweep file: name, seed, then `[defaults]`, experiments and odd sections in any order.
fn document() -> impl Strategy<Value = String> {
    let seed = prop_oneof![
        3 => Just(String::new()),
        2 => any::<u32>().prop_map(|v| format!("seed = {v}\n")),
        1 => scalar().prop_map(|v| format!("seed = {v}\n")),
        1 => value().prop_map(|v| format!("seed = {v}\n")),
    ];
    let defaults = prop::option::weighted(0.6, defaults());
    let odd = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec(odd_section(), 1..3),
    ];
    let experiments = prop_oneof![
        1 => Just(Vec::new()),
        12 => prop::collection::vec(experiment(), 1..4),
    ];
    let body = (defaults, experiments, odd)
        .prop_map(|(d, e, o)| {
            let mut sections: Vec<String> = d.into_iter().chain(e).chain(o).collect();
            sections.retain(|s| !s.is_empty());
            sections
        })
        .prop_shuffle();
    (name_line(), seed, body)
        .prop_map(|(name, seed, sections)| format!("{name}{seed}{}", sections.concat()))
}

fn env_var() -> impl Strategy<Value = (String, String)> {
    let var = prop::sample::select(vec![
        "SWEEP_NAME",
        "SWEEP_SEED",
        "SWEEP_DEFAULTS__LR",
        "SWEEP_DEFAULTS__HIDDEN",
        "sweep_defaults__epochs",
        "SWEEP_DEFAULTS__ARCH",
        "SWEEP_DEFAULTS__",
        "SWEEP_DEFAULTS__LR__X",
        "SWEEP_DEFAULTS__LRR",
        "SWEEP_EXPERIMENT",
        "SWEEP_",
        "SWEEPX",
        "PATH",
    ]);
    let val = prop_oneof![
        scalar(),
        value(),
        "\\PC{0,12}",
        // Quoted text with escapes and non-ASCII characters, for figment's string parser.
        prop::collection::vec(
            prop::sample::select(vec!["é", "Σ", "\\", "\\n", "\\u0041", "a", "\"", ","]),
            0..6
        )
        .prop_map(|v| format!("\"{}\"", v.concat())),
        Just("1e-3".to_string()),
        Just(" 3 ".to_string()),
    ];
    (var, val).prop_map(|(k, v)| (k.to_string(), v))
}

fn overrides() -> impl Strategy<Value = Overrides> {
    let name = prop_oneof![
        4 => Just(None),
        1 => prop::sample::select(vec!["ok", "", "../x", "a b", "z"]).prop_map(|s| Some(s.into())),
    ];
    let seed = prop_oneof![4 => Just(None), 1 => any::<u64>().prop_map(Some)];
    (name, seed).prop_map(|(name, seed)| Overrides { name, seed })
}

#[test]
fn generated_sweep_documents_load_or_explain() {
    let strategy = (
        document(),
        prop::collection::vec(env_var(), 0..3),
        overrides(),
    );
    let tally = run(2000, strategy, |(text, env, over)| {
        check_text(&text, &over, &env)
    });
    // The generator is only useful while it reaches both sides.
    assert!(tally.ok >= 20, "too few valid documents: {tally:?}");
    assert!(tally.err >= 100, "too few invalid documents: {tally:?}");
}

#[test]
fn generated_documents_without_env_load_or_explain() {
    let tally = run(2000, document(), |text| {
        check_text(&text, &Overrides::default(), &[])
    });
    assert!(tally.ok >= 20, "too few valid documents: {tally:?}");
}

/// Inputs that have broken TOML readers elsewhere: deep nesting (stack depth), very long
/// lines and keys, many tables. Each must come back as a result, not a crash.
#[test]
fn pathological_documents_are_refused_or_read() {
    let path = Path::new("deep.toml");
    let load = |text: &str| {
        let r = load_str(path, text, &Overrides::default(), Vec::new());
        if let Err(e) = check(path, Some(text), &r) {
            panic!("{e}");
        }
        r
    };
    for depth in [64, 1_000, 100_000] {
        let arrays = format!(
            "name = \"x\"\n[[experiment]]\nname = \"e\"\nlr = {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(load(&arrays).is_err(), "depth {depth}");
        let tables = format!(
            "name = \"x\"\n[[experiment]]\nname = \"e\"\nmodel = {}1{}\n",
            "{ a = ".repeat(depth),
            " }".repeat(depth)
        );
        assert!(load(&tables).is_err(), "depth {depth}");
        let dotted = format!(
            "name = \"x\"\n{} = 1\n[[experiment]]\nname = \"e\"\n",
            vec!["k"; depth].join(".")
        );
        assert!(load(&dotted).is_err(), "depth {depth}");
    }
    let long_key = format!("name = \"x\"\n{} = 1\n", "k".repeat(1 << 20));
    assert!(load(&long_key).is_err());
    let long_name = format!(
        "name = \"{}\"\n[[experiment]]\nname = \"e\"\n",
        "n".repeat(1 << 20)
    );
    assert!(load(&long_name).is_err());
    let many = (0..5_000)
        .map(|i| format!("[[experiment]]\nname = \"e{i}\"\nseed = {i}\n"))
        .collect::<String>();
    let s = load(&format!("name = \"x\"\n{many}")).unwrap();
    assert_eq!(s.trials.len(), 5_000);
}

/// Found by the generators above: figment parsed the file again with its own, older TOML
/// parser, which refused TOML 1.1 that the span parser had accepted, and values that parser
/// leaves unchecked, with a multi-line message and no position. One parser now reads both.
#[test]
fn one_toml_parser_reads_the_file() {
    let path = Path::new("one.toml");
    let load = |text: &str| load_str(path, text, &Overrides::default(), Vec::new());
    for (text, line, column) in [
        (
            "name = \"x\"\n[[experiment]]\nname = \"e\"\nlr = 1e999\n",
            4,
            6,
        ),
        (
            "name = \"x\"\n[[experiment]]\nname = \"e\"\nlr = [0.1, 1e999]\n",
            4,
            12,
        ),
        ("name = \"x\"\nseed = 18446744073709551616\n", 2, 8),
    ] {
        let e = load(text).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown:?}");
        assert_eq!(
            e.origin(),
            Some(&Origin::File {
                path: path.to_path_buf(),
                at: Some(coordinator::sweep::LineCol { line, column })
            }),
            "{shown}"
        );
    }
    // TOML 1.1: a trailing comma and a line break in an inline table.
    let s = load(
        "name = \"x\"\n[[experiment]]\nname = \"e\"\nmodel = [{ arch = \"ffv1\", hidden = 8, },\n  { arch = \"ffv2\",\n    hidden = 8 }]\n",
    )
    .unwrap();
    assert_eq!(s.trials.len(), 2);
    // Seeds are u64: past i64::MAX they used to be "too large to fit".
    let s =
        load("name = \"x\"\nseed = 18446744073709551615\n[[experiment]]\nname = \"e\"\n").unwrap();
    assert_eq!(s.trials[0].hparams.seed, u64::MAX);
}

/// Found by the generators above: figment's value parser, which reads `SWEEP_*` values,
/// panicked on a quoted value with a non-ASCII character before a backslash.
#[test]
fn env_values_with_escapes_after_non_ascii_text_are_refused() {
    let text = "name = \"x\"\n[[experiment]]\nname = \"e\"\n";
    for (var, value) in [
        ("SWEEP_SEED", "\"Σ\\𑍇\""),
        ("SWEEP_DEFAULTS__ARCH", "\"é\\u0041\""),
        ("SWEEP_DEFAULTS__LR", "[\"éé\\n\", 1]"),
    ] {
        let env = vec![(var.to_string(), value.to_string())];
        let e = load_str(Path::new("env.toml"), text, &Overrides::default(), env).unwrap_err();
        assert_eq!(e.origin(), Some(&Origin::Env { var: var.into() }), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
