//! Fashion-MNIST, found on disk, read and verified, as plain bytes.
//!
//! The worker turns these bytes into tensors; the report reads the test images to draw the
//! hardest samples. Neither needs the other, and this crate needs no libtorch.
//!
//! [`locate`] finds the folder holding the four original IDX files (gzip-compressed or not);
//! [`load`] reads them and checks each one: magic number, counts, length, and the MD5 of the
//! *uncompressed* bytes (Debian's `dataset-fashion-mnist` rewrote the gzip headers, so
//! checksums of the `.gz` files differ from Zalando's while the data is identical).
//! [`cli::DataArgs`] are the flags that say where the data is, shared by every command.
//! [`cache`] is where a worker keeps the copy it fetched from its coordinator (issue 10):
//! `$XDG_CACHE_HOME/hypersweep/fashion-mnist`, each file verified before it is renamed into
//! place, one writer at a time.

pub mod cache;
pub mod cli;

use md5::{Digest, Md5};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Class names in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Side of an image in pixels.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// Where [`locate`] looks when no folder is given, after `FASHION_MNIST_DIR`.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The project-local folder `scripts/setup.sh` fills.
pub const PROJECT_DIR: &str = "data/fashion-mnist";
/// The environment variable that names the data folder (after `--data-dir`).
pub const DIR_ENV: &str = "FASHION_MNIST_DIR";

/// One of the four files, with what it must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxFile {
    pub stem: &'static str,
    pub magic: u32,
    pub count: u32,
    /// MD5 of the uncompressed IDX bytes.
    pub md5: &'static str,
}

pub const TRAIN_IMAGES: IdxFile = IdxFile {
    stem: "train-images-idx3-ubyte",
    magic: 0x0803,
    count: 60_000,
    md5: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
};
pub const TRAIN_LABELS: IdxFile = IdxFile {
    stem: "train-labels-idx1-ubyte",
    magic: 0x0801,
    count: 60_000,
    md5: "9018921c3c673c538a1fc5bad174d6f9",
};
pub const TEST_IMAGES: IdxFile = IdxFile {
    stem: "t10k-images-idx3-ubyte",
    magic: 0x0803,
    count: 10_000,
    md5: "8181f5470baa50b63fa0f6fddb340f0a",
};
pub const TEST_LABELS: IdxFile = IdxFile {
    stem: "t10k-labels-idx1-ubyte",
    magic: 0x0801,
    count: 10_000,
    md5: "15d484375f8d13e6eb1aabb0c3f46965",
};

/// The four files, in the order they are read and sent.
pub const FILES: [IdxFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Fashion-MNIST not found: looked in {searched}; run `bash scripts/setup.sh data`, \
         install Debian's dataset-fashion-mnist, or set FASHION_MNIST_DIR"
    )]
    NotFound { searched: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Images as row-major bytes (0..=255), `n * PIXELS` long, and their labels (0..=9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }
}

/// The whole data set.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
}

fn has_files(dir: &Path) -> bool {
    FILES.iter().all(|f| file_path(dir, f).is_some())
}

/// Whether the user said where the data is (`--data-dir` given as `explicit`, or
/// [`DIR_ENV`]): then [`locate`] looks nowhere else, and nothing is fetched either.
pub fn is_pointed_to(explicit: Option<&Path>) -> bool {
    explicit.is_some() || std::env::var_os(DIR_ENV).is_some()
}

/// The file for `f` in `dir`, compressed (`.gz`) or not.
pub fn file_path(dir: &Path, f: &IdxFile) -> Option<PathBuf> {
    let raw = dir.join(f.stem);
    let gz = dir.join(format!("{}.gz", f.stem));
    if raw.is_file() {
        Some(raw)
    } else if gz.is_file() {
        Some(gz)
    } else {
        None
    }
}

/// Finds the data folder: `explicit` if given (it must hold the files), else
/// `FASHION_MNIST_DIR`, else `data/fashion-mnist` under the current directory or any folder
/// above the running executable (a checkout's `target/release/worker` finds the checkout's
/// data), else [`SYSTEM_DIR`].
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return if has_files(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(Error::NotFound {
                searched: format!("{} (given)", dir.display()),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if has_files(&dir) {
            Ok(dir)
        } else {
            Err(Error::NotFound {
                searched: format!("{} ({DIR_ENV})", dir.display()),
            })
        };
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join(PROJECT_DIR));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join(PROJECT_DIR)));
    }
    candidates.push(PathBuf::from(SYSTEM_DIR));
    candidates.dedup();
    for c in &candidates {
        if has_files(c) {
            return Ok(c.clone());
        }
    }
    Err(Error::NotFound {
        searched: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

impl FashionMnist {
    /// The data set from the payloads (after the headers) of [`FILES`], in that order, each
    /// already verified by [`read_idx`]; `dir` is where they are.
    pub fn from_payloads(dir: &Path, payloads: [Vec<u8>; 4]) -> FashionMnist {
        let [train_images, train_labels, test_images, test_labels] = payloads;
        FashionMnist {
            dir: dir.to_path_buf(),
            train: Split {
                images: train_images,
                labels: train_labels,
            },
            test: Split {
                images: test_images,
                labels: test_labels,
            },
        }
    }
}

/// Reads and verifies all four files in `dir`.
pub fn load(dir: &Path) -> Result<FashionMnist> {
    Ok(FashionMnist {
        dir: dir.to_path_buf(),
        train: load_split(dir, &TRAIN_IMAGES, &TRAIN_LABELS)?,
        test: load_split(dir, &TEST_IMAGES, &TEST_LABELS)?,
    })
}

/// Reads and verifies the test split alone (what the report needs).
pub fn load_test(dir: &Path) -> Result<Split> {
    load_split(dir, &TEST_IMAGES, &TEST_LABELS)
}

fn load_split(dir: &Path, images: &IdxFile, labels: &IdxFile) -> Result<Split> {
    let missing = |f: &IdxFile| Error::Invalid {
        path: dir.join(f.stem),
        reason: "missing (neither it nor its .gz exists)".into(),
    };
    let ip = file_path(dir, images).ok_or_else(|| missing(images))?;
    let lp = file_path(dir, labels).ok_or_else(|| missing(labels))?;
    Ok(Split {
        images: read_idx(&ip, images)?,
        labels: read_idx(&lp, labels)?,
    })
}

/// Reads one IDX file (gzip or raw), checks magic, counts, length and MD5, and returns the
/// payload after the header.
pub fn read_idx(path: &Path, f: &IdxFile) -> Result<Vec<u8>> {
    read_idx_as(path, f, path.extension().is_some_and(|e| e == "gz"))
}

/// [`read_idx`] of a file whose name does not say whether it is gzip-compressed (a temporary
/// name): `gz` says.
pub fn read_idx_as(path: &Path, f: &IdxFile, gz: bool) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let expected_len = header_len(f) + payload_len(f);
    let mut bytes = Vec::with_capacity(expected_len);
    if gz {
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                invalid(format!(
                    "not a readable gzip file ({e}); the file may be truncated"
                ))
            })?;
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    }
    parse_idx(&bytes, f).map_err(invalid)
}

fn header_len(f: &IdxFile) -> usize {
    if f.magic == 0x0803 {
        16
    } else {
        8
    }
}

fn payload_len(f: &IdxFile) -> usize {
    f.count as usize * if f.magic == 0x0803 { PIXELS } else { 1 }
}

/// Checks an uncompressed IDX file's bytes against what `f` must contain.
pub fn parse_idx(bytes: &[u8], f: &IdxFile) -> Result<Vec<u8>, String> {
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let hl = header_len(f);
    if bytes.len() < hl {
        return Err(format!(
            "truncated: {} bytes, shorter than the {hl}-byte IDX header",
            bytes.len()
        ));
    }
    let magic = be(0);
    if magic != f.magic {
        return Err(format!(
            "wrong magic number 0x{magic:08x}, expected 0x{:08x} ({})",
            f.magic,
            if f.magic == 0x0803 {
                "IDX images"
            } else {
                "IDX labels"
            }
        ));
    }
    let count = be(4);
    if count != f.count {
        return Err(format!("holds {count} items, expected {}", f.count));
    }
    if f.magic == 0x0803 && (be(8) as usize != SIDE || be(12) as usize != SIDE) {
        return Err(format!(
            "images are {}x{}, expected {SIDE}x{SIDE}",
            be(8),
            be(12)
        ));
    }
    let want = hl + payload_len(f);
    if bytes.len() != want {
        return Err(format!(
            "{} bytes uncompressed, expected {want}{}",
            bytes.len(),
            if bytes.len() < want {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    let md5 = hex::encode(Md5::digest(bytes));
    if md5 != f.md5 {
        return Err(format!(
            "MD5 of the uncompressed data is {md5}, expected {} (corrupt or not the original Fashion-MNIST)",
            f.md5
        ));
    }
    let payload = bytes[hl..].to_vec();
    if f.magic == 0x0801 {
        if let Some(bad) = payload.iter().find(|&&l| l > 9) {
            return Err(format!("label {bad} is not a class (0..=9)"));
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_file(n: u32, fill: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x0801u32.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend(std::iter::repeat_n(fill, n as usize));
        b
    }

    #[test]
    fn rejects_wrong_magic_truncation_and_checksum() {
        let f = IdxFile {
            stem: "x",
            magic: 0x0801,
            count: 4,
            md5: "00",
        };
        let err = parse_idx(&[0, 0, 8, 3, 0, 0, 0, 4, 1, 2, 3, 4], &f).unwrap_err();
        assert!(err.contains("wrong magic"), "{err}");
        let err = parse_idx(&labels_file(4, 1)[..10], &f).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_idx(&[0, 0], &f).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_idx(&labels_file(4, 1), &f).unwrap_err();
        assert!(err.contains("MD5"), "{err}");
        let err = parse_idx(&labels_file(3, 1), &f).unwrap_err();
        assert!(err.contains("holds 3 items"), "{err}");
    }

    #[test]
    fn accepts_a_file_with_the_right_checksum() {
        let bytes = labels_file(4, 7);
        let md5 = hex::encode(Md5::digest(&bytes));
        let f = IdxFile {
            stem: "x",
            magic: 0x0801,
            count: 4,
            md5: Box::leak(md5.into_boxed_str()),
        };
        assert_eq!(parse_idx(&bytes, &f).unwrap(), vec![7; 4]);
    }

    #[test]
    fn gzip_truncation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        let err = read_idx(&path, &TEST_LABELS).unwrap_err().to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn explicit_dir_without_files_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("Fashion-MNIST not found"), "{err}");
    }
}
