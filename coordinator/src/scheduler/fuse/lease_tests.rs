//! Fused groups through [`Scheduler::lease`], in virtual time, on sweeps read from real sweep
//! text: one unit to one worker, each member its own lease afterwards.

use crate::scheduler::{
    Lease, LeaseOutcome, Plan, Scheduler, SchedulerConfig, WorkerId, WorkerInfo,
};
use crate::sweep::{load_str, Overrides, Sweep};
use chrono::DateTime;
use proto::{EpochMetrics, TrialId};
use results_format::TrialStatus;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Three h64 trials (one class), two h32 trials (another), a CNN (never fuses).
const SWEEP: &str = r#"
name = "fuse"
seed = 1
[[experiment]]
name = "mlp"
arch = "ffv2"
hidden = [64, 32]
lr = [0.05, 0.1, 0.2]
epochs = 3
[[experiment]]
name = "cnn"
arch = "cnn"
hidden = 4
lr = [0.1, 0.2]
epochs = 1
"#;

fn scheduler(text: &str, t0: Instant) -> Scheduler {
    let sw: Sweep = load_str(Path::new("t.toml"), text, &Overrides::default(), Vec::new()).unwrap();
    let plan = Plan {
        trials: sw.trials.clone(),
        experiments: sw.experiments.clone(),
        suggester: None,
    };
    let config = SchedulerConfig {
        lease_timeout: TIMEOUT,
        max_attempts: 3,
        ..SchedulerConfig::default()
    };
    Scheduler::with_plan(
        plan,
        config,
        t0,
        DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    )
}

fn worker(s: &mut Scheduler, max_fuse: u32, t0: Instant) -> WorkerId {
    let info = WorkerInfo {
        name: format!("fuse{max_fuse}"),
        device: "cpu".into(),
        slots: 1,
        max_fuse,
        ..Default::default()
    };
    s.register(info, t0)
}

fn lease(s: &mut Scheduler, w: &WorkerId, now: Instant) -> Lease {
    match s.lease(w, now).unwrap() {
        LeaseOutcome::Lease(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// The group's leases, the head first.
fn all(l: &Lease) -> Vec<&Lease> {
    std::iter::once(l).chain(&l.members).collect()
}

fn m(epoch: u32, val_acc: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        train_loss: 1.0 - val_acc,
        train_acc: val_acc,
        val_loss: 1.0 - val_acc,
        val_acc,
        test_loss: 1.0 - val_acc,
        test_acc: val_acc,
        seconds: 0.0,
    }
}

fn status(s: &Scheduler, id: &TrialId) -> TrialStatus {
    s.durable(id).unwrap().status
}

/// Reports every epoch of `l` and finishes it.
fn train_out(s: &mut Scheduler, w: &WorkerId, l: &Lease, now: Instant) {
    for e in l.recorded + 1..=l.hparams.epochs {
        s.report_epoch(w, &l.trial_id, l.attempt, m(e, 0.5), None, now)
            .unwrap();
    }
    s.finish(w, &l.trial_id, l.attempt, now).unwrap();
}

#[test]
fn a_group_leases_to_one_worker_as_one_unit_and_each_member_ends_as_a_solo_trial() {
    let t0 = Instant::now();
    let mut s = scheduler(SWEEP, t0);
    let w = worker(&mut s, 9, t0);
    // The CNNs cost most and go first, alone: CPU CNNs never fuse.
    for _ in 0..2 {
        let l = lease(&mut s, &w, t0);
        assert_eq!(l.hparams.arch, proto::Arch::Cnn);
        assert!(l.members.is_empty());
        train_out(&mut s, &w, &l, t0);
    }
    let h64 = lease(&mut s, &w, t0);
    let group = all(&h64);
    assert_eq!(group.len(), 3, "the three h64 trials, one group");
    assert!(group
        .iter()
        .all(|l| l.hparams.hidden == 64 && l.attempt == 1));
    assert!(group
        .iter()
        .all(|l| status(&s, &l.trial_id) == TrialStatus::Running));
    // Each member is its own trial.
    let ids: Vec<TrialId> = group.iter().map(|l| l.trial_id.clone()).collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<std::collections::HashSet<_>>().len()
    );
    let h32 = lease(&mut s, &w, t0);
    assert_eq!(all(&h32).len(), 3);
    assert!(all(&h32).iter().all(|l| l.hparams.hidden == 32));
    for l in all(&h64).into_iter().chain(all(&h32)) {
        train_out(&mut s, &w, l, t0);
    }
    assert_eq!(s.progress().finished, 8);
    assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Done);
}

#[test]
fn fuse_false_and_workers_without_max_fuse_lease_singly_and_max_fuse_bounds_a_group() {
    let t0 = Instant::now();
    // fuse = false in [defaults]: every trial alone, even to a worker that fuses.
    let off = SWEEP.replace("seed = 1\n", "seed = 1\n[defaults]\nfuse = false\n");
    let mut s = scheduler(&off, t0);
    let w = worker(&mut s, 9, t0);
    for _ in 0..8 {
        let l = lease(&mut s, &w, t0);
        assert!(l.members.is_empty(), "{} leased with members", l.trial_id);
        train_out(&mut s, &w, &l, t0);
    }
    // A worker that does not fuse (an older one sends 0) gets every trial alone.
    for max_fuse in [0, 1] {
        let mut s = scheduler(SWEEP, t0);
        let w = worker(&mut s, max_fuse, t0);
        for _ in 0..8 {
            let l = lease(&mut s, &w, t0);
            assert!(l.members.is_empty());
            train_out(&mut s, &w, &l, t0);
        }
        assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Done);
    }
    // --max-fuse 2: groups of two, then the third of its class alone.
    let mut s = scheduler(SWEEP, t0);
    let w = worker(&mut s, 2, t0);
    let mut sizes = Vec::new();
    while let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() {
        sizes.push((l.hparams.hidden, all(&l).len()));
        for m in all(&l) {
            train_out(&mut s, &w, m, t0);
        }
    }
    assert_eq!(sizes, [(4, 1), (4, 1), (64, 2), (64, 1), (32, 2), (32, 1)]);
}

#[test]
fn a_member_whose_lease_lapses_is_queued_again_alone_while_the_others_go_on() {
    let t0 = Instant::now();
    let only_mlps = SWEEP.replace("hidden = [64, 32]", "hidden = 64");
    let only_mlps = &only_mlps[..only_mlps.find("[[experiment]]\nname = \"cnn\"").unwrap()];
    let mut s = scheduler(only_mlps, t0);
    let w = worker(&mut s, 9, t0);
    let l = lease(&mut s, &w, t0);
    let group: Vec<Lease> = all(&l).into_iter().cloned().collect();
    assert_eq!(group.len(), 3);
    // Every member reports epoch 1; then heartbeats carry only two of them (the worker
    // dropped the third).
    for g in &group {
        s.report_epoch(&w, &g.trial_id, g.attempt, m(1, 0.5), None, t0)
            .unwrap();
    }
    let held: Vec<(TrialId, u32)> = group[..2]
        .iter()
        .map(|g| (g.trial_id.clone(), g.attempt))
        .collect();
    let t1 = t0 + TIMEOUT / 2;
    s.heartbeat(&w, &held, t1).unwrap();
    let t2 = t0 + TIMEOUT + Duration::from_secs(1);
    let expired = s.expire(t2);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].trial_id, group[2].trial_id);
    assert_eq!(status(&s, &group[2].trial_id), TrialStatus::Queued);
    for g in &group[..2] {
        assert_eq!(status(&s, &g.trial_id), TrialStatus::Running);
    }
    // Another worker gets the lapsed member alone, at its next attempt, from epoch 1.
    let other = worker(&mut s, 9, t2);
    let again = lease(&mut s, &other, t2);
    assert_eq!(again.trial_id, group[2].trial_id);
    assert!(again.members.is_empty());
    assert_eq!((again.attempt, again.recorded), (2, 1));
    // The old attempt is stale; the others finish on the first worker.
    assert!(s
        .report_epoch(&w, &group[2].trial_id, 1, m(2, 0.5), None, t2)
        .is_err());
    for g in &group[..2] {
        train_out(
            &mut s,
            &w,
            &Lease {
                recorded: 1,
                ..g.clone()
            },
            t2,
        );
    }
    train_out(&mut s, &other, &again, t2);
    assert_eq!(s.progress().finished, 3);
}

#[test]
fn a_stop_rule_stops_one_member_and_the_others_train_on() {
    let t0 = Instant::now();
    let text = r#"
name = "asha"
seed = 1
[[experiment]]
name = "grid"
arch = "ffv2"
hidden = 32
epochs = 4
stop = { asha = { grace = 1, reduction = 2 } }
lr = [0.1, 0.2, 0.3]
"#;
    let mut s = scheduler(text, t0);
    let w = worker(&mut s, 9, t0);
    let l = lease(&mut s, &w, t0);
    let group: Vec<Lease> = all(&l).into_iter().cloned().collect();
    assert_eq!(group.len(), 3);
    assert!(group.iter().all(|g| g.rung_epochs == [1, 2]));
    for (g, v) in group.iter().zip([0.7, 0.8, 0.3]) {
        s.report_epoch(&w, &g.trial_id, g.attempt, m(1, v), None, t0)
            .unwrap();
    }
    // The third is below rung 1's cutoff: stopped; the others are not.
    assert!(s.stop_of(&group[2].trial_id).is_some());
    assert!(s.stop_of(&group[0].trial_id).is_none());
    assert!(s.stop_of(&group[1].trial_id).is_none());
    s.finish(&w, &group[2].trial_id, group[2].attempt, t0)
        .unwrap();
    assert_eq!(status(&s, &group[2].trial_id), TrialStatus::Stopped);
    for g in &group[..2] {
        assert_eq!(status(&s, &g.trial_id), TrialStatus::Running);
        for e in 2..=4 {
            s.report_epoch(&w, &g.trial_id, g.attempt, m(e, 0.9), None, t0)
                .unwrap();
        }
        s.finish(&w, &g.trial_id, g.attempt, t0).unwrap();
    }
    let p = s.progress();
    assert_eq!((p.finished, p.stopped), (2, 1));
    assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Done);
}
