//! Model input preprocessing: crops a region of an RGB24 or YUYV frame and reduces it to the model's input size
//! with a box (area) filter, into a caller-owned buffer. Pure, allocation-free, and the same reduction the
//! training script uses (PIL's `Image.BOX`), so the model sees at run time what it saw in training.

use std::fmt;

use crate::pixels::{chroma_terms, luma_to_rgb};

/// A pixel rectangle `[x0, x1) x [y0, y1)` of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Region {
    pub fn whole(width: usize, height: usize) -> Self {
        Region { x0: 0, y0: 0, x1: width, y1: height }
    }
}

/// Why a frame could not be turned into a model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepError {
    /// Fewer bytes than width x height needs.
    ShortFrame { need: usize, have: usize },
    /// Empty, inverted or out-of-frame region.
    BadRegion(Region),
    /// The output buffer does not hold `out_w * out_h * 3` bytes.
    OutputSize { need: usize, have: usize },
    /// YUYV needs an even width.
    OddYuyvWidth(usize),
}

impl fmt::Display for PrepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepError::ShortFrame { need, have } => write!(f, "frame has {have} bytes, needs {need}"),
            PrepError::BadRegion(r) => {
                write!(f, "region ({},{})-({},{}) is empty or outside the frame", r.x0, r.y0, r.x1, r.y1)
            }
            PrepError::OutputSize { need, have } => write!(f, "input buffer has {have} bytes, needs {need}"),
            PrepError::OddYuyvWidth(w) => write!(f, "YUYV frame width {w} is odd"),
        }
    }
}

impl std::error::Error for PrepError {}

/// A frame the box filter reads: the RGB sums of row segments.
trait Source {
    /// Sums of R, G and B over pixels `[xa, xb)` of row `y` (in range: the caller checked the region).
    fn row_sum(&self, y: usize, xa: usize, xb: usize, sum: &mut [u32; 3]);
}

struct Rgb<'a> {
    px: &'a [u8],
    width: usize,
}

impl Source for Rgb<'_> {
    #[inline]
    fn row_sum(&self, y: usize, xa: usize, xb: usize, sum: &mut [u32; 3]) {
        let row = &self.px[(y * self.width + xa) * 3..(y * self.width + xb) * 3];
        let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
        for p in row.chunks_exact(3) {
            r += u32::from(p[0]);
            g += u32::from(p[1]);
            b += u32::from(p[2]);
        }
        sum[0] += r;
        sum[1] += g;
        sum[2] += b;
    }
}

struct Yuyv<'a> {
    px: &'a [u8],
    width: usize,
}

impl Source for Yuyv<'_> {
    /// Each pixel converted with BT.601 before it is added (clipping makes the mean of converted pixels differ
    /// from converting the mean), the pair's chroma terms worked out once for both of its pixels.
    #[inline]
    fn row_sum(&self, y: usize, xa: usize, xb: usize, sum: &mut [u32; 3]) {
        let row = &self.px[y * self.width * 2..(y + 1) * self.width * 2];
        let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
        for (i, q) in row[(xa & !1) * 2..xb.div_ceil(2) * 4].chunks_exact(4).enumerate() {
            let terms = chroma_terms(q[1], q[3]);
            let x = (xa & !1) + 2 * i;
            for (k, &luma) in [q[0], q[2]].iter().enumerate() {
                if (xa..xb).contains(&(x + k)) {
                    let [pr, pg, pb] = luma_to_rgb(luma, terms);
                    r += u32::from(pr);
                    g += u32::from(pg);
                    b += u32::from(pb);
                }
            }
        }
        sum[0] += r;
        sum[1] += g;
        sum[2] += b;
    }
}

fn check(frame_len: usize, need: usize, width: usize, height: usize, region: Region) -> Result<(), PrepError> {
    if frame_len < need {
        return Err(PrepError::ShortFrame { need, have: frame_len });
    }
    if region.x0 >= region.x1 || region.y0 >= region.y1 || region.x1 > width || region.y1 > height {
        return Err(PrepError::BadRegion(region));
    }
    Ok(())
}

/// Reduces `region` of an RGB24 frame to `out_w x out_h` RGB into `out`.
pub fn rgb_to_input(
    px: &[u8],
    width: usize,
    height: usize,
    region: Option<Region>,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<(), PrepError> {
    let region = region.unwrap_or(Region::whole(width, height));
    check(px.len(), width.saturating_mul(height).saturating_mul(3), width, height, region)?;
    reduce(&Rgb { px, width }, region, out, out_w, out_h)
}

/// Reduces `region` of a YUYV (4:2:2) frame to `out_w x out_h` RGB into `out`.
pub fn yuyv_to_input(
    px: &[u8],
    width: usize,
    height: usize,
    region: Option<Region>,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<(), PrepError> {
    if !width.is_multiple_of(2) {
        return Err(PrepError::OddYuyvWidth(width));
    }
    let region = region.unwrap_or(Region::whole(width, height));
    check(px.len(), width.saturating_mul(height).saturating_mul(2), width, height, region)?;
    reduce(&Yuyv { px, width }, region, out, out_w, out_h)
}

/// Box filter: each output pixel is the rounded mean of the source pixels its cell covers. Cells have integer
/// bounds (cell i spans [i*n/out, (i+1)*n/out)); when the region is smaller than the output a cell holds one
/// pixel, i.e. nearest-neighbour enlargement.
fn reduce(src: &impl Source, r: Region, out: &mut [u8], out_w: usize, out_h: usize) -> Result<(), PrepError> {
    let need = out_w * out_h * 3;
    if out.len() != need || out_w == 0 || out_h == 0 {
        return Err(PrepError::OutputSize { need, have: out.len() });
    }
    let (rw, rh) = (r.x1 - r.x0, r.y1 - r.y0);
    for oy in 0..out_h {
        let (ya, yb) = span(oy, rh, out_h);
        for ox in 0..out_w {
            let (xa, xb) = span(ox, rw, out_w);
            let mut sum = [0u32; 3];
            for y in r.y0 + ya..r.y0 + yb {
                src.row_sum(y, r.x0 + xa, r.x0 + xb, &mut sum);
            }
            // One division per cell, not per channel: the rounded mean (s + n/2) / n is the floor of
            // (s + n/2) · (1/n) in f64, nudged up by less than the 1/n gap to the next integer (n < 2^26 here).
            let n = ((yb - ya) * (xb - xa)) as u32;
            let inv = 1.0 / f64::from(n);
            let o = (oy * out_w + ox) * 3;
            for (c, &s) in out[o..o + 3].iter_mut().zip(&sum) {
                *c = (f64::from(s + n / 2) * inv + 1e-9).min(255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Source span `[a, b)` of output cell `i` of `o` over `n` source pixels: `[i·n/o, (i+1)·n/o)`, at least one
/// pixel (nearest-neighbour enlargement when `n < o`).
fn span(i: usize, n: usize, o: usize) -> (usize, usize) {
    let a = i * n / o;
    let b = ((i + 1) * n / o).max(a + 1).min(n);
    (a.min(n - 1), b)
}

/// The deterministic inputs of models/reference.json (same formulas as scripts/train-model.py).
pub fn synthetic_inputs(w: usize, h: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut grad = vec![0u8; w * h * 3];
    let mut disc = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 3;
            grad[i..i + 3].copy_from_slice(&[(x * 4 % 256) as u8, (y * 4 % 256) as u8, ((x + y) * 2 % 256) as u8]);
            let (dx, dy) = (x as i64 - 32, y as i64 - 40);
            let p = if dx * dx + dy * dy < 196 { [255, 140, 20] } else { [20, 20, 30] };
            disc[i..i + 3].copy_from_slice(&p);
        }
    }
    vec![("gradient", grad), ("orange_disc", disc), ("gray128", vec![128; w * h * 3])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::yuv_to_rgb;

    fn rgb_frame(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&f(x, y));
            }
        }
        v
    }

    #[test]
    fn identity_when_sizes_match() {
        let f = rgb_frame(8, 4, |x, y| [(x * 30) as u8, (y * 60) as u8, (x + y) as u8]);
        let mut out = [0u8; 8 * 4 * 3];
        rgb_to_input(&f, 8, 4, None, &mut out, 8, 4).unwrap();
        assert_eq!(&out[..], &f[..]);
    }

    #[test]
    fn halving_averages_2x2_blocks_with_rounding() {
        // Block values 0, 1, 1, 1 -> mean 0.75 -> 1; 10, 20, 30, 41 -> 25.25 -> 25.
        let f = rgb_frame(4, 2, |x, y| {
            let v = match (x, y) {
                (0, 0) => 0,
                (0, 1) | (1, 0) | (1, 1) => 1,
                (2, 0) => 10,
                (3, 0) => 20,
                (2, 1) => 30,
                _ => 41,
            };
            [v, v, 255 - v]
        });
        let mut out = [0u8; 2 * 3];
        rgb_to_input(&f, 4, 2, None, &mut out, 2, 1).unwrap();
        assert_eq!(out, [1, 1, 254, 25, 25, 230]);
    }

    #[test]
    fn region_crop_uses_only_the_region() {
        // Left half red, right half blue; the right half alone must come out pure blue.
        let f = rgb_frame(16, 8, |x, _| if x < 8 { [255, 0, 0] } else { [0, 0, 255] });
        let mut out = [0u8; 4 * 4 * 3];
        rgb_to_input(&f, 16, 8, Some(Region { x0: 8, y0: 0, x1: 16, y1: 8 }), &mut out, 4, 4).unwrap();
        assert!(out.chunks(3).all(|p| p == [0, 0, 255]));
        rgb_to_input(&f, 16, 8, None, &mut out, 4, 4).unwrap();
        assert_eq!(&out[..3], &[255, 0, 0]);
        assert_eq!(&out[9..12], &[0, 0, 255]);
    }

    #[test]
    fn small_region_is_enlarged_nearest() {
        let f = rgb_frame(4, 4, |x, y| [(x * 10 + y) as u8, 0, 0]);
        let mut out = [0u8; 4 * 4 * 3];
        // 2x2 region at (1,1) -> each source pixel becomes a 2x2 block.
        rgb_to_input(&f, 4, 4, Some(Region { x0: 1, y0: 1, x1: 3, y1: 3 }), &mut out, 4, 4).unwrap();
        let r = |x: usize, y: usize| out[(y * 4 + x) * 3];
        assert_eq!([r(0, 0), r(1, 1), r(2, 0), r(3, 3), r(0, 3)], [11, 11, 21, 22, 12]);
    }

    #[test]
    fn uneven_cells_cover_every_source_pixel_once() {
        // 7 -> 3: cells [0,2) [2,4) [4,7); a constant frame stays constant, a ramp stays monotone.
        let f = rgb_frame(7, 1, |x, _| [(x * 40) as u8, 100, 100]);
        let mut out = [0u8; 3 * 3];
        rgb_to_input(&f, 7, 1, None, &mut out, 3, 1).unwrap();
        assert_eq!([out[0], out[3], out[6]], [20, 100, 200]);
        assert_eq!([out[1], out[4], out[7]], [100, 100, 100]);
    }

    #[test]
    fn yuyv_matches_rgb_of_the_converted_frame() {
        let (w, h) = (6, 4);
        let mut yuyv = vec![0u8; w * h * 2];
        for (i, b) in yuyv.iter_mut().enumerate() {
            *b = (i * 37 % 256) as u8;
        }
        let rgb = rgb_frame(w, h, |x, y| {
            let i = (y * w + (x & !1)) * 2;
            yuv_to_rgb(yuyv[i + (x & 1) * 2], yuyv[i + 1], yuyv[i + 3])
        });
        let (mut a, mut b) = ([0u8; 3 * 2 * 3], [0u8; 3 * 2 * 3]);
        yuyv_to_input(&yuyv, w, h, None, &mut a, 3, 2).unwrap();
        rgb_to_input(&rgb, w, h, None, &mut b, 3, 2).unwrap();
        assert_eq!(a, b);
    }

    /// The plain definition: every pixel converted, summed, and divided per channel.
    fn reference(px: &[u8], w: usize, yuyv: bool, r: Region, out_w: usize, out_h: usize) -> Vec<u8> {
        let pixel = |x: usize, y: usize| {
            if yuyv {
                let i = (y * w + (x & !1)) * 2;
                yuv_to_rgb(px[i + (x & 1) * 2], px[i + 1], px[i + 3])
            } else {
                let i = (y * w + x) * 3;
                [px[i], px[i + 1], px[i + 2]]
            }
        };
        let mut out = Vec::new();
        for oy in 0..out_h {
            let (ya, yb) = span(oy, r.y1 - r.y0, out_h);
            for ox in 0..out_w {
                let (xa, xb) = span(ox, r.x1 - r.x0, out_w);
                let mut sum = [0u32; 3];
                for y in r.y0 + ya..r.y0 + yb {
                    for x in r.x0 + xa..r.x0 + xb {
                        for (s, v) in sum.iter_mut().zip(pixel(x, y)) {
                            *s += u32::from(v);
                        }
                    }
                }
                let n = ((yb - ya) * (xb - xa)) as u32;
                out.extend(sum.map(|s| ((s + n / 2) / n) as u8));
            }
        }
        out
    }

    #[test]
    fn row_sums_and_one_division_per_cell_equal_the_plain_definition() {
        let mut rng = crate::prng::XorShift64::new(7);
        for round in 0..300 {
            let (w, h) = (2 * (1 + rng.below(120)), 1 + rng.below(90));
            let yuyv = round % 2 == 1;
            let mut px = vec![0u8; w * h * if yuyv { 2 } else { 3 }];
            rng.fill(&mut px);
            // Saturated runs too, where BT.601 clips.
            if round % 3 == 0 {
                px.iter_mut().step_by(5).for_each(|b| *b = 255);
            }
            let (x0, y0) = (rng.below(w), rng.below(h));
            let r = Region { x0, y0, x1: x0 + 1 + rng.below(w - x0), y1: y0 + 1 + rng.below(h - y0) };
            let (ow, oh) = (1 + rng.below(64), 1 + rng.below(64));
            let mut out = vec![0u8; ow * oh * 3];
            if yuyv {
                yuyv_to_input(&px, w, h, Some(r), &mut out, ow, oh).unwrap();
            } else {
                rgb_to_input(&px, w, h, Some(r), &mut out, ow, oh).unwrap();
            }
            assert_eq!(out, reference(&px, w, yuyv, r, ow, oh), "round {round}: {w}x{h} {r:?} -> {ow}x{oh}");
        }
    }

    #[test]
    fn bt601_reference_colours() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        // Full red in BT.601 limited range: Y 81, Cb 90, Cr 240.
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let f = vec![0u8; 4 * 4 * 3];
        let mut out = [0u8; 2 * 2 * 3];
        assert!(matches!(rgb_to_input(&f[..10], 4, 4, None, &mut out, 2, 2), Err(PrepError::ShortFrame { .. })));
        for r in [
            Region { x0: 2, y0: 0, x1: 2, y1: 4 },
            Region { x0: 0, y0: 3, x1: 4, y1: 1 },
            Region { x0: 0, y0: 0, x1: 5, y1: 4 },
        ] {
            assert_eq!(rgb_to_input(&f, 4, 4, Some(r), &mut out, 2, 2), Err(PrepError::BadRegion(r)));
        }
        assert!(matches!(rgb_to_input(&f, 4, 4, None, &mut out[..5], 2, 2), Err(PrepError::OutputSize { .. })));
        assert!(matches!(rgb_to_input(&f, 4, 4, None, &mut [], 0, 0), Err(PrepError::OutputSize { .. })));
        assert_eq!(yuyv_to_input(&f, 3, 4, None, &mut out, 2, 2), Err(PrepError::OddYuyvWidth(3)));
        assert!(matches!(rgb_to_input(&f, 0, 0, None, &mut out, 2, 2), Err(PrepError::BadRegion(_))));
    }

    #[test]
    fn preprocessing_does_not_allocate() {
        let f = rgb_frame(64, 48, |x, y| [x as u8, y as u8, 7]);
        let mut out = [0u8; 16 * 16 * 3];
        let before = crate::alloc_count::allocations();
        rgb_to_input(&f, 64, 48, Some(Region { x0: 3, y0: 5, x1: 50, y1: 40 }), &mut out, 16, 16).unwrap();
        assert_eq!(crate::alloc_count::allocations(), before);
    }

    #[test]
    fn synthetic_inputs_match_the_python_formulas() {
        let v = synthetic_inputs(64, 64);
        let (_, grad) = &v[0];
        // (x=63, y=10): r = 252, g = 40, b = 146.
        let i = (10 * 64 + 63) * 3;
        assert_eq!(&grad[i..i + 3], &[252, 40, 146]);
        let (_, disc) = &v[1];
        assert_eq!(&disc[(40 * 64 + 32) * 3..][..3], &[255, 140, 20]);
        assert_eq!(&disc[0..3], &[20, 20, 30]);
    }
}
