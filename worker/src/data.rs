//! Fashion-MNIST as tensors, loaded once.
//!
//! Images stay as bytes (`Uint8`, 47 MB for the training set instead of 188 MB as floats) and
//! are converted per batch with the notebook's `ToTensor()` + `Normalize((0.5,), (0.5,))`,
//! i.e. `x / 255` then `(x - 0.5) / 0.5`. An epoch is a permutation plus slices: no per-sample
//! work.

use crate::{Error, Result};
use dataset::{FashionMnist, PIXELS, SIDE};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

/// One split on the training device: images `[N, 1, 28, 28]` as `Uint8`, labels `[N]` as `Int64`.
#[derive(Debug)]
pub struct TensorSplit {
    pub images: Tensor,
    pub labels: Tensor,
}

impl TensorSplit {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn from_indices(split: &dataset::Split, idx: &[usize], device: Device) -> TensorSplit {
        let mut images = Vec::with_capacity(idx.len() * PIXELS);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(split.image(i));
            labels.push(i64::from(split.labels[i]));
        }
        let n = idx.len() as i64;
        TensorSplit {
            images: Tensor::from_slice(&images)
                .view([n, 1, SIDE as i64, SIDE as i64])
                .to_device(device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    }
}

/// Bytes to normalized floats in [-1, 1], as the notebook's transforms.
pub fn normalize(images_u8: &Tensor) -> Tensor {
    images_u8.to_kind(Kind::Float) / 127.5 - 1.0
}

/// Train, validation (possibly empty) and test splits.
#[derive(Debug)]
pub struct Splits {
    pub train: TensorSplit,
    pub validation: Option<TensorSplit>,
    pub test: TensorSplit,
}

/// Limits for training on a subset of the data (tests and smoke runs): the first `train`
/// training images and the first `test` test images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subset {
    pub train: Option<usize>,
    pub test: Option<usize>,
}

/// Splits the data: a stratified validation split of `validation` (a fraction of the
/// training images, per class, rounded) chosen by `seed`, the rest for training, and the
/// test set as it is.
pub fn split(
    data: &FashionMnist,
    validation: f64,
    seed: u64,
    subset: Subset,
    device: Device,
) -> Result<Splits> {
    let n_train = subset
        .train
        .unwrap_or(data.train.len())
        .min(data.train.len());
    let n_test = subset.test.unwrap_or(data.test.len()).min(data.test.len());
    if n_train == 0 || n_test == 0 {
        return Err(Error::InvalidArgument("the data subset is empty".into()));
    }
    let (train_idx, val_idx) = stratified_split(&data.train.labels[..n_train], validation, seed);
    if train_idx.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "validation fraction {validation} leaves no training images"
        )));
    }
    let test_idx: Vec<usize> = (0..n_test).collect();
    Ok(Splits {
        train: TensorSplit::from_indices(&data.train, &train_idx, device),
        validation: (!val_idx.is_empty())
            .then(|| TensorSplit::from_indices(&data.train, &val_idx, device)),
        test: TensorSplit::from_indices(&data.test, &test_idx, device),
    })
}

/// Per class, shuffles that class's indices with a ChaCha RNG seeded by `seed` and holds out
/// `round(fraction * class size)` of them. Both halves come back sorted, so the training set
/// keeps the file's order (the per-epoch shuffle is libtorch's, seeded separately).
pub fn stratified_split(labels: &[u8], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ SPLIT_STREAM);
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for class in 0..=9u8 {
        let mut idx: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == class)
            .map(|(i, _)| i)
            .collect();
        idx.shuffle(&mut rng);
        let k = (fraction * idx.len() as f64).round() as usize;
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Keeps the validation split's random stream apart from other uses of the same seed.
const SPLIT_STREAM: u64 = 0x5eed_0000_5b11_7000;
