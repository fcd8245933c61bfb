//! Each trial's own dropout masks, drawn from a counter-based stream keyed by
//! `(seed, trial, epoch, step)`.
//!
//! libtorch's dropout draws from the process's global generator, which trials that share a
//! seed would share: stacked in one process (fused trials) they would get one mask stream
//! between them, and a trial's masks would depend on who trained beside it. Here a trial's
//! masks are a pure function of its seed, its id, the epoch and the step, whatever else runs
//! in the process:
//!
//! - the key of an epoch is SHA-256 of `(seed, trial id, epoch)` ([`MaskStream::new`]), a
//!   ChaCha8 key (`rand_chacha`);
//! - step `s` (0-based within the epoch) reads ChaCha8 stream `s` of that key from its
//!   start; its dropout layers draw one `u32` per element, in forward order, and an element
//!   is kept when its word is at least `round(p · 2³²)` (probability `1 − p` to within
//!   2⁻³²), as `x · mask` with `mask ∈ {0, 1 / (1 − p)}`: PyTorch's inverted dropout.
//!
//! The words are drawn on the CPU and the mask uploaded to the trial's device; on this CPU
//! that costs about as much as libtorch's own `bernoulli_` (README, "Training speed").

use proto::TrialId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// Versions the key derivation: a change of it changes every trial's masks.
const DOMAIN: &[u8] = b"hypersweep dropout masks/1";

/// The masks of one epoch of one trial: [`MaskStream::step`] moves to a step, then each
/// [`MaskStream::dropout`] draws the next layer's mask.
#[derive(Debug, Clone)]
pub struct MaskStream {
    key: [u8; 32],
    rng: ChaCha8Rng,
    words: Vec<u32>,
    mask: Vec<f32>,
}

impl MaskStream {
    /// The stream of epoch `epoch` (1-based) of trial `trial` seeded `seed`, at step 0.
    pub fn new(seed: u64, trial: &TrialId, epoch: u32) -> MaskStream {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(seed.to_le_bytes());
        h.update((trial.as_str().len() as u64).to_le_bytes());
        h.update(trial.as_str().as_bytes());
        h.update(epoch.to_le_bytes());
        let key: [u8; 32] = h.finalize().into();
        MaskStream {
            key,
            rng: ChaCha8Rng::from_seed(key),
            words: Vec::new(),
            mask: Vec::new(),
        }
    }

    /// Moves to the start of step `step`'s masks (0-based within the epoch).
    pub fn step(&mut self, step: u64) {
        self.rng = ChaCha8Rng::from_seed(self.key);
        self.rng.set_stream(step);
    }

    /// Inverted dropout of `x` with drop probability `p` and the stream's next
    /// `x.numel()` words: `x` itself when `p` is 0 (nothing drawn, as in PyTorch).
    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Tensor {
        match self.mask(&x.size(), p, x.device(), x.kind()) {
            Some(mask) => x * mask,
            None => x.shallow_clone(),
        }
    }

    /// The mask [`MaskStream::dropout`] multiplies a tensor of shape `shape` by (values 0 and
    /// `1 / (1 - p)`), drawing the same words; `None` when `p` is 0 (nothing drawn). Fused
    /// trials ([`crate::fused`]) stack their members' masks and multiply once.
    pub fn mask(&mut self, shape: &[i64], p: f64, device: Device, kind: Kind) -> Option<Tensor> {
        if p <= 0.0 {
            return None;
        }
        let n: i64 = shape.iter().product();
        self.words.resize(n as usize, 0);
        self.rng.fill(&mut self.words[..]);
        let threshold = (p * 2f64.powi(32)).round().min(f64::from(u32::MAX)) as u32;
        let keep = (1.0 / (1.0 - p)) as f32;
        self.mask.clear();
        self.mask.extend(
            self.words
                .iter()
                .map(|&w| if w >= threshold { keep } else { 0.0 }),
        );
        Some(
            Tensor::from_slice(&self.mask)
                .view(shape)
                .to_device(device)
                .to_kind(kind),
        )
    }
}

/// Dropout in training (`masks` is the trial's stream) or evaluation (`None`: `x` itself).
pub fn dropout(x: &Tensor, p: f64, masks: Option<&mut MaskStream>) -> Tensor {
    match masks {
        Some(m) => m.dropout(x, p),
        None => x.shallow_clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(seed: u64, trial: &str, epoch: u32, step: u64) -> Vec<f32> {
        let mut s = MaskStream::new(seed, &TrialId(trial.into()), epoch);
        s.step(step);
        let x = Tensor::ones([64, 32], (Kind::Float, Device::Cpu));
        let y = s.dropout(&x, 0.25);
        Vec::<f32>::try_from(y.flatten(0, -1)).unwrap()
    }

    #[test]
    fn masks_depend_on_seed_trial_epoch_and_step_only() {
        let a = mask(55, "ffv3-000000000001", 3, 7);
        assert_eq!(a, mask(55, "ffv3-000000000001", 3, 7));
        for other in [
            mask(56, "ffv3-000000000001", 3, 7),
            mask(55, "ffv3-000000000002", 3, 7),
            mask(55, "ffv3-000000000001", 4, 7),
            mask(55, "ffv3-000000000001", 3, 8),
        ] {
            assert_ne!(a, other);
        }
        // Moving back to a step gives its masks again, whatever was drawn in between.
        let mut s = MaskStream::new(55, &TrialId("ffv3-000000000001".into()), 3);
        s.step(7);
        let x = Tensor::ones([64, 32], (Kind::Float, Device::Cpu));
        let first = s.dropout(&x, 0.25);
        let _ = s.dropout(&x, 0.5);
        s.step(7);
        assert!(first.equal(&s.dropout(&x, 0.25)));
    }

    #[test]
    fn the_keep_rate_and_scale_are_those_of_inverted_dropout() {
        let a = mask(1, "ffv3-000000000001", 1, 0);
        let kept: Vec<f32> = a.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(kept.iter().all(|&v| v == (1.0 / 0.75f64) as f32));
        let rate = kept.len() as f64 / a.len() as f64;
        // 2048 draws of Bernoulli(0.75): sd 0.0096; 5 sd either side.
        assert!((rate - 0.75).abs() < 0.048, "{rate}");
        let x = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let mut s = MaskStream::new(1, &TrialId("ffv3-000000000001".into()), 1);
        assert!(s.dropout(&x, 0.0).equal(&x));
    }
}
