use super::*;
use crate::trial::DurableTrial;
use proto::Arch;
use results_format::Metric;

const TIMEOUT: Duration = Duration::from_secs(10);

fn hp(arch: Arch, hidden: u32, epochs: u32, seed: u64) -> Hyperparams {
    Hyperparams {
        arch,
        hidden,
        epochs,
        seed,
        ..Hyperparams::default()
    }
}

fn trial(h: Hyperparams) -> TrialSpec {
    TrialSpec::new("exp", h)
}

fn sched(trials: Vec<Hyperparams>, max_attempts: u32) -> (Scheduler, Instant) {
    let t0 = Instant::now();
    let wall = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let s = Scheduler::new(
        trials.into_iter().map(trial).collect(),
        SchedulerConfig {
            lease_timeout: TIMEOUT,
            max_attempts,
            ..SchedulerConfig::default()
        },
        t0,
        wall,
    );
    (s, t0)
}

fn worker(s: &mut Scheduler, name: &str, slots: u32, now: Instant) -> WorkerId {
    s.register(
        WorkerInfo {
            name: name.into(),
            device: "cpu".into(),
            slots,
            build: "test".into(),
            ..Default::default()
        },
        now,
    )
}

fn lease(s: &mut Scheduler, w: &WorkerId, now: Instant) -> Lease {
    match s.lease(w, now).unwrap() {
        LeaseOutcome::Lease(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn metrics(epoch: u32, val_acc: f64, val_loss: f64, test_acc: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss,
        val_acc,
        test_loss: 0.6,
        test_acc,
        seconds: 1.0,
    }
}

fn m(epoch: u32) -> EpochMetrics {
    metrics(epoch, 0.5 + f64::from(epoch) / 100.0, 0.4, 0.7)
}

fn report(
    s: &mut Scheduler,
    w: &WorkerId,
    l: &Lease,
    epoch: u32,
    now: Instant,
) -> Result<ReportOutcome> {
    s.report_epoch(w, &l.trial_id, l.attempt, m(epoch), Some(1), now)
}

#[test]
fn longest_trials_are_leased_first_ties_in_input_order() {
    let small = hp(Arch::Ffv0, 32, 2, 1);
    let cnn = hp(Arch::Cnn, 10, 2, 1);
    let small_again = hp(Arch::Ffv0, 32, 2, 2);
    let long_mlp = hp(Arch::Ffv2, 256, 10, 1);
    let (mut s, t0) = sched(
        vec![
            small.clone(),
            cnn.clone(),
            small_again.clone(),
            long_mlp.clone(),
        ],
        3,
    );
    let w = worker(&mut s, "a", 8, t0);
    let order: Vec<TrialId> = (0..4).map(|_| lease(&mut s, &w, t0).trial_id).collect();
    assert_eq!(
        order,
        vec![
            cnn.trial_id(),
            long_mlp.trial_id(),
            small.trial_id(),
            small_again.trial_id()
        ]
    );
    assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Wait);
}

#[test]
fn done_only_when_every_trial_is_finished_or_failed() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1), hp(Arch::Ffv0, 32, 1, 2)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let b = worker(&mut s, "b", 1, t0);
    let la = lease(&mut s, &a, t0);
    let lb = lease(&mut s, &b, t0);
    let c = worker(&mut s, "c", 1, t0);
    assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Wait);
    assert!(matches!(
        report(&mut s, &a, &la, 1, t0).unwrap(),
        ReportOutcome::Accepted(_)
    ));
    s.finish(&a, &la.trial_id, la.attempt, t0).unwrap();
    assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Wait);
    assert!(!s.is_done());
    s.fail(&b, &lb.trial_id, lb.attempt, "nan loss", false, t0)
        .unwrap();
    assert!(s.is_done());
    assert!(s.progress().is_done());
    assert_eq!(s.lease(&c, t0).unwrap(), LeaseOutcome::Done);
    let p = s.progress();
    assert_eq!(
        (p.total, p.finished, p.failed, p.running, p.queued),
        (2, 1, 1, 0, 0)
    );
}

#[test]
fn a_worker_gets_no_more_leases_than_slots() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1), hp(Arch::Ffv0, 32, 1, 2)], 3);
    let a = worker(&mut s, "a", 1, t0);
    lease(&mut s, &a, t0);
    assert_eq!(s.lease(&a, t0).unwrap(), LeaseOutcome::Wait);
}

#[test]
fn expired_lease_is_requeued_first_and_the_old_attempt_is_stale() {
    let long = hp(Arch::Cnn, 10, 3, 1);
    let short = hp(Arch::Ffv0, 32, 1, 1);
    let (mut s, t0) = sched(vec![long.clone(), short.clone()], 3);
    let a = worker(&mut s, "a", 1, t0);
    let la = lease(&mut s, &a, t0);
    assert_eq!(la.trial_id, long.trial_id());
    assert_eq!(la.attempt, 1);
    report(&mut s, &a, &la, 1, t0 + Duration::from_secs(5)).unwrap();
    // The report refreshed the lease: nothing lapses at 10 s.
    assert!(s.expire(t0 + TIMEOUT).is_empty());
    let b = worker(&mut s, "b", 2, t0 + TIMEOUT);
    let later = t0 + Duration::from_secs(15);
    let expired = s.expire(later);
    assert_eq!(
        expired,
        vec![Expired {
            trial_id: long.trial_id(),
            attempt: 1,
            worker: a.clone(),
            failed: false,
            status: TrialStatus::Queued,
        }]
    );
    assert_eq!(s.is_lost(&a), Some(true));
    assert_eq!(s.is_lost(&b), Some(false));
    let rec = &s.records()[0];
    assert_eq!(rec.status, TrialStatus::Queued);
    assert!(
        rec.last_error.as_deref().unwrap().contains("lease expired"),
        "{rec:?}"
    );
    assert!(
        rec.last_error.as_deref().unwrap().contains("worker w1 (a)"),
        "{rec:?}"
    );

    // Requeued in front of the short trial that was never leased.
    let lb = lease(&mut s, &b, later);
    assert_eq!((lb.trial_id.clone(), lb.attempt), (long.trial_id(), 2));
    // The first attempt is stale for every call.
    let err = report(&mut s, &a, &la, 2, later).unwrap_err();
    assert!(
        matches!(err, SchedulerError::StaleAttempt { attempt: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        s.finish(&a, &la.trial_id, 1, later),
        Err(SchedulerError::StaleAttempt { .. })
    ));
    assert!(matches!(
        s.fail(&a, &la.trial_id, 1, "x", true, later),
        Err(SchedulerError::StaleAttempt { .. })
    ));
    let abandon = s.heartbeat(&a, &[(la.trial_id.clone(), 1)], later).unwrap();
    assert_eq!(abandon, vec![(la.trial_id.clone(), 1)]);
    assert_eq!(s.is_lost(&a), Some(false), "a call revives the worker");
    // The new attempt restarts at epoch 1: already recorded, so a duplicate.
    assert_eq!(
        report(&mut s, &b, &lb, 1, later).unwrap(),
        ReportOutcome::Duplicate
    );
    assert!(matches!(
        report(&mut s, &b, &lb, 2, later).unwrap(),
        ReportOutcome::Accepted(_)
    ));
    let p = s.progress();
    assert_eq!(p.running_trials.len(), 1);
    assert_eq!(
        (p.running_trials[0].epoch, p.running_trials[0].epochs),
        (2, 3)
    );
    assert_eq!(p.running_trials[0].worker, b);
}

#[test]
fn heartbeats_keep_leases_alive() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    for k in 1..=5u64 {
        let now = t0 + Duration::from_secs(8 * k);
        assert!(s
            .heartbeat(&a, &[(l.trial_id.clone(), l.attempt)], now)
            .unwrap()
            .is_empty());
        assert!(s.expire(now).is_empty());
    }
    assert_eq!(s.expire(t0 + Duration::from_secs(50)).len(), 1);
}

#[test]
fn retry_limit_fails_the_trial() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 2);
    let a = worker(&mut s, "a", 1, t0);
    let l1 = lease(&mut s, &a, t0);
    let t1 = t0 + TIMEOUT;
    assert!(!s.expire(t1)[0].failed);
    let l2 = lease(&mut s, &a, t1);
    assert_eq!(l2.attempt, 2);
    assert_eq!(l1.trial_id, l2.trial_id);
    let t2 = t1 + TIMEOUT;
    let e = s.expire(t2);
    assert!(e[0].failed, "{e:?}");
    let rec = &s.records()[0];
    assert_eq!((rec.status, rec.attempts), (TrialStatus::Failed, 2));
    assert!(rec.finished_at.is_some());
    assert_eq!(s.lease(&a, t2).unwrap(), LeaseOutcome::Done);
}

#[test]
fn retryable_failures_requeue_until_max_attempts() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 2);
    let a = worker(&mut s, "a", 1, t0);
    let l1 = lease(&mut s, &a, t0);
    assert_eq!(
        s.fail(&a, &l1.trial_id, 1, "out of memory", true, t0)
            .unwrap(),
        TrialStatus::Queued
    );
    let l2 = lease(&mut s, &a, t0);
    assert_eq!(l2.attempt, 2);
    assert_eq!(
        s.fail(&a, &l2.trial_id, 2, "out of memory", true, t0)
            .unwrap(),
        TrialStatus::Failed
    );
    let rec = &s.records()[0];
    assert_eq!(
        rec.last_error.as_deref(),
        Some("out of memory (gave up after 2 failed attempts)")
    );
}

#[test]
fn non_retryable_failure_fails_at_once() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    assert_eq!(
        s.fail(&a, &l.trial_id, 1, "loss is nan", false, t0)
            .unwrap(),
        TrialStatus::Failed
    );
    let rec = &s.records()[0];
    assert_eq!((rec.status, rec.attempts), (TrialStatus::Failed, 1));
    assert_eq!(rec.last_error.as_deref(), Some("loss is nan"));
    assert_eq!(s.lease(&a, t0).unwrap(), LeaseOutcome::Done);
    // After the failure the worker no longer holds it.
    assert!(matches!(
        report(&mut s, &a, &l, 1, t0),
        Err(SchedulerError::NotLeased {
            status: TrialStatus::Failed,
            ..
        })
    ));
}

#[test]
fn repeated_report_is_a_duplicate_and_epochs_must_not_skip() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 3, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    let ReportOutcome::Accepted(rec) = report(&mut s, &a, &l, 1, t0).unwrap() else {
        panic!("first report must be accepted")
    };
    assert_eq!(
        (rec.worker.as_str(), rec.device.as_str(), rec.metrics.epoch),
        ("a", "cpu", 1)
    );
    assert_eq!(
        rec.recorded_at,
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    );
    assert_eq!(
        report(&mut s, &a, &l, 1, t0).unwrap(),
        ReportOutcome::Duplicate
    );
    for bad in [0, 3, 4] {
        let err = report(&mut s, &a, &l, bad, t0).unwrap_err();
        assert!(
            matches!(err, SchedulerError::EpochOutOfRange { next: 2, .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(s.records()[0].epochs_done, 1);
}

#[test]
fn finish_needs_every_epoch() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 2, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    report(&mut s, &a, &l, 1, t0).unwrap();
    let err = s.finish(&a, &l.trial_id, l.attempt, t0).unwrap_err();
    assert_eq!(
        err,
        SchedulerError::Incomplete {
            trial: l.trial_id.clone(),
            recorded: 1,
            epochs: 2
        }
    );
    report(&mut s, &a, &l, 2, t0).unwrap();
    let t1 = t0 + Duration::from_secs(90);
    s.finish(&a, &l.trial_id, l.attempt, t1).unwrap();
    let rec = &s.records()[0];
    assert_eq!(rec.status, TrialStatus::Finished);
    assert_eq!(
        rec.finished_at,
        Some(DateTime::from_timestamp(1_700_000_090, 0).unwrap())
    );
    assert_eq!(
        rec.started_at,
        Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap())
    );
    assert_eq!(
        (rec.worker.as_deref(), rec.device.as_deref()),
        (Some("a"), Some("cpu"))
    );
    // Finished twice: the lease is gone.
    assert!(matches!(
        s.finish(&a, &l.trial_id, l.attempt, t1),
        Err(SchedulerError::NotLeased { .. })
    ));
}

#[test]
fn best_epoch_by_val_acc_ties_to_lower_loss() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 4, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    let ms = [
        metrics(1, 0.80, 0.5, 0.70),
        metrics(2, 0.85, 0.45, 0.71),
        metrics(3, 0.85, 0.40, 0.72),
        metrics(4, 0.84, 0.39, 0.73),
    ];
    for mm in ms {
        s.report_epoch(&a, &l.trial_id, 1, mm, Some(1), t0).unwrap();
    }
    let rec = &s.records()[0];
    assert_eq!(
        rec.best.map(|b| (b.epoch, b.value, b.metric)),
        Some((3, 0.85, Metric::ValAcc))
    );
    assert_eq!(rec.test_acc, Some(0.73));
}

#[test]
fn without_validation_the_best_epoch_is_chosen_by_test_acc() {
    let h = Hyperparams {
        validation: 0.0,
        ..hp(Arch::Ffv0, 32, 2, 1)
    };
    let (mut s, t0) = sched(vec![h], 3);
    let a = worker(&mut s, "a", 1, t0);
    let l = lease(&mut s, &a, t0);
    s.report_epoch(
        &a,
        &l.trial_id,
        1,
        metrics(1, f64::NAN, f64::NAN, 0.75),
        None,
        t0,
    )
    .unwrap();
    s.report_epoch(
        &a,
        &l.trial_id,
        1,
        metrics(2, f64::NAN, f64::NAN, 0.74),
        None,
        t0,
    )
    .unwrap();
    let rec = &s.records()[0];
    assert_eq!(
        rec.best.map(|b| (b.epoch, b.value, b.metric)),
        Some((1, 0.75, Metric::TestAcc))
    );
    assert_eq!(rec.test_acc, Some(0.74));
}

#[test]
fn unknown_worker_and_trial_are_errors() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
    let ghost = WorkerId("w99".into());
    assert!(matches!(
        s.lease(&ghost, t0),
        Err(SchedulerError::UnknownWorker(_))
    ));
    let a = worker(&mut s, "a", 1, t0);
    let other = hp(Arch::Ffv1, 32, 1, 1).trial_id();
    assert!(matches!(
        s.report_epoch(&a, &other, 1, m(1), Some(1), t0),
        Err(SchedulerError::UnknownTrial(_))
    ));
    assert!(matches!(
        s.check_artifact(&a, &other, 1),
        Err(SchedulerError::UnknownTrial(_))
    ));
    // Heartbeating an unknown trial tells the worker to drop it.
    assert_eq!(
        s.heartbeat(&a, &[(other.clone(), 1)], t0).unwrap(),
        vec![(other, 1)]
    );
}

#[test]
fn artifacts_are_accepted_from_the_latest_attempt_even_after_finish() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let b = worker(&mut s, "b", 1, t0);
    let l = lease(&mut s, &a, t0);
    s.check_artifact(&a, &l.trial_id, 1).unwrap();
    assert!(s.check_artifact(&b, &l.trial_id, 1).is_err());
    assert!(s.check_artifact(&a, &l.trial_id, 2).is_err());
    report(&mut s, &a, &l, 1, t0).unwrap();
    s.finish(&a, &l.trial_id, 1, t0).unwrap();
    s.check_artifact(&a, &l.trial_id, 1).unwrap();
}

#[test]
fn restore_resumes_unfinished_trials_and_keeps_finished_ones() {
    let done = hp(Arch::Ffv0, 32, 2, 1);
    let broken = hp(Arch::Ffv0, 32, 2, 2);
    let half = hp(Arch::Ffv0, 32, 3, 3);
    let fresh = hp(Arch::Ffv0, 32, 2, 4);
    let all = vec![done.clone(), broken.clone(), half.clone(), fresh.clone()];
    // First start: `done` finishes, `broken` fails, `half` records one epoch, then the
    // coordinator dies.
    let (mut s, t0) = sched(all.clone(), 3);
    let a = worker(&mut s, "a", 3, t0);
    let mut leases = HashMap::new();
    for _ in 0..3 {
        let l = lease(&mut s, &a, t0);
        leases.insert(l.trial_id.clone(), l);
    }
    let l = &leases[&done.trial_id()];
    report(&mut s, &a, l, 1, t0).unwrap();
    report(&mut s, &a, l, 2, t0).unwrap();
    s.finish(&a, &l.trial_id, l.attempt, t0).unwrap();
    let l = &leases[&broken.trial_id()];
    s.fail(&a, &l.trial_id, l.attempt, "loss is NaN", false, t0)
        .unwrap();
    let l = &leases[&half.trial_id()];
    report(&mut s, &a, l, 1, t0).unwrap();
    let stored: HashMap<TrialId, DurableTrial> = all
        .iter()
        .filter(|h| h.trial_id() != fresh.trial_id())
        .map(|h| (h.trial_id(), s.durable(&h.trial_id()).unwrap()))
        .collect();
    assert_eq!(stored[&half.trial_id()].status, TrialStatus::Running);

    // Second start.
    let (mut s2, t0) = sched(all.clone(), 3);
    let r = s2.restore(stored.clone(), false, 2);
    assert_eq!(
        r,
        Restored {
            finished: 1,
            failed: 1,
            retried: 0,
            resumed: 1,
            new: 1,
            dropped: 0,
            ..Restored::default()
        }
    );
    let b = worker(&mut s2, "b", 4, t0);
    assert_eq!(b.0, "w1-r2", "worker ids carry the incarnation");
    let first = lease(&mut s2, &b, t0);
    assert_eq!(
        first.trial_id,
        half.trial_id(),
        "partly trained trials go first"
    );
    assert_eq!((first.recorded, first.attempt), (1, 2));
    assert_eq!(
        report(&mut s2, &b, &first, 1, t0).unwrap(),
        ReportOutcome::Duplicate
    );
    assert!(matches!(
        report(&mut s2, &b, &first, 2, t0).unwrap(),
        ReportOutcome::Accepted(_)
    ));
    let second = lease(&mut s2, &b, t0);
    assert_eq!(
        (second.trial_id.clone(), second.recorded),
        (fresh.trial_id(), 0)
    );
    assert_eq!(
        s2.lease(&b, t0).unwrap(),
        LeaseOutcome::Wait,
        "nothing else to run"
    );
    // A worker of the first start is unknown now.
    assert!(matches!(
        s2.lease(&a, t0),
        Err(SchedulerError::UnknownWorker(_))
    ));

    // --retry-failed queues the failed trial again, with its failures forgotten.
    let (mut s3, t0) = sched(all, 3);
    let r = s3.restore(stored, true, 3);
    assert_eq!((r.failed, r.retried), (0, 1));
    let c = worker(&mut s3, "c", 4, t0);
    let leased: Vec<TrialId> = (0..3).map(|_| lease(&mut s3, &c, t0).trial_id).collect();
    assert!(leased.contains(&broken.trial_id()));
    assert!(!leased.contains(&done.trial_id()));
}

#[test]
fn failures_not_attempts_count_against_max_attempts() {
    // Attempts cut short by a restart are not failures: a trial leased 5 times over 5
    // starts of the coordinator still gets its max_attempts tries.
    let h = hp(Arch::Ffv0, 32, 2, 1);
    let mut stored = HashMap::new();
    let (mut s, t0) = sched(vec![h.clone()], 2);
    let a = worker(&mut s, "a", 1, t0);
    lease(&mut s, &a, t0);
    let mut d = s.durable(&h.trial_id()).unwrap();
    d.attempts = 5;
    stored.insert(h.trial_id(), d);
    let (mut s2, t0) = sched(vec![h.clone()], 2);
    s2.restore(stored, false, 6);
    let b = worker(&mut s2, "b", 1, t0);
    let l = lease(&mut s2, &b, t0);
    assert_eq!(l.attempt, 6);
    assert!(!s2.expire(t0 + TIMEOUT)[0].failed, "first failure of 2");
    let l = lease(&mut s2, &b, t0 + TIMEOUT);
    assert_eq!(l.attempt, 7);
    assert!(s2.expire(t0 + TIMEOUT * 2)[0].failed, "second failure of 2");
}

#[test]
fn lost_workers_without_leases_can_be_forgotten() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 2, 1)], 3);
    let busy = worker(&mut s, "busy", 1, t0);
    let idle = worker(&mut s, "idle", 1, t0);
    lease(&mut s, &busy, t0);
    // Both silent past the timeout: both lost, but `busy` still holds its lease until
    // expiry runs.
    let later = t0 + TIMEOUT / 2;
    s.heartbeat(&busy, &[], later).unwrap();
    for w in s.workers.values_mut() {
        w.lost = true;
    }
    assert_eq!(s.forget_lost_workers(), 1);
    assert_eq!(s.workers(), 1);
    assert!(matches!(
        s.lease(&idle, later),
        Err(SchedulerError::UnknownWorker(_))
    ));
}

#[test]
fn census_counts_trials_by_state_and_only_workers_alive_with_their_load() {
    let (mut s, t0) = sched(vec![hp(Arch::Ffv0, 32, 1, 1), hp(Arch::Ffv0, 32, 1, 2)], 3);
    let a = worker(&mut s, "a", 1, t0);
    let b = worker(&mut s, "b", 1, t0);
    let l = lease(&mut s, &a, t0);
    let load = WorkerLoad {
        samples_per_second: 2500.0,
        gpu_memory_bytes: 7,
    };
    s.report_load(&a, load);
    let c = s.census();
    assert_eq!((c.queued, c.running, c.finished, c.failed), (1, 1, 0, 0));
    let mut workers = c.workers.clone();
    workers.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[0].id, a);
    assert_eq!(workers[0].load, Some(load));
    assert_eq!(workers[0].build, "test");
    assert_eq!(workers[1].load, None, "b never sent a heartbeat");

    report(&mut s, &a, &l, 1, t0).unwrap();
    s.finish(&a, &l.trial_id, l.attempt, t0).unwrap();
    // `b` falls silent past the timeout, `a` keeps calling: only `a` is in the census.
    let later = t0 + TIMEOUT;
    s.heartbeat(&a, &[], later).unwrap();
    s.expire(later);
    let c = s.census();
    assert_eq!((c.queued, c.running, c.finished, c.failed), (1, 0, 1, 0));
    assert_eq!(c.workers.len(), 1);
    assert_eq!(c.workers[0].id, a);
    // Calling again brings `b` back, without a load until its next heartbeat reports one.
    s.heartbeat(&b, &[], later).unwrap();
    assert_eq!(s.census().workers.len(), 2);
}
