//! Regret of our random search and TPE on the synthetic objective, the setup of issue 12:
//! ffv3; lr log-uniform 0.001–1, hidden int 16–256 (log), dropout uniform 0–0.5; 40 trials of
//! 1 epoch, one after another; seeds 1–10. Regret = 0.45 (the best val_acc after one epoch,
//! see `search::synthetic`) minus the best val_acc found. `benches/search_regret.py` runs
//! Optuna's samplers on the same function.
//!
//!     cargo run -p search --release --example regret [-- --seeds 1-10 --trials 40]

use search::{
    synthetic, Config, Distribution, Mode, Observation, Param, RandomSearch, Space, Tpe, TpeConfig,
};
use std::collections::HashSet;
use std::process::ExitCode;

fn space() -> Space {
    Space::new(vec![
        Param::new("lr", Distribution::LogUniform { lo: 0.001, hi: 1.0 }),
        Param::new(
            "hidden",
            Distribution::Int {
                lo: 16,
                hi: 256,
                log: true,
            },
        ),
        Param::new("dropout", Distribution::Uniform { lo: 0.0, hi: 0.5 }),
    ])
    .expect("the benchmark's space is valid")
}

fn val_acc(c: &Config) -> f64 {
    synthetic::val_acc(c[0].as_f64(), c[1].as_f64(), c[2].as_f64(), 1)
}

/// The best val_acc of `trials` sequential trials (each suggestion sees every earlier result).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Random,
    Tpe,
    TpeMultivariate,
}

fn best(method: Method, seed: u64, trials: u64) -> Result<f64, search::Error> {
    let mut seen = HashSet::new();
    let mut exists = |c: &Config| !seen.insert(format!("{c:?}"));
    let config = TpeConfig {
        multivariate: method == Method::TpeMultivariate,
        ..TpeConfig::default()
    };
    let sampler = Tpe::with_config(space(), Mode::Max, seed, "synthetic", config);
    let mut random = RandomSearch::new(space(), seed, "synthetic");
    let mut history: Vec<Observation> = Vec::new();
    for i in 0..trials {
        let config = if method != Method::Random {
            sampler.suggest(i, &history, &mut exists)?
        } else {
            random.next(&mut exists)?
        };
        let value = val_acc(&config);
        history.push(Observation {
            config,
            value,
            stopped_at: None,
        });
    }
    Ok(history.iter().map(|o| o.value).fold(f64::MIN, f64::max))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

struct Args {
    seeds: (u64, u64),
    trials: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: (1, 10),
        trials: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seeds" => {
                let (a, b) = value
                    .split_once('-')
                    .ok_or(format!("--seeds: expected A-B, got {value:?}"))?;
                let n = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|e| format!("--seeds {value}: {e}"))
                };
                args.seeds = (n(a)?, n(b)?);
            }
            "--trials" => {
                args.trials = value
                    .parse()
                    .map_err(|e| format!("--trials {value}: {e}"))?
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag}; expected --seeds A-B, --trials N"
                ))
            }
        }
    }
    if args.seeds.0 > args.seeds.1 || args.trials == 0 {
        return Err("need --seeds A-B with A <= B and --trials N >= 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let optimum = synthetic::best_val_acc(1);
    let (s0, s1) = args.seeds;
    println!(
        "synthetic objective, 1 epoch, {} trials, seeds {s0}-{s1}; regret = {optimum} - best val_acc",
        args.trials
    );
    println!(
        "{:<28} {:>14} {:>12}",
        "method", "median_regret", "mean_regret"
    );
    let mut medians = Vec::new();
    let methods = [
        ("hypersweep random", Method::Random),
        ("hypersweep tpe", Method::Tpe),
        ("hypersweep tpe multivariate", Method::TpeMultivariate),
    ];
    for (name, method) in methods {
        let regrets: Result<Vec<f64>, _> = (s0..=s1)
            .map(|seed| best(method, seed, args.trials).map(|b| optimum - b))
            .collect();
        let regrets = match regrets {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mean = regrets.iter().sum::<f64>() / regrets.len() as f64;
        let m = median(regrets);
        println!("{name:<28} {m:>14.6} {mean:>12.6}");
        medians.push(m);
    }
    println!(
        "median regret over random's: tpe {:.3}, tpe multivariate {:.3}",
        medians[1] / medians[0],
        medians[2] / medians[0]
    );
    ExitCode::SUCCESS
}
