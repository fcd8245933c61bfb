//! The valid plan expanded into trials, experiment by experiment: a grid row-major (the
//! first axis varies slowest), a random search drawn from its space (seeded by the sweep's
//! seed and the experiment's name), a tpe search only checked (its trials are suggested while
//! the sweep runs). A configuration produced twice is kept once, by the first experiment that
//! produced it; a random draw that repeats one is drawn again.

use super::context::{At, Ctx};
use super::experiment::{AxisKind, Experiment};
use super::params::Setting;
use super::search::SearchKind;
use super::space::SearchSpace;
use super::{ExperimentPlan, Result, Shared, Sweep, TrialSpec};
use proto::{Hyperparams, TrialId};
use search::RandomSearch;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// A validated sweep, not yet expanded.
pub(super) struct Plan {
    pub name: String,
    /// The sweep's base seed: trials' seed unless they set their own, and the seed of every
    /// experiment's search.
    pub seed: u64,
    /// `[defaults]`' `fuse` (true unless set): an experiment's own `fuse` wins.
    pub fuse: bool,
    pub experiments: Vec<Experiment>,
    pub total: usize,
}

impl Plan {
    pub(super) fn expand(self, ctx: &Ctx<'_>) -> Result<Sweep> {
        let mut out = Trials {
            trials: Vec::with_capacity(self.total),
            seen: HashMap::with_capacity(self.total),
            duplicates_dropped: 0,
            shared: Vec::new(),
        };
        let mut plans = Vec::with_capacity(self.experiments.len());
        for exp in &self.experiments {
            let space = match exp.settings.kind {
                SearchKind::Grid => {
                    expand_grid(ctx, exp, &mut out)?;
                    None
                }
                SearchKind::Random | SearchKind::Tpe => Some(self.searched(ctx, exp, &mut out)?),
            };
            plans.push(ExperimentPlan {
                name: exp.name.clone(),
                search: exp.settings.kind,
                trials: exp.trial_count().unwrap_or(0) as u64,
                goal: exp.settings.goal,
                stop: exp.settings.stop,
                epochs: exp.fixed_epochs(),
                space,
                fuse: exp.settings.fuse.unwrap_or(self.fuse),
            });
        }
        Ok(Sweep {
            name: self.name,
            source: ctx.path.to_path_buf(),
            seed: self.seed,
            trials: out.trials,
            experiments: plans,
            duplicates_dropped: out.duplicates_dropped,
            shared: out.shared,
        })
    }

    /// The space of a random or tpe experiment, checked to hold its `trials`; a random
    /// experiment's trials drawn.
    fn searched(&self, ctx: &Ctx<'_>, exp: &Experiment, out: &mut Trials) -> Result<SearchSpace> {
        let refuse = |e: search::Error| {
            ctx.error(&exp.key, At::Key, format!("experiment {:?}: {e}", exp.name))
        };
        let space = SearchSpace::of(exp).map_err(refuse)?;
        let trials = exp.settings.trials.unwrap_or(0);
        space.space().check_capacity(trials).map_err(refuse)?;
        if exp.settings.kind == SearchKind::Random {
            let mut draws = RandomSearch::new(space.space().clone(), self.seed, &exp.name);
            for _ in 0..trials {
                let mut fresh = None;
                draws
                    .next(|config| match space.hparams(config) {
                        Ok(h) if !out.seen.contains_key(&h.trial_id()) => {
                            fresh = Some(h);
                            false
                        }
                        _ => true,
                    })
                    .map_err(refuse)?;
                out.add(
                    ctx,
                    exp,
                    fresh.expect("an accepted draw has hyperparameters"),
                )?;
            }
        }
        Ok(space)
    }
}

/// Adds every combination of a grid experiment's axes, row-major.
fn expand_grid(ctx: &Ctx<'_>, exp: &Experiment, out: &mut Trials) -> Result<()> {
    let axes: Vec<&[Vec<Setting>]> = exp
        .axes
        .iter()
        .filter_map(|a| match &a.kind {
            AxisKind::Entries(e) => Some(e.as_slice()),
            _ => None,
        })
        .collect();
    let mut idx = vec![0usize; axes.len()];
    loop {
        let mut h = exp.hparams.clone();
        for (axis, &i) in axes.iter().zip(&idx) {
            for s in &axis[i] {
                s.apply(&mut h);
            }
        }
        // Each value was checked alone; `validate` looks at each field alone, so this
        // holds, but a future cross-field rule would surface here rather than in training.
        h.validate()
            .map_err(|e| ctx.error(&exp.key, At::Key, format!("experiment {:?}: {e}", exp.name)))?;
        // ffv0-ffv2 have no dropout layer: a dropout axis over them would otherwise
        // give identical runs under different ids.
        out.add(ctx, exp, h.normalized())?;
        if !next(&mut idx, &axes) {
            return Ok(());
        }
    }
}

/// The next grid position, row-major (the last axis varies fastest); false after the last.
fn next<T>(idx: &mut [usize], axes: &[&[T]]) -> bool {
    for k in (0..idx.len()).rev() {
        idx[k] += 1;
        if idx[k] < axes[k].len() {
            return true;
        }
        idx[k] = 0;
    }
    false
}

/// The trials so far, by id.
struct Trials {
    trials: Vec<TrialSpec>,
    seen: HashMap<TrialId, usize>,
    duplicates_dropped: usize,
    shared: Vec<Shared>,
}

impl Trials {
    /// Adds `h` unless an earlier experiment (or entry) produced it already; two different
    /// configurations with one id (a hash collision) are an error.
    fn add(&mut self, ctx: &Ctx<'_>, exp: &Experiment, h: Hyperparams) -> Result<()> {
        match self.seen.entry(h.trial_id()) {
            Entry::Occupied(first) => {
                let first = &self.trials[*first.get()];
                if first.hparams != h {
                    return Err(ctx.error(
                        &exp.key,
                        At::Key,
                        format!(
                            "experiment {:?}: trial id {} is shared by two different \
                             configurations ({} and {}); change one of them",
                            exp.name,
                            first.id,
                            first.hparams.canonical(),
                            h.canonical()
                        ),
                    ));
                }
                if first.experiment != exp.name {
                    self.shared.push(Shared {
                        trial: first.id.clone(),
                        experiment: exp.name.clone(),
                        follows: first.experiment.clone(),
                    });
                }
                self.duplicates_dropped += 1;
            }
            Entry::Vacant(v) => {
                v.insert(self.trials.len());
                self.trials.push(TrialSpec::new(exp.name.clone(), h));
            }
        }
        Ok(())
    }
}
