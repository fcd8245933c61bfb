//! The report's views of search and stopping (issue 12), those of Optuna's dashboard and of
//! W&B: for each experiment that searched (`random` or `tpe`), its optimization history (each
//! trial's metric at its best epoch, in the order the trials were made, with the best so
//! far) and a slice per hyperparameter that varies (the metric against its value); for each
//! experiment whose rules stopped trials, which trial stopped at which epoch, by which rule.

use crate::error::{Error, Result};
use crate::file_stem;
use crate::html::{esc, img, num, Figures};
use crate::output::Output;
use crate::plot_search::{self, Axis, Point, Slice};
use crate::select::{RankedTrial, Ranking};
use results_format::best::EpochValues;
use results_format::{Mode, TrialRow, TrialStatus};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A hyperparameter as a slice reads it: a number, or a name.
type Read = fn(&TrialRow) -> Option<Value>;

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Value {
    Number(f64),
    Name(String),
}

/// The hyperparameters a slice can be drawn for, in the order the sweep format lists them.
const PARAMS: [(&str, Read); 10] = [
    ("arch", |r| r.arch.clone().map(Value::Name)),
    ("lr", |r| r.lr.map(Value::Number)),
    ("hidden", |r| r.hidden.map(|v| Value::Number(v as f64))),
    ("dropout", |r| r.dropout.map(Value::Number)),
    ("epochs", |r| r.epochs.map(|v| Value::Number(v as f64))),
    ("batch_size", |r| {
        r.batch_size.map(|v| Value::Number(v as f64))
    }),
    ("momentum", |r| r.momentum.map(Value::Number)),
    ("weight_decay", |r| r.weight_decay.map(Value::Number)),
    ("validation", |r| r.validation.map(Value::Number)),
    ("seed", |r| r.seed.map(|v| Value::Number(v as f64))),
];

/// One trial of an experiment in the order it was made: its metric at its best epoch.
struct Made<'a> {
    trial: &'a RankedTrial,
    value: Option<f64>,
}

/// Draws the figures of every searched experiment, lists stopped trials, and puts both in
/// `figures.search` for the page.
pub(crate) fn draw(out: &mut Output, ranking: &Ranking, figures: &mut Figures) -> Result<()> {
    let mut experiments: BTreeMap<String, Vec<&RankedTrial>> = BTreeMap::new();
    for t in &ranking.trials {
        let name = t.row.experiment.clone().unwrap_or_else(|| "sweep".into());
        experiments.entry(name).or_default().push(t);
    }
    let mut html = String::new();
    for (name, mut trials) in experiments {
        trials.sort_by_key(|t| t.index);
        let searched = trials
            .iter()
            .any(|t| matches!(t.row.search.as_deref(), Some("random" | "tpe")));
        let stopped: Vec<&RankedTrial> = trials
            .iter()
            .copied()
            .filter(|t| t.row.status == TrialStatus::Stopped)
            .collect();
        if !searched && stopped.is_empty() {
            continue;
        }
        let _ = writeln!(html, "<h3>Experiment {}</h3>", esc(&name));
        if searched {
            draw_search(out, &name, &trials, &mut html)?;
        }
        stopped_table(&stopped, &mut html);
    }
    if !html.is_empty() {
        figures.search = format!(
            "<h2>Search and early stopping</h2>\n<p>Each trial's metric at its best epoch, in the \
             order the trials were made (random draws, or TPE suggestions as workers freed up), \
             with the best so far; then the metric against each hyperparameter that varies. \
             Hollow red: trials a stopping rule ended early (their value is the best before the \
             stop).</p>\n{html}"
        );
    }
    Ok(())
}

/// `search_<experiment>_history.png` and `search_<experiment>_slices.png`.
fn draw_search(
    out: &mut Output,
    name: &str,
    trials: &[&RankedTrial],
    html: &mut String,
) -> Result<()> {
    let made: Vec<Made<'_>> = trials
        .iter()
        .filter(|t| t.row.status.has_result())
        .map(|t| Made {
            trial: t,
            value: t
                .best
                .and_then(|e| e.get(t.goal.metric))
                .or(t.row.best_metric),
        })
        .collect();
    let Some(first) = made.first() else {
        return Ok(());
    };
    let goal = first.trial.goal;
    let metric = format!("{} ({})", goal.metric, goal.mode);
    let points: Vec<Point> = made
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some(Point {
                x: (i + 1) as f64,
                y: m.value?,
                stopped: m.trial.row.status == TrialStatus::Stopped,
            })
        })
        .collect();
    let mut best_so_far: Vec<(f64, f64)> = Vec::new();
    for p in &points {
        let better = best_so_far.last().is_none_or(|&(_, b)| match goal.mode {
            Mode::Max => p.y > b,
            Mode::Min => p.y < b,
        });
        let y = if better {
            p.y
        } else {
            best_so_far.last().expect("not empty").1
        };
        best_so_far.push((p.x, y));
    }
    let stem = file_stem(name);
    let path = out.root.join(format!("search_{stem}_history.png"));
    let title = format!("{name}: optimization history ({} trials)", points.len());
    let legend = plot_search::legend_for(goal.mode);
    let png = plot_search::history(&title, &metric, &points, &best_so_far, legend.clone())
        .map_err(|e| Error::plot(&path, e))?;
    out.write(&path, &png)?;
    let _ = writeln!(html, "{}", img(&png, &title));
    let slices = slices(&made);
    if !slices.is_empty() {
        let path = out.root.join(format!("search_{stem}_slices.png"));
        let title = format!("{name}: {metric} against each hyperparameter");
        let png = plot_search::slices(&title, &metric, &slices, legend)
            .map_err(|e| Error::plot(&path, e))?;
        out.write(&path, &png)?;
        let _ = writeln!(html, "{}", img(&png, &title));
    }
    Ok(())
}

/// A slice for every hyperparameter with more than one value among `made`.
fn slices(made: &[Made<'_>]) -> Vec<Slice> {
    let mut out = Vec::new();
    for (param, read) in PARAMS {
        let values: Vec<(Value, f64, bool)> = made
            .iter()
            .filter_map(|m| {
                let stopped = m.trial.row.status == TrialStatus::Stopped;
                Some((read(&m.trial.row)?, m.value?, stopped))
            })
            .collect();
        let mut distinct: Vec<&Value> = values.iter().map(|v| &v.0).collect();
        distinct.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        distinct.dedup();
        if distinct.len() < 2 {
            continue;
        }
        let names: Vec<String> = distinct
            .iter()
            .filter_map(|v| match v {
                Value::Name(n) => Some(n.clone()),
                Value::Number(_) => None,
            })
            .collect();
        let numbers: Vec<f64> = values
            .iter()
            .filter_map(|v| match v.0 {
                Value::Number(x) => Some(x),
                Value::Name(_) => None,
            })
            .collect();
        let (lo, hi) = numbers
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        // A range over more than a decade of positive values reads on a log scale (lr).
        let log = names.is_empty() && lo > 0.0 && hi / lo >= 10.0;
        let axis = if !names.is_empty() {
            Axis::Names(names.clone())
        } else if log {
            Axis::Log10
        } else {
            Axis::Linear
        };
        let points = values
            .iter()
            .map(|(v, y, stopped)| Point {
                x: match v {
                    Value::Number(x) if log => x.log10(),
                    Value::Number(x) => *x,
                    Value::Name(n) => names.iter().position(|m| m == n).unwrap_or(0) as f64,
                },
                y: *y,
                stopped: *stopped,
            })
            .collect();
        out.push(Slice {
            param: param.to_string(),
            axis,
            points,
        });
    }
    out
}

/// Which trial stopped at which epoch, by which rule, and its metric there.
fn stopped_table(stopped: &[&RankedTrial], html: &mut String) {
    if stopped.is_empty() {
        return;
    }
    let _ = writeln!(
        html,
        "<p>{} trial(s) stopped early:</p>\n<table><tr><th class=\"l\">trial</th><th class=\"l\">hyperparameters</th><th class=\"l\">rule</th><th>stopped at epoch</th><th>epochs recorded</th><th>metric there</th><th>best epoch</th></tr>",
        stopped.len()
    );
    for t in stopped {
        let at = t.row.stop_epoch;
        let there = at.and_then(|e| {
            t.epochs
                .iter()
                .find(|r| r.epoch == e)
                .and_then(|r| r.get(t.goal.metric))
        });
        let _ = writeln!(
            html,
            "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.row.trial_id),
            esc(&t.row.label()),
            esc(t.row.stop_rule.as_deref().unwrap_or("—")),
            at.map_or("—".into(), |e| e.to_string()),
            t.epochs.len(),
            num(there),
            t.best.map_or("—".into(), |e| e.epoch.to_string()),
        );
    }
    html.push_str("</table>\n");
}
