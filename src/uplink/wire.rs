//! The uplink wire format: a version byte, a postcard body, COBS framing with a 0x00 terminator, all encoded
//! into and decoded from fixed buffers. Golden-byte tests pin the encoding; change `VERSION` to change it.

use serde::{Deserialize, Serialize};

pub const VERSION: u8 = 1;
/// Largest encoded message (version + body) we accept; also the size of every fixed buffer.
pub const MAX_MESSAGE: usize = 128;
/// Largest COBS frame on the wire, terminator included.
pub const MAX_FRAME: usize = MAX_MESSAGE + MAX_MESSAGE / 254 + 2;
/// Longest zone name the wire carries (validated in config).
pub const MAX_ZONE_NAME: usize = 24;

pub const UNKNOWN_DECI_C: i16 = i16::MIN;
pub const UNKNOWN_DECI_PCT: u16 = u16::MAX;

/// A zone state change reported upstream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alert<'a> {
    pub device_id: u32,
    pub seq: u32,
    /// Milliseconds since the Unix epoch, when the decision was made.
    pub ts_ms: u64,
    pub zone: &'a str,
    /// `ZoneState::level` before and after.
    pub from: u8,
    pub to: u8,
    /// `event::evidence` bits.
    pub sources: u8,
    /// Vision score in 1/1000.
    pub vision_milli: u16,
    /// Hottest thermal pixel in 1/10 °C; `UNKNOWN_DECI_C` before any thermal frame.
    pub max_deci_c: i16,
    /// Smoke in 1/10 %; `UNKNOWN_DECI_PCT` before any smoke reading.
    pub smoke_deci_pct: u16,
}

/// Appliance → collector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Up<'a> {
    #[serde(borrow)]
    Alert(Alert<'a>),
    Heartbeat {
        device_id: u32,
        ts_ms: u64,
        health: u32,
    },
}

/// Collector → appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    Ack { seq: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame is empty")]
    Empty,
    #[error("unsupported wire version {0}")]
    Version(u8),
    #[error("frame is not valid COBS")]
    Cobs,
    #[error("body does not decode: {0}")]
    Body(postcard::Error),
    #[error("message does not fit {MAX_MESSAGE} bytes")]
    TooLong,
}

/// Encodes `msg` as a COBS frame (terminator included) into `out`; returns its length.
pub fn encode<T: Serialize>(msg: &T, out: &mut [u8; MAX_FRAME]) -> Result<usize, WireError> {
    let mut raw = [0u8; MAX_MESSAGE];
    raw[0] = VERSION;
    let body_len = postcard::to_slice(msg, &mut raw[1..]).map_err(|_| WireError::TooLong)?.len();
    let n = cobs_encode(&raw[..1 + body_len], out).ok_or(WireError::TooLong)?;
    out[n] = 0;
    Ok(n + 1)
}

/// Decodes one COBS frame (with or without its terminator) into `scratch` and deserialises it from there.
pub fn decode<'s, T: Deserialize<'s>>(frame: &[u8], scratch: &'s mut [u8; MAX_MESSAGE]) -> Result<T, WireError> {
    let frame = frame.strip_suffix(&[0]).unwrap_or(frame);
    if frame.is_empty() {
        return Err(WireError::Empty);
    }
    let n = cobs_decode(frame, scratch).ok_or(WireError::Cobs)?;
    let raw: &'s [u8] = &scratch[..n];
    match raw.first() {
        None => Err(WireError::Empty),
        Some(&VERSION) => postcard::from_bytes(&raw[1..]).map_err(WireError::Body),
        Some(&v) => Err(WireError::Version(v)),
    }
}

// COBS is a dozen lines; writing it here keeps both directions in fixed buffers with one obvious contract.
fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_at = 0;
    let mut w = 1;
    let mut code: u8 = 1;
    for &b in src {
        if b == 0 {
            *dst.get_mut(code_at)? = code;
            code_at = w;
            w += 1;
            code = 1;
        } else {
            *dst.get_mut(w)? = b;
            w += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_at)? = code;
                code_at = w;
                w += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_at)? = code;
    // dst[w] must stay free for the terminator.
    if w >= dst.len() {
        return None;
    }
    Some(w)
}

fn cobs_decode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut r = 0;
    let mut w = 0;
    while r < src.len() {
        let code = src[r] as usize;
        if code == 0 {
            return None;
        }
        r += 1;
        for _ in 1..code {
            let b = *src.get(r)?;
            if b == 0 {
                return None;
            }
            *dst.get_mut(w)? = b;
            w += 1;
            r += 1;
        }
        if code != 0xFF && r < src.len() {
            *dst.get_mut(w)? = 0;
            w += 1;
        }
    }
    Some(w)
}

/// Splits a byte stream into COBS frames at 0x00, in a fixed buffer; oversize frames are skipped and reported.
pub struct FrameSplitter {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
}

pub enum Split<'a> {
    Frame(&'a [u8]),
    Oversize,
}

impl Default for FrameSplitter {
    fn default() -> Self {
        FrameSplitter { buf: [0; MAX_FRAME], len: 0, overflowed: false }
    }
}

impl FrameSplitter {
    /// Feeds bytes; calls `on` for each complete frame. Returns nothing: every byte is consumed.
    pub fn feed(&mut self, mut input: &[u8], mut on: impl FnMut(Split<'_>)) {
        while let Some(&b) = input.first() {
            input = &input[1..];
            if b == 0 {
                if self.overflowed {
                    on(Split::Oversize);
                } else if self.len > 0 {
                    on(Split::Frame(&self.buf[..self.len]));
                }
                self.len = 0;
                self.overflowed = false;
            } else if self.len < MAX_FRAME {
                self.buf[self.len] = b;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typical() -> Alert<'static> {
        Alert {
            device_id: 42,
            seq: 1234,
            ts_ms: 1_795_000_000_000,
            zone: "boiler-room",
            from: 2,
            to: 3,
            sources: 3,
            vision_milli: 812,
            max_deci_c: 874,
            smoke_deci_pct: 310,
        }
    }

    #[test]
    fn golden_bytes_of_a_typical_alert() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(&Up::Alert(typical()), &mut out).unwrap();
        let hex: String = out[..n].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            // 02 01 | 1f: variant 0, id 42, seq d2 09, ts varint, "boiler-room", 2 -> 3, sources 3, 812, zigzag 874, 310 | 00
            "02011f2ad20980bcd9f29e340b626f696c65722d726f6f6d020303ac06d40db60200"
        );
        assert!(n <= 64, "typical alert is {n} bytes");
    }

    #[test]
    fn round_trip_and_rejections() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(&Up::Alert(typical()), &mut out).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        let back: Up<'_> = decode(&out[..n], &mut scratch).unwrap();
        assert_eq!(back, Up::Alert(typical()));

        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode::<Up<'_>>(&[0], &mut scratch), Err(WireError::Empty));
        // Wrong version byte: COBS of [0x09, 0x01].
        assert_eq!(decode::<Up<'_>>(&[3, 9, 1, 0], &mut scratch), Err(WireError::Version(9)));
        // Truncated body.
        let truncated = &out[..n / 2];
        assert!(decode::<Up<'_>>(truncated, &mut scratch).is_err());
    }

    #[test]
    fn cobs_handles_long_runs_without_zero() {
        let src: Vec<u8> = (1..=255u16).map(|v| (v % 255 + 1) as u8).chain(0..3).collect();
        let mut enc = [0u8; 300];
        let n = cobs_encode(&src, &mut enc).unwrap();
        assert!(!enc[..n].contains(&0));
        let mut dec = [0u8; 300];
        let m = cobs_decode(&enc[..n], &mut dec).unwrap();
        assert_eq!(&dec[..m], &src[..]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        let mut scratch = [0u8; MAX_MESSAGE];
        for _ in 0..20_000 {
            let mut buf = [0u8; 40];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let len = (x as usize) % 40;
            let _ = decode::<Up<'_>>(&buf[..len], &mut scratch);
            let _ = decode::<Down>(&buf[..len], &mut scratch);
        }
    }
}
