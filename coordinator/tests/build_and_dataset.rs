//! Issue 10 on the wire, against a real service: the worker's build and protocol at
//! `Register` (a protocol the coordinator does not serve is refused, naming both and the
//! matching workers), the build in `trials.parquet` and the machine in every epoch row, and
//! `FetchDataset` streaming the coordinator's Fashion-MNIST in chunks while counting the bytes.

use crate::common::{hp, Sandbox};
use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proto::pb::{self, lease_response::Outcome};
use std::path::{Path, PathBuf};
use tonic::Code;

fn register(protocol: u32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: "gpu-1:7".into(),
        device: "cuda:0".into(),
        slots: 1,
        threads: 4,
        version: "0.5.0".into(),
        protocol,
        build_variant: "cuda".into(),
        libtorch_version: "2.11.0".into(),
        cuda_version: "13.0".into(),
        host: "gpu-1".into(),
        device_name: "NVIDIA H200".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_protocol_it_cannot_serve_is_refused_naming_both_and_the_matching_workers() {
    let sb = Sandbox::start(&[hp(1, 1)], |_| {}).await;
    let mut c = sb.client().await;
    let future = proto::PROTOCOL_VERSION + 1;
    let err = c.register(register(future)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let m = err.message();
    assert!(
        m.contains(&format!("speaks sweep.v1 protocol {future}")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "serves protocols {} to {}",
            proto::protocol::OLDEST_SERVED,
            proto::PROTOCOL_VERSION
        )),
        "{m}"
    );
    assert!(
        m.contains("workers from 0.5.0 on that send protocol 2"),
        "{m}"
    );
    assert_eq!(sb.state.progress().workers_alive, 0, "nobody registered");
    // A worker from before the protocol field (it sends 0) speaks protocol 1: served.
    let old = pb::RegisterRequest {
        protocol: 0,
        build_variant: String::new(),
        ..register(0)
    };
    c.register(old).await.unwrap();
    sb.stop().await;
}

#[tokio::test]
async fn the_build_goes_to_trials_parquet_and_the_machine_to_every_epoch_row() {
    let sb = Sandbox::start(&[hp(2, 1)], |_| {}).await;
    let mut c = sb.client().await;
    let reg = c
        .register(register(proto::PROTOCOL_VERSION))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.protocol, proto::PROTOCOL_VERSION);
    assert_eq!(reg.coordinator_version, env!("CARGO_PKG_VERSION"));
    let w = reg.worker_id;
    let Outcome::Lease(l) = c
        .lease(pb::LeaseRequest {
            worker_id: w.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap()
    else {
        panic!("expected a lease")
    };
    let trial = Some(pb::TrialAttempt {
        trial_id: l.trial_id.clone(),
        attempt: 1,
    });
    for (epoch, gpu) in [(1, Some(3 << 30)), (2, None)] {
        c.report_epoch(pb::ReportEpochRequest {
            worker_id: w.clone(),
            trial: trial.clone(),
            metrics: Some(pb::EpochMetrics {
                epoch,
                train_loss: 0.5,
                train_acc: 0.8,
                val_loss: 0.5,
                val_acc: 0.8,
                test_loss: 0.5,
                test_acc: 0.8,
                seconds: 0.1,
            }),
            checkpoint: Vec::new(),
            gpu_peak_memory_bytes: gpu,
            diverged: None,
            threads: 1,
        })
        .await
        .unwrap();
    }
    c.finish(pb::FinishRequest {
        worker_id: w,
        trial,
    })
    .await
    .unwrap();
    sb.state.finish_results().await.unwrap();

    let trials = results_format::read::read_trials(&sb.results().join("trials.parquet")).unwrap();
    assert_eq!(
        trials[0].worker_build.as_deref(),
        Some("0.5.0 (cuda build, libtorch 2.11.0, CUDA 13.0)")
    );
    let mut rows: Vec<(i64, String, String, Option<i64>)> = Vec::new();
    for b in epoch_batches(&sb.results()) {
        let s = |name| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let i = |name| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (epoch, name, host, gpu) = (
            i("epoch"),
            s("device_name"),
            s("host"),
            i("gpu_peak_memory_bytes"),
        );
        for r in 0..b.num_rows() {
            rows.push((
                epoch.value(r),
                name.value(r).to_owned(),
                host.value(r).to_owned(),
                (!gpu.is_null(r)).then(|| gpu.value(r)),
            ));
        }
    }
    rows.sort();
    let h200 = |e, gpu| (e, "NVIDIA H200".to_owned(), "gpu-1".to_owned(), gpu);
    assert_eq!(rows, [h200(1, Some(3 << 30)), h200(2, None)]);
    sb.stop().await;
}

fn epoch_batches(results: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(results.join("epochs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            out.extend(reader.map(Result::unwrap));
        }
    }
    out
}

/// The checkout's Fashion-MNIST (`bash scripts/setup.sh data`).
fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fashion-mnist");
    assert!(
        dataset::file_path(&dir, &dataset::TRAIN_LABELS).is_some(),
        "{} has no Fashion-MNIST: run `bash scripts/setup.sh data`",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn fetch_dataset_streams_the_files_in_chunks_and_counts_the_bytes() {
    let data = data_dir();
    let sb = Sandbox::start(&[hp(1, 1)], |c| c.dataset_dir = Some(data.clone())).await;
    let mut c = sb.client().await;
    let fetch = |files: &[&str]| pb::FetchDatasetRequest {
        files: files.iter().map(|f| (*f).to_owned()).collect(),
    };

    let mut stream = c.fetch_dataset(fetch(&[])).await.unwrap().into_inner();
    // name → (announced size, bytes received, chunks)
    let mut files: Vec<(String, u64, u64, u32)> = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.data.len() <= coordinator::service::dataset::CHUNK);
        if !chunk.name.is_empty() {
            files.push((chunk.name, chunk.size, 0, 0));
        }
        let last = files.last_mut().expect("the first chunk names its file");
        last.2 += chunk.data.len() as u64;
        last.3 += 1;
    }
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    let stems: Vec<&str> = dataset::FILES.iter().map(|f| f.stem).collect();
    assert_eq!(
        names
            .iter()
            .map(|n| n.trim_end_matches(".gz"))
            .collect::<Vec<_>>(),
        stems
    );
    let mut total = 0;
    for (name, size, got, _) in &files {
        let on_disk = std::fs::metadata(data.join(name)).unwrap().len();
        assert_eq!((*size, *got), (on_disk, on_disk), "{name}");
        total += on_disk;
    }
    assert!(files[0].3 > 1, "the training images come in several chunks");
    assert_eq!(sb.state.dataset_bytes_served(), total);

    // One file, by stem.
    let mut stream = c
        .fetch_dataset(fetch(&["t10k-labels-idx1-ubyte"]))
        .await
        .unwrap()
        .into_inner();
    let mut one = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        one += chunk.data.len() as u64;
    }
    let labels = dataset::file_path(&data, &dataset::TEST_LABELS).unwrap();
    assert_eq!(one, std::fs::metadata(labels).unwrap().len());
    assert_eq!(sb.state.dataset_bytes_served(), total + one);

    let err = c.fetch_dataset(fetch(&["../secret"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("no dataset file"),
        "{}",
        err.message()
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_coordinator_without_the_dataset_says_so_when_asked() {
    let sb = Sandbox::start(&[hp(1, 1)], |_| {}).await;
    let mut c = sb.client().await;
    let err = c
        .fetch_dataset(pb::FetchDatasetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("no Fashion-MNIST"),
        "{}",
        err.message()
    );
    sb.stop().await;
}
