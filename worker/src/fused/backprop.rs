//! A fused group's forward pass and its backward pass, written out by hand.
//!
//! Why not libtorch's autograd: at batch 64 a fused step is a few dozen kernels of a few
//! microseconds each, and autograd's bookkeeping (a graph node per operation, gradient
//! accumulation, the engine's queue) cost as much again. An MLP's backward pass is short
//! and fixed: per layer one product for the weights' gradient, one sum for the bias', one
//! product for the input's, and one kernel per activation or dropout. Written out it also
//! lands every gradient straight in the stack's one gradient buffer
//! ([`super::stack::Stack::grads`]), so the SGD step is a few kernels for the whole model.
//! On the 2-core dev machine a fused `ffv2` h64 epoch of K = 3 members took 0.37 s instead of
//! 0.54 s (README, "Fused same-shape trials"). The test
//! `the_hand_written_gradients_are_autograds` holds every architecture's gradients to
//! libtorch's autograd.
//!
//! The shapes: the input `x` is `[N, 784]`, shared by all members; the first layer gives
//! `[K, N, h]` ([`first_layer`]); every later tensor is `[K, N, ·]`, member `k`'s in row `k`.

use super::stack::Stack;
use crate::model::INPUT;
use crate::Result;
use proto::Arch;
use tch::{Kind, Tensor};

/// What follows the shared first layer, in forward order.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Linear layer `l` (1-based in [`super::stack::layer_names`]).
    Linear(usize),
    Relu,
    Sigmoid,
    /// Dropout layer `i` (0-based, forward order): the member's mask, or nothing where no
    /// member drops anything.
    Dropout(usize),
}

fn ops(arch: Arch) -> &'static [Op] {
    use Op::*;
    match arch {
        Arch::Ffv0 => &[Sigmoid, Linear(1)],
        Arch::Ffv1 => &[Relu, Linear(1)],
        Arch::Ffv2 => &[Relu, Linear(1), Relu, Linear(2)],
        Arch::Ffv3 => &[Dropout(0), Relu, Dropout(1), Linear(1), Relu, Linear(2)],
        Arch::Cnn => &[],
    }
}

/// The dropout masks of a training step, by dropout layer: `[K, N, h]`, or `None` where no
/// member drops anything.
pub type Masks<'a> = dyn FnMut(usize) -> Option<Tensor> + 'a;

/// The logits `[K, N, 10]` of `x` (`[N, 784]`) without dropout: evaluation.
pub fn forward(stack: &Stack, x: &Tensor) -> Result<Tensor> {
    tch::no_grad(|| run(stack, x, &mut |_| None, None))
}

/// A training batch: `x` `[N, 784]`, labels `y` `[N]` (`Int64`) and `onehot`, `y` one-hot
/// (`[N, 10]`, `Float`).
pub struct Batch<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub onehot: &'a Tensor,
}

/// Where a training step writes each member's metrics, before its step: the batch's mean
/// log-likelihood (the loss's negation) and its count of correct predictions, `[K]` each
/// (`Float`, `Int64`).
pub struct StepOut<'a> {
    pub log_likelihood: &'a Tensor,
    pub correct: &'a Tensor,
}

/// One training step of every member on `batch`: the forward pass with `masks`, each
/// member's mean cross-entropy, the gradients of their sum into [`Stack::grads`], then
/// [`Stack::step`]. The metrics go to `out`.
pub fn train_step(
    stack: &mut Stack,
    batch: &Batch<'_>,
    masks: &mut Masks<'_>,
    out: &StepOut<'_>,
) -> Result<()> {
    tch::no_grad(|| {
        let mut saved = Vec::with_capacity(ops(stack.arch).len());
        let logits = run(stack, batch.x, masks, Some(&mut saved))?;
        let _ = logits
            .f_argmax(-1, false)?
            .f_eq_tensor(batch.y)?
            .f_sum_intlist_out(out.correct, &[1i64][..], false, Kind::Int64)?;
        let grad = cross_entropy(&logits, batch, out.log_likelihood)?;
        let fold = stack.plain_sgd();
        backward(stack, batch.x, saved, grad, fold)?;
        stack.step(fold)
    })
}

/// The forward pass; with `saved`, what [`backward`] needs of each of [`ops`], in order.
fn run(
    stack: &Stack,
    x: &Tensor,
    masks: &mut Masks<'_>,
    mut saved: Option<&mut Vec<Option<Tensor>>>,
) -> Result<Tensor> {
    let mut h = first_layer(stack, x)?;
    for op in ops(stack.arch) {
        // Activations apply in place: what backward needs of them is their output, and no
        // op saves its own input except a linear layer, whose input is a fresh tensor.
        let (out, keep) = match *op {
            Op::Linear(l) => {
                let (w, b) = (&stack.params[2 * l], &stack.params[2 * l + 1]);
                let out = b.f_baddbmm(&h, &w.f_transpose(1, 2)?, 1.0, 1.0)?;
                (out, Some(h))
            }
            Op::Relu => {
                let out = h.f_relu_()?;
                let keep = out.shallow_clone();
                (out, Some(keep))
            }
            Op::Sigmoid => {
                let out = h.f_sigmoid_()?;
                let keep = out.shallow_clone();
                (out, Some(keep))
            }
            Op::Dropout(i) => match masks(i) {
                Some(mask) => (h.f_mul(&mask)?, Some(mask)),
                None => (h, None),
            },
        };
        if let Some(saved) = saved.as_deref_mut() {
            saved.push(keep);
        }
        h = out;
    }
    Ok(h)
}

/// The first layer's pre-activations `[K, N, h]` of `x` (`[N, 784]`), which every member
/// shares: one product of `x` with all members' weights side by side (`[K·h, 784]`, a view of
/// the stack) rather than K products of a broadcast `x`. The input layer is most of an MLP's
/// work, and one wide product is what the CPU does fastest.
///
/// The product goes to MKL's `sgemm` (`addmm`), with its AVX-512 kernels on any processor
/// that has them ([`crate::mkl`]). Before that, on AMD processors, oneDNN's inner product
/// (`mkldnn_linear`, AVX-512) beat MKL's AVX2 kernels from 96 outputs per thread, and this
/// layer took it: with AVX-512, MKL's product beats oneDNN's at every width measured on the
/// 2-core dev machine (K = 3 and 9, 1 and 2 threads; `[64, 784] × [784, 576]` on 2 threads:
/// 146 µs against 199 µs).
fn first_layer(stack: &Stack, x: &Tensor) -> Result<Tensor> {
    let (w, b) = (&stack.params[0], &stack.params[1]);
    let size = w.size();
    let (k, h) = (size[0], size[1]);
    let n = x.size()[0];
    let out = wide_linear(x, &w.f_view([k * h, INPUT])?, &b.f_view([k * h])?)?;
    Ok(out.f_view([n, k, h])?.f_transpose(0, 1)?)
}

/// `x · wᵀ + b` for `x` `[N, in]`, `w` `[out, in]` and `b` `[out]`, as one `addmm`.
pub fn wide_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(b.f_addmm(x, &w.f_tr()?)?)
}

/// Writes each member's mean log-likelihood of `logits` (`[K, N, 10]`) for `batch.y` into
/// `log_likelihood` (`[K]`), and returns the gradient of the members' summed cross-entropy
/// with respect to the logits: `(softmax(logits) − onehot) / N`, member by member.
fn cross_entropy(logits: &Tensor, batch: &Batch<'_>, log_likelihood: &Tensor) -> Result<Tensor> {
    let size = logits.size();
    let (k, n) = (size[0], size[1]);
    let mut log_p = logits.f_log_softmax(-1, Kind::Float)?;
    let target = batch.y.f_view([1, n, 1])?.f_expand([k, n, 1], false)?;
    let _ = log_p.f_gather(2, &target, false)?.f_mean_out(
        log_likelihood,
        &[1i64, 2][..],
        false,
        Kind::Float,
    )?;
    Ok(log_p
        .f_exp_()?
        .f_sub_(batch.onehot)?
        .f_div_scalar_(n as f64)?)
}

/// Backpropagates `grad` (the loss's gradient with respect to the logits) through
/// [`ops`] and the first layer, writing every parameter's gradient into [`Stack::grads`];
/// with `fold_first_step` (plain SGD only) the first layer's weights are stepped here instead
/// of getting a gradient.
fn backward(
    stack: &Stack,
    x: &Tensor,
    saved: Vec<Option<Tensor>>,
    mut grad: Tensor,
    fold_first_step: bool,
) -> Result<()> {
    for (op, kept) in ops(stack.arch).iter().zip(saved).rev() {
        grad = match (*op, kept) {
            (Op::Linear(l), Some(input)) => {
                let (w, gw, gb) = (
                    &stack.params[2 * l],
                    &stack.grads[2 * l],
                    &stack.grads[2 * l + 1],
                );
                let _ = grad.f_transpose(1, 2)?.f_bmm_out(gw, &input)?;
                let _ = grad.f_sum_intlist_out(gb, &[1i64][..], true, Kind::Float)?;
                grad.f_bmm(w)?
            }
            (Op::Relu, Some(out)) => out.f_threshold_backward(&grad, 0.0)?,
            (Op::Sigmoid, Some(out)) => Tensor::f_sigmoid_backward(&grad, &out)?,
            (Op::Dropout(_), Some(mask)) => grad.f_mul_(&mask)?,
            (Op::Dropout(_), None) => grad,
            (op, None) => unreachable!("{op:?} always saves what its gradient needs"),
        };
    }
    // The first layer: its weights' gradient `[K·h, 784]` is one product with the shared `x`.
    let size = stack.params[0].size();
    let (k, h) = (size[0], size[1]);
    let n = x.size()[0];
    let _ = grad.f_sum_intlist_out(&stack.grads[1], &[1i64][..], true, Kind::Float)?;
    let by_unit = grad.f_transpose(1, 2)?.f_reshape([k * h, n])?;
    if fold_first_step {
        // Plain SGD: `W − lr·gᵀx` is `W + (−lr·g)ᵀx`, one product accumulated into the
        // weights (`addmm_`), which saves writing the gradient and a pass of the step over
        // the largest parameter, `[K·h, 784]`. (`by_unit` may be a view of `grad`: scaled
        // only now that the bias' gradient is summed.)
        let _ = by_unit.f_view([k, h, n])?.f_mul_(&stack.neg_lr_rows)?;
        let _ = stack.params[0]
            .f_view([k * h, INPUT])?
            .f_addmm_(&by_unit, x)?;
    } else {
        let _ = by_unit.f_mm_out(&stack.grads[0].f_view([k * h, INPUT])?, x)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masks::MaskStream;
    use crate::model::Net;
    use proto::Hyperparams;
    use tch::{nn, Device};

    /// Every architecture's hand-written gradients against libtorch's autograd through each
    /// member's own notebook network (`Net`), with the member's own dropout masks: three
    /// members of different weights, dropout 0, 0.3 and 0.5 (`ffv3`), on a batch of 20; on one
    /// thread, at h16 and h64; with plain SGD
    /// (the first layer's step folded into its product: its gradient read back from the
    /// step) and with momentum on one member (every gradient in [`Stack::grads`]).
    #[test]
    fn the_hand_written_gradients_are_autograds() {
        tch::set_num_threads(1);
        let n = 20;
        let cases = [Arch::Ffv0, Arch::Ffv1, Arch::Ffv2, Arch::Ffv3]
            .into_iter()
            .flat_map(|arch| [(arch, 16), (arch, 64)])
            .flat_map(|(arch, hidden)| [(arch, hidden, 0.0), (arch, hidden, 0.9)]);
        for (arch, hidden, momentum) in cases {
            let members: Vec<Hyperparams> = [0.0, 0.3, 0.5]
                .iter()
                .enumerate()
                .map(|(i, &dropout)| Hyperparams {
                    arch,
                    hidden,
                    dropout: if arch == Arch::Ffv3 { dropout } else { 0.0 },
                    lr: 0.1 * (i + 1) as f64,
                    momentum: if i == 2 { momentum } else { 0.0 },
                    seed: 7 + i as u64,
                    ..Default::default()
                })
                .collect();
            let nets: Vec<(nn::VarStore, Net)> = members
                .iter()
                .map(|h| {
                    tch::manual_seed(h.seed as i64);
                    let vs = nn::VarStore::new(Device::Cpu);
                    let net = Net::new(&vs.root(), h);
                    (vs, net)
                })
                .collect();
            let names = super::super::stack::layer_names(arch);
            let weights = names
                .iter()
                .map(|layer| {
                    let get = |suffix: &str| {
                        let parts: Vec<Tensor> = nets
                            .iter()
                            .map(|(vs, _)| vs.variables()[&format!("{layer}.{suffix}")].detach())
                            .collect();
                        Tensor::stack(&parts, 0)
                    };
                    (get("weight"), get("bias"))
                })
                .collect();
            let refs: Vec<&Hyperparams> = members.iter().collect();
            let mut stack = Stack::new(&refs, weights, Device::Cpu);

            tch::manual_seed(99);
            let x = Tensor::randn([n, INPUT], (Kind::Float, Device::Cpu));
            let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
            let onehot = y.one_hot(10).to_kind(Kind::Float);
            let streams: Vec<MaskStream> = members
                .iter()
                .map(|h| {
                    let mut s = MaskStream::new(h.seed, &h.trial_id(), 1);
                    s.step(0);
                    s
                })
                .collect();
            let mut fused_streams = streams.clone();
            let mut masks = |_layer: usize| {
                let parts: Vec<Tensor> = fused_streams
                    .iter_mut()
                    .zip(&members)
                    .map(|(s, h)| {
                        s.mask(&[n, i64::from(hidden)], h.dropout, Device::Cpu, Kind::Float)
                            .unwrap_or_else(|| {
                                Tensor::ones([n, i64::from(hidden)], (Kind::Float, Device::Cpu))
                            })
                    })
                    .collect();
                (arch == Arch::Ffv3).then(|| Tensor::stack(&parts, 0))
            };
            let out = StepOut {
                log_likelihood: &Tensor::zeros([3], (Kind::Float, Device::Cpu)),
                correct: &Tensor::zeros([3], (Kind::Int64, Device::Cpu)),
            };
            let batch = Batch {
                x: &x,
                y: &y,
                onehot: &onehot,
            };
            let folded = stack.plain_sgd();
            assert_eq!(folded, momentum == 0.0);
            let first_before = stack.params[0].copy();
            train_step(&mut stack, &batch, &mut masks, &out).unwrap();
            let losses = out.log_likelihood.neg();
            // With the step folded in, the first layer's gradient is what the step moved
            // each member's weights by, over its −lr.
            let first_grad = if folded {
                (&stack.params[0] - &first_before) / &stack.neg_lr_rows
            } else {
                stack.grads[0].shallow_clone()
            };

            for (k, ((vs, net), mut stream)) in nets.iter().zip(streams).enumerate() {
                let loss = net
                    .forward(&x, Some(&mut stream))
                    .cross_entropy_for_logits(&y);
                let diff = (loss.double_value(&[]) - losses.double_value(&[k as i64])).abs();
                assert!(
                    diff < 1e-6,
                    "{arch:?} h{hidden} member {k}: loss {diff} apart"
                );
                let vars = vs.variables();
                for (l, layer) in names.iter().enumerate() {
                    for (i, suffix) in ["weight", "bias"].iter().enumerate() {
                        let var = &vars[&format!("{layer}.{suffix}")];
                        let expected = &Tensor::run_backward(&[&loss], &[var], true, false)[0];
                        let ours = match 2 * l + i {
                            0 => &first_grad,
                            p => &stack.grads[p],
                        };
                        let ours = ours.get(k as i64).reshape(expected.size());
                        let scale = expected.abs().max().double_value(&[]).max(1e-12);
                        let err = (&ours - expected).abs().max().double_value(&[]) / scale;
                        // Read back from a step, the gradient loses the digits the weights'
                        // magnitude takes (weights ~0.04, steps ~1e-3 of them): 1.2e-6
                        // measured.
                        let bound = if folded && l + i == 0 { 1e-4 } else { 1e-5 };
                        assert!(
                            err < bound,
                            "{arch:?} h{hidden} member {k} {layer}.{suffix}: relative error {err}"
                        );
                    }
                }
            }
        }
    }
}
