//! Training on a subset of the real Fashion-MNIST (`scripts/setup.sh data` puts it in
//! `data/fashion-mnist`; CI runs the setup first).

use proto::{Arch, EpochMetrics, Hyperparams};
use std::process::Command;
use tch::Device;
use worker::data::Subset;
use worker::train::{Epoch, Trial};

#[path = "train/fused.rs"]
mod fused;

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

/// Metrics without the wall time, which no two runs share.
fn strip(m: &[EpochMetrics]) -> Vec<EpochMetrics> {
    m.iter()
        .map(|e| EpochMetrics { seconds: 0.0, ..*e })
        .collect()
}

/// Trains `h` up to epoch `stop` (by asking for `stop` epochs of otherwise the same trial
/// would change its id: instead the sink stops it) with a checkpoint every epoch, and
/// returns the metrics and checkpoints it saw.
fn run_with_checkpoints(
    h: &Hyperparams,
    subset: Subset,
    stop: u32,
) -> (Vec<EpochMetrics>, Vec<Vec<u8>>) {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    worker::device::set_threads(1);
    let d = data();
    let mut trial = Trial::new(h, &d, subset, Device::Cpu).unwrap();
    trial.checkpoint_every_epoch = true;
    let (mut metrics, mut checkpoints) = (Vec::new(), Vec::new());
    let r = trial.run(&mut |e: &Epoch<'_>| {
        metrics.push(e.metrics);
        checkpoints.push(e.checkpoint.expect("a checkpoint every epoch").to_vec());
        if e.metrics.epoch == stop {
            return Err(worker::Error::Abandoned("simulated crash".into()));
        }
        Ok(())
    });
    assert!(
        matches!(r, Err(worker::Error::Abandoned(_))) || stop >= h.epochs,
        "{r:?}"
    );
    assert_eq!(trial.epochs_done(), stop);
    (metrics, checkpoints)
}

/// A fresh trial (new process state but the libtorch generator) restored from `checkpoint`
/// and trained to the end.
fn resume(h: &Hyperparams, subset: Subset, checkpoint: &[u8]) -> (Trial, Vec<EpochMetrics>) {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    worker::device::set_threads(1);
    let d = data();
    // Draw from the generator in between, as another trial on this worker would have.
    let _ = tch::Tensor::randn([1000], (tch::Kind::Float, Device::Cpu));
    let mut trial = Trial::new(h, &d, subset, Device::Cpu).unwrap();
    let epoch = trial.restore(checkpoint).unwrap();
    assert_eq!(trial.epochs_done(), epoch);
    let mut out = Vec::new();
    trial.run(&mut out).unwrap();
    (trial, out)
}

fn assert_resuming_changes_nothing(h: &Hyperparams, subset: Subset, stop: u32) {
    let (_, whole) = run(h, subset);
    assert_eq!(whole.len(), h.epochs as usize);
    let (before, checkpoints) = run_with_checkpoints(h, subset, stop);
    assert_eq!(strip(&before), strip(&whole[..stop as usize]), "{h:?}");
    let (trial, after) = resume(h, subset, &checkpoints[stop as usize - 1]);
    assert_eq!(
        strip(&after),
        strip(&whole[stop as usize..]),
        "{}: resumed after epoch {stop}",
        h.label()
    );
    // The history survives the checkpoint, so config.json lists every epoch.
    assert_eq!(strip(&trial.history), strip(&whole), "{}", h.label());
    // Bitwise, not just close: every f64 field is compared with ==, and so are these.
    for (a, b) in after.iter().zip(&whole[stop as usize..]) {
        assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
        assert_eq!(a.test_loss.to_bits(), b.test_loss.to_bits());
    }
}

#[test]
fn a_resumed_trial_matches_an_uninterrupted_one_mlp() {
    let h = Hyperparams {
        arch: Arch::Ffv3,
        hidden: 32,
        dropout: 0.25,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
        epochs: 3,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(2000),
        test: Some(500),
    };
    assert_resuming_changes_nothing(&h, subset, 1);
    assert_resuming_changes_nothing(&h, subset, 2);
}

#[test]
fn a_resumed_trial_matches_an_uninterrupted_one_cnn() {
    let h = Hyperparams {
        arch: Arch::Cnn,
        hidden: 4,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
        epochs: 2,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(640),
        test: Some(200),
    };
    assert_resuming_changes_nothing(&h, subset, 1);
}

#[test]
fn a_resumed_trial_matches_without_momentum_and_from_epoch_zero() {
    let h = Hyperparams {
        arch: Arch::Ffv1,
        hidden: 16,
        lr: 0.1,
        epochs: 2,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(1000),
        test: Some(200),
    };
    assert_resuming_changes_nothing(&h, subset, 1);
    // A checkpoint taken before any training resumes into the whole run.
    let (_, whole) = run(&h, subset);
    let fresh = {
        let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
        Trial::new(&h, &data(), subset, Device::Cpu)
            .unwrap()
            .checkpoint()
            .unwrap()
    };
    let (_, all) = resume(&h, subset, &fresh);
    assert_eq!(strip(&all), strip(&whole));
}

#[test]
fn a_checkpoint_is_named_safetensors_with_metadata() {
    let h = Hyperparams {
        arch: Arch::Ffv0,
        hidden: 8,
        momentum: 0.5,
        epochs: 2,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(500),
        test: Some(100),
    };
    let (_, checkpoints) = run_with_checkpoints(&h, subset, 2);
    let st = safetensors::SafeTensors::deserialize(&checkpoints[0]).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "capas.1.bias",
            "capas.1.weight",
            "capas.3.bias",
            "capas.3.weight",
            "optimizer.momentum.capas.1.bias",
            "optimizer.momentum.capas.1.weight",
            "optimizer.momentum.capas.3.bias",
            "optimizer.momentum.capas.3.weight",
            "trial.history",
        ]
    );
    let w = st.tensor("capas.1.weight").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    assert_eq!(w.shape(), [8, 784]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&checkpoints[1]).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["format"], "hypersweep-checkpoint/2");
    assert_eq!(meta["trial_id"], h.trial_id().to_string());
    assert_eq!(meta["epoch"], "2");
    assert_eq!(meta["seed"], h.seed.to_string());
}

#[test]
fn restore_rejects_what_cannot_resume_this_trial() {
    let h = Hyperparams {
        arch: Arch::Ffv3,
        hidden: 8,
        dropout: 0.25,
        momentum: 0.9,
        epochs: 2,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(500),
        test: Some(100),
    };
    let (_, checkpoints) = run_with_checkpoints(&h, subset, 1);
    let good = &checkpoints[0];
    let other_lr = Hyperparams { lr: 0.05, ..h };
    let (_, other_trial) = run_with_checkpoints(&other_lr, subset, 1);
    let other_size = Hyperparams { hidden: 9, ..h };
    let (_, other_shape) = run_with_checkpoints(&other_size, subset, 1);
    // The same trial on more data: the trial id matches, the data does not.
    let (_, other_subset) = run_with_checkpoints(
        &h,
        Subset {
            train: Some(600),
            ..subset
        },
        1,
    );

    // Rebuilds `good` with `edit` applied to its tensors and metadata.
    let rebuild = |edit: &Edit| {
        let st = safetensors::SafeTensors::deserialize(good).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(good).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let mut tensors = st.tensors();
        edit(&mut tensors, &mut meta);
        safetensors::serialize(tensors, Some(meta)).unwrap()
    };
    let missing = rebuild(&|t, _| t.retain(|(n, _)| n != "capas.5.weight"));
    let no_momentum = rebuild(&|t, _| t.retain(|(n, _)| !n.starts_with("optimizer.")));
    let unknown = rebuild(&|t, _| {
        let (_, v) = t[0].clone();
        t.push(("capas.9.weight".into(), v));
    });
    let wrong_format = rebuild(&|_, m| {
        m.insert("format".into(), "something-else/1".into());
    });
    let future_epoch = rebuild(&|_, m| {
        m.insert("epoch".into(), "7".into());
    });
    let wrong_shape = rebuild(&|t, _| {
        let seven = t
            .iter()
            .find(|(n, _)| n == "capas.7.bias")
            .unwrap()
            .1
            .clone();
        let one = t.iter_mut().find(|(n, _)| n == "capas.1.bias").unwrap();
        one.1 = seven; // [10] where [8] belongs
    });
    let nan_epoch = rebuild(&|_, m| {
        m.insert("epoch".into(), "one".into());
    });
    let no_metadata = {
        let st = safetensors::SafeTensors::deserialize(good).unwrap();
        safetensors::serialize(st.tensors(), None).unwrap()
    };
    let mut flipped = good.clone();
    flipped[3] ^= 0x40; // the header length

    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "garbage",
            b"definitely not a checkpoint",
            "not a readable safetensors",
        ),
        ("empty", b"", "not a readable safetensors"),
        ("truncated", &good[..good.len() - 100], "truncated"),
        ("header cut", &good[..50], "not a readable safetensors"),
        (
            "flipped header length",
            &flipped,
            "not a readable safetensors",
        ),
        ("another trial", &other_trial[0], "of trial"),
        ("another shape", &other_shape[0], "of trial"),
        ("another subset", &other_subset[0], "train_images"),
        ("missing tensor", &missing, "\"capas.5.weight\" is missing"),
        ("wrong shape", &wrong_shape, "\"capas.1.bias\" is F32 [10]"),
        ("no momentum", &no_momentum, "optimizer.momentum."),
        (
            "unknown tensor",
            &unknown,
            "unexpected tensor \"capas.9.weight\"",
        ),
        ("wrong format", &wrong_format, "something-else/1"),
        ("epoch past the end", &future_epoch, "epoch 7"),
        ("epoch not a number", &nan_epoch, "\"one\""),
        ("no metadata", &no_metadata, "no \"format\""),
    ];
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let mut trial = Trial::new(&h, &data(), subset, Device::Cpu).unwrap();
    let before = trial.checkpoint().unwrap();
    for (what, bytes, needle) in cases {
        let err = trial.restore(bytes).unwrap_err();
        assert!(
            matches!(err, worker::Error::Checkpoint(_)),
            "{what}: {err:?}"
        );
        assert!(!err.is_retryable(), "{what}");
        let msg = err.to_string();
        assert!(msg.contains(needle), "{what}: {msg}");
        assert_eq!(trial.epochs_done(), 0, "{what}");
    }
    // Nothing changed on the way, and the good one still restores.
    assert_eq!(contents(&trial.checkpoint().unwrap()), contents(&before));
    assert_eq!(trial.restore(good).unwrap(), 1);
    assert_eq!(contents(&trial.checkpoint().unwrap()), contents(good));
}

/// A change to a checkpoint's tensors and metadata.
type Edit = dyn Fn(
    &mut Vec<(String, safetensors::tensor::TensorView<'_>)>,
    &mut std::collections::HashMap<String, String>,
);

type Contents = (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
);

/// A checkpoint's metadata and tensors, comparable (its bytes are not: safetensors writes
/// the metadata map in hash order).
fn contents(bytes: &[u8]) -> Contents {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let meta = header.metadata().clone().unwrap().into_iter().collect();
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    (meta, tensors)
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
    let a = tch::no_grad(|| trial.net.forward(&x, None));
    let b = tch::no_grad(|| net.forward(&x, None));
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

/// Fails the test with the worker's stderr unless it exited 0.
#[track_caller]
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// `HYPERSWEEP_MKL` (worker::mkl) takes `vendor` or nothing: anything else is refused before
/// training, in one line that names the variable.
#[test]
fn an_unknown_mkl_setting_is_refused() {
    let args = ["train", "--arch", "ffv0", "--lr", "0.1", "--epochs", "1"];
    let out = worker_cmd()
        .args(args)
        .env("HYPERSWEEP_MKL", "intel")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("HYPERSWEEP_MKL=\"intel\""), "{err}");
    assert!(out.stdout.is_empty());
    let out = worker_cmd()
        .args(args)
        .args([
            "--train-limit",
            "640",
            "--test-limit",
            "100",
            "--format",
            "json",
        ])
        .env("HYPERSWEEP_MKL", "vendor")
        .output()
        .unwrap();
    assert_success(&out);
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
    assert_success(&out);
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

#[test]
fn the_hand_written_sgd_steps_as_libtorchs() {
    use tch::nn::{self, Module, OptimizerConfig};
    use tch::{Kind, Tensor};
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    worker::device::set_threads(1);
    for (momentum, wd) in [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-2), (0.9, 1e-2)] {
        tch::manual_seed(3);
        let build = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = nn::seq()
                .add(nn::linear(vs.root() / "a", 20, 16, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(vs.root() / "b", 16, 4, Default::default()));
            (vs, net)
        };
        let (vs_ref, net_ref) = build();
        let (mut vs, net) = build();
        vs.copy(&vs_ref).unwrap();
        let mut reference = nn::Sgd {
            momentum,
            dampening: 0.0,
            wd,
            nesterov: false,
        }
        .build(&vs_ref, 0.1)
        .unwrap();
        let mut ours = worker::sgd::Sgd::new(&vs, 0.1, momentum, wd);
        for _ in 0..5 {
            let x = Tensor::randn([32, 20], (Kind::Float, Device::Cpu));
            let y = Tensor::randint(4, [32], (Kind::Int64, Device::Cpu));
            reference.backward_step(&net_ref.forward(&x).cross_entropy_for_logits(&y));
            ours.backward_step(&net.forward(&x).cross_entropy_for_logits(&y))
                .unwrap();
        }
        let (a, b) = (vs_ref.variables(), vs.variables());
        for (name, t) in &a {
            // Bit for bit with libtorch 2.11 on x86-64; allow for kernels that fuse
            // multiply-adds differently elsewhere.
            assert!(
                t.allclose(&b[name], 1e-6, 1e-7, false),
                "momentum {momentum}, weight decay {wd}: {name} differs by {}",
                (t - &b[name]).abs().max().double_value(&[])
            );
        }
        assert_eq!(
            ours.momentum_buffers().count(),
            if momentum != 0.0 { 4 } else { 0 }
        );
    }
}

/// The accuracy of `predictions.safetensors` in `dir`: the argmax of each row against its label.
fn predictions_accuracy(dir: &std::path::Path) -> f64 {
    let preds = tch::Tensor::read_safetensors(dir.join("predictions.safetensors")).unwrap();
    let get = |name: &str| &preds.iter().find(|(n, _)| n == name).unwrap().1;
    let (probs, labels) = (get("probs"), get("labels"));
    let correct = probs
        .argmax(-1, false)
        .eq_tensor(labels)
        .sum(tch::Kind::Int64)
        .int64_value(&[]);
    correct as f64 / labels.size()[0] as f64
}

#[test]
fn the_artifacts_hold_the_best_epochs_weights_even_after_a_resume() {
    use results_format::{Goal, Metric, Mode};
    // Judged on the lowest validation accuracy, so that the best epoch is not the last:
    // the artifacts must be that epoch's, not the last one's, and survive a resume.
    let goal = Goal::new(Metric::ValAcc, Mode::Min);
    let h = Hyperparams {
        arch: Arch::Ffv1,
        hidden: 16,
        lr: 0.05,
        epochs: 3,
        ..Default::default()
    };
    let subset = Subset {
        train: Some(1000),
        test: Some(300),
    };
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    worker::device::set_threads(1);
    let d = data();
    let mut first = Trial::new(&h, &d, subset, Device::Cpu).unwrap();
    first.set_goal(goal);
    first.checkpoint_every_epoch = true;
    let mut checkpoints = Vec::new();
    let stopped = first.run(&mut |e: &Epoch<'_>| {
        checkpoints.push(e.checkpoint.unwrap().to_vec());
        if e.metrics.epoch == 2 {
            return Err(worker::Error::Abandoned("simulated crash".into()));
        }
        Ok(())
    });
    assert!(matches!(stopped, Err(worker::Error::Abandoned(_))));
    // The weights after epoch 1, to compare the saved model with.
    let epoch1 = {
        let mut t = Trial::new(&h, &d, subset, Device::Cpu).unwrap();
        t.restore(&checkpoints[0]).unwrap();
        t.vs.variables()
    };
    let mut resumed = Trial::new(&h, &d, subset, Device::Cpu).unwrap();
    resumed.set_goal(goal);
    assert_eq!(resumed.restore(&checkpoints[1]).unwrap(), 2);
    resumed.run(&mut Vec::new()).unwrap();
    // The one best-epoch rule, over the recorded epochs, as the report applies it.
    let best = results_format::best::best_epoch(goal, &resumed.history)
        .unwrap()
        .epoch;
    assert_eq!(resumed.best.best().map(|b| b.epoch), Some(best));
    assert!(
        best < 3,
        "the test needs a best epoch before the last: {:?}",
        resumed.history
    );
    let accs: Vec<f64> = resumed.history.iter().map(|m| m.val_acc).collect();
    eprintln!("best epoch {best} of val_acc {accs:?}");
    let dir = tempfile::tempdir().unwrap();
    resumed
        .save_artifacts(dir.path(), serde_json::json!({}))
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["best_epoch"], best);
    assert_eq!(
        (config["metric"].as_str(), config["mode"].as_str()),
        (Some("val_acc"), Some("min"))
    );
    // The saved predictions score exactly the best epoch's recorded test accuracy ...
    let recorded = resumed.history[best as usize - 1].test_acc;
    assert_eq!(predictions_accuracy(dir.path()), recorded);
    assert_ne!(
        recorded, resumed.history[2].test_acc,
        "epochs 1 and 3 must differ to tell"
    );
    // ... and the saved model is that epoch's weights, bit for bit.
    if best == 1 {
        let mut vs = tch::nn::VarStore::new(Device::Cpu);
        let _net = worker::model::Net::new(&vs.root(), &h);
        vs.load(dir.path().join("model.safetensors")).unwrap();
        for (name, t) in vs.variables() {
            assert!(t.equal(&epoch1[&name]), "{name}");
        }
    }
}

#[test]
fn dropout_masks_are_the_trials_own() {
    // Two trials that differ only in their number of epochs share seed, initial weights and
    // shuffle but not their id: only their dropout masks tell them apart.
    let subset = Subset {
        train: Some(2000),
        test: Some(300),
    };
    let first_epoch = |arch, hidden, epochs| {
        let h = Hyperparams {
            arch,
            hidden,
            dropout: 0.25,
            epochs,
            ..Default::default()
        };
        let (_, m) = run(&h, subset);
        strip(&m[..1])
    };
    let (a, b) = (
        first_epoch(Arch::Ffv3, 32, 2),
        first_epoch(Arch::Ffv3, 32, 3),
    );
    assert_ne!(a, b, "two trials with one seed drew the same masks");
    // Without dropout the same two trials train alike: the difference above is the masks'.
    assert_eq!(
        first_epoch(Arch::Ffv2, 32, 2),
        first_epoch(Arch::Ffv2, 32, 3)
    );

    // The same trial in another process, where libtorch's generator has been drawn from in
    // between and another trial trained first, gets the same masks: the same numbers.
    let h = Hyperparams {
        arch: Arch::Ffv3,
        hidden: 32,
        dropout: 0.25,
        epochs: 2,
        ..Default::default()
    };
    let out = worker_cmd()
        .args([
            "train",
            "--arch",
            "ffv3",
            "--hidden",
            "32",
            "--dropout",
            "0.25",
        ])
        .args([
            "--lr",
            &h.lr.to_string(),
            "--epochs",
            "2",
            "--format",
            "json",
        ])
        .args([
            "--train-limit",
            "2000",
            "--test-limit",
            "300",
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let other_process: Vec<EpochMetrics> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let _ = tch::Tensor::rand([777], (tch::Kind::Float, Device::Cpu));
    let (_, here) = run(&h, subset);
    for (a, b) in here.iter().zip(&other_process) {
        // Training, where the masks act, bit for bit.
        assert_eq!(
            a.train_loss.to_bits(),
            b.train_loss.to_bits(),
            "{a:?} {b:?}"
        );
        assert_eq!(a.train_acc, b.train_acc);
        // Evaluation too. (Through serde_json's default parser a loss once came back one ulp
        // off, and this test allowed 1e-12 here; with `float_roundtrip` it reads what the
        // worker printed.)
        for (x, y) in [(a.val_loss, b.val_loss), (a.test_loss, b.test_loss)] {
            assert_eq!(x.to_bits(), y.to_bits(), "{a:?} {b:?}");
        }
        assert_eq!((a.val_acc, a.test_acc), (b.val_acc, b.test_acc));
    }
    assert_eq!(here.len(), other_process.len());
}

#[test]
fn the_cnn_saves_the_notebooks_names_in_nchw() {
    let h = Hyperparams {
        arch: Arch::Cnn,
        hidden: 4,
        epochs: 1,
        validation: 0.0,
        ..Default::default()
    };
    let (trial, _) = run(
        &h,
        Subset {
            train: Some(320),
            test: Some(50),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    trial
        .save_artifacts(dir.path(), serde_json::json!({}))
        .unwrap();
    let saved = tch::Tensor::read_safetensors(dir.path().join("model.safetensors")).unwrap();
    let saved: std::collections::BTreeMap<String, tch::Tensor> = saved.into_iter().collect();
    let shapes: Vec<(&str, Vec<i64>)> = saved.iter().map(|(n, t)| (n.as_str(), t.size())).collect();
    assert_eq!(
        shapes,
        [
            ("block_1.0.bias", vec![4]),
            ("block_1.0.weight", vec![4, 1, 3, 3]),
            ("block_1.2.bias", vec![4]),
            ("block_1.2.weight", vec![4, 4, 3, 3]),
            ("block_2.0.bias", vec![4]),
            ("block_2.0.weight", vec![4, 4, 3, 3]),
            ("block_2.2.bias", vec![4]),
            ("block_2.2.weight", vec![4, 4, 3, 3]),
            ("classifier.1.bias", vec![10]),
            ("classifier.1.weight", vec![10, 196]),
        ]
    );
    // The notebook's forward, written here with plain NCHW ops on the saved tensors, gives
    // the trained network's logits: the weights are in the notebook's layout.
    let w = |n: &str| &saved[n];
    let conv = |x: &tch::Tensor, l: &str| {
        x.conv2d(
            w(&format!("{l}.weight")),
            Some(w(&format!("{l}.bias"))),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
        .relu()
    };
    let x = worker::data::normalize(&trial.splits.test.images.narrow(0, 0, 16));
    let notebook = tch::no_grad(|| {
        let x = conv(&conv(&x, "block_1.0"), "block_1.2").max_pool2d_default(2);
        let x = conv(&conv(&x, "block_2.0"), "block_2.2").max_pool2d_default(2);
        x.flatten(1, -1)
            .linear(w("classifier.1.weight"), Some(w("classifier.1.bias")))
    });
    let ours = tch::no_grad(|| trial.net.forward(&x, None));
    assert!(
        ours.allclose(&notebook, 1e-5, 1e-5, false),
        "max difference {}",
        (&ours - &notebook).abs().max().double_value(&[])
    );
}
