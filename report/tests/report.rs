//! The report end to end on results folders built here: tiny Parquet tables, safetensors
//! artifacts, hand-checked answers.

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use report::{generate, Error, ReportOptions, SelectionMetric};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const K: usize = 10;

struct Trial {
    id: String,
    experiment: &'static str,
    status: &'static str,
    hidden: u32,
    lr: f64,
    validation: f64,
    /// (val_acc, val_loss, test_acc) per epoch; val NULL when `validation == 0`.
    epochs: Vec<(f64, f64, f64)>,
    artifacts: bool,
}

fn trial(n: usize, hidden: u32, lr: f64, epochs: Vec<(f64, f64, f64)>) -> Trial {
    Trial {
        id: format!("ffv1-{n:012x}"),
        experiment: "lr",
        status: "finished",
        hidden,
        lr,
        validation: 0.1,
        epochs,
        artifacts: true,
    }
}

fn hparams(t: &Trial) -> proto::Hyperparams {
    proto::Hyperparams {
        arch: proto::Arch::Ffv1,
        hidden: t.hidden,
        lr: t.lr,
        epochs: t.epochs.len() as u32,
        validation: t.validation,
        ..Default::default()
    }
}

fn write_parquet(path: &Path, batch: RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn f64s(v: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(v))
}

/// `trials.parquet` with deliberately mixed integer widths (Int32, Int64, UInt64).
fn write_trials(dir: &Path, trials: &[Trial]) {
    let n = trials.len();
    let s = |f: &dyn Fn(&Trial) -> String| -> ArrayRef {
        Arc::new(StringArray::from(trials.iter().map(f).collect::<Vec<_>>()))
    };
    let t0 = 1_700_000_000_000_000i64;
    let best: Vec<Option<(usize, f64)>> = trials
        .iter()
        .map(|t| {
            t.epochs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .map(|(i, e)| (i + 1, e.0))
        })
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("trial_id", s(&|t| t.id.clone())),
        ("experiment", s(&|t| t.experiment.to_string())),
        ("arch", s(&|_| "ffv1".to_string())),
        (
            "hidden",
            Arc::new(Int32Array::from(
                trials.iter().map(|t| t.hidden as i32).collect::<Vec<_>>(),
            )),
        ),
        ("dropout", f64s(vec![Some(0.0); n])),
        ("lr", f64s(trials.iter().map(|t| Some(t.lr)).collect())),
        (
            "epochs",
            Arc::new(Int64Array::from(
                trials
                    .iter()
                    .map(|t| t.epochs.len() as i64)
                    .collect::<Vec<_>>(),
            )),
        ),
        ("batch_size", Arc::new(UInt64Array::from(vec![64u64; n]))),
        ("momentum", f64s(vec![Some(0.0); n])),
        ("weight_decay", f64s(vec![Some(0.0); n])),
        (
            "validation",
            f64s(trials.iter().map(|t| Some(t.validation)).collect()),
        ),
        ("seed", Arc::new(Int64Array::from(vec![55i64; n]))),
        ("status", s(&|t| t.status.to_string())),
        ("attempts", Arc::new(Int32Array::from(vec![1; n]))),
        ("worker", Arc::new(StringArray::from(vec![Some("w1"); n]))),
        ("device", Arc::new(StringArray::from(vec![None::<&str>; n]))),
        (
            "started_at",
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..n)
                        .map(|i| Some(t0 + i as i64 * 1_000_000))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "finished_at",
            Arc::new(
                TimestampMicrosecondArray::from(
                    trials
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            (t.status == "finished").then_some(t0 + (i as i64 + 90) * 1_000_000)
                        })
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "best_epoch",
            Arc::new(Int64Array::from(
                best.iter()
                    .map(|b| b.map(|b| b.0 as i64))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "best_val_acc",
            f64s(
                trials
                    .iter()
                    .zip(&best)
                    .map(|(t, b)| b.filter(|_| t.validation > 0.0).map(|b| b.1))
                    .collect(),
            ),
        ),
        (
            "test_acc",
            f64s(
                trials
                    .iter()
                    .map(|t| t.epochs.last().map(|e| e.2))
                    .collect(),
            ),
        ),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    write_parquet(&dir.join("trials.parquet"), batch);
}

/// One epochs file per trial, like workers flushing separately.
fn write_epochs(dir: &Path, trials: &[Trial]) {
    for t in trials.iter().filter(|t| !t.epochs.is_empty()) {
        let n = t.epochs.len();
        let novalid = t.validation == 0.0;
        let val = |f: fn(&(f64, f64, f64)) -> f64| -> ArrayRef {
            f64s(
                t.epochs
                    .iter()
                    .map(|e| if novalid { None } else { Some(f(e)) })
                    .collect(),
            )
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("trial_id", DataType::Utf8, false),
            Field::new("epoch", DataType::Int32, false),
            Field::new("train_loss", DataType::Float64, true),
            Field::new("train_acc", DataType::Float64, true),
            Field::new("val_loss", DataType::Float64, true),
            Field::new("val_acc", DataType::Float64, true),
            Field::new("test_loss", DataType::Float64, true),
            Field::new("test_acc", DataType::Float64, true),
            Field::new("seconds", DataType::Float64, true),
            Field::new("worker", DataType::Utf8, true),
            Field::new(
                "recorded_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("lr", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![t.id.as_str(); n])),
                Arc::new(Int32Array::from((1..=n as i32).collect::<Vec<_>>())),
                f64s((0..n).map(|i| Some(1.2 / (i as f64 + 1.0))).collect()),
                f64s(
                    t.epochs
                        .iter()
                        .map(|e| Some((e.2 + 0.03).min(1.0)))
                        .collect(),
                ),
                val(|e| e.1),
                val(|e| e.0),
                f64s(t.epochs.iter().map(|e| Some(e.1 + 0.02)).collect()),
                f64s(t.epochs.iter().map(|e| Some(e.2)).collect()),
                f64s(vec![Some(1.5); n]),
                Arc::new(StringArray::from(vec![Some("w1"); n])),
                Arc::new(
                    TimestampMicrosecondArray::from((0..n as i64).map(Some).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                f64s(vec![Some(t.lr); n]),
            ],
        )
        .unwrap();
        write_parquet(&dir.join("epochs").join(format!("{}.parquet", t.id)), batch);
    }
    // A file being written must be ignored, even if it is garbage.
    std::fs::write(dir.join("epochs").join(".partial.parquet"), b"not parquet").unwrap();
}

fn safetensors_bytes(tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(&views, None).unwrap()
}

fn predictions_bytes(probs: &[[f32; K]], labels: &[i64]) -> Vec<u8> {
    let p: Vec<u8> = probs
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let l: Vec<u8> = labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    safetensors_bytes(vec![
        ("probs", Dtype::F32, vec![probs.len(), K], p),
        ("labels", Dtype::I64, vec![labels.len()], l),
    ])
}

/// Probabilities with `p` on `pred` and the rest spread evenly.
fn probs_row(pred: usize, p: f32) -> [f32; K] {
    let mut r = [(1.0 - p) / (K as f32 - 1.0); K];
    r[pred] = p;
    r
}

fn write_artifacts(dir: &Path, t: &Trial, probs: &[[f32; K]], labels: &[i64]) {
    let a = dir.join("artifacts").join(&t.id);
    std::fs::create_dir_all(&a).unwrap();
    let config = serde_json::json!({ "trial_id": t.id, "hparams": hparams(t), "worker": "w1" });
    std::fs::write(
        a.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let w: Vec<u8> = (0..20).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(
        a.join("model.safetensors"),
        safetensors_bytes(vec![("fc1.weight", Dtype::F32, vec![4, 5], w)]),
    )
    .unwrap();
    std::fs::write(
        a.join("predictions.safetensors"),
        predictions_bytes(probs, labels),
    )
    .unwrap();
}

/// The hand-checked case: ten test samples over classes 0..=3.
const LABELS: [i64; 10] = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3];
const PREDS: [usize; 10] = [0, 0, 1, 1, 2, 2, 2, 2, 0, 0];

fn hand_probs() -> Vec<[f32; K]> {
    PREDS
        .iter()
        .enumerate()
        .map(|(i, &p)| probs_row(p, 0.5 + 0.04 * i as f32))
        .collect()
}

fn build(dir: &Path, trials: &[Trial], probs: &[[f32; K]], labels: &[i64]) {
    write_trials(dir, trials);
    write_epochs(dir, trials);
    for t in trials.iter().filter(|t| t.artifacts) {
        write_artifacts(dir, t, probs, labels);
    }
}

fn no_data() -> ReportOptions {
    ReportOptions {
        data_dir: Some(PathBuf::from("/nonexistent/fashion-mnist")),
        ..Default::default()
    }
}

fn real_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fashion-mnist");
    match dataset::locate(Some(&dir)) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipping the image part: {e}");
            None
        }
    }
}

fn three_trials() -> Vec<Trial> {
    vec![
        trial(1, 32, 0.1, vec![(0.80, 0.60, 0.79), (0.85, 0.50, 0.84)]),
        trial(2, 64, 0.1, vec![(0.82, 0.55, 0.81), (0.84, 0.45, 0.83)]),
        trial(3, 128, 0.01, vec![(0.70, 0.90, 0.70)]),
    ]
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Not blank: many distinct colours and a good share of non-white pixels.
fn assert_drawn(path: &Path, min_w: u32, min_h: u32) {
    let (w, h, buf) = read_png(path);
    assert!(w >= min_w && h >= min_h, "{}: {w}x{h}", path.display());
    let px: Vec<&[u8]> = buf.chunks_exact(3).collect();
    let non_white = px.iter().filter(|p| p.iter().any(|&c| c < 240)).count();
    let distinct: std::collections::HashSet<&[u8]> = px.iter().copied().collect();
    assert!(
        non_white * 100 > px.len(),
        "{}: mostly blank",
        path.display()
    );
    assert!(
        distinct.len() > 20,
        "{}: only {} colours",
        path.display(),
        distinct.len()
    );
}

fn csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn hand_checked_metrics_files_and_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &three_trials(), &hand_probs(), &LABELS);
    let s = generate(dir, &no_data()).unwrap();
    println!("{}", s.text);
    let out = dir.join("report");

    // Best by val_acc at its best epoch: trial 1 (0.85) over trial 2 (0.84).
    assert_eq!(s.best_trial.as_str(), "ffv1-000000000001");
    assert_eq!(s.best_epoch, Some(2));
    assert_eq!(s.val_acc, Some(0.85));
    assert!(!s.chosen_on_test_set);
    assert_eq!(s.trials_by_status, vec![("finished".to_string(), 3)]);

    for f in [
        "index.html",
        "classification_report.csv",
        "classification_report.md",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "hardest.csv",
        "predictions.parquet",
        "best/model.safetensors",
        "best/config.json",
        "grid_lr_loss.png",
        "grid_lr_acc.png",
        "curves/ffv1-000000000001.png",
        "curves/ffv1-000000000002.png",
        "curves/ffv1-000000000003.png",
    ] {
        let p = out.join(f);
        assert!(p.is_file(), "missing {f}");
        assert!(s.files.contains(&p), "{f} not in the summary's files");
    }
    // No temporary files left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".tmp-"), "left over {n}");
    }
    assert_eq!(
        std::fs::read(out.join("best/model.safetensors")).unwrap(),
        std::fs::read(dir.join("artifacts/ffv1-000000000001/model.safetensors")).unwrap()
    );

    // Confusion matrix: sums to N, diagonal = accuracy × N.
    let cm = csv(&out.join("confusion_matrix.csv"));
    assert_eq!(cm[0][0], "true\\pred");
    assert_eq!(cm[0][1..], dataset::CLASS_NAMES.map(String::from));
    assert_eq!(cm.len(), K + 1);
    let counts: Vec<Vec<u64>> = cm[1..]
        .iter()
        .map(|r| r[1..].iter().map(|c| c.parse().unwrap()).collect())
        .collect();
    let total: u64 = counts.iter().flatten().sum();
    let diag: u64 = (0..K).map(|i| counts[i][i]).sum();
    assert_eq!(total, 10);
    assert_eq!(diag, 6);
    assert_eq!(counts[0], [2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(counts[3], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!((s.test_acc - diag as f64 / total as f64).abs() < 1e-12);

    // Per-class numbers, by hand: class 0 has tp 2 of 4 predicted and 3 true; class 1 tp 1 of
    // 2 and 2; class 2 tp 3 of 4 and 4; class 3 is never predicted.
    let cr = csv(&out.join("classification_report.csv"));
    assert_eq!(
        cr[0],
        ["class", "precision", "recall", "f1-score", "support"]
    );
    let row = |name: &str| {
        cr.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row {name}"))
            .clone()
    };
    let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
    let expect = [
        ("T-shirt/top", 0.5, 2.0 / 3.0, f1(0.5, 2.0 / 3.0), 3),
        ("Trouser", 0.5, 0.5, 0.5, 2),
        ("Pullover", 0.75, 0.75, 0.75, 4),
        ("Dress", 0.0, 0.0, 0.0, 1),
        ("Bag", 0.0, 0.0, 0.0, 0),
    ];
    for (name, p, r, f, sup) in expect {
        let got = row(name);
        assert_eq!(got[1], format!("{p:.4}"), "{name} precision");
        assert_eq!(got[2], format!("{r:.4}"), "{name} recall");
        assert_eq!(got[3], format!("{f:.4}"), "{name} f1");
        assert_eq!(got[4], sup.to_string(), "{name} support");
    }
    assert_eq!(row("accuracy")[3], "0.6000");
    let macro_p = (0.5 + 0.5 + 0.75) / 10.0;
    assert_eq!(row("macro avg")[1], format!("{macro_p:.4}"));
    let weighted_f1 = (f1(0.5, 2.0 / 3.0) * 3.0 + 0.5 * 2.0 + 0.75 * 4.0) / 10.0;
    assert_eq!(row("weighted avg")[3], format!("{weighted_f1:.4}"));
    assert!((s.macro_f1 - (f1(0.5, 2.0 / 3.0) + 0.5 + 0.75) / 10.0).abs() < 1e-9);

    // Golden file.
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/classification_report.csv");
    let got = std::fs::read_to_string(out.join("classification_report.csv")).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/classification_report.csv missing: run with UPDATE_GOLDEN=1");
    assert_eq!(
        got, want,
        "classification_report.csv drifted from the golden file (UPDATE_GOLDEN=1 to accept)"
    );

    // Hardest: the least confident row is sample 0 (p = 0.5), then 1, 2, ...
    let hard = csv(&out.join("hardest.csv"));
    assert_eq!(
        hard[0],
        ["rank", "index", "label", "pred", "entropy", "p_pred"]
    );
    assert_eq!(hard.len(), 10);
    assert_eq!(hard[1][..4], ["1", "0", "T-shirt/top", "T-shirt/top"]);
    let q = 0.5f64 / 9.0;
    let h0 = -(0.5f64 * 0.5f64.ln() + 9.0 * q * q.ln());
    assert_eq!(hard[1][4], format!("{h0:.4}"));
    assert_eq!(hard[1][5], "0.5000");
    let order: Vec<&str> = hard[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(order, ["0", "1", "2", "3", "4", "5", "6", "7", "8"]);

    // Without the data the page says why there is no picture.
    assert!(!out.join("hardest.png").exists());
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("could not be drawn"),
        "no note about the missing images"
    );
    assert!(html.contains("/nonexistent/fashion-mnist"));
    assert!(s.notes.iter().any(|n| n.contains("could not be drawn")));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not need the network"
    );
    assert!(html.contains("data:image/png;base64,"));
    assert!(html.contains("ffv1-000000000003"));

    // predictions.parquet matches the inputs.
    let file = std::fs::File::open(out.join("predictions.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let b = &batches[0];
    assert_eq!(b.num_rows(), 10);
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let pred = col("pred");
    let pred = pred.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(
        pred.values()
            .iter()
            .map(|&p| p as usize)
            .collect::<Vec<_>>(),
        PREDS
    );
    let idx = col("index");
    assert_eq!(
        idx.as_any().downcast_ref::<Int64Array>().unwrap().value(9),
        9
    );
    let probs = col("probs");
    let probs = probs
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .unwrap();
    assert_eq!(probs.value(0).len(), K);
    let ent = col("entropy");
    assert!(
        (ent.as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0)
            - h0)
            .abs()
            < 1e-5
    );
}

#[test]
fn ties_go_to_lower_val_loss_then_id_and_unfinished_trials_are_not_eligible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut trials = vec![
        trial(0xc, 32, 0.1, vec![(0.90, 0.40, 0.88)]),
        trial(0xa, 32, 0.2, vec![(0.90, 0.40, 0.89)]),
        trial(0xb, 32, 0.3, vec![(0.90, 0.40, 0.87), (0.90, 0.30, 0.86)]),
        trial(0xd, 32, 0.4, vec![(0.99, 0.10, 0.99)]),
        trial(0xe, 32, 0.5, vec![(0.95, 0.10, 0.95)]),
    ];
    trials[3].status = "running";
    trials[4].artifacts = false;
    build(dir, &trials, &hand_probs(), &LABELS);
    let s = generate(dir, &no_data()).unwrap();
    // b reaches 0.90 twice; its second epoch has the lower loss and beats a and c.
    assert_eq!(s.best_trial.as_str(), "ffv1-00000000000b");
    assert_eq!(s.best_epoch, Some(2));

    // Without b, a and c tie on both: the lower id wins.
    let tmp2 = tempfile::tempdir().unwrap();
    let trials2: Vec<Trial> = trials
        .into_iter()
        .filter(|t| !t.id.ends_with('b'))
        .collect();
    build(tmp2.path(), &trials2, &hand_probs(), &LABELS);
    let s2 = generate(tmp2.path(), &no_data()).unwrap();
    assert_eq!(s2.best_trial.as_str(), "ffv1-00000000000a");
    let html = std::fs::read_to_string(&s2.index).unwrap();
    assert!(html.contains("status running"));
    assert!(html.contains("missing artifacts/ffv1-00000000000e/predictions.safetensors"));
    assert!(s2
        .notes
        .iter()
        .any(|n| n.contains("2 trial(s) are listed but could not be chosen")));

    // Choosing on val_loss: d and e are out, b's 0.30 is the lowest.
    let opts = ReportOptions {
        metric: Some(SelectionMetric::ValLoss),
        ..no_data()
    };
    assert_eq!(
        generate(dir, &opts).unwrap().best_trial.as_str(),
        "ffv1-00000000000b"
    );
}

#[test]
fn without_a_validation_split_the_choice_is_made_on_the_test_set_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut trials = three_trials();
    for t in &mut trials {
        t.validation = 0.0;
    }
    build(dir, &trials, &hand_probs(), &LABELS);
    let s = generate(dir, &no_data()).unwrap();
    assert!(s.chosen_on_test_set);
    assert_eq!(s.selected_on, SelectionMetric::TestAcc);
    // Test accuracies at best: 0.84, 0.83, 0.70.
    assert_eq!(s.best_trial.as_str(), "ffv1-000000000001");
    assert_eq!(s.val_acc, None);
    let html = std::fs::read_to_string(&s.index).unwrap();
    assert!(
        html.contains("Chosen on the test set"),
        "index.html must say the choice used the test set"
    );
    assert!(html.contains("no validation split"));
    assert!(s.text.contains("test set"));
    // Curves still drawn, with train and test only.
    assert_drawn(&dir.join("report/curves/ffv1-000000000001.png"), 1000, 400);
}

#[test]
fn no_finished_trial_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut trials = three_trials();
    trials[0].status = "failed";
    trials[1].status = "running";
    trials[2].status = "queued";
    build(dir, &trials, &hand_probs(), &LABELS);
    let err = generate(dir, &no_data()).unwrap_err();
    assert!(matches!(err, Error::NoEligibleTrial { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("no finished trial"), "{msg}");
    assert!(
        msg.contains("1 failed") && msg.contains("1 running") && msg.contains("1 queued"),
        "{msg}"
    );
    assert!(!dir.join("report/index.html").exists());
}

#[test]
fn bad_input_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = generate(dir, &no_data()).unwrap_err().to_string();
    assert!(err.contains("trials.parquet"), "{err}");

    build(dir, &three_trials(), &hand_probs(), &LABELS);
    // Logits instead of probabilities.
    let bad: Vec<[f32; K]> = (0..10).map(|_| [2.0; K]).collect();
    std::fs::write(
        dir.join("artifacts/ffv1-000000000001/predictions.safetensors"),
        predictions_bytes(&bad, &LABELS),
    )
    .unwrap();
    let err = generate(dir, &no_data()).unwrap_err().to_string();
    assert!(
        err.contains("ffv1-000000000001/predictions.safetensors") && err.contains("sums to"),
        "{err}"
    );

    // Wrong shape.
    let p: Vec<u8> = vec![0; 10 * 4];
    let l: Vec<u8> = LABELS.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(
        dir.join("artifacts/ffv1-000000000001/predictions.safetensors"),
        safetensors_bytes(vec![
            ("probs", Dtype::F32, vec![10, 1], p),
            ("labels", Dtype::I64, vec![10], l),
        ]),
    )
    .unwrap();
    let err = generate(dir, &no_data()).unwrap_err().to_string();
    assert!(err.contains("expected F32 [N, 10]"), "{err}");

    // A trials table without a status column.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "trial_id",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(vec!["ffv1-000000000001"]))],
    )
    .unwrap();
    write_parquet(&dir.join("trials.parquet"), batch);
    let err = generate(dir, &no_data()).unwrap_err().to_string();
    assert!(
        err.contains("trials.parquet") && err.contains("missing column \"status\""),
        "{err}"
    );
}

#[test]
fn figures_are_drawn_and_legible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &three_trials(), &hand_probs(), &LABELS);
    generate(dir, &no_data()).unwrap();
    let out = dir.join("report");
    assert_drawn(&out.join("curves/ffv1-000000000002.png"), 1000, 400);
    assert_drawn(&out.join("grid_lr_loss.png"), 1000, 300);
    assert_drawn(&out.join("grid_lr_acc.png"), 1000, 300);
    assert_drawn(&out.join("confusion_matrix.png"), 600, 600);
}

/// Predictions for the first `n` real test images: right on most, unsure on a few.
fn real_predictions(data: &Path, n: usize) -> (Vec<[f32; K]>, Vec<i64>) {
    let split = dataset::load_test(data).unwrap();
    let labels: Vec<i64> = split.labels[..n].iter().map(|&l| i64::from(l)).collect();
    let probs = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let pred = if i % 7 == 3 {
                (l as usize + 1) % K
            } else {
                l as usize
            };
            probs_row(pred, 0.3 + 0.69 * ((i * 37 % 101) as f32 / 100.0))
        })
        .collect();
    (probs, labels)
}

#[test]
fn hardest_samples_are_drawn_from_the_real_test_set() {
    let Some(data) = real_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (probs, labels) = real_predictions(&data, 40);
    build(dir, &three_trials(), &probs, &labels);
    let s = generate(
        dir,
        &ReportOptions {
            data_dir: Some(data),
            ..Default::default()
        },
    )
    .unwrap();
    let png = dir.join("report/hardest.png");
    assert!(s.files.contains(&png));
    assert_drawn(&png, 600, 600);
    let hard = csv(&dir.join("report/hardest.csv"));
    assert_eq!(hard.len(), 1 + 9);
    // Highest entropy = lowest p_pred here; ranks come in non-increasing entropy.
    let ent: Vec<f64> = hard[1..].iter().map(|r| r[4].parse().unwrap()).collect();
    assert!(ent.windows(2).all(|w| w[0] >= w[1]), "{ent:?}");
    let html = std::fs::read_to_string(&s.index).unwrap();
    assert!(!html.contains("could not be drawn"));

    // Labels that disagree with the test set: no picture, a reason.
    let mut wrong = labels.clone();
    wrong[5] = (wrong[5] + 1) % K as i64;
    write_artifacts(dir, &three_trials()[0], &probs, &wrong);
    let s = generate(
        dir,
        &ReportOptions {
            data_dir: Some(real_data().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!png.exists());
    assert!(
        s.notes.iter().any(|n| n.contains("not in test-set order")),
        "{:?}",
        s.notes
    );
}

#[test]
fn thirteen_trial_sweep_is_reported_quickly() {
    let data = real_data();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let trials: Vec<Trial> = (0..13)
        .map(|i| {
            let mut t = trial(
                0x100 + i,
                [32, 64, 128][i % 3],
                [0.1, 0.05, 0.01, 0.005, 0.001][i % 5],
                (1..=10)
                    .map(|e| {
                        let a = 0.6 + 0.3 * (1.0 - (-(e as f64) / (2.0 + i as f64)).exp());
                        (a, 1.5 - a, a - 0.01)
                    })
                    .collect(),
            );
            t.experiment = ["lr", "width", "cnn"][i % 3];
            t
        })
        .collect();
    let n = if data.is_some() { 10_000 } else { 2_000 };
    let (probs, labels) = match &data {
        Some(d) => real_predictions(d, n),
        None => {
            let labels: Vec<i64> = (0..n as i64).map(|i| i % K as i64).collect();
            let probs = (0..n)
                .map(|i| probs_row((i * 3) % K, 0.2 + (i % 80) as f32 / 100.0))
                .collect();
            (probs, labels)
        }
    };
    build(dir, &trials, &probs, &labels);
    let opts = ReportOptions {
        data_dir: data.clone().or_else(|| no_data().data_dir),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let s = generate(dir, &opts).unwrap();
    let took = start.elapsed();
    println!(
        "report of a 13-trial sweep ({n} test predictions, {} files): {:.2} s ({} build)",
        s.files.len(),
        took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert_eq!(
        s.files
            .iter()
            .filter(|f| f.starts_with(dir.join("report/curves")))
            .count(),
        13
    );
    for exp in ["lr", "width", "cnn"] {
        assert_drawn(&dir.join(format!("report/grid_{exp}_acc.png")), 1000, 300);
    }
    if std::env::var_os("REPORT_TEST_KEEP").is_some() {
        println!("kept {}", tmp.keep().display());
    }
    if !cfg!(debug_assertions) {
        assert!(
            took.as_secs_f64() < 5.0,
            "took {took:?}, the target is under 5 s"
        );
    }
}

#[test]
fn matches_scikit_learn_when_available() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import sklearn"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("skipping: python3 with scikit-learn is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A less tidy case: 200 samples, all classes, deterministic noise.
    let labels: Vec<i64> = (0..200).map(|i| (i * 7 % K) as i64).collect();
    let preds: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if i % 3 == 0 { (i * 5) % K } else { l as usize })
        .collect();
    let probs: Vec<[f32; K]> = preds.iter().map(|&p| probs_row(p, 0.7)).collect();
    build(dir, &three_trials(), &probs, &labels);
    generate(dir, &no_data()).unwrap();
    let script = format!(
        "from sklearn.metrics import classification_report as c\nimport sys\nr=c({labels:?},{preds:?},labels=list(range(10)),output_dict=True,zero_division=0)\nfor k in [str(i) for i in range(10)]+['macro avg','weighted avg']:\n  d=r[k]; print(f\"{{d['precision']:.4f}},{{d['recall']:.4f}},{{d['f1-score']:.4f}},{{int(d['support'])}}\")\nprint(f\"{{r['accuracy']:.4f}}\")\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(want.len(), 13, "unexpected scikit-learn output: {want:?}");
    let got = csv(&dir.join("report/classification_report.csv"));
    let body: Vec<&Vec<String>> = got[1..].iter().filter(|r| r[0] != "accuracy").collect();
    for (g, w) in body.iter().zip(&want) {
        assert_eq!(g[1..].join(","), *w, "row {}", g[0]);
    }
    let acc = got.iter().find(|r| r[0] == "accuracy").unwrap();
    assert_eq!(acc[3], want[12]);
}

/// A tpe experiment written by the results format's own writer: `n` trials judged on
/// validation loss (min), lr log-spaced and hidden varying; the trials in `stopped` were
/// stopped by ASHA after epoch 1, the others trained 3 epochs. Trial `k` has validation loss
/// `base[k] - 0.01 · epoch`.
fn write_search(dir: &Path, base: &[f64], stopped: &[usize]) -> Vec<proto::TrialId> {
    use results_format::{EpochRecord, Goal, Metric, Mode, StopRecord, TrialRecord, TrialStatus};
    let results = results_format::ResultsDir::new(dir);
    let goal = Goal::new(Metric::ValLoss, Mode::Min);
    let when = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut trials = Vec::new();
    let mut rows = Vec::new();
    for (k, &b) in base.iter().enumerate() {
        let h = proto::Hyperparams {
            arch: proto::Arch::Ffv1,
            hidden: 16 + 8 * k as u32,
            lr: 0.001 * 3f64.powi(k as i32),
            epochs: 3,
            ..Default::default()
        };
        let stop = stopped.contains(&k);
        let epochs = if stop { 1 } else { 3 };
        let mut best = None;
        for e in 1..=epochs {
            let m = proto::EpochMetrics {
                epoch: e,
                train_loss: b,
                train_acc: 0.5,
                val_loss: b - 0.01 * f64::from(e),
                val_acc: 0.5,
                test_loss: b,
                test_acc: 0.6,
                seconds: 1.0,
            };
            best = results_format::Best::update(best, goal, &m);
            rows.push(EpochRecord {
                trial_id: h.trial_id(),
                experiment: "tpe".into(),
                hparams: h.clone(),
                metrics: m,
                worker: "w1".into(),
                device: "cpu".into(),
                recorded_at: when,
                device_name: "a CPU".into(),
                host: "h".into(),
                gpu_peak_memory_bytes: None,
                threads: Some(1),
            });
        }
        trials.push(TrialRecord {
            trial_id: h.trial_id(),
            experiment: "tpe".into(),
            hparams: h.clone(),
            status: if stop {
                TrialStatus::Stopped
            } else {
                TrialStatus::Finished
            },
            attempts: 1,
            worker: Some("w1".into()),
            device: Some("cpu".into()),
            started_at: Some(when),
            finished_at: Some(when),
            best,
            test_acc: (!stop).then_some(0.6),
            epochs_done: epochs,
            last_error: None,
            worker_build: None,
            search: "tpe",
            goal,
            stop: stop.then(|| StopRecord {
                rule: "asha".into(),
                epoch: 1,
            }),
        });
    }
    results_format::write::write_trials(&results, &trials).unwrap();
    std::fs::create_dir_all(results.epochs()).unwrap();
    results_format::write::write_epoch_part(&results, 0, rows.len() as u64 - 1, &rows).unwrap();
    trials.iter().map(|t| t.trial_id.clone()).collect()
}

#[test]
fn a_searched_experiment_gets_its_history_slices_and_stopped_trials_and_a_stopped_trial_can_be_best(
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Trial 4 is stopped after epoch 1 yet has the lowest validation loss (0.19).
    let base = [0.50, 0.40, 0.45, 0.60, 0.20, 0.30];
    let ids = write_search(dir, &base, &[3, 4]);
    for id in &ids {
        let t = Trial {
            id: id.to_string(),
            ..trial(0, 16, 0.1, vec![(0.5, 0.5, 0.6)])
        };
        write_artifacts(dir, &t, &hand_probs(), &LABELS);
    }
    let s = generate(dir, &no_data()).unwrap();
    // Chosen on the experiment's own goal, val_loss (min): the stopped trial at its epoch 1.
    assert_eq!(s.selected_on, SelectionMetric::ValLoss);
    assert_eq!(s.best_trial, ids[4]);
    assert_eq!(s.best_epoch, Some(1));
    assert_drawn(&dir.join("report/search_tpe_history.png"), 800, 400);
    assert_drawn(&dir.join("report/search_tpe_slices.png"), 800, 300);
    let html = std::fs::read_to_string(&s.index).unwrap();
    assert!(html.contains("Search and early stopping"), "search section");
    assert!(html.contains("2 trial(s) stopped early"));
    assert!(html.contains("stopped at epoch 1 by asha"));
    assert!(html.contains("val_loss (min)"));
    // The written columns read back.
    let rows = results_format::read::read_trials(&dir.join("trials.parquet")).unwrap();
    let stopped = &rows[4];
    assert_eq!(stopped.status, results_format::TrialStatus::Stopped);
    assert_eq!(
        (stopped.stop_rule.as_deref(), stopped.stop_epoch),
        (Some("asha"), Some(1))
    );
    assert_eq!(
        (stopped.search.as_deref(), stopped.objective.as_deref()),
        (Some("tpe"), Some("train"))
    );
    assert_eq!(
        (stopped.metric.as_deref(), stopped.mode.as_deref()),
        (Some("val_loss"), Some("min"))
    );
    assert!((stopped.best_metric.unwrap() - 0.19).abs() < 1e-12);
    assert_eq!(
        stopped.best_val_acc, None,
        "best_val_acc is only the val_acc goal's"
    );
}
