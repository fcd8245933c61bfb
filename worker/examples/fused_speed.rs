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
    /// `both` (the default), or `solo` / `fused` alone (e.g. to compare solo runs on other
    /// thread counts).
    #[arg(long, default_value = "both")]
    mode: String,
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
                    "lrs": trials.iter().map(|h| h.lr).collect::<Vec<_>>(),
                    "val_acc_epoch1": first.iter().map(|m| m.val_acc).collect::<Vec<_>>(),
                })
            );
        }
    }
    Ok(())
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
