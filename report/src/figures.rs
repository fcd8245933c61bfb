//! The learning curves: one figure per trial and one grid per experiment.

use crate::error::{Error, Result};
use crate::html::Figures;
use crate::output::Output;
use crate::select::{RankedTrial, Ranking};
use crate::{file_stem, plot};
use plotters::prelude::SeriesLabelPosition;
use results_format::{EpochRow, TrialRow};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Reads one metric of an epoch.
type EpochField = fn(&EpochRow) -> Option<f64>;
/// Reads one hyperparameter of a trial as text.
type HpText = fn(&TrialRow) -> Option<String>;

fn curve_series(epochs: &[EpochRow], acc: bool) -> Vec<plot::Series> {
    let pick = |f: fn(&EpochRow) -> Option<f64>| -> Vec<(i64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch, v)))
            .collect()
    };
    let (tr, va, te): (EpochField, EpochField, EpochField) = if acc {
        (|e| e.train_acc, |e| e.val_acc, |e| e.test_acc)
    } else {
        (|e| e.train_loss, |e| e.val_loss, |e| e.test_loss)
    };
    vec![
        plot::Series {
            name: "train",
            color: plot::TRAIN,
            points: pick(tr),
        },
        plot::Series {
            name: "validation",
            color: plot::VAL,
            points: pick(va),
        },
        plot::Series {
            name: "test",
            color: plot::TEST,
            points: pick(te),
        },
    ]
}

/// Panels in hyperparameter order (arch, width, dropout, learning rate, ...), then by id, so
/// a grid reads like the sweep's axes rather than in hash order.
fn hparam_order(a: &TrialRow, b: &TrialRow) -> std::cmp::Ordering {
    let f = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (x, y) => x.is_some().cmp(&y.is_some()),
    };
    a.arch
        .cmp(&b.arch)
        .then(a.hidden.cmp(&b.hidden))
        .then(f(a.dropout, b.dropout))
        .then(f(a.lr, b.lr))
        .then(f(a.momentum, b.momentum))
        .then(f(a.weight_decay, b.weight_decay))
        .then(a.batch_size.cmp(&b.batch_size))
        .then(a.epochs.cmp(&b.epochs))
        .then(f(a.validation, b.validation))
        .then(a.seed.cmp(&b.seed))
        .then(a.trial_id.cmp(&b.trial_id))
}

/// A panel title for a trial of an experiment: its label, plus whichever of batch size,
/// epochs, validation fraction and seed vary within the experiment.
fn grid_title(t: &TrialRow, group: &[&RankedTrial]) -> String {
    let mut s = t.label();
    let varies = |f: HpText| {
        group
            .iter()
            .map(|g| f(&g.row))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    };
    let extras: [(&str, HpText); 4] = [
        ("bs", |r| r.batch_size.map(|v| v.to_string())),
        ("ep", |r| r.epochs.map(|v| v.to_string())),
        ("val", |r| r.validation.map(|v| v.to_string())),
        ("seed", |r| r.seed.map(|v| v.to_string())),
    ];
    for (key, f) in extras {
        if varies(f) {
            if let Some(v) = f(t) {
                let _ = write!(s, " {key}{v}");
            }
        }
    }
    s
}

/// Draws every trial's curves (`curves/<trial>.png`) and, per experiment, a grid of them
/// for loss and for accuracy (`grid_<experiment>_{loss,acc}.png`).
pub(crate) fn draw(out: &mut Output, ranking: &Ranking, figures: &mut Figures) -> Result<()> {
    let drawn: Vec<&RankedTrial> = ranking
        .trials
        .iter()
        .filter(|t| !t.epochs.is_empty())
        .collect();
    for t in &drawn {
        let path = out
            .curves
            .join(format!("{}.png", file_stem(&t.row.trial_id)));
        let png = plot::curves(
            &format!("{}: {}", t.row.trial_id, t.row.label()),
            &curve_series(&t.epochs, false),
            &curve_series(&t.epochs, true),
        )
        .map_err(|e| Error::plot(&path, e))?;
        out.write(&path, &png)?;
        figures.curves.push((t.row.trial_id.clone(), png));
    }
    let mut experiments: BTreeMap<String, Vec<&RankedTrial>> = BTreeMap::new();
    for t in drawn {
        experiments
            .entry(t.row.experiment.clone().unwrap_or_else(|| "sweep".into()))
            .or_default()
            .push(t);
    }
    for (exp, mut group) in experiments {
        group.sort_by(|a, b| hparam_order(&a.row, &b.row));
        for (metric, acc, pos) in [
            ("loss", false, SeriesLabelPosition::UpperRight),
            ("acc", true, SeriesLabelPosition::LowerRight),
        ] {
            let path = out
                .root
                .join(format!("grid_{}_{metric}.png", file_stem(&exp)));
            let panels: Vec<(String, Vec<plot::Series>)> = group
                .iter()
                .map(|t| (grid_title(&t.row, &group), curve_series(&t.epochs, acc)))
                .collect();
            let what = if acc { "accuracy" } else { "loss" };
            let title = format!("{exp}: {what} (train, validation, test) per trial");
            let png = plot::grid(&title, what, &panels, pos).map_err(|e| Error::plot(&path, e))?;
            out.write(&path, &png)?;
            figures.grids.push((format!("{exp} — {what}"), png));
        }
    }
    Ok(())
}
