//! Training on a subset of the real Fashion-MNIST (`scripts/setup.sh data` puts it in
//! `data/fashion-mnist`; CI runs the setup first).

use proto::{Arch, EpochMetrics, Hyperparams};
use std::process::Command;
use tch::nn::ModuleT;
use tch::Device;
use worker::data::Subset;
use worker::train::Trial;

fn data() -> dataset::FashionMnist {
    let dir = dataset::locate(None).expect("Fashion-MNIST (run `bash scripts/setup.sh data`)");
    dataset::load(&dir).expect("verified Fashion-MNIST")
}

/// libtorch's random generator is global to the process and the test harness runs tests on
/// several threads: trials in this file train one at a time, or their draws interleave.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(h: &Hyperparams, subset: Subset) -> (Trial, Vec<EpochMetrics>) {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    worker::device::set_threads(1);
    let d = data();
    let mut trial = Trial::new(h, &d, subset, Device::Cpu).unwrap();
    let mut out = Vec::new();
    trial.run(&mut out).unwrap();
    (trial, out)
}

const SMALL: Subset = Subset {
    train: Some(6400),
    test: Some(1000),
};

#[test]
fn data_matches_the_published_facts() {
    let d = data();
    assert_eq!(d.train.len(), 60_000);
    assert_eq!(d.test.len(), 10_000);
    assert_eq!(&d.train.labels[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(&d.test.labels[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    for c in 0..10u8 {
        assert_eq!(d.train.labels.iter().filter(|&&l| l == c).count(), 6000);
    }
}

#[test]
fn a_few_hundred_steps_lower_the_loss_for_every_architecture() {
    for arch in Arch::ALL {
        let hidden = if arch == Arch::Cnn { 4 } else { 32 };
        let subset = if arch == Arch::Cnn {
            Subset {
                train: Some(3200),
                test: Some(500),
            }
        } else {
            SMALL
        };
        let h = Hyperparams {
            arch,
            hidden,
            dropout: 0.25,
            lr: 0.1,
            epochs: 4,
            validation: 0.1,
            ..Default::default()
        };
        let (_, m) = run(&h, subset);
        assert_eq!(m.len(), 4);
        let (first, last) = (m[0], m[3]);
        assert!(
            last.train_loss < first.train_loss,
            "{arch}: {first:?} -> {last:?}"
        );
        assert!(last.val_acc > 0.5, "{arch}: {last:?}");
        for e in &m {
            for acc in [e.train_acc, e.val_acc, e.test_acc] {
                assert!((0.0..=1.0).contains(&acc), "{arch}: {e:?}");
            }
        }
    }
}

#[test]
fn same_seed_same_numbers_other_seed_other_numbers() {
    let h = Hyperparams {
        arch: Arch::Ffv3,
        hidden: 32,
        dropout: 0.25,
        epochs: 2,
        ..Default::default()
    };
    let (_, a) = run(&h, SMALL);
    let (_, b) = run(&h, SMALL);
    let strip = |m: &[EpochMetrics]| {
        m.iter()
            .map(|e| EpochMetrics { seconds: 0.0, ..*e })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    let (_, c) = run(&Hyperparams { seed: 56, ..h }, SMALL);
    assert_ne!(strip(&a), strip(&c));
}

#[test]
fn validation_split_is_stratified_and_zero_means_none() {
    let d = data();
    let (train, val) = worker::data::stratified_split(&d.train.labels, 0.1, 55);
    assert_eq!(train.len(), 54_000);
    assert_eq!(val.len(), 6_000);
    for c in 0..10u8 {
        assert_eq!(val.iter().filter(|&&i| d.train.labels[i] == c).count(), 600);
    }
    let (train2, val2) = worker::data::stratified_split(&d.train.labels, 0.1, 55);
    assert_eq!((train, val), (train2, val2));
    let h = Hyperparams {
        validation: 0.0,
        epochs: 1,
        ..Default::default()
    };
    let (trial, m) = run(&h, SMALL);
    assert!(trial.splits.validation.is_none());
    assert_eq!(trial.splits.train.len(), 6400);
    assert!(m[0].val_acc.is_nan());
}

#[test]
fn the_last_partial_batch_is_trained() {
    // 6400 * 0.9 = 5760 = 90 batches of 64; 6410 leaves a 10-image batch at the end.
    let h = Hyperparams {
        validation: 0.0,
        epochs: 1,
        ..Default::default()
    };
    let (trial, m) = run(
        &h,
        Subset {
            train: Some(6410),
            test: Some(100),
        },
    );
    assert_eq!(trial.splits.train.len(), 6410);
    // train_acc is a multiple of 1/6410, which it cannot be if images were dropped.
    let correct = m[0].train_acc * 6410.0;
    assert!(
        (correct - correct.round()).abs() < 1e-6,
        "{}",
        m[0].train_acc
    );
}

#[test]
fn checkpoint_round_trips_through_safetensors() {
    let h = Hyperparams {
        arch: Arch::Cnn,
        hidden: 4,
        epochs: 1,
        ..Default::default()
    };
    let (trial, _) = run(
        &h,
        Subset {
            train: Some(640),
            test: Some(200),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    trial
        .save_artifacts(dir.path(), serde_json::json!({}))
        .unwrap();
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let net = worker::model::Net::new(&vs.root(), &h);
    vs.load(dir.path().join("model.safetensors")).unwrap();
    let x = trial.splits.test.images.narrow(0, 0, 8);
    let x = worker::data::normalize(&x);
    let a = tch::no_grad(|| trial.net.forward_t(&x, false));
    let b = tch::no_grad(|| net.forward_t(&x, false));
    assert!(a.allclose(&b, 0.0, 0.0, false));
    let preds = tch::Tensor::read_safetensors(dir.path().join("predictions.safetensors")).unwrap();
    let probs = &preds.iter().find(|(n, _)| n == "probs").unwrap().1;
    assert_eq!(probs.size(), vec![200, 10]);
    let sums = probs.sum_dim_intlist(-1, false, tch::Kind::Float);
    assert!(sums.allclose(
        &tch::Tensor::ones([200], (tch::Kind::Float, Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["trial_id"], h.trial_id().to_string());
    assert_eq!(config["hparams"]["arch"], "cnn");
}

fn worker_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["--arch", "resnet", "--lr", "0.1"], "unknown architecture"),
        (&["--arch", "ffv0", "--lr", "0"], "--lr"),
        (
            &["--arch", "ffv3", "--lr", "0.1", "--dropout", "1"],
            "--dropout",
        ),
        (
            &["--arch", "ffv0", "--lr", "0.1", "--hidden", "0"],
            "--hidden",
        ),
        (
            &["--arch", "ffv0", "--lr", "0.1", "--epochs", "0"],
            "--epochs",
        ),
        (
            &["--arch", "ffv0", "--lr", "0.1", "--device", "tpu"],
            "--device",
        ),
    ];
    for (args, needle) in cases {
        let out = worker_cmd().arg("train").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_corrupt_data_file_is_named() {
    let src = dataset::locate(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in [
        dataset::TRAIN_IMAGES,
        dataset::TRAIN_LABELS,
        dataset::TEST_IMAGES,
        dataset::TEST_LABELS,
    ] {
        let p = dataset::file_path(&src, &f).unwrap();
        let bytes = dataset::read_idx(&p, &f).unwrap();
        let mut raw = if f.magic == 0x0803 {
            let mut h = vec![0, 0, 8, 3];
            h.extend_from_slice(&f.count.to_be_bytes());
            h.extend_from_slice(&28u32.to_be_bytes());
            h.extend_from_slice(&28u32.to_be_bytes());
            h
        } else {
            let mut h = vec![0, 0, 8, 1];
            h.extend_from_slice(&f.count.to_be_bytes());
            h
        };
        raw.extend_from_slice(&bytes);
        if f.stem == dataset::TEST_LABELS.stem {
            let n = raw.len();
            raw[n - 1] ^= 1; // one flipped label: only the checksum can tell
        }
        std::fs::write(dir.path().join(f.stem), raw).unwrap();
    }
    let out = worker_cmd()
        .args([
            "train",
            "--arch",
            "ffv0",
            "--lr",
            "0.1",
            "--epochs",
            "1",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("MD5"),
        "{err}"
    );
}

#[test]
fn json_format_prints_only_epoch_objects() {
    let out = worker_cmd()
        .args([
            "train", "--arch", "ffv1", "--lr", "0.1", "--epochs", "2", "--format", "json",
        ])
        .args(["--train-limit", "2000", "--test-limit", "500"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["epoch"], i + 1);
        for k in [
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "test_loss",
            "test_acc",
            "seconds",
        ] {
            assert!(v[k].is_number(), "{k} in {l}");
        }
    }
}
