//! One trial's training loop: SGD on cross-entropy, a fresh shuffle each epoch, the last
//! partial batch trained, exact sample-weighted metrics on train, validation and test.
//!
//! Metrics leave through an [`EpochSink`]: gRPC when a worker serves a coordinator, stdout
//! for `worker train`, a `Vec` in tests. With [`Trial::checkpoint_every_epoch`] each epoch
//! also hands the sink a checkpoint ([`Trial::checkpoint`]) that [`Trial::restore`] on any
//! worker resumes from.
//!
//! ## Resuming gives the same numbers
//!
//! A trial resumed from its epoch-`k` checkpoint yields, for epochs `k+1..`, bitwise the same
//! metrics as an uninterrupted run with the same seed on the same device type and thread
//! count. That takes the whole training state, and a checkpoint holds all of it:
//!
//! - **model:** every `VarStore` variable under its own name (`capas.1.weight`), as `F32`;
//! - **optimizer:** the momentum buffers of [`Sgd`] under `optimizer.momentum.<variable>`
//!   (none when momentum is 0 or before the first step, as in PyTorch);
//! - **RNG:** libtorch's generator is reseeded at the start of every epoch `e` from
//!   [`epoch_seed`]`(seed, e)` (the per-epoch shuffle and dropout masks are its only draws
//!   during training), so the RNG state at an epoch boundary is a pure function of the seed
//!   and the epoch: **the RNG state of a checkpoint is `(seed, epoch)`**, stored as metadata,
//!   and no generator dump is needed. Initial weights still come from `manual_seed(seed)`
//!   in [`Trial::new`];
//! - **epoch:** the number of finished epochs, plus their metrics (`trial.history`, `F64`
//!   `[epoch, 8]` in [`EpochMetrics`]' field order) so that `config.json` of a resumed trial
//!   lists every epoch.
//!
//! The format is safetensors with metadata `format = "hypersweep-checkpoint/1"`, `trial_id`,
//! `epoch`, `seed` and the split sizes; see [`Trial::checkpoint`].

use crate::data::{self, Splits, TensorSplit};
use crate::model::Net;
use crate::{Error, Result};
use proto::{EpochMetrics, Hyperparams};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// Where each finished epoch goes. Returning an error stops the trial (e.g. its lease was
/// taken away). `checkpoint` is the trial's state after this epoch ([`Trial::checkpoint`]
/// bytes) when [`Trial::checkpoint_every_epoch`] is set, else `None`.
pub trait EpochSink {
    fn epoch(&mut self, metrics: &EpochMetrics, checkpoint: Option<&[u8]>) -> Result<()>;
}

impl EpochSink for Vec<EpochMetrics> {
    fn epoch(&mut self, metrics: &EpochMetrics, _checkpoint: Option<&[u8]>) -> Result<()> {
        self.push(*metrics);
        Ok(())
    }
}

impl<F: FnMut(&EpochMetrics, Option<&[u8]>) -> Result<()>> EpochSink for F {
    fn epoch(&mut self, metrics: &EpochMetrics, checkpoint: Option<&[u8]>) -> Result<()> {
        self(metrics, checkpoint)
    }
}

/// Evaluation batch size: large enough to amortise dispatch, small enough that the CNN's
/// activations stay in a few hundred MB.
const EVAL_BATCH: i64 = 1000;

/// The `format` metadata of a checkpoint; bump it when the layout changes.
pub const CHECKPOINT_FORMAT: &str = "hypersweep-checkpoint/1";
/// Prefix of the momentum buffers' names in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// Name of the finished epochs' metrics in a checkpoint.
pub const HISTORY: &str = "trial.history";
/// Columns of [`HISTORY`]: [`EpochMetrics`]' fields in order.
const HISTORY_COLUMNS: usize = 8;

/// The seed libtorch's generator gets at the start of epoch `epoch` (1-based) of a trial
/// seeded `seed`: splitmix64 of both, so that neighbouring seeds and epochs get unrelated
/// streams.
pub fn epoch_seed(seed: u64, epoch: u32) -> u64 {
    splitmix64(splitmix64(seed ^ EPOCH_STREAM) ^ u64::from(epoch))
}

/// Keeps the per-epoch streams apart from `manual_seed(seed)` (initial weights).
const EPOCH_STREAM: u64 = 0x5eed_0000_e90c_0000;

/// The finaliser of splitmix64 (Steele, Lea & Flood 2014): a bijective 64-bit mix.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeds every libtorch generator `device` draws from.
fn seed_libtorch(seed: u64, device: Device) {
    tch::manual_seed(seed as i64);
    if let Device::Cuda(_) = device {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// Stochastic gradient descent with exactly `torch.optim.SGD`'s update for `dampening = 0`,
/// `nesterov = False` (per parameter `p` with gradient `g`, under `no_grad`):
///
/// ```text
/// if weight_decay != 0: g = g + weight_decay * p
/// if momentum != 0:     buf = clone(g) on the first step, else buf = momentum * buf + g;  g = buf
/// p -= lr * g
/// ```
///
/// Hand-written rather than tch's `nn::Sgd` because that one is libtorch's C++ optimizer,
/// whose momentum buffers tch can neither read nor write: a checkpoint could not carry them,
/// and a resumed trial would restart momentum from zero. Here they are plain tensors keyed by
/// the variable's name.
///
/// Gradients come from `autograd.grad` (tch's `run_backward`), not from `.grad` fields, so
/// there is nothing to zero between steps (PyTorch's `zero_grad(set_to_none=True)`).
/// tch exposes no `alpha` on `add_`, so `x.add_(y, alpha=a)` is `x.addcmul_(y, a)` with `a` a
/// 0-dim tensor: one kernel, which rounds as PyTorch's (with libtorch 2.11 on an x86-64 CPU
/// the parameters came out bit for bit those of libtorch's own SGD; the test
/// `the_hand_written_sgd_steps_as_libtorchs` holds them to 1e-6). Where kernels fuse
/// multiply-adds differently the last bit may differ; numbers stay the same from run to run,
/// and across a checkpoint.
#[derive(Debug)]
pub struct Sgd {
    /// `-lr`, `momentum` and `weight_decay` as 0-dim `Float` tensors on the parameters'
    /// device: `addcmul`'s multiplier (tch exposes no `alpha` on `add_`).
    neg_lr: Tensor,
    momentum: Option<Tensor>,
    weight_decay: Option<Tensor>,
    /// The trainable variables (shallow clones: they share storage with the `VarStore`),
    /// sorted by name.
    params: Vec<Tensor>,
    names: Vec<String>,
    /// One per parameter; `None` until its first step (or when momentum is 0).
    momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimizer for every trainable variable of `vs`.
    pub fn new(vs: &nn::VarStore, lr: f64, momentum: f64, weight_decay: f64) -> Sgd {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        // The kernels compute in f32 whatever the scalar's type, as PyTorch's do with a
        // Python float.
        let scalar = |x: f64| Tensor::from(x as f32).to_device(vs.device());
        Sgd {
            neg_lr: scalar(-lr),
            momentum: (momentum != 0.0).then(|| scalar(momentum)),
            weight_decay: (weight_decay != 0.0).then(|| scalar(weight_decay)),
            momentum_buffers: params.iter().map(|_| None).collect(),
            params,
            names,
        }
    }

    /// Backpropagates `loss` to the parameters and takes one step. No gradient is written to
    /// (one could alias another): only parameters and momentum buffers change in place.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = Tensor::f_run_backward(&[loss], &self.params, false, false)?;
        tch::no_grad(|| -> Result<()> {
            let state = self.params.iter_mut().zip(&mut self.momentum_buffers);
            for ((p, buf), mut g) in state.zip(grads) {
                if !g.defined() {
                    continue; // no gradient reached it: PyTorch skips such parameters
                }
                if let Some(wd) = &self.weight_decay {
                    g = g.f_addcmul(p, wd)?; // g + wd * p
                }
                let step = match (&self.momentum, buf) {
                    (None, _) => &g,
                    (Some(_), buf @ None) => &*buf.insert(g.f_detach_copy()?),
                    (Some(m), Some(b)) => {
                        // Two kernels, as PyTorch's `buf.mul_(m).add_(g)`: `g.addcmul(buf, m)`
                        // may fuse them and round once.
                        let _ = b.f_mul_(m)?;
                        let _ = b.f_add_(&g)?;
                        &*b
                    }
                };
                let _ = p.f_addcmul_(step, &self.neg_lr)?; // p - lr * step
            }
            Ok(())
        })
    }

    /// The momentum buffers that exist, by variable name.
    pub fn momentum_buffers(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names
            .iter()
            .zip(&self.momentum_buffers)
            .filter_map(|(n, b)| b.as_ref().map(|b| (n.as_str(), b)))
    }
}

/// A trial being trained: the network, its parameters, its optimizer and the data on the
/// device.
pub struct Trial {
    pub hparams: Hyperparams,
    pub device: Device,
    pub vs: nn::VarStore,
    pub net: Net,
    pub splits: Splits,
    /// Metrics of the finished epochs (also those before a [`Trial::restore`]).
    pub history: Vec<EpochMetrics>,
    /// Serialize a checkpoint after every epoch and hand it to the sink (default false).
    pub checkpoint_every_epoch: bool,
    epochs_done: u32,
    opt: Sgd,
}

impl Trial {
    /// Seeds libtorch with the trial's seed, then builds the network (so initial weights
    /// depend on the seed alone) and moves the data to `device`.
    pub fn new(
        hparams: &Hyperparams,
        data: &dataset::FashionMnist,
        subset: data::Subset,
        device: Device,
    ) -> Result<Trial> {
        hparams
            .validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        seed_libtorch(hparams.seed, device);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), hparams);
        let opt = Sgd::new(&vs, hparams.lr, hparams.momentum, hparams.weight_decay);
        let splits = data::split(data, hparams.validation, hparams.seed, subset, device)?;
        Ok(Trial {
            hparams: hparams.clone(),
            device,
            vs,
            net,
            splits,
            history: Vec::new(),
            checkpoint_every_epoch: false,
            epochs_done: 0,
            opt,
        })
    }

    /// Epochs finished so far (trained here or restored from a checkpoint).
    pub fn epochs_done(&self) -> u32 {
        self.epochs_done
    }

    /// Trains the remaining epochs (`epochs_done + 1 ..= hparams.epochs`), handing each one's
    /// metrics, and its checkpoint if [`Trial::checkpoint_every_epoch`], to `sink`.
    pub fn run(&mut self, sink: &mut dyn EpochSink) -> Result<()> {
        for epoch in self.epochs_done + 1..=self.hparams.epochs {
            seed_libtorch(epoch_seed(self.hparams.seed, epoch), self.device);
            let started = Instant::now();
            let (train_loss, train_acc) = self.train_epoch()?;
            if !train_loss.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    loss: train_loss,
                });
            }
            let (val_loss, val_acc) = match &self.splits.validation {
                Some(v) => {
                    let (l, a, _) = evaluate(&self.net, v, false);
                    (l, a)
                }
                None => (f64::NAN, f64::NAN),
            };
            let (test_loss, test_acc, _) = evaluate(&self.net, &self.splits.test, false);
            let m = EpochMetrics {
                epoch,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                test_loss,
                test_acc,
                seconds: started.elapsed().as_secs_f64(),
            };
            self.epochs_done = epoch;
            self.history.push(m);
            let checkpoint = if self.checkpoint_every_epoch {
                Some(self.checkpoint()?)
            } else {
                None
            };
            sink.epoch(&m, checkpoint.as_deref())?;
        }
        Ok(())
    }

    fn train_epoch(&mut self) -> Result<(f64, f64)> {
        let train = &self.splits.train;
        let n = train.len();
        let bs = i64::from(self.hparams.batch_size);
        let perm = Tensor::randperm(n, (Kind::Int64, self.device));
        let images = train.images.index_select(0, &perm);
        let labels = train.labels.index_select(0, &perm);
        // Sums stay on the device so that no step waits for a host copy.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let mut start = 0;
        while start < n {
            let len = bs.min(n - start);
            let x = data::normalize(&images.narrow(0, start, len));
            let y = labels.narrow(0, start, len);
            let logits = self.net.forward_t(&x, true);
            let loss = logits.cross_entropy_for_logits(&y);
            self.opt.backward_step(&loss)?;
            tch::no_grad(|| {
                loss_sum += loss.detach().to_kind(Kind::Double) * len as f64;
                correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            });
            start += len;
        }
        let loss = loss_sum.double_value(&[]) / n as f64;
        let acc = correct.int64_value(&[]) as f64 / n as f64;
        Ok((loss, acc))
    }

    /// The trial's whole training state after [`Trial::epochs_done`] epochs, as safetensors
    /// bytes (see the module documentation): every variable under its own name and every
    /// momentum buffer under `optimizer.momentum.<name>`, copied to the CPU as `F32`; the
    /// finished epochs' metrics as `trial.history`; metadata `format`
    /// ([`CHECKPOINT_FORMAT`]), `trial_id`, `epoch`, `seed`, `train_images`,
    /// `validation_images`, `test_images` and `libtorch` (informational).
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in vars {
            let (shape, bytes) = f32_bytes(&name, &t)?;
            tensors.push((name, Dtype::F32, shape, bytes));
        }
        for (name, b) in self.opt.momentum_buffers() {
            let name = format!("{MOMENTUM_PREFIX}{name}");
            let (shape, bytes) = f32_bytes(&name, b)?;
            tensors.push((name, Dtype::F32, shape, bytes));
        }
        let history: Vec<u8> = self
            .history
            .iter()
            .flat_map(history_row)
            .flat_map(f64::to_le_bytes)
            .collect();
        tensors.push((
            HISTORY.into(),
            Dtype::F64,
            vec![self.history.len(), HISTORY_COLUMNS],
            history,
        ));
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Checkpoint(format!("cannot serialize: {e}")))?;
        let metadata = self
            .checkpoint_identity(self.epochs_done)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([("libtorch".into(), crate::LIBTORCH_VERSION.into())])
            .collect();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Checkpoint(format!("cannot serialize: {e}")))
    }

    /// The metadata a checkpoint of this trial after `epoch` epochs must carry (all but
    /// `libtorch`), in the order [`Trial::restore`] checks it.
    fn checkpoint_identity(&self, epoch: u32) -> Vec<(&'static str, String)> {
        let count = |s: Option<&TensorSplit>| s.map_or(0, |s| s.len()).to_string();
        vec![
            ("format", CHECKPOINT_FORMAT.into()),
            ("trial_id", self.hparams.trial_id().to_string()),
            ("epoch", epoch.to_string()),
            ("seed", self.hparams.seed.to_string()),
            ("train_images", count(Some(&self.splits.train))),
            ("validation_images", count(self.splits.validation.as_ref())),
            ("test_images", count(Some(&self.splits.test))),
        ]
    }

    /// Puts this trial in the state of `bytes`, a [`Trial::checkpoint`] of the same trial
    /// (same hyperparameters and data subset), so that [`Trial::run`] carries on with the
    /// next epoch. Returns the checkpoint's epoch.
    ///
    /// Everything is checked before anything changes: on error ([`Error::Checkpoint`], never
    /// a panic) the trial is as it was.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<u32> {
        let bad = |why: String| Error::Checkpoint(why);
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
        for (key, want) in self.checkpoint_identity(epoch) {
            let got = get(key)?;
            if *got != want {
                return Err(bad(match key {
                    "trial_id" => format!(
                        "it is of trial {got}, not of this trial {want} (a checkpoint only \
                         resumes the trial with the same hyperparameters)"
                    ),
                    _ => format!(
                        "its {key} is {got}, this trial's is {want} (trial {})",
                        self.hparams.trial_id()
                    ),
                }));
            }
        }
        if epoch > self.hparams.epochs {
            return Err(bad(format!(
                "epoch {epoch} is past the trial's last epoch {}",
                self.hparams.epochs
            )));
        }

        // Every tensor the checkpoint must hold, with its dtype and shape.
        let vars = self.vs.variables();
        let mut want: HashMap<String, (Dtype, Vec<i64>)> = vars
            .iter()
            .map(|(n, t)| (n.clone(), (Dtype::F32, t.size())))
            .collect();
        // As in PyTorch, buffers exist from the first step on, for parameters with gradients.
        let buffered = self.hparams.momentum != 0.0 && epoch > 0;
        if buffered {
            for (n, p) in self.opt.names.iter().zip(&self.opt.params) {
                want.insert(format!("{MOMENTUM_PREFIX}{n}"), (Dtype::F32, p.size()));
            }
        }
        want.insert(
            HISTORY.into(),
            (Dtype::F64, vec![i64::from(epoch), HISTORY_COLUMNS as i64]),
        );
        let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
        names.sort();
        if let Some(extra) = names.iter().find(|n| !want.contains_key(*n)) {
            return Err(bad(format!(
                "unexpected tensor {extra:?}: this trial has no such {}",
                if extra.starts_with(MOMENTUM_PREFIX) {
                    "momentum buffer"
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
        let history = history_rows(&loaded[HISTORY])?;
        for (i, m) in history.iter().enumerate() {
            if m.epoch as usize != i + 1 {
                return Err(bad(format!(
                    "its metrics list epoch {} in row {}",
                    m.epoch,
                    i + 1
                )));
            }
        }

        // Checked: now change the trial.
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vars {
                var.f_copy_(&loaded[&name])?;
            }
            Ok(())
        })?;
        for (n, buf) in self.opt.names.iter().zip(&mut self.opt.momentum_buffers) {
            *buf = if buffered {
                Some(loaded[&format!("{MOMENTUM_PREFIX}{n}")].f_to_device(self.device)?)
            } else {
                None
            };
        }
        self.history = history;
        self.epochs_done = epoch;
        Ok(epoch)
    }

    /// Softmax probabilities over the test set, `[N, 10]`, in test-set order.
    pub fn test_probabilities(&self) -> Tensor {
        evaluate(&self.net, &self.splits.test, true)
            .2
            .expect("asked for probabilities")
    }

    /// Writes `config.json`, `model.safetensors` and `predictions.safetensors` into `dir`.
    pub fn save_artifacts(&self, dir: &Path, extra: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config = serde_json::json!({
            "trial_id": self.hparams.trial_id(),
            "hparams": self.hparams,
            "history": self.history,
            "device": format!("{:?}", self.device),
            "libtorch": crate::LIBTORCH_VERSION,
            "worker": extra,
        });
        let text = serde_json::to_string_pretty(&config).expect("json of plain data");
        write_atomically(&dir.join("config.json"), |p| {
            std::fs::write(p, &text).map_err(|e| Error::io(p, e))
        })?;
        write_atomically(&dir.join("model.safetensors"), |p| Ok(self.vs.save(p)?))?;
        let probs = self.test_probabilities().to_device(Device::Cpu);
        let labels = self.splits.test.labels.to_device(Device::Cpu);
        write_atomically(&dir.join("predictions.safetensors"), |p| {
            Ok(Tensor::write_safetensors(
                &[("probs", &probs), ("labels", &labels)],
                p,
            )?)
        })
    }
}

/// Writes through `write` to a hidden temporary name beside `path`, then renames it into
/// place, so a reader never sees half a file.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    // Keep the extension last: tch picks the checkpoint format from it.
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Mean loss, accuracy and (if asked) softmax probabilities of `net` on `split`, in eval mode.
pub fn evaluate(net: &Net, split: &TensorSplit, probs: bool) -> (f64, f64, Option<Tensor>) {
    tch::no_grad(|| {
        let n = split.len();
        let device = split.labels.device();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut all = Vec::new();
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let x = data::normalize(&split.images.narrow(0, start, len));
            let y = split.labels.narrow(0, start, len);
            let logits = net.forward_t(&x, false);
            loss_sum += logits
                .cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0)
                .to_kind(Kind::Double);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            if probs {
                all.push(logits.softmax(-1, Kind::Float));
            }
            start += len;
        }
        let loss = loss_sum.double_value(&[]) / n as f64;
        let acc = correct.int64_value(&[]) as f64 / n as f64;
        (loss, acc, probs.then(|| Tensor::cat(&all, 0)))
    })
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
