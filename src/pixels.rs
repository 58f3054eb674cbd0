//! Pixel formats and pictures in one place: BT.601 limited-range RGB ↔ YUV per pixel, RGB24 → YUYV frames,
//! nearest-neighbour resizing, and decoding a JPEG file's bytes to RGB24 with the appliance's own decoder.
//! The detectors convert with these per pixel; the tools and tests build their frames with the rest, so what
//! they feed a detector is encoded exactly as the detector decodes it.

use crate::camera::jpeg::{JpegDecoder, JpegError};

/// BT.601 limited range, as V4L2 YUYV delivers it (and as we encode RGB frames).
#[inline(always)]
pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y as u8, u as u8, v as u8)
}

/// Inverse of [`rgb_to_yuv`] in integer arithmetic, clamped (what V4L2 webcams deliver as YUYV, back to RGB).
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    luma_to_rgb(y, chroma_terms(u, v))
}

/// The chroma part of [`yuv_to_rgb`] (R, G, B offsets, ×256): a YUYV pair works it out once for both pixels.
#[inline]
pub fn chroma_terms(u: u8, v: u8) -> [i32; 3] {
    let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
    [409 * e, -100 * d - 208 * e, 516 * d]
}

/// [`yuv_to_rgb`] of luma `y` with the [`chroma_terms`] of its pixel.
#[inline]
pub fn luma_to_rgb(y: u8, terms: [i32; 3]) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    terms.map(|t| ((c + t + 128) >> 8).clamp(0, 255) as u8)
}

/// RGB24 → YUYV (BT.601 limited range, chroma of the left pixel of each pair, as the grid detector samples
/// it), for `out_w` ≤ `w` columns (even).
pub fn rgb_to_yuyv(rgb: &[u8], out_w: usize, w: usize, h: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(out_w * h * 2);
    for y in 0..h {
        for x in (0..out_w).step_by(2) {
            let p = &rgb[(y * w + x) * 3..];
            let (y0, u, v) = rgb_to_yuv(p[0], p[1], p[2]);
            let (y1, _, _) = rgb_to_yuv(p[3], p[4], p[5]);
            out.extend_from_slice(&[y0, u, y1, v]);
        }
    }
}

/// YUYV (Y0 U Y1 V per pixel pair) → RGB24 into `out`, which is cleared first: nothing is allocated when its
/// capacity already holds w×h×3 bytes. A short input converts the whole pairs it has.
pub fn yuyv_to_rgb(yuyv: &[u8], w: usize, h: usize, out: &mut Vec<u8>) {
    out.clear();
    let len = (w * h * 2).min(yuyv.len());
    for p in yuyv[..len].chunks_exact(4) {
        out.extend_from_slice(&yuv_to_rgb(p[0], p[1], p[3]));
        out.extend_from_slice(&yuv_to_rgb(p[2], p[1], p[3]));
    }
}

/// [`rgb_to_yuyv`] in place: the w×h RGB24 picture at the start of `buf` becomes (w & !1)×h YUYV (an odd last
/// column is dropped); returns that width. Each pair is read before its bytes are written, and the output
/// never overtakes the input (2 bytes per pixel against 3), so no scratch buffer is needed.
pub fn rgb_to_yuyv_in_place(buf: &mut [u8], w: usize, h: usize) -> usize {
    let ow = w & !1;
    if buf.len() < w * h * 3 {
        return 0;
    }
    let mut o = 0;
    for y in 0..h {
        for x in (0..ow).step_by(2) {
            let i = (y * w + x) * 3;
            let (y0, u, v) = rgb_to_yuv(buf[i], buf[i + 1], buf[i + 2]);
            let (y1, _, _) = rgb_to_yuv(buf[i + 3], buf[i + 4], buf[i + 5]);
            buf[o..o + 4].copy_from_slice(&[y0, u, y1, v]);
            o += 4;
        }
    }
    ow
}

/// Nearest-neighbour resize of an RGB24 image.
pub fn resize_rgb(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    let mut out = vec![0u8; dw * dh * 3];
    for y in 0..dh {
        let sy = y * sh / dh;
        for x in 0..dw {
            let sx = x * sw / dw;
            out[(y * dw + x) * 3..][..3].copy_from_slice(&src[(sy * sw + sx) * 3..][..3]);
        }
    }
    out
}

/// Decodes a JPEG into `rgb` at its full size with the decoder the cameras use, returning that size.
pub fn load_rgb(dec: &mut JpegDecoder, jpeg: &[u8], rgb: &mut Vec<u8>) -> Result<(usize, usize), JpegError> {
    let (w, h) = dec.dimensions(jpeg)?;
    rgb.resize(w * h * 3, 0);
    let (w, h) = dec.decode_rgb(jpeg, rgb, w, h)?;
    rgb.truncate(w * h * 3);
    Ok((w, h))
}

/// RGB24 `src` (w×h) → `out` (ceil(w/d)×ceil(h/d)), each pixel the rounded mean of its d×d block (clipped at
/// the right and bottom edges): what a JPEG decoded at 1/d in the DCT domain approximates, for frames that are
/// decoded at full size first.
pub fn box_average(src: &[u8], w: usize, h: usize, d: usize, out: &mut [u8]) {
    let (ow, oh) = (w.div_ceil(d), h.div_ceil(d));
    for oy in 0..oh {
        let rows = oy * d..((oy + 1) * d).min(h);
        for ox in 0..ow {
            let cols = ox * d..((ox + 1) * d).min(w);
            let mut sum = [0u32; 3];
            for y in rows.clone() {
                for p in src.get((y * w + cols.start) * 3..(y * w + cols.end) * 3).unwrap_or_default().chunks_exact(3) {
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]);
                    }
                }
            }
            let n = (rows.len() * cols.len()) as u32;
            if let Some(px) = out.get_mut((oy * ow + ox) * 3..(oy * ow + ox) * 3 + 3) {
                for c in 0..3 {
                    px[c] = ((sum[c] + n / 2) / n.max(1)) as u8;
                }
            }
        }
    }
}

/// Decodes a JPEG into `rgb` as a JPEG camera does for its detector (`JpegDecoder::decode_analysis`), returning
/// the decoded size.
pub fn load_analysis(dec: &mut JpegDecoder, jpeg: &[u8], rgb: &mut Vec<u8>) -> Result<(usize, usize), JpegError> {
    let (w, h) = dec.dimensions(jpeg)?;
    rgb.resize(crate::camera::jpeg::analysis_len(w, h, 8), 0);
    let d = dec.decode_analysis(jpeg, rgb, w, h)?;
    rgb.truncate(d.width * d.height * 3);
    Ok((d.width, d.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grid detector and the model's input each had their own `yuv_to_rgb` (one returned a tuple and rounded
    /// per channel, the other an array); this is the grid's formula, kept here to show the two agree on every input.
    fn grid_formula(y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = i32::from(y) - 16;
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        let cl = |x: i32| x.clamp(0, 255) as u8;
        [
            cl((298 * c + 409 * e + 128) >> 8),
            cl((298 * c - 100 * d - 208 * e + 128) >> 8),
            cl((298 * c + 516 * d + 128) >> 8),
        ]
    }

    #[test]
    fn both_former_yuv_to_rgb_agree_on_every_input() {
        for y in 0..=255u8 {
            for u in 0..=255u8 {
                for v in 0..=255u8 {
                    assert_eq!(yuv_to_rgb(y, u, v), grid_formula(y, u, v), "y {y} u {u} v {v}");
                }
            }
        }
    }

    #[test]
    fn yuyv_pairs_share_the_left_pixels_chroma() {
        let rgb = [255, 0, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60];
        let mut out = Vec::new();
        rgb_to_yuyv(&rgb, 4, 4, 1, &mut out);
        let (y0, u0, v0) = rgb_to_yuv(255, 0, 0);
        let (y1, _, _) = rgb_to_yuv(0, 0, 255);
        assert_eq!(&out[..4], &[y0, u0, y1, v0]);
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn yuyv_back_to_rgb_keeps_the_picture_within_rounding_and_reuses_the_buffer() {
        let rgb: Vec<u8> = (0..8 * 2).flat_map(|i| [(i * 16) as u8, 200 - (i * 9) as u8, 60]).collect();
        let mut yuyv = Vec::new();
        rgb_to_yuyv(&rgb, 8, 8, 2, &mut yuyv);
        let mut back = Vec::with_capacity(8 * 2 * 3);
        let before = back.as_ptr();
        yuyv_to_rgb(&yuyv, 8, 2, &mut back);
        assert_eq!(back.len(), rgb.len());
        assert_eq!(back.as_ptr(), before, "converted within the reserved capacity");
        // Luma is per pixel; the right pixel of a pair takes its left neighbour's chroma, so allow for that.
        for (i, (a, b)) in rgb.chunks(3).zip(back.chunks(3)).enumerate() {
            let tol = if i % 2 == 0 { 4 } else { 40 };
            for c in 0..3 {
                assert!((i32::from(a[c]) - i32::from(b[c])).abs() <= tol, "pixel {i}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn in_place_yuyv_equals_the_copying_conversion() {
        for (w, h) in [(8, 3), (7, 4), (2, 1)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut copied = Vec::new();
            rgb_to_yuyv(&rgb, w & !1, w, h, &mut copied);
            let mut buf = rgb.clone();
            assert_eq!(rgb_to_yuyv_in_place(&mut buf, w, h), w & !1);
            assert_eq!(&buf[..copied.len()], &copied[..], "{w}x{h}");
        }
    }

    #[test]
    fn nearest_resize_picks_source_pixels() {
        let src: Vec<u8> = (0..4 * 2 * 3).map(|i| i as u8).collect();
        let half = resize_rgb(&src, 4, 2, 2, 1);
        assert_eq!(half, vec![0, 1, 2, 6, 7, 8]);
        assert_eq!(resize_rgb(&src, 4, 2, 4, 2), src);
    }
}
