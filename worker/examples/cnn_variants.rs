//! Ways to run TinyVGG's training step inside libtorch, timed on random data: the benchmark
//! behind the worker's choice of convolution path (`benches/cnn_speed.py` runs it beside
//! PyTorch; never part of CI).
//!
//! ```text
//! cargo run -p worker --release --example cnn_variants -- --variant channels-last --threads 1
//! ```
//!
//! Every variant trains the same network (the notebook's parameter names and NCHW weights,
//! SGD lr 0.1, batch 64) and prints one JSON line: seconds for `--steps` training steps
//! after `--warmup`, scaled to a 938-step epoch, and for evaluating 10,000 images in batches
//! of 1000.
//!
//! - `nchw`: the notebook's layout, libtorch's `conv2d` (oneDNN on this CPU for batch 64);
//! - `channels-last`: the same `conv2d` fed NHWC memory (an NCHW-shaped tensor with
//!   channels-last strides), so oneDNN needs no reorder of the activations;
//! - `channels-last-weights`: the same, the weights too (a channels-last copy each step, as
//!   PyTorch's `model.to(memory_format=torch.channels_last)` keeps them);
//! - `mkldnn-direct`: `mkldnn_convolution` called directly on NCHW tensors;
//! - `im2col`: `im2col` + one batched matrix product per convolution, NCHW;
//! - `im2col-nhwc`: activations kept NHWC, patches by `unfold` + one `[N·H·W, 9C] × [9C, C]`
//!   matrix product, pooling on the channels-last view.
//! - `worker`: whatever `worker::model::Net` does today.

use clap::Parser;
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, Tensor};
use worker::sgd::Sgd;

/// Distinct random batches the steps cycle through.
const BATCHES: i64 = 100;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    variant: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 10)]
    hidden: i64,
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
}

/// The four convolutions and the classifier, under the notebook's names.
struct Params {
    convs: Vec<(Tensor, Tensor)>,
    fc: nn::Linear,
}

fn params(root: &nn::Path<'_>, hidden: i64) -> Params {
    let conv = |p: nn::Path<'_>, i| {
        let c = nn::conv2d(
            p,
            i,
            hidden,
            3,
            nn::ConvConfig {
                padding: 1,
                ..Default::default()
            },
        );
        (c.ws, c.bs.expect("bias"))
    };
    let (b1, b2) = (root / "block_1", root / "block_2");
    Params {
        convs: vec![
            conv(&b1 / "0", 1),
            conv(&b1 / "2", hidden),
            conv(&b2 / "0", hidden),
            conv(&b2 / "2", hidden),
        ],
        fc: nn::linear(
            root / "classifier" / "1",
            hidden * 49,
            10,
            Default::default(),
        ),
    }
}

/// NHWC memory under an NCHW shape: what PyTorch's `channels_last` is. With one channel
/// the memory is the same and only the strides change (a permuted copy would keep NCHW
/// strides, and libtorch would not see channels-last).
fn channels_last(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.size4().unwrap();
    if c == 1 {
        x.contiguous()
            .as_strided([n, c, h, w], [h * w, 1, w, 1], None)
    } else {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    }
}

/// 3×3, padding 1 convolution of NCHW `x` by im2col and one batched matrix product.
fn conv_im2col(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (n, _, h, wd) = x.size4().unwrap();
    let o = w.size()[0];
    let cols = x.im2col([3, 3], [1, 1], [1, 1], [1, 1]); // [N, 9C, H·W]
    let y = w.view([o, -1]).matmul(&cols) + b.view([1, o, 1]);
    y.view([n, o, h, wd])
}

/// 3×3, padding 1 convolution of NHWC `x` (`[N, H, W, C]`, contiguous) into NHWC.
fn conv_nhwc(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (n, h, wd, c) = x.size4().unwrap();
    let o = w.size()[0];
    let padded = x.constant_pad_nd([0, 0, 1, 1, 1, 1]);
    // [N, H, W, C, 3, 3]: the patch of each pixel in (c, kh, kw) order, as the weight's.
    let patches = padded
        .unfold(1, 3, 1)
        .unfold(2, 3, 1)
        .reshape([n * h * wd, c * 9]);
    b.addmm(&patches, &w.view([o, c * 9]).tr())
        .view([n, h, wd, o])
}

fn forward(v: &str, p: &Params, x: &Tensor) -> Tensor {
    let pool = |x: Tensor| x.max_pool2d_default(2);
    let head = |x: Tensor| x.flatten(1, -1).apply(&p.fc);
    let c = &p.convs;
    match v {
        "nchw" | "channels-last" | "channels-last-weights" => {
            let x = if v == "nchw" {
                x.shallow_clone()
            } else {
                channels_last(x)
            };
            let conv = |x: Tensor, (w, b): &(Tensor, Tensor)| {
                let w = if v == "channels-last-weights" {
                    channels_last(w)
                } else {
                    w.shallow_clone()
                };
                x.conv2d(&w, Some(b), [1, 1], [1, 1], [1, 1], 1).relu()
            };
            let x = pool(conv(conv(x, &c[0]), &c[1]));
            head(pool(conv(conv(x, &c[2]), &c[3])))
        }
        "mkldnn-direct" => {
            let conv = |x: Tensor, (w, b): &(Tensor, Tensor)| {
                x.mkldnn_convolution(w, Some(b), [1, 1], [1, 1], [1, 1], 1)
                    .relu()
            };
            let x = pool(conv(conv(x.shallow_clone(), &c[0]), &c[1]));
            head(pool(conv(conv(x, &c[2]), &c[3])))
        }
        "im2col" => {
            let conv = |x: Tensor, (w, b): &(Tensor, Tensor)| conv_im2col(&x, w, b).relu();
            let x = pool(conv(conv(x.shallow_clone(), &c[0]), &c[1]));
            head(pool(conv(conv(x, &c[2]), &c[3])))
        }
        "im2col-nhwc" => {
            let conv = |x: Tensor, (w, b): &(Tensor, Tensor)| conv_nhwc(&x, w, b).relu();
            // Pooling on the channels-last view of NHWC memory, back to NHWC after.
            let pool_nhwc = |x: Tensor| {
                x.permute([0, 3, 1, 2])
                    .max_pool2d_default(2)
                    .permute([0, 2, 3, 1])
                    .contiguous()
            };
            let x = pool_nhwc(conv(
                conv(x.permute([0, 2, 3, 1]).contiguous(), &c[0]),
                &c[1],
            ));
            let x = pool_nhwc(conv(conv(x, &c[2]), &c[3]));
            head(x.permute([0, 3, 1, 2]))
        }
        other => panic!("unknown variant {other}"),
    }
}

fn main() {
    // Train as the worker does (worker::malloc): it may restart the process.
    worker::malloc::tune();
    let a = Args::parse();
    worker::device::set_threads(a.threads);
    tch::manual_seed(55);
    let vs = nn::VarStore::new(Device::Cpu);
    let h = proto::Hyperparams {
        arch: proto::Arch::Cnn,
        hidden: a.hidden as u32,
        ..Default::default()
    };
    let (p, net) = if a.variant == "worker" {
        (None, Some(worker::model::Net::new(&vs.root(), &h)))
    } else {
        (Some(params(&vs.root(), a.hidden)), None)
    };
    // TinyVGG has no dropout: training and evaluation run the same forward.
    let fwd = |x: &Tensor| match (&p, &net) {
        (Some(p), _) => forward(&a.variant, p, x),
        (_, Some(net)) => net.forward(x, None),
        _ => unreachable!(),
    };
    let mut opt = Sgd::new(&vs, 0.1, 0.0, 0.0);
    // Distinct batches in turn: one batch trained over and over is learnt by heart, and the
    // tiny gradients that follow (denormal floats) time something else than training.
    let xs = Tensor::randn([BATCHES, 64, 1, 28, 28], (Kind::Float, Device::Cpu));
    let ys = Tensor::randint(10, [BATCHES, 64], (Kind::Int64, Device::Cpu));
    let x = xs.get(0);
    // The variant computes the notebook's function: its first logits against libtorch's
    // NCHW `conv2d` on the same weights.
    let forward_diff = p.as_ref().map_or(0.0, |p| {
        tch::no_grad(|| {
            (fwd(&x) - forward("nchw", p, &x))
                .abs()
                .max()
                .double_value(&[])
        })
    });
    let mut i = 0;
    let mut step = || {
        i += 1;
        let (x, y) = (xs.get(i % BATCHES), ys.get(i % BATCHES));
        let loss = fwd(&x).cross_entropy_for_logits(&y);
        opt.backward_step(&loss).unwrap();
        loss.double_value(&[])
    };
    for _ in 0..a.warmup {
        step();
    }
    let t = Instant::now();
    let mut last = 0.0;
    for _ in 0..a.steps {
        last = step();
    }
    let train = t.elapsed().as_secs_f64() / a.steps as f64 * 938.0;
    let xe = Tensor::randn([1000, 1, 28, 28], (Kind::Float, Device::Cpu));
    let t = Instant::now();
    tch::no_grad(|| {
        for _ in 0..10 {
            let _ = fwd(&xe).argmax(-1, false).sum(Kind::Int64).int64_value(&[]);
        }
    });
    let eval = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("tch {}", a.variant), "threads": a.threads,
            "train_s": train, "eval_s": eval, "loss": last, "forward_diff": forward_diff,
        })
    );
}
