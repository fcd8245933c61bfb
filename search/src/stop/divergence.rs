//! The divergence rule: a trial whose loss is not a finite number, or whose training loss rose
//! above `factor` times its first epoch's, has diverged. It looks at the trial's own numbers
//! only, so the worker can apply it as it trains (it needs no answer from the coordinator) and
//! the coordinator gets the same verdict from the same numbers.

/// The settings of `stop = { divergence = { factor } }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DivergenceConfig {
    /// How many times its first epoch's training loss a trial's training loss may reach, at
    /// least 1 (below 1 it would stop trials whose loss fell, only not far enough).
    pub factor: f64,
}

impl DivergenceConfig {
    pub(crate) fn problem(&self) -> Option<String> {
        (!(self.factor.is_finite() && self.factor >= 1.0))
            .then(|| format!("factor must be a number >= 1, got {}", self.factor))
    }
}

/// How a trial diverged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Diverged {
    /// `loss` ("train_loss" or "val_loss") was NaN or infinite.
    NonFinite { loss: &'static str, value: f64 },
    /// The training loss exceeded `factor × first`.
    Exploded {
        train_loss: f64,
        first: f64,
        factor: f64,
    },
}

/// The verdict on one epoch: `first_train_loss` is the training loss of the trial's first
/// epoch (`None` for the first epoch itself), `val_loss` is `None` when the trial has no
/// validation split.
pub fn check(
    config: DivergenceConfig,
    first_train_loss: Option<f64>,
    train_loss: f64,
    val_loss: Option<f64>,
) -> Option<Diverged> {
    if !train_loss.is_finite() {
        return Some(Diverged::NonFinite {
            loss: "train_loss",
            value: train_loss,
        });
    }
    if let Some(v) = val_loss.filter(|v| !v.is_finite()) {
        return Some(Diverged::NonFinite {
            loss: "val_loss",
            value: v,
        });
    }
    first_train_loss
        .filter(|&first| train_loss > config.factor * first)
        .map(|first| Diverged::Exploded {
            train_loss,
            first,
            factor: config.factor,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_losses_and_a_rise_past_the_factor_diverge() {
        let c = DivergenceConfig { factor: 2.0 };
        assert_eq!(check(c, None, 2.3, Some(2.2)), None);
        assert_eq!(check(c, Some(2.3), 4.6, Some(5.0)), None); // 4.6 = 2 × 2.3, not above
        assert!(matches!(
            check(c, Some(2.3), 4.7, None),
            Some(Diverged::Exploded { train_loss, .. }) if train_loss == 4.7
        ));
        assert!(matches!(
            check(c, None, f64::NAN, None),
            Some(Diverged::NonFinite {
                loss: "train_loss",
                ..
            })
        ));
        assert!(matches!(
            check(c, Some(2.3), 1.0, Some(f64::INFINITY)),
            Some(Diverged::NonFinite {
                loss: "val_loss",
                ..
            })
        ));
        assert!(DivergenceConfig { factor: 0.5 }.problem().is_some());
        assert!(DivergenceConfig { factor: f64::NAN }.problem().is_some());
    }
}
