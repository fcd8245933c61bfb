//! Domain ↔ wire conversions: the only module that touches both [`crate::pb`] and [`crate::trial`].

use crate::pb;
use crate::trial::{Arch, EpochMetrics, Hyperparams, InvalidHyperparams, Objective};

/// A wire message that does not describe a valid domain value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid {0}")]
    Invalid(#[from] InvalidHyperparams),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

impl From<&Hyperparams> for pb::Hyperparams {
    fn from(h: &Hyperparams) -> Self {
        pb::Hyperparams {
            arch: h.arch.as_str().to_owned(),
            hidden: h.hidden,
            dropout: h.dropout,
            lr: h.lr,
            epochs: h.epochs,
            batch_size: h.batch_size,
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            validation: h.validation,
            seed: h.seed,
            // Empty for a trained trial: what every message said before objectives existed.
            objective: match h.objective {
                Objective::Train => String::new(),
                o => o.as_str().to_owned(),
            },
        }
    }
}

impl TryFrom<pb::Hyperparams> for Hyperparams {
    type Error = ConvertError;
    fn try_from(p: pb::Hyperparams) -> Result<Self, Self::Error> {
        let h = Hyperparams {
            arch: p.arch.parse::<Arch>()?,
            hidden: p.hidden,
            dropout: p.dropout,
            lr: p.lr,
            epochs: p.epochs,
            batch_size: p.batch_size,
            momentum: p.momentum,
            weight_decay: p.weight_decay,
            validation: p.validation,
            seed: p.seed,
            objective: match p.objective.as_str() {
                "" => Objective::Train,
                o => o.parse::<Objective>()?,
            },
        };
        h.validate()?;
        Ok(h)
    }
}

impl From<&EpochMetrics> for pb::EpochMetrics {
    fn from(m: &EpochMetrics) -> Self {
        pb::EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            test_loss: m.test_loss,
            test_acc: m.test_acc,
            seconds: m.seconds,
        }
    }
}

impl TryFrom<pb::EpochMetrics> for EpochMetrics {
    type Error = ConvertError;
    /// Rejects epoch 0, accuracies outside [0, 1], infinite or negative losses and times.
    /// `val_loss` and `val_acc` may be NaN together (a trial without a validation split);
    /// nothing else may.
    fn try_from(p: pb::EpochMetrics) -> Result<Self, Self::Error> {
        fn field(field: &'static str, reason: String) -> ConvertError {
            ConvertError::Field { field, reason }
        }
        if p.epoch == 0 {
            return Err(field("epoch", "epochs are 1-based, got 0".into()));
        }
        let finite = [
            ("train_loss", p.train_loss, false),
            ("train_acc", p.train_acc, true),
            ("test_loss", p.test_loss, false),
            ("test_acc", p.test_acc, true),
            ("seconds", p.seconds, false),
        ];
        let optional = [
            ("val_loss", p.val_loss, false),
            ("val_acc", p.val_acc, true),
        ];
        for (name, v, is_acc) in finite {
            check(v, is_acc).map_err(|r| field(name, r))?;
        }
        if p.val_loss.is_nan() != p.val_acc.is_nan() {
            return Err(field(
                "val_loss",
                format!(
                    "val_loss and val_acc are NaN together (no validation split) or neither, got {} and {}",
                    p.val_loss, p.val_acc
                ),
            ));
        }
        for (name, v, is_acc) in optional {
            if !v.is_nan() {
                check(v, is_acc).map_err(|r| field(name, r))?;
            }
        }
        Ok(EpochMetrics {
            epoch: p.epoch,
            train_loss: p.train_loss,
            train_acc: p.train_acc,
            val_loss: p.val_loss,
            val_acc: p.val_acc,
            test_loss: p.test_loss,
            test_acc: p.test_acc,
            seconds: p.seconds,
        })
    }
}

fn check(v: f64, is_acc: bool) -> Result<(), String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a finite number >= 0, got {v}"));
    }
    if is_acc && v > 1.0 {
        return Err(format!("accuracies are fractions in [0, 1], got {v}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperparams_round_trip() {
        let h = Hyperparams {
            arch: Arch::Cnn,
            hidden: 10,
            ..Default::default()
        };
        let wire = pb::Hyperparams::from(&h);
        assert_eq!(Hyperparams::try_from(wire).unwrap(), h);
    }

    #[test]
    fn bad_wire_hyperparams_are_rejected() {
        let mut wire = pb::Hyperparams::from(&Hyperparams::default());
        wire.arch = "resnet".into();
        assert!(Hyperparams::try_from(wire.clone()).is_err());
        wire.arch = "ffv0".into();
        wire.objective = "dream".into();
        assert!(Hyperparams::try_from(wire.clone()).is_err());
        wire.objective = String::new();
        wire.lr = -1.0;
        assert!(Hyperparams::try_from(wire).is_err());
    }

    #[test]
    fn the_objective_crosses_the_wire() {
        let h = Hyperparams {
            objective: Objective::Synthetic,
            ..Default::default()
        };
        let wire = pb::Hyperparams::from(&h);
        assert_eq!(wire.objective, "synthetic");
        assert_eq!(Hyperparams::try_from(wire).unwrap(), h);
        let trained = pb::Hyperparams::from(&Hyperparams::default());
        assert_eq!(trained.objective, "");
    }

    #[test]
    fn metrics_must_be_finite() {
        let m = EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_acc: 0.8,
            val_loss: f64::NAN,
            val_acc: f64::NAN,
            test_loss: 0.6,
            test_acc: 0.79,
            seconds: 1.0,
        };
        assert!(EpochMetrics::try_from(pb::EpochMetrics::from(&m)).is_ok());
        let mut bad = pb::EpochMetrics::from(&m);
        bad.train_loss = f64::INFINITY;
        assert!(EpochMetrics::try_from(bad).is_err());
        let mut bad = pb::EpochMetrics::from(&m);
        bad.test_acc = 1.5;
        assert!(EpochMetrics::try_from(bad).is_err());
        let mut bad = pb::EpochMetrics::from(&m);
        bad.epoch = 0;
        assert!(EpochMetrics::try_from(bad).is_err());
        let mut half = pb::EpochMetrics::from(&m);
        half.val_acc = 0.7;
        let err = EpochMetrics::try_from(half).unwrap_err().to_string();
        assert!(err.contains("NaN together"), "{err}");
    }
}
