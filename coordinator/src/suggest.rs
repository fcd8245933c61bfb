//! Suggesting trials while the sweep runs (issue 12): the [`Suggester`] the scheduler asks
//! for the next trial of a tpe experiment when a worker is free and nothing is queued, and
//! [`TpeSuggester`], the one a sweep file's tpe experiments get (the search crate's TPE over
//! the experiment's space, seeded by the sweep's seed and the experiment's name).
//!
//! A suggestion is plain computation: no clock, no I/O, and its randomness a function of
//! (seed, experiment, index) alone. The scheduler calls it under its lock and the service
//! stores the suggestion in `state.redb` before the lease carrying it is answered, so a
//! restarted coordinator finds every suggestion it made and draws the next index, never one
//! again.

use crate::sweep::{SearchKind, SearchSpace, Sweep};
use proto::{Hyperparams, TrialId};
use search::{Observation, Tpe};
use std::collections::HashMap;

/// One suggested trial: what `state.redb` keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggested {
    pub experiment: String,
    /// 0 for the experiment's first suggestion, then 1, 2, ...
    pub index: u64,
    pub hparams: Hyperparams,
    /// The configuration drawn, one number per parameter of the space
    /// ([`SearchSpace::to_numbers`]): what TPE reads back once the trial has a result.
    pub config: Vec<f64>,
}

/// A trial of the experiment with a result, as a suggester sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub config: Vec<f64>,
    /// The experiment's metric at its best epoch (finished) or where it stopped (NaN when
    /// that epoch has no value: TPE leaves it out).
    pub value: f64,
    /// The epoch a stopping rule ended it at.
    pub stopped_at: Option<u32>,
}

/// What the scheduler asks for a new trial.
pub trait Suggester: Send + std::fmt::Debug {
    /// Suggestion `index` of `experiment`, from its trials with a result (`finished`, in the
    /// order they were suggested); `exists` says whether a trial id is taken (by any
    /// experiment): such a configuration is drawn again.
    fn suggest(
        &self,
        experiment: &str,
        index: u64,
        finished: &[Finished],
        exists: &mut dyn FnMut(&TrialId) -> bool,
    ) -> Result<Suggested, String>;
}

/// TPE for every tpe experiment of a sweep.
#[derive(Debug)]
pub struct TpeSuggester {
    experiments: HashMap<String, (Tpe, SearchSpace)>,
}

impl TpeSuggester {
    /// The suggester of `sweep`'s tpe experiments, `None` when it has none.
    pub fn of(sweep: &Sweep) -> Option<TpeSuggester> {
        let experiments: HashMap<String, (Tpe, SearchSpace)> = sweep
            .experiments
            .iter()
            .filter(|e| e.search == SearchKind::Tpe)
            .filter_map(|e| {
                let space = e.space.clone()?;
                let tpe = Tpe::new(space.space().clone(), e.goal.mode, sweep.seed, &e.name);
                Some((e.name.clone(), (tpe, space)))
            })
            .collect();
        (!experiments.is_empty()).then_some(TpeSuggester { experiments })
    }
}

impl Suggester for TpeSuggester {
    fn suggest(
        &self,
        experiment: &str,
        index: u64,
        finished: &[Finished],
        exists: &mut dyn FnMut(&TrialId) -> bool,
    ) -> Result<Suggested, String> {
        let (tpe, space) = self
            .experiments
            .get(experiment)
            .ok_or_else(|| format!("experiment {experiment:?} has no tpe search"))?;
        let observations: Vec<Observation> = finished
            .iter()
            .filter_map(|f| {
                Some(Observation {
                    config: space.from_numbers(&f.config)?,
                    value: f.value,
                    stopped_at: f.stopped_at,
                })
            })
            .collect();
        let mut chosen = None;
        let config = tpe
            .suggest(index, &observations, |config| match space.hparams(config) {
                Ok(h) if !exists(&h.trial_id()) => {
                    chosen = Some(h);
                    false
                }
                _ => true,
            })
            .map_err(|e| e.to_string())?;
        Ok(Suggested {
            experiment: experiment.to_owned(),
            index,
            hparams: chosen.expect("an accepted suggestion has hyperparameters"),
            config: SearchSpace::to_numbers(&config),
        })
    }
}
