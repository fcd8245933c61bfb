//! The report's folder: `report/` with `curves/` and `best/`, every file written whole
//! (`stdx::fs`), and the list of what was written.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub(crate) struct Output {
    pub root: PathBuf,
    pub curves: PathBuf,
    pub best: PathBuf,
    /// Every file written so far.
    pub files: Vec<PathBuf>,
}

impl Output {
    /// Creates `root` and its subfolders.
    pub fn create(root: PathBuf) -> Result<Output> {
        let out = Output {
            curves: root.join("curves"),
            best: root.join("best"),
            root,
            files: Vec::new(),
        };
        for d in [&out.root, &out.curves, &out.best] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(out)
    }

    /// Writes `bytes` to `path` atomically.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        stdx::fs::write_atomically(path, bytes).map_err(|e| Error::io(path, e))?;
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Copies `from` to `to` atomically.
    pub fn copy(&mut self, from: &Path, to: &Path) -> Result<()> {
        let bytes = std::fs::read(from).map_err(results_format::Error::io("reading", from))?;
        self.write(to, &bytes)
    }
}
