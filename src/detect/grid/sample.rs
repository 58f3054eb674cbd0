//! Filling the sample grids: each frame is read on the fixed `SW`×`SH` sample grid, either with one fixed stride
//! per row (widths that are an even multiple of `SW`) or from a table of sample offsets (any width), and each
//! sample's classes are looked up in the LUT.

use super::*;

impl GridDetector {
    /// The sampling loop for widths that are an even multiple of `SW` (640, 1280, 1920, ...), where the samples
    /// of a row are one fixed stride apart, in three passes per row: gather each sample as one little-endian
    /// word (one load; walking the row in stride-sized chunks drops the per-sample bounds checks); `index` cuts
    /// the LUT index and the luma out of each word (vectorised: BT.601 in 16-bit lanes for RGB); look the
    /// classes up. The next row's lines are prefetched meanwhile. False (nothing done) for other widths, which
    /// take [`Self::sample_rows`].
    #[inline(always)]
    pub(super) fn sample_rows_strided(
        &mut self,
        px: &[u8],
        width: usize,
        height: usize,
        bpp: usize,
        index: impl Fn(u32) -> (u32, u8),
    ) -> bool {
        // The word must stay in its sample's chunk: R, G, B and the next byte, or Y0 U Y1 V; or, on an RGB frame
        // exactly as wide as the grid (a JPEG decoded at analysis scale), the chunk is the pixel.
        let Some((stride, first)) = strided_layout(width, bpp) else {
            return false;
        };
        let packed = bpp == 3 && stride == 3;
        if first + 4 > stride && !packed {
            return false;
        }
        let row_of = |j: usize| &px[sample_y(j, height) * width * bpp..][..width * bpp];
        let (mut words, mut idx, mut ys) = ([0u32; SW], [0u32; SW], [0u8; SW]);
        for j in 0..SH {
            if j + 1 < SH {
                prefetch_row(row_of(j + 1));
            }
            if packed {
                for (p, w) in row_of(j).chunks_exact(3).zip(words.iter_mut()) {
                    *w = u32::from_le_bytes([p[0], p[1], p[2], 0]);
                }
            } else {
                for (chunk, w) in row_of(j).chunks_exact(stride).zip(words.iter_mut()) {
                    if let Some(p) = chunk.get(first..).and_then(|p| p.first_chunk::<4>()) {
                        *w = u32::from_le_bytes(*p);
                    }
                }
            }
            for ((i, y), &w) in idx.iter_mut().zip(ys.iter_mut()).zip(&words) {
                (*i, *y) = index(w);
            }
            self.store_row(j, &idx, &ys);
        }
        true
    }

    /// The last pass of the strided loops: sample row `j`'s luma and its classes looked up, both masked. Two
    /// loops, because the luma one vectorises and the lookups cannot.
    #[inline(always)]
    pub(super) fn store_row(&mut self, j: usize, idx: &[u32; SW], ys: &[u8; SW]) {
        let lut = &*self.lut;
        let base = j * SW;
        let (class, luma, keep) =
            (&mut self.class[base..base + SW], &mut self.luma[base..base + SW], &self.keep[base..base + SW]);
        for ((l, &k), &y) in luma.iter_mut().zip(keep).zip(ys) {
            *l = y & k;
        }
        for ((c, &k), &x) in class.iter_mut().zip(keep).zip(idx) {
            *c = lut[x as usize & (LUT_LEN - 1)] & k;
        }
    }

    /// Fills the class and luma grids for any width, from the table of sample offsets: `read` gets the sample's
    /// word from the bytes starting at its pixel, `index` as in [`Self::sample_rows_strided`], which reads exactly
    /// the same pixels when it applies.
    #[inline(always)]
    pub(super) fn sample_rows(
        &mut self,
        px: &[u8],
        width: usize,
        height: usize,
        bpp: usize,
        read: impl Fn(&[u8]) -> Option<u32>,
        index: impl Fn(u32) -> (u32, u8),
    ) {
        let lut = &*self.lut;
        let xs = sample_offsets(width, bpp);
        for j in 0..SH {
            let row = &px[sample_y(j, height) * width * bpp..][..width * bpp];
            let base = j * SW;
            let (class, luma, keep) =
                (&mut self.class[base..base + SW], &mut self.luma[base..base + SW], &self.keep[base..base + SW]);
            for (i, &x) in xs.iter().enumerate() {
                if let Some(w) = row.get(x..).and_then(&read) {
                    let (k, y) = index(w);
                    class[i] = lut[k as usize & (LUT_LEN - 1)] & keep[i];
                    luma[i] = y & keep[i];
                }
            }
        }
    }
}

pub(super) fn valid_size(len: usize, width: usize, height: usize, bpp: usize) -> bool {
    width >= SW && height >= SH && width.checked_mul(height).and_then(|p| p.checked_mul(bpp)).is_some_and(|n| len >= n)
}

/// An RGB24 sample as a word R | G << 8 | B << 16 (the top byte is ignored).
#[inline(always)]
pub(super) fn read_rgb(p: &[u8]) -> Option<u32> {
    p.first_chunk::<3>().map(|&[r, g, b]| u32::from_le_bytes([r, g, b, 0]))
}

/// A YUYV sample as the word Y0 | U << 8 | Y1 << 16 | V << 24: sample xs are even, so `p` starts a Y0 U Y1 V
/// group and the sample is Y0.
#[inline(always)]
pub(super) fn read_yuyv(p: &[u8]) -> Option<u32> {
    p.first_chunk::<4>().map(|w| u32::from_le_bytes(*w))
}

/// (LUT index, luma) of an RGB sample word (see [`read_rgb`]).
#[inline(always)]
pub(super) fn rgb_sample(w: u32) -> (u32, u8) {
    let (y, u, v) = rgb_to_yuv16((w & 0xFF) as u16, ((w >> 8) & 0xFF) as u16, ((w >> 16) & 0xFF) as u16);
    // Every value is 0..=255 (exact BT.601), so the narrowing is lossless.
    (lut_index(y as u8, u as u8, v as u8) as u32, y as u8)
}

/// (LUT index, luma) of a YUYV sample word (see [`read_yuyv`]): the index is cut out of the word directly.
#[inline(always)]
pub(super) fn yuyv_sample(w: u32) -> (u32, u8) {
    (lut_index_yuyv(w) as u32, w as u8)
}

/// When the width is an even multiple of `SW`, the samples of a row are one fixed stride apart: (stride in bytes,
/// byte offset of the first sample), the same pixels as [`sample_offsets`]. None for other widths.
pub(super) fn strided_layout(width: usize, bpp: usize) -> Option<(usize, usize)> {
    let step = width / SW;
    (width.is_multiple_of(SW) && (step.is_multiple_of(2) || (bpp == 3 && step == 1)))
        .then(|| (step * bpp, sample_offsets(width, bpp)[0]))
}

/// Byte offset in a row of each sample column, for `bpp` bytes per pixel. The pixel x is even, so a YUYV sample is
/// the Y0 of its pair and RGB reads the same pixel; except on an RGB frame narrower than two samples per column
/// (a JPEG decoded at analysis scale, 160 to 319 wide), where rounding down to even would read every other
/// column twice.
#[inline]
pub(super) fn sample_offsets(width: usize, bpp: usize) -> [usize; SW] {
    let even = if bpp == 2 || width >= 2 * SW { !1 } else { !0 };
    let mut xs = [0usize; SW];
    for (i, x) in xs.iter_mut().enumerate() {
        *x = (((2 * i + 1) * width / (2 * SW)) & even) * bpp;
    }
    xs
}

/// Starts loading the cache lines of the next sample row while this one is processed. The rows are 4 frame rows
/// apart, so the hardware's stream prefetcher only catches on part-way through each row; a fresh camera frame is
/// in DRAM, not in cache, and on RGB the waits for those lines were about a third of the frame's time.
#[inline(always)]
fn prefetch_row(row: &[u8]) {
    for line in row.chunks(64) {
        prefetch(line.as_ptr());
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: a prefetch is a hint; it never faults and reads nothing architecturally, and `p` is in bounds anyway.
    unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast()) }
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: PRFM is a hint; it never faults and changes no architectural state, and `p` is in bounds anyway.
    unsafe { core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, preserves_flags, readonly)) }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
fn prefetch(_: *const u8) {}

#[inline]
pub(super) fn sample_y(j: usize, height: usize) -> usize {
    (2 * j + 1) * height / (2 * SH)
}
