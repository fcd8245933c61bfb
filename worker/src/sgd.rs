//! Stochastic gradient descent with exactly `torch.optim.SGD`'s update, written by hand so
//! that a checkpoint can carry its momentum buffers (see [`Sgd`]).

use crate::Result;
use std::collections::HashMap;
use tch::{nn, Tensor};

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

    /// Whether steps keep momentum buffers (momentum is not 0).
    pub fn has_momentum(&self) -> bool {
        self.momentum.is_some()
    }

    /// The parameters this optimizer steps, by variable name, sorted by it.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.params)
    }

    /// The momentum buffers that exist, by variable name.
    pub fn momentum_buffers(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names
            .iter()
            .zip(&self.momentum_buffers)
            .filter_map(|(n, b)| b.as_ref().map(|b| (n.as_str(), b)))
    }

    /// Replaces every momentum buffer by the one of `buffers` with its variable's name (moved
    /// to the parameter's device); a parameter without one gets none, as before its first
    /// step.
    pub fn set_momentum_buffers(&mut self, buffers: &HashMap<String, Tensor>) -> Result<()> {
        let mut next = Vec::with_capacity(self.params.len());
        for (name, p) in self.names.iter().zip(&self.params) {
            next.push(
                buffers
                    .get(name)
                    .map(|b| b.f_to_device(p.device()))
                    .transpose()?,
            );
        }
        self.momentum_buffers = next;
        Ok(())
    }
}
