//! Where every random number of a search comes from: ChaCha20 keyed by the sweep's seed, the
//! experiment's name, a purpose and an index, so that draws depend on nothing else (not on the
//! order in which experiments or other suggestions are processed).
//!
//! Uniform numbers are made here from raw 64-bit words rather than through `rand`'s
//! distributions, so the draws stay the same across `rand` versions: only ChaCha20 itself
//! (a fixed cipher) and the few lines below decide them.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What a generator is for; part of its key, so two purposes never share a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The draws of random search, one stream per experiment.
    Random,
    /// The draws behind one TPE suggestion (startup draws included).
    Tpe,
}

/// A stable 64-bit digest of a name (FNV-1a). It only spreads names over the key; ChaCha20 does
/// the mixing, and two names colliding would merely give two experiments the same draws.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The generator for `(seed, experiment, purpose, index)`.
pub(crate) fn generator(seed: u64, experiment: &str, purpose: Purpose, index: u64) -> Draws {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv1a(experiment).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..32].copy_from_slice(match purpose {
        Purpose::Random => b"hs-rand\0",
        Purpose::Tpe => b"hs-tpe\0\0",
    });
    Draws(ChaCha20Rng::from_seed(key))
}

/// A stream of uniform numbers.
#[derive(Debug, Clone)]
pub(crate) struct Draws(ChaCha20Rng);

impl Draws {
    /// A uniform number in `[0, 1)` with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform number in `[lo, hi)` (as numpy's `uniform`: `lo + (hi - lo) * u`).
    pub(crate) fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A uniform index in `0..n` (`n >= 1`).
    pub(crate) fn index(&mut self, n: u128) -> u128 {
        // 128 random bits reduced modulo n: the bias is below n / 2^128, nothing a sweep sees.
        let wide = (u128::from(self.0.next_u64()) << 64) | u128::from(self.0.next_u64());
        wide % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream_and_each_input_matters() {
        let take = |mut d: Draws| (0..4).map(|_| d.uniform()).collect::<Vec<_>>();
        let a = take(generator(1, "lab", Purpose::Random, 0));
        assert_eq!(a, take(generator(1, "lab", Purpose::Random, 0)));
        assert_ne!(a, take(generator(2, "lab", Purpose::Random, 0)));
        assert_ne!(a, take(generator(1, "lab2", Purpose::Random, 0)));
        assert_ne!(a, take(generator(1, "lab", Purpose::Tpe, 0)));
        assert_ne!(a, take(generator(1, "lab", Purpose::Random, 1)));
        assert!(a.iter().all(|u| (0.0..1.0).contains(u)));
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
