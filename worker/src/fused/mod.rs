//! Fused same-shape trials (HFTA, Wang et al., MLSys 2021): K MLP trials that share the
//! network's shape, batch size, seed, validation split and epochs ([`Hyperparams::fuse_key`])
//! but differ in learning rate, momentum, weight decay or dropout train as one stacked model
//! ([`stack`]) in one process, its forward and backward pass written out by hand
//! ([`backprop`]).
//!
//! What each member shares with its solo run ([`crate::train::Trial`]):
//!
//! - **initial weights:** built exactly as the solo trial builds them (libtorch's generator
//!   seeded with the seed, then the notebook's network), so they are bit for bit the same;
//! - **the shuffle and the batches:** one `randperm` per epoch from [`epoch_seed`], as a
//!   solo trial draws it: every member sees the batches its solo run sees;
//! - **dropout masks:** each member's own [`MaskStream`], keyed by `(seed, trial, epoch,
//!   step)`, stacked into one `[K, N, h]` mask per layer: a member's masks are its solo run's.
//!
//! What differs: the order in which batched, wide and single matrix products sum, and the
//! rounding of the hand-written gradients and step, so a member's metrics equal its solo
//! run's within a tolerance (README, "Fused same-shape trials"), not bit for bit. A fused group resumed from its members' checkpoints *is* bit-identical to an
//! uninterrupted fused run with the same members on the same thread count.
//!
//! Each member keeps a solo `VarStore` with the notebook's parameter names: its checkpoints
//! ([`Group::checkpoint`]) are ordinary single-trial checkpoints, so a member resumes alone
//! as a solo trial, and its artifacts are a solo [`Trial`]'s ([`Group::member_trial`]).

pub mod backprop;
pub mod stack;

use crate::best::BestWeights;
use crate::checkpoint::{self, Identity, Layout, State};
use crate::data::{self, Splits, TensorSplit};
use crate::masks::MaskStream;
use crate::model::{Net, CLASSES};
use crate::train::{epoch_seed, Epoch, Trial};
use crate::{Error, Result};
use proto::{EpochMetrics, Hyperparams, TrialId};
use stack::Stack;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Where each member's finished epochs go.
pub trait GroupSink {
    /// Member `member` (its index in the group as built) finished an epoch. An error drops
    /// that member (a lost lease, a stop rule's verdict): the others go on.
    fn epoch(&mut self, member: usize, epoch: &Epoch<'_>) -> Result<()>;

    /// Every training member's epoch `epoch` was handed to [`GroupSink::epoch`]: the group
    /// trained it on `threads` threads in `seconds`. What libtorch's thread count is on
    /// return is what the next epoch trains on (and records in its rows): the place to apply
    /// the coordinator's thread plan. An error fails the whole group.
    fn between_epochs(&mut self, epoch: u32, seconds: f64, threads: u32) -> Result<()> {
        let _ = (epoch, seconds, threads);
        Ok(())
    }
}

impl<F: FnMut(usize, &Epoch<'_>) -> Result<()>> GroupSink for F {
    fn epoch(&mut self, member: usize, epoch: &Epoch<'_>) -> Result<()> {
        self(member, epoch)
    }
}

/// One trial of a group.
pub struct Member {
    pub hparams: Hyperparams,
    pub trial_id: TrialId,
    /// The member's solo parameters under the notebook's names: written from the stack for
    /// checkpoints and best-epoch copies, read into it on a restore.
    vs: nn::VarStore,
    pub history: Vec<EpochMetrics>,
    pub best: BestWeights,
    /// Its row in the stack while it trains; `None` once dropped.
    row: Option<i64>,
    /// Its momentum buffers (by variable name) when it was dropped: what its checkpoint
    /// carries once it has no row.
    dropped_momentum: Vec<(String, Tensor)>,
}

/// A fused group being trained.
pub struct Group {
    pub members: Vec<Member>,
    pub device: Device,
    pub splits: Splits,
    /// Serialize every member's checkpoint after every epoch and hand it to the sink.
    pub checkpoint_every_epoch: bool,
    stack: Stack,
    epochs_done: u32,
}

/// Why `hparams` cannot train as one group: `None` when they can.
pub fn why_not_fusable(hparams: &[Hyperparams]) -> Option<String> {
    let first = hparams.first()?;
    let Some(key) = first.fuse_key() else {
        return Some(format!("{} trials never fuse", first.arch));
    };
    hparams.iter().find_map(|h| {
        (h.fuse_key().as_deref() != Some(key.as_str())).then(|| {
            format!(
                "{} and {} differ in shape, batch size, seed, split or epochs",
                first.trial_id(),
                h.trial_id()
            )
        })
    })
}

impl Group {
    /// The group of `hparams` (at least one; all with one [`Hyperparams::fuse_key`]), every
    /// member initialised as its solo run would be.
    pub fn new(
        hparams: &[Hyperparams],
        data: &dataset::FashionMnist,
        subset: data::Subset,
        device: Device,
    ) -> Result<Group> {
        if hparams.is_empty() {
            return Err(Error::InvalidArgument(
                "a fused group needs a member".into(),
            ));
        }
        if let Some(why) = why_not_fusable(hparams) {
            return Err(Error::InvalidArgument(format!("cannot fuse: {why}")));
        }
        let mut members = Vec::with_capacity(hparams.len());
        for (row, h) in hparams.iter().enumerate() {
            h.validate()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            // As `Trial::new`: the seed, then the network, so the weights are the solo run's.
            crate::train::seed_libtorch(h.seed, device);
            let vs = nn::VarStore::new(device);
            let _net = Net::new(&vs.root(), h);
            members.push(Member {
                hparams: h.clone(),
                trial_id: h.trial_id(),
                vs,
                history: Vec::new(),
                best: BestWeights::new(results_format::Goal::default()),
                row: Some(row as i64),
                dropped_momentum: Vec::new(),
            });
        }
        let first = &hparams[0];
        let splits = data::split(data, first.validation, first.seed, subset, device)?;
        let layers = stack::layer_names(first.arch);
        let weights = (0..layers.len())
            .map(|l| {
                let vars: Vec<_> = members.iter().map(|m| m.vs.variables()).collect();
                let get = |suffix: &str| {
                    let name = format!("{}.{suffix}", layers[l]);
                    Tensor::stack(&vars.iter().map(|v| &v[&name]).collect::<Vec<_>>(), 0)
                };
                (get("weight").detach(), get("bias").detach())
            })
            .collect();
        let refs: Vec<&Hyperparams> = hparams.iter().collect();
        Ok(Group {
            stack: Stack::new(&refs, weights, device),
            members,
            device,
            splits,
            checkpoint_every_epoch: false,
            epochs_done: 0,
        })
    }

    /// Epochs every member still training has finished.
    pub fn epochs_done(&self) -> u32 {
        self.epochs_done
    }

    /// Judges member `member`'s epochs on `goal` (its lease's metric and mode).
    pub fn set_goal(&mut self, member: usize, goal: results_format::Goal) {
        self.members[member].best = BestWeights::new(goal);
    }

    /// Puts member `member` in the state of `bytes`, an ordinary checkpoint of its trial (a
    /// fused or a solo run's), before training. Every member must be restored to the same
    /// epoch (or none): [`Group::run`] refuses a group whose members stand at different
    /// epochs. Returns the checkpoint's epoch.
    pub fn restore(&mut self, member: usize, bytes: &[u8]) -> Result<u32> {
        let identity = self.identity(member);
        let m = &mut self.members[member];
        let row = m.row.ok_or_else(|| {
            Error::InvalidArgument(format!("member {} no longer trains", m.trial_id))
        })?;
        let vars = m.vs.variables();
        let shapes: Vec<(String, Vec<i64>)> =
            vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        let layout = Layout {
            identity,
            epochs: m.hparams.epochs,
            momentum: (m.hparams.momentum != 0.0).then(|| shapes.clone()),
            variables: shapes,
        };
        let restored = checkpoint::decode(bytes, &layout)?;
        let best = m.best.derive(&restored.history, restored.best_epoch)?;
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vars {
                var.f_copy_(&restored.variables[&name])?;
            }
            Ok(())
        })?;
        m.best.install(best, restored.epoch, restored.best, &m.vs);
        m.history = restored.history;
        let layers = stack::layer_names(m.hparams.arch);
        let mut params = self.stack.params.iter().map(Tensor::shallow_clone);
        tch::no_grad(|| -> Result<()> {
            for layer in layers {
                for suffix in ["weight", "bias"] {
                    let src = &restored.variables[&format!("{layer}.{suffix}")];
                    let p = params.next().expect("two parameters per layer");
                    let src = if suffix == "weight" {
                        src.shallow_clone()
                    } else {
                        src.unsqueeze(0)
                    };
                    p.get(row).f_copy_(&src.to_device(self.device))?;
                }
            }
            Ok(())
        })?;
        for (l, layer) in layers.iter().enumerate() {
            let w = restored.momentum.get(&format!("{layer}.weight"));
            let b = restored.momentum.get(&format!("{layer}.bias"));
            if let (Some(w), Some(b)) = (w, b) {
                self.stack.set_layer_buffers(row, l, w, b)?;
            }
        }
        self.epochs_done = restored.epoch;
        Ok(restored.epoch)
    }

    /// Trains the remaining epochs of every member, handing each member's metrics (and
    /// checkpoint) to `sink` after every epoch, then calling [`GroupSink::between_epochs`]
    /// once (while a member still trains): every epoch trains on one thread count. Returns each member's outcome, in member
    /// order: `Ok` when it trained to its last epoch, else why it stopped (it diverged, or the
    /// sink dropped it). An error of the whole group (libtorch's) is the outer `Err`.
    pub fn run(&mut self, sink: &mut dyn GroupSink) -> Result<Vec<Result<()>>> {
        let mut outcomes: Vec<Result<()>> = self.members.iter().map(|_| Ok(())).collect();
        let epochs = self.members[0].hparams.epochs;
        for m in &self.members {
            if m.history.len() as u32 != self.epochs_done {
                return Err(Error::InvalidArgument(format!(
                    "member {} was restored to epoch {}, the group stands at {}",
                    m.trial_id,
                    m.history.len(),
                    self.epochs_done
                )));
            }
        }
        for epoch in self.epochs_done + 1..=epochs {
            if self.stack.is_empty() {
                break;
            }
            crate::train::seed_libtorch(
                epoch_seed(self.members[0].hparams.seed, epoch),
                self.device,
            );
            let threads = u32::try_from(tch::get_num_threads()).unwrap_or(0);
            let started = Instant::now();
            let (train_loss, train_acc) = self.train_epoch(epoch)?;
            let val = match &self.splits.validation {
                Some(v) => Some(self.evaluate(v)?),
                None => None,
            };
            let (test_loss, test_acc) = self.evaluate(&self.splits.test)?;
            let seconds = started.elapsed().as_secs_f64();
            self.epochs_done = epoch;
            let mut dropped = Vec::new();
            for (i, outcome) in outcomes.iter_mut().enumerate() {
                let Some(row) = self.members[i].row else {
                    continue;
                };
                let r = row as usize;
                let (val_loss, val_acc) = val
                    .as_ref()
                    .map_or((f64::NAN, f64::NAN), |v| (v.0[r], v.1[r]));
                let metrics = EpochMetrics {
                    epoch,
                    train_loss: train_loss[r],
                    train_acc: train_acc[r],
                    val_loss,
                    val_acc,
                    test_loss: test_loss[r],
                    test_acc: test_acc[r],
                    seconds,
                };
                if let Err(e) = self.finish_member_epoch(i, metrics, threads, sink) {
                    *outcome = Err(e);
                    dropped.push(i);
                }
            }
            if !dropped.is_empty() {
                self.drop_members(&dropped);
            }
            if !self.stack.is_empty() {
                sink.between_epochs(epoch, seconds, threads)?;
            }
        }
        Ok(outcomes)
    }

    /// After an epoch: member `i`'s divergence check, best epoch, checkpoint and report. An
    /// error drops the member.
    fn finish_member_epoch(
        &mut self,
        i: usize,
        metrics: EpochMetrics,
        threads: u32,
        sink: &mut dyn GroupSink,
    ) -> Result<()> {
        let validation = self.splits.validation.is_some();
        let losses = [
            ("train_loss", Some(metrics.train_loss)),
            ("val_loss", validation.then_some(metrics.val_loss)),
            ("test_loss", Some(metrics.test_loss)),
        ];
        for (which, loss) in losses {
            if let Some(loss) = loss.filter(|l| !l.is_finite()) {
                let epoch = metrics.epoch;
                return Err(Error::Diverged { epoch, which, loss });
            }
        }
        self.sync_member(i)?;
        let m = &mut self.members[i];
        m.history.push(metrics);
        m.best.observe(&metrics, &m.vs);
        let checkpoint = if self.checkpoint_every_epoch {
            Some(self.checkpoint(i)?)
        } else {
            None
        };
        sink.epoch(
            i,
            &Epoch {
                metrics,
                threads,
                checkpoint: checkpoint.as_deref(),
            },
        )
    }

    /// Takes members `dropped` out of the stack; the others keep training.
    fn drop_members(&mut self, dropped: &[usize]) {
        for &i in dropped {
            self.members[i].dropped_momentum = self.member_momentum(i);
            self.members[i].row = None;
        }
        let mut keep = Vec::new();
        for m in self.members.iter_mut() {
            if let Some(row) = m.row {
                m.row = Some(keep.len() as i64);
                keep.push(row);
            }
        }
        self.stack.retain(&keep);
    }

    /// One epoch of every member: returns each stack row's train loss and accuracy.
    fn train_epoch(&mut self, epoch: u32) -> Result<(Vec<f64>, Vec<f64>)> {
        let train = &self.splits.train;
        let n = train.len();
        let k = self.stack.len();
        let bs = i64::from(self.members[0].hparams.batch_size);
        let hidden = i64::from(self.members[0].hparams.hidden);
        let perm = Tensor::randperm(n, (Kind::Int64, self.device));
        let labels = train.labels.index_select(0, &perm);
        let images = train.images.index_select(0, &perm);
        let onehot = labels.f_one_hot(CLASSES)?.f_to_kind(Kind::Float)?;
        let mut streams: Vec<(MaskStream, f64)> = self
            .members
            .iter()
            .filter(|m| m.row.is_some())
            .map(|m| {
                (
                    MaskStream::new(m.hparams.seed, &m.trial_id, epoch),
                    m.hparams.dropout,
                )
            })
            .collect();
        let dropout = streams.iter().any(|(_, p)| *p > 0.0);
        // Each step writes its row of these: no kernel of its own to accumulate them.
        let steps = (n + bs - 1) / bs;
        let log_likelihood = Tensor::zeros([steps, k], (Kind::Float, self.device));
        let correct = Tensor::zeros([steps, k], (Kind::Int64, self.device));
        let mut lens = Vec::with_capacity(steps as usize);
        for step in 0..steps {
            let start = step * bs;
            let len = bs.min(n - start);
            lens.push(len as f64);
            for (s, _) in &mut streams {
                s.step(step as u64);
            }
            let (device, shape) = (self.device, [len, hidden]);
            let mut masks =
                |_layer: usize| dropout.then(|| stacked_masks(&mut streams, shape, device));
            let batch = backprop::Batch {
                x: &data::normalize(&images.narrow(0, start, len)).view([len, -1]),
                y: &labels.narrow(0, start, len),
                onehot: &onehot.narrow(0, start, len),
            };
            let out = backprop::StepOut {
                log_likelihood: &log_likelihood.get(step),
                correct: &correct.get(step),
            };
            backprop::train_step(&mut self.stack, &batch, &mut masks, &out)?;
        }
        // Each member's loss: the batches' mean losses weighted by their sizes, as a solo
        // trial sums them.
        let lens = Tensor::from_slice(&lens)
            .to_device(self.device)
            .view([-1, 1]);
        let loss = (log_likelihood.to_kind(Kind::Double).neg() * lens).sum_dim_intlist(
            0,
            false,
            Kind::Double,
        ) / n as f64;
        let loss: Vec<f64> = Vec::try_from(loss)?;
        let correct: Vec<i64> = Vec::try_from(correct.sum_dim_intlist(0, false, Kind::Int64))?;
        let acc = correct.iter().map(|&c| c as f64 / n as f64).collect();
        Ok((loss, acc))
    }

    /// Each stack row's mean loss and accuracy on `split`, without dropout.
    fn evaluate(&self, split: &TensorSplit) -> Result<(Vec<f64>, Vec<f64>)> {
        tch::no_grad(|| {
            let n = split.len();
            let k = self.stack.len();
            let mut loss_sum = Tensor::zeros([k], (Kind::Double, self.device));
            let mut correct = Tensor::zeros([k], (Kind::Int64, self.device));
            let mut start = 0;
            while start < n {
                let len = crate::train::EVAL_BATCH.min(n - start);
                let x = data::normalize(&split.images.narrow(0, start, len)).view([len, -1]);
                let y = split.labels.narrow(0, start, len);
                let logits = backprop::forward(&self.stack, &x)?;
                loss_sum += stack::member_loss_sums(&logits, &y).to_kind(Kind::Double);
                correct += stack::member_correct(&logits, &y);
                start += len;
            }
            let loss: Vec<f64> = Vec::try_from(loss_sum / n as f64)?;
            let correct: Vec<i64> = Vec::try_from(correct)?;
            Ok((loss, correct.iter().map(|&c| c as f64 / n as f64).collect()))
        })
    }

    /// Copies member `i`'s row of the stack into its solo `VarStore`.
    fn sync_member(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let Some(row) = m.row else { return Ok(()) };
        let vars = m.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (l, layer) in stack::layer_names(m.hparams.arch).iter().enumerate() {
                let (w, b) = self.stack.layer(row, l);
                vars[&format!("{layer}.weight")]
                    .shallow_clone()
                    .f_copy_(&w)?;
                vars[&format!("{layer}.bias")].shallow_clone().f_copy_(&b)?;
            }
            Ok(())
        })
    }

    /// Member `i`'s state after its last finished epoch as an ordinary single-trial
    /// checkpoint ([`Trial::checkpoint`]'s format and names): it resumes the member fused
    /// or alone.
    pub fn checkpoint(&self, i: usize) -> Result<Vec<u8>> {
        let m = &self.members[i];
        let epoch = m.history.len() as u32;
        let momentum = match m.row {
            Some(_) => self.member_momentum(i),
            None => m
                .dropped_momentum
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        };
        let (best_epoch, best) = m.best.for_checkpoint(epoch);
        checkpoint::encode(State {
            identity: self.identity(i),
            epoch,
            variables: m.vs.variables().into_iter().collect(),
            momentum: momentum.iter().map(|(n, t)| (n.as_str(), t)).collect(),
            history: &m.history,
            best_epoch,
            best,
        })
    }

    /// Member `i`'s momentum buffers in the notebook's layout, by variable name: none when
    /// its momentum is 0 or before the first step (as a solo trial's), or once dropped.
    fn member_momentum(&self, i: usize) -> Vec<(String, Tensor)> {
        let m = &self.members[i];
        let mut out = Vec::new();
        if let (Some(row), true) = (m.row, m.hparams.momentum != 0.0) {
            for (l, layer) in stack::layer_names(m.hparams.arch).iter().enumerate() {
                if let Some((w, b)) = self.stack.layer_buffers(row, l) {
                    out.push((format!("{layer}.weight"), w));
                    out.push((format!("{layer}.bias"), b));
                }
            }
        }
        out
    }

    /// Member `i` as a solo [`Trial`] in its current state (its checkpoint restored): what
    /// writes its artifacts, exactly as a solo trial's.
    pub fn member_trial(
        &self,
        i: usize,
        data: &dataset::FashionMnist,
        subset: data::Subset,
    ) -> Result<Trial> {
        let m = &self.members[i];
        let mut trial = Trial::new(&m.hparams, data, subset, self.device)?;
        trial.set_goal(m.best.goal());
        if !m.history.is_empty() {
            trial.restore(&self.checkpoint(i)?)?;
        }
        Ok(trial)
    }

    fn identity(&self, i: usize) -> Identity {
        let count = |s: Option<&TensorSplit>| s.map_or(0, |s| s.len());
        let m = &self.members[i];
        Identity {
            trial_id: m.trial_id.to_string(),
            seed: m.hparams.seed,
            train_images: count(Some(&self.splits.train)),
            validation_images: count(self.splits.validation.as_ref()),
            test_images: count(Some(&self.splits.test)),
        }
    }
}

/// The next dropout layer's masks of every training member, stacked `[K, N, h]` for
/// activations `shape = [N, h]`: each drawn from the member's own stream as its solo run
/// draws it (ones where a member's `p` is 0, which multiply exactly).
fn stacked_masks(streams: &mut [(MaskStream, f64)], shape: [i64; 2], device: Device) -> Tensor {
    let masks: Vec<Tensor> = streams
        .iter_mut()
        .map(|(s, p)| {
            s.mask(&shape, *p, device, Kind::Float)
                .unwrap_or_else(|| Tensor::ones(shape, (Kind::Float, device)))
        })
        .collect();
    Tensor::stack(&masks, 0)
}
