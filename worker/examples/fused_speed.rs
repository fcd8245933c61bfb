//! Throughput of fused same-shape trials against the same trials trained solo one after
//! another, side by side in one process on the real Fashion-MNIST (`benches/fused_speed.sh`
//! prints the table; never part of CI).
//!
//! ```text
//! cargo run -p worker --release --example fused_speed -- --k 3 --threads 2 --epochs 2 --rounds 2
//! ```
//!
//! Each round trains the K trials solo (one after another) and then fused (one group), or
//! the other way round in odd rounds, and prints one JSON line per run: `mode`, `k`,
//! `seconds`, `throughput` (trials × epochs per second) and every member's epoch-1
//! validation accuracy. The K trials are `ffv2` h`--hidden` with learning rates spread over
//! `--lrs` (default 0.05, 0.1, 0.2 for K = 3; geometric from 0.02 to 0.2 otherwise: above
//! ~0.3 an `ffv2` h64 epoch is chaotic, and its epoch-1 accuracy moves by 0.1 between two
//! solo runs on 1 and 2 threads, so no comparison of orders of summation means anything).

use clap::Parser;
use proto::{Arch, EpochMetrics, Hyperparams};
use std::time::Instant;
use tch::Device;
use worker::data::Subset;
use worker::fused::Group;
use worker::train::{Epoch, Trial};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    k: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 64)]
    hidden: u32,
    #[arg(long, default_value = "ffv2")]
    arch: String,
    #[arg(long, default_value_t = 2)]
    epochs: u32,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Comma-separated learning rates (K of them).
    #[arg(long)]
    lrs: Option<String>,
    #[arg(long)]
    train_limit: Option<usize>,
    /// The trials' seed (their initial weights, shuffle and dropout masks): other seeds show
    /// how far fused and solo members' epoch-1 accuracies drift apart by chance.
    #[arg(long)]
    seed: Option<u64>,
    /// `both` (the default), or `solo` / `fused` alone (e.g. to compare solo runs on other
    /// thread counts).
    #[arg(long, default_value = "both")]
    mode: String,
    /// Also time the fused epoch's matrix products alone (see [`floor_seconds`]) and print
    /// them as a `floor` line after the rounds.
    #[arg(long)]
    floor: bool,
}

fn lrs(args: &Args) -> anyhow::Result<Vec<f64>> {
    if let Some(text) = &args.lrs {
        return Ok(text.split(',').map(str::parse).collect::<Result<_, _>>()?);
    }
    if args.k == 3 {
        return Ok(vec![0.05, 0.1, 0.2]);
    }
    let (lo, hi) = (0.02f64, 0.2f64);
    let steps = (args.k.max(2) - 1) as f64;
    Ok((0..args.k)
        .map(|i| {
            let lr = lo * (hi / lo).powf(i as f64 / steps);
            (lr * 1000.0).round() / 1000.0
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    // Train as the worker does (worker::malloc): it may restart the process.
    worker::malloc::tune();
    let args = Args::parse();
    worker::device::set_threads(args.threads);
    let data = dataset::load(&dataset::locate(None)?)?;
    let subset = Subset {
        train: args.train_limit,
        test: None,
    };
    let trials: Vec<Hyperparams> = lrs(&args)?
        .into_iter()
        .map(|lr| Hyperparams {
            arch: args.arch.parse().unwrap_or(Arch::Ffv2),
            hidden: args.hidden,
            lr,
            epochs: args.epochs,
            seed: args.seed.unwrap_or(Hyperparams::default().seed),
            ..Default::default()
        })
        .collect();
    for round in 0..args.rounds {
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for fused in order {
            if args.mode != "both" && (args.mode == "fused") != fused {
                continue;
            }
            let started = Instant::now();
            let first = if fused {
                fused_run(&trials, &data, subset)?
            } else {
                solo_runs(&trials, &data, subset)?
            };
            let seconds = started.elapsed().as_secs_f64();
            let work = (trials.len() as u32 * args.epochs) as f64;
            println!(
                "{}",
                serde_json::json!({
                    "mode": if fused { "fused" } else { "solo" },
                    "k": trials.len(),
                    "round": round,
                    "threads": args.threads,
                    "epochs": args.epochs,
                    "seconds": seconds,
                    "throughput": work / seconds,
                    "seed": trials[0].seed,
                    "lrs": trials.iter().map(|h| h.lr).collect::<Vec<_>>(),
                    "val_acc_epoch1": first.iter().map(|m| m.val_acc).collect::<Vec<_>>(),
                })
            );
        }
    }
    if args.floor {
        let n_train = data.train.len() as i64;
        let n_train = args
            .train_limit
            .map_or(n_train, |l| (l as i64).min(n_train));
        // The validation split comes out of the training images, the test set is whole.
        let validation = (n_train as f64 * trials[0].validation).round() as i64;
        let n_eval = validation + data.test.len() as i64;
        let seconds = floor_seconds(&trials[0], args.k as i64, n_train - validation, n_eval);
        println!(
            "{}",
            serde_json::json!({
                "mode": "floor",
                "k": trials.len(),
                "threads": args.threads,
                "epochs": args.epochs,
                "seconds_per_epoch": seconds,
            })
        );
    }
    Ok(())
}

/// Seconds one epoch of a fused group of `k` members of `h`'s shape spends in its matrix
/// products alone: every training step's forward and backward products (the shared first
/// layer as one product, `worker::fused::backprop::wide_linear`, and its weight gradient as
/// one `mm`, the other layers as `bmm`s, as `worker::fused::backprop` runs them) and the
/// evaluation passes' forward products, on `n_train` and `n_eval` images, run back to back
/// on random data with the same threads.
/// No fused trainer can beat it on this machine with libtorch's kernels: K × a solo epoch's
/// time over this is the most fusion could gain, whatever else it saved.
fn floor_seconds(h: &Hyperparams, k: i64, n_train: i64, n_eval: i64) -> f64 {
    use tch::{Kind, Tensor};
    let hidden = i64::from(h.hidden);
    let f = (Kind::Float, Device::Cpu);
    // The layers' widths: 784 → h (→ h) → 10.
    let mut dims = vec![784, hidden];
    if worker::fused::stack::layer_names(h.arch).len() == 3 {
        dims.push(hidden);
    }
    dims.push(10);
    let bs = i64::from(h.batch_size);
    let first_w = Tensor::randn([k * hidden, 784], f);
    let first_b = Tensor::randn([k * hidden], f);
    let rest: Vec<Tensor> = dims[1..]
        .windows(2)
        .map(|w| Tensor::randn([k, w[0], w[1]], f))
        .collect();
    // Inputs and gradients drawn once: only the products are timed.
    let inputs = |n: i64| {
        let grads: Vec<Tensor> = dims[1..]
            .windows(2)
            .map(|w| Tensor::randn([k, n, w[1]], f))
            .collect();
        (
            Tensor::randn([n, 784], f),
            Tensor::randn([k * hidden, n], f),
            grads,
        )
    };
    let products = |(x, first_grad, grads): &(Tensor, Tensor, Vec<Tensor>), train: bool| {
        let n = x.size()[0];
        let first = worker::fused::backprop::wide_linear(x, &first_w, &first_b).expect("shapes");
        if train {
            let _ = first_grad.mm(x);
        }
        let mut act = first.view([n, k, hidden]).transpose(0, 1).contiguous();
        for (w, g) in rest.iter().zip(grads) {
            let out = act.bmm(w);
            if train {
                let _ = g.bmm(&w.transpose(1, 2));
                let _ = act.transpose(1, 2).bmm(g);
            }
            act = out;
        }
    };
    let (train, eval) = (inputs(i64::from(h.batch_size)), inputs(1000));
    let steps = n_train / bs;
    let evals = n_eval / 1000;
    products(&train, true); // warm-up
    let started = Instant::now();
    for _ in 0..steps {
        products(&train, true);
    }
    for _ in 0..evals {
        products(&eval, false);
    }
    started.elapsed().as_secs_f64()
}

/// Trains every trial solo, one after another; each one's epoch-1 metrics.
fn solo_runs(
    trials: &[Hyperparams],
    data: &dataset::FashionMnist,
    subset: Subset,
) -> anyhow::Result<Vec<EpochMetrics>> {
    let mut first = Vec::new();
    for h in trials {
        let mut trial = Trial::new(h, data, subset, Device::Cpu)?;
        let mut out: Vec<EpochMetrics> = Vec::new();
        trial.run(&mut out)?;
        first.push(out[0]);
    }
    Ok(first)
}

/// Trains the trials as one fused group; each member's epoch-1 metrics.
fn fused_run(
    trials: &[Hyperparams],
    data: &dataset::FashionMnist,
    subset: Subset,
) -> anyhow::Result<Vec<EpochMetrics>> {
    let mut group = Group::new(trials, data, subset, Device::Cpu)?;
    let mut first = vec![None; trials.len()];
    let outcomes = group.run(&mut |k: usize, e: &Epoch<'_>| {
        first[k].get_or_insert(e.metrics);
        Ok(())
    })?;
    for (h, o) in trials.iter().zip(outcomes) {
        o.map_err(|e| anyhow::anyhow!("{}: {e}", h.label()))?;
    }
    Ok(first.into_iter().map(|m| m.expect("epoch 1")).collect())
}
