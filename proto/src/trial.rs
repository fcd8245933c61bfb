//! Trials as the scheduler and the trainer see them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The five networks of the reference notebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Flatten → Linear(784,h) → Sigmoid → Linear(h,10).
    Ffv0,
    /// As `Ffv0` with ReLU.
    Ffv1,
    /// Two hidden ReLU layers of `h`.
    Ffv2,
    /// `Ffv2` with dropout after the first linear layer and after its ReLU.
    Ffv3,
    /// The notebook's TinyVGG with `h` channels.
    Cnn,
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Ffv0, Arch::Ffv1, Arch::Ffv2, Arch::Ffv3, Arch::Cnn];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Ffv0 => "ffv0",
            Arch::Ffv1 => "ffv1",
            Arch::Ffv2 => "ffv2",
            Arch::Ffv3 => "ffv3",
            Arch::Cnn => "cnn",
        }
    }

    /// Rough training cost of one epoch relative to `ffv0` with 32 hidden units, used to
    /// start the longest trials first. Measured on CPU: an MLP epoch is dominated by the
    /// 784×h input layer, the CNN by its convolutions (~50× an ffv0-32 epoch at 10 channels).
    pub fn relative_epoch_cost(self, hidden: u32) -> f64 {
        let h = f64::from(hidden.max(1));
        match self {
            Arch::Ffv0 | Arch::Ffv1 => 0.5 + 0.5 * h / 32.0,
            Arch::Ffv2 | Arch::Ffv3 => 0.5 + 0.5 * h / 32.0 + (h * h) / (784.0 * 32.0),
            Arch::Cnn => 50.0 * (h / 10.0) * (h / 10.0),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = InvalidHyperparams;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| InvalidHyperparams {
                key: "arch",
                reason: format!(
                    "unknown architecture {s:?}, expected one of ffv0, ffv1, ffv2, ffv3, cnn"
                ),
            })
    }
}

/// What a trial computes: the network trained on the data, or the closed-form synthetic
/// objective of issue 12 (`search::synthetic`), which trains nothing and loads no data. Part of
/// a trial's identity: a synthetic trial never shares an id with a trained one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    #[default]
    Train,
    Synthetic,
}

impl Objective {
    pub const ALL: [Objective; 2] = [Objective::Train, Objective::Synthetic];

    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Train => "train",
            Objective::Synthetic => "synthetic",
        }
    }

    pub fn is_train(&self) -> bool {
        *self == Objective::Train
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Objective {
    type Err = InvalidHyperparams;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Objective::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| InvalidHyperparams {
                key: "objective",
                reason: format!("unknown objective {s:?}, expected \"train\" or \"synthetic\""),
            })
    }
}

/// A hyperparameter that is out of range, with the key it belongs to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidHyperparams {
    pub key: &'static str,
    pub reason: String,
}

/// The resolved hyperparameters of one trial: everything that decides what it computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparams {
    pub arch: Arch,
    pub hidden: u32,
    pub dropout: f64,
    pub lr: f64,
    pub epochs: u32,
    pub batch_size: u32,
    pub momentum: f64,
    pub weight_decay: f64,
    pub validation: f64,
    pub seed: u64,
    /// Train (the default, left out of `config.json` and of the id's text) or synthetic.
    #[serde(default, skip_serializing_if = "Objective::is_train")]
    pub objective: Objective,
}

impl Default for Hyperparams {
    /// The notebook's base network and training settings.
    fn default() -> Self {
        Hyperparams {
            arch: Arch::Ffv0,
            hidden: 32,
            dropout: 0.0,
            lr: 0.1,
            epochs: 10,
            batch_size: 64,
            momentum: 0.0,
            weight_decay: 0.0,
            validation: 0.1,
            seed: 55,
            objective: Objective::Train,
        }
    }
}

impl Hyperparams {
    /// Checks every range; the first offending key is reported.
    pub fn validate(&self) -> Result<(), InvalidHyperparams> {
        fn bad(key: &'static str, reason: String) -> Result<(), InvalidHyperparams> {
            Err(InvalidHyperparams { key, reason })
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
            );
        }
        if self.hidden == 0 {
            return bad("hidden", "must be at least 1, got 0".into());
        }
        if self.hidden > 65_536 {
            return bad(
                "hidden",
                format!("must be at most 65536, got {}", self.hidden),
            );
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1, got 0".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1, got 0".into());
        }
        if !(self.momentum.is_finite() && self.momentum >= 0.0) {
            return bad(
                "momentum",
                format!("must be a finite number >= 0, got {}", self.momentum),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be a finite number >= 0, got {}", self.weight_decay),
            );
        }
        if !(self.validation.is_finite() && (0.0..1.0).contains(&self.validation)) {
            return bad(
                "validation",
                format!("must be in [0, 1), got {}", self.validation),
            );
        }
        Ok(())
    }

    /// Whether the architecture has a dropout layer (only `ffv3` does).
    pub fn uses_dropout(&self) -> bool {
        self.arch == Arch::Ffv3
    }

    /// Drops settings the architecture ignores (dropout outside `ffv3`), so that two
    /// configurations that train identically are one trial with one id.
    pub fn normalized(mut self) -> Self {
        if !self.uses_dropout() {
            self.dropout = 0.0;
        }
        self
    }

    /// The canonical text of these hyperparameters: fixed key order, shortest round-trip
    /// float formatting. Two trials with equal hyperparameters have equal text. A trained
    /// trial's text is what it was before objectives existed (so its id is unchanged); a
    /// synthetic one's ends in `;objective=synthetic`.
    pub fn canonical(&self) -> String {
        let mut text = format!(
            "arch={};hidden={};dropout={};lr={};epochs={};batch_size={};momentum={};weight_decay={};validation={};seed={}",
            self.arch,
            self.hidden,
            canon_f64(self.dropout),
            canon_f64(self.lr),
            self.epochs,
            self.batch_size,
            canon_f64(self.momentum),
            canon_f64(self.weight_decay),
            canon_f64(self.validation),
            self.seed
        );
        if !self.objective.is_train() {
            text.push_str(";objective=");
            text.push_str(self.objective.as_str());
        }
        text
    }

    /// The trial's id: derived from the resolved hyperparameters alone, so the same
    /// configuration always gets the same id, whatever sweep or experiment it came from.
    pub fn trial_id(&self) -> TrialId {
        let digest = Sha256::digest(self.canonical().as_bytes());
        TrialId(format!("{}-{}", self.arch, hex::encode(&digest[..6])))
    }

    /// A short human label, e.g. `ffv3 h64 p0.25 lr0.1`.
    pub fn label(&self) -> String {
        let mut s = format!("{} h{}", self.arch, self.hidden);
        if self.dropout > 0.0 {
            s.push_str(&format!(" p{}", self.dropout));
        }
        s.push_str(&format!(" lr{}", self.lr));
        if self.momentum > 0.0 {
            s.push_str(&format!(" m{}", self.momentum));
        }
        if self.weight_decay > 0.0 {
            s.push_str(&format!(" wd{}", self.weight_decay));
        }
        if !self.objective.is_train() {
            s.push_str(&format!(" {}", self.objective));
        }
        s
    }

    /// What trials must share to train fused as one stacked model (issue 13): the network's
    /// shape, batch size, seed, validation split and epochs; they may differ in lr, momentum,
    /// weight decay and dropout. `None` for trials that never fuse: the CNN (grouped
    /// convolutions were slower per trial on CPU, README "Fused same-shape trials") and
    /// synthetic trials (nothing to train).
    pub fn fuse_key(&self) -> Option<String> {
        if self.arch == Arch::Cnn || !self.objective.is_train() {
            return None;
        }
        Some(format!(
            "arch={};hidden={};epochs={};batch_size={};validation={};seed={}",
            self.arch,
            self.hidden,
            self.epochs,
            self.batch_size,
            canon_f64(self.validation),
            self.seed
        ))
    }

    /// Relative cost of the whole trial, for longest-first scheduling (a synthetic trial costs
    /// next to nothing).
    pub fn relative_cost(&self) -> f64 {
        let epoch = match self.objective {
            Objective::Train => self.arch.relative_epoch_cost(self.hidden),
            Objective::Synthetic => 0.001,
        };
        epoch * f64::from(self.epochs)
    }
}

/// `-0.0` and `0.0` are one value; everything else prints as Rust's shortest round-trip form.
/// Used for trial ids and wherever a number is shown as a sweep file would write it.
pub fn canon_f64(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x}")
    }
}

/// A trial's id, e.g. `ffv3-1a2b3c4d5e6f`: the architecture and 48 bits of a SHA-256 of the
/// canonical hyperparameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrialId(pub String);

impl TrialId {
    /// True when `s` has the form of an id this crate makes (used to validate ids from the wire
    /// before they name anything on disk).
    pub fn is_well_formed(s: &str) -> bool {
        match s.split_once('-') {
            Some((arch, hash)) => {
                Arch::from_str(arch).is_ok()
                    && hash.len() == 12
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
            None => false,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The metrics of one finished epoch. Accuracies are fractions in [0, 1]; losses are
/// sample-weighted means. `val_*` are NaN when the trial has no validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_fuse_when_only_what_a_group_may_vary_differs() {
        let a = Hyperparams {
            arch: Arch::Ffv3,
            hidden: 64,
            ..Default::default()
        };
        let key = a.fuse_key().expect("an MLP fuses");
        let varied = Hyperparams {
            lr: 0.5,
            dropout: 0.25,
            momentum: 0.9,
            weight_decay: 1e-4,
            ..a.clone()
        };
        assert_eq!(varied.fuse_key().as_ref(), Some(&key));
        for other in [
            Hyperparams {
                hidden: 32,
                ..a.clone()
            },
            Hyperparams {
                arch: Arch::Ffv2,
                ..a.clone()
            },
            Hyperparams {
                seed: 1,
                ..a.clone()
            },
            Hyperparams {
                epochs: 3,
                ..a.clone()
            },
            Hyperparams {
                batch_size: 32,
                ..a.clone()
            },
            Hyperparams {
                validation: 0.2,
                ..a.clone()
            },
        ] {
            assert_ne!(other.fuse_key().as_ref(), Some(&key), "{other:?}");
        }
        let cnn = Hyperparams {
            arch: Arch::Cnn,
            hidden: 10,
            ..a.clone()
        };
        assert_eq!(cnn.fuse_key(), None);
        let synthetic = Hyperparams {
            objective: Objective::Synthetic,
            ..a
        };
        assert_eq!(synthetic.fuse_key(), None);
    }

    #[test]
    fn same_config_same_id_and_any_change_changes_it() {
        let a = Hyperparams::default();
        let b = Hyperparams::default();
        assert_eq!(a.trial_id(), b.trial_id());
        let c = Hyperparams {
            lr: 0.05,
            ..a.clone()
        };
        assert_ne!(a.trial_id(), c.trial_id());
        let d = Hyperparams {
            seed: 56,
            ..a.clone()
        };
        assert_ne!(a.trial_id(), d.trial_id());
        assert!(TrialId::is_well_formed(a.trial_id().as_str()));
        assert!(!TrialId::is_well_formed("../etc/passwd"));
        assert!(!TrialId::is_well_formed("ffv0-zzzzzzzzzzzz"));
    }

    #[test]
    fn a_synthetic_trial_has_an_id_of_its_own_and_trained_ids_are_unchanged() {
        let trained = Hyperparams::default();
        // The id every trained trial had before objectives existed.
        assert_eq!(
            trained.canonical(),
            "arch=ffv0;hidden=32;dropout=0;lr=0.1;epochs=10;batch_size=64;momentum=0;weight_decay=0;validation=0.1;seed=55"
        );
        let synthetic = Hyperparams {
            objective: Objective::Synthetic,
            ..trained.clone()
        };
        assert_ne!(trained.trial_id(), synthetic.trial_id());
        assert!(synthetic.canonical().ends_with(";objective=synthetic"));
        assert!(TrialId::is_well_formed(synthetic.trial_id().as_str()));
        // config.json of a trained trial says nothing of objectives; a synthetic one's does.
        let json = serde_json::to_string(&trained).unwrap();
        assert!(!json.contains("objective"), "{json}");
        let back: Hyperparams =
            serde_json::from_str(&serde_json::to_string(&synthetic).unwrap()).unwrap();
        assert_eq!(back, synthetic);
        assert_eq!(
            "synthetic".parse::<Objective>().unwrap(),
            Objective::Synthetic
        );
        assert_eq!("sim".parse::<Objective>().unwrap_err().key, "objective");
    }

    #[test]
    fn dropout_is_dropped_where_the_network_has_none() {
        let a = Hyperparams {
            arch: Arch::Ffv1,
            dropout: 0.25,
            ..Default::default()
        };
        assert_eq!(a.clone().normalized().dropout, 0.0);
        let b = Hyperparams {
            arch: Arch::Ffv3,
            dropout: 0.25,
            ..Default::default()
        };
        assert_eq!(b.clone().normalized(), b);
    }

    #[test]
    fn negative_zero_is_zero() {
        let a = Hyperparams {
            momentum: 0.0,
            ..Default::default()
        };
        let b = Hyperparams {
            momentum: -0.0,
            ..Default::default()
        };
        assert_eq!(a.trial_id(), b.trial_id());
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (
                Hyperparams {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                Hyperparams {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr",
            ),
            (
                Hyperparams {
                    hidden: 0,
                    ..Default::default()
                },
                "hidden",
            ),
            (
                Hyperparams {
                    dropout: 1.0,
                    ..Default::default()
                },
                "dropout",
            ),
            (
                Hyperparams {
                    dropout: -0.1,
                    ..Default::default()
                },
                "dropout",
            ),
            (
                Hyperparams {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                Hyperparams {
                    batch_size: 0,
                    ..Default::default()
                },
                "batch_size",
            ),
            (
                Hyperparams {
                    validation: 1.0,
                    ..Default::default()
                },
                "validation",
            ),
        ];
        for (h, key) in cases {
            assert_eq!(h.validate().unwrap_err().key, key, "{h:?}");
        }
        assert!(Hyperparams::default().validate().is_ok());
        assert_eq!("mlp".parse::<Arch>().unwrap_err().key, "arch");
    }
}
