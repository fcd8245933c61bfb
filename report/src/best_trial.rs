//! The best trial's evaluation: its test-set predictions scored as scikit-learn would
//! ([`crate::metrics`]), written as tables, a confusion matrix, the hardest samples, and a
//! copy of its model.

use crate::error::{Error, Result};
use crate::html::Figures;
use crate::metrics::{self, ClassificationReport, ConfusionMatrix};
use crate::output::Output;
use crate::{plot, ReportOptions, NUM_CLASSES};
use arrow::array::{Array, ArrayRef, Float64Array, Float64Builder, Int64Array, ListBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use proto::{Artifact, TrialId};
use results_format::artifacts::{self, Predictions};
use results_format::ResultsDir;
use std::fmt::Write as _;
use std::sync::Arc;

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

/// What the best trial's outputs left for the page and the summary.
pub(crate) struct BestOutputs {
    pub hparams: proto::Hyperparams,
    pub scored: Scored,
}

/// Writes everything about the best trial: a copy of its model and config under `best/`,
/// the classification report, the confusion matrix (CSV and PNG), the predictions as
/// Parquet, and the hardest samples (CSV, and PNG when the test images can be found).
pub(crate) fn write(
    out: &mut Output,
    dir: &ResultsDir,
    best: &TrialId,
    selected_epoch: Option<i64>,
    opts: &ReportOptions,
    figures: &mut Figures,
    notes: &mut Vec<String>,
) -> Result<BestOutputs> {
    let config = dir.artifact(best, Artifact::Config);
    let hparams = artifacts::read_config(&config)?;
    // The worker saves the weights of the epoch it judged best by the same rule: say so when
    // the saved model is of another epoch (a worker from before best epochs were kept).
    match (artifacts::read_best_epoch(&config)?, selected_epoch) {
        (Some(saved), Some(selected)) if i64::from(saved) != selected => notes.push(format!(
            "the saved model of {best} is of epoch {saved}, not of the selected epoch {selected}: its test numbers are that epoch's"
        )),
        (None, Some(selected)) => notes.push(format!(
            "the saved model of {best} is its last epoch's (its worker kept no best epoch), not necessarily the selected epoch {selected}'s"
        )),
        _ => {}
    }
    let scored = score(
        artifacts::read_predictions(&dir.artifact(best, Artifact::Predictions))?,
        opts.hardest,
    );
    for a in [Artifact::Model, Artifact::Config] {
        let to = out.best.join(a.file_name());
        out.copy(&dir.artifact(best, a), &to)?;
    }
    write_tables(out, &scored)?;
    let cm_path = out.root.join("confusion_matrix.png");
    let cm_png = plot::confusion(
        &format!(
            "confusion matrix: {best} ({} test images)",
            scored.preds.len()
        ),
        &scored.cm.counts,
        &dataset::CLASS_NAMES,
    )
    .map_err(|e| Error::plot(&cm_path, e))?;
    out.write(&cm_path, &cm_png)?;
    figures.confusion = Some(cm_png);
    draw_hardest(out, &scored, opts, figures, notes)?;
    Ok(BestOutputs { hparams, scored })
}

/// The CSV, Markdown and Parquet tables of the best trial's predictions.
fn write_tables(out: &mut Output, scored: &Scored) -> Result<()> {
    let root = out.root.clone();
    out.write(
        &root.join("classification_report.csv"),
        scored.report.to_csv().as_bytes(),
    )?;
    out.write(
        &root.join("classification_report.md"),
        scored.report.to_markdown().as_bytes(),
    )?;
    out.write(
        &root.join("confusion_matrix.csv"),
        scored.cm.to_csv(&dataset::CLASS_NAMES).as_bytes(),
    )?;
    let pq_path = root.join("predictions.parquet");
    let pq = predictions_parquet(scored)
        .map_err(|e| Error::invalid(&pq_path, format!("writing: {e}")))?;
    out.write(&pq_path, &pq)?;
    out.write(&root.join("hardest.csv"), hardest_csv(scored).as_bytes())
}

/// `hardest.png`: the highest-entropy test images with their labels and predictions. When
/// the images cannot be found (or are not the ones predicted), a note says why instead.
fn draw_hardest(
    out: &mut Output,
    scored: &Scored,
    opts: &ReportOptions,
    figures: &mut Figures,
    notes: &mut Vec<String>,
) -> Result<()> {
    let path = out.root.join("hardest.png");
    let split = match test_images(opts, &scored.preds) {
        Ok(split) => split,
        Err(why) => {
            // A stale picture from an earlier run would contradict hardest.csv.
            let _ = std::fs::remove_file(&path);
            let note = format!("the hardest samples could not be drawn: {why}");
            figures.hardest_missing = Some(note.clone());
            notes.push(note);
            return Ok(());
        }
    };
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
        .map_err(|e| Error::plot(&path, e))?;
    out.write(&path, &png)?;
    figures.hardest = Some(png);
    Ok(())
}
