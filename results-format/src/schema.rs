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
/// The best epoch's value of the metric it was chosen on (validation accuracy, or test
/// accuracy when `best_by` says so).
pub const BEST_VAL_ACC: &str = "best_val_acc";
pub const BEST_BY: &str = "best_by";
/// In `trials.parquet`: the test accuracy after the final epoch.
pub const TEST_ACC: &str = "test_acc";
pub const ERROR: &str = "error";

pub const EPOCH: &str = "epoch";
pub const SECONDS: &str = "seconds";
pub const RECORDED_AT: &str = "recorded_at";
/// issue 13: in the epoch files, libtorch's intra-op threads while the epoch trained (null
/// when the worker did not say).
pub const THREADS: &str = "threads";

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
    // issue 13: the thread count of every epoch.
    fields.push(Field::new(THREADS, DataType::Int64, true));
    Arc::new(Schema::new(fields))
}
