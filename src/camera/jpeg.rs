//! Camera JPEG / MJPEG frames → RGB24 in a caller-owned buffer, via `zune-jpeg`.
//!
//! Two things here go beyond a plain `zune-jpeg` call:
//!
//! * **Missing Huffman tables.** Many UVC webcams send MJPEG frames with no DHT segment. They
//!   rely on the fixed tables of JPEG Annex K.3 (the OpenDML MJPEG convention). zune-jpeg only
//!   fills those in when an `AVI1` APP0 marker is present, and many cameras don't send one. It
//!   then fails with "No DC table for component Y". So if an SOS comes before any DHT, we splice
//!   the standard tables in front of that SOS. This happens in a scratch `Vec` that persists
//!   across frames, so it stops allocating once it has grown to the frame size.
//! * **Never panic, never half-decode.** A truncated frame must fail, not be scored. zune-jpeg's
//!   lenient mode paints missing data grey (128). Its strict mode, which we use, still zero-fills
//!   a scan that runs out inside its last MCU row. So `decode_rgb` also requires an EOI marker
//!   after the scan. Either kind of fill would quietly pull the colour heuristic's score down.
//!   The size limit and the output buffer size are checked from the header, before any pixel
//!   work. zune-jpeg is fuzzed, but it still has internal `unwrap`s. So a panic inside it is
//!   caught and reported as [`JpegError::Corrupt`]. This works only with `panic = "unwind"`.
//!
//! Apart from `scratch`, zune-jpeg allocates its own per-frame working buffers (component rows,
//! upsampling scratch). The RGB output goes straight into the caller's buffer.

use std::panic::{AssertUnwindSafe, catch_unwind};

use zune_jpeg::errors::DecodeErrors;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Why a frame could not be decoded. The frame should be skipped. None of these is fatal for
/// the decoder.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error("corrupt or unsupported JPEG: {0}")]
    Corrupt(String),
    #[error("JPEG is {width}x{height}, larger than the {max_w}x{max_h} limit")]
    TooLarge { width: usize, height: usize, max_w: usize, max_h: usize },
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
}

impl From<DecodeErrors> for JpegError {
    fn from(e: DecodeErrors) -> Self {
        JpegError::Corrupt(e.to_string())
    }
}

/// A frame decoded for analysis: its size as decoded and as sent, and the scale between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub source_width: usize,
    pub source_height: usize,
    /// 1, 2, 4 or 8: the frame was decoded at 1/`denom` of its size.
    pub denom: usize,
}

impl Decoded {
    /// Sets the frame's size fields from this decode.
    pub fn describe(&self, meta: &mut crate::frame::FrameMeta) {
        meta.width = self.width;
        meta.height = self.height;
        meta.source_width = self.source_width;
        meta.source_height = self.source_height;
        meta.from_jpeg = true;
        meta.format = crate::frame::PixelFormat::Rgb24;
    }
}

/// The detector's sample grid; a frame is decoded at the smallest scale that still covers it.
const GRID_W: usize = 160;
const GRID_H: usize = 120;

/// The largest DCT scale denominator (8, 4, 2, else 1) at which a `w`×`h` frame still gives the detector a
/// sample per pixel or more: 640×480 → 4 (160×120), 1280×720 → 4, 1920×1080 → 8 (240×135).
pub fn analysis_denom(w: usize, h: usize) -> usize {
    [8, 4, 2].into_iter().find(|&d| w.div_ceil(d) >= GRID_W && h.div_ceil(d) >= GRID_H).unwrap_or(1)
}

/// [`analysis_denom`] with at most `cap` (a model camera keeps its crops sharp at 1/2, see docs/design.md).
pub fn analysis_denom_capped(w: usize, h: usize, cap: usize) -> usize {
    analysis_denom(w, h).min(cap.max(1))
}

/// The denominator a `w`×`h` frame is decoded at for analysis into a buffer of `len` bytes: the analysis scale
/// (at most `cap`), or a coarser one for the rare odd-shaped frame whose analysis size would not fit.
fn denom_for(w: usize, h: usize, len: usize, cap: usize) -> usize {
    let d = analysis_denom_capped(w, h, cap);
    [1, 2, 4, 8].into_iter().filter(|&c| c >= d).find(|&c| w.div_ceil(c) * h.div_ceil(c) * 3 <= len).unwrap_or(d)
}

/// Bytes of an RGB24 analysis frame buffer for a camera whose frames are at most `max_w`×`max_h`: the analysis
/// size of a frame of that size, and at least twice the grid each way (a smaller frame of another shape can
/// decode at a smaller denominator; see [`JpegDecoder::decode_analysis`]), never more than the full frame.
/// Pool buffers are zeroed allocations, so the headroom costs address space, not resident memory, until used.
pub fn analysis_len(max_w: usize, max_h: usize, cap: usize) -> usize {
    let d = analysis_denom_capped(max_w, max_h, cap);
    let at_max = max_w.div_ceil(d) * max_h.div_ceil(d) * 3;
    at_max.max(4 * GRID_W * GRID_H * 3).min(max_w * max_h * 3)
}

/// Reusable JPEG → RGB24 decoder. One per camera thread.
pub struct JpegDecoder {
    /// Holds a frame plus the spliced-in DHT. Kept between calls so the steady state
    /// doesn't allocate.
    scratch: Vec<u8>,
    scaled: super::scaled::ScaledDecoder,
    /// A full-size frame, only for the streams the scaled path does not handle (progressive ones): decoded here,
    /// then averaged down. Grows on the first such frame.
    full: Vec<u8>,
    /// The largest denominator [`Self::decode_analysis`] uses (8 unless set).
    max_denom: usize,
}

impl Default for JpegDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl JpegDecoder {
    pub fn new() -> Self {
        Self { scratch: Vec::new(), scaled: Default::default(), full: Vec::new(), max_denom: 8 }
    }

    /// A decoder whose analysis frames are at most 1/`cap` scale (2 for a camera whose CNN reads crops).
    pub fn with_max_denom(cap: usize) -> Self {
        let mut d = Self::new();
        d.set_max_denom(cap);
        d
    }

    /// Sets the largest denominator [`Self::decode_analysis`] uses (as [`Self::with_max_denom`]).
    pub fn set_max_denom(&mut self, cap: usize) {
        self.max_denom = cap.clamp(1, 8);
    }

    /// Decodes a frame for the detector into `out` at [`analysis_denom`] of its size: in the DCT domain when the
    /// stream allows it (see `camera::scaled`), else at full size and averaged down. The same rules as
    /// [`Self::decode_rgb`]: EOI required, limits checked on the full size before any pixel work, no panic.
    pub fn decode_analysis(
        &mut self,
        jpeg: &[u8],
        out: &mut [u8],
        max_w: usize,
        max_h: usize,
    ) -> Result<Decoded, JpegError> {
        let layout = scan_headers(jpeg);
        if layout.is_some_and(|l| !has_eoi_after(jpeg, l.first_sos)) {
            return Err(JpegError::Corrupt("truncated: no EOI marker after the scan".into()));
        }
        let data = with_huffman_tables(&mut self.scratch, jpeg, layout);
        let (scaled, len, cap) = (&mut self.scaled, out.len(), self.max_denom);
        let mut full_size = (0, 0);
        let check = |w: usize, h: usize| {
            full_size = (w, h);
            if w > max_w || h > max_h {
                return Err(JpegError::TooLarge { width: w, height: h, max_w, max_h });
            }
            Ok(denom_for(w, h, len, cap))
        };
        let r = catch_unwind(AssertUnwindSafe(|| scaled.decode(data, out, check)))
            .map_err(|_| JpegError::Corrupt("decoder panicked".into()))??;
        match r {
            Ok((width, height, denom)) => {
                let (source_width, source_height) = full_size;
                Ok(Decoded { width, height, source_width, source_height, denom })
            }
            Err(super::scaled::ScaledError::Corrupt(m)) => Err(JpegError::Corrupt(m.into())),
            Err(super::scaled::ScaledError::Unsupported(_)) => self.decode_full_then_average(jpeg, out, max_w, max_h),
        }
    }

    /// The fallback of [`Self::decode_analysis`]: zune-jpeg at full size, then box averages of denom² pixels.
    fn decode_full_then_average(
        &mut self,
        jpeg: &[u8],
        out: &mut [u8],
        max_w: usize,
        max_h: usize,
    ) -> Result<Decoded, JpegError> {
        let (w, h) = self.dimensions(jpeg)?;
        if w > max_w || h > max_h {
            return Err(JpegError::TooLarge { width: w, height: h, max_w, max_h });
        }
        let denom = denom_for(w, h, out.len(), self.max_denom);
        let (ow, oh) = (w.div_ceil(denom), h.div_ceil(denom));
        let need = ow * oh * 3;
        if out.len() < need {
            return Err(JpegError::BufferTooSmall { need, have: out.len() });
        }
        if denom == 1 {
            self.decode_rgb(jpeg, out, max_w, max_h)?;
        } else {
            let mut full = std::mem::take(&mut self.full);
            full.resize(w * h * 3, 0);
            let r = self.decode_rgb(jpeg, &mut full, max_w, max_h);
            if r.is_ok() {
                crate::pixels::box_average(&full, w, h, denom, &mut out[..need]);
            }
            self.full = full;
            r?;
        }
        Ok(Decoded { width: ow, height: oh, source_width: w, source_height: h, denom })
    }

    /// Read dimensions from the header without decoding.
    pub fn dimensions(&mut self, jpeg: &[u8]) -> Result<(usize, usize), JpegError> {
        let data = with_huffman_tables(&mut self.scratch, jpeg, scan_headers(jpeg));
        let mut dec = zune_decoder(data);
        guard(|| dec.decode_headers())?;
        dec.dimensions().ok_or_else(|| JpegError::Corrupt("no frame header".into()))
    }

    /// Decode into out (len >= w*h*3), returns (w,h). Rejects frames larger than max_w x max_h.
    pub fn decode_rgb(
        &mut self,
        jpeg: &[u8],
        out: &mut [u8],
        max_w: usize,
        max_h: usize,
    ) -> Result<(usize, usize), JpegError> {
        let layout = scan_headers(jpeg);
        if layout.is_some_and(|l| !has_eoi_after(jpeg, l.first_sos)) {
            return Err(JpegError::Corrupt("truncated: no EOI marker after the scan".into()));
        }
        let data = with_huffman_tables(&mut self.scratch, jpeg, layout);
        let mut dec = zune_decoder(data);
        guard(|| dec.decode_headers())?;
        let (width, height) = dec.dimensions().ok_or_else(|| JpegError::Corrupt("no frame header".into()))?;
        if width > max_w || height > max_h {
            return Err(JpegError::TooLarge { width, height, max_w, max_h });
        }
        // Both are at most 65535, so this cannot overflow usize on 64-bit targets. It is checked
        // anyway for 32-bit ARM.
        let need = width
            .checked_mul(height)
            .and_then(|p| p.checked_mul(3))
            .ok_or_else(|| JpegError::Corrupt("dimensions overflow".into()))?;
        if out.len() < need {
            return Err(JpegError::BufferTooSmall { need, have: out.len() });
        }
        guard(|| dec.decode_into(&mut out[..need]))?;
        Ok((width, height))
    }
}

/// Returns `jpeg` unchanged, or a copy in `scratch` with the Annex K DHT spliced in before the first SOS when no
/// DHT comes before it.
fn with_huffman_tables<'a>(scratch: &'a mut Vec<u8>, jpeg: &'a [u8], layout: Option<Layout>) -> &'a [u8] {
    match layout {
        None | Some(Layout { dht_before_sos: true, .. }) => jpeg,
        Some(Layout { first_sos: at, .. }) => {
            scratch.clear();
            scratch.reserve(jpeg.len() + STD_DHT.len());
            scratch.extend_from_slice(&jpeg[..at]);
            scratch.extend_from_slice(&STD_DHT);
            scratch.extend_from_slice(&jpeg[at..]);
            scratch
        }
    }
}

fn zune_decoder(data: &[u8]) -> zune_jpeg::JpegDecoder<ZCursor<&[u8]>> {
    // Limits are enforced by us after the header (typed error). zune's own limits are opened to
    // the JPEG maximum, so oversized frames reach our check instead of failing as a string error.
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .set_strict_mode(true);
    zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), opts)
}

/// Runs a zune-jpeg call and turns a panic into an error, so a bad frame can't kill the service.
fn guard<T>(f: impl FnOnce() -> Result<T, DecodeErrors>) -> Result<T, JpegError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| JpegError::Corrupt("decoder panicked".into()))?
        .map_err(JpegError::from)
}

#[derive(Clone, Copy)]
struct Layout {
    /// Offset of the first SOS marker (its first 0xFF byte).
    first_sos: usize,
    dht_before_sos: bool,
}

/// Walks the header segments up to the first SOS. Returns `None` if the stream is malformed
/// before that. zune-jpeg then reports the real error.
fn scan_headers(jpeg: &[u8]) -> Option<Layout> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut dht_before_sos = false;
    let mut pos = 2;
    loop {
        if *jpeg.get(pos)? != 0xFF {
            return None;
        }
        let marker_start = pos;
        // Any number of 0xFF fill bytes may precede a marker code (T.81 B.1.1.2).
        while *jpeg.get(pos)? == 0xFF {
            pos += 1;
        }
        let code = jpeg[pos];
        pos += 1;
        match code {
            0xDA => return Some(Layout { first_sos: marker_start, dht_before_sos }),
            0xD9 => return None,
            // Standalone markers, no length field.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                dht_before_sos |= code == 0xC4;
                let len = usize::from(u16::from_be_bytes([*jpeg.get(pos)?, *jpeg.get(pos + 1)?]));
                if len < 2 {
                    return None;
                }
                pos += len;
            }
        }
    }
}

/// Whether an EOI marker follows the first SOS. Even in strict mode, zune-jpeg zero-fills a
/// scan that runs out in its last MCU row and returns Ok. A frame cut short by a few bytes (a
/// typical USB transfer loss) would then decode with a damaged bottom edge. Entropy-coded data
/// can't contain FF D9 (an 0xFF data byte is stuffed as FF 00), so EOI is a reliable end mark.
/// Searching only after the SOS skips EXIF thumbnails, which carry their own EOI. Trailing
/// padding after EOI (some UVC cameras add it) is allowed. The search starts from the end, so
/// a well-formed frame costs a couple of compares.
fn has_eoi_after(jpeg: &[u8], sos: usize) -> bool {
    jpeg.get(sos..).is_some_and(|scan| scan.windows(2).rev().any(|w| w == [0xFF, 0xD9]))
}

// JPEG Annex K.3, tables K.3-K.6. These are the tables the OpenDML MJPEG convention assumes.
// libjpeg writes them by default too. The fixture frames (PIL) carry exactly these bytes, and
// `std_dht_matches_libjpeg_tables_in_fixture` checks that, so a typo here would show up.
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
#[rustfmt::skip]
const AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// (Tc<<4 | Th, BITS, HUFFVAL) in the order libjpeg writes them.
const STD_TABLES: [(u8, &[u8; 16], &[u8]); 4] = [
    (0x00, &DC_LUMA_BITS, &DC_VALS),
    (0x10, &AC_LUMA_BITS, &AC_LUMA_VALS),
    (0x01, &DC_CHROMA_BITS, &DC_VALS),
    (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALS),
];

/// One DHT segment with all four tables: marker(2) + length(2) + 4·(1 + 16) + 12 + 162 + 12 + 162.
const STD_DHT_LEN: usize = 4 + 4 * 17 + 2 * 12 + 2 * 162;
const STD_DHT: [u8; STD_DHT_LEN] = build_std_dht();

const fn build_std_dht() -> [u8; STD_DHT_LEN] {
    let mut out = [0u8; STD_DHT_LEN];
    out[0] = 0xFF;
    out[1] = 0xC4;
    let seg_len = (STD_DHT_LEN - 2) as u16;
    out[2] = (seg_len >> 8) as u8;
    out[3] = seg_len as u8;
    let mut pos = 4;
    let mut t = 0;
    while t < STD_TABLES.len() {
        let (class_id, bits, vals) = STD_TABLES[t];
        out[pos] = class_id;
        pos += 1;
        let mut count = 0usize;
        let mut i = 0;
        while i < 16 {
            out[pos] = bits[i];
            count += bits[i] as usize;
            pos += 1;
            i += 1;
        }
        // A typo in the tables above must fail the build, not corrupt frames.
        assert!(count == vals.len(), "BITS total must equal HUFFVAL length");
        let mut j = 0;
        while j < vals.len() {
            out[pos] = vals[j];
            pos += 1;
            j += 1;
        }
        t += 1;
    }
    assert!(pos == STD_DHT_LEN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures;

    /// A real CC BY 4.0 frame of the repo (tests/fixtures/frames), written by PIL/libjpeg with the standard
    /// tables, and its size.
    const FIXTURE: &str = "frames/rf-indoorfire_image415_68a572.jpg";
    const W: usize = 416;
    const H: usize = 416;

    fn load(name: &str) -> Vec<u8> {
        fixtures::read(name)
    }

    /// Splits into segments up to (excluding) the first SOS: (offset, code, total length).
    fn header_segments(j: &[u8]) -> Vec<(usize, u8, usize)> {
        let mut segs = vec![];
        let mut pos = 2;
        loop {
            assert_eq!(j[pos], 0xFF);
            let code = j[pos + 1];
            if code == 0xDA {
                return segs;
            }
            let len = usize::from(u16::from_be_bytes([j[pos + 2], j[pos + 3]]));
            segs.push((pos, code, len + 2));
            pos += len + 2;
        }
    }

    fn strip_dht(j: &[u8]) -> Vec<u8> {
        let mut out = j.to_vec();
        for (pos, _, len) in header_segments(j).into_iter().rev().filter(|s| s.1 == 0xC4) {
            out.drain(pos..pos + len);
        }
        out
    }

    fn decode_vec(d: &mut JpegDecoder, j: &[u8]) -> Result<(usize, usize, Vec<u8>), JpegError> {
        let (w, h) = d.dimensions(j)?;
        let mut out = vec![0u8; w * h * 3];
        let dims = d.decode_rgb(j, &mut out, 4096, 4096)?;
        assert_eq!(dims, (w, h));
        Ok((w, h, out))
    }

    fn analysis_vec(d: &mut JpegDecoder, j: &[u8]) -> Result<(Decoded, Vec<u8>), JpegError> {
        let mut out = vec![0u8; 640 * 480 * 3];
        let r = d.decode_analysis(j, &mut out, 4096, 4096)?;
        out.truncate(r.width * r.height * 3);
        Ok((r, out))
    }

    type Enc<'a> = jpeg_encoder::Encoder<&'a mut Vec<u8>>;
    type EncLayout = Box<dyn FnOnce(&mut Enc)>;

    /// The fixture re-encoded with `jpeg-encoder` in the layouts cameras send.
    fn encoded(set: impl FnOnce(&mut Enc)) -> (Vec<u8>, Vec<u8>) {
        let mut rgb = Vec::new();
        let (w, h) = crate::pixels::load_rgb(&mut JpegDecoder::new(), &load(FIXTURE), &mut rgb).unwrap();
        let mut out = Vec::new();
        let mut e = jpeg_encoder::Encoder::new(&mut out, 85);
        set(&mut e);
        e.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
        (out, rgb)
    }

    /// Restart intervals, 4:2:2 / 4:4:4 / 4:1:1 chroma and grey frames take the DCT-domain path or, where it
    /// does not apply (progressive; 4:1:1 at 1/2), the full decode averaged down: either way the analysis frame
    /// is the box average of the full decode, within rounding and chroma filtering.
    #[test]
    fn analysis_scale_across_camera_layouts() {
        use jpeg_encoder::SamplingFactor as S;
        let cases: Vec<(&str, EncLayout)> = vec![
            ("4:2:0", Box::new(|_| {})),
            (
                "4:2:2 + DRI 7",
                Box::new(|e| {
                    e.set_sampling_factor(S::F_2_1);
                    e.set_restart_interval(7);
                }),
            ),
            (
                "4:4:4 + DRI 1",
                Box::new(|e| {
                    e.set_sampling_factor(S::F_1_1);
                    e.set_restart_interval(1);
                }),
            ),
            ("4:1:1 (falls back at 1/2)", Box::new(|e| e.set_sampling_factor(S::F_4_1))),
            ("progressive (falls back)", Box::new(|e| e.set_progressive(true))),
        ];
        let mut d = JpegDecoder::new();
        for (name, set) in cases {
            let (j, _) = encoded(set);
            let mut full = Vec::new();
            let (w, h) = crate::pixels::load_rgb(&mut d, &j, &mut full).unwrap();
            let (r, got) = analysis_vec(&mut d, &j).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((r.source_width, r.source_height, r.denom), (w, h, 2), "{name}");
            let mut want = vec![0u8; got.len()];
            crate::pixels::box_average(&full, w, h, 2, &mut want);
            let mean = got.iter().zip(&want).map(|(&a, &b)| f64::from(a.abs_diff(b))).sum::<f64>() / got.len() as f64;
            println!("{name}: mean difference {mean:.3}");
            assert!(mean < 0.6, "{name}: mean difference {mean}");
            // Cut short, every layout is refused, never scored half grey.
            for cut in [j.len() - 2, j.len() - 40, j.len() / 2] {
                assert!(d.decode_analysis(&j[..cut], &mut vec![0u8; 640 * 480 * 3], 4096, 4096).is_err(), "{name}");
            }
        }
        // A grey frame.
        let mut grey = Vec::new();
        let g: Vec<u8> = (0..416 * 416).map(|i| (i % 416 / 2) as u8).collect();
        jpeg_encoder::Encoder::new(&mut grey, 90).encode(&g, 416, 416, jpeg_encoder::ColorType::Luma).unwrap();
        let (r, px) = analysis_vec(&mut d, &grey).unwrap();
        assert_eq!((r.width, r.height), (208, 208));
        assert!(px.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        assert!(px[3 * 100].abs_diff(100) <= 2, "column 100 of the half-size frame is the mean of 200 and 201");
    }

    #[test]
    fn std_dht_matches_libjpeg_tables_in_fixture() {
        let j = load(FIXTURE);
        // PIL/libjpeg writes the Annex K tables as four DHT segments. Their payloads must be
        // exactly our combined segment's payload.
        let mut payload = vec![];
        for (pos, _, len) in header_segments(&j).into_iter().filter(|s| s.1 == 0xC4) {
            payload.extend_from_slice(&j[pos + 4..pos + len]);
        }
        assert_eq!(payload, STD_DHT[4..]);
    }

    #[test]
    fn decodes_real_frame() {
        let j = load(FIXTURE);
        let mut d = JpegDecoder::new();
        assert_eq!(d.dimensions(&j).unwrap(), (W, H));
        let mut out = vec![0u8; 640 * 480 * 3]; // a bigger fixed buffer is fine
        assert_eq!(d.decode_rgb(&j, &mut out, 640, 480).unwrap(), (W, H));
        let px = &out[..W * H * 3];
        let mut sum = [0u64; 3];
        for p in px.chunks_exact(3) {
            for c in 0..3 {
                sum[c] += u64::from(p[c]);
            }
        }
        let mean = sum.map(|s| s as f64 / (W * H) as f64);
        println!("mean RGB {mean:?}");
        // A natural photo: not black, not blown out, not a flat constant fill.
        for m in mean {
            assert!((15.0..240.0).contains(&m), "implausible mean {mean:?}");
        }
        let distinct = px.chunks_exact(3).map(|p| p[0]).collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 50);
    }

    #[test]
    fn missing_dht_is_repaired_byte_identically() {
        let j = load(FIXTURE);
        let stripped = strip_dht(&j);
        assert_eq!(j.len() - stripped.len(), 4 * 4 + STD_DHT_LEN - 4);
        assert!(!scan_headers(&stripped).unwrap().dht_before_sos);
        assert!(scan_headers(&j).unwrap().dht_before_sos);

        let mut d = JpegDecoder::new();
        let (w0, h0, a) = decode_vec(&mut d, &j).unwrap();
        let (w1, h1, b) = decode_vec(&mut d, &stripped).unwrap();
        assert_eq!((w0, h0), (w1, h1));
        assert!(a == b, "pixels differ after DHT repair");
    }

    /// Every fixture frame of the repo, with and without its DHT, decodes identically (the acceptance tests
    /// do the same on the whole development split).
    #[test]
    fn all_fixtures_decode_and_repair() {
        let dir = fixtures::repo(fixtures::FRAMES);
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} not readable: {e}", dir.display()));
        let mut d = JpegDecoder::new();
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "jpg") {
                continue;
            }
            let j = std::fs::read(&p).unwrap();
            let (_, _, a) = decode_vec(&mut d, &j).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let (_, _, b) = decode_vec(&mut d, &strip_dht(&j)).unwrap();
            assert!(a == b, "{p:?}");
            let (sa, sb) = (analysis_vec(&mut d, &j).unwrap(), analysis_vec(&mut d, &strip_dht(&j)).unwrap());
            assert!(sa == sb, "{p:?} at analysis scale");
            n += 1;
        }
        assert!(n >= 8, "the repo holds eight fixture frames, found {n}");
        println!("{n} fixture frames decoded with and without DHT");
    }

    #[test]
    fn padding_after_eoi_is_accepted() {
        let j = load(FIXTURE);
        let mut padded = j.clone();
        padded.extend_from_slice(&[0u8; 300]);
        let mut d = JpegDecoder::new();
        let (_, _, a) = decode_vec(&mut d, &j).unwrap();
        let (_, _, b) = decode_vec(&mut d, &padded).unwrap();
        assert!(a == b);
    }

    #[test]
    fn limits_and_buffer_checked_before_decoding() {
        let j = load(FIXTURE);
        let mut d = JpegDecoder::new();
        let mut out = vec![0u8; W * H * 3];
        assert!(matches!(
            d.decode_rgb(&j, &mut out, 320, 240),
            Err(JpegError::TooLarge { width: W, height: H, max_w: 320, max_h: 240 })
        ));
        assert!(matches!(
            d.decode_rgb(&j, &mut out[..100], 640, 480),
            Err(JpegError::BufferTooSmall { need, have: 100 }) if need == W * H * 3
        ));
    }

    fn assert_clean_err(r: Result<(usize, usize), JpegError>, what: &str) {
        if let Err(JpegError::Corrupt(m)) = &r {
            assert!(!m.contains("panicked"), "{what}: zune-jpeg panicked");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = JpegDecoder::new();
        let mut out = vec![0u8; 640 * 480 * 3];
        for input in [&[][..], &[0xFF], &[0xFF, 0xD8], &[0xFF, 0xD8, 0xFF, 0xDA], &[0; 64]] {
            assert!(d.dimensions(input).is_err());
            assert!(d.decode_rgb(input, &mut out, 640, 480).is_err());
        }
        let mut x = crate::prng::XorShift64::new(0x2545_F491_4F6C_DD1D);
        let mut rnd = move || x.next();
        for _ in 0..2000 {
            let len = (rnd() % 4096) as usize;
            let buf: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let r = d.decode_rgb(&buf, &mut out, 640, 480);
            assert!(r.is_err());
            assert_clean_err(r, "random bytes");
            let r = d.decode_analysis(&buf, &mut out, 640, 480).map(|r| (r.width, r.height));
            assert!(r.is_err());
            assert_clean_err(r, "random bytes, analysis");
            // Random bytes behind a valid SOI reach the marker parser.
            let mut soi = vec![0xFF, 0xD8];
            soi.extend_from_slice(&buf);
            assert_clean_err(d.decode_rgb(&soi, &mut out, 640, 480), "SOI + random");
            assert_clean_err(d.decode_analysis(&soi, &mut out, 640, 480).map(|r| (r.width, r.height)), "SOI + random");
        }
    }

    #[test]
    fn truncated_and_mutated_frames_never_panic() {
        let j = load(FIXTURE);
        let mut d = JpegDecoder::new();
        let mut out = vec![0u8; 640 * 480 * 3];
        // Truncation anywhere must be an error, never a silently grey- or zero-filled frame.
        // The last 16 cuts are the ones zune-jpeg alone would accept.
        for cut in (0..j.len() - 16).step_by(97).chain(j.len() - 16..j.len()) {
            let r = d.decode_rgb(&j[..cut], &mut out, 640, 480);
            assert!(r.is_err(), "truncated at {cut}/{} decoded Ok", j.len());
            assert_clean_err(r, "truncated");
            let r = d.decode_analysis(&j[..cut], &mut out, 640, 480).map(|r| (r.width, r.height));
            assert!(r.is_err(), "truncated at {cut}/{} decoded Ok at analysis scale", j.len());
            assert_clean_err(r, "truncated, analysis");
        }
        // Same for the DHT-less form, which goes through the splice path.
        let stripped = strip_dht(&j);
        for cut in (0..stripped.len() - 16).step_by(101).chain(stripped.len() - 16..stripped.len()) {
            let r = d.decode_rgb(&stripped[..cut], &mut out, 640, 480);
            assert!(r.is_err());
            assert_clean_err(r, "truncated no-DHT");
            let r = d.decode_analysis(&stripped[..cut], &mut out, 640, 480).map(|r| (r.width, r.height));
            assert!(r.is_err());
            assert_clean_err(r, "truncated no-DHT, analysis");
        }
        // Random byte flips, inserts and deletes: any result is fine except a panic.
        let mut x = crate::prng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
        let mut rnd = move || x.next();
        let (mut ok, mut err) = (0, 0);
        // zune-jpeg is ~50x slower unoptimised, so a debug `cargo test` runs a smaller sample.
        let rounds = if cfg!(debug_assertions) { 100 } else { 3000 };
        for i in 0..rounds {
            let mut m = if i % 2 == 0 { j.clone() } else { stripped.clone() };
            for _ in 0..1 + rnd() % 8 {
                let at = (rnd() as usize) % m.len();
                match rnd() % 4 {
                    0 => m[at] ^= 1 << (rnd() % 8),
                    1 => m[at] = rnd() as u8,
                    2 => m.insert(at, rnd() as u8),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            let r = d.decode_rgb(&m, &mut out, 640, 480);
            if r.is_ok() {
                ok += 1;
            } else {
                err += 1;
            }
            assert_clean_err(r, "mutated");
            assert_clean_err(
                d.decode_analysis(&m, &mut out, 640, 480).map(|r| (r.width, r.height)),
                "mutated, analysis",
            );
            let _ = d.dimensions(&m);
        }
        println!("mutations: {ok} decoded, {err} rejected, 0 panics");
    }

    #[test]
    fn timing_decode() {
        let j = load(FIXTURE);
        let stripped = strip_dht(&j);
        let mut d = JpegDecoder::new();
        let mut out = vec![0u8; 640 * 480 * 3];
        for (name, data) in [("with DHT", &j), ("no DHT", &stripped)] {
            let iters = if cfg!(debug_assertions) { 2 } else { 200 };
            let t = std::time::Instant::now();
            for _ in 0..iters {
                d.decode_rgb(std::hint::black_box(data), &mut out, 640, 480).unwrap();
            }
            println!("decode_rgb {W}x{H} {name}: {} us/frame", t.elapsed().as_micros() / iters);
            let t = std::time::Instant::now();
            for _ in 0..iters {
                d.decode_analysis(std::hint::black_box(data), &mut out, 640, 480).unwrap();
            }
            println!("decode_analysis {W}x{H} {name}: {} us/frame", t.elapsed().as_micros() / iters);
        }
    }
}
