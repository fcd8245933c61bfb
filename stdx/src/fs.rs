//! Files written whole or not at all: every file hypersweep writes for others to read
//! (Parquet results, artifacts, the report, the dataset cache) goes through here.
//!
//! A file is written under a hidden temporary name in its final folder ([`temp_path`]),
//! flushed to disk, then renamed into place, and the rename is made durable by syncing the
//! folder. Readers skip names that start with `.`, and a temporary name never ends with the
//! final name's extension, so a glob like `*.parquet` never matches one. A crash leaves at
//! most a temporary file, which [`is_temp_name`] recognises so that its owner can remove it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The part every temporary name has after the final name.
const TEMP_MARK: &str = ".tmp-";

/// A fresh hidden temporary path beside `dest`: `.<name>.tmp-<pid>-<n>`, unique within this
/// process and across processes writing the same folder.
pub fn temp_path(dest: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}{TEMP_MARK}{}-{n}", std::process::id()))
}

/// True for a name [`temp_path`] makes (or the `.<name>.tmp` of versions before it): left
/// over by a write that never finished.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(TEMP_MARK) || name.ends_with(".tmp"))
}

/// A fresh hidden temporary path beside `dest` that keeps its extension last,
/// `.<stem>.tmp-<pid>-<n>.<ext>`, for writers that choose a format by the extension (tch's
/// `save`). Only for folders nobody globs while it is written (a worker's own artifacts).
pub fn temp_path_keeping_extension(dest: &Path) -> PathBuf {
    let plain = temp_path(&dest.with_extension(""));
    match dest.extension() {
        Some(ext) => {
            let mut name = plain.into_os_string();
            name.push(".");
            name.push(ext);
            PathBuf::from(name)
        }
        None => plain,
    }
}

/// How an atomic write failed: in the file system, or in the caller's writer.
#[derive(Debug)]
pub enum WriteError<E> {
    Io(io::Error),
    Write(E),
}

impl<E> From<io::Error> for WriteError<E> {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `bytes` to `dest` atomically (see the module's documentation).
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(dest, |file| file.write_all(bytes)).map_err(|e| match e {
        WriteError::Io(e) | WriteError::Write(e) => e,
    })
}

/// Creates a temporary file beside `dest`, lets `write` fill it, syncs it and renames it to
/// `dest`. On any error the temporary file is removed and `dest` is untouched.
pub fn write_atomically_with<E>(
    dest: &Path,
    write: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    let tmp = temp_path(dest);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file).map_err(WriteError::Write)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    settle(result, &tmp, dest)
}

/// Like [`write_atomically_with`] for a writer that takes a path and picks the format from
/// its extension (tch): `write` gets [`temp_path_keeping_extension`] of `dest`.
pub fn write_atomically_to_path<E>(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    let tmp = temp_path_keeping_extension(dest);
    let result = (|| {
        write(&tmp).map_err(WriteError::Write)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    settle(result, &tmp, dest)
}

/// After a write through `tmp`: on error, `tmp` is removed; on success the rename to `dest`
/// is made durable.
fn settle<E>(result: Result<(), E>, tmp: &Path, dest: &Path) -> Result<(), E> {
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
        return result;
    }
    sync_parent(dest);
    Ok(())
}

/// Makes a rename in `path`'s folder durable. Best effort: not every platform can open a
/// folder for syncing.
pub fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("a.parquet");
        write_atomically(&dest, b"one").unwrap();
        write_atomically(&dest, b"two").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.parquet"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("report.html");
        write_atomically(&dest, b"old").unwrap();
        let err = write_atomically_with(&dest, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(matches!(err, WriteError::Write(e) if e.to_string() == "disk full"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_names_are_hidden_unique_and_never_match_the_extension() {
        let a = temp_path(Path::new("/r/epochs/part-1-2.parquet"));
        let b = temp_path(Path::new("/r/epochs/part-1-2.parquet"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".part-1-2.parquet.tmp-"), "{name}");
        assert!(!name.ends_with(".parquet"));
        assert!(is_temp_name(name));
        assert!(!is_temp_name("part-1-2.parquet"));
        assert!(!is_temp_name(".hidden"));
        assert!(is_temp_name(".part-1-2.parquet.tmp"));
        let kept = temp_path_keeping_extension(Path::new("/a/model.safetensors"));
        let kept = kept.file_name().unwrap().to_str().unwrap();
        assert!(
            kept.starts_with(".model.tmp-") && kept.ends_with(".safetensors"),
            "{kept}"
        );
        assert!(is_temp_name(kept));
    }

    #[test]
    fn a_path_writer_gets_a_temporary_with_the_extension_and_its_file_lands() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("model.safetensors");
        write_atomically_to_path(&dest, |p| {
            assert_eq!(p.extension().unwrap(), "safetensors");
            std::fs::write(p, b"weights")
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"weights");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
