//! Trials that train nothing and load no data: `--noop` (made-up metrics, to measure the
//! orchestration alone) and the synthetic objective of issue 12 (`objective = "synthetic"`:
//! the closed-form `search::synthetic` metrics, so that search and stopping can be tested
//! in seconds and compared with other tools on the same function).
//!
//! Each epoch is reported in turn and its answer awaited, so a stop at any epoch ends the
//! trial there: a stopped synthetic trial records no epoch past its stop, uploads its
//! `config.json` (its hyperparameters and history: there is no model) and `Finish`es as a
//! trained one does.

use crate::client::{Answer, Attempt, Coordinator, Leased};
use crate::join::lease_lost;
use crate::Result;
use proto::{Artifact, EpochMetrics, Hyperparams};
use tracing::info;

/// `--noop`: every epoch (after the lease's `start_epoch`) reported at once with made-up
/// metrics (and the worker's thread count, as a trained epoch would say it), then `Finish`.
pub async fn run_noop(
    coord: &Coordinator,
    leased: Leased,
    h: &Hyperparams,
    threads: u32,
) -> Result<()> {
    let made_up = |epoch: u32| {
        let acc = 0.5 + 0.4 * f64::from(epoch) / f64::from(h.epochs);
        on_every_split(epoch, acc, 1.0 - acc / 2.0)
    };
    report_all(coord, leased, h, made_up, threads, false).await
}

/// `objective = "synthetic"`: epoch `e` reports `val_acc = q · (1 − 0.5^e)` (see
/// `search::synthetic`), `val_loss = 1 − val_acc`, the train and test columns equal to the
/// validation ones. It trains nothing, so its epochs say no thread count.
pub async fn run_synthetic(coord: &Coordinator, leased: Leased, h: &Hyperparams) -> Result<()> {
    let metrics = |epoch: u32| {
        let acc = search::synthetic::val_acc(h.lr, f64::from(h.hidden), h.dropout, epoch);
        on_every_split(epoch, acc, 1.0 - acc)
    };
    report_all(coord, leased, h, metrics, 0, true).await
}

/// Epoch `epoch` with the same accuracy and loss on the train, validation and test splits,
/// trained in no time.
fn on_every_split(epoch: u32, acc: f64, loss: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        train_loss: loss,
        train_acc: acc,
        val_loss: loss,
        val_acc: acc,
        test_loss: loss,
        test_acc: acc,
        seconds: 0.0,
    }
}

/// Reports `metrics` of every epoch after the lease's `start_epoch`, until the last or a
/// stop, then (with `config`) uploads `config.json` and `Finish`es.
async fn report_all(
    coord: &Coordinator,
    leased: Leased,
    h: &Hyperparams,
    metrics: impl Fn(u32) -> EpochMetrics,
    threads: u32,
    config: bool,
) -> Result<()> {
    let attempt = leased.attempt;
    let _held = coord.hold(std::slice::from_ref(&attempt));
    let mut history = Vec::new();
    for epoch in leased.start_epoch.saturating_add(1)..=h.epochs {
        let m = metrics(epoch);
        history.push(m);
        match coord
            .report(&attempt, &m, threads, Vec::new(), None)
            .await?
        {
            Answer::Ok => {}
            Answer::Stop(why) => {
                info!(trial = %attempt.trial_id, epoch, reason = %why, "trial stopped by a rule");
                break;
            }
            Answer::LeaseLost(s) => {
                lease_lost(&attempt, &s);
                return Ok(());
            }
        }
    }
    if config {
        let text = serde_json::json!({
            "trial_id": h.trial_id(),
            "hparams": h,
            "history": history,
            "first_epoch": leased.start_epoch + 1,
        });
        let bytes = serde_json::to_vec_pretty(&text).expect("json of plain data");
        if let Answer::LeaseLost(s) = upload(coord, &attempt, &bytes).await? {
            lease_lost(&attempt, &s);
            return Ok(());
        }
    }
    if let Answer::LeaseLost(s) = coord.finish(&attempt).await? {
        lease_lost(&attempt, &s);
    }
    Ok(())
}

async fn upload(coord: &Coordinator, attempt: &Attempt, bytes: &[u8]) -> Result<Answer> {
    coord
        .upload(attempt, Artifact::Config.file_name(), bytes)
        .await
}
