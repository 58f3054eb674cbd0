//! Shared by the targets: split an input into the chunks a socket or serial port would deliver, so the
//! streaming parsers are fuzzed across every chunk boundary and not only on whole buffers. The first byte picks
//! the chunk sizes (0: all at once), the rest is the stream.

/// (stream, chunk sizes generator) from an input.
pub fn split(data: &[u8]) -> (&[u8], Chunks) {
    match data.split_first() {
        Some((&seed, rest)) => (rest, Chunks { state: u32::from(seed) | 0x100, whole: seed == 0 }),
        None => (data, Chunks { state: 1, whole: true }),
    }
}

pub struct Chunks {
    state: u32,
    whole: bool,
}

impl Chunks {
    /// The next chunk length, 1..=max (`max` when the input is fed whole).
    pub fn next(&mut self, max: usize) -> usize {
        if self.whole || max <= 1 {
            return max.max(1);
        }
        // xorshift32: cheap, deterministic, and the same for the same input (AFL needs that).
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        // Mostly short chunks (1..64), sometimes long ones.
        let n = if self.state & 3 == 0 { self.state as usize >> 2 } else { (self.state as usize >> 2) & 63 };
        1 + n % max
    }
}
