//! The data-location flags, defined once for every command that reads Fashion-MNIST
//! (`worker train`, `worker join`) or hands it on (`coordinator run` passes them to its local
//! workers).

use std::path::PathBuf;

/// Where the data is and how much of it to use.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DataArgs {
    /// Folder with the four Fashion-MNIST IDX files (.gz or raw). Default: FASHION_MNIST_DIR,
    /// then ./data/fashion-mnist, then /usr/share/datasets/fashion-mnist; then, for
    /// `worker join`, the copy cached from the coordinator in
    /// $XDG_CACHE_HOME/hypersweep/fashion-mnist (fetched when missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training images only (tests, smoke runs).
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only (tests, smoke runs).
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
}

impl DataArgs {
    /// The same flags as command-line arguments, for a child process (`coordinator run`
    /// starting its local workers).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        if let Some(d) = &self.data_dir {
            out.push("--data-dir".into());
            out.push(d.clone().into_os_string());
        }
        if let Some(n) = self.train_limit {
            out.push("--train-limit".into());
            out.push(n.to_string().into());
        }
        if let Some(n) = self.test_limit {
            out.push("--test-limit".into());
            out.push(n.to_string().into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        data: DataArgs,
    }

    #[test]
    fn to_args_parses_back_to_the_same_flags() {
        let data = DataArgs {
            data_dir: Some("/d/fm".into()),
            train_limit: Some(2000),
            test_limit: None,
        };
        let mut argv: Vec<std::ffi::OsString> = vec!["cmd".into()];
        argv.extend(data.to_args());
        assert_eq!(Cmd::parse_from(argv).data, data);
        assert!(DataArgs::default().to_args().is_empty());
    }
}
