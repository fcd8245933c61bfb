//! The artifacts of a finished trial: the only names `UploadArtifact` accepts, and the file
//! names they get under `results/<sweep>/artifacts/<trial>/`.

use std::fmt;

/// One file a worker uploads when a trial finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Artifact {
    /// `config.json`: the hyperparameters and how the trial was trained (threads, device).
    Config,
    /// `model.safetensors`: the weights, under the notebook's parameter names.
    Model,
    /// `predictions.safetensors`: softmax outputs (`probs`, F32 `[N, 10]`) and `labels` on the
    /// test set, in test-set order.
    Predictions,
}

impl Artifact {
    /// Every artifact, in the order a worker uploads them.
    pub const ALL: [Artifact; 3] = [Artifact::Config, Artifact::Model, Artifact::Predictions];

    pub fn file_name(self) -> &'static str {
        match self {
            Artifact::Config => "config.json",
            Artifact::Model => "model.safetensors",
            Artifact::Predictions => "predictions.safetensors",
        }
    }

    /// The artifact with this exact file name.
    pub fn from_file_name(name: &str) -> Option<Artifact> {
        Artifact::ALL.into_iter().find(|a| a.file_name() == name)
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_is_an_artifact() {
        for a in Artifact::ALL {
            assert_eq!(Artifact::from_file_name(a.file_name()), Some(a));
        }
        for bad in [
            "checkpoint.safetensors",
            "",
            "../config.json",
            "Config.json",
        ] {
            assert_eq!(Artifact::from_file_name(bad), None, "{bad}");
        }
    }
}
