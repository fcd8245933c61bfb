//! The state's records on disk: protobuf messages (prost derive, explicit tags), so that a
//! later version can add fields and still read what an earlier one wrote. `Stored*` are the
//! bytes' shapes; the coordinator works with [`DurableTrial`] and [`EpochRecord`].

use crate::suggest::Suggested;
use crate::trial::{DurableTrial, StopInfo};
use chrono::{DateTime, Utc};
use proto::{pb, EpochMetrics, Hyperparams, TrialId};
use results_format::{Best, EpochRecord, Metric, TrialStatus};
use search::Rule;

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredTrial {
    #[prost(string, tag = "1")]
    status: String,
    #[prost(uint32, tag = "2")]
    attempts: u32,
    #[prost(uint32, tag = "3")]
    failures: u32,
    #[prost(uint32, tag = "4")]
    recorded: u32,
    #[prost(uint32, optional, tag = "5")]
    best_epoch: Option<u32>,
    /// The best epoch's value of `best_by` (named when it was always an accuracy).
    #[prost(double, tag = "6")]
    best_acc: f64,
    /// Its tie-breaker ([`results_format::best::Metric::tie_breaker`]); NaN when it has none.
    #[prost(double, tag = "7")]
    best_loss: f64,
    /// The metric the best epoch was chosen on, e.g. `val_acc`.
    #[prost(string, tag = "8")]
    best_by: String,
    #[prost(double, optional, tag = "9")]
    final_test_acc: Option<f64>,
    #[prost(string, optional, tag = "10")]
    worker_name: Option<String>,
    #[prost(string, optional, tag = "11")]
    device: Option<String>,
    #[prost(int64, optional, tag = "12")]
    started_at_us: Option<i64>,
    #[prost(int64, optional, tag = "13")]
    finished_at_us: Option<i64>,
    #[prost(string, optional, tag = "14")]
    last_error: Option<String>,
    // issue 10 (tags 100-119)
    #[prost(string, optional, tag = "100")]
    worker_build: Option<String>,
    // issue 12: a stopping rule's verdict.
    #[prost(string, optional, tag = "140")]
    stop_rule: Option<String>,
    #[prost(uint32, tag = "141")]
    stop_epoch: u32,
    #[prost(double, tag = "142")]
    stop_metric: f64,
    #[prost(string, tag = "143")]
    stop_reason: String,
}

fn rule(name: &str) -> std::result::Result<Rule, String> {
    [Rule::Asha, Rule::Median, Rule::Divergence]
        .into_iter()
        .find(|r| r.as_str() == name)
        .ok_or_else(|| format!("unknown stop rule {name:?}"))
}

fn from_micros(us: i64) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| format!("timestamp {us} out of range"))
}

impl StoredTrial {
    pub(super) fn from_domain(d: &DurableTrial) -> Self {
        StoredTrial {
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            failures: d.failures,
            recorded: d.recorded,
            best_epoch: d.best.map(|b| b.epoch),
            best_acc: d.best.map_or(0.0, |b| b.value),
            best_loss: d.best.and_then(|b| b.tie).unwrap_or(f64::NAN),
            best_by: d.best.map_or("", |b| b.metric.as_str()).to_owned(),
            final_test_acc: d.final_test_acc,
            worker_name: d.worker_name.clone(),
            device: d.device.clone(),
            started_at_us: d.started_at.map(|t| t.timestamp_micros()),
            finished_at_us: d.finished_at.map(|t| t.timestamp_micros()),
            last_error: d.last_error.clone(),
            worker_build: d.worker_build.clone(),
            stop_rule: d.stop.as_ref().map(|s| s.rule.as_str().to_owned()),
            stop_epoch: d.stop.as_ref().map_or(0, |s| s.epoch),
            stop_metric: d.stop.as_ref().map_or(f64::NAN, |s| s.metric),
            stop_reason: d.stop.as_ref().map_or(String::new(), |s| s.reason.clone()),
        }
    }

    pub(super) fn into_domain(self) -> std::result::Result<DurableTrial, String> {
        let status: TrialStatus = self.status.parse()?;
        let best = match self.best_epoch {
            None => None,
            Some(epoch) => Some(Best {
                epoch,
                value: self.best_acc,
                tie: Some(self.best_loss).filter(|t| !t.is_nan()),
                metric: self.best_by.parse::<Metric>()?,
            }),
        };
        Ok(DurableTrial {
            status,
            attempts: self.attempts,
            failures: self.failures,
            recorded: self.recorded,
            best,
            final_test_acc: self.final_test_acc,
            worker_name: self.worker_name,
            device: self.device,
            started_at: self.started_at_us.map(from_micros).transpose()?,
            finished_at: self.finished_at_us.map(from_micros).transpose()?,
            last_error: self.last_error,
            worker_build: self.worker_build,
            stop: match self.stop_rule {
                None => None,
                Some(name) => Some(StopInfo {
                    rule: rule(&name)?,
                    epoch: self.stop_epoch,
                    metric: self.stop_metric,
                    reason: self.stop_reason,
                }),
            },
        })
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredEpoch {
    #[prost(string, tag = "1")]
    trial_id: String,
    #[prost(string, tag = "2")]
    experiment: String,
    #[prost(message, optional, tag = "3")]
    hparams: Option<pb::Hyperparams>,
    #[prost(message, optional, tag = "4")]
    metrics: Option<pb::EpochMetrics>,
    #[prost(string, tag = "5")]
    worker: String,
    #[prost(string, tag = "6")]
    device: String,
    #[prost(int64, tag = "7")]
    recorded_at_us: i64,
    // issue 10 (tags 100-119)
    #[prost(string, tag = "100")]
    device_name: String,
    #[prost(string, tag = "101")]
    host: String,
    #[prost(uint64, optional, tag = "102")]
    gpu_peak_memory_bytes: Option<u64>,
    /// issue 13: absent in state written before it.
    #[prost(uint32, optional, tag = "160")]
    threads: Option<u32>,
}

impl StoredEpoch {
    pub(super) fn from_domain(r: &EpochRecord) -> Self {
        StoredEpoch {
            trial_id: r.trial_id.0.clone(),
            experiment: r.experiment.clone(),
            hparams: Some(pb::Hyperparams::from(&r.hparams)),
            metrics: Some(pb::EpochMetrics::from(&r.metrics)),
            worker: r.worker.clone(),
            device: r.device.clone(),
            recorded_at_us: r.recorded_at.timestamp_micros(),
            device_name: r.device_name.clone(),
            host: r.host.clone(),
            gpu_peak_memory_bytes: r.gpu_peak_memory_bytes,
            threads: r.threads,
        }
    }

    pub(super) fn into_domain(self) -> std::result::Result<EpochRecord, String> {
        let hparams = self
            .hparams
            .ok_or("missing hyperparameters")
            .map_err(str::to_owned)
            .and_then(|h| Hyperparams::try_from(h).map_err(|e| e.to_string()))?;
        let metrics = self
            .metrics
            .ok_or("missing metrics")
            .map_err(str::to_owned)
            .and_then(|m| EpochMetrics::try_from(m).map_err(|e| e.to_string()))?;
        Ok(EpochRecord {
            trial_id: TrialId(self.trial_id),
            experiment: self.experiment,
            hparams,
            metrics,
            worker: self.worker,
            device: self.device,
            recorded_at: from_micros(self.recorded_at_us)?,
            device_name: self.device_name,
            host: self.host,
            gpu_peak_memory_bytes: self.gpu_peak_memory_bytes,
            threads: self.threads,
        })
    }
}

/// A tpe suggestion (issue 12): stored before the lease that carries it is answered. Its key
/// in the `suggestions` table is (experiment, index).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StoredSuggestion {
    #[prost(string, tag = "140")]
    experiment: String,
    #[prost(uint64, tag = "141")]
    index: u64,
    #[prost(message, optional, tag = "142")]
    hparams: Option<pb::Hyperparams>,
    /// One number per parameter of the experiment's space.
    #[prost(double, repeated, tag = "143")]
    config: Vec<f64>,
}

impl StoredSuggestion {
    pub(super) fn from_domain(s: &Suggested) -> Self {
        StoredSuggestion {
            experiment: s.experiment.clone(),
            index: s.index,
            hparams: Some(pb::Hyperparams::from(&s.hparams)),
            config: s.config.clone(),
        }
    }

    pub(super) fn into_domain(self) -> std::result::Result<Suggested, String> {
        let hparams = self
            .hparams
            .ok_or("missing hyperparameters")
            .map_err(str::to_owned)
            .and_then(|h| Hyperparams::try_from(h).map_err(|e| e.to_string()))?;
        Ok(Suggested {
            experiment: self.experiment,
            index: self.index,
            hparams,
            config: self.config,
        })
    }
}
