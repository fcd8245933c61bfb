//! The search settings of a sweep file (issue 12): random draws (reproducible, in range,
//! distinct), a tpe experiment's space, lists and grouped axes as choices, metric, mode, the
//! stop table, the synthetic objective, configurations shared by two experiments, what
//! `coordinator check` prints of them, and every error they can have, with its position.

use coordinator::commands::check::{render_plan, render_table};
use coordinator::sweep::{load_str, Origin, Overrides, SearchKind, Sweep, SweepError};
use proto::{Arch, Objective};
use results_format::{Goal, Metric, Mode};
use std::collections::HashSet;
use std::path::Path;

fn parse(text: &str) -> Result<Sweep, SweepError> {
    load_str(
        Path::new("test.toml"),
        text,
        &Overrides::default(),
        Vec::<(String, String)>::new(),
    )
}

/// The setup of issue 12's regret benchmark.
const SYNTHETIC: &str = r#"
name = "regret"
seed = 3

[defaults]
objective = "synthetic"
arch = "ffv3"
epochs = 1

[[experiment]]
name = "synthetic"
search = "random"
trials = 40
lr = { loguniform = [0.001, 1.0] }
hidden = { int = [16, 256], log = true }
dropout = { uniform = [0.0, 0.5] }
"#;

#[test]
fn random_search_draws_the_same_distinct_trials_in_range_from_the_same_file() {
    let a = parse(SYNTHETIC).unwrap();
    assert_eq!(a.trials.len(), 40);
    assert_eq!(a, parse(SYNTHETIC).unwrap(), "same file, same trials");
    let ids: HashSet<_> = a.trials.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 40);
    for t in &a.trials {
        let h = &t.hparams;
        assert_eq!(
            (h.arch, h.epochs, h.objective),
            (Arch::Ffv3, 1, Objective::Synthetic)
        );
        assert!((0.001..1.0).contains(&h.lr), "{h:?}");
        assert!((16..=256).contains(&h.hidden), "{h:?}");
        assert!((0.0..0.5).contains(&h.dropout), "{h:?}");
        assert_eq!(h.seed, 3);
        assert_eq!(t.id, h.trial_id());
    }
    // Another seed, or another experiment name, draws other trials.
    let other_seed = parse(&SYNTHETIC.replace("seed = 3", "seed = 4")).unwrap();
    assert_ne!(a.trials[0].hparams.lr, other_seed.trials[0].hparams.lr);
    let other_name = parse(&SYNTHETIC.replace("name = \"synthetic\"", "name = \"other\"")).unwrap();
    assert_ne!(a.trials[0].hparams.lr, other_name.trials[0].hparams.lr);
    // The draws are the search crate's, in the file's order of parameters.
    let space = a.experiments[0].space.as_ref().unwrap();
    let names: Vec<&str> = space
        .space()
        .params()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["lr", "hidden", "dropout"]);
    let table = render_table(&a);
    assert!(
        table.ends_with("40 trials, 40 epochs, 0 duplicates dropped\n"),
        "{table}"
    );
}

#[test]
fn a_synthetic_trial_never_shares_an_id_with_a_trained_one() {
    let text =
        "name = \"o\"\n[[experiment]]\nname = \"a\"\nobjective = [\"train\", \"synthetic\"]\n";
    let s = parse(text).unwrap();
    assert_eq!(s.trials.len(), 2);
    assert_ne!(s.trials[0].id, s.trials[1].id);
    let train = parse("name = \"o\"\n[[experiment]]\nname = \"a\"\n").unwrap();
    assert_eq!(
        train.trials[0].id, s.trials[0].id,
        "a trained trial keeps its id"
    );
}

#[test]
fn under_random_a_list_is_a_choice_and_a_grouped_axis_a_choice_of_groups() {
    let s = parse(
        "name = \"c\"\n[[experiment]]\nname = \"a\"\nsearch = \"random\"\ntrials = 30\n\
         model = [{ arch = \"ffv1\", hidden = 32 }, { arch = \"ffv2\", hidden = 64 }]\n\
         lr = [0.05, 0.1, 0.5]\nmomentum = { uniform = [0.0, 0.9] }\n",
    )
    .unwrap();
    assert_eq!(s.trials.len(), 30);
    let mut groups = HashSet::new();
    for t in &s.trials {
        let h = &t.hparams;
        assert!(
            matches!((h.arch, h.hidden), (Arch::Ffv1, 32) | (Arch::Ffv2, 64)),
            "{h:?}"
        );
        assert!([0.05, 0.1, 0.5].contains(&h.lr), "{h:?}");
        groups.insert(h.arch);
    }
    assert_eq!(groups.len(), 2, "both groups drawn");
    let plan = render_plan(&s);
    assert!(
        plan.contains("model     choice of {arch=ffv1 hidden=32} | {arch=ffv2 hidden=64}"),
        "{plan}"
    );
    assert!(
        plan.contains("lr        choice of 0.05, 0.1, 0.5"),
        "{plan}"
    );
    assert!(plan.contains("momentum  uniform [0, 0.9]"), "{plan}");
}

#[test]
fn a_tpe_experiment_plans_its_space_and_suggests_while_running() {
    let text = SYNTHETIC.replace("search = \"random\"", "search = \"tpe\"").replace(
        "trials = 40",
        "trials = 40\nmetric = \"val_loss\"\nstop = { asha = { grace = 1, reduction = 3 }, divergence = { factor = 3.0 } }",
    );
    let text = text.replace("epochs = 1", "epochs = 20");
    let s = parse(&text).unwrap();
    assert!(s.trials.is_empty());
    assert_eq!(s.to_suggest(), 40);
    assert_eq!(s.total_epochs(), 800);
    let e = &s.experiments[0];
    assert_eq!(e.search, SearchKind::Tpe);
    assert_eq!(
        e.goal,
        Goal::new(Metric::ValLoss, Mode::Min),
        "mode follows the metric"
    );
    assert_eq!(e.epochs, Some(20));
    assert!(e.stop.asha.is_some() && e.stop.divergence.is_some() && e.stop.median.is_none());
    let table = render_table(&s);
    assert!(
        table.ends_with("0 trials (+40 suggested by tpe while the sweep runs), 800 epochs, 0 duplicates dropped\n"),
        "{table}"
    );
    let plan = render_plan(&s);
    for line in [
        "experiment \"synthetic\": tpe, 40 trials suggested while the sweep runs; best epoch on val_loss (min)",
        "  lr       loguniform [0.001, 1]",
        "  hidden   int [16, 256] log",
        "  dropout  uniform [0, 0.5]",
        "  stop: asha (grace 1, reduction 3), divergence (factor 3); workers wait for the verdict after epochs 1, 3, 9",
    ] {
        assert!(plan.lines().any(|l| l == line), "{line:?} not in\n{plan}");
    }
}

#[test]
fn metric_mode_and_stop_rules_go_with_a_grid_too() {
    let s = parse(
        "name = \"g\"\n[[experiment]]\nname = \"a\"\nepochs = 6\nmetric = \"train_acc\"\nmode = \"min\"\n\
         stop = { median = { grace = 2, min_samples = 2 } }\nlr = [0.1, 0.2]\n",
    )
    .unwrap();
    let e = &s.experiments[0];
    assert_eq!((e.search, e.trials), (SearchKind::Grid, 2));
    assert_eq!(e.goal, Goal::new(Metric::TrainAcc, Mode::Min));
    let median = e.stop.median.unwrap();
    assert_eq!((median.grace, median.min_samples), (2, 2));
    assert!(render_plan(&s).contains("stop: median (grace 2, min_samples 2); workers wait for the verdict after epochs 2, 3, 4, 5"));
}

#[test]
fn a_configuration_of_two_experiments_is_one_trial_of_the_first_and_check_says_so() {
    let s = parse(
        "name = \"d\"\n[[experiment]]\nname = \"first\"\nlr = [0.1, 0.2]\n\
         [[experiment]]\nname = \"second\"\nlr = [0.2, 0.3]\nmetric = \"val_loss\"\n",
    )
    .unwrap();
    assert_eq!(s.trials.len(), 3);
    assert_eq!(s.trials[1].experiment, "first");
    assert_eq!(s.shared.len(), 1);
    assert_eq!(
        (
            s.shared[0].experiment.as_str(),
            s.shared[0].follows.as_str()
        ),
        ("second", "first")
    );
    let plan = render_plan(&s);
    assert!(
        plan.contains(&format!(
            "note: experiment \"second\" lists 1 configuration of experiment \"first\" ({}): each runs once, as a trial of \"first\"",
            s.trials[1].id
        )),
        "{plan}"
    );
    // A random draw never repeats an earlier experiment's trial: it is drawn again.
    let r = parse(
        "name = \"d\"\n[[experiment]]\nname = \"grid\"\nlr = [0.1, 0.2]\n\
         [[experiment]]\nname = \"rand\"\nsearch = \"random\"\ntrials = 3\nlr = [0.1, 0.2, 0.3, 0.4, 0.5]\n",
    )
    .unwrap();
    assert_eq!(r.trials.len(), 5);
    assert!(r.trials[2..]
        .iter()
        .all(|t| ![0.1, 0.2].contains(&t.hparams.lr)));
}

/// (what, file, (line, column) or None when the error has no position, text it contains).
type ErrorCase = (
    &'static str,
    &'static str,
    Option<(usize, usize)>,
    &'static str,
);

const EXP: &str = "name = \"s\"\n[[experiment]]\nname = \"a\"\n";

#[test]
fn every_search_error_names_file_line_column_and_key() {
    let cases: &[ErrorCase] = &[
        ("test metric", "metric = \"test_acc\"\n", Some((4, 10)), "metric \"test_acc\" is a test-set column, and the test set chooses nothing"),
        ("unknown metric", "metric = \"val_f1\"\n", Some((4, 10)), "metric \"val_f1\" is not an epoch column"),
        ("unknown search", "search = \"bayes\"\n", Some((4, 10)), "search must be \"grid\", \"random\" or \"tpe\", found \"bayes\""),
        ("random without trials", "search = \"random\"\nlr = { uniform = [0.1, 0.2] }\n", Some((4, 10)), "search = \"random\" needs trials = N"),
        ("trials under grid", "trials = 3\n", Some((4, 1)), "trials is for search = \"random\" or \"tpe\""),
        ("zero trials", "search = \"tpe\"\ntrials = 0\nlr = { uniform = [0.1, 0.2] }\n", Some((5, 10)), "trials must be a whole number from 1"),
        ("bad mode", "mode = \"maximize\"\n", Some((4, 8)), "mode must be \"max\" or \"min\""),
        ("distribution under grid", "lr = { loguniform = [0.01, 0.1] }\n", Some((4, 6)), "lr is a distribution, which needs search = \"random\" or \"tpe\""),
        ("real distribution of a whole number", "search = \"random\"\ntrials = 2\nhidden = { uniform = [16, 64] }\n", Some((6, 12)), "hidden cannot be drawn from uniform: use { int = [lo, hi] }"),
        ("int of a real number", "search = \"random\"\ntrials = 2\nlr = { int = [1, 2] }\n", Some((6, 8)), "lr cannot be drawn from int"),
        ("loguniform from zero", "search = \"random\"\ntrials = 2\nlr = { loguniform = [0.0, 1.0] }\n", Some((6, 21)), "loguniform needs lo > 0"),
        ("values out of range", "search = \"random\"\ntrials = 2\ndropout = { uniform = [0.5, 1.5] }\n", Some((6, 23)), "every value of the distribution must be valid, but dropout must be in [0, 1)"),
        ("two kinds at once", "search = \"random\"\ntrials = 2\nlr = { uniform = [0.1, 0.2], loguniform = [0.1, 0.2] }\n", Some((6, 6)), "found uniform and loguniform at once"),
        ("unknown distribution key", "search = \"random\"\ntrials = 2\nlr = { logunifrom = [0.1, 0.2] }\n", Some((6, 8)), "did you mean \"loguniform\"?"),
        ("log with a real", "search = \"random\"\ntrials = 2\nlr = { uniform = [0.1, 0.2], log = true }\n", Some((6, 30)), "log goes with int only"),
        ("bounds not a pair", "search = \"random\"\ntrials = 2\nlr = { uniform = [0.1] }\n", Some((6, 18)), "bounds must be a list of two numbers [lo, hi], found a list of 1"),
        ("bad choice value", "search = \"random\"\ntrials = 2\narch = { choice = [\"ffv1\", \"mlp\"] }\n", Some((6, 28)), "unknown architecture \"mlp\""),
        ("empty choice", "search = \"random\"\ntrials = 2\narch = { choice = [] }\n", Some((6, 19)), "arch: choice is empty; give it at least one value"),
        ("nested choice", "search = \"random\"\ntrials = 2\nlr = { choice = [[0.1]] }\n", Some((6, 18)), "lr: choice must list single values, found a list"),
        ("too few configurations", "search = \"random\"\ntrials = 5\narch = [\"ffv1\", \"ffv2\"]\nhidden = { int = [16, 17] }\n", Some((2, 1)), "experiment \"a\": the search space has only 4 configurations, fewer than the 5 trials asked for"),
        ("empty space", "search = \"tpe\"\ntrials = 5\n", Some((2, 1)), "the search space is empty"),
        ("stop as a list", "stop = [\"asha\"]\n", Some((4, 8)), "stop must be a table of rules"),
        ("unknown rule", "stop = { ashaa = { grace = 1, reduction = 3 } }\n", Some((4, 10)), "unknown stop rule \"ashaa\" (expected asha, median or divergence); did you mean \"asha\"?"),
        ("unknown rule setting", "stop = { median = { grac = 2 } }\n", Some((4, 21)), "stop rule median: unknown setting \"grac\" (expected grace, min_samples); did you mean \"grace\"?"),
        ("rule past the epochs", "epochs = 5\nstop = { asha = { grace = 6, reduction = 3 } }\n", Some((5, 8)), "stop rule asha: grace (6) must be at most the experiment's epochs (5)"),
        ("missing rule setting", "stop = { divergence = {} }\n", Some((4, 23)), "stop rule divergence needs factor"),
        ("fractional grace", "stop = { median = { grace = 1.5 } }\n", Some((4, 29)), "grace must be a whole number of at least 1, got 1.5"),
        ("epochs axis with stop rules", "stop = { median = { grace = 1 } }\nepochs = [5, 10]\n", Some((5, 1)), "epochs must be one value in an experiment with stop rules"),
        ("stop rules without a validation split", "validation = 0\nstop = { median = { grace = 1 } }\n", Some((2, 1)), "metric val_acc needs a validation split in every trial"),
        ("search setting in defaults", "", None, ""),
    ];
    for (what, body, at, needle) in cases {
        if needle.is_empty() {
            continue;
        }
        let text = format!("{EXP}{body}");
        assert_error(what, &text, *at, needle);
    }
    assert_error(
        "search setting in defaults",
        "name = \"s\"\n[defaults]\nmetric = \"val_loss\"\n[[experiment]]\nname = \"a\"\n",
        Some((3, 1)),
        "defaults: metric is a setting of each [[experiment]], not a default",
    );
    assert_error(
        "unknown objective",
        "name = \"s\"\n[defaults]\nobjective = \"simulated\"\n[[experiment]]\nname = \"a\"\n",
        Some((3, 13)),
        "unknown objective \"simulated\", expected \"train\" or \"synthetic\"",
    );
    assert_error(
        "misspelled setting",
        "name = \"s\"\n[[experiment]]\nname = \"a\"\nserch = \"tpe\"\n",
        Some((4, 1)),
        "did you mean \"search\"?",
    );
}

fn assert_error(what: &str, text: &str, at: Option<(usize, usize)>, needle: &str) {
    let err = parse(text).expect_err(what);
    let msg = err.to_string();
    assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    assert!(msg.starts_with("test.toml"), "{what}: {msg}");
    assert!(!msg.contains('\n'), "{what}: not one line: {msg}");
    match (at, err.origin()) {
        (Some((line, col)), Some(Origin::File { at: Some(pos), .. })) => {
            assert_eq!((pos.line, pos.column), (line, col), "{what}: {msg}");
        }
        (None, Some(Origin::File { at: None, .. })) => {}
        (want, got) => panic!("{what}: wanted position {want:?}, got {got:?}: {msg}"),
    }
}

#[test]
fn the_shipped_search_sweep_is_the_benchmarks_space() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/search.toml");
    let s = coordinator::sweep::load_with_env(
        &path,
        &Overrides::default(),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    assert_eq!(s.trials.len(), 27);
    assert_eq!(s.to_suggest(), 40);
    for t in &s.trials {
        let h = &t.hparams;
        assert!(matches!(h.arch, Arch::Ffv1 | Arch::Ffv2), "{h:?}");
        assert!(
            (32..=128).contains(&h.hidden) && (0.01..0.5).contains(&h.lr),
            "{h:?}"
        );
        assert_eq!((h.epochs, h.objective), (20, Objective::Train));
    }
    let plan = render_plan(&s);
    assert!(
        plan.contains("workers wait for the verdict after epochs 1, 3, 9"),
        "{plan}"
    );
}

#[test]
fn fuse_is_a_key_of_defaults_and_of_each_experiment() {
    let text = r#"
name = "f"
[defaults]
fuse = false
[[experiment]]
name = "off"
lr = [0.05, 0.1]
[[experiment]]
name = "on"
fuse = true
arch = "ffv2"
lr = [0.05, 0.1]
"#;
    let sweep = parse(text).unwrap();
    let fuse: Vec<(&str, bool)> = sweep
        .experiments
        .iter()
        .map(|e| (e.name.as_str(), e.fuse))
        .collect();
    assert_eq!(fuse, [("off", false), ("on", true)]);
    // On unless a file says otherwise.
    let sweep = parse("name = \"s\"\n[[experiment]]\nname = \"a\"\n").unwrap();
    assert!(sweep.experiments[0].fuse);
    assert_error(
        "fuse not a boolean",
        "name = \"s\"\n[[experiment]]\nname = \"a\"\nfuse = \"no\"\n",
        Some((4, 8)),
        "experiment \"a\": fuse must be true or false",
    );
    assert_error(
        "fuse not a boolean in defaults",
        "name = \"s\"\n[defaults]\nfuse = 0\n[[experiment]]\nname = \"a\"\n",
        Some((3, 8)),
        "defaults: fuse must be true or false",
    );
}
