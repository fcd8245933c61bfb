//! K same-shape MLPs as one stacked model: every linear layer's weights as `[K, out, in]`
//! (the notebook's `[out, in]` per member) and biases as `[K, 1, out]`, applied with one
//! `baddbmm` on the transposed view, as a solo `Linear` is `addmm` on `weight.t()` (so each
//! member's product is the same BLAS call with the same transposition); and the SGD step of all K at once
//! with per-member learning rate, momentum and weight decay as `[K, 1, 1]` vectors.
//!
//! The step is [`crate::sgd::Sgd`]'s, element for element: `g + wd·p` (`addcmul`), then the
//! momentum buffer `buf·m + g` in two kernels, then `p + step·(−lr)` (`addcmul_`). A member
//! whose weight decay is 0 adds `p·0` (exactly `g`); one whose momentum is 0 keeps a buffer
//! that is `g` after every step (`buf·0 + g`), so its update is the plain `p − lr·g`. Rows of
//! the stack never mix: member `k`'s parameters, gradients and buffers are row `k` of each.

use crate::model::{CLASSES, INPUT};
use crate::Result;
use proto::{Arch, Hyperparams};
use tch::{Device, Kind, Tensor};

/// The notebook's module path of each linear layer of `arch`, in forward order.
pub fn layer_names(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Ffv0 | Arch::Ffv1 => &["capas.1", "capas.3"],
        Arch::Ffv2 => &["capas.1", "capas.3", "capas.5"],
        Arch::Ffv3 => &["capas.1", "capas.5", "capas.7"],
        Arch::Cnn => &[],
    }
}

/// The stacked parameters and optimizer state of the members still training.
pub struct Stack {
    arch: Arch,
    /// Per layer: weight `[K, out, in]` then bias `[K, 1, out]`; leaves that require grad.
    pub params: Vec<Tensor>,
    /// One per parameter; `None` until the first step (or when no member has momentum).
    pub buffers: Vec<Option<Tensor>>,
    neg_lr: Tensor,
    momentum: Option<Tensor>,
    weight_decay: Option<Tensor>,
}

impl Stack {
    /// The stack of `members`' hyperparameters with every member's layer `l` given by
    /// `weights[l]`: `(weight [K, out, in], bias [K, out])` in the notebook's layout.
    pub fn new(members: &[&Hyperparams], weights: Vec<(Tensor, Tensor)>, device: Device) -> Stack {
        let params = weights
            .into_iter()
            .flat_map(|(w, b)| {
                [
                    w.contiguous().set_requires_grad(true),
                    b.unsqueeze(1).contiguous().set_requires_grad(true),
                ]
            })
            .collect::<Vec<_>>();
        let vector = |f: &dyn Fn(&Hyperparams) -> f64| {
            let v: Vec<f32> = members.iter().map(|h| f(h) as f32).collect();
            Tensor::from_slice(&v).view([-1, 1, 1]).to_device(device)
        };
        let any = |f: &dyn Fn(&Hyperparams) -> f64| members.iter().any(|h| f(h) != 0.0);
        Stack {
            arch: members[0].arch,
            buffers: params.iter().map(|_| None).collect(),
            params,
            neg_lr: vector(&|h| -h.lr),
            momentum: any(&|h| h.momentum).then(|| vector(&|h| h.momentum)),
            weight_decay: any(&|h| h.weight_decay).then(|| vector(&|h| h.weight_decay)),
        }
    }

    /// How many members the stack holds.
    pub fn len(&self) -> i64 {
        self.params[0].size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Member row `k`'s layer `l` in the notebook's layout: `(weight [out, in], bias [out])`.
    pub fn layer(&self, k: i64, l: usize) -> (Tensor, Tensor) {
        let w = self.params[2 * l].get(k).contiguous();
        let b = self.params[2 * l + 1].get(k).squeeze_dim(0).contiguous();
        (w.detach(), b.detach())
    }

    /// Row `k` of the momentum buffers of layer `l`, in the notebook's layout.
    pub fn layer_buffers(&self, k: i64, l: usize) -> Option<(Tensor, Tensor)> {
        let w = self.buffers[2 * l].as_ref()?;
        let b = self.buffers[2 * l + 1].as_ref()?;
        Some((w.get(k).contiguous(), b.get(k).squeeze_dim(0).contiguous()))
    }

    /// Sets row `k`'s momentum buffers of layer `l` (notebook layout), creating zero buffers
    /// for every row first when there are none.
    pub fn set_layer_buffers(&mut self, k: i64, l: usize, w: &Tensor, b: &Tensor) -> Result<()> {
        for (i, src) in [(2 * l, w.shallow_clone()), (2 * l + 1, b.unsqueeze(0))] {
            let p = &self.params[i];
            let buf = self.buffers[i].get_or_insert_with(|| p.detach().zeros_like());
            tch::no_grad(|| buf.get(k).f_copy_(&src.to_device(p.device())))?;
        }
        Ok(())
    }

    /// The logits `[K, N, 10]` of `x` (`[N, 784]`, shared by all members). `masks`, in
    /// training, gives the stacked dropout masks of `ffv3`'s two dropout layers in forward
    /// order (`[K, N, h]` each, or `None` where no member drops anything).
    pub fn forward(&self, x: &Tensor, masks: &mut dyn FnMut(usize) -> Option<Tensor>) -> Tensor {
        let linear = |x: &Tensor, l: usize| {
            let w = self.params[2 * l].transpose(1, 2);
            self.params[2 * l + 1].baddbmm(x, &w, 1.0, 1.0)
        };
        let drop =
            |x: Tensor, i: usize, masks: &mut dyn FnMut(usize) -> Option<Tensor>| match masks(i) {
                Some(m) => x * m,
                None => x,
            };
        let x = self.first_layer(x);
        match self.arch {
            Arch::Ffv0 => linear(&x.sigmoid(), 1),
            Arch::Ffv1 => linear(&x.relu(), 1),
            Arch::Ffv2 => linear(&linear(&x.relu(), 1).relu(), 2),
            Arch::Ffv3 => {
                let h = drop(x, 0, masks).relu();
                let h = linear(&drop(h, 1, masks), 1).relu();
                linear(&h, 2)
            }
            Arch::Cnn => unreachable!("the CNN never fuses (Hyperparams::fuse_key)"),
        }
    }

    /// The first layer's pre-activations `[K, N, h]` of `x` (`[N, 784]`), which every member
    /// shares: one `addmm` of `x` with all members' weights side by side (`[K·h, 784]`, a
    /// view of the stack) rather than K products of a broadcast `x`. The input layer is most
    /// of an MLP's work, and one wide product is what BLAS does fastest.
    fn first_layer(&self, x: &Tensor) -> Tensor {
        let (w, b) = (&self.params[0], &self.params[1]);
        let size = w.size();
        let (k, h) = (size[0], size[1]);
        let n = x.size()[0];
        b.view([k * h])
            .addmm(x, &w.view([k * h, INPUT]).tr())
            .view([n, k, h])
            .transpose(0, 1)
    }

    /// Backpropagates `loss` (the sum of the members' losses: each member's gradient is its
    /// own loss's) and steps every member.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = Tensor::f_run_backward(&[loss], &self.params, false, false)?;
        tch::no_grad(|| -> Result<()> {
            let state = self.params.iter_mut().zip(&mut self.buffers);
            for ((p, buf), mut g) in state.zip(grads) {
                if let Some(wd) = &self.weight_decay {
                    g = g.f_addcmul(p, wd)?;
                }
                let step = match (&self.momentum, buf) {
                    (None, _) => &g,
                    (Some(_), buf @ None) => &*buf.insert(g.f_detach_copy()?),
                    (Some(m), Some(b)) => {
                        let _ = b.f_mul_(m)?;
                        let _ = b.f_add_(&g)?;
                        &*b
                    }
                };
                let _ = p.f_addcmul_(step, &self.neg_lr)?;
            }
            Ok(())
        })
    }

    /// Keeps only the rows `keep` (in this order): the members that go on training.
    pub fn retain(&mut self, keep: &[i64]) {
        let device = self.params[0].device();
        let idx = Tensor::from_slice(keep).to_device(device);
        let pick = |t: &Tensor| t.detach().index_select(0, &idx);
        for p in &mut self.params {
            *p = pick(p).set_requires_grad(true);
        }
        for b in self.buffers.iter_mut().flatten() {
            *b = pick(b);
        }
        self.neg_lr = pick(&self.neg_lr);
        self.momentum = self.momentum.as_ref().map(pick);
        self.weight_decay = self.weight_decay.as_ref().map(pick);
    }
}

/// Cross-entropy of stacked logits `[K, N, 10]` against shared labels `[N]`: each member's
/// mean over the batch, `[K]` (`reduction = "sum"` gives sums instead).
pub fn member_losses(logits: &Tensor, y: &Tensor, sum: bool) -> Tensor {
    let size = logits.size();
    let (k, n) = (size[0], size[1]);
    let per = logits
        .log_softmax(-1, Kind::Float)
        .view([k * n, CLASSES])
        .nll_loss_nd::<Tensor>(&y.repeat([k]), None, tch::Reduction::None, -100)
        .view([k, n]);
    if sum {
        per.sum_dim_intlist(1, false, Kind::Float)
    } else {
        per.mean_dim(1, false, Kind::Float)
    }
}

/// Each member's count of correct predictions, `[K]` (`Int64`).
pub fn member_correct(logits: &Tensor, y: &Tensor) -> Tensor {
    logits
        .argmax(-1, false)
        .eq_tensor(&y.unsqueeze(0))
        .sum_dim_intlist(1, false, Kind::Int64)
}
