//! TPE, the Tree-structured Parzen Estimator (Bergstra et al. 2011), as Optuna's `TPESampler`
//! applies it with independent sampling (`multivariate=False`), its other settings at their
//! defaults: 10 random startup trials, `gamma(n) = min(ceil(0.1 n), 25)`, prior weight 1,
//! the magic clip on, endpoints off, `default_weights`, 24 expected-improvement candidates.
//!
//! Written by hand, after Optuna 5.0's `samplers/_tpe/sampler.py` and `parzen_estimator.py`:
//! no Rust crate implements TPE. For each parameter the finished trials are split into the
//! `gamma(n)` best ("below") and the rest ("above"); a Parzen estimator is fitted to each
//! group's values of the parameter; 24 candidates are drawn from the "below" estimator and the
//! one with the largest `ln l(x) - ln g(x)` is suggested.
//!
//! A suggestion depends only on the finished trials given to it (pending ones are ignored, as
//! Optuna does without `constant_liar`), the seed, the experiment's name and the suggestion's
//! index, so the coordinator can suggest whenever a worker is free, and a suggestion made again
//! from the same records is the same. Where this differs from Optuna:
//! - the random numbers (ChaCha20 per suggestion rather than one numpy stream per study);
//! - Optuna 5.0's `TPESampler()` defaults to `multivariate=True` and `constant_liar=True` for a
//!   single objective; the sweep format asks for the independent sampler, which is this one;
//! - a suggestion that repeats an existing trial is drawn again (TPE's draw a few times, then
//!   random draws, see [`crate::random::fresh`]), because a sweep's trials must be distinct;
//! - a sample is clamped into its bounds (Newton's method may overshoot by an ulp).

use crate::parzen::Parzen;
use crate::random::{draw_config, fresh};
use crate::rng::{generator, Draws, Purpose};
use crate::space::{Config, Distribution, Space, Value};
use crate::{Mode, Result};

/// How many times a suggestion that repeats an existing trial is drawn again from the Parzen
/// estimators before random draws take over (in a small discrete space TPE keeps choosing the
/// same favourite).
const TPE_REDRAWS: u32 = 10;

/// TPE's settings; [`Default`] is Optuna's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TpeConfig {
    /// Finished trials needed before TPE is used; until then suggestions are random draws.
    pub n_startup_trials: usize,
    /// Candidates drawn from the "below" estimator per parameter.
    pub n_ei_candidates: usize,
    /// Weight of the prior kernel against each observation's.
    pub prior_weight: f64,
}

impl Default for TpeConfig {
    fn default() -> Self {
        TpeConfig {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
        }
    }
}

/// A finished trial as TPE sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub config: Config,
    /// A completed trial's objective (the coordinator's choice, e.g. its best epoch's metric);
    /// for a stopped trial, its metric at the last epoch it reported. NaN observations are
    /// ignored (Optuna fails a trial whose objective is NaN).
    pub value: f64,
    /// `Some(epoch)` for a trial stopped early (Optuna's `PRUNED`), with the last epoch it
    /// reported; such trials fill the "below" group only after every completed trial, the ones
    /// that got further first.
    pub stopped_at: Option<u32>,
}

/// The `gamma(n)` of Optuna's single-objective TPE: how many of `n` finished trials are "below".
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// The TPE sampler of one experiment.
#[derive(Debug, Clone)]
pub struct Tpe {
    space: Space,
    mode: Mode,
    seed: u64,
    experiment: String,
    config: TpeConfig,
}

impl Tpe {
    pub fn new(space: Space, mode: Mode, seed: u64, experiment: &str) -> Self {
        Tpe::with_config(space, mode, seed, experiment, TpeConfig::default())
    }

    pub fn with_config(
        space: Space,
        mode: Mode,
        seed: u64,
        experiment: &str,
        config: TpeConfig,
    ) -> Self {
        Tpe {
            space,
            mode,
            seed,
            experiment: experiment.to_string(),
            config,
        }
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The experiment's suggestion number `index` (0 for its first trial, then 1, ...), from the
    /// finished trials in `observations`, listed in the order their trials were suggested (the
    /// weights favour recent ones). `exists` is asked about each candidate and must answer
    /// `true` for a configuration that is already a trial (see [`crate::random::fresh`]).
    pub fn suggest(
        &self,
        index: u64,
        observations: &[Observation],
        exists: impl FnMut(&Config) -> bool,
    ) -> Result<Config> {
        let mut draws = generator(self.seed, &self.experiment, Purpose::Tpe, index);
        let usable: Vec<&Observation> = observations
            .iter()
            .filter(|o| !o.value.is_nan() && self.space.contains(&o.config))
            .collect();
        if usable.len() < self.config.n_startup_trials {
            let space = &self.space;
            return fresh(space, &mut draws, exists, |d, _| draw_config(space, d));
        }
        let (below, above) = split(&usable, gamma(usable.len()), self.mode);
        let estimators: Vec<(Parzen, Parzen)> = (0..self.space.params().len())
            .map(|i| {
                let dist = &self.space.params()[i].distribution;
                let values = |group: &[&Observation]| -> Vec<f64> {
                    group.iter().map(|o| o.config[i].as_f64()).collect()
                };
                let w = self.config.prior_weight;
                (
                    Parzen::new(dist, &values(&below), w),
                    Parzen::new(dist, &values(&above), w),
                )
            })
            .collect();
        let space = &self.space;
        fresh(space, &mut draws, exists, |d, attempt| {
            if attempt < TPE_REDRAWS {
                self.sample(&estimators, d)
            } else {
                draw_config(space, d)
            }
        })
    }

    /// One value per parameter: the candidate of the "below" estimator with the largest
    /// `ln l(x) - ln g(x)` (the first on ties; a NaN ratio counts as largest, as in numpy's argmax).
    fn sample(&self, estimators: &[(Parzen, Parzen)], draws: &mut Draws) -> Config {
        self.space
            .params()
            .iter()
            .zip(estimators)
            .map(|(p, (below, above))| {
                let candidates = below.sample(draws, self.config.n_ei_candidates.max(1));
                let scores = candidates
                    .iter()
                    .map(|&x| below.log_pdf(x) - above.log_pdf(x));
                let x = candidates[argmax(scores)];
                match p.distribution {
                    Distribution::Uniform { .. } | Distribution::LogUniform { .. } => {
                        Value::Float(x)
                    }
                    Distribution::Int { .. } => Value::Int(x as i64),
                    Distribution::Choice { .. } => Value::Choice(x as usize),
                }
            })
            .collect()
    }
}

/// numpy's `argmax`: the first largest value, or the first NaN if there is one.
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (k, v) in values.enumerate() {
        if v.is_nan() {
            return k;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((k, v));
        }
    }
    best.map_or(0, |(k, _)| k)
}

/// Optuna's `_split_trials` for one objective: the `n_below` best completed trials, topped up
/// with the stopped trials that got furthest (best metric first among equals), are "below";
/// both groups are returned in the order of `observations`.
fn split<'a>(
    observations: &[&'a Observation],
    n_below: usize,
    mode: Mode,
) -> (Vec<&'a Observation>, Vec<&'a Observation>) {
    let mut complete: Vec<usize> = (0..observations.len())
        .filter(|&i| observations[i].stopped_at.is_none())
        .collect();
    let mut stopped: Vec<usize> = (0..observations.len())
        .filter(|&i| observations[i].stopped_at.is_some())
        .collect();
    // Stable sorts, best first, as Python's `sorted` (with `reverse=True` for max).
    complete.sort_by(|&i, &j| {
        let (a, b) = (mode.signed(observations[i].value), mode.signed(observations[j].value));
        b.total_cmp(&a)
    });
    stopped.sort_by(|&i, &j| {
        let key = |k: usize| {
            let o = observations[k];
            (std::cmp::Reverse(o.stopped_at), -mode.signed(o.value))
        };
        let ((ei, vi), (ej, vj)) = (key(i), key(j));
        ei.cmp(&ej).then(vi.total_cmp(&vj))
    });
    let from_complete = n_below.min(complete.len());
    let from_stopped = (n_below - from_complete).min(stopped.len());
    let mut is_below = vec![false; observations.len()];
    for &i in complete[..from_complete].iter().chain(&stopped[..from_stopped]) {
        is_below[i] = true;
    }
    let (mut below, mut above) = (Vec::new(), Vec::new());
    for (&o, b) in observations.iter().zip(is_below) {
        if b {
            below.push(o);
        } else {
            above.push(o);
        }
    }
    (below, above)
}
