//! The checkpoint format: a trial's whole training state as safetensors bytes, and the checks
//! a checkpoint passes before it may resume a trial.
//!
//! A checkpoint holds everything a resume needs (see [`crate::train`] for why that is
//! enough for bitwise the same numbers):
//!
//! - **model:** every `VarStore` variable under its own name (`capas.1.weight`), as `F32`;
//! - **optimizer:** the momentum buffers of [`crate::sgd::Sgd`] under
//!   `optimizer.momentum.<variable>` (none when momentum is 0 or before the first step, as in
//!   PyTorch);
//! - **RNG:** nothing but `(seed, trial, epoch)`, stored as metadata: libtorch's generator
//!   (the shuffle) is reseeded at every epoch boundary from `(seed, epoch)` and the dropout
//!   masks are the trial's own stream keyed by `(seed, trial, epoch, step)`;
//! - **epoch:** the number of finished epochs, plus their metrics (`trial.history`, `F64`
//!   `[epoch, 8]` in [`EpochMetrics`]' field order) so that `config.json` of a resumed trial
//!   lists every epoch;
//! - **the best epoch's weights** (issue 12, [`crate::best`]): when the best epoch so far is
//!   an earlier one, a copy of every variable at that epoch under `best.<variable>`; with
//!   `best_epoch` in the metadata whenever an epoch has been best. Optional: a checkpoint
//!   without them resumes too (its trial then ends with its last weights).
//!
//! Metadata: `format = "hypersweep-checkpoint/2"`, `trial_id`, `epoch`, `seed`, the split
//! sizes (`train_images`, `validation_images`, `test_images`), `best_epoch` when known, and
//! `libtorch` (informational). [`decode`] checks all of them but `libtorch`, then every tensor's name,
//! dtype and shape, before anything is handed back.

use crate::best::BEST_PREFIX;
use crate::{Error, Result};
use proto::EpochMetrics;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

/// The `format` metadata of a checkpoint; bump it when the layout or the meaning changes.
/// `/2`: dropout masks come from the trial's own stream ([`crate::masks`]), not libtorch's
/// generator, so a `/1` checkpoint of a trial with dropout would resume into other masks:
/// refused, and such a trial trains from scratch.
pub const CHECKPOINT_FORMAT: &str = "hypersweep-checkpoint/2";
/// Prefix of the momentum buffers' names in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// Name of the finished epochs' metrics in a checkpoint.
pub const HISTORY: &str = "trial.history";
/// Columns of [`HISTORY`]: [`EpochMetrics`]' fields in order.
const HISTORY_COLUMNS: usize = 8;

/// What ties a checkpoint to one trial on one data subset: metadata a checkpoint must carry
/// to resume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub trial_id: String,
    pub seed: u64,
    pub train_images: i64,
    pub validation_images: i64,
    pub test_images: i64,
}

impl Identity {
    /// As metadata, in the order [`decode`] checks it.
    fn metadata(&self) -> [(&'static str, String); 5] {
        [
            ("trial_id", self.trial_id.clone()),
            ("seed", self.seed.to_string()),
            ("train_images", self.train_images.to_string()),
            ("validation_images", self.validation_images.to_string()),
            ("test_images", self.test_images.to_string()),
        ]
    }
}

/// A trial's state after `epoch` finished epochs, as [`encode`] writes it.
pub struct State<'a> {
    pub identity: Identity,
    pub epoch: u32,
    /// Every variable of the model, by name.
    pub variables: Vec<(String, Tensor)>,
    /// The momentum buffers that exist, by their variable's name.
    pub momentum: Vec<(&'a str, &'a Tensor)>,
    pub history: &'a [EpochMetrics],
    /// The best epoch so far, and its weights when it is an earlier epoch than `epoch`.
    pub best_epoch: Option<u32>,
    pub best: Vec<(&'a str, &'a Tensor)>,
}

/// What a checkpoint must hold to resume one trial.
pub struct Layout {
    pub identity: Identity,
    /// The trial's last epoch: a checkpoint past it resumes nothing.
    pub epochs: u32,
    /// Every variable of the model, with its shape.
    pub variables: Vec<(String, Vec<i64>)>,
    /// The optimizer's parameters, with their shapes, when it keeps momentum buffers
    /// (expected from the first epoch on); `None` without momentum.
    pub momentum: Option<Vec<(String, Vec<i64>)>>,
}

/// A checkpoint's contents, checked against a [`Layout`]: on the CPU.
#[derive(Debug)]
pub struct Restored {
    pub epoch: u32,
    /// Every variable of the layout, by name.
    pub variables: HashMap<String, Tensor>,
    /// Every momentum buffer, by its variable's name; empty without momentum or at epoch 0.
    pub momentum: HashMap<String, Tensor>,
    /// The metrics of epochs `1..=epoch`, in order.
    pub history: Vec<EpochMetrics>,
    /// The best epoch, when the checkpoint says, and its weights by variable name when it is
    /// an earlier epoch (empty otherwise).
    pub best_epoch: Option<u32>,
    pub best: HashMap<String, Tensor>,
}

/// `state` as safetensors bytes: the variables sorted by name, then the momentum buffers
/// under `optimizer.momentum.<name>`, copied to the CPU as `F32`; the finished epochs'
/// metrics as `trial.history`; the metadata of the module documentation.
pub fn encode(state: State<'_>) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut vars = state.variables;
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        let (shape, bytes) = f32_bytes(&name, &t)?;
        tensors.push((name, Dtype::F32, shape, bytes));
    }
    for (name, b) in state.momentum {
        let name = format!("{MOMENTUM_PREFIX}{name}");
        let (shape, bytes) = f32_bytes(&name, b)?;
        tensors.push((name, Dtype::F32, shape, bytes));
    }
    for (name, b) in state.best {
        let name = format!("{BEST_PREFIX}{name}");
        let (shape, bytes) = f32_bytes(&name, b)?;
        tensors.push((name, Dtype::F32, shape, bytes));
    }
    let history: Vec<u8> = state
        .history
        .iter()
        .flat_map(history_row)
        .flat_map(f64::to_le_bytes)
        .collect();
    tensors.push((
        HISTORY.into(),
        Dtype::F64,
        vec![state.history.len(), HISTORY_COLUMNS],
        history,
    ));
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Checkpoint(format!("cannot serialize: {e}")))?;
    let metadata = [
        ("format", CHECKPOINT_FORMAT.to_string()),
        ("epoch", state.epoch.to_string()),
        ("libtorch", crate::LIBTORCH_VERSION.into()),
    ]
    .into_iter()
    .chain(state.best_epoch.map(|e| ("best_epoch", e.to_string())))
    .chain(state.identity.metadata())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Checkpoint(format!("cannot serialize: {e}")))
}

/// Reads `bytes`, an [`encode`]d checkpoint, checking that it resumes the trial of `layout`:
/// readable, of this format, trial and data subset, not past the last epoch, with exactly
/// the tensors the trial has, in their dtypes and shapes. Every failure is an
/// [`Error::Checkpoint`] that says which check failed, never a panic.
pub fn decode(bytes: &[u8], layout: &Layout) -> Result<Restored> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(format!(
            "not a readable safetensors file ({} bytes): {e}; the checkpoint is corrupt or \
             truncated, train this trial from scratch instead",
            bytes.len()
        ))
    })?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let epoch = check_metadata(meta, layout)?;
    let best_epoch = check_best_epoch(meta, epoch)?;

    let want = expected_tensors(layout, epoch, best_epoch);
    let names = check_names(&file, &want)?;
    let mut loaded: HashMap<String, Tensor> = HashMap::new();
    for name in &names {
        let view = file
            .tensor(name)
            .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        let (dtype, shape) = &want[name];
        let got: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if view.dtype() != *dtype || got != *shape {
            return Err(bad(format!(
                "tensor {name:?} is {:?} {got:?}, this trial needs {dtype:?} {shape:?}",
                view.dtype()
            )));
        }
        let kind = if *dtype == Dtype::F64 {
            Kind::Double
        } else {
            Kind::Float
        };
        let t = Tensor::f_from_data_size(view.data(), shape, kind)?;
        loaded.insert(name.clone(), t);
    }
    let history = history_rows(&loaded.remove(HISTORY).expect("checked present"))?;
    for (i, m) in history.iter().enumerate() {
        if m.epoch as usize != i + 1 {
            return Err(bad(format!(
                "its metrics list epoch {} in row {}",
                m.epoch,
                i + 1
            )));
        }
    }
    let (momentum, rest) = loaded
        .into_iter()
        .partition::<HashMap<_, _>, _>(|(n, _)| n.starts_with(MOMENTUM_PREFIX));
    let (best, variables) = rest
        .into_iter()
        .partition::<HashMap<_, _>, _>(|(n, _)| n.starts_with(BEST_PREFIX));
    let strip = |m: HashMap<String, Tensor>, prefix: &str| -> HashMap<String, Tensor> {
        m.into_iter()
            .map(|(n, t)| (n[prefix.len()..].to_owned(), t))
            .collect()
    };
    Ok(Restored {
        epoch,
        variables,
        momentum: strip(momentum, MOMENTUM_PREFIX),
        history,
        best_epoch,
        best: strip(best, BEST_PREFIX),
    })
}

/// The checkpoint's `best_epoch`, when it has one: an epoch it has finished.
fn check_best_epoch(meta: &HashMap<String, String>, epoch: u32) -> Result<Option<u32>> {
    let Some(text) = meta.get("best_epoch") else {
        return Ok(None);
    };
    match text.parse::<u32>() {
        Ok(b) if (1..=epoch).contains(&b) => Ok(Some(b)),
        _ => Err(bad(format!(
            "best_epoch {text:?} is not one of its finished epochs 1..={epoch}"
        ))),
    }
}

fn bad(why: String) -> Error {
    Error::Checkpoint(why)
}

/// Checks the metadata against the layout's identity and returns the checkpoint's epoch.
fn check_metadata(meta: &HashMap<String, String>, layout: &Layout) -> Result<u32> {
    let get = |key: &str| {
        meta.get(key).ok_or_else(|| {
            bad(format!(
                "no {key:?} in its metadata: not a {CHECKPOINT_FORMAT} checkpoint"
            ))
        })
    };
    let format = get("format")?;
    if format != CHECKPOINT_FORMAT {
        return Err(bad(format!(
            "format {format:?}, this worker reads {CHECKPOINT_FORMAT:?}"
        )));
    }
    let epoch: u32 = get("epoch")?
        .parse()
        .map_err(|e| bad(format!("epoch {:?} is not a number: {e}", meta["epoch"])))?;
    for (key, want) in layout.identity.metadata() {
        let got = get(key)?;
        if *got != want {
            return Err(bad(match key {
                "trial_id" => format!(
                    "it is of trial {got}, not of this trial {want} (a checkpoint only \
                     resumes the trial with the same hyperparameters)"
                ),
                _ => format!(
                    "its {key} is {got}, this trial's is {want} (trial {})",
                    layout.identity.trial_id
                ),
            }));
        }
    }
    if epoch > layout.epochs {
        return Err(bad(format!(
            "epoch {epoch} is past the trial's last epoch {}",
            layout.epochs
        )));
    }
    Ok(epoch)
}

/// Every tensor a checkpoint after `epoch` epochs, best at `best_epoch`, must hold, with its
/// dtype and shape.
fn expected_tensors(
    layout: &Layout,
    epoch: u32,
    best_epoch: Option<u32>,
) -> HashMap<String, (Dtype, Vec<i64>)> {
    let mut want: HashMap<String, (Dtype, Vec<i64>)> = layout
        .variables
        .iter()
        .map(|(n, shape)| (n.clone(), (Dtype::F32, shape.clone())))
        .collect();
    // As in PyTorch, buffers exist from the first step on, for parameters with gradients.
    if let (Some(params), true) = (&layout.momentum, epoch > 0) {
        for (n, shape) in params {
            want.insert(format!("{MOMENTUM_PREFIX}{n}"), (Dtype::F32, shape.clone()));
        }
    }
    // An earlier best epoch's weights: one copy of every variable.
    if best_epoch.is_some_and(|b| b < epoch) {
        for (n, shape) in &layout.variables {
            want.insert(format!("{BEST_PREFIX}{n}"), (Dtype::F32, shape.clone()));
        }
    }
    want.insert(
        HISTORY.into(),
        (Dtype::F64, vec![i64::from(epoch), HISTORY_COLUMNS as i64]),
    );
    want
}

/// The file's tensor names, sorted, when they are exactly those of `want`.
fn check_names(
    file: &SafeTensors<'_>,
    want: &HashMap<String, (Dtype, Vec<i64>)>,
) -> Result<Vec<String>> {
    let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
    names.sort();
    if let Some(extra) = names.iter().find(|n| !want.contains_key(*n)) {
        return Err(bad(format!(
            "unexpected tensor {extra:?}: this trial has no such {}",
            if extra.starts_with(MOMENTUM_PREFIX) {
                "momentum buffer"
            } else if extra.starts_with(BEST_PREFIX) {
                "best-epoch copy"
            } else {
                "variable"
            }
        )));
    }
    let present: HashSet<&String> = names.iter().collect();
    let mut missing: Vec<&String> = want.keys().filter(|n| !present.contains(n)).collect();
    missing.sort();
    if let Some(m) = missing.first() {
        return Err(bad(format!(
            "tensor {m:?} is missing ({} of {} missing)",
            missing.len(),
            want.len()
        )));
    }
    Ok(names)
}

/// `t`'s shape and its values as little-endian `f32` bytes, copied to the CPU.
fn f32_bytes(name: &str, t: &Tensor) -> Result<(Vec<usize>, Vec<u8>)> {
    let kind = t.f_kind()?;
    if kind != Kind::Float {
        return Err(Error::Checkpoint(format!(
            "{name} is {kind:?}; checkpoints hold Float (f32) tensors"
        )));
    }
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let numel = shape.iter().product();
    let mut values = vec![0f32; numel];
    t.f_copy_data(&mut values, numel)?;
    Ok((
        shape,
        values.into_iter().flat_map(f32::to_le_bytes).collect(),
    ))
}

/// One row of a checkpoint's `trial.history`.
fn history_row(m: &EpochMetrics) -> [f64; HISTORY_COLUMNS] {
    [
        f64::from(m.epoch),
        m.train_loss,
        m.train_acc,
        m.val_loss,
        m.val_acc,
        m.test_loss,
        m.test_acc,
        m.seconds,
    ]
}

/// The metrics in a `[epochs, 8]` `Double` tensor of [`history_row`]s.
fn history_rows(t: &Tensor) -> Result<Vec<EpochMetrics>> {
    let numel = t.numel();
    let mut v = vec![0f64; numel];
    t.f_copy_data(&mut v, numel)?;
    v.chunks_exact(HISTORY_COLUMNS)
        .map(|r| {
            if r[0] < 1.0 || r[0] > f64::from(u32::MAX) || r[0].fract() != 0.0 {
                return Err(Error::Checkpoint(format!(
                    "its metrics list epoch {}, not a positive whole number",
                    r[0]
                )));
            }
            Ok(EpochMetrics {
                epoch: r[0] as u32,
                train_loss: r[1],
                train_acc: r[2],
                val_loss: r[3],
                val_acc: r[4],
                test_loss: r[5],
                test_acc: r[6],
                seconds: r[7],
            })
        })
        .collect()
}
