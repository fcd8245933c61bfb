//! K same-shape MLPs' parameters and optimizer state as one stacked model: every linear
//! layer's weights as `[K, out, in]` (the notebook's `[out, in]` per member) and biases as
//! `[K, 1, out]`, all of them views of one flat buffer, and the SGD step of all K members at
//! once with per-member learning rate, momentum and weight decay.
//!
//! One buffer for every parameter (and one for every gradient, one for the momentum buffers)
//! makes the step three or four elementwise kernels over the whole model, whatever the
//! number of layers, rather than as many per parameter: at batch 64 a step's kernels are
//! small and each costs about as much to launch as to run. The per-member hyperparameters
//! are per-element vectors laid out as the buffer (`K × per-member size` per parameter).
//!
//! The step is [`crate::sgd::Sgd`]'s, element for element: `g + wd·p` (`addcmul_`), then the
//! momentum buffer `buf·m + g` in two kernels, then `p + step·(−lr)` (`addcmul_`). A member
//! whose weight decay is 0 adds `p·0` (exactly `g`); one whose momentum is 0 keeps a buffer
//! that is `g` after every step (`buf·0 + g`), so its update is the plain `p − lr·g`. Rows of
//! the stack never mix: member `k`'s parameters, gradients and buffers are row `k` of each.

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

/// One member's SGD settings, as the kernels use them (`f32`, as PyTorch's with a Python
/// float).
#[derive(Debug, Clone, Copy)]
struct Settings {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}

/// The stacked parameters and optimizer state of the members still training.
pub struct Stack {
    pub arch: Arch,
    settings: Vec<Settings>,
    /// Every parameter, in [`Stack::params`]' order, each a contiguous `[K, …]` region.
    flat: Tensor,
    /// Per layer: weight `[K, out, in]` then bias `[K, 1, out]`; views of `flat`.
    pub params: Vec<Tensor>,
    /// The last step's gradients, laid out as `flat`: what [`crate::fused::backprop`] writes.
    grad: Tensor,
    /// Views of `grad`, shaped as `params`.
    pub grads: Vec<Tensor>,
    /// The momentum buffers, laid out as `flat`; `None` until the first step (or when no
    /// member has momentum).
    buffer: Option<Tensor>,
    neg_lr: Tensor,
    /// Each member's `−lr` as `[K, 1, 1]`: what [`crate::fused::backprop`] scales the first
    /// layer's gradient by when it folds that layer's step into its product.
    pub neg_lr_rows: Tensor,
    momentum: Option<Tensor>,
    weight_decay: Option<Tensor>,
}

impl Stack {
    /// The stack of `members`' hyperparameters with every member's layer `l` given by
    /// `weights[l]`: `(weight [K, out, in], bias [K, out])` in the notebook's layout.
    pub fn new(members: &[&Hyperparams], weights: Vec<(Tensor, Tensor)>, device: Device) -> Stack {
        let params: Vec<Tensor> = weights
            .into_iter()
            .flat_map(|(w, b)| [w, b.unsqueeze(1)])
            .collect();
        let settings = members
            .iter()
            .map(|h| Settings {
                lr: h.lr as f32,
                momentum: h.momentum as f32,
                weight_decay: h.weight_decay as f32,
            })
            .collect();
        Stack::from_parts(members[0].arch, settings, &params, None, device)
    }

    /// The stack holding `params` (shaped as [`Stack::params`]) and, when given, momentum
    /// buffers shaped the same, for members `settings`.
    fn from_parts(
        arch: Arch,
        settings: Vec<Settings>,
        params: &[Tensor],
        buffers: Option<&[Tensor]>,
        device: Device,
    ) -> Stack {
        let shapes: Vec<Vec<i64>> = params.iter().map(Tensor::size).collect();
        let flatten = |parts: &[Tensor]| {
            let parts: Vec<Tensor> = parts.iter().map(|t| t.detach().reshape([-1])).collect();
            Tensor::cat(&parts, 0).to_device(device)
        };
        let flat = flatten(params);
        let grad = flat.zeros_like();
        let vector = |f: fn(&Settings) -> f32| {
            let parts: Vec<Tensor> = shapes
                .iter()
                .map(|shape| {
                    let per_member: i64 = shape[1..].iter().product();
                    let values: Vec<f32> = settings.iter().map(f).collect();
                    Tensor::from_slice(&values)
                        .view([-1, 1])
                        .expand([-1, per_member], false)
                        .reshape([-1])
                })
                .collect();
            Tensor::cat(&parts, 0).to_device(device)
        };
        let any = |f: fn(&Settings) -> f32| settings.iter().any(|s| f(s) != 0.0);
        Stack {
            arch,
            params: views(&flat, &shapes),
            grads: views(&grad, &shapes),
            flat,
            grad,
            buffer: buffers.map(flatten),
            neg_lr: vector(|s| -s.lr),
            neg_lr_rows: {
                let values: Vec<f32> = settings.iter().map(|s| -s.lr).collect();
                Tensor::from_slice(&values)
                    .view([-1, 1, 1])
                    .to_device(device)
            },
            momentum: any(|s| s.momentum).then(|| vector(|s| s.momentum)),
            weight_decay: any(|s| s.weight_decay).then(|| vector(|s| s.weight_decay)),
            settings,
        }
    }

    /// How many members the stack holds.
    pub fn len(&self) -> i64 {
        self.settings.len() as i64
    }

    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// Member row `k`'s layer `l` in the notebook's layout: `(weight [out, in], bias [out])`.
    pub fn layer(&self, k: i64, l: usize) -> (Tensor, Tensor) {
        let w = self.params[2 * l].get(k).contiguous();
        let b = self.params[2 * l + 1].get(k).squeeze_dim(0).contiguous();
        (w.detach(), b.detach())
    }

    /// Row `k` of the momentum buffers of layer `l`, in the notebook's layout.
    pub fn layer_buffers(&self, k: i64, l: usize) -> Option<(Tensor, Tensor)> {
        let buffer = self.buffer.as_ref()?;
        let shapes: Vec<Vec<i64>> = self.params.iter().map(Tensor::size).collect();
        let buffers = views(buffer, &shapes);
        let (w, b) = (&buffers[2 * l], &buffers[2 * l + 1]);
        Some((w.get(k).contiguous(), b.get(k).squeeze_dim(0).contiguous()))
    }

    /// Sets row `k`'s momentum buffers of layer `l` (notebook layout), creating zero buffers
    /// for every row first when there are none.
    pub fn set_layer_buffers(&mut self, k: i64, l: usize, w: &Tensor, b: &Tensor) -> Result<()> {
        let buffer = self.buffer.get_or_insert_with(|| self.flat.zeros_like());
        let shapes: Vec<Vec<i64>> = self.params.iter().map(Tensor::size).collect();
        let buffers = views(buffer, &shapes);
        let device = self.flat.device();
        for (i, src) in [(2 * l, w.shallow_clone()), (2 * l + 1, b.unsqueeze(0))] {
            tch::no_grad(|| buffers[i].get(k).f_copy_(&src.to_device(device)))?;
        }
        Ok(())
    }

    /// Whether every member's step is the plain `p − lr·g` (no momentum, no weight decay):
    /// then a layer's step can be folded into its weight-gradient product.
    pub fn plain_sgd(&self) -> bool {
        self.momentum.is_none() && self.weight_decay.is_none()
    }

    /// Steps every member with the gradients in [`Stack::grads`]; with `first_weights_stepped`
    /// (only for [`Stack::plain_sgd`]) all but the first layer's weights, which the backward
    /// pass already stepped.
    pub fn step(&mut self, first_weights_stepped: bool) -> Result<()> {
        let skip = if first_weights_stepped {
            debug_assert!(self.plain_sgd());
            self.params[0].numel() as i64
        } else {
            0
        };
        let rest = self.flat.size()[0] - skip;
        let part = |t: &Tensor| t.f_narrow(0, skip, rest);
        let (mut flat, mut grad) = (part(&self.flat)?, part(&self.grad)?);
        tch::no_grad(|| -> Result<()> {
            if let Some(wd) = &self.weight_decay {
                let _ = grad.f_addcmul_(&flat, wd)?;
            }
            let step = match (&self.momentum, &mut self.buffer) {
                (None, _) => &grad,
                (Some(_), buffer @ None) => &*buffer.insert(self.grad.f_detach_copy()?),
                (Some(m), Some(buffer)) => {
                    let _ = buffer.f_mul_(m)?;
                    let _ = buffer.f_add_(&self.grad)?;
                    &*buffer
                }
            };
            let _ = flat.f_addcmul_(step, &part(&self.neg_lr)?)?;
            Ok(())
        })
    }

    /// Keeps only the rows `keep` (in this order): the members that go on training.
    pub fn retain(&mut self, keep: &[i64]) {
        let device = self.flat.device();
        let idx = Tensor::from_slice(keep).to_device(device);
        let pick =
            |ts: &[Tensor]| -> Vec<Tensor> { ts.iter().map(|t| t.index_select(0, &idx)).collect() };
        let params = pick(&self.params);
        let shapes: Vec<Vec<i64>> = self.params.iter().map(Tensor::size).collect();
        let buffers = self.buffer.as_ref().map(|b| pick(&views(b, &shapes)));
        let settings = keep.iter().map(|&k| self.settings[k as usize]).collect();
        *self = Stack::from_parts(self.arch, settings, &params, buffers.as_deref(), device);
    }
}

/// `flat` cut into consecutive views of `shapes`.
fn views(flat: &Tensor, shapes: &[Vec<i64>]) -> Vec<Tensor> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|shape| {
            let len: i64 = shape.iter().product();
            let view = flat.narrow(0, offset, len).view(shape.as_slice());
            offset += len;
            view
        })
        .collect()
}

/// Cross-entropy of stacked logits `[K, N, 10]` against shared labels `[N]`: each member's
/// sum over the batch, `[K]`.
pub fn member_loss_sums(logits: &Tensor, y: &Tensor) -> Tensor {
    let size = logits.size();
    let (k, n) = (size[0], size[1]);
    logits
        .log_softmax(-1, Kind::Float)
        .view([k * n, crate::model::CLASSES])
        .nll_loss_nd::<Tensor>(&y.repeat([k]), None, tch::Reduction::None, -100)
        .view([k, n])
        .sum_dim_intlist(1, false, Kind::Float)
}

/// Each member's count of correct predictions, `[K]` (`Int64`).
pub fn member_correct(logits: &Tensor, y: &Tensor) -> Tensor {
    logits
        .argmax(-1, false)
        .eq_tensor(&y.unsqueeze(0))
        .sum_dim_intlist(1, false, Kind::Int64)
}
