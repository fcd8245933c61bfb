//! The thread plan in virtual time: real scheduler calls (register, lease, report, finish,
//! fail, drop), no clock of its own.

use super::*;
use crate::scheduler::{LeaseOutcome, SchedulerConfig, WorkerInfo};
use crate::trial::TrialSpec;
use chrono::DateTime;
use proto::{Arch, EpochMetrics, Hyperparams};
use std::time::{Duration, Instant};

fn hp(arch: Arch, hidden: u32, epochs: u32, seed: u64) -> Hyperparams {
    Hyperparams {
        arch,
        hidden,
        epochs,
        seed,
        ..Hyperparams::default()
    }
}

/// A CNN of 10 epochs (leased first: longest first) and `short` one-epoch MLPs.
fn sched(short: u64, pin_threads: bool) -> (Scheduler, Instant) {
    let mut trials = vec![TrialSpec::new("exp", hp(Arch::Cnn, 10, 10, 1))];
    trials.extend((0..short).map(|seed| TrialSpec::new("exp", hp(Arch::Ffv0, 32, 1, seed))));
    sched_of(trials, pin_threads)
}

/// `n` `ffv2` h64 trials of `epochs` epochs that differ only in lr: one fuse class.
fn same_shape(n: u32, epochs: u32) -> Vec<TrialSpec> {
    (1..=n)
        .map(|k| {
            let h = Hyperparams {
                lr: 0.05 * f64::from(k),
                ..hp(Arch::Ffv2, 64, epochs, 1)
            };
            TrialSpec::new("exp", h)
        })
        .collect()
}

fn sched_of(trials: Vec<TrialSpec>, pin_threads: bool) -> (Scheduler, Instant) {
    let t0 = Instant::now();
    let config = SchedulerConfig {
        lease_timeout: Duration::from_secs(10),
        max_attempts: 3,
        pin_threads,
    };
    let wall = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    (Scheduler::new(trials, config, t0, wall), t0)
}

/// A CPU worker of one slot on `host`, registered with `threads` and `cores`.
fn worker(s: &mut Scheduler, host: &str, threads: u32, cores: u32, t0: Instant) -> WorkerId {
    let info = WorkerInfo {
        name: format!("{host}:{}", s.workers() + 1),
        device: "cpu".into(),
        slots: 1,
        host: host.into(),
        threads,
        cores,
        ..WorkerInfo::default()
    };
    s.register(info, t0)
}

fn lease(s: &mut Scheduler, w: &WorkerId, now: Instant) -> crate::scheduler::Lease {
    match s.lease(w, now).unwrap() {
        LeaseOutcome::Lease(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// Reports epoch `epoch` of `l`.
fn report(s: &mut Scheduler, w: &WorkerId, l: &crate::scheduler::Lease, epoch: u32, now: Instant) {
    let m = EpochMetrics {
        epoch,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss: 0.4,
        val_acc: 0.8,
        test_loss: 0.4,
        test_acc: 0.8,
        seconds: 1.0,
    };
    s.report_epoch(w, &l.trial_id, l.attempt, m, Some(1), now)
        .unwrap();
}

/// Reports every epoch of `l` and finishes it.
fn finish(s: &mut Scheduler, w: &WorkerId, l: &crate::scheduler::Lease, now: Instant) {
    for epoch in 1..=l.hparams.epochs {
        report(s, w, l, epoch, now);
    }
    s.finish(w, &l.trial_id, l.attempt, now).unwrap();
}

/// A worker as [`worker`] that trains up to 3 trials as one fused group.
fn fusing_worker(s: &mut Scheduler, threads: u32, cores: u32, t0: Instant) -> WorkerId {
    let id = worker(s, "lab", threads, cores, t0);
    s.workers.get_mut(&id).unwrap().info.max_fuse = 3;
    id
}

#[test]
fn idle_cores_go_to_the_running_trial_once_nothing_waits() {
    // lab4 on 2 cores: 2 local workers of 1 thread, the CNN first.
    let (mut s, t0) = sched(2, false);
    let a = worker(&mut s, "lab", 1, 2, t0);
    let b = worker(&mut s, "lab", 1, 2, t0);
    let cnn = lease(&mut s, &a, t0);
    assert_eq!(cnn.hparams.arch, Arch::Cnn);
    assert_eq!(s.planned_threads(&a), Some(1), "one MLP still queued");
    let mlp = lease(&mut s, &b, t0);
    assert_eq!(s.planned_threads(&a), Some(1), "queued, and b is busy");
    finish(&mut s, &b, &mlp, t0);
    // b is idle, but the second MLP waits for it: the cores stay where they are.
    assert_eq!(s.planned_threads(&a), Some(1));
    let last = lease(&mut s, &b, t0);
    assert_eq!(
        s.planned_threads(&a),
        Some(1),
        "nothing queued, but b is busy"
    );
    finish(&mut s, &b, &last, t0);
    assert_eq!(s.lease(&b, t0).unwrap(), LeaseOutcome::Wait);
    assert_eq!(s.planned_threads(&a), Some(2), "b's core goes to the CNN");
    assert_eq!(
        s.planned_threads(&b),
        Some(1),
        "an idle worker keeps its count"
    );
}

#[test]
fn a_queued_trial_gets_its_cores_back_before_anything_else() {
    let (mut s, t0) = sched(1, false);
    let a = worker(&mut s, "lab", 1, 2, t0);
    let b = worker(&mut s, "lab", 1, 2, t0);
    let cnn = lease(&mut s, &a, t0);
    let mlp = lease(&mut s, &b, t0);
    // b's trial fails (a retryable failure, as an OOM kill): it is queued again at once, and
    // b is idle, but the queued trial waits for b's core: a keeps one thread.
    s.fail(&b, &mlp.trial_id, mlp.attempt, "oom", true, t0)
        .unwrap();
    assert_eq!(s.planned_threads(&a), Some(1));
    let again = lease(&mut s, &b, t0);
    finish(&mut s, &b, &again, t0);
    assert_eq!(s.planned_threads(&a), Some(2));
    // A worker whose process exited ends its lease at once: the trial is queued, and a
    // worker that comes back (registers again) gets it on its registered count while a
    // gives the lent core back.
    s.drop_worker(&a, t0 + Duration::from_secs(1));
    let back = worker(&mut s, "lab", 1, 2, t0 + Duration::from_secs(1));
    assert_eq!(s.planned_threads(&back), Some(1), "the CNN is queued");
    let resumed = lease(&mut s, &back, t0 + Duration::from_secs(1));
    assert_eq!(resumed.trial_id, cnn.trial_id);
    // b idle, nothing queued: the resumed CNN gets b's core again.
    assert_eq!(s.planned_threads(&back), Some(2));
}

#[test]
fn pinned_workers_are_untouched_and_their_threads_count_as_used() {
    let (mut s, t0) = sched(2, false);
    let pinned = {
        let id = worker(&mut s, "lab", 1, 3, t0);
        s.workers.get_mut(&id).unwrap().info.threads_pinned = true;
        id
    };
    let a = worker(&mut s, "lab", 1, 3, t0);
    let idle = worker(&mut s, "lab", 1, 3, t0);
    let _cnn = lease(&mut s, &pinned, t0);
    let mlp = lease(&mut s, &a, t0);
    let last = lease(&mut s, &idle, t0);
    finish(&mut s, &idle, &last, t0);
    assert_eq!(
        s.planned_threads(&pinned),
        None,
        "a pinned worker is never changed"
    );
    // 3 cores, the pinned worker uses 1 and a 1: a gets the idle core, not the pinned one's.
    assert_eq!(s.planned_threads(&a), Some(2));
    finish(&mut s, &a, &mlp, t0);
    assert_eq!(s.planned_threads(&pinned), None);

    // `coordinator run --pin-threads`: nobody is planned.
    let (mut s, t0) = sched(0, true);
    let a = worker(&mut s, "lab", 1, 2, t0);
    let _idle = worker(&mut s, "lab", 1, 2, t0);
    lease(&mut s, &a, t0);
    assert_eq!(s.planned_threads(&a), None);
}

#[test]
fn two_hosts_never_share_cores() {
    let (mut s, t0) = sched(0, false);
    let small = worker(&mut s, "small", 1, 1, t0);
    let _big_idle = worker(&mut s, "big", 8, 8, t0);
    lease(&mut s, &small, t0);
    assert_eq!(
        s.planned_threads(&small),
        Some(1),
        "big's 8 idle cores are not small's"
    );
    // One worker alone on a host uses every core of it.
    let (mut s, t0) = sched(0, false);
    let alone = worker(&mut s, "alone", 1, 4, t0);
    let _other = worker(&mut s, "other", 2, 2, t0);
    lease(&mut s, &alone, t0);
    assert_eq!(s.planned_threads(&alone), Some(4));
}

#[test]
fn slots_of_one_remote_join_count_as_one_host() {
    // `worker join --slots 2` on 4 cores: two processes `box/0`, `box/1` of 2 threads each.
    let (mut s, t0) = sched(0, false);
    let slot0 = worker(&mut s, "box", 2, 4, t0);
    let slot1 = worker(&mut s, "box", 2, 4, t0);
    lease(&mut s, &slot1, t0);
    assert_eq!(s.planned_threads(&slot1), Some(4));
    assert_eq!(s.planned_threads(&slot0), Some(2));
    // Slot 1 goes silent for a lease timeout: it is lost and its trial is queued again, so
    // nothing is lent; once slot 0 has the trial, the lost slot holds none of the host's cores.
    s.heartbeat(&slot0, &[], t0 + Duration::from_secs(6))
        .unwrap();
    let later = t0 + Duration::from_secs(11);
    assert_eq!(s.expire(later).len(), 1);
    assert_eq!(s.planned_threads(&slot0), Some(2), "the lapsed trial waits");
    lease(&mut s, &slot0, later);
    assert_eq!(s.planned_threads(&slot0), Some(4));
}

#[test]
fn odd_cores_go_to_the_trials_with_the_most_work_left() {
    let m = |busy, work_left| Member {
        busy,
        planned: true,
        threads: 1,
        work_left,
    };
    // 5 cores, two busy workers of 1 thread: 3 spare, one each and the odd one to the longer.
    assert_eq!(
        plan_host(5, &[m(true, 1.0), m(true, 9.0), m(false, 0.0)], false),
        [2, 3, 1]
    );
    // Equal work: the first in order.
    assert_eq!(plan_host(4, &[m(true, 1.0), m(true, 1.0)], false), [2, 2]);
    assert_eq!(plan_host(3, &[m(true, 1.0), m(true, 1.0)], false), [2, 1]);
    // Waiting work: everyone on its registered count.
    assert_eq!(plan_host(5, &[m(true, 1.0), m(false, 0.0)], true), [1, 1]);
    // More busy threads than cores: nothing to lend, nothing taken below the registered count.
    assert_eq!(plan_host(1, &[m(true, 1.0), m(true, 1.0)], false), [1, 1]);
}

#[test]
fn gpu_workers_and_workers_that_do_not_say_their_cores_are_not_planned() {
    let (mut s, t0) = sched(0, false);
    let silent = worker(&mut s, "lab", 1, 0, t0);
    lease(&mut s, &silent, t0);
    assert_eq!(s.planned_threads(&silent), None);
    let (mut s, t0) = sched(0, false);
    let gpu = worker(&mut s, "lab", 1, 2, t0);
    s.workers.get_mut(&gpu).unwrap().info.device = "cuda:0".into();
    lease(&mut s, &gpu, t0);
    assert_eq!(s.planned_threads(&gpu), None);
}

#[test]
fn a_worker_training_a_fused_group_is_one_busy_worker_and_gets_idle_cores() {
    // The end-to-end test's sweep (tests/tests/threads.rs): a group of three same-shape MLPs
    // (leased first: longest first) beside one short MLP of another shape, 2 cores.
    let mut trials = same_shape(3, 3);
    trials.push(TrialSpec::new("exp", hp(Arch::Ffv0, 32, 1, 2)));
    let (mut s, t0) = sched_of(trials, false);
    let a = fusing_worker(&mut s, 1, 2, t0);
    let b = fusing_worker(&mut s, 1, 2, t0);
    let group = lease(&mut s, &a, t0);
    assert_eq!(
        group.members.len(),
        2,
        "one lease per member, three members"
    );
    assert_eq!(s.planned_threads(&a), Some(1), "the short trial is queued");
    let short = lease(&mut s, &b, t0);
    assert!(short.members.is_empty());
    // Three leases, one worker on its one registered thread: nothing idle to lend.
    assert_eq!(s.planned_threads(&a), Some(1), "b is busy");
    finish(&mut s, &b, &short, t0);
    assert_eq!(s.lease(&b, t0).unwrap(), LeaseOutcome::Wait);
    assert_eq!(s.planned_threads(&a), Some(2), "b's core goes to the group");
    assert_eq!(s.planned_threads(&b), Some(1));
    // A member that ends early (a stop rule) leaves the others holding the worker.
    finish(&mut s, &a, &group.members[0], t0);
    assert_eq!(s.planned_threads(&a), Some(2));
}

#[test]
fn a_fused_group_gets_the_odd_core_by_the_work_all_its_members_have_left() {
    // One 6-epoch MLP (leased first) against a group of three 3-epoch ones of the same cost
    // per epoch: alone, each member has less work left than the single trial; together, more.
    let mut trials = same_shape(3, 3);
    trials.push(TrialSpec::new("exp", hp(Arch::Ffv2, 64, 6, 1)));
    let (mut s, t0) = sched_of(trials, false);
    let b = fusing_worker(&mut s, 1, 5, t0);
    let a = fusing_worker(&mut s, 1, 5, t0);
    let idle = fusing_worker(&mut s, 1, 5, t0);
    let single = lease(&mut s, &b, t0);
    assert_eq!((single.hparams.epochs, single.members.len()), (6, 0));
    let group = lease(&mut s, &a, t0);
    assert_eq!(group.members.len(), 2);
    assert_eq!(s.lease(&idle, t0).unwrap(), LeaseOutcome::Wait);
    // 5 cores, 2 used, 3 lent: one each, the odd one to the group (3 × 3 epochs left > 6).
    assert_eq!(s.planned_threads(&a), Some(3));
    assert_eq!(s.planned_threads(&b), Some(2));
    // Two epochs of every member later the group has 3 epochs' work left, the single 6.
    for l in std::iter::once(&group).chain(&group.members) {
        report(&mut s, &a, l, 1, t0);
        report(&mut s, &a, l, 2, t0);
    }
    assert_eq!(s.planned_threads(&a), Some(2));
    assert_eq!(s.planned_threads(&b), Some(3));
}
