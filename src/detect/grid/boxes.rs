//! Reading a frame larger than the sample grid as cell means: each sample is the mean colour of its cell, the
//! 1/160 × 1/120 of the frame it stands for, whatever the frame's size and format. That is what a 640×480 JPEG
//! camera's frame carries after the analysis-scale decode (`camera::scaled` keeps 4×4-block means from the DCT,
//! one per cell), and the scorer is trained on it. Point samples of a larger frame are noisier (sensor noise,
//! fine texture) and made a raw V4L2 webcam, a 1/2-scale decode and an MJPEG camera score one scene
//! differently; means over cells of unequal pixel counts would add a texture of their own, so pixels that a
//! cell border cuts count with the part of them inside the cell (exact integer weights).
//!
//! Cost: one pass that adds each row, weighted, into a column accumulator (vectorised), then one weighted sum
//! per cell. Frames that are a whole multiple of the grid (640×480, 1280×720, 1920×1080) need no weights and
//! take a faster loop with the same result. Nothing is allocated: the accumulator lives in the detector.

use super::*;

/// Widest frame read as cell means; wider frames are point-sampled (no camera the appliance supports delivers
/// raw frames that wide, and JPEG frames arrive at analysis scale).
pub(super) const MAX_BOX_WIDTH: usize = 4096;
/// Accumulator length: one entry per byte of the widest RGB row.
pub(super) const ACC_LEN: usize = 3 * MAX_BOX_WIDTH;
/// Largest frame (4K UHD): keeps `257 × pixels` under 2^31, which `Mean` needs to stay exact in 64 bits.
const MAX_BOX_PIXELS: usize = 3840 * 2160;

/// Rounded `s / n` for `s < 256 n` and `n ≤ MAX_BOX_PIXELS`, by a multiply and a shift (Granlund–Montgomery:
/// with `s + n/2` below 2^b and `l = ⌈log2 n⌉`, `m = ⌈2^(b+l) / n⌉` gives the exact quotient, and `m · (s + n/2)`
/// stays under 2^(2b+1) ≤ 2^63): a division per sample channel cost more than the rest of the detector.
#[derive(Clone, Copy)]
struct Mean {
    m: u64,
    shift: u32,
    half: u64,
}

/// Rounded `s / n` for `s < 256 n` and `n ≤ MAX_SMALL_N` (whole-multiple cells), in `f32`, which vectorises: the
/// quotient is below 257, so the product's error is under 2^-14, while a quotient that is not whole is at least
/// 1/n > 2^-9 from the next integer; adding 2^-12 before truncating therefore gives the exact floor.
#[derive(Clone, Copy)]
struct SmallMean {
    inv: f32,
    half: u32,
    /// `log2 n` when `n` is a power of two (640×480 and 320×240: cells of 16 and 4 pixels), which needs no
    /// float at all.
    shift: Option<u32>,
}

/// Largest cell (pixels) `SmallMean` is exact for; whole-multiple cells of a 4K UHD frame hold 432.
const MAX_SMALL_N: u32 = 512;

impl SmallMean {
    fn new(n: u32) -> Self {
        let n = n.clamp(1, MAX_SMALL_N);
        SmallMean { inv: 1.0 / n as f32, half: n / 2, shift: n.is_power_of_two().then(|| n.trailing_zeros()) }
    }

    /// The mean by whichever path `new` chose (the band loop branches once instead).
    #[cfg(test)]
    fn of(self, s: u32) -> u32 {
        match self.shift {
            Some(k) => ((s + self.half) >> k).min(255),
            None => self.of_float(s),
        }
    }

    /// The float path alone, for loops that branch on `shift` once.
    #[inline(always)]
    fn of_float(self, s: u32) -> u32 {
        // Through i32 both ways: x86 converts i32 and f32 natively, not u32 (the value is 0..2^17 and 0..257).
        (((s + self.half) as i32 as f32 * self.inv + 1.0 / 4096.0) as i32).clamp(0, 255) as u32
    }
}

impl Mean {
    fn new(n: u64) -> Self {
        let n = n.max(1);
        let b = 64 - (257 * n).leading_zeros();
        let l = 64 - (n - 1).leading_zeros();
        Mean { m: (1u64 << (b + l)).div_ceil(n), shift: b + l, half: n / 2 }
    }

    #[inline(always)]
    fn of(self, s: u64) -> u32 {
        (((s + self.half) * self.m) >> self.shift).min(255) as u32
    }
}

impl GridDetector {
    /// Fills the class and luma grids from cell means of an RGB24 (`bpp` 3) or YUYV (`bpp` 2, even width)
    /// frame; false (nothing done) for a frame exactly the grid's size (its pixels are the means) or too large
    /// for the accumulator, which the point-sampling loops read.
    #[inline(always)]
    pub(super) fn sample_boxes(&mut self, px: &[u8], width: usize, height: usize, bpp: usize) -> bool {
        let yuyv = bpp == 2;
        if (width == SW && height == SH) || width > MAX_BOX_WIDTH || width * height > MAX_BOX_PIXELS {
            return false;
        }
        if yuyv && !width.is_multiple_of(2) {
            return false;
        }
        let (kx, ky) = (width / SW, height / SH);
        // Whole multiples, with cells of whole YUYV pairs: every pixel weighs the same.
        if width.is_multiple_of(SW) && height.is_multiple_of(SH) && (!yuyv || kx.is_multiple_of(2)) {
            self.cells_uniform(px, width, kx, ky, yuyv);
        } else {
            self.cells_weighted(px, width, height, yuyv);
        }
        true
    }

    #[inline(always)]
    fn cells_uniform(&mut self, px: &[u8], width: usize, kx: usize, ky: usize, yuyv: bool) {
        let bpp = if yuyv { 2 } else { 3 };
        let row_bytes = width * bpp;
        let mean = SmallMean::new((kx * ky) as u32);
        let (mut words, mut sums) = ([0u32; SW], [[0u32; 3]; SW]);
        // 16-bit column sums (ky ≤ MAX_BOX_PIXELS / (SW·SH) < 257 rows of 255): twice the lanes of `acc`.
        for j in 0..SH {
            let acc = &mut self.acc16[..row_bytes];
            let band = &px[j * ky * row_bytes..][..ky * row_bytes];
            for (a, &b) in acc.iter_mut().zip(&band[..row_bytes]) {
                *a = u16::from(b);
            }
            for row in band.chunks_exact(row_bytes).skip(1) {
                for (a, &b) in acc.iter_mut().zip(row) {
                    *a += u16::from(b);
                }
            }
            // The common sizes get a cell of known length (a loop the compiler unrolls).
            match (yuyv, kx) {
                (true, 2) => cell_sums::<4, 2>(acc, &mut sums),
                (true, 4) => cell_sums::<8, 2>(acc, &mut sums),
                (true, 8) => cell_sums::<16, 2>(acc, &mut sums),
                (true, 12) => cell_sums::<24, 2>(acc, &mut sums),
                (false, 2) => cell_sums::<6, 3>(acc, &mut sums),
                (false, 4) => cell_sums::<12, 3>(acc, &mut sums),
                (false, 8) => cell_sums::<24, 3>(acc, &mut sums),
                (false, 12) => cell_sums::<36, 3>(acc, &mut sums),
                _ => {
                    for (cell, s) in acc.chunks_exact(bpp * kx).zip(sums.iter_mut()) {
                        *s = cell_sum(cell, bpp);
                    }
                }
            }
            // One pass of means, the branch outside it (inside, the compiler computed both kinds for every cell).
            match mean.shift {
                Some(k) => {
                    for (s, w) in sums.iter().zip(words.iter_mut()) {
                        *w = word(yuyv, s.map(|s| ((s + mean.half) >> k).min(255)));
                    }
                }
                None => {
                    for (s, w) in sums.iter().zip(words.iter_mut()) {
                        *w = word(yuyv, s.map(|s| mean.of_float(s)));
                    }
                }
            }
            self.store_words(j, &words, yuyv);
        }
    }

    /// Cells with fractional borders. In units of 1/`SW` pixel, pixel `x` spans `[x·SW, (x+1)·SW)` and cell `i`
    /// spans `[i·width, (i+1)·width)`; a pixel's weight is the overlap (likewise for rows with `SH`), so every
    /// cell's weights add up to `width × height`.
    #[inline(always)]
    fn cells_weighted(&mut self, px: &[u8], width: usize, height: usize, yuyv: bool) {
        let bpp = if yuyv { 2 } else { 3 };
        let row_bytes = width * bpp;
        let mean = Mean::new((width * height) as u64);
        let overlap = |p: usize, unit: usize, c: usize, size: usize| {
            ((p + 1) * unit).min((c + 1) * size) - (p * unit).max(c * size)
        };
        let mut words = [0u32; SW];
        for j in 0..SH {
            let acc = &mut self.acc[..row_bytes];
            acc.fill(0);
            for y in j * height / SH..((j + 1) * height).div_ceil(SH) {
                let wy = overlap(y, SH, j, height) as u32;
                for (a, &b) in acc.iter_mut().zip(&px[y * row_bytes..][..row_bytes]) {
                    *a += wy * u32::from(b);
                }
            }
            for (i, w) in words.iter_mut().enumerate() {
                let mut s = [0u64; 3];
                for x in i * width / SW..((i + 1) * width).div_ceil(SW) {
                    let wx = overlap(x, SW, i, width) as u64;
                    if yuyv {
                        let pair = 4 * (x / 2);
                        s[0] += wx * u64::from(acc[2 * x]);
                        s[1] += wx * u64::from(acc[pair + 1]);
                        s[2] += wx * u64::from(acc[pair + 3]);
                    } else {
                        for (k, s) in s.iter_mut().enumerate() {
                            *s += wx * u64::from(acc[3 * x + k]);
                        }
                    }
                }
                *w = word(yuyv, s.map(|s| mean.of(s)));
            }
            self.store_words(j, &words, yuyv);
        }
    }

    #[inline(always)]
    fn store_words(&mut self, j: usize, words: &[u32; SW], yuyv: bool) {
        let (mut idx, mut luma) = ([0u32; SW], [0u8; SW]);
        let sample = if yuyv { yuyv_sample } else { rgb_sample };
        for ((i, l), &w) in idx.iter_mut().zip(luma.iter_mut()).zip(words) {
            (*i, *l) = sample(w);
        }
        self.store_row(j, &idx, &luma);
    }
}

/// Channel sums of one band's cells of `L` accumulator entries (`BPP` bytes a pixel).
#[inline(always)]
fn cell_sums<const L: usize, const BPP: usize>(acc: &[u16], sums: &mut [[u32; 3]; SW]) {
    for (cell, s) in acc.chunks_exact(L).zip(sums.iter_mut()) {
        *s = cell_sum(cell, BPP);
    }
}

/// One cell's channel sums (Y, U, V or R, G, B) from its column sums.
#[inline(always)]
fn cell_sum(cell: &[u16], bpp: usize) -> [u32; 3] {
    let mut s = [0u32; 3];
    if bpp == 2 {
        for pair in cell.chunks_exact(4) {
            s[0] += u32::from(pair[0]) + u32::from(pair[2]);
            // Each pair's chroma belongs to both of its pixels.
            s[1] += 2 * u32::from(pair[1]);
            s[2] += 2 * u32::from(pair[3]);
        }
    } else {
        for p in cell.chunks_exact(3) {
            for (s, &v) in s.iter_mut().zip(p) {
                *s += u32::from(v);
            }
        }
    }
    s
}

/// The sample word the format's `*_sample` reads: Y | U << 8 | Y << 16 | V << 24, or R | G << 8 | B << 16.
#[inline(always)]
fn word(yuyv: bool, [a, b, c]: [u32; 3]) -> u32 {
    if yuyv { a | (b << 8) | (a << 16) | (c << 24) } else { a | (b << 8) | (c << 16) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::rgb_to_yuyv;

    type Grid = [u8; NS];

    /// A frame that is constant over each cell reads exactly its cells' values, whatever the size and format:
    /// every size reads what the first reads, with whole multiples (the uniform loop) and fractional cells (the
    /// weighted one) alike. Colours change every second cell across and down, so that no cell shares a YUYV pair
    /// or a cut pixel with a cell of another colour.
    #[test]
    fn constant_cells_read_their_value_at_every_scale() {
        let cell_px = |i: usize, j: usize| [(i * 37 % 256) as u8, (j * 53 % 256) as u8, ((i + j) * 11 % 256) as u8];
        let sizes = [
            (2, [(320, 240), (640, 480), (1280, 1080), (480, 360)]),
            (3, [(320, 240), (400, 300), (480, 360), (1920, 1080)]),
        ];
        for (bpp, sizes) in sizes {
            // The first size's class and luma grids.
            let mut first: Option<(Box<Grid>, Box<Grid>)> = None;
            for (w, h) in sizes {
                let (cw, ch) = (w as f64 / SW as f64, h as f64 / SH as f64);
                let mut px = vec![0u8; w * h * 3];
                for y in 0..h {
                    for x in 0..w {
                        let c = cell_px((x as f64 / cw) as usize / 2, (y as f64 / ch) as usize / 2);
                        px[(y * w + x) * 3..][..3].copy_from_slice(&c);
                    }
                }
                if bpp == 2 {
                    let mut yuyv = Vec::new();
                    rgb_to_yuyv(&px, w, w, h, &mut yuyv);
                    px = yuyv;
                }
                let mut det = GridDetector::new(&[]);
                assert!(det.sample_boxes(&px, w, h, bpp), "{w}x{h}");
                match &first {
                    None => first = Some((det.class.clone(), det.luma.clone())),
                    Some((c, l)) => assert!(det.class == *c && det.luma == *l, "{w}x{h} bpp {bpp}"),
                }
            }
        }
    }

    /// Odd sizes weigh the pixels a cell border cuts: a frame split into a left half and a right half of two
    /// colours reads the left colour left of the middle and the right colour right of it, and the cell that the
    /// split cuts reads a colour between them.
    #[test]
    fn uneven_cells_average_their_own_pixels() {
        let (w, h) = (350, 250);
        let mut yuyv = vec![0u8; w * h * 2];
        for y in 0..h {
            for pair in 0..w / 2 {
                let v = if pair * 2 < w / 2 { [60, 90, 60, 200] } else { [180, 140, 180, 120] };
                yuyv[(y * w + pair * 2) * 2..][..4].copy_from_slice(&v);
            }
        }
        let mut det = GridDetector::new(&[]);
        assert!(det.sample_boxes(&yuyv, w, h, 2));
        for j in 0..SH {
            assert_eq!(det.luma[j * SW], 60);
            assert_eq!(det.luma[j * SW + SW - 1], 180);
            assert_eq!(det.class[j * SW + 10], det.lut[lut_index(60, 90, 200)]);
            // The split at x = 175 cuts cell 79 (x 172.8..175.0 is left) ... cell 80 starts at 175.
            let cut = det.luma[j * SW + 79];
            assert!((60..=180).contains(&cut), "{cut}");
        }
    }

    /// Both means are the exact rounded quotient: every sum of every cell size `SmallMean` takes, and sums
    /// across the range for cell sizes up to a 4K UHD frame's for `Mean`.
    #[test]
    fn means_are_exact() {
        for n in 1..=MAX_SMALL_N {
            let m = SmallMean::new(n);
            for s in 0..=255 * n {
                assert_eq!(m.of(s), (s + n / 2) / n, "n {n} s {s}");
            }
        }
        for n in [1u64, 3, 7, 48, 108, 76_800, 307_200, 2_073_600, MAX_BOX_PIXELS as u64] {
            let m = Mean::new(n);
            let step = (n / 1000).max(1);
            for s in (0..=255 * n).step_by(step as usize).chain([255 * n, 255 * n - 1]) {
                assert_eq!(u64::from(m.of(s)), (s + n / 2) / n, "n {n} s {s}");
            }
        }
    }

    #[test]
    fn too_wide_frames_are_left_to_point_sampling() {
        let mut det = GridDetector::new(&[]);
        let w = MAX_BOX_WIDTH + 2;
        assert!(!det.sample_boxes(&vec![0; w * SH * 2], w, SH, 2));
    }
}
