//! The coordinator's Prometheus metrics: one [`Metrics`] handle that the service, the
//! committer and the sweep's state update, and [`http`], the listener that serves them.
//!
//! Two kinds of numbers, kept apart on purpose:
//! - **events** (epochs recorded, leases granted and expired, failed attempts, bytes,
//!   latencies) are counters and histograms that whoever sees the event bumps through the
//!   handle's methods, one method per event;
//! - **state** (trials by state, workers connected, what each worker's heartbeats said) is
//!   never tracked here: it is read from the scheduler at each scrape ([`Census`]), so it
//!   cannot drift from what the scheduler knows, and a lost worker's series disappear with it.
//!
//! Metrics carry counters and gauges, never sweep data: no trial id, no hyperparameter, no
//! sweep name. The names are an interface (deploy/README.md, deploy/prometheus/rules.yml).
//! The text is Prometheus's exposition format 0.0.4 ([`prometheus_client`]'s encoder).

pub mod http;

use crate::scheduler::Census;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `state` label values of `hypersweep_trials`, in the order of [`Census`].
pub const TRIAL_STATES: [&str; 5] = ["queued", "running", "finished", "failed", "stopped"];

/// The handle every part of the coordinator counts through; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    epochs_recorded: Counter,
    leases_granted: Counter,
    leases_expired: Counter,
    attempts_failed: Counter,
    artifact_bytes: Counter,
    dataset_bytes: Counter,
    report_latency: Histogram,
    commit_batch: Histogram,
    commit_latency: Histogram,
}

impl Metrics {
    /// Registers every metric; `census` is called at each scrape for the state gauges (it
    /// reads the scheduler: see [`crate::service::SweepState`]).
    pub fn new(census: impl Fn() -> Census + Send + Sync + 'static) -> Metrics {
        let mut registry = Registry::default();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let histogram = |registry: &mut Registry, name: &str, help: &str, buckets: Histogram| {
            registry.register(name, help, buckets.clone());
            buckets
        };
        // Counters are registered without `_total`: the encoder adds it.
        let mut inner = Inner {
            epochs_recorded: counter(
                &mut registry,
                "hypersweep_epochs_recorded",
                "Epochs committed to the sweep's state, each (trial, epoch) once",
            ),
            leases_granted: counter(
                &mut registry,
                "hypersweep_leases_granted",
                "Trials handed to a worker",
            ),
            leases_expired: counter(
                &mut registry,
                "hypersweep_leases_expired",
                "Leases taken back: the worker was silent for the lease timeout, or its local process exited",
            ),
            attempts_failed: counter(
                &mut registry,
                "hypersweep_attempts_failed",
                "Trial attempts a worker reported failed",
            ),
            artifact_bytes: counter(
                &mut registry,
                "hypersweep_artifact_bytes_received",
                "Artifact bytes uploaded by workers",
            ),
            dataset_bytes: counter(
                &mut registry,
                "hypersweep_dataset_bytes_served",
                "Dataset bytes sent to workers",
            ),
            // 0.5 ms to 16 s: an answer waits for a commit (an fsync).
            report_latency: histogram(
                &mut registry,
                "hypersweep_report_latency_seconds",
                "ReportEpoch calls, from arrival to answer (after the commit)",
                Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ),
            // 1 to 4096, the committer's largest group.
            commit_batch: histogram(
                &mut registry,
                "hypersweep_commit_batch_size",
                "Changes per commit to state.redb",
                Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            ),
            // 0.1 ms to 3.3 s.
            commit_latency: histogram(
                &mut registry,
                "hypersweep_commit_latency_seconds",
                "Time of one commit to state.redb",
                Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            ),
            registry,
        };
        inner
            .registry
            .register_collector(Box::new(Live(Box::new(census))));
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// Every metric now, in the Prometheus text format ([`CONTENT_TYPE`]). Calls the census,
    /// which walks every trial: call it off the async runtime.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A commit of `changes` to the state, `epochs` of them epoch rows, took `took`.
    pub fn committed(&self, changes: usize, epochs: usize, took: Duration) {
        self.inner.commit_batch.observe(changes as f64);
        self.inner.commit_latency.observe(took.as_secs_f64());
        self.inner.epochs_recorded.inc_by(epochs as u64);
    }

    /// A ReportEpoch call was answered after `took`.
    pub fn report_answered(&self, took: Duration) {
        self.inner.report_latency.observe(took.as_secs_f64());
    }

    pub fn lease_granted(&self) {
        self.inner.leases_granted.inc();
    }

    /// `n` leases ended without their worker: expired, or their local worker exited.
    pub fn leases_expired(&self, n: usize) {
        self.inner.leases_expired.inc_by(n as u64);
    }

    /// A worker reported an attempt failed (`Fail`).
    pub fn attempt_failed(&self) {
        self.inner.attempts_failed.inc();
    }

    /// An artifact upload of `bytes` bytes was received whole.
    pub fn artifact_received(&self, bytes: u64) {
        self.inner.artifact_bytes.inc_by(bytes);
    }

    /// `bytes` bytes of the dataset were sent to a worker (the dataset download of issue 10
    /// counts here; nothing does yet).
    pub fn dataset_served(&self, bytes: u64) {
        self.inner.dataset_bytes.inc_by(bytes);
    }
}

/// The state gauges, from a [`Census`] taken at each scrape.
struct Live(Box<dyn Fn() -> Census + Send + Sync>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = (self.0)();
        let by_state = [c.queued, c.running, c.finished, c.failed, c.stopped];
        let mut m = encoder.encode_descriptor(
            "hypersweep_trials",
            "Trials in each state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in TRIAL_STATES.iter().zip(by_state) {
            ConstGauge::new(n as i64).encode(m.encode_family(&[("state", *state)])?)?;
        }

        let mut connected = std::collections::BTreeMap::<(&str, &str), i64>::new();
        for w in &c.workers {
            // A worker that did not say its build (protocol 1) is labelled `unknown`.
            let build = if w.build.is_empty() {
                "unknown"
            } else {
                &w.build
            };
            *connected.entry((&w.device, build)).or_default() += 1;
        }
        let mut m = encoder.encode_descriptor(
            "hypersweep_workers_connected",
            "Workers registered and alive, by device and build.",
            None,
            MetricType::Gauge,
        )?;
        for ((device, build), n) in connected {
            let labels = [("device", device), ("build", build)];
            ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
        }

        let loads: Vec<_> = c
            .workers
            .iter()
            .filter_map(|w| w.load.map(|l| (w.id.0.as_str(), l)))
            .collect();
        let mut m = encoder.encode_descriptor(
            "hypersweep_worker_samples_per_second",
            "Training samples per second of each worker's last epoch, from its heartbeats.",
            None,
            MetricType::Gauge,
        )?;
        for (worker, load) in &loads {
            let labels = [("worker", *worker)];
            ConstGauge::new(load.samples_per_second).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "hypersweep_worker_gpu_memory_bytes",
            "GPU memory in use on each worker, from its heartbeats (0 on CPU).",
            None,
            MetricType::Gauge,
        )?;
        for (worker, load) in &loads {
            let labels = [("worker", *worker)];
            ConstGauge::new(load.gpu_memory_bytes).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{AliveWorker, WorkerId, WorkerLoad};
    use std::sync::Mutex;

    fn worker(id: &str, device: &str, load: Option<WorkerLoad>) -> AliveWorker {
        AliveWorker {
            id: WorkerId(id.into()),
            device: device.into(),
            build: "0.0.0".into(),
            load,
        }
    }

    #[test]
    fn events_count_and_state_is_read_at_each_scrape() {
        let census = Arc::new(Mutex::new(Census {
            queued: 3,
            running: 1,
            ..Census::default()
        }));
        let m = {
            let census = Arc::clone(&census);
            Metrics::new(move || census.lock().unwrap().clone())
        };
        let text = m.encode();
        assert!(
            text.contains("hypersweep_trials{state=\"queued\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("hypersweep_trials{state=\"stopped\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hypersweep_epochs_recorded_total 0\n"),
            "{text}"
        );
        assert!(!text.contains("hypersweep_workers_connected{"), "{text}");

        m.committed(3, 1, Duration::from_millis(2));
        m.committed(6, 2, Duration::from_millis(3));
        m.lease_granted();
        m.leases_expired(2);
        m.attempt_failed();
        m.artifact_received(100);
        m.artifact_received(23);
        m.report_answered(Duration::from_millis(1));
        *census.lock().unwrap() = Census {
            finished: 4,
            workers: vec![
                worker(
                    "w1",
                    "cpu",
                    Some(WorkerLoad {
                        samples_per_second: 1500.5,
                        gpu_memory_bytes: 0,
                    }),
                ),
                worker("w2", "cpu", None),
                worker(
                    "w3",
                    "cuda:0",
                    Some(WorkerLoad {
                        samples_per_second: 9000.0,
                        gpu_memory_bytes: 1 << 30,
                    }),
                ),
            ],
            ..Census::default()
        };
        let text = m.encode();
        for line in [
            "hypersweep_epochs_recorded_total 3",
            "hypersweep_leases_granted_total 1",
            "hypersweep_leases_expired_total 2",
            "hypersweep_attempts_failed_total 1",
            "hypersweep_artifact_bytes_received_total 123",
            "hypersweep_dataset_bytes_served_total 0",
            "hypersweep_commit_batch_size_count 2",
            "hypersweep_commit_batch_size_sum 9.0",
            "hypersweep_commit_batch_size_bucket{le=\"4\"} 1",
            "hypersweep_report_latency_seconds_count 1",
            "hypersweep_trials{state=\"queued\"} 0",
            "hypersweep_trials{state=\"finished\"} 4",
            "hypersweep_workers_connected{device=\"cpu\",build=\"0.0.0\"} 2",
            "hypersweep_workers_connected{device=\"cuda:0\",build=\"0.0.0\"} 1",
            "hypersweep_worker_samples_per_second{worker=\"w1\"} 1500.5",
            "hypersweep_worker_gpu_memory_bytes{worker=\"w3\"} 1073741824",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A worker that never sent a heartbeat has no throughput series.
        assert!(!text.contains("worker=\"w2\""), "{text}");
    }
}
