//! Sweep files: the shipped sweeps, the lab4 golden table, every error a user can make (with
//! its line), ids, duplicates, overrides and the cost of a 100,000-trial expansion.

use coordinator::commands::check::render_table;
use coordinator::sweep::{
    self, load_str, load_with_env, Origin, Overrides, Sweep, SweepError, MAX_TRIALS,
};
use coordinator::synthetic::synthetic_toml;
use proto::{Arch, Hyperparams};
use std::path::{Path, PathBuf};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str) -> Result<Sweep, SweepError> {
    load_str(
        Path::new("test.toml"),
        text,
        &Overrides::default(),
        no_env(),
    )
}

fn shipped(name: &str) -> Sweep {
    let path = repo_file(&format!("sweeps/{name}.toml"));
    load_with_env(&path, &Overrides::default(), no_env())
        .unwrap_or_else(|e| panic!("sweeps/{name}.toml: {e}"))
}

#[test]
fn lab4_is_the_notebook() {
    let s = shipped("lab4");
    assert_eq!(s.name, "lab4");
    assert_eq!(s.trials.len(), 13);
    assert_eq!(s.total_epochs(), 270);
    assert_eq!(s.duplicates_dropped, 0);
    let labels: Vec<String> = s
        .trials
        .iter()
        .map(|t| {
            format!(
                "{} {} e{}",
                t.experiment,
                t.hparams.label(),
                t.hparams.epochs
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            "base ffv0 h32 lr0.01 e10",
            "base ffv0 h32 lr0.1 e10",
            "grid ffv1 h32 lr0.05 e20",
            "grid ffv1 h32 lr0.1 e20",
            "grid ffv1 h32 lr0.5 e20",
            "grid ffv2 h32 lr0.05 e20",
            "grid ffv2 h32 lr0.1 e20",
            "grid ffv2 h32 lr0.5 e20",
            "grid ffv2 h64 lr0.05 e20",
            "grid ffv2 h64 lr0.1 e20",
            "grid ffv2 h64 lr0.5 e20",
            "dropout ffv3 h64 p0.25 lr0.1 e60",
            "cnn cnn h10 lr0.1 e10",
        ]
    );
    for t in &s.trials {
        assert_eq!(t.id, t.hparams.trial_id());
        assert_eq!((t.hparams.seed, t.hparams.batch_size), (55, 64));
        assert_eq!(t.hparams.validation, 0.1);
    }
}

#[test]
fn lab4_check_table_matches_golden() {
    let table = render_table(&shipped("lab4"));
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lab4_check.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&golden, &table).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
    assert_eq!(
        table, expected,
        "rerun with UPDATE_GOLDEN=1 if the change is intended"
    );
    assert!(table.ends_with("13 trials, 270 epochs, 0 duplicates dropped\n"));
}

#[test]
fn grid_and_smoke_sweeps() {
    let grid = shipped("grid");
    // 81 configurations; ffv1/ffv2 have no dropout, so their dropout values collapse.
    assert_eq!(grid.trials.len(), 27 + 9 + 9);
    assert_eq!(grid.duplicates_dropped, 81 - 45);
    assert!(grid
        .trials
        .iter()
        .all(|t| t.hparams.dropout == 0.0 || t.hparams.arch == Arch::Ffv3));
    assert!(grid.trials.iter().all(|t| t.hparams.arch != Arch::Cnn));
    let smoke = shipped("smoke");
    assert!((2..=4).contains(&smoke.trials.len()));
    for t in &smoke.trials {
        assert!(matches!(t.hparams.arch, Arch::Ffv0 | Arch::Ffv1));
        assert!((8..=16).contains(&t.hparams.hidden));
        assert_eq!(t.hparams.epochs, 2);
    }
}

/// What a bad file is, its text, the line and column (0: any) the error must point at, and a
/// piece of its message.
type ErrorCase = (
    &'static str,
    &'static str,
    Option<(usize, usize)>,
    &'static str,
);

#[test]
fn every_error_names_file_line_and_key() {
    let cases: &[ErrorCase] = &[
        (
            "misspelled experiment key",
            "name = \"s\"\n[[experiment]]\nname = \"grid\"\nlrr = 0.1\n",
            Some((4, 1)),
            "experiment \"grid\": key \"lrr\" is not a hyperparameter (expected one of arch, lr,",
        ),
        (
            "misspelled top-level key",
            "name = \"s\"\nsed = 3\n[[experiment]]\nname = \"a\"\n",
            Some((2, 1)),
            "unknown key \"sed\"",
        ),
        (
            "misspelled table name",
            "name = \"s\"\n[default]\nlr = 0.1\n[[experiment]]\nname = \"a\"\n",
            Some((2, 2)),
            "did you mean \"defaults\"?",
        ),
        (
            "misspelled defaults key",
            "name = \"s\"\n[defaults]\nlr = 0.1\nhiden = 3\n[[experiment]]\nname = \"a\"\n",
            Some((4, 1)),
            "defaults: key \"hiden\" is not a hyperparameter",
        ),
        (
            "misspelled key in a table axis",
            "name = \"s\"\n[[experiment]]\nname = \"g\"\nmodel = [\n  { arch = \"ffv1\" },\n  { arc = \"ffv2\" },\n]\n",
            Some((6, 5)),
            "axis \"model\" entry 2: key \"arc\" is not a hyperparameter",
        ),
        (
            "wrong type",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nlr = \"0.1\"\n",
            Some((4, 6)),
            "lr must be a number, found string \"0.1\"",
        ),
        (
            "fractional hidden",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nhidden = [16, 32.5]\n",
            Some((4, 15)),
            "hidden must be a whole number, found float 32.5",
        ),
        (
            "empty axis",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\n\nlr = []\n",
            Some((5, 6)),
            "axis \"lr\" is empty",
        ),
        (
            "empty table axis",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nmodel = []\n",
            Some((4, 9)),
            "axis \"model\" is empty",
        ),
        (
            "lr zero",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nlr = 0\n",
            Some((4, 6)),
            "lr must be a finite number > 0, got 0",
        ),
        (
            "negative lr in an axis",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nlr = [0.1, -0.5]\n",
            Some((4, 12)),
            "lr must be a finite number > 0, got -0.5",
        ),
        (
            "dropout of one",
            "name = \"s\"\n[defaults]\ndropout = 1.0\n[[experiment]]\nname = \"a\"\n",
            Some((3, 11)),
            "defaults: dropout must be in [0, 1), got 1",
        ),
        (
            "negative dropout in a table axis",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nreg = [{ dropout = -0.1 }]\n",
            Some((4, 20)),
            "dropout must be in [0, 1), got -0.1",
        ),
        (
            "unknown architecture",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\narch = [\"ffv1\", \"mlp\"]\n",
            Some((4, 17)),
            "unknown architecture \"mlp\"",
        ),
        (
            "two experiments with one name",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\n[[experiment]]\nname = \"b\"\n[[experiment]]\nname = \"a\"\n",
            Some((7, 8)),
            "experiment name \"a\" is used twice (first at line 3)",
        ),
        (
            "no experiments",
            "name = \"s\"\nseed = 3\n",
            None,
            "no experiments",
        ),
        (
            "missing sweep name",
            "seed = 3\n[[experiment]]\nname = \"a\"\n",
            None,
            "missing key \"name\"",
        ),
        (
            "unsafe sweep name",
            "\nname = \"../etc\"\n[[experiment]]\nname = \"a\"\n",
            Some((2, 8)),
            "sweep name \"../etc\" is not a safe folder name",
        ),
        (
            "sweep name of the wrong type",
            "name = 4\n[[experiment]]\nname = \"a\"\n",
            Some((1, 8)),
            "name must be a string, found integer 4",
        ),
        (
            "experiment without a name",
            "name = \"s\"\n\n[[experiment]]\nlr = 0.1\n",
            Some((3, 1)),
            "experiment 1 has no name",
        ),
        (
            "hyperparameter set twice",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nhidden = 32\nmodel = [{ arch = \"ffv1\", hidden = 64 }]\n",
            Some((5, 1)),
            "hidden is set both by key \"hidden\" and by axis \"model\"",
        ),
        (
            "list in defaults",
            "name = \"s\"\n[defaults]\nlr = [0.1, 0.2]\n[[experiment]]\nname = \"a\"\n",
            Some((3, 6)),
            "axes belong in an [[experiment]]",
        ),
        (
            "experiment as a single table",
            "name = \"s\"\n[experiment]\nname = \"a\"\n",
            Some((2, 2)),
            "experiment must be a list of tables",
        ),
        (
            "negative seed",
            "name = \"s\"\nseed = -1\n[[experiment]]\nname = \"a\"\n",
            Some((2, 8)),
            "seed must not be negative",
        ),
        (
            "list of seeds at the top level",
            "name = \"s\"\nseed = [1, 2]\n[[experiment]]\nname = \"a\"\n",
            Some((2, 8)),
            "for repeats put a list of seeds in an [[experiment]]",
        ),
        (
            "toml syntax",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nlr = = 0.1\n",
            Some((4, 0)),
            "invalid toml",
        ),
        (
            "duplicate toml key",
            "name = \"s\"\n[[experiment]]\nname = \"a\"\nlr = 0.1\nlr = 0.2\n",
            Some((5, 0)),
            "invalid toml",
        ),
    ];
    for (what, text, at, needle) in cases {
        let err = parse(text).expect_err(what);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
        assert!(msg.starts_with("test.toml"), "{what}: {msg}");
        assert!(!msg.contains('\n'), "{what}: not one line: {msg}");
        match (at, err.origin()) {
            (Some((line, col)), Some(Origin::File { at: Some(pos), .. })) => {
                assert_eq!(pos.line, *line, "{what}: {msg}");
                if *col != 0 {
                    assert_eq!(pos.column, *col, "{what}: {msg}");
                }
            }
            (None, Some(Origin::File { at: None, .. })) => {}
            (want, got) => panic!("{what}: wanted position {want:?}, got {got:?}: {msg}"),
        }
    }
}

#[test]
fn error_display_is_one_actionable_line() {
    let text = std::fs::read_to_string(repo_file("sweeps/lab4.toml"))
        .unwrap()
        .replace("lr = [0.05, 0.1, 0.5]", "lrr = [0.05, 0.1, 0.5]");
    let line = text.lines().position(|l| l.starts_with("lrr")).unwrap() + 1;
    let err = load_str(
        Path::new("sweeps/lab4.toml"),
        &text,
        &Overrides::default(),
        no_env(),
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(line));
    assert_eq!(
        err.to_string(),
        format!(
            "sweeps/lab4.toml:{line}:1: experiment \"grid\": key \"lrr\" is not a hyperparameter \
             (expected one of arch, lr, hidden, dropout, epochs, batch_size, momentum, weight_decay, \
             validation, seed, objective, a setting of the experiment (search, trials, metric, \
             mode, stop, fuse), or an axis given as a list of tables); did you mean \"lr\"?"
        )
    );
    let missing = load_with_env(
        Path::new("sweeps/does-not-exist.toml"),
        &Overrides::default(),
        no_env(),
    )
    .unwrap_err();
    assert!(matches!(missing, SweepError::Read { .. }), "{missing}");
    assert!(missing.to_string().contains("sweeps/does-not-exist.toml"));
}

#[test]
fn same_config_same_id_whatever_sweep_or_key_order() {
    let a = parse(
        "name = \"one\"\nseed = 7\n[defaults]\nepochs = 3\n[[experiment]]\nname = \"x\"\narch = \"ffv2\"\nhidden = 48\nlr = 0.2\n",
    )
    .unwrap();
    // Another sweep, keys in another order, the seed and epochs set in other places.
    let b = parse(
        "name = \"two\"\n[defaults]\nseed = 7\n[[experiment]]\nlr = 0.2\nepochs = 3\nhidden = 48\nname = \"other\"\narch = \"ffv2\"\n",
    )
    .unwrap();
    assert_eq!(a.trials.len(), 1);
    assert_eq!(b.trials.len(), 1);
    assert_eq!(a.trials[0].hparams, b.trials[0].hparams);
    assert_eq!(a.trials[0].id, b.trials[0].id);
    assert_ne!(a.trials[0].experiment, b.trials[0].experiment);
    let expected = Hyperparams {
        arch: Arch::Ffv2,
        hidden: 48,
        lr: 0.2,
        epochs: 3,
        seed: 7,
        ..Hyperparams::default()
    };
    assert_eq!(a.trials[0].id, expected.trial_id());
}

#[test]
fn duplicates_are_kept_once_first_experiment_wins() {
    let s = parse(
        "name = \"dups\"\n\
         [[experiment]]\nname = \"first\"\nlr = [0.1, 0.2, 0.1]\n\
         [[experiment]]\nname = \"second\"\nlr = [0.3, 0.2]\nepochs = 10\n\
         [[experiment]]\nname = \"third\"\nopt = [{ lr = 0.1 }, { lr = 0.1, momentum = 0.0 }, { lr = 0.1, momentum = 0.9 }]\n",
    )
    .unwrap();
    let got: Vec<(String, f64, f64)> = s
        .trials
        .iter()
        .map(|t| (t.experiment.clone(), t.hparams.lr, t.hparams.momentum))
        .collect();
    assert_eq!(
        got,
        [
            ("first".to_string(), 0.1, 0.0),
            ("first".to_string(), 0.2, 0.0),
            ("second".to_string(), 0.3, 0.0),
            ("third".to_string(), 0.1, 0.9),
        ]
    );
    // first: one 0.1 repeated; second: 0.2 (epochs 10 is the default); third: two equal to first's.
    assert_eq!(s.duplicates_dropped, 4);
    assert!(render_table(&s).ends_with("4 trials, 40 epochs, 4 duplicates dropped\n"));
}

#[test]
fn axes_expand_row_major_in_file_order() {
    let s = parse(
        "name = \"order\"\n[[experiment]]\nname = \"a\"\nhidden = [8, 16]\nlr = [0.1, 0.2, 0.3]\nseed = [1, 2]\n",
    )
    .unwrap();
    let got: Vec<(u32, f64, u64)> = s
        .trials
        .iter()
        .map(|t| (t.hparams.hidden, t.hparams.lr, t.hparams.seed))
        .collect();
    assert_eq!(got.len(), 12);
    assert_eq!(&got[..3], &[(8, 0.1, 1), (8, 0.1, 2), (8, 0.2, 1)]);
    assert_eq!(got[11], (16, 0.3, 2));
    let swapped = parse(
        "name = \"order\"\n[[experiment]]\nname = \"a\"\nlr = [0.1, 0.2, 0.3]\nhidden = [8, 16]\nseed = [1, 2]\n",
    )
    .unwrap();
    assert_eq!(swapped.trials[1].hparams.hidden, 8);
    assert_eq!(swapped.trials[2].hparams.hidden, 16);
}

#[test]
fn precedence_defaults_seed_then_defaults_then_experiment() {
    let s = parse(
        "name = \"p\"\nseed = 9\n[defaults]\nhidden = 20\nepochs = 2\nseed = 11\n\
         [[experiment]]\nname = \"a\"\nepochs = 4\n\
         [[experiment]]\nname = \"b\"\nlr = 0.3\n",
    )
    .unwrap();
    let a = &s.trials[0].hparams;
    assert_eq!((a.hidden, a.epochs, a.seed, a.lr), (20, 4, 11, 0.1));
    let b = &s.trials[1].hparams;
    assert_eq!((b.hidden, b.epochs, b.seed, b.lr), (20, 2, 11, 0.3));
    let t = parse("name = \"p\"\nseed = 9\n[[experiment]]\nname = \"a\"\n").unwrap();
    assert_eq!(
        t.trials[0].hparams,
        Hyperparams {
            seed: 9,
            ..Hyperparams::default()
        }
    );
}

#[test]
fn env_overrides_and_flags_win_over_the_file() {
    let text = "name = \"file\"\nseed = 1\n[defaults]\nepochs = 3\n[[experiment]]\nname = \"a\"\nlr = 0.1\n";
    let path = Path::new("env.toml");
    let s = load_str(
        path,
        text,
        &Overrides::default(),
        env(&[
            ("SWEEP_NAME", "from-env"),
            ("SWEEP_SEED", "5"),
            ("SWEEP_DEFAULTS__EPOCHS", "7"),
            ("SWEEP_DEFAULTS__BATCH_SIZE", "32"),
            ("sweep_defaults__arch", "cnn"),
            ("SWEEP_DEFAULTS__MOMENTUM", "9e-1"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(s.name, "from-env");
    let h = &s.trials[0].hparams;
    assert_eq!((h.seed, h.epochs, h.batch_size, h.lr), (5, 7, 32, 0.1));
    assert_eq!((h.arch, h.momentum), (Arch::Cnn, 0.9));

    let s = load_str(
        path,
        text,
        &Overrides {
            name: Some("from-flag".into()),
            seed: Some(6),
        },
        env(&[("SWEEP_NAME", "from-env"), ("SWEEP_SEED", "5")]),
    )
    .unwrap();
    assert_eq!(
        (s.name.as_str(), s.trials[0].hparams.seed),
        ("from-flag", 6)
    );

    // Errors from the environment or a flag name it instead of a line.
    let bad = |vars: &[(&str, &str)], overrides: Overrides| {
        load_str(path, text, &overrides, env(vars)).unwrap_err()
    };
    let e = bad(&[("SWEEP_DEFAULTS__LR", "0")], Overrides::default());
    assert_eq!(
        e.to_string(),
        "environment variable SWEEP_DEFAULTS__LR: defaults: lr must be a finite number > 0, got 0"
    );
    let e = bad(&[("SWEEP_DEFAULTS__LRR", "0.1")], Overrides::default());
    assert!(
        e.to_string()
            .starts_with("environment variable SWEEP_DEFAULTS__LRR: defaults: key \"lrr\""),
        "{e}"
    );
    let e = bad(&[("SWEEP_EPOCHS", "3")], Overrides::default());
    assert!(
        e.to_string()
            .starts_with("environment variable SWEEP_EPOCHS: unknown setting"),
        "{e}"
    );
    let e = bad(&[("SWEEP_NAME", "a/b")], Overrides::default());
    assert!(
        e.to_string()
            .starts_with("environment variable SWEEP_NAME: sweep name \"a/b\""),
        "{e}"
    );
    let e = bad(&[("SWEEP_SEED", "x")], Overrides::default());
    assert!(
        e.to_string()
            .contains("seed must be a whole number, found string \"x\""),
        "{e}"
    );
    let e = bad(
        &[],
        Overrides {
            name: Some("..".into()),
            seed: None,
        },
    );
    assert!(
        e.to_string().starts_with("flag --name: sweep name \"..\""),
        "{e}"
    );
}

/// The one test that touches the process environment, so that `load` itself is covered.
#[test]
fn load_reads_the_process_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "name = \"s\"\n[[experiment]]\nname = \"a\"\n").unwrap();
    std::env::set_var("SWEEP_DEFAULTS__HIDDEN", "24");
    let s = sweep::load(&path, &Overrides::default());
    std::env::remove_var("SWEEP_DEFAULTS__HIDDEN");
    let s = s.unwrap();
    assert_eq!(s.trials[0].hparams.hidden, 24);
    assert_eq!(s.source, path);
}

#[test]
fn hundred_thousand_trials_expand_quickly() {
    let text = synthetic_toml("big", 100_000);
    assert!(
        text.len() < 4096,
        "the generator should use axes, not list trials"
    );
    let start = std::time::Instant::now();
    let s = load_str(
        Path::new("big.toml"),
        &text,
        &Overrides::default(),
        no_env(),
    )
    .unwrap();
    let loaded = start.elapsed();
    assert_eq!(s.trials.len(), 100_000);
    assert_eq!(s.duplicates_dropped, 0);
    let table = render_table(&s);
    assert_eq!(table.lines().count(), 100_002);
    eprintln!(
        "100k trials: load {loaded:?}, with table {:?}",
        start.elapsed()
    );

    let odd = load_str(
        Path::new("odd.toml"),
        &synthetic_toml("odd", 2_345),
        &Overrides::default(),
        no_env(),
    )
    .unwrap();
    assert_eq!(odd.trials.len(), 2_345);
}

#[test]
fn too_many_trials_are_refused_before_expanding() {
    let list = |n: usize| {
        (1..=n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "name = \"huge\"\n[[experiment]]\nname = \"a\"\nhidden = [{}]\nepochs = [{}]\nseed = [{}]\nbatch_size = [{}]\n",
        list(100),
        list(100),
        list(100),
        list(100)
    );
    let e = parse(&text).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("more than {MAX_TRIALS} trials")),
        "{e}"
    );
    assert_eq!(e.line(), Some(2));
}
