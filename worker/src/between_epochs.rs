//! What a training thread does between two epochs, solo ([`crate::join_trial`]) or fused
//! ([`crate::join_group`]): it waits for the answer to the report of the epoch just trained
//! (at a rung for the rule's verdict, elsewhere briefly: [`plan_wait`]), then the next epoch
//! trains on the thread count the coordinator's plan asks for ([`switch_threads`]), unless
//! lent threads did not pay ([`device::ThreadSwitch`]).

use crate::device::{self, Switch, ThreadSwitch};
use crate::{Error, Result};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The answer to the report of epoch `epoch`: go on, or stop (a rule's verdict).
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) epoch: u32,
    pub(crate) stop: Option<String>,
}

/// How long training waits, between two epochs, for the answer to the last epoch's report
/// when no rule needs it: the answer carries the coordinator's thread plan
/// (`scheduler/threads.rs`), and without the wait a report's answer, which comes a few
/// milliseconds after the next epoch started, would move the plan one epoch late (a CNN
/// epoch of lab4 is 7 s). At most 1% of the epoch just trained, and 100 ms: a slow link
/// never costs more than that, and an answer that comes later applies an epoch later.
pub(crate) fn plan_wait(epoch_seconds: f64) -> Duration {
    Duration::from_secs_f64((epoch_seconds * 0.01).clamp(0.0, 0.1))
}

/// Waits for the answer to epoch `epoch`'s report (older answers are skipped): without a
/// limit when a rule's verdict is due, else up to `limit`. `Ok(None)`: not yet answered;
/// the stop reason of a `Stop`; `Err` when nobody reports any more.
pub(crate) fn answer_to(
    verdicts: &Receiver<Verdict>,
    epoch: u32,
    limit: Option<Duration>,
) -> Result<Option<Verdict>> {
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        let next = match deadline {
            None => verdicts.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => verdicts.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match next {
            Ok(v) if v.epoch < epoch => continue,
            Ok(v) => return Ok(Some(v)),
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Abandoned("reporting stopped".into()))
            }
        }
    }
}

/// Between epochs, once the answer is in: the next epoch (`next_epoch`) of `trial` (a trial
/// id, or a fused group's ids) trains on the count the plan asks for, unless the epoch just
/// trained (`trained_on` threads, `seconds`) shows that lent threads did not pay; then back
/// to the registered count for the rest of the trial (or group).
pub(crate) fn switch_threads(
    switch: &mut ThreadSwitch,
    trial: &str,
    next_epoch: u32,
    trained_on: u32,
    seconds: f64,
) {
    match switch.between_epochs(trained_on, seconds) {
        Some(Switch::Planned(threads)) => {
            info!(
                trial,
                next_epoch, threads, "threads planned by the coordinator"
            );
        }
        Some(Switch::Declined { lent, base }) => {
            let threads = switch.base();
            device::set_threads(threads);
            warn!(trial, next_epoch, threads, lent_seconds = lent, base_seconds = base,
                "lent threads were slower (the cores are busy with other work): back to the registered count for this trial");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_waits_for_the_answer_of_its_epoch_briefly_or_for_a_verdict() {
        assert_eq!(
            plan_wait(7.0),
            Duration::from_millis(70),
            "1% of a CNN epoch"
        );
        assert_eq!(
            plan_wait(60.0),
            Duration::from_millis(100),
            "at most 100 ms"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = |epoch, stop: Option<&str>| Verdict {
            epoch,
            stop: stop.map(str::to_owned),
        };
        // Not answered yet: the wait ends at its limit, training goes on.
        let started = Instant::now();
        let limit = Some(Duration::from_millis(20));
        assert!(answer_to(&rx, 1, limit).unwrap().is_none());
        assert!(started.elapsed() >= Duration::from_millis(20));
        // The late answer of epoch 1 is skipped at epoch 2; epoch 2's stop is returned.
        tx.send(answer(1, None)).unwrap();
        tx.send(answer(2, Some("asha"))).unwrap();
        let v = answer_to(&rx, 2, limit).unwrap().unwrap();
        assert_eq!((v.epoch, v.stop.as_deref()), (2, Some("asha")));
        // A rung waits without a limit, for an answer sent later.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(answer(3, None)).unwrap();
            tx
        });
        let v = answer_to(&rx, 3, None).unwrap().unwrap();
        assert_eq!((v.epoch, v.stop), (3, None));
        // Once nobody reports, training is abandoned.
        drop(sender.join().unwrap());
        assert!(matches!(answer_to(&rx, 4, limit), Err(Error::Abandoned(_))));
    }
}
