//! The scheduler's search and stopping, in virtual time, on sweeps read from real sweep text:
//! a stop at a rung, what a stopped trial may still do, divergence, tpe suggestions as
//! workers free up, and all of it after a restart.

use crate::scheduler::{
    LeaseOutcome, Plan, ReportOutcome, Scheduler, SchedulerConfig, WorkerId, WorkerInfo,
};
use crate::suggest::{Suggester, TpeSuggester};
use crate::sweep::{load_str, Overrides, Sweep};
use chrono::DateTime;
use proto::{EpochMetrics, TrialId};
use results_format::TrialStatus;
use search::Rule;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn sweep(text: &str) -> Sweep {
    load_str(Path::new("t.toml"), text, &Overrides::default(), Vec::new()).unwrap()
}

fn plan(s: &Sweep) -> Plan {
    Plan {
        trials: s.trials.clone(),
        experiments: s.experiments.clone(),
        suggester: TpeSuggester::of(s).map(|t| Box::new(t) as Box<dyn Suggester>),
    }
}

fn scheduler(s: &Sweep, t0: Instant) -> Scheduler {
    let config = SchedulerConfig {
        lease_timeout: Duration::from_secs(10),
        max_attempts: 2,
        ..SchedulerConfig::default()
    };
    let wall = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    Scheduler::with_plan(plan(s), config, t0, wall)
}

fn worker(s: &mut Scheduler, name: &str, t0: Instant) -> WorkerId {
    let info = WorkerInfo {
        name: name.into(),
        device: "cpu".into(),
        slots: 1,
        ..Default::default()
    };
    s.register(info, t0)
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

const ASHA: &str = r#"
name = "asha"
[[experiment]]
name = "grid"
epochs = 4
stop = { asha = { grace = 1, reduction = 2 }, divergence = { factor = 2.0 } }
lr = [0.1, 0.2, 0.3]
"#;

#[test]
fn a_trial_worse_than_its_rung_stops_there_records_nothing_more_and_ends_stopped() {
    let t0 = Instant::now();
    let sw = sweep(ASHA);
    let mut s = scheduler(&sw, t0);
    let w = worker(&mut s, "w", t0);
    let mut leases = Vec::new();
    for value in [0.7, 0.8, 0.3] {
        let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
            panic!("no lease")
        };
        // Rungs at 1 and 2 (4 is max_t); the lease says so, with the goal and the factor.
        assert_eq!(l.rung_epochs, vec![1, 2]);
        assert_eq!(l.divergence, Some(2.0));
        assert_eq!(l.goal, results_format::Goal::default());
        let r = s
            .report_epoch(&w, &l.trial_id, l.attempt, m(1, value), None, t0)
            .unwrap();
        assert!(matches!(r, ReportOutcome::Accepted(_)));
        leases.push((l, value));
        if value > 0.5 {
            // Not stopped: train it out.
            let l = &leases.last().unwrap().0;
            assert!(s.stop_of(&l.trial_id).is_none());
            for e in 2..=4 {
                s.report_epoch(&w, &l.trial_id, l.attempt, m(e, value), None, t0)
                    .unwrap();
            }
            s.finish(&w, &l.trial_id, l.attempt, t0).unwrap();
        }
    }
    // The second (0.8) passed rung 1 ([0.7] → cutoff 0.7) and rung 2; the third (0.3) is
    // below the cutoff of rung 1 ([0.7, 0.8] → the median, 0.75).
    let (l, _) = &leases[2];
    let stop = s.stop_of(&l.trial_id).cloned().expect("stopped");
    assert_eq!((stop.rule, stop.epoch), (Rule::Asha, 1));
    // An epoch past the stop is not recorded.
    let after = s
        .report_epoch(&w, &l.trial_id, l.attempt, m(2, 0.9), None, t0)
        .unwrap();
    assert_eq!(after, ReportOutcome::AfterStop);
    // Its artifacts are still welcome, then it finishes as stopped with one epoch.
    s.check_artifact(&w, &l.trial_id, l.attempt).unwrap();
    s.finish(&w, &l.trial_id, l.attempt, t0).unwrap();
    let rec = s
        .records()
        .into_iter()
        .find(|r| r.trial_id == l.trial_id)
        .unwrap();
    assert_eq!(rec.status, TrialStatus::Stopped);
    assert_eq!(rec.epochs_done, 1);
    let stop = rec.stop.unwrap();
    assert_eq!((stop.rule.as_str(), stop.epoch), ("asha", 1));
    let p = s.progress();
    assert_eq!((p.finished, p.stopped, p.total), (2, 1, 3));
    assert!(s.is_done() && p.is_done());
    assert_eq!(s.lease(&w, t0).unwrap(), LeaseOutcome::Done);
}

#[test]
fn a_diverged_trial_stops_under_the_rule_and_fails_without_it() {
    let t0 = Instant::now();
    let mut s = scheduler(&sweep(ASHA), t0);
    let w = worker(&mut s, "w", t0);
    let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
        panic!()
    };
    s.report_epoch(&w, &l.trial_id, l.attempt, m(1, 0.5), None, t0)
        .unwrap();
    let stop = s
        .diverged(&w, &l.trial_id, l.attempt, 2, "train_loss", f64::NAN, t0)
        .unwrap()
        .unwrap();
    assert_eq!((stop.rule, stop.epoch), (Rule::Divergence, 2));
    assert!(stop.reason.contains("train_loss is NaN"), "{}", stop.reason);
    s.finish(&w, &l.trial_id, l.attempt, t0).unwrap();
    let d = s.durable(&l.trial_id).unwrap();
    assert_eq!((d.status, d.recorded), (TrialStatus::Stopped, 1));

    // A training loss above factor × the first epoch's stops at that epoch too (the worker
    // stops by itself; the coordinator records it).
    let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
        panic!()
    };
    s.report_epoch(&w, &l.trial_id, l.attempt, m(1, 0.9), None, t0)
        .unwrap();
    let exploded = EpochMetrics {
        train_loss: 0.25,
        ..m(2, 0.9)
    };
    s.report_epoch(&w, &l.trial_id, l.attempt, exploded, None, t0)
        .unwrap();
    let stop = s.stop_of(&l.trial_id).unwrap();
    assert_eq!((stop.rule, stop.epoch), (Rule::Divergence, 2));

    // Without the rule a non-finite loss fails the trial, as it always did.
    let plain = sweep("name = \"p\"\n[[experiment]]\nname = \"a\"\nepochs = 3\n");
    let mut s = scheduler(&plain, t0);
    let w = worker(&mut s, "w", t0);
    let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
        panic!()
    };
    let none = s
        .diverged(&w, &l.trial_id, l.attempt, 1, "val_loss", f64::INFINITY, t0)
        .unwrap();
    assert!(none.is_none());
    assert_eq!(s.durable(&l.trial_id).unwrap().status, TrialStatus::Failed);
}

#[test]
fn a_stopped_trial_whose_worker_vanishes_ends_stopped_and_a_restart_keeps_it_so() {
    let t0 = Instant::now();
    let sw = sweep(ASHA);
    let mut s = scheduler(&sw, t0);
    let w = worker(&mut s, "w", t0);
    let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
        panic!()
    };
    s.diverged(&w, &l.trial_id, l.attempt, 1, "train_loss", f64::NAN, t0)
        .unwrap();
    // The worker dies before its artifacts: the lease lapses, the trial is not requeued.
    let expired = s.expire(t0 + Duration::from_secs(11));
    assert_eq!(expired[0].status, TrialStatus::Stopped);
    assert_eq!(s.durable(&l.trial_id).unwrap().status, TrialStatus::Stopped);
    // And if the coordinator went down first, with the trial still running, a restart ends
    // it stopped rather than training it again.
    let mut running = s.durable(&l.trial_id).unwrap();
    running.status = TrialStatus::Running;
    let mut again = scheduler(&sw, t0);
    let r = again.restore(HashMap::from([(l.trial_id.clone(), running)]), true, 2);
    assert_eq!(r.stopped, 1);
    assert_eq!(
        again.durable(&l.trial_id).unwrap().status,
        TrialStatus::Stopped
    );
    assert_eq!(again.progress().queued, 2);
}

const TPE: &str = r#"
name = "tpe"
seed = 5
[defaults]
objective = "synthetic"
arch = "ffv3"
epochs = 2
[[experiment]]
name = "t"
search = "tpe"
trials = 14
lr = { loguniform = [0.001, 1.0] }
hidden = { int = [16, 256], log = true }
dropout = { uniform = [0.0, 0.5] }
"#;

/// Trains trial `l` on the synthetic objective to the end.
fn run_synthetic(s: &mut Scheduler, w: &WorkerId, l: &crate::scheduler::Lease, t0: Instant) {
    let h = &l.hparams;
    for e in 1..=h.epochs {
        let acc = search::synthetic::val_acc(h.lr, f64::from(h.hidden), h.dropout, e);
        s.report_epoch(w, &l.trial_id, l.attempt, m(e, acc), None, t0)
            .unwrap();
    }
    s.finish(w, &l.trial_id, l.attempt, t0).unwrap();
}

#[test]
fn tpe_suggests_as_workers_free_up_without_waiting_for_pending_trials() {
    let t0 = Instant::now();
    let sw = sweep(TPE);
    let mut s = scheduler(&sw, t0);
    assert_eq!(s.progress().total, 14);
    let a = worker(&mut s, "a", t0);
    let b = worker(&mut s, "b", t0);
    let LeaseOutcome::Lease(la) = s.lease(&a, t0).unwrap() else {
        panic!()
    };
    // b gets the next suggestion at once, while a's trial is pending.
    let LeaseOutcome::Lease(lb) = s.lease(&b, t0).unwrap() else {
        panic!()
    };
    let (sa, sb) = (la.suggested.clone().unwrap(), lb.suggested.clone().unwrap());
    assert_eq!((sa.index, sb.index), (0, 1));
    assert_ne!(la.trial_id, lb.trial_id);
    assert_eq!(sa.hparams, la.hparams);
    run_synthetic(&mut s, &a, &la, t0);
    run_synthetic(&mut s, &b, &lb, t0);
    let mut ids = vec![la.trial_id, lb.trial_id];
    while let LeaseOutcome::Lease(l) = s.lease(&a, t0).unwrap() {
        assert_eq!(l.suggested.as_ref().unwrap().index, ids.len() as u64);
        ids.push(l.trial_id.clone());
        run_synthetic(&mut s, &a, &l, t0);
    }
    // Exactly `trials` trials, all distinct, then Done.
    assert_eq!(ids.len(), 14);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 14);
    assert!(s.is_done());
    assert_eq!(s.lease(&b, t0).unwrap(), LeaseOutcome::Done);
}

#[test]
fn a_restart_puts_back_every_stored_suggestion_and_suggests_the_next_index() {
    let t0 = Instant::now();
    let sw = sweep(TPE);
    let mut first = scheduler(&sw, t0);
    let w = worker(&mut first, "w", t0);
    let mut stored = Vec::new();
    let mut durable = HashMap::new();
    for i in 0..12 {
        let LeaseOutcome::Lease(l) = first.lease(&w, t0).unwrap() else {
            panic!()
        };
        stored.push(*l.suggested.clone().unwrap());
        // The last one is leased but unfinished when the coordinator dies.
        if i < 11 {
            run_synthetic(&mut first, &w, &l, t0);
        }
        durable.insert(l.trial_id.clone(), first.durable(&l.trial_id).unwrap());
    }
    let mut second = scheduler(&sw, t0);
    assert_eq!(second.restore_suggestions(&stored), 12);
    let r = second.restore(durable, false, 2);
    assert_eq!((r.finished, r.new), (11, 0));
    let w2 = worker(&mut second, "w", t0);
    // The unfinished suggestion is leased again (queued, not drawn again) ...
    let LeaseOutcome::Lease(again) = second.lease(&w2, t0).unwrap() else {
        panic!()
    };
    assert_eq!(again.trial_id, stored[11].hparams.trial_id());
    assert!(again.suggested.is_none());
    run_synthetic(&mut second, &w2, &again, t0);
    // ... and the next ones take indices 12 and 13.
    let mut next: Vec<TrialId> = Vec::new();
    for index in 12..14 {
        let LeaseOutcome::Lease(l) = second.lease(&w2, t0).unwrap() else {
            panic!()
        };
        assert_eq!(l.suggested.as_ref().unwrap().index, index);
        next.push(l.trial_id.clone());
        run_synthetic(&mut second, &w2, &l, t0);
    }
    assert!(next
        .iter()
        .all(|id| !stored.iter().any(|s| &s.hparams.trial_id() == id)));
    assert_eq!(second.lease(&w2, t0).unwrap(), LeaseOutcome::Done);
    assert_eq!(second.records().len(), 14);
}

/// Runs the trials of `s` one after another on `w`, trial `k` reporting `values[k] + e/100`
/// at epoch `e` until it is stopped or done; returns each report with the verdict after it.
fn run_all(
    s: &mut Scheduler,
    w: &WorkerId,
    values: &[f64],
    t0: Instant,
) -> Vec<(TrialId, EpochMetrics, bool)> {
    let mut out = Vec::new();
    for &v in values {
        let LeaseOutcome::Lease(l) = s.lease(w, t0).unwrap() else {
            panic!("no lease")
        };
        for e in 1..=4 {
            let metrics = m(e, v + 0.01 * f64::from(e));
            s.report_epoch(w, &l.trial_id, l.attempt, metrics, None, t0)
                .unwrap();
            let stopped = s.stop_of(&l.trial_id).is_some();
            out.push((l.trial_id.clone(), metrics, stopped));
            if stopped {
                break;
            }
        }
        s.finish(w, &l.trial_id, l.attempt, t0).unwrap();
    }
    out
}

#[test]
fn replaying_the_recorded_epochs_gives_the_same_verdicts() {
    let t0 = Instant::now();
    let text = ASHA.replace(
        "lr = [0.1, 0.2, 0.3]",
        "lr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]",
    );
    let sw = sweep(&text);
    let values = [0.9, 0.5, 0.8, 0.2, 0.85, 0.6];
    let mut live = scheduler(&sw, t0);
    let w = worker(&mut live, "w", t0);
    let history = run_all(&mut live, &w, &values, t0);
    let stops = history.iter().filter(|(_, _, stopped)| *stopped).count();
    assert!(stops >= 2, "{stops} stopped: {history:?}");
    // A coordinator that went down after the first three trials replays their epochs and
    // restores their states; the last three trials then get the verdicts they got live.
    let first_three: Vec<TrialId> = {
        let mut ids: Vec<TrialId> = history.iter().map(|(t, _, _)| t.clone()).collect();
        ids.dedup();
        ids.truncate(3);
        ids
    };
    let cut = history
        .iter()
        .position(|(t, _, _)| !first_three.contains(t))
        .unwrap();
    let mut restarted = scheduler(&sw, t0);
    let durable: HashMap<_, _> = first_three
        .iter()
        .map(|t| (t.clone(), live.durable(t).unwrap()))
        .collect();
    restarted.restore(durable, false, 2);
    restarted.replay_epochs(history[..cut].iter().map(|(t, m, _)| (t, m)));
    let w2 = worker(&mut restarted, "w", t0);
    let again = run_all(&mut restarted, &w2, &values[3..], t0);
    assert_eq!(again, history[cut..].to_vec());
}
