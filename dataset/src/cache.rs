//! The copy of Fashion-MNIST a worker fetched from its coordinator (issue 10), kept in
//! `$XDG_CACHE_HOME/hypersweep/fashion-mnist` ([`default_dir`]) for every later worker and
//! slot on the machine.
//!
//! Why here and not in the worker: it is plain file I/O plus this crate's verification (magic,
//! counts, length, MD5 of the uncompressed bytes), needs neither gRPC nor libtorch, and so is
//! tested on its own; the worker only moves bytes from the stream into a [`Partial`].
//!
//! The rules that keep a cut download from ever looking complete, and several slots of one
//! machine on one copy:
//! - one writer at a time: [`Cache::lock`] takes an exclusive `flock` on `.lock` in the folder
//!   (blocking while another process holds it; the kernel releases it when its holder dies, so
//!   a killed worker never leaves it taken). Every slot checks, and fetches if need be, under
//!   it; the first fetches, the others find the files there and verify them.
//! - a file is written under a hidden temporary name ([`stdx::fs::temp_path`]), its announced
//!   size checked, synced, verified, and only then renamed to its final name: a file under a
//!   final name is always a whole, verified one. A [`Partial`] dropped before
//!   [`Partial::finish`] removes its temporary; one left by a killed process is removed by the
//!   next holder of the lock ([`Locked::check`]), which can only be left over since nobody else
//!   writes while the lock is held.
//! - [`Locked::check`] verifies every cached file; a damaged one is deleted (and its reason
//!   returned), so it is fetched again.

use crate::{file_path, read_idx, read_idx_as, Error, IdxFile, Result, FILES};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The folder under the cache home that is hypersweep's.
pub const APP_DIR: &str = "hypersweep";
/// The data set's folder under [`APP_DIR`].
pub const DATA_DIR: &str = "fashion-mnist";
/// The lock file in the data set's folder.
pub const LOCK_FILE: &str = ".lock";

/// `$XDG_CACHE_HOME/hypersweep/fashion-mnist`, or `$HOME/.cache/hypersweep/fashion-mnist`
/// when `XDG_CACHE_HOME` is unset, empty or relative (the XDG base directory rules); `None`
/// when neither gives an absolute folder. Written here rather than with the `dirs` crate: these
/// two rules are all of it, and a worker without `HOME` is better told to set one than sent to
/// the password database.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`default_dir`] from the values of `XDG_CACHE_HOME` and `HOME`.
fn dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let cache = absolute(xdg_cache_home).or_else(|| absolute(home).map(|h| h.join(".cache")))?;
    Some(cache.join(APP_DIR).join(DATA_DIR))
}

/// A cache folder and the files it must hold.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    files: Vec<IdxFile>,
}

/// What [`Locked::check`] found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// There and whole: its payload (after the header).
    Verified(Vec<u8>),
    /// Not there.
    Missing,
    /// It was there but damaged, and is deleted now: why.
    Deleted(String),
}

impl Cache {
    /// The cache of Fashion-MNIST's four files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache::with_files(dir, &FILES)
    }

    /// A cache of other files (tests: small files with known checksums).
    pub fn with_files(dir: impl Into<PathBuf>, files: &[IdxFile]) -> Cache {
        Cache {
            dir: dir.into(),
            files: files.to_vec(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder and takes its lock, waiting while another process holds it.
    pub fn lock(&self) -> Result<Locked> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        lock.lock().map_err(|e| io(&path, e))?;
        Ok(Locked {
            cache: self.clone(),
            _lock: lock,
        })
    }
}

/// The cache with its lock held (released on drop): only now may its files change.
#[derive(Debug)]
pub struct Locked {
    cache: Cache,
    _lock: File,
}

impl Locked {
    pub fn dir(&self) -> &Path {
        &self.cache.dir
    }

    /// Removes what dead writers left, then verifies each file: [`Check::Verified`] with its
    /// payload, [`Check::Missing`], or [`Check::Deleted`] for a damaged file it removed (a raw
    /// file and its `.gz` are both tried, the raw one first, as [`crate::locate`] does).
    pub fn check(&self) -> Result<Vec<(IdxFile, Check)>> {
        self.remove_temporaries()?;
        let mut out = Vec::with_capacity(self.cache.files.len());
        for f in &self.cache.files {
            let mut check = Check::Missing;
            while let Some(path) = file_path(self.dir(), f) {
                match read_idx(&path, f) {
                    Ok(payload) => {
                        check = Check::Verified(payload);
                        break;
                    }
                    Err(e) => {
                        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                        check = Check::Deleted(e.to_string());
                    }
                }
            }
            out.push((*f, check));
        }
        Ok(out)
    }

    /// Temporaries of writers that died: nobody else writes while we hold the lock.
    fn remove_temporaries(&self) -> Result<()> {
        let entries = std::fs::read_dir(self.dir()).map_err(|e| io(self.dir(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(self.dir(), e))?;
            if stdx::fs::is_temp_name(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Starts writing `f` as `name` (its stem, or the stem + `.gz`), `size` bytes long, under a
    /// temporary name.
    pub fn create(&self, f: &IdxFile, name: &str, size: u64) -> Result<Partial> {
        let gz = if name == f.stem {
            false
        } else if name.strip_suffix(".gz") == Some(f.stem) {
            true
        } else {
            return Err(Error::Invalid {
                path: self.dir().join(f.stem),
                reason: format!("sent as {name:?}, expected {0} or {0}.gz", f.stem),
            });
        };
        let dest = self.dir().join(name);
        let tmp = stdx::fs::temp_path(&dest);
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        Ok(Partial {
            file: BufWriter::new(file),
            tmp,
            dest,
            idx: *f,
            gz,
            size,
            written: 0,
            done: false,
        })
    }
}

/// One file being written into the cache under a temporary name; see [`Partial::finish`].
#[derive(Debug)]
pub struct Partial {
    file: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    idx: IdxFile,
    gz: bool,
    size: u64,
    written: u64,
    done: bool,
}

impl Partial {
    /// Appends `data`; more than the announced size is an error.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            return Err(self.invalid(format!("more than the {} bytes announced", self.size)));
        }
        self.file.write_all(data).map_err(|e| io(&self.tmp, e))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that every announced byte came, syncs, verifies (magic, counts, length, MD5 of
    /// the uncompressed bytes) and renames the file into place. Returns its payload. On any
    /// error the temporary is removed and nothing is under the final name.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.written != self.size {
            return Err(self.invalid(format!("{} of {} bytes arrived", self.written, self.size)));
        }
        self.file.flush().map_err(|e| io(&self.tmp, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| io(&self.tmp, e))?;
        let payload = read_idx_as(&self.tmp, &self.idx, self.gz).map_err(|e| match e {
            Error::Invalid { reason, .. } => self.invalid(reason),
            e => e,
        })?;
        // A raw file would shadow the .gz one (and the other way round for `locate`'s order):
        // one name per file.
        let other = if self.gz {
            self.dest.with_file_name(self.idx.stem)
        } else {
            self.dest.with_file_name(format!("{}.gz", self.idx.stem))
        };
        match std::fs::remove_file(&other) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&other, e)),
            _ => {}
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| io(&self.dest, e))?;
        self.done = true;
        stdx::fs::sync_parent(&self.dest);
        Ok(payload)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            path: self.dest.clone(),
            reason,
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    /// An IDX labels file of `n` labels `fill`, and an [`IdxFile`] it satisfies.
    fn labels(stem: &'static str, n: u32, fill: u8) -> (Vec<u8>, IdxFile) {
        let mut b = Vec::new();
        b.extend_from_slice(&0x0801u32.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend(std::iter::repeat_n(fill, n as usize));
        let md5 = hex::encode(Md5::digest(&b));
        let f = IdxFile {
            stem,
            magic: 0x0801,
            count: n,
            md5: Box::leak(md5.into_boxed_str()),
        };
        (b, f)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_whole_file_is_verified_then_renamed_and_checks_as_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw, f) = labels("a-labels", 1000, 3);
        let gz = gzip(&raw);
        let cache = Cache::with_files(tmp.path().join("c"), &[f]);
        let locked = cache.lock().unwrap();
        assert_eq!(locked.check().unwrap(), [(f, Check::Missing)]);
        let mut p = locked.create(&f, "a-labels.gz", gz.len() as u64).unwrap();
        let (first, rest) = gz.split_at(gz.len() / 2);
        p.write(first).unwrap();
        // Mid-way: only a hidden temporary, never the final name.
        let mid = names(locked.dir());
        assert_eq!(mid.len(), 2, "{mid:?}");
        assert!(mid.contains(&LOCK_FILE.to_owned()));
        assert!(mid
            .iter()
            .any(|n| stdx::fs::is_temp_name(n) && n.starts_with(".a-labels.gz")));
        p.write(rest).unwrap();
        assert_eq!(p.finish().unwrap(), vec![3; 1000]);
        assert_eq!(names(locked.dir()), [LOCK_FILE, "a-labels.gz"]);
        assert_eq!(
            locked.check().unwrap(),
            [(f, Check::Verified(vec![3; 1000]))]
        );
    }

    #[test]
    fn a_cut_download_leaves_no_file_and_a_wrong_one_is_never_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw, f) = labels("b-labels", 100, 1);
        let cache = Cache::with_files(tmp.path(), &[f]);
        let locked = cache.lock().unwrap();
        // Cut: the stream ended early.
        let mut p = locked.create(&f, "b-labels", raw.len() as u64).unwrap();
        p.write(&raw[..50]).unwrap();
        let err = p.finish().unwrap_err().to_string();
        assert!(err.contains("50 of 108 bytes arrived"), "{err}");
        assert_eq!(names(tmp.path()), [LOCK_FILE]);
        // Dropped mid-way (the worker gave up).
        let mut p = locked.create(&f, "b-labels", raw.len() as u64).unwrap();
        p.write(&raw[..10]).unwrap();
        drop(p);
        assert_eq!(names(tmp.path()), [LOCK_FILE]);
        // Every byte, but the wrong ones.
        let mut bad = raw.clone();
        bad[20] = 2;
        let mut p = locked.create(&f, "b-labels", bad.len() as u64).unwrap();
        p.write(&bad).unwrap();
        let err = p.finish().unwrap_err().to_string();
        assert!(err.contains("MD5"), "{err}");
        assert_eq!(names(tmp.path()), [LOCK_FILE]);
        // More than announced.
        let mut p = locked.create(&f, "b-labels", 10).unwrap();
        assert!(p.write(&raw).is_err());
        // A name that is not the file's.
        let err = locked.create(&f, "../b-labels", 1).unwrap_err().to_string();
        assert!(err.contains("expected b-labels or b-labels.gz"), "{err}");
    }

    #[test]
    fn a_damaged_cached_file_is_deleted_and_a_dead_writers_temporary_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw, f) = labels("c-labels", 100, 4);
        let (raw2, g) = labels("d-labels", 10, 5);
        let mut damaged = raw.clone();
        damaged[50] = 9;
        std::fs::write(tmp.path().join("c-labels"), &damaged).unwrap();
        std::fs::write(tmp.path().join("d-labels.gz"), gzip(&raw2)).unwrap();
        // What a worker killed mid-download leaves.
        let dead = stdx::fs::temp_path(&tmp.path().join("c-labels.gz"));
        std::fs::write(&dead, &raw[..20]).unwrap();
        let cache = Cache::with_files(tmp.path(), &[f, g]);
        let checks = cache.lock().unwrap().check().unwrap();
        assert!(
            matches!(&checks[0], (_, Check::Deleted(why)) if why.contains("MD5")),
            "{checks:?}"
        );
        assert_eq!(checks[1], (g, Check::Verified(vec![5; 10])));
        assert_eq!(names(tmp.path()), [LOCK_FILE, "d-labels.gz"]);
    }

    #[test]
    fn a_new_copy_replaces_the_other_compression_of_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw, f) = labels("e-labels", 10, 6);
        std::fs::write(tmp.path().join("e-labels"), &raw).unwrap();
        let cache = Cache::with_files(tmp.path(), &[f]);
        let locked = cache.lock().unwrap();
        let gz = gzip(&raw);
        let mut p = locked.create(&f, "e-labels.gz", gz.len() as u64).unwrap();
        p.write(&gz).unwrap();
        p.finish().unwrap();
        assert_eq!(names(tmp.path()), [LOCK_FILE, "e-labels.gz"]);
    }

    #[test]
    fn the_lock_is_one_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let held = cache.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = cache.clone();
        let waiter = std::thread::spawn(move || {
            let _second = other.lock().unwrap();
            tx.send(()).unwrap();
        });
        // `flock` locks belong to open files, so a second open in this process waits too.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the lock is free once dropped");
        waiter.join().unwrap();
    }

    #[test]
    fn the_cache_home_follows_the_xdg_rules() {
        let s = |v: &str| Some(OsString::from(v));
        let p = |v: &str| Some(PathBuf::from(v));
        assert_eq!(
            dir_from(s("/x/cache"), s("/home/u")),
            p("/x/cache/hypersweep/fashion-mnist")
        );
        // Unset, empty or relative XDG_CACHE_HOME: ~/.cache.
        for xdg in [None, s(""), s("rel/cache")] {
            assert_eq!(
                dir_from(xdg, s("/home/u")),
                p("/home/u/.cache/hypersweep/fashion-mnist")
            );
        }
        assert_eq!(dir_from(None, None), None);
        assert_eq!(dir_from(s("rel"), s("also-rel")), None);
    }
}
