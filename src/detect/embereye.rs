//! EmberEye colour heuristic, reproduced bit-exactly.
//!
//! EmberEye (`vision_detector.py::heuristic_fire_smoke`) converts each frame with OpenCV's 8-bit
//! BGR→HSV and counts two `inRange` masks:
//!
//! * fire:  0 ≤ H ≤ 40, 100 ≤ S ≤ 255, 100 ≤ V ≤ 255
//! * smoke: any H,      0 ≤ S ≤ 60,   180 ≤ V ≤ 255
//!
//! `score = min(1, 3·fire_ratio + 1.5·smoke_ratio)`. Our scores must match EmberEye pixel for
//! pixel. So [`EmberEyeHsv::hsv`] copies OpenCV's fixed-point formula literally (12-bit `sdiv`/
//! `hdiv` tables, `+2048` rounding, arithmetic shift, `H += 180` when negative). It is the
//! reference. A textbook float HSV disagrees with OpenCV near the thresholds.
//! Bit-exactness is per RGB input. EmberEye decodes JPEG with OpenCV (libjpeg-turbo). Other
//! decoders round the IDCT and chroma upsampling differently. With zune-jpeg, the scores of the
//! 136 development fixture frames differ from EmberEye's by up to 0.014 (mean 0.0005).
//!
//! The frame path ([`EmberEyeHsv::score_rgb`]) never builds H or S. It evaluates the two mask
//! predicates directly, in a form with no table lookups, so LLVM can vectorise it (see
//! `classify_arith`). A per-pixel gather would block that. A full 2^24 colour LUT would cost 2 MiB
//! even as a bitset. Tests check the fast predicates against the reference for all 2^24 colours,
//! through both `classify` and `score_rgb`.

/// OpenCV's `hsv_shift`.
const SHIFT: i32 = 12;
const HALF: i32 = 1 << (SHIFT - 1);

/// Precomputed tables; build once at start-up.
pub struct EmberEyeHsv {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

/// Result of scoring one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmberEyeScore {
    pub fire_pixels: u32,
    pub smoke_pixels: u32,
    pub total_pixels: u32,
    pub score: f32,
}

impl Default for EmberEyeHsv {
    fn default() -> Self {
        Self::new()
    }
}

/// `round(num / den)` for positive integers. OpenCV uses `cvRound` (half-to-even) on a double.
/// No entry of either table lands exactly on .5 (255·4096 = 2^12·255 and 180·4096/6 = 2^13·15
/// would need den divisible by 2^13), so half-up integer rounding gives the same values.
const fn round_div(num: i64, den: i64) -> i32 {
    ((2 * num + den) / (2 * den)) as i32
}

impl EmberEyeHsv {
    pub fn new() -> Self {
        let mut sdiv = [0i32; 256];
        let mut hdiv = [0i32; 256];
        for i in 1..256i64 {
            sdiv[i as usize] = round_div(255 << SHIFT, i);
            hdiv[i as usize] = round_div(180 << SHIFT, 6 * i);
        }

        Self { sdiv, hdiv }
    }

    /// OpenCV 8-bit HSV of one pixel given r,g,b (H 0..179).
    pub fn hsv(&self, r: u8, g: u8, b: u8) -> (u8, u8, u8) {
        let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
        let v = r.max(g).max(b);
        let diff = v - r.min(g).min(b);
        let s = (diff * self.sdiv[v as usize] + HALF) >> SHIFT;
        // OpenCV tests R before G, so ties (e.g. R == G == max) take the R branch.
        let h = if v == r {
            g - b
        } else if v == g {
            b - r + 2 * diff
        } else {
            r - g + 4 * diff
        };
        // `>>` on i32 is arithmetic, as in OpenCV. Negative values round towards -inf, not 0.
        let mut h = (h * self.hdiv[diff as usize] + HALF) >> SHIFT;
        if h < 0 {
            h += 180;
        }
        (h as u8, s as u8, v as u8)
    }

    /// `(fire, smoke)` mask membership of one pixel. Equal to thresholding [`Self::hsv`].
    #[inline(always)]
    pub fn classify(&self, r: u8, g: u8, b: u8) -> (bool, bool) {
        classify_arith(r, g, b)
    }

    /// Score an RGB24 frame (row-major, width*height*3 bytes, R first). No allocation.
    ///
    /// If `rgb` is shorter than `width*height*3`, only the whole pixels present are scored, and
    /// `total_pixels` says how many. We don't panic, because a short frame from a flaky camera
    /// must not take the appliance down.
    pub fn score_rgb(&self, rgb: &[u8], width: usize, height: usize) -> EmberEyeScore {
        let want = width.saturating_mul(height);
        let n = want.min(rgb.len() / 3).min(u32::MAX as usize);

        let (fire, smoke) = count_masks(&rgb[..n * 3]);
        EmberEyeScore {
            fire_pixels: fire,
            smoke_pixels: smoke,
            total_pixels: n as u32,
            score: score_from_counts(fire, smoke, n as u32),
        }
    }
}

/// `(fire, smoke)` counts over whole RGB pixels. On x86-64 we pick an AVX2 build of the same
/// kernel at run time, because the baseline target only has SSE2 and is about 3x slower here.
/// aarch64 (Pi, Jetson) always has NEON, so it uses the generic build.
fn count_masks(rgb: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 support was checked just above.
            return unsafe { count_masks_avx2(rgb) };
        }
    }
    count_masks_generic(rgb)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_masks_avx2(rgb: &[u8]) -> (u32, u32) {
    count_masks_generic(rgb)
}

#[inline(always)]
fn count_masks_generic(rgb: &[u8]) -> (u32, u32) {
    // Deinterleave into planar blocks first. The strided RGB layout alone stops LLVM from
    // vectorising the arithmetic, and the split costs less than it saves.
    const BLOCK: usize = 256;
    let (mut fire, mut smoke) = (0u32, 0u32);
    let (mut rs, mut gs, mut bs) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
    for chunk in rgb.chunks(BLOCK * 3) {
        let m = chunk.len() / 3;
        for (i, px) in chunk.chunks_exact(3).enumerate() {
            rs[i] = px[0];
            gs[i] = px[1];
            bs[i] = px[2];
        }
        // Black padding in a short last block is neither fire (V < 100) nor smoke (V < 180).
        if m < BLOCK {
            rs[m..].fill(0);
            gs[m..].fill(0);
            bs[m..].fill(0);
        }
        let (mut bf, mut bsm) = (0u32, 0u32);
        for i in 0..BLOCK {
            let (f, s) = classify_arith(rs[i], gs[i], bs[i]);
            bf += u32::from(f);
            bsm += u32::from(s);
        }
        fire += bf;
        smoke += bsm;
    }
    (fire, smoke)
}

/// The two masks without lookup tables, for one pixel.
///
/// * S: `(d·sdiv[v] + 2048) >> 12 >= 100` is the same as `510·d >= 199·v`, and `<= 60` is the same
///   as `510·d < 121·v`. These are the exact rational bounds (255·4096/v, scaled by 1/2048). The
///   rounding inside `sdiv` never moves an integer `d` across them. Checked for every colour by the
///   exhaustive test.
/// * H: the rational form fails for a few diffs (e.g. d = 180: hdiv = 683, not 682.67). So we
///   rebuild `hdiv[d]` itself with one f32 division plus round-to-nearest. The f32 quotient of
///   122880/d is within 0.0073/d of the true value. Its fraction is never within 1/(2d) of .5. So
///   the rounding gives exactly OpenCV's `cvRound` entry (tested for every d).
/// * Everything is f32. All operands and the S products are integers < 2^24, so they are exact.
///   The hue products can exceed 2^24 and round. Rounding is monotonic, and each threshold and its
///   integer neighbours are representable, so every comparison is still exact. f32 lanes vectorise
///   on plain SSE2 and NEON, while 32-bit integer multiplies need SSE4.1.
#[inline(always)]
fn classify_arith(r: u8, g: u8, b: u8) -> (bool, bool) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let v = r.max(g).max(b);
    let d = v - r.min(g).min(b);

    let fire_s = (v >= 100.0) & (510.0 * d >= 199.0 * v);
    let smoke = (v >= 180.0) & (510.0 * d < 121.0 * v);

    // Round-to-nearest via the 1.5·2^23 trick, not `as i32`. A saturating float→int cast
    // doesn't vectorise. d = 0 → the numerators are 0, and max(1) avoids inf.
    let q = HDIV_NUM / d.max(1.0);
    let hd = (q + ROUND_MAGIC) - ROUND_MAGIC;
    let is_r = v == r;
    let is_g = !is_r & (v == g);
    // R branch: H in [-30, 30] before the +180 wrap, so fire ⇔ numerator·hdiv + 2048 >= 0.
    let hue_r = (g - b) * hd >= -(HALF as f32);
    // G branch: H in [30, 90], fire ⇔ H <= 40 ⇔ numerator·hdiv + 2048 < 41 << 12.
    let hue_g = (b - r + 2.0 * d) * hd < ((41 << SHIFT) - HALF) as f32;
    // max == B only: H >= 90, never fire. `&`/`|` instead of `&&`/`||` keep it branch-free.
    let fire = fire_s & ((is_r & hue_r) | (is_g & hue_g));
    (fire, smoke)
}

const HDIV_NUM: f32 = (180 << SHIFT) as f32 / 6.0;
/// Adding then subtracting 1.5·2^23 rounds an f32 in [0, 2^22) to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// EmberEye computes the ratios and score in float64 (numpy). We do the same and narrow to f32
/// only at the end, so values that round at a threshold (e.g. 0.6) agree.
fn score_from_counts(fire: u32, smoke: u32, total: u32) -> f32 {
    if total == 0 {
        return 0.0;
    }
    let t = f64::from(total);
    let s = 3.0 * (f64::from(fire) / t) + 1.5 * (f64::from(smoke) / t);
    s.min(1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hsv_masks(e: &EmberEyeHsv, r: u8, g: u8, b: u8) -> (bool, bool) {
        let (h, s, v) = e.hsv(r, g, b);
        let fire = h <= 40 && s >= 100 && v >= 100;
        let smoke = s <= 60 && v >= 180;
        (fire, smoke)
    }

    /// (BGR as printed in the doc, expected HSV, expected H only, fire, smoke).
    type DocCase = ((u8, u8, u8), Option<(u8, u8, u8)>, Option<u8>, bool, bool);

    /// The doc lists BGR tuples (OpenCV order). They are swapped to RGB for our API.
    #[test]
    fn doc_examples() {
        let e = EmberEyeHsv::new();
        let cases: &[DocCase] = &[
            ((0, 128, 255), Some((15, 255, 255)), None, true, false),
            ((0, 255, 255), Some((30, 255, 255)), None, true, false),
            ((0, 255, 200), Some((36, 255, 255)), None, true, false),
            ((0, 60, 120), Some((15, 255, 120)), None, true, false),
            // Skin tone: EmberEye's known false positive.
            ((130, 160, 220), Some((10, 104, 220)), None, true, false),
            // Red with B > G wraps to H 173 and is missed.
            ((60, 0, 255), None, Some(173), false, false),
            ((255, 255, 255), Some((0, 0, 255)), None, false, true),
            ((200, 200, 200), Some((0, 0, 200)), None, false, true),
            ((128, 128, 128), None, None, false, false),
            ((255, 0, 0), Some((120, 255, 255)), None, false, false),
        ];
        for &((b, g, r), hsv, h_only, fire, smoke) in cases {
            let got = e.hsv(r, g, b);
            if let Some(want) = hsv {
                assert_eq!(got, want, "hsv of BGR ({b},{g},{r})");
            }
            if let Some(h) = h_only {
                assert_eq!(got.0, h, "H of BGR ({b},{g},{r})");
            }
            assert_eq!(e.classify(r, g, b), (fire, smoke), "class of BGR ({b},{g},{r})");
        }
    }

    #[test]
    fn skin_like_pixel_is_fire() {
        let e = EmberEyeHsv::new();
        // BGR (130,160,220) = RGB (220,160,130).
        let frame = [220u8, 160, 130].repeat(16);
        let s = e.score_rgb(&frame, 4, 4);
        assert_eq!(s.fire_pixels, 16);
        assert_eq!(s.score, 1.0);
    }

    #[test]
    fn doc_100x100_example_scores_0_075() {
        let e = EmberEyeHsv::new();
        let (w, h) = (100usize, 100usize);
        let mut f = vec![0u8; w * h * 3];
        let mut paint = |x0: usize, y0: usize, bw: usize, bh: usize, rgb: [u8; 3]| {
            for y in y0..y0 + bh {
                for x in x0..x0 + bw {
                    f[(y * w + x) * 3..][..3].copy_from_slice(&rgb);
                }
            }
        };
        paint(10, 10, 20, 10, [255, 128, 0]); // BGR (0,128,255)
        paint(50, 50, 10, 10, [255, 255, 255]);
        let s = e.score_rgb(&f, w, h);
        assert_eq!((s.fire_pixels, s.smoke_pixels, s.total_pixels), (200, 100, 10_000));
        assert!((s.score - 0.075).abs() < 1e-6, "{}", s.score);
    }

    fn xorshift_frame(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut f = vec![0u8; w * h * 3];
        crate::prng::XorShift64::new(seed).fill(&mut f);
        f
    }

    #[test]
    fn uniform_random_frame_scores_0_600() {
        let e = EmberEyeHsv::new();
        let (w, h) = (640, 480);
        let f = xorshift_frame(w, h, 0x9E37_79B9_7F4A_7C15);
        let s = e.score_rgb(&f, w, h);
        assert_eq!(s.total_pixels, 640 * 480);
        assert!((s.score - 0.600).abs() < 0.01, "score {s:?}");
    }

    /// The hot-path bounds must equal thresholding the reference HSV for every colour. This also
    /// yields the exact colour-space fractions the doc quotes (fire 18.17 %, smoke 3.66 %).
    #[test]
    fn classify_matches_reference_for_all_colours() {
        let e = EmberEyeHsv::new();
        let (mut fire, mut smoke) = (0u64, 0u64);
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                for b in 0..=255u8 {
                    let want = hsv_masks(&e, r, g, b);
                    let got = e.classify(r, g, b);
                    assert_eq!(got, want, "rgb ({r},{g},{b}) hsv {:?}", e.hsv(r, g, b));
                    fire += u64::from(want.0);
                    smoke += u64::from(want.1);
                }
            }
        }
        let n = (1u64 << 24) as f64;
        let (fr, sr) = (fire as f64 / n, smoke as f64 / n);
        assert!((fr - 0.1817).abs() < 0.0001, "fire fraction {fr}");
        assert!((sr - 0.0366).abs() < 0.0001, "smoke fraction {sr}");
        assert!((3.0 * fr + 1.5 * sr - 0.600).abs() < 0.001);
    }

    #[test]
    fn f32_hdiv_reconstruction_matches_table() {
        let e = EmberEyeHsv::new();
        for d in 1..256i32 {
            let q = HDIV_NUM / d as f32;
            assert_eq!(((q + ROUND_MAGIC) - ROUND_MAGIC) as i32, e.hdiv[d as usize], "d {d}");
        }
    }

    /// Covers the frame path (block split, padding, AVX2 dispatch) as well as `classify`.
    #[test]
    fn score_rgb_over_all_colours_matches_reference() {
        let e = EmberEyeHsv::new();
        let mut frame = vec![0u8; 3 << 24];
        let (mut fire, mut smoke) = (0u32, 0u32);
        for (i, px) in frame.chunks_exact_mut(3).enumerate() {
            let (r, g, b) = ((i >> 16) as u8, (i >> 8) as u8, i as u8);
            px.copy_from_slice(&[r, g, b]);
            let (f, s) = hsv_masks(&e, r, g, b);
            fire += u32::from(f);
            smoke += u32::from(s);
        }
        let s = e.score_rgb(&frame, 4096, 4096);
        assert_eq!((s.fire_pixels, s.smoke_pixels), (fire, smoke));
        // The generic build is what non-AVX2 x86 and NEON targets run.
        assert_eq!(count_masks_generic(&frame), (fire, smoke));
        // 1001 pixels: the last 256-pixel block is partial and padded.
        let t = e.score_rgb(&frame[..3 * 1001], 1001, 1);
        let want: u32 = (0..1001usize).map(|i| u32::from(hsv_masks(&e, 0, (i >> 8) as u8, i as u8).0)).sum();
        assert_eq!(t.fire_pixels, want);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let e = EmberEyeHsv::new();
        let empty = e.score_rgb(&[], 0, 0);
        assert_eq!((empty.total_pixels, empty.score), (0, 0.0));
        // Declared size larger than the buffer: score what is there.
        let s = e.score_rgb(&[255, 128, 0, 255, 128], usize::MAX, usize::MAX);
        assert_eq!((s.fire_pixels, s.total_pixels), (1, 1));
    }

    #[test]
    fn timing_640x480() {
        let e = EmberEyeHsv::new();
        let f = xorshift_frame(640, 480, 42);
        let iters = if cfg!(debug_assertions) { 3 } else { 300 };
        let mut best = u128::MAX;
        let mut sink = 0u32;
        for _ in 0..iters {
            let t = std::time::Instant::now();
            sink = sink.wrapping_add(std::hint::black_box(e.score_rgb(std::hint::black_box(&f), 640, 480)).fire_pixels);
            best = best.min(t.elapsed().as_nanos());
        }
        let t = std::time::Instant::now();
        for _ in 0..iters {
            sink = sink.wrapping_add(std::hint::black_box(e.score_rgb(std::hint::black_box(&f), 640, 480)).fire_pixels);
        }
        let mean = t.elapsed().as_nanos() / iters as u128;
        println!(
            "score_rgb 640x480: best {best} ns/frame, mean {mean} ns/frame ({:.2} ns/px) [sink {sink}]",
            mean as f64 / (640.0 * 480.0)
        );
    }
}
