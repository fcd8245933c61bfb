//! One trial's training loop: SGD on cross-entropy, a fresh shuffle each epoch, the last
//! partial batch trained, exact sample-weighted metrics on train, validation and test.
//!
//! Metrics leave through an [`EpochSink`]: gRPC when a worker serves a coordinator, stdout
//! for `worker train`, a `Vec` in tests. Each [`Epoch`] carries the thread count it trained
//! with and, with [`Trial::checkpoint_every_epoch`], a checkpoint ([`Trial::checkpoint`])
//! that [`Trial::restore`] on any worker resumes from.
//!
//! ## Random numbers
//!
//! - **initial weights:** libtorch's generator seeded with `manual_seed(seed)` in
//!   [`Trial::new`];
//! - **the shuffle:** libtorch's generator, reseeded at the start of every epoch `e` from
//!   [`epoch_seed`]`(seed, e)`; its `randperm` is the only draw from it during training, so
//!   trials that share a seed (and split) share their batch stream;
//! - **dropout masks:** the trial's own stream ([`crate::masks`]), keyed by
//!   `(seed, trial id, epoch, step)`: a trial's masks are the same whatever else trains in
//!   the same process, and two trials that share a seed get different masks.
//!
//! ## Resuming gives the same numbers
//!
//! A trial resumed from its epoch-`k` checkpoint yields, for epochs `k+1..`, bitwise the same
//! metrics as an uninterrupted run with the same seed on the same device type and thread
//! count. That takes the whole training state, and a checkpoint holds all of it:
//!
//! - **model and optimizer:** every variable and every momentum buffer of [`Sgd`];
//! - **RNG:** every random stream restarts at an epoch boundary from `(seed, trial, epoch)`
//!   alone (above), so **the RNG state of a checkpoint is `(seed, trial, epoch)`**, stored
//!   as metadata, and no generator dump is needed;
//! - **epoch:** the number of finished epochs, plus their metrics.
//!
//! The SGD is [`crate::sgd`]; the checkpoint's bytes and the checks before a restore are
//! [`crate::checkpoint`]; the best epoch's weights, which the artifacts are written from,
//! [`crate::best`].

use crate::best::BestWeights;
use crate::checkpoint::{self, Identity, Layout, State};
use crate::data::{self, Splits, TensorSplit};
use crate::masks::MaskStream;
use crate::model::Net;
use crate::sgd::Sgd;
use crate::{Error, Result};
use proto::{Artifact, EpochMetrics, Hyperparams};
use std::path::Path;
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, Tensor};

/// One finished epoch, as an [`EpochSink`] gets it.
#[derive(Debug, Clone, Copy)]
pub struct Epoch<'a> {
    pub metrics: EpochMetrics,
    /// libtorch's intra-op threads while the epoch trained (`tch::get_num_threads` at its
    /// start): a trial's numbers are reproducible under the same thread schedule.
    pub threads: u32,
    /// The trial's state after this epoch ([`Trial::checkpoint`] bytes) when
    /// [`Trial::checkpoint_every_epoch`] is set, else `None`.
    pub checkpoint: Option<&'a [u8]>,
}

/// Where each finished epoch goes. Returning an error stops the trial (e.g. its lease was
/// taken away).
pub trait EpochSink {
    fn epoch(&mut self, epoch: &Epoch<'_>) -> Result<()>;
}

impl EpochSink for Vec<EpochMetrics> {
    fn epoch(&mut self, epoch: &Epoch<'_>) -> Result<()> {
        self.push(epoch.metrics);
        Ok(())
    }
}

impl<F: FnMut(&Epoch<'_>) -> Result<()>> EpochSink for F {
    fn epoch(&mut self, epoch: &Epoch<'_>) -> Result<()> {
        self(epoch)
    }
}

/// Evaluation batch size: large enough to amortise dispatch, small enough that the CNN's
/// activations stay in a few hundred MB.
pub(crate) const EVAL_BATCH: i64 = 1000;

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
pub(crate) fn seed_libtorch(seed: u64, device: Device) {
    tch::manual_seed(seed as i64);
    if let Device::Cuda(_) = device {
        tch::Cuda::manual_seed_all(seed);
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
    /// The best epoch on the trial's goal (validation accuracy unless [`Trial::set_goal`]) and
    /// its weights: what the artifacts hold.
    pub best: BestWeights,
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
            best: BestWeights::new(results_format::Goal::default()),
            epochs_done: 0,
            opt,
        })
    }

    /// Epochs finished so far (trained here or restored from a checkpoint).
    pub fn epochs_done(&self) -> u32 {
        self.epochs_done
    }

    /// Judges epochs on `goal` (the lease's metric and mode); call before training.
    pub fn set_goal(&mut self, goal: results_format::Goal) {
        self.best = BestWeights::new(goal);
    }

    /// Trains the remaining epochs (`epochs_done + 1 ..= hparams.epochs`), handing each one's
    /// metrics, and its checkpoint if [`Trial::checkpoint_every_epoch`], to `sink`.
    pub fn run(&mut self, sink: &mut dyn EpochSink) -> Result<()> {
        let trial_id = self.hparams.trial_id();
        for epoch in self.epochs_done + 1..=self.hparams.epochs {
            // The shuffle is libtorch's (trials sharing a seed share it); dropout masks are
            // the trial's own stream.
            seed_libtorch(epoch_seed(self.hparams.seed, epoch), self.device);
            let mut masks = MaskStream::new(self.hparams.seed, &trial_id, epoch);
            let threads = u32::try_from(tch::get_num_threads()).unwrap_or(0);
            let started = Instant::now();
            let (train_loss, train_acc) = self.train_epoch(&mut masks)?;
            if !train_loss.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    which: "train_loss",
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
            // A loss that is not a number cannot be reported (the wire refuses it): the trial
            // diverged, which its worker reports as such.
            let val = self.splits.validation.as_ref().map(|_| val_loss);
            for (which, loss) in [("val_loss", val), ("test_loss", Some(test_loss))] {
                if let Some(loss) = loss.filter(|l| !l.is_finite()) {
                    return Err(Error::Diverged { epoch, which, loss });
                }
            }
            let metrics = EpochMetrics {
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
            self.history.push(metrics);
            self.best.observe(&metrics, &self.vs);
            let checkpoint = if self.checkpoint_every_epoch {
                Some(self.checkpoint()?)
            } else {
                None
            };
            sink.epoch(&Epoch {
                metrics,
                threads,
                checkpoint: checkpoint.as_deref(),
            })?;
        }
        Ok(())
    }

    fn train_epoch(&mut self, masks: &mut MaskStream) -> Result<(f64, f64)> {
        let train = &self.splits.train;
        let n = train.len();
        let bs = i64::from(self.hparams.batch_size);
        let perm = Tensor::randperm(n, (Kind::Int64, self.device));
        let images = train.images.index_select(0, &perm);
        let labels = train.labels.index_select(0, &perm);
        // Sums stay on the device so that no step waits for a host copy.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, self.device));
        let mut correct = Tensor::zeros([], (Kind::Int64, self.device));
        let (mut start, mut step) = (0, 0);
        while start < n {
            let len = bs.min(n - start);
            let x = data::normalize(&images.narrow(0, start, len));
            let y = labels.narrow(0, start, len);
            masks.step(step);
            let logits = self.net.forward(&x, Some(&mut *masks));
            let loss = logits.cross_entropy_for_logits(&y);
            self.opt.backward_step(&loss)?;
            tch::no_grad(|| {
                loss_sum += loss.detach().to_kind(Kind::Double) * len as f64;
                correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            });
            start += len;
            step += 1;
        }
        let loss = loss_sum.double_value(&[]) / n as f64;
        let acc = correct.int64_value(&[]) as f64 / n as f64;
        Ok((loss, acc))
    }

    /// The trial's whole training state after [`Trial::epochs_done`] epochs, as safetensors
    /// bytes ([`checkpoint::encode`]): weights, momentum buffers, the finished epochs'
    /// metrics, and metadata naming the trial, its seed, its data subset and the epoch.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let (best_epoch, best) = self.best.for_checkpoint(self.epochs_done);
        checkpoint::encode(State {
            identity: self.identity(),
            epoch: self.epochs_done,
            variables: self.vs.variables().into_iter().collect(),
            momentum: self.opt.momentum_buffers().collect(),
            history: &self.history,
            best_epoch,
            best,
        })
    }

    /// Puts this trial in the state of `bytes`, a [`Trial::checkpoint`] of the same trial
    /// (same hyperparameters and data subset), so that [`Trial::run`] carries on with the
    /// next epoch. Returns the checkpoint's epoch.
    ///
    /// Everything is checked before anything changes ([`checkpoint::decode`]): on error
    /// ([`Error::Checkpoint`], never a panic) the trial is as it was.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<u32> {
        let vars = self.vs.variables();
        let layout = Layout {
            identity: self.identity(),
            epochs: self.hparams.epochs,
            variables: vars.iter().map(|(n, t)| (n.clone(), t.size())).collect(),
            momentum: self.opt.has_momentum().then(|| {
                let params = self.opt.parameters();
                params.map(|(n, p)| (n.to_owned(), p.size())).collect()
            }),
        };
        let restored = checkpoint::decode(bytes, &layout)?;
        let best = self.best.derive(&restored.history, restored.best_epoch)?;

        // Checked: now change the trial.
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vars {
                var.f_copy_(&restored.variables[&name])?;
            }
            Ok(())
        })?;
        self.opt.set_momentum_buffers(&restored.momentum)?;
        self.best
            .install(best, restored.epoch, restored.best, &self.vs);
        self.history = restored.history;
        self.epochs_done = restored.epoch;
        Ok(restored.epoch)
    }

    /// What ties this trial's checkpoints to it: its id, seed and data subset.
    fn identity(&self) -> Identity {
        let count = |s: Option<&TensorSplit>| s.map_or(0, |s| s.len());
        Identity {
            trial_id: self.hparams.trial_id().to_string(),
            seed: self.hparams.seed,
            train_images: count(Some(&self.splits.train)),
            validation_images: count(self.splits.validation.as_ref()),
            test_images: count(Some(&self.splits.test)),
        }
    }

    /// Softmax probabilities over the test set, `[N, 10]`, in test-set order.
    pub fn test_probabilities(&self) -> Tensor {
        evaluate(&self.net, &self.splits.test, true)
            .2
            .expect("asked for probabilities")
    }

    /// Writes the trial's artifacts ([`Artifact::ALL`]) into `dir`, each file whole: the model
    /// and the test-set predictions of its best epoch (whose weights are put back in the
    /// network first, so the trial is done training after this). A trial without a best
    /// epoch (it diverged in its first) gets `config.json` alone.
    pub fn save_artifacts(&self, dir: &Path, extra: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let best_epoch = self.best.load_into(&self.vs)?;
        let goal = self.best.goal();
        let config = serde_json::json!({
            "trial_id": self.hparams.trial_id(),
            "hparams": self.hparams,
            "history": self.history,
            "best_epoch": best_epoch,
            "metric": goal.metric.as_str(),
            "mode": goal.mode.as_str(),
            "device": format!("{:?}", self.device),
            "libtorch": crate::LIBTORCH_VERSION,
            "worker": extra,
        });
        let text = serde_json::to_string_pretty(&config).expect("json of plain data");
        let path = dir.join(Artifact::Config.file_name());
        stdx::fs::write_atomically(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))?;
        if best_epoch.is_none() {
            return Ok(());
        }
        // tch writes by path and picks safetensors from the extension.
        let path = dir.join(Artifact::Model.file_name());
        stdx::fs::write_atomically_to_path(&path, |p| self.vs.save(p))
            .map_err(|e| written(&path, e))?;
        let probs = self.test_probabilities().to_device(Device::Cpu);
        let labels = self.splits.test.labels.to_device(Device::Cpu);
        let path = dir.join(Artifact::Predictions.file_name());
        stdx::fs::write_atomically_to_path(&path, |p| {
            Tensor::write_safetensors(&[("probs", &probs), ("labels", &labels)], p)
        })
        .map_err(|e| written(&path, e))
    }
}

/// The error of an artifact write: the file system's, with the path, or libtorch's.
fn written(path: &Path, e: stdx::fs::WriteError<tch::TchError>) -> Error {
    match e {
        stdx::fs::WriteError::Io(e) => Error::io(path, e),
        stdx::fs::WriteError::Write(e) => e.into(),
    }
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
            let logits = net.forward(&x, None);
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
