//! The valid plan expanded into trials: each experiment's grid, row-major (the first axis
//! varies slowest), a configuration produced twice kept once.

use super::context::{At, Ctx};
use super::experiment::Experiment;
use super::{Result, Sweep, TrialSpec};
use proto::{Hyperparams, TrialId};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// A validated sweep, not yet expanded.
pub(super) struct Plan {
    pub name: String,
    pub experiments: Vec<Experiment>,
    pub total: usize,
}

impl Plan {
    pub(super) fn expand(self, ctx: &Ctx<'_>) -> Result<Sweep> {
        let mut out = Trials {
            trials: Vec::with_capacity(self.total),
            seen: HashMap::with_capacity(self.total),
            duplicates_dropped: 0,
        };
        for exp in &self.experiments {
            let mut idx = vec![0usize; exp.axes.len()];
            loop {
                let mut h = exp.hparams.clone();
                for (axis, &i) in exp.axes.iter().zip(&idx) {
                    for s in &axis[i] {
                        s.apply(&mut h);
                    }
                }
                // Each value was checked alone; `validate` looks at each field alone, so this
                // holds, but a future cross-field rule would surface here rather than in training.
                h.validate().map_err(|e| {
                    ctx.error(&exp.key, At::Key, format!("experiment {:?}: {e}", exp.name))
                })?;
                // ffv0-ffv2 have no dropout layer: a dropout axis over them would otherwise
                // give identical runs under different ids.
                out.add(ctx, exp, h.normalized())?;
                if !next(&mut idx, &exp.axes) {
                    break;
                }
            }
        }
        Ok(Sweep {
            name: self.name,
            source: ctx.path.to_path_buf(),
            trials: out.trials,
            duplicates_dropped: out.duplicates_dropped,
        })
    }
}

/// The next grid position, row-major (the last axis varies fastest); false after the last.
fn next<T>(idx: &mut [usize], axes: &[Vec<T>]) -> bool {
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
