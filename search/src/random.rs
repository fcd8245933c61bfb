//! Random search: every parameter drawn independently from its distribution, as Optuna's
//! `RandomSampler` draws them, and the redraw loop that keeps configurations distinct (shared
//! with TPE).

use crate::rng::{generator, Draws, Purpose};
use crate::space::{Config, Distribution, Space, Value};
use crate::{Error, Result};

/// Draws per suggestion before a finite space is scanned instead (or, for a continuous space,
/// before giving up: a continuous draw repeats an existing one with probability zero, so
/// reaching this bound means the caller's `exists` says yes to everything).
pub const MAX_DRAWS: u32 = 1000;

/// Configurations of a finite space scanned, after [`MAX_DRAWS`] draws all existed, before
/// giving up.
pub const MAX_SCAN: u128 = 1 << 22;

/// One value of `dist`, drawn as Optuna's `RandomSampler` draws it: floats uniform in
/// `[lo, hi)` (in the logarithm for `LogUniform`); integers uniform over `[lo - 0.5, hi + 0.5)`
/// (in the logarithm when `log`) and then rounded, so each integer gets its share of the
/// widened interval; a choice uniform over its options.
pub(crate) fn draw_value(dist: &Distribution, draws: &mut Draws) -> Value {
    match *dist {
        Distribution::Uniform { lo, hi } => {
            Value::Float(draws.uniform_in(lo, hi).clamp(lo, hi.next_down()))
        }
        Distribution::LogUniform { lo, hi } => {
            let x = draws.uniform_in(lo.ln(), hi.ln()).exp();
            Value::Float(x.clamp(lo, hi.next_down()))
        }
        Distribution::Int { lo, hi, log: false } => {
            let (l, h) = (lo as f64, hi as f64);
            let x = draws.uniform_in(l - 0.5, h + 0.5);
            Value::Int(((x - l + 0.5).floor() + l).clamp(l, h) as i64)
        }
        Distribution::Int { lo, hi, log: true } => {
            let (l, h) = (lo as f64, hi as f64);
            let x = draws.uniform_in((l - 0.5).ln(), (h + 0.5).ln()).exp();
            Value::Int(x.round_ties_even().clamp(l, h) as i64)
        }
        Distribution::Choice { n } => Value::Choice(draws.index(n as u128) as usize),
    }
}

/// A configuration of `space` drawn parameter by parameter, in the space's order.
pub(crate) fn draw_config(space: &Space, draws: &mut Draws) -> Config {
    space
        .params()
        .iter()
        .map(|p| draw_value(&p.distribution, draws))
        .collect()
}

/// The first configuration from `draw` that `exists` refuses, trying [`MAX_DRAWS`] times;
/// then, in a finite space, the first one `exists` refuses scanning the configurations in
/// index order from a random index (at most [`MAX_SCAN`] of them), which finds the last few
/// free configurations that draws would take long to hit.
///
/// `exists` is asked once per candidate, and answering `false` accepts that candidate: a
/// closure that inserts into a set and answers "was it there already" keeps its own record.
pub(crate) fn fresh(
    space: &Space,
    draws: &mut Draws,
    mut exists: impl FnMut(&Config) -> bool,
    mut draw: impl FnMut(&mut Draws, u32) -> Config,
) -> Result<Config> {
    for attempt in 0..MAX_DRAWS {
        let config = draw(draws, attempt);
        if !exists(&config) {
            return Ok(config);
        }
    }
    let mut scanned = 0;
    if let Some(total) = space.configurations() {
        let start = draws.index(total);
        while scanned < total.min(MAX_SCAN) {
            let index = (start + scanned) % total;
            scanned += 1;
            let config = space
                .config_at(index)
                .expect("an index below the count names a configuration");
            if !exists(&config) {
                return Ok(config);
            }
        }
    }
    Err(Error::Exhausted {
        draws: MAX_DRAWS,
        scanned,
    })
}

/// Random search over one experiment's space: the draws are a function of the sweep's seed
/// and the experiment's name alone, so the same file gives the same trials in the same order.
#[derive(Debug, Clone)]
pub struct RandomSearch {
    space: Space,
    draws: Draws,
}

impl RandomSearch {
    pub fn new(space: Space, seed: u64, experiment: &str) -> Self {
        RandomSearch {
            space,
            draws: generator(seed, experiment, Purpose::Random, 0),
        }
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The next configuration that `exists` refuses (see [`fresh`] for the contract of
    /// `exists` and the bound).
    pub fn next(&mut self, exists: impl FnMut(&Config) -> bool) -> Result<Config> {
        let space = &self.space;
        fresh(space, &mut self.draws, exists, |d, _| draw_config(space, d))
    }

    /// The experiment's `trials` configurations, in order: refused up front when the space is
    /// finite and too small, and an error if `exists` refuses too many draws on the way.
    pub fn draw_all(
        space: Space,
        seed: u64,
        experiment: &str,
        trials: u64,
        mut exists: impl FnMut(&Config) -> bool,
    ) -> Result<Vec<Config>> {
        space.check_capacity(trials)?;
        let mut search = RandomSearch::new(space, seed, experiment);
        (0..trials).map(|_| search.next(&mut exists)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Param;
    use std::collections::HashSet;

    fn lab_space() -> Space {
        Space::new(vec![
            Param::new("lr", Distribution::LogUniform { lo: 1e-3, hi: 1.0 }),
            Param::new(
                "hidden",
                Distribution::Int {
                    lo: 16,
                    hi: 256,
                    log: true,
                },
            ),
            Param::new("dropout", Distribution::Uniform { lo: 0.0, hi: 0.5 }),
            Param::new(
                "batch",
                Distribution::Int {
                    lo: 1,
                    hi: 3,
                    log: false,
                },
            ),
            Param::new("arch", Distribution::Choice { n: 3 }),
        ])
        .unwrap()
    }

    fn distinct(seen: &mut HashSet<String>) -> impl FnMut(&Config) -> bool + '_ {
        |c| !seen.insert(format!("{c:?}"))
    }

    #[test]
    fn draws_stay_in_range_and_cover_it() {
        let space = lab_space();
        let mut seen = HashSet::new();
        let all =
            RandomSearch::draw_all(space.clone(), 7, "exp", 2000, distinct(&mut seen)).unwrap();
        assert!(all.iter().all(|c| space.contains(c)));
        let column = |i: usize| all.iter().map(move |c| c[i].as_f64());
        // Log-uniform: about a third of the draws in each decade of [0.001, 1).
        let low_decade = column(0).filter(|&x| x < 0.01).count();
        assert!((550..800).contains(&low_decade), "{low_decade}");
        // Every integer and option drawn, the ends included (the log-int's upper values are
        // each ~0.2% likely, so only its lowest and a top range are checked).
        let hidden: Vec<f64> = column(1).collect();
        assert!(hidden.contains(&16.0) && hidden.iter().any(|&h| h >= 250.0));
        for (i, values) in [(3, 1..=3), (4, 0..=2)] {
            let got: HashSet<i64> = column(i).map(|x| x as i64).collect();
            for v in values {
                assert!(got.contains(&v), "parameter {i} never drew {v}");
            }
        }
        // The integer ends get half-width intervals' worth of mass, as in Optuna: batch 1 and 3
        // each take 1/3 of [0.5, 3.5), not 1/4.
        let ones = column(3).filter(|&x| x == 1.0).count();
        assert!((580..760).contains(&ones), "{ones}");
        // The log-int: [16, 32) is a fourth of the log range [15.5, 256.5): ~500 draws.
        let small = column(1).filter(|&x| x < 32.0).count();
        assert!((420..600).contains(&small), "{small}");
    }

    #[test]
    fn same_seed_and_experiment_same_trials_in_the_same_order() {
        let draw = |seed, name: &str| {
            let mut seen = HashSet::new();
            RandomSearch::draw_all(lab_space(), seed, name, 20, distinct(&mut seen)).unwrap()
        };
        let a = draw(1, "random");
        assert_eq!(a, draw(1, "random"));
        assert_ne!(a, draw(2, "random"));
        assert_ne!(a, draw(1, "random2"));
    }

    #[test]
    fn repeats_are_drawn_again_until_the_space_is_used_up() {
        // 3 × 3 = 9 configurations: all nine come out distinct, a tenth is refused up front,
        // and a tenth asked of a running search is an error after the bound.
        let space = Space::new(vec![
            Param::new("a", Distribution::Choice { n: 3 }),
            Param::new(
                "b",
                Distribution::Int {
                    lo: 0,
                    hi: 2,
                    log: false,
                },
            ),
        ])
        .unwrap();
        let mut seen = HashSet::new();
        let nine = RandomSearch::draw_all(space.clone(), 3, "e", 9, distinct(&mut seen)).unwrap();
        assert_eq!(seen.len(), 9);
        assert!(nine.iter().all(|c| space.contains(c)));
        let err = RandomSearch::draw_all(space.clone(), 3, "e", 10, |_| false).unwrap_err();
        assert!(matches!(
            err,
            Error::TooFewConfigurations {
                available: 9,
                wanted: 10
            }
        ));
        let mut search = RandomSearch::new(space, 3, "e");
        let mut asked = 0;
        let err = search
            .next(|_| {
                asked += 1;
                true
            })
            .unwrap_err();
        assert_eq!(
            err,
            Error::Exhausted {
                draws: MAX_DRAWS,
                scanned: 9
            }
        );
        assert_eq!(asked, MAX_DRAWS as usize + 9);
    }

    #[test]
    fn the_last_free_configuration_is_found_by_the_scan() {
        // 10,000 configurations of which one is free: draws would need ~10,000 tries.
        let space = Space::new(vec![Param::new(
            "k",
            Distribution::Int {
                lo: 0,
                hi: 9_999,
                log: false,
            },
        )])
        .unwrap();
        let mut search = RandomSearch::new(space, 1, "e");
        let got = search.next(|c| c[0] != Value::Int(4321)).unwrap();
        assert_eq!(got, vec![Value::Int(4321)]);
    }
}
