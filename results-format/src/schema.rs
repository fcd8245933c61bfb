//! Every column of the two Parquet files, named once.
//!
//! `trials.parquet`: `trial_id`, the hyperparameter columns, then the trial's progress.
//! `epochs/*.parquet`: `trial_id`, `epoch`, the six metric columns (named by
//! [`Metric::as_str`]), `seconds`, who recorded it, then the hyperparameter columns, so one
//! glob answers most questions without a join, then `threads` (issue 13).

use crate::best::Metric;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

pub const TRIAL_ID: &str = "trial_id";
pub const EXPERIMENT: &str = "experiment";
pub const ARCH: &str = "arch";
pub const HIDDEN: &str = "hidden";
pub const DROPOUT: &str = "dropout";
pub const LR: &str = "lr";
pub const EPOCHS: &str = "epochs";
pub const BATCH_SIZE: &str = "batch_size";
pub const MOMENTUM: &str = "momentum";
pub const WEIGHT_DECAY: &str = "weight_decay";
pub const VALIDATION: &str = "validation";
pub const SEED: &str = "seed";

pub const STATUS: &str = "status";
pub const ATTEMPTS: &str = "attempts";
pub const WORKER: &str = "worker";
pub const DEVICE: &str = "device";
pub const STARTED_AT: &str = "started_at";
pub const FINISHED_AT: &str = "finished_at";
pub const EPOCHS_DONE: &str = "epochs_done";
pub const BEST_EPOCH: &str = "best_epoch";
/// The best epoch's value of the metric it was chosen on, when that is validation accuracy
/// (the default), or test accuracy when `best_by` says so (no validation split); null when
/// the experiment's metric is another column (its value is `best_metric`).
pub const BEST_VAL_ACC: &str = "best_val_acc";
pub const BEST_BY: &str = "best_by";
/// In `trials.parquet`: the test accuracy after the final epoch.
pub const TEST_ACC: &str = "test_acc";
pub const ERROR: &str = "error";

// issue 12: search, stopping and the experiment's metric.
/// `train` or `synthetic` (see [`proto::Objective`]).
pub const OBJECTIVE: &str = "objective";
/// How the trial's experiment picks trials: `grid`, `random` or `tpe`.
pub const SEARCH: &str = "search";
/// The experiment's metric (an epoch column) and mode (`max` or `min`).
pub const METRIC: &str = "metric";
pub const MODE: &str = "mode";
/// The value of `metric` at the trial's best epoch (null when the trial has no value for it).
pub const BEST_METRIC: &str = "best_metric";
/// For a stopped trial: the rule (`asha`, `median`, `divergence`) and the epoch it stopped at.
pub const STOP_RULE: &str = "stop_rule";
pub const STOP_EPOCH: &str = "stop_epoch";

pub const EPOCH: &str = "epoch";
pub const SECONDS: &str = "seconds";
pub const RECORDED_AT: &str = "recorded_at";
/// issue 13: in the epoch files, libtorch's intra-op threads while the epoch trained (null
/// when the worker did not say).
pub const THREADS: &str = "threads";

// issue 10: which build trained a trial, and on what.
/// In `trials.parquet`: the build of the worker of the latest attempt, as `worker --version`
/// says it after the name (`0.5.0 (cuda build, libtorch 2.11.0, CUDA 13.0)`).
pub const WORKER_BUILD: &str = "worker_build";
/// In the epoch files: the device's model (`NVIDIA H200`, or the CPU's model name).
pub const DEVICE_NAME: &str = "device_name";
/// In the epoch files: the host name of the worker's machine.
pub const HOST: &str = "host";
/// In the epoch files: the worker process's GPU memory at the end of the epoch as the driver
/// reports it (NVML), in bytes; null on CPU. libtorch's caching allocator keeps what it
/// reserved, so this is the process's peak so far, CUDA context included.
pub const GPU_PEAK_MEMORY_BYTES: &str = "gpu_peak_memory_bytes";

/// Microsecond UTC timestamps, as DuckDB reads them into `TIMESTAMP WITH TIME ZONE`.
fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The hyperparameter columns, in both files.
fn hparam_fields() -> Vec<Field> {
    vec![
        Field::new(EXPERIMENT, DataType::Utf8, false),
        Field::new(ARCH, DataType::Utf8, false),
        Field::new(HIDDEN, DataType::Int64, false),
        Field::new(DROPOUT, DataType::Float64, false),
        Field::new(LR, DataType::Float64, false),
        Field::new(EPOCHS, DataType::Int64, false),
        Field::new(BATCH_SIZE, DataType::Int64, false),
        Field::new(MOMENTUM, DataType::Float64, false),
        Field::new(WEIGHT_DECAY, DataType::Float64, false),
        Field::new(VALIDATION, DataType::Float64, false),
        Field::new(SEED, DataType::UInt64, false),
    ]
}

/// The schema of `trials.parquet`.
pub fn trials() -> SchemaRef {
    let mut fields = vec![Field::new(TRIAL_ID, DataType::Utf8, false)];
    fields.extend(hparam_fields());
    fields.extend([
        Field::new(STATUS, DataType::Utf8, false),
        Field::new(ATTEMPTS, DataType::Int64, false),
        Field::new(WORKER, DataType::Utf8, true),
        Field::new(DEVICE, DataType::Utf8, true),
        Field::new(STARTED_AT, timestamp(), true),
        Field::new(FINISHED_AT, timestamp(), true),
        Field::new(EPOCHS_DONE, DataType::Int64, false),
        Field::new(BEST_EPOCH, DataType::Int64, true),
        Field::new(BEST_VAL_ACC, DataType::Float64, true),
        Field::new(BEST_BY, DataType::Utf8, true),
        Field::new(TEST_ACC, DataType::Float64, true),
        Field::new(ERROR, DataType::Utf8, true),
        // issue 10
        Field::new(WORKER_BUILD, DataType::Utf8, true),
        // issue 12: search, stopping and the experiment's metric.
        Field::new(OBJECTIVE, DataType::Utf8, false),
        Field::new(SEARCH, DataType::Utf8, false),
        Field::new(METRIC, DataType::Utf8, false),
        Field::new(MODE, DataType::Utf8, false),
        Field::new(BEST_METRIC, DataType::Float64, true),
        Field::new(STOP_RULE, DataType::Utf8, true),
        Field::new(STOP_EPOCH, DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The metric columns of the epoch files, in order. Validation columns are null without a
/// validation split.
pub const METRICS: [Metric; 6] = Metric::ALL;

/// The schema of every `epochs/*.parquet` file.
pub fn epochs() -> SchemaRef {
    let mut fields = vec![
        Field::new(TRIAL_ID, DataType::Utf8, false),
        Field::new(EPOCH, DataType::Int64, false),
    ];
    fields.extend(METRICS.iter().map(|m| {
        let nullable = matches!(m, Metric::ValLoss | Metric::ValAcc);
        Field::new(m.as_str(), DataType::Float64, nullable)
    }));
    fields.extend([
        Field::new(SECONDS, DataType::Float64, false),
        Field::new(WORKER, DataType::Utf8, false),
        Field::new(DEVICE, DataType::Utf8, false),
        Field::new(RECORDED_AT, timestamp(), false),
    ]);
    fields.extend(hparam_fields());
    // issue 10 (null in rows recorded before it)
    fields.extend([
        Field::new(DEVICE_NAME, DataType::Utf8, true),
        Field::new(HOST, DataType::Utf8, true),
        Field::new(GPU_PEAK_MEMORY_BYTES, DataType::Int64, true),
    ]);
    // issue 13: the thread count of every epoch.
    fields.push(Field::new(THREADS, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}
