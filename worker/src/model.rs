//! The reference notebook's five networks, built on a `nn::Path` so that parameter names are
//! the notebook's module paths (`capas.1.weight`, `block_1.0.weight`, `classifier.1.weight`)
//! and a checkpoint loads into the notebook's own PyTorch classes with `load_state_dict`.
//!
//! Layers use tch's defaults, which are PyTorch's: Kaiming-uniform(a=√5) weights and
//! U(−1/√fan_in, 1/√fan_in) biases for `Linear` and `Conv2d`.
//!
//! On the CPU the CNN runs its activations channels-last (NHWC memory under the notebook's
//! NCHW shapes): libtorch's oneDNN convolutions then need no reorder of them, which made the
//! training step about 1.4× faster here (README, "Training speed"). Only the strides of
//! activations change: the weights stay NCHW and contiguous, so `model.safetensors` loads
//! into the notebook's class as it is.

use crate::masks::{self, MaskStream};
use proto::{Arch, Hyperparams};
use tch::nn;
use tch::Tensor;

/// Input size of the MLPs: a flattened 28×28 image.
pub const INPUT: i64 = 784;
/// Fashion-MNIST has ten classes.
pub const CLASSES: i64 = 10;

/// A network of any of the five architectures.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per trial, never moved in a hot path: boxing buys nothing
pub enum Net {
    /// `ffv0` (sigmoid) and `ffv1` (ReLU): `capas.1` and `capas.3` are the linear layers.
    OneHidden {
        l1: nn::Linear,
        l2: nn::Linear,
        sigmoid: bool,
    },
    /// `ffv2`: `capas.1`, `capas.3`, `capas.5`.
    TwoHidden {
        l1: nn::Linear,
        l2: nn::Linear,
        l3: nn::Linear,
    },
    /// `ffv3`: `capas.1`, `capas.5`, `capas.7`, dropout at `capas.2` and `capas.4`.
    TwoHiddenDropout {
        l1: nn::Linear,
        l2: nn::Linear,
        l3: nn::Linear,
        p: f64,
    },
    /// `cnn`: TinyVGG, `block_1.{0,2}`, `block_2.{0,2}`, `classifier.1`.
    TinyVgg {
        c11: nn::Conv2D,
        c12: nn::Conv2D,
        c21: nn::Conv2D,
        c22: nn::Conv2D,
        fc: nn::Linear,
        /// Activations in channels-last memory (on the CPU; see the module documentation).
        channels_last: bool,
    },
}

impl Net {
    /// Builds the network for `h` under `root` (normally `vs.root()`).
    pub fn new(root: &nn::Path<'_>, h: &Hyperparams) -> Net {
        let hid = i64::from(h.hidden);
        let lin = |p: nn::Path<'_>, i, o| nn::linear(p, i, o, Default::default());
        match h.arch {
            Arch::Ffv0 | Arch::Ffv1 => {
                let capas = root / "capas";
                Net::OneHidden {
                    l1: lin(&capas / "1", INPUT, hid),
                    l2: lin(&capas / "3", hid, CLASSES),
                    sigmoid: h.arch == Arch::Ffv0,
                }
            }
            Arch::Ffv2 => {
                let capas = root / "capas";
                Net::TwoHidden {
                    l1: lin(&capas / "1", INPUT, hid),
                    l2: lin(&capas / "3", hid, hid),
                    l3: lin(&capas / "5", hid, CLASSES),
                }
            }
            Arch::Ffv3 => {
                let capas = root / "capas";
                Net::TwoHiddenDropout {
                    l1: lin(&capas / "1", INPUT, hid),
                    l2: lin(&capas / "5", hid, hid),
                    l3: lin(&capas / "7", hid, CLASSES),
                    p: h.dropout,
                }
            }
            Arch::Cnn => {
                let conv = |p: nn::Path<'_>, i, o| {
                    nn::conv2d(
                        p,
                        i,
                        o,
                        3,
                        nn::ConvConfig {
                            padding: 1,
                            ..Default::default()
                        },
                    )
                };
                let (b1, b2, cl) = (root / "block_1", root / "block_2", root / "classifier");
                Net::TinyVgg {
                    c11: conv(&b1 / "0", 1, hid),
                    c12: conv(&b1 / "2", hid, hid),
                    c21: conv(&b2 / "0", hid, hid),
                    c22: conv(&b2 / "2", hid, hid),
                    fc: lin(&cl / "1", hid * 7 * 7, CLASSES),
                    channels_last: root.device() == tch::Device::Cpu,
                }
            }
        }
    }

    /// Whether the network takes images as `[N, 1, 28, 28]` (else flattened `[N, 784]`).
    pub fn wants_images(&self) -> bool {
        matches!(self, Net::TinyVgg { .. })
    }
}

impl Net {
    /// The logits of `xs`. Training passes the trial's mask stream, positioned at the step
    /// ([`MaskStream::step`]), and `ffv3` draws its two dropout masks from it in forward
    /// order; evaluation passes `None`: no dropout.
    pub fn forward(&self, xs: &Tensor, mut masks: Option<&mut MaskStream>) -> Tensor {
        match self {
            Net::OneHidden { l1, l2, sigmoid } => {
                let x = xs.flatten(1, -1).apply(l1);
                let x = if *sigmoid { x.sigmoid() } else { x.relu() };
                x.apply(l2)
            }
            Net::TwoHidden { l1, l2, l3 } => xs
                .flatten(1, -1)
                .apply(l1)
                .relu()
                .apply(l2)
                .relu()
                .apply(l3),
            Net::TwoHiddenDropout { l1, l2, l3, p } => {
                let x = xs.flatten(1, -1).apply(l1);
                let x = masks::dropout(&x, *p, masks.as_deref_mut()).relu();
                masks::dropout(&x, *p, masks).apply(l2).relu().apply(l3)
            }
            Net::TinyVgg {
                c11,
                c12,
                c21,
                c22,
                fc,
                channels_last,
            } => if *channels_last {
                to_channels_last(xs)
            } else {
                xs.shallow_clone()
            }
            .apply(c11)
            .relu()
            .apply(c12)
            .relu()
            .max_pool2d_default(2)
            .apply(c21)
            .relu()
            .apply(c22)
            .relu()
            .max_pool2d_default(2)
            .flatten(1, -1)
            .apply(fc),
        }
    }
}

/// `x`, an NCHW-shaped batch, with channels-last strides (NHWC memory), as PyTorch's
/// `x.contiguous(memory_format=torch.channels_last)`; libtorch's convolutions, ReLU and
/// pooling keep that layout for their outputs. With one channel the memory is already NHWC
/// and only the strides change: a permuted copy would keep NCHW strides there, and libtorch
/// would not see channels-last.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    let size = x.size();
    let &[n, c, h, w] = size.as_slice() else {
        return x.shallow_clone();
    };
    if c == 1 {
        x.contiguous()
            .as_strided([n, c, h, w], [h * w, 1, w, 1], None)
    } else {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn build(arch: Arch, hidden: u32) -> (nn::VarStore, Net) {
        let vs = nn::VarStore::new(Device::Cpu);
        let h = Hyperparams {
            arch,
            hidden,
            dropout: 0.25,
            ..Default::default()
        };
        let net = Net::new(&vs.root(), &h);
        (vs, net)
    }

    fn param_count(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn output_shapes_and_parameter_counts_match_pytorch() {
        // Counts as PyTorch reports them for the notebook's classes.
        let cases = [
            (Arch::Ffv0, 32, 784 * 32 + 32 + 32 * 10 + 10),
            (Arch::Ffv1, 32, 784 * 32 + 32 + 32 * 10 + 10),
            (Arch::Ffv2, 64, 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10),
            (Arch::Ffv3, 64, 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10),
            // conv1 1→10 (90+10), three 10→10 convs (900+10 each), fc 490→10 (4900+10).
            (Arch::Cnn, 10, 100 + 3 * 910 + 4910),
        ];
        for (arch, hidden, params) in cases {
            let (vs, net) = build(arch, hidden);
            assert_eq!(param_count(&vs), params as i64, "{arch}");
            let x = Tensor::zeros([5, 1, 28, 28], (Kind::Float, Device::Cpu));
            let y = net.forward(&x, None);
            assert_eq!(y.size(), vec![5, 10], "{arch}");
        }
    }

    #[test]
    fn parameter_names_follow_the_notebook() {
        let names = |arch, hidden| {
            let (vs, _net) = build(arch, hidden);
            let mut n: Vec<String> = vs.variables().into_keys().collect();
            n.sort();
            n
        };
        assert_eq!(
            names(Arch::Ffv0, 32),
            [
                "capas.1.bias",
                "capas.1.weight",
                "capas.3.bias",
                "capas.3.weight"
            ]
        );
        assert_eq!(
            names(Arch::Ffv3, 64),
            [
                "capas.1.bias",
                "capas.1.weight",
                "capas.5.bias",
                "capas.5.weight",
                "capas.7.bias",
                "capas.7.weight"
            ]
        );
        assert_eq!(
            names(Arch::Cnn, 10),
            [
                "block_1.0.bias",
                "block_1.0.weight",
                "block_1.2.bias",
                "block_1.2.weight",
                "block_2.0.bias",
                "block_2.0.weight",
                "block_2.2.bias",
                "block_2.2.weight",
                "classifier.1.bias",
                "classifier.1.weight"
            ]
        );
    }

    #[test]
    fn the_cnn_runs_channels_last_and_computes_the_nchw_function() {
        let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        let cl = to_channels_last(&x);
        assert_eq!(cl.stride(), [784, 1, 28, 1]);
        assert!(cl.equal(&x));
        let y = Tensor::randn([3, 4, 5, 5], (Kind::Float, Device::Cpu));
        let ycl = to_channels_last(&y);
        assert_eq!(ycl.stride(), [100, 1, 20, 4]);
        assert!(ycl.equal(&y));
        // libtorch keeps the layout through a convolution: it took the NHWC path.
        let w = Tensor::randn([10, 1, 3, 3], (Kind::Float, Device::Cpu));
        let conv = cl.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert_eq!(conv.stride(), [7840, 1, 280, 10]);

        tch::manual_seed(2);
        let (_vs, mut net) = build(Arch::Cnn, 10);
        assert!(matches!(
            net,
            Net::TinyVgg {
                channels_last: true,
                ..
            }
        ));
        let fast = net.forward(&x, None);
        if let Net::TinyVgg { channels_last, .. } = &mut net {
            *channels_last = false;
        }
        let nchw = net.forward(&x, None);
        assert!(
            fast.allclose(&nchw, 1e-5, 1e-5, false),
            "{}",
            (&fast - &nchw).abs().max().double_value(&[])
        );
    }

    #[test]
    fn dropout_is_active_only_in_training() {
        tch::manual_seed(1);
        let (_vs, net) = build(Arch::Ffv3, 16);
        let x = Tensor::ones([4, 784], (Kind::Float, Device::Cpu));
        let e1 = net.forward(&x, None);
        let e2 = net.forward(&x, None);
        assert!(e1.equal(&e2));
        let mut masks = MaskStream::new(1, &proto::TrialId("ffv3-000000000001".into()), 1);
        masks.step(0);
        let t1 = net.forward(&x, Some(&mut masks));
        assert!(!t1.equal(&e1));
    }
}
