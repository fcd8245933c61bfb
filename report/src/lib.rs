//! hypersweep's report: from a sweep's results folder to `results/<sweep>/report/`.
//!
//! [`generate`] reads the trial table and the per-epoch metrics ([`load`]), ranks the trials and
//! picks the best finished one on validation accuracy ([`select`]), scores its test-set
//! predictions as scikit-learn would ([`metrics`]), draws the figures with an embedded font
//! (`plot`), and writes CSVs, a predictions Parquet file, a copy of the best checkpoint and one
//! self-contained `index.html` (`html`). Every file is written under a temporary name and
//! renamed, so a reader never sees half a file. Nothing here links libtorch: the worker saved
//! the softmax outputs, and this crate only reads them.

mod error;
mod html;
pub mod load;
pub mod metrics;
mod plot;
pub mod select;

pub use error::{Error, Result};
pub use select::SelectionMetric;

use arrow::array::{Array, ArrayRef, Float64Array, Float64Builder, Int64Array, ListBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use load::{EpochRow, Predictions, TrialRow};
use metrics::{ClassificationReport, ConfusionMatrix};
use parquet::arrow::ArrowWriter;
use plotters::prelude::SeriesLabelPosition;
use select::RankedTrial;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Classes of Fashion-MNIST.
pub const NUM_CLASSES: usize = dataset::CLASS_NAMES.len();

/// How the report is made.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// What the best trial is chosen on (validation accuracy by default).
    pub metric: SelectionMetric,
    /// How many of the highest-entropy test samples to list and draw.
    pub hardest: usize,
    /// Where Fashion-MNIST is, for drawing the hardest samples; `None` searches as
    /// [`dataset::locate`] does. When the data cannot be found or does not match the
    /// predictions, `hardest.csv` is still written and `index.html` says why there are no images.
    pub data_dir: Option<PathBuf>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            metric: SelectionMetric::ValAcc,
            hardest: 9,
            data_dir: None,
        }
    }
}

/// What [`generate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    /// `<results>/report`.
    pub report_dir: PathBuf,
    /// `<results>/report/index.html`.
    pub index: PathBuf,
    pub best_trial: proto::TrialId,
    /// The best trial's short label, e.g. `ffv3 h64 p0.25 lr0.1`.
    pub best_label: String,
    /// The metric the choice was made on (test accuracy when the sweep has no validation split).
    pub selected_on: SelectionMetric,
    /// True when the best trial was chosen on the test set.
    pub chosen_on_test_set: bool,
    /// The best trial's chosen epoch and its numbers there.
    pub best_epoch: Option<i64>,
    pub val_acc: Option<f64>,
    pub val_loss: Option<f64>,
    /// Accuracy of the saved predictions (the final checkpoint) on the test images they cover.
    pub test_acc: f64,
    pub macro_f1: f64,
    /// Test images the predictions cover.
    pub test_samples: usize,
    /// Trials by status, e.g. `[("finished", 12), ("failed", 1)]`.
    pub trials_by_status: Vec<(String, usize)>,
    /// Things the reader should know: test-set selection, missing images, ineligible trials.
    pub notes: Vec<String>,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// A few lines for the coordinator to print.
    pub text: String,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8], written: &mut Vec<PathBuf>) -> Result<()> {
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    written.push(path.to_path_buf());
    Ok(())
}

fn copy_atomic(from: &Path, to: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let tmp = tmp_name(to);
    std::fs::copy(from, &tmp).map_err(|e| Error::io(from, e))?;
    std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e))?;
    written.push(to.to_path_buf());
    Ok(())
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// A file name made of `s`: anything but ASCII letters, digits, `-`, `_` and `.` becomes `_`.
pub fn file_stem(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

/// The best trial's test-set predictions, scored.
pub(crate) struct Scored {
    pub preds: Predictions,
    pub pred: Vec<usize>,
    pub entropy: Vec<f64>,
    pub cm: ConfusionMatrix,
    pub report: ClassificationReport,
    pub hardest: Vec<usize>,
}

fn score(preds: Predictions, n_hardest: usize) -> Scored {
    let pred: Vec<usize> = (0..preds.len())
        .map(|i| metrics::argmax(preds.row(i)))
        .collect();
    let entropy: Vec<f64> = (0..preds.len())
        .map(|i| metrics::entropy(preds.row(i)))
        .collect();
    let cm = ConfusionMatrix::new(NUM_CLASSES, &preds.labels, &pred);
    let report = ClassificationReport::from_confusion(&cm, &dataset::CLASS_NAMES);
    let hardest = metrics::hardest(&entropy, n_hardest);
    Scored {
        preds,
        pred,
        entropy,
        cm,
        report,
        hardest,
    }
}

fn predictions_parquet(s: &Scored) -> std::result::Result<Vec<u8>, String> {
    let n = s.preds.len();
    let mut probs = ListBuilder::new(Float64Builder::with_capacity(n * NUM_CLASSES));
    for i in 0..n {
        for &p in s.preds.row(i) {
            probs.values().append_value(f64::from(p));
        }
        probs.append(true);
    }
    let probs = probs.finish();
    let schema = Arc::new(Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
        Field::new("pred", DataType::Int64, false),
        Field::new("probs", probs.data_type().clone(), false),
        Field::new("entropy", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(Int64Array::from_iter_values(
            s.preds.labels.iter().map(|&l| l as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            s.pred.iter().map(|&p| p as i64),
        )),
        Arc::new(probs),
        Arc::new(Float64Array::from(s.entropy.clone())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

fn hardest_csv(s: &Scored) -> String {
    let mut out = String::from("rank,index,label,pred,entropy,p_pred\n");
    for (r, &i) in s.hardest.iter().enumerate() {
        let _ = writeln!(
            out,
            "{},{i},{},{},{:.4},{:.4}",
            r + 1,
            dataset::CLASS_NAMES[s.preds.labels[i]],
            dataset::CLASS_NAMES[s.pred[i]],
            s.entropy[i],
            s.preds.row(i)[s.pred[i]],
        );
    }
    out
}

/// Loads the test images and checks they are the ones the predictions were made on.
fn test_images(
    opts: &ReportOptions,
    preds: &Predictions,
) -> std::result::Result<dataset::Split, String> {
    let dir = dataset::locate(opts.data_dir.as_deref()).map_err(|e| e.to_string())?;
    let split = dataset::load_test(&dir).map_err(|e| e.to_string())?;
    if split.len() < preds.len() {
        return Err(format!(
            "the predictions cover {} test images but {} holds only {}",
            preds.len(),
            dir.display(),
            split.len()
        ));
    }
    if let Some(i) = (0..preds.len()).find(|&i| usize::from(split.labels[i]) != preds.labels[i]) {
        return Err(format!(
            "test image {i} in {} is labelled {} but the predictions say {}: the predictions are not in test-set order",
            dir.display(),
            dataset::CLASS_NAMES[usize::from(split.labels[i])],
            dataset::CLASS_NAMES[preds.labels[i]]
        ));
    }
    Ok(split)
}

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

/// Reads `<results_dir>`, writes `<results_dir>/report/`, and says what it wrote.
///
/// Fails with [`Error::NoEligibleTrial`] (writing nothing) when no trial is finished with its
/// artifacts, and with a message naming the file on unreadable input.
pub fn generate(results_dir: &Path, opts: &ReportOptions) -> Result<ReportSummary> {
    let trials = load::read_trials(&results_dir.join("trials.parquet"))?;
    let mut epochs = load::read_epochs(&results_dir.join("epochs"))?;
    let artifacts = results_dir.join("artifacts");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for t in &trials {
        *by_status.entry(t.status.clone()).or_default() += 1;
    }
    let trials_by_status: Vec<(String, usize)> = by_status.into_iter().collect();
    let with_epochs: Vec<(TrialRow, Vec<EpochRow>)> = trials
        .into_iter()
        .map(|t| {
            let e = epochs.remove(&t.trial_id).unwrap_or_default();
            (t, e)
        })
        .collect();
    let orphans = epochs.len();
    let ranking = select::rank(with_epochs, opts.metric, &artifacts);
    let Some(best) = ranking.best() else {
        let status = if trials_by_status.is_empty() {
            "trials.parquet has no rows".to_string()
        } else {
            trials_by_status
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let why = ranking
            .trials
            .iter()
            .find_map(|t| {
                t.ineligible
                    .as_ref()
                    .filter(|r| r.starts_with("missing"))
                    .cloned()
            })
            .map(|r| format!("; e.g. {r}"))
            .unwrap_or_default();
        return Err(Error::NoEligibleTrial {
            dir: results_dir.to_path_buf(),
            reason: format!("{status}{why}"),
        });
    };

    let mut notes: Vec<String> = Vec::new();
    if let Some(n) = &ranking.test_set_note {
        notes.push(n.clone());
    }
    let not_eligible = ranking.trials.iter().filter(|t| t.rank.is_none()).count();
    if not_eligible > 0 {
        notes.push(format!(
            "{not_eligible} trial(s) are listed but could not be chosen (not finished, or artifacts missing)"
        ));
    }
    if orphans > 0 {
        notes.push(format!(
            "{orphans} trial id(s) in epochs/ are not in trials.parquet and were ignored"
        ));
    }

    let out = results_dir.join("report");
    let curves_dir = out.join("curves");
    let best_dir = out.join("best");
    for d in [&out, &curves_dir, &best_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut files: Vec<PathBuf> = Vec::new();

    // The best trial's artifacts.
    let best_id = best.row.trial_id.clone();
    let art = artifacts.join(&best_id);
    let hparams = load::read_config(&art.join("config.json"))?;
    let scored = score(
        load::read_predictions(&art.join("predictions.safetensors"))?,
        opts.hardest,
    );
    copy_atomic(
        &art.join("model.safetensors"),
        &best_dir.join("model.safetensors"),
        &mut files,
    )?;
    copy_atomic(
        &art.join("config.json"),
        &best_dir.join("config.json"),
        &mut files,
    )?;

    write_atomic(
        &out.join("classification_report.csv"),
        scored.report.to_csv().as_bytes(),
        &mut files,
    )?;
    write_atomic(
        &out.join("classification_report.md"),
        scored.report.to_markdown().as_bytes(),
        &mut files,
    )?;
    write_atomic(
        &out.join("confusion_matrix.csv"),
        scored.cm.to_csv(&dataset::CLASS_NAMES).as_bytes(),
        &mut files,
    )?;
    let pq_path = out.join("predictions.parquet");
    let pq = predictions_parquet(&scored)
        .map_err(|e| Error::invalid(&pq_path, format!("writing: {e}")))?;
    write_atomic(&pq_path, &pq, &mut files)?;
    write_atomic(
        &out.join("hardest.csv"),
        hardest_csv(&scored).as_bytes(),
        &mut files,
    )?;

    let mut figures = html::Figures::default();
    let cm_path = out.join("confusion_matrix.png");
    let cm_png = plot::confusion(
        &format!(
            "confusion matrix: {} ({} test images)",
            best_id,
            scored.preds.len()
        ),
        &scored.cm.counts,
        &dataset::CLASS_NAMES,
    )
    .map_err(|e| Error::plot(&cm_path, e))?;
    write_atomic(&cm_path, &cm_png, &mut files)?;
    figures.confusion = Some(cm_png);

    let hardest_path = out.join("hardest.png");
    match test_images(opts, &scored.preds) {
        Ok(split) => {
            let items: Vec<plot::Sample<'_>> = scored
                .hardest
                .iter()
                .map(|&i| plot::Sample {
                    pixels: split.image(i),
                    lines: vec![
                        format!(
                            "#{i} true: {}",
                            dataset::CLASS_NAMES[scored.preds.labels[i]]
                        ),
                        format!(
                            "pred: {} (p={:.2})",
                            dataset::CLASS_NAMES[scored.pred[i]],
                            scored.preds.row(i)[scored.pred[i]]
                        ),
                        format!("H = {:.4}", scored.entropy[i]),
                    ],
                    wrong: scored.pred[i] != scored.preds.labels[i],
                })
                .collect();
            let png = plot::samples("hardest test samples (highest predictive entropy)", &items)
                .map_err(|e| Error::plot(&hardest_path, e))?;
            write_atomic(&hardest_path, &png, &mut files)?;
            figures.hardest = Some(png);
        }
        Err(why) => {
            // A stale picture from an earlier run would contradict hardest.csv.
            let _ = std::fs::remove_file(&hardest_path);
            let note = format!("the hardest samples could not be drawn: {why}");
            figures.hardest_missing = Some(note.clone());
            notes.push(note);
        }
    }

    // Curves per trial and grids per experiment.
    for t in ranking.trials.iter().filter(|t| !t.epochs.is_empty()) {
        let path = curves_dir.join(format!("{}.png", file_stem(&t.row.trial_id)));
        let png = plot::curves(
            &format!("{}: {}", t.row.trial_id, t.row.label()),
            &curve_series(&t.epochs, false),
            &curve_series(&t.epochs, true),
        )
        .map_err(|e| Error::plot(&path, e))?;
        write_atomic(&path, &png, &mut files)?;
        figures.curves.push((t.row.trial_id.clone(), png));
    }
    let mut experiments: BTreeMap<String, Vec<&RankedTrial>> = BTreeMap::new();
    for t in ranking.trials.iter().filter(|t| !t.epochs.is_empty()) {
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
            let path = out.join(format!("grid_{}_{metric}.png", file_stem(&exp)));
            let panels: Vec<(String, Vec<plot::Series>)> = group
                .iter()
                .map(|t| (grid_title(&t.row, &group), curve_series(&t.epochs, acc)))
                .collect();
            let title = format!(
                "{}: {} {} per trial",
                exp,
                if acc { "accuracy" } else { "loss" },
                "(train, validation, test)"
            );
            let png = plot::grid(&title, if acc { "accuracy" } else { "loss" }, &panels, pos)
                .map_err(|e| Error::plot(&path, e))?;
            write_atomic(&path, &png, &mut files)?;
            figures.grids.push((
                format!("{exp} — {}", if acc { "accuracy" } else { "loss" }),
                png,
            ));
        }
    }

    let page = html::Page {
        results_dir,
        ranking: &ranking,
        best,
        hparams: &hparams,
        scored: &scored,
        trials_by_status: &trials_by_status,
        notes: &notes,
        figures: &figures,
    };
    let index = out.join("index.html");
    write_atomic(&index, page.render().as_bytes(), &mut files)?;

    let chosen_on_test_set = ranking.used == SelectionMetric::TestAcc;
    let best_epoch = best.best.map(|e| e.epoch).or(best.row.best_epoch);
    let mut text = format!(
        "best trial {best_id} ({}) chosen on {}{}: epoch {}, val_acc {}, test accuracy {:.4} on {} images, macro F1 {:.4}\nreport: {}",
        hparams.label(),
        ranking.used,
        if chosen_on_test_set { " (test set)" } else { "" },
        best_epoch.map_or("?".into(), |e| e.to_string()),
        best.best.and_then(|e| e.val_acc).map_or("n/a".into(), |v| format!("{v:.4}")),
        scored.report.accuracy,
        scored.preds.len(),
        scored.report.macro_avg.f1,
        index.display(),
    );
    for n in &notes {
        let _ = write!(text, "\nnote: {n}");
    }
    Ok(ReportSummary {
        report_dir: out,
        index,
        best_trial: proto::TrialId(best_id),
        best_label: hparams.label(),
        selected_on: ranking.used,
        chosen_on_test_set,
        best_epoch,
        val_acc: best.best.and_then(|e| e.val_acc),
        val_loss: best.best.and_then(|e| e.val_loss),
        test_acc: scored.report.accuracy,
        macro_f1: scored.report.macro_avg.f1,
        test_samples: scored.preds.len(),
        trials_by_status,
        notes,
        files,
        text,
    })
}
