//! The crate's one pseudo-random generator: Marsaglia's xorshift64 (shifts 13, 7, 17). It spreads reconnect
//! times, adds sensor noise to the simulator and drives the randomised tests; none of these needs a
//! cryptographic generator, and a fixed seed must give the same numbers on every platform so a failing test
//! reproduces.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64. Not cryptographic. The same seed always gives the same sequence.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator starting at `seed`. Zero is the one state xorshift cannot leave, so it is replaced.
    pub fn new(seed: u64) -> Self {
        XorShift64(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// Seeded from the clock, the process id and `salt`, so processes and the parts within one (cameras behind
    /// one switch) do not draw the same numbers and retry in lockstep.
    pub fn from_clock(salt: u64) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        XorShift64::new(nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    #[allow(clippy::should_implement_trait)] // Not an iterator: it never ends, and callers want the plain u64.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `next() % n` (n = 0 counts as 1): slightly biased for huge `n`, which no caller has.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in [0, 1], from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }

    /// Fills `out` with the little-endian bytes of successive draws.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence_and_ranges() {
        let mut r = XorShift64::new(1);
        // Marsaglia's xorshift64 (13, 7, 17) from state 1.
        assert_eq!(r.next(), 1_082_269_761);
        let mut a = XorShift64::new(42);
        let mut b = a.clone();
        assert!((0..100).all(|_| a.next() == b.next()));
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert!((0..1000).map(|_| a.unit()).all(|u| (0.0..=1.0).contains(&u)));
        assert_ne!(XorShift64::new(0).next(), 0, "a zero seed must not stick at zero");
        let mut bytes = [0u8; 11];
        XorShift64::new(5).fill(&mut bytes);
        let mut c = XorShift64::new(5);
        assert_eq!(bytes[..8], c.next().to_le_bytes());
        assert_eq!(bytes[8..], c.next().to_le_bytes()[..3]);
    }
}
