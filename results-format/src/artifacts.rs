//! Reading what a worker uploaded for a trial (see [`proto::Artifact`]):
//! `predictions.safetensors` and `config.json`. `model.safetensors` is only ever copied.

use crate::error::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Classes of Fashion-MNIST: columns of `probs`.
pub const NUM_CLASSES: usize = dataset::CLASS_NAMES.len();

/// A trial's test-set predictions: softmax probabilities and true labels, in test-set order.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// `n * 10` probabilities, row-major.
    pub probs: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.probs[i * NUM_CLASSES..(i + 1) * NUM_CLASSES]
    }
}

/// Reads `predictions.safetensors`: `probs` (F32 `[N, 10]`, rows summing to 1) and `labels`
/// (I64 `[N]`, values 0..=9; I32 and U8 are accepted too).
pub fn read_predictions(path: &Path) -> Result<Predictions> {
    let k = NUM_CLASSES;
    let bytes = std::fs::read(path).map_err(Error::io("reading", path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(path, format!("not a safetensors file: {e}")))?;
    let probs_t = st
        .tensor("probs")
        .map_err(|_| Error::invalid(path, "missing tensor \"probs\" (F32 [N, 10])"))?;
    let labels_t = st
        .tensor("labels")
        .map_err(|_| Error::invalid(path, "missing tensor \"labels\" (I64 [N])"))?;
    if probs_t.dtype() != Dtype::F32 || probs_t.shape().len() != 2 || probs_t.shape()[1] != k {
        return Err(Error::invalid(
            path,
            format!(
                "tensor \"probs\" is {:?} {:?}, expected F32 [N, {k}]",
                probs_t.dtype(),
                probs_t.shape()
            ),
        ));
    }
    let n = probs_t.shape()[0];
    if labels_t.shape() != [n] {
        return Err(Error::invalid(
            path,
            format!(
                "tensor \"labels\" has shape {:?}, expected [{n}] like \"probs\"",
                labels_t.shape()
            ),
        ));
    }
    let probs: Vec<f32> = probs_t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let labels = labels(path, &labels_t)?;
    check_probabilities(path, &probs)?;
    Ok(Predictions { probs, labels })
}

/// The labels, of any integer dtype a writer may choose, each a class index.
fn labels(path: &Path, t: &TensorView<'_>) -> Result<Vec<usize>> {
    let raw: Vec<i64> = match t.dtype() {
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect(),
        Dtype::U8 => t.data().iter().map(|&b| i64::from(b)).collect(),
        other => {
            return Err(Error::invalid(
                path,
                format!("tensor \"labels\" is {other:?}, expected I64"),
            ))
        }
    };
    let k = NUM_CLASSES as i64;
    raw.iter()
        .enumerate()
        .map(|(i, &l)| {
            usize::try_from(l).ok().filter(|_| l < k).ok_or_else(|| {
                Error::invalid(path, format!("labels[{i}] = {l}, expected 0..={}", k - 1))
            })
        })
        .collect()
}

/// Every row is a probability distribution: finite, non-negative, summing to 1.
fn check_probabilities(path: &Path, probs: &[f32]) -> Result<()> {
    for (i, row) in probs.chunks_exact(NUM_CLASSES).enumerate() {
        if row.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::invalid(
                path,
                format!("probs row {i} has a negative or non-finite value: expected softmax probabilities"),
            ));
        }
        let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(Error::invalid(
                path,
                format!("probs row {i} sums to {sum:.6}, expected 1 (softmax probabilities, not logits)"),
            ));
        }
    }
    Ok(())
}

/// The `hparams` of an artifact's `config.json` (other keys are ignored).
pub fn read_config(path: &Path) -> Result<proto::Hyperparams> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("not valid JSON: {e}")))?;
    let hp = value
        .get("hparams")
        .ok_or_else(|| Error::invalid(path, "missing key \"hparams\""))?;
    serde_json::from_value(hp.clone())
        .map_err(|e| Error::invalid(path, format!("key \"hparams\": {e}")))
}

/// The `best_epoch` of an artifact's `config.json` (issue 12): the epoch whose weights the
/// model and predictions hold. `None` when the worker that wrote it predates best epochs
/// (its model is the last epoch's) or no epoch was ever best.
pub fn read_best_epoch(path: &Path) -> Result<Option<u32>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("not valid JSON: {e}")))?;
    match value.get("best_epoch") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|e| u32::try_from(e).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(path, format!("key \"best_epoch\": {v} is not an epoch"))
            }),
    }
}
