//! EmberEye's "compat" pixel conversion (protocol doc §2.2/§2.3).
//!
//! EmberEye does not compute a real temperature: it reads each pixel RAM word as signed 16-bit,
//! divides by 100 and adds 27, then adds a process-global offset. This module reproduces that
//! bit-for-bit (float64 arithmetic, result stored as float32) so a Rust server can show the same
//! numbers and apply the same alarm thresholds. Real MLX90640 temperatures need the EEPROM-based
//! Melexis algorithm, which is deliberately not here (doc §2.5).

use crate::sensor::proto::PIXELS;

/// EmberEye °C for one raw word: `signed16(word) / 100 + 27 + offset`.
///
/// Computed in `f64` and rounded once to `f32`, exactly like the Python code, which stores the
/// float64 result into a float32 numpy array (so 26.2 reads back as 26.200000762939453).
pub fn compat_celsius(word: u16, offset: f32) -> f32 {
    // `as i16` is the intended two's-complement reinterpretation (EmberEye: w - 65536 if w > 0x7FFF).
    let signed = f64::from(word as i16);
    let mut t = signed / 100.0 + 27.0;
    // EmberEye only adds the offset when it is non-zero; adding 0.0 would be identical anyway,
    // except for -0.0 corner cases, so mirror the branch.
    if offset != 0.0 {
        t += f64::from(offset);
    }
    t as f32
}

/// The offset EmberEye derives from a calibration word (EEPROM1 word 0, or frame tail word 0):
/// `signed16(word) / 100` if it lies in [-100, 100] °C, otherwise `None` (value ignored).
/// The real device's EEPROM word 0 `00B0` gives +1.76; its tail word 0 `4CD0` (196.64) is ignored.
pub fn compat_offset_from_word(word: u16) -> Option<f32> {
    let v = f64::from(word as i16) / 100.0;
    (-100.0..=100.0).contains(&v).then_some(v as f32)
}

/// Converts the 768 pixel words at the start of `words` (a frame's 834 words or raw counts) into
/// `out`, row-major 24×32. Extra input words (the 66 aux words) are ignored; if fewer than 768
/// words are given, the remaining outputs are left untouched.
pub fn compat_frame(words: &[u16], offset: f32, out: &mut [f32; PIXELS]) {
    for (o, &w) in out.iter_mut().zip(words) {
        *o = compat_celsius(w, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_2_3_worked_examples() {
        // (word, expected °C) from the table in doc §2.3, offset 0.
        let cases: [(u16, f32); 10] = [
            (0xFFB0, 26.20),
            (0xFFAA, 26.14),
            (0xFFAF, 26.19),
            (0xFFA1, 26.05),
            (0xFF38, 25.00),
            (0x16A8, 85.00),
            (0xF574, 0.00),
            (0x0000, 27.00),
            (0x7FFF, 354.67),
            (0x8000, -300.68),
        ];
        for (w, want) in cases {
            // Exact f32 equality: both sides are the f32 nearest to the decimal value.
            assert_eq!(compat_celsius(w, 0.0), want, "word {w:04X}");
        }
        assert_eq!(f64::from(compat_celsius(0xFFB0, 0.0)), 26.200000762939453);
    }

    #[test]
    fn eeprom_offset_is_added() {
        let off = compat_offset_from_word(0x00B0);
        assert_eq!(off, Some(1.76));
        let t = compat_celsius(0xFFB0, off.unwrap_or(0.0));
        assert!((t - 27.96).abs() < 1e-4, "{t}");
        assert_eq!(compat_offset_from_word(0x4CD0), None); // 196.64 °C: ignored
        assert_eq!(compat_offset_from_word(0xD8F0), Some(-100.0)); // boundary inclusive
    }

    #[test]
    fn frame_conversion_ignores_aux_words() {
        let mut words = [0u16; 834];
        words[0] = 0xFFB0;
        words[800] = 0x7FFF;
        let mut out = [0f32; PIXELS];
        compat_frame(&words, 0.0, &mut out);
        assert_eq!(out[0], 26.2);
        assert!(out[1..].iter().all(|&t| t == 27.0));
    }
}
