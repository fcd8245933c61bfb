//! The best epoch's weights (issue 12): a trial's model is its weights at its best epoch on
//! its experiment's goal (the lease's metric and mode), not at its last epoch.
//!
//! [`BestWeights`] applies the one best-epoch rule of `results_format::best` after every
//! epoch, as the coordinator's scheduler and the report apply it, so all three agree on ties,
//! and keeps a copy of every variable whenever an epoch becomes the best. A checkpoint carries
//! those copies (under `best.<variable>`, with the epoch as `best_epoch` metadata; nothing
//! extra while the best epoch is the checkpoint's own), so a trial resumed on another worker
//! still ends with the right weights: the best epoch itself is re-derived from the
//! checkpoint's history by the same rule, and checked against `best_epoch`.

use crate::{Error, Result};
use proto::EpochMetrics;
use results_format::{Best, Goal};
use std::collections::HashMap;
use tch::nn::VarStore;
use tch::Tensor;

/// Prefix of the best epoch's weights in a checkpoint.
pub const BEST_PREFIX: &str = "best.";

/// The best epoch so far and a copy of its weights.
#[derive(Debug)]
pub struct BestWeights {
    goal: Goal,
    best: Option<Best>,
    /// Every variable at the best epoch, by name; empty before the first epoch.
    weights: Vec<(String, Tensor)>,
}

impl BestWeights {
    pub fn new(goal: Goal) -> BestWeights {
        BestWeights {
            goal,
            best: None,
            weights: Vec::new(),
        }
    }

    pub fn goal(&self) -> Goal {
        self.goal
    }

    /// The best epoch so far, `None` before any epoch has a value for the goal.
    pub fn best(&self) -> Option<Best> {
        self.best
    }

    /// After epoch `m` trained the variables of `vs`: when it is the best so far, keeps a
    /// copy of them.
    pub fn observe(&mut self, m: &EpochMetrics, vs: &VarStore) {
        let best = Best::update(self.best, self.goal, m);
        if best.is_some_and(|b| b.epoch == m.epoch) {
            self.weights = copies(vs);
        }
        self.best = best;
    }

    /// What a checkpoint after `epoch` carries: the best epoch, and its weights when they are
    /// not the checkpoint's own variables (the best epoch is an earlier one).
    pub fn for_checkpoint(&self, epoch: u32) -> (Option<u32>, Vec<(&str, &Tensor)>) {
        let best_epoch = self.best.map(|b| b.epoch);
        let weights = match best_epoch {
            Some(e) if e < epoch => self.weights.iter().map(|(n, t)| (n.as_str(), t)).collect(),
            _ => Vec::new(),
        };
        (best_epoch, weights)
    }

    /// The best epoch of a checkpoint's `history`, re-derived by the same rule and checked
    /// against its `best_epoch` (when it has one). Changes nothing: a restore checks
    /// everything before it changes anything.
    pub fn derive(
        &self,
        history: &[EpochMetrics],
        best_epoch: Option<u32>,
    ) -> Result<Option<Best>> {
        let best = history
            .iter()
            .fold(None, |b, m| Best::update(b, self.goal, m));
        let derived = best.map(|b| b.epoch);
        if best_epoch.is_some() && best_epoch != derived {
            return Err(Error::Checkpoint(format!(
                "its best epoch is {best_epoch:?} but its history's best on {} is {derived:?}",
                self.goal
            )));
        }
        Ok(best)
    }

    /// The state after a restore of a checkpoint after `epoch` whose best is `best`
    /// ([`Self::derive`]): its weights are `stored` (the checkpoint's `best.*` tensors, every
    /// variable of `vs` present, which the checkpoint's checks ensure), or the restored
    /// variables of `vs` when the best epoch is `epoch` itself. A checkpoint without them
    /// (written before best epochs were kept) gives the restored variables: its earlier
    /// weights are gone.
    pub fn install(
        &mut self,
        best: Option<Best>,
        epoch: u32,
        mut stored: HashMap<String, Tensor>,
        vs: &VarStore,
    ) {
        let earlier = best.is_some_and(|b| b.epoch < epoch);
        self.weights = if earlier && !stored.is_empty() {
            let mut out: Vec<(String, Tensor)> = vs
                .variables()
                .into_keys()
                .filter_map(|name| stored.remove(&name).map(|t| (name, t)))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        } else {
            copies(vs)
        };
        self.best = best;
    }

    /// Puts the best epoch's weights into `vs` (for the artifacts, once training is over).
    /// Returns the best epoch, `None` (and `vs` untouched) when no epoch has a value.
    pub fn load_into(&self, vs: &VarStore) -> Result<Option<u32>> {
        let Some(best) = self.best else {
            return Ok(None);
        };
        let weights: HashMap<&str, &Tensor> =
            self.weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vs.variables() {
                let src = weights
                    .get(name.as_str())
                    .ok_or_else(|| Error::Checkpoint(format!("no best-epoch copy of {name}")))?;
                var.f_copy_(src)?;
            }
            Ok(())
        })?;
        Ok(Some(best.epoch))
    }
}

/// A copy of every variable of `vs`, sorted by name.
fn copies(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect()
    });
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
