//! The gRPC service end to end: a coordinator on 127.0.0.1:0 and simulated workers that speak
//! `sweep.v1` through the generated client.

use crate::common::{hp, Sandbox};
use arrow::array::{Array, Int64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proto::pb::coordinator_client::CoordinatorClient;
use proto::pb::{self, lease_response::Outcome};
use proto::Hyperparams;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

async fn register(c: &mut CoordinatorClient<Channel>, name: &str) -> String {
    let r = c
        .register(pb::RegisterRequest {
            name: name.into(),
            device: "cpu".into(),
            slots: 1,
            threads: 1,
            version: "0.0.0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sweep_name, "test");
    r.worker_id
}

async fn lease(c: &mut CoordinatorClient<Channel>, worker: &str) -> Outcome {
    c.lease(pb::LeaseRequest {
        worker_id: worker.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .outcome
    .unwrap()
}

fn ta(trial: &str, attempt: u32) -> Option<pb::TrialAttempt> {
    Some(pb::TrialAttempt {
        trial_id: trial.into(),
        attempt,
    })
}

fn metrics(epoch: u32) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss: 0.45,
        val_acc: 0.8 + f64::from(epoch) / 100.0,
        test_loss: 0.5,
        test_acc: 0.79,
        seconds: 0.1,
    }
}

fn report(worker: &str, trial: &str, attempt: u32, m: pb::EpochMetrics) -> pb::ReportEpochRequest {
    pb::ReportEpochRequest {
        checkpoint: Vec::new(),
        worker_id: worker.into(),
        trial: ta(trial, attempt),
        metrics: Some(m),
        threads: 3,
        ..Default::default()
    }
}

fn read_parquet(paths: &[PathBuf]) -> Vec<arrow::array::RecordBatch> {
    paths
        .iter()
        .flat_map(|p| {
            let file = std::fs::File::open(p).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
        })
        .collect()
}

fn epoch_files(results: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(results.join("epochs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

#[tokio::test]
async fn a_worker_runs_the_sweep_and_results_reach_parquet() {
    let h = hp(3, 1);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let mut progress = sb.state.subscribe();
    let w1 = register(&mut c, "one").await;
    let w2 = register(&mut c, "two").await;
    assert_ne!(w1, w2);

    let Outcome::Lease(l) = lease(&mut c, &w1).await else {
        panic!("expected a lease")
    };
    assert_eq!((l.trial_id.as_str(), l.attempt), (h.trial_id().as_str(), 1));
    assert_eq!(Hyperparams::try_from(l.hparams.unwrap()).unwrap(), h);
    assert!(matches!(
        lease(&mut c, &w2).await,
        Outcome::Wait(pb::Wait { retry_after_ms: 50 })
    ));

    for epoch in 1..=3 {
        let r = c
            .report_epoch(report(&w1, &l.trial_id, 1, metrics(epoch)))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.duplicate);
    }
    // A retried report is idempotent.
    let r = c
        .report_epoch(report(&w1, &l.trial_id, 1, metrics(2)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.duplicate);
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: w1.clone(),
            running: vec![ta(&l.trial_id, 1).unwrap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.abandon.is_empty());
    c.finish(pb::FinishRequest {
        worker_id: w1.clone(),
        trial: ta(&l.trial_id, 1),
    })
    .await
    .unwrap();

    assert!(matches!(lease(&mut c, &w2).await, Outcome::Done(_)));
    assert!(matches!(lease(&mut c, &w1).await, Outcome::Done(_)));
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        while !sb.state.is_done() {
            progress.changed().await.unwrap();
        }
    })
    .await;
    assert!(done.is_ok(), "progress never reported the sweep done");
    assert_eq!(sb.state.progress().finished, 1);

    sb.state.finish_results().await.unwrap();
    let batches = read_parquet(&epoch_files(&sb.results()));
    let mut keys = HashSet::new();
    for b in &batches {
        let ids = b
            .column_by_name("trial_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let epochs = b
            .column_by_name("epoch")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let workers = b
            .column_by_name("worker")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        // issue 13: the thread count the report carried.
        let threads = b
            .column_by_name("threads")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            assert!(
                keys.insert((ids.value(i).to_owned(), epochs.value(i))),
                "duplicate epoch row"
            );
            assert_eq!(workers.value(i), "one");
            assert_eq!(threads.value(i), 3);
        }
    }
    assert_eq!(keys.len(), 3);
    let trials = read_parquet(&[sb.results().join("trials.parquet")]);
    let status = trials[0].column_by_name("status").unwrap();
    let status = status.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((trials[0].num_rows(), status.value(0)), (1, "finished"));
    let best = trials[0].column_by_name("best_epoch").unwrap();
    assert_eq!(
        best.as_any().downcast_ref::<Int64Array>().unwrap().value(0),
        3
    );
    sb.stop().await;
}

#[tokio::test]
async fn epoch_rows_are_flushed_while_the_sweep_runs() {
    let h = hp(4, 2);
    let sb = Sandbox::start(std::slice::from_ref(&h), |c| c.flush_rows = 2).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let Outcome::Lease(l) = lease(&mut c, &w).await else {
        panic!("expected a lease")
    };
    for epoch in 1..=2 {
        c.report_epoch(report(&w, &l.trial_id, 1, metrics(epoch)))
            .await
            .unwrap();
    }
    // No finish_results: the writer task flushes on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows: usize = read_parquet(&epoch_files(&sb.results()))
            .iter()
            .map(|b| b.num_rows())
            .sum();
        if rows == 2 && sb.results().join("trials.parquet").is_file() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows never reached parquet ({rows})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sb.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_rejected_with_the_right_code() {
    let h = hp(2, 3);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let Outcome::Lease(l) = lease(&mut c, &w).await else {
        panic!("expected a lease")
    };
    let id = l.trial_id.clone();

    let code =
        |r: Result<tonic::Response<pb::ReportEpochResponse>, tonic::Status>| r.unwrap_err().code();
    // Missing fields.
    assert_eq!(
        code(c.report_epoch(report("", &id, 1, metrics(1))).await),
        Code::InvalidArgument
    );
    let mut no_trial = report(&w, &id, 1, metrics(1));
    no_trial.trial = None;
    assert_eq!(code(c.report_epoch(no_trial).await), Code::InvalidArgument);
    let mut no_metrics = report(&w, &id, 1, metrics(1));
    no_metrics.metrics = None;
    assert_eq!(
        code(c.report_epoch(no_metrics).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 0, metrics(1))).await),
        Code::InvalidArgument
    );
    // Malformed and unknown ids.
    assert_eq!(
        code(
            c.report_epoch(report(&w, "../etc/passwd", 1, metrics(1)))
                .await
        ),
        Code::InvalidArgument
    );
    let other = hp(2, 99).trial_id();
    assert_eq!(
        code(
            c.report_epoch(report(&w, other.as_str(), 1, metrics(1)))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(c.report_epoch(report("w404", &id, 1, metrics(1))).await),
        Code::NotFound
    );
    let e = c
        .lease(pb::LeaseRequest {
            worker_id: "w404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Bad metrics.
    let mut nan = metrics(1);
    nan.train_loss = f64::NAN;
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, nan)).await),
        Code::InvalidArgument
    );
    let mut acc = metrics(1);
    acc.test_acc = 2.0;
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, acc)).await),
        Code::InvalidArgument
    );
    // Skipping ahead.
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, metrics(2))).await),
        Code::InvalidArgument
    );
    // Finishing early.
    c.report_epoch(report(&w, &id, 1, metrics(1)))
        .await
        .unwrap();
    let e = c
        .finish(pb::FinishRequest {
            worker_id: w.clone(),
            trial: ta(&id, 1),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Registering without slots.
    let e = c
        .register(pb::RegisterRequest {
            name: "x".into(),
            device: "cpu".into(),
            slots: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A heartbeat naming a malformed trial.
    let e = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: w.clone(),
            running: vec![ta("nope", 1).unwrap()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    sb.stop().await;
}

#[tokio::test]
async fn an_expired_lease_is_released_again_and_the_old_attempt_is_stale() {
    let h = hp(2, 4);
    let sb = Sandbox::start(std::slice::from_ref(&h), |c| {
        c.lease_timeout = Duration::from_millis(300)
    })
    .await;
    let mut c = sb.client().await;
    let w1 = register(&mut c, "silent").await;
    let w2 = register(&mut c, "alive").await;
    let Outcome::Lease(l1) = lease(&mut c, &w1).await else {
        panic!("expected a lease")
    };
    c.report_epoch(report(&w1, &l1.trial_id, 1, metrics(1)))
        .await
        .unwrap();

    // w1 goes silent; w2 keeps asking until the lease lapses and comes back to it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let l2 = loop {
        match lease(&mut c, &w2).await {
            Outcome::Lease(l) => break l,
            Outcome::Wait(_) => {}
            Outcome::Done(_) => panic!("done before the trial ran"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (l2.trial_id.as_str(), l2.attempt),
        (l1.trial_id.as_str(), 2)
    );

    let e = c
        .report_epoch(report(&w1, &l1.trial_id, 1, metrics(2)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: w1.clone(),
            running: vec![ta(&l1.trial_id, 1).unwrap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.abandon, vec![ta(&l1.trial_id, 1).unwrap()]);

    // The new attempt retrains epoch 1 (a duplicate) and goes on.
    let r = c
        .report_epoch(report(&w2, &l2.trial_id, 2, metrics(1)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.duplicate);
    c.report_epoch(report(&w2, &l2.trial_id, 2, metrics(2)))
        .await
        .unwrap();
    c.finish(pb::FinishRequest {
        worker_id: w2.clone(),
        trial: ta(&l2.trial_id, 2),
    })
    .await
    .unwrap();
    sb.state.finish_results().await.unwrap();
    let rows: usize = read_parquet(&epoch_files(&sb.results()))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 2);
    let rec = &sb.state.records()[0];
    assert_eq!((rec.attempts, rec.worker.as_deref()), (2, Some("alive")));
    sb.stop().await;
}

#[tokio::test]
async fn failures_end_the_sweep() {
    let sb = Sandbox::start(&[hp(2, 5)], |c| c.max_attempts = 2).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    for attempt in 1..=2 {
        let Outcome::Lease(l) = lease(&mut c, &w).await else {
            panic!("expected a lease")
        };
        assert_eq!(l.attempt, attempt);
        c.fail(pb::FailRequest {
            worker_id: w.clone(),
            trial: ta(&l.trial_id, attempt),
            reason: "out of memory".into(),
            retryable: true,
        })
        .await
        .unwrap();
    }
    assert!(matches!(lease(&mut c, &w).await, Outcome::Done(_)));
    let p = sb.state.progress();
    assert_eq!((p.failed, p.is_done()), (1, true));
    sb.state.finish_results().await.unwrap();
    let trials = read_parquet(&[sb.results().join("trials.parquet")]);
    let err = trials[0].column_by_name("error").unwrap();
    let err = err.as_any().downcast_ref::<StringArray>().unwrap();
    assert!(err.value(0).contains("out of memory"), "{}", err.value(0));
    sb.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let sb = Sandbox::start(&[hp(1, 6)], |_| {}).await;
    let mut health = HealthClient::new(
        Channel::from_shared(format!("http://{}", sb.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let r = health
        .check(HealthCheckRequest {
            service: "sweep.v1.Coordinator".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
    sb.stop().await;
}

fn chunks(
    worker: &str,
    trial: &str,
    attempt: u32,
    name: &str,
    parts: Vec<Vec<u8>>,
) -> Vec<pb::ArtifactChunk> {
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            if i == 0 {
                pb::ArtifactChunk {
                    worker_id: worker.into(),
                    trial: ta(trial, attempt),
                    name: name.into(),
                    data,
                }
            } else {
                pb::ArtifactChunk {
                    data,
                    ..Default::default()
                }
            }
        })
        .collect()
}

#[tokio::test]
async fn artifacts_are_stored_under_plain_allowed_names_only() {
    let sb = Sandbox::start(&[hp(1, 7)], |c| c.max_artifact_bytes = 1000).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let Outcome::Lease(l) = lease(&mut c, &w).await else {
        panic!("expected a lease")
    };
    let id = l.trial_id.clone();
    let upload =
        |name: &str, parts: Vec<Vec<u8>>| tokio_stream::iter(chunks(&w, &id, 1, name, parts));

    for bad in ["../x", "a/b", "..", ".hidden", "x\\y", "notes.txt", ""] {
        let e = c
            .upload_artifact(upload(bad, vec![b"data".to_vec()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = c
        .upload_artifact(tokio_stream::iter(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .upload_artifact(tokio_stream::iter(chunks(
            &w,
            &id,
            2,
            "config.json",
            vec![b"{}".to_vec()],
        )))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "not the current attempt"
    );

    let r = c
        .upload_artifact(upload(
            "model.safetensors",
            vec![vec![1u8; 300], vec![2u8; 200]],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.bytes, 500);
    let dir = sb.results().join("artifacts").join(&id);
    let stored = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(stored.len(), 500);
    assert_eq!((stored[0], stored[499]), (1, 2));

    let e = c
        .upload_artifact(upload(
            "predictions.safetensors",
            vec![vec![0u8; 600], vec![0u8; 600]],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("model.safetensors")],
        "no temp file or partial artifact"
    );
    assert!(!sb.results().join("x").exists());
    sb.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_coordinator_and_health() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let sb = Sandbox::start(&[hp(1, 8)], |_| {}).await;
    let channel = Channel::from_shared(format!("http://{}", sb.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}")
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains("sweep.v1.Coordinator"), "{names:?}");
    assert!(names.contains("grpc.health.v1.Health"), "{names:?}");
    sb.stop().await;
}
