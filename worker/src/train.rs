//! One trial's training loop: SGD on cross-entropy, a fresh shuffle each epoch, the last
//! partial batch trained, exact sample-weighted metrics on train, validation and test.
//!
//! Metrics leave through an [`EpochSink`]: gRPC when a worker serves a coordinator, stdout
//! for `worker train`, a `Vec` in tests.

use crate::data::{self, Splits, TensorSplit};
use crate::model::Net;
use crate::{Error, Result};
use proto::{EpochMetrics, Hyperparams};
use std::path::Path;
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Where each finished epoch goes. Returning an error stops the trial (e.g. its lease was
/// taken away).
pub trait EpochSink {
    fn epoch(&mut self, metrics: &EpochMetrics) -> Result<()>;
}

impl EpochSink for Vec<EpochMetrics> {
    fn epoch(&mut self, metrics: &EpochMetrics) -> Result<()> {
        self.push(*metrics);
        Ok(())
    }
}

impl<F: FnMut(&EpochMetrics) -> Result<()>> EpochSink for F {
    fn epoch(&mut self, metrics: &EpochMetrics) -> Result<()> {
        self(metrics)
    }
}

/// Evaluation batch size: large enough to amortise dispatch, small enough that the CNN's
/// activations stay in a few hundred MB.
const EVAL_BATCH: i64 = 1000;

/// A trial being trained: the network, its parameters and the data on the device.
pub struct Trial {
    pub hparams: Hyperparams,
    pub device: Device,
    pub vs: nn::VarStore,
    pub net: Net,
    pub splits: Splits,
    pub history: Vec<EpochMetrics>,
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
        tch::manual_seed(hparams.seed as i64);
        if let Device::Cuda(_) = device {
            tch::Cuda::manual_seed_all(hparams.seed);
        }
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), hparams);
        let splits = data::split(data, hparams.validation, hparams.seed, subset, device)?;
        Ok(Trial {
            hparams: hparams.clone(),
            device,
            vs,
            net,
            splits,
            history: Vec::new(),
        })
    }

    /// Trains every epoch, handing each one's metrics to `sink`.
    pub fn run(&mut self, sink: &mut dyn EpochSink) -> Result<()> {
        let h = &self.hparams;
        let mut opt = nn::Sgd {
            momentum: h.momentum,
            dampening: 0.0,
            wd: h.weight_decay,
            nesterov: false,
        }
        .build(&self.vs, h.lr)?;
        for epoch in 1..=h.epochs {
            let started = Instant::now();
            let (train_loss, train_acc) = self.train_epoch(&mut opt)?;
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
            self.history.push(m);
            sink.epoch(&m)?;
        }
        Ok(())
    }

    fn train_epoch(&self, opt: &mut nn::Optimizer) -> Result<(f64, f64)> {
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
            opt.backward_step(&loss);
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
