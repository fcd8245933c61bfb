//! Which queued trials lease together as one fused group (issue 13): the grouping rule,
//! plain data, no clock.
//!
//! A group is the head of the queue and the next queued trials of the same class, in queue
//! order, up to the worker's `--max-fuse`. Two trials are of one class when they belong to
//! one experiment that allows fusion (`fuse = false` turns it off), share
//! [`proto::Hyperparams::fuse_key`] (shape, batch size, seed, split, epochs; never the CNN)
//! and stand at the same recorded epoch (a group resumes from one epoch). A trial without a
//! class leases alone, as every trial did before.
//!
//! [`super::Scheduler::lease`] calls it for a worker that registered `max_fuse > 1`; each
//! member gets its own lease (`scheduler/fuse/lease_tests.rs` drives that in virtual time).

use super::Scheduler;
use std::collections::VecDeque;

/// What trials must share to lease as one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseClass {
    /// The experiment's index.
    pub experiment: usize,
    /// [`proto::Hyperparams::fuse_key`].
    pub key: String,
    /// Epochs already recorded.
    pub recorded: u32,
}

/// Takes from `queue` (most urgent first) the head and, when it has a class, up to
/// `max - 1` more queued trials of its class, in queue order; the rest of the queue keeps its
/// order. `class` gives a queued trial's class (`None`: it never fuses). Returns the group
/// (the head first), empty when the queue is.
pub fn take_group(
    queue: &mut VecDeque<usize>,
    class: impl Fn(usize) -> Option<FuseClass>,
    max: usize,
) -> Vec<usize> {
    let Some(head) = queue.pop_front() else {
        return Vec::new();
    };
    let mut group = vec![head];
    let Some(want) = class(head).filter(|_| max > 1) else {
        return group;
    };
    let mut rest = VecDeque::with_capacity(queue.len());
    while let Some(i) = queue.pop_front() {
        if group.len() < max && class(i).as_ref() == Some(&want) {
            group.push(i);
        } else {
            rest.push_back(i);
        }
    }
    *queue = rest;
    group
}

impl Scheduler {
    /// The class trial `i` fuses in, when it may: its experiment allows fusion and its shape
    /// has a [`proto::Hyperparams::fuse_key`] (never the CNN).
    pub(super) fn fuse_class(&self, i: usize) -> Option<FuseClass> {
        let t = &self.trials[i];
        if !self.experiments[t.exp].fuse {
            return None;
        }
        Some(FuseClass {
            experiment: t.exp,
            key: t.hparams.fuse_key()?,
            recorded: t.recorded,
        })
    }
}

#[cfg(test)]
mod lease_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Trials by index: (experiment, key, recorded), or `None` for a trial that never fuses.
    fn classes<'a>(
        spec: &'a [Option<(usize, &'a str, u32)>],
    ) -> impl Fn(usize) -> Option<FuseClass> + 'a {
        move |i| {
            spec[i].map(|(experiment, key, recorded)| FuseClass {
                experiment,
                key: key.to_owned(),
                recorded,
            })
        }
    }

    #[test]
    fn the_head_takes_the_next_trials_of_its_class_up_to_the_bound() {
        let spec = [
            Some((0, "ffv2 h64", 0)),
            Some((0, "ffv2 h32", 0)),
            Some((0, "ffv2 h64", 0)),
            Some((0, "ffv2 h64", 0)),
            Some((0, "ffv2 h64", 0)),
        ];
        let mut queue: VecDeque<usize> = (0..5).collect();
        assert_eq!(take_group(&mut queue, classes(&spec), 3), [0, 2, 3]);
        assert_eq!(queue, [1, 4]);
        assert_eq!(take_group(&mut queue, classes(&spec), 3), [1]);
        assert_eq!(take_group(&mut queue, classes(&spec), 3), [4]);
        assert!(take_group(&mut queue, classes(&spec), 3).is_empty());
    }

    #[test]
    fn experiments_epochs_and_trials_that_never_fuse_stay_apart() {
        let spec = [
            Some((0, "ffv2 h64", 0)),
            Some((1, "ffv2 h64", 0)), // another experiment
            Some((0, "ffv2 h64", 2)), // resumes from epoch 2
            None,                     // a CNN, or fuse = false
            Some((0, "ffv2 h64", 0)),
        ];
        let mut queue: VecDeque<usize> = (0..5).collect();
        assert_eq!(take_group(&mut queue, classes(&spec), 9), [0, 4]);
        assert_eq!(queue, [1, 2, 3]);
        let mut queue: VecDeque<usize> = [3, 0, 4].into();
        assert_eq!(take_group(&mut queue, classes(&spec), 9), [3]);
        // --max-fuse 1: every trial alone, the queue as it was.
        let mut queue: VecDeque<usize> = (0..5).collect();
        assert_eq!(take_group(&mut queue, classes(&spec), 1), [0]);
        assert_eq!(queue, [1, 2, 3, 4]);
    }
}
