//! The uplink wire format: a version byte, a postcard body, and (from version 2) a 16-byte authentication tag
//! (HMAC-SHA256 over version and body with the device's key, truncated to 128 bits as RFC 2104 allows), all
//! COBS-framed with a 0x00 terminator and encoded into / decoded from fixed buffers. Golden-byte tests pin
//! each version; the decoder of version 1 stays (and stays tested) so old appliances keep reporting.

use serde::{Deserialize, Serialize};

/// The version this build sends.
pub const VERSION: u8 = 2;
/// Length of the authentication tag of a version-2 frame.
pub const TAG_LEN: usize = 16;
/// Largest encoded message (version + body) we accept; also the size of every fixed buffer.
pub const MAX_MESSAGE: usize = 128;
/// Largest COBS frame on the wire, terminator included.
pub const MAX_FRAME: usize = MAX_MESSAGE + MAX_MESSAGE / 254 + 2;
/// Longest zone name the wire carries: a config rule (checked at load), which this format relies on.
pub use crate::config::MAX_ZONE_NAME;

pub const UNKNOWN_DECI_C: i16 = i16::MIN;
pub const UNKNOWN_DECI_PCT: u16 = u16::MAX;

/// A zone state change reported upstream (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alert<'a> {
    pub device_id: u32,
    /// The spool's epoch: a new one after the spool is wiped, so sequence numbers restarting are not taken
    /// for old alerts.
    pub epoch: u32,
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
    /// Its rate of rise in 1/10 °C per minute; `UNKNOWN_DECI_C` until known.
    pub rise_deci_c_min: i16,
    /// Smoke in 1/10 %; `UNKNOWN_DECI_PCT` before any smoke reading.
    pub smoke_deci_pct: u16,
    /// `flags::*`.
    pub flags: u8,
}

/// What a version-2 alert carries after its body, inside the authenticated part: the event log's id of the
/// transition and the camera frame that decided it, so the control room can ask for the alarm's snapshot
/// (`GET /api/events/{id}/snapshot.jpg`). Decoders that predate it read the alert as before (postcard ignores
/// the bytes after a message and the tag covers them either way), so older collectors keep working; an alert
/// from an older appliance has none (`decode_up_ext` gives `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AlertExt {
    pub event_id: Option<u64>,
    /// The camera's index (config order) and the frame's number (`FrameMeta::seq`).
    pub frame: Option<(u16, u64)>,
}

/// The alert's flags byte: two flag bits, and `event::reason` in the upper six bits.
pub mod flags {
    /// Caused by, or during, an operator's output test.
    pub const TEST: u8 = 1;
    /// Caused by an operator (acknowledge, silence, reset, test).
    pub const OPERATOR: u8 = 2;

    /// The flags byte of a decision: its reason (0..64) and the two flags.
    pub fn pack(reason: u8, operator: bool, test: bool) -> u8 {
        (reason << 2) | if operator { OPERATOR } else { 0 } | if test { TEST } else { 0 }
    }
}

/// The heartbeat's `health` bits.
pub mod health {
    /// The alert spool cannot be opened or written: alerts are held in memory (and lost beyond its bound).
    pub const SPOOL: u32 = 1;
    /// Alerts were lost (`spool_dropped` grew) and not every alert pending since is acknowledged yet.
    pub const LOSS: u32 = 2;
    /// A source (camera or sensor device) is not delivering: stalled, failed, offline or still starting.
    pub const STALE: u32 = 4;
    /// A camera is in night mode (grey pictures): its vision gives no fire evidence.
    pub const NIGHT: u32 = 8;
    /// A zone's output delay runs: ALARM decided, relay and siren held.
    pub const DELAY: u32 = 16;
    /// The wall clock is not synchronised (no NTP yet on a board without a real-time clock): `ts_ms` values are
    /// the device's guess.
    pub const CLOCK: u32 = 32;
}

/// Appliance → collector (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Up<'a> {
    #[serde(borrow)]
    Alert(Alert<'a>),
    /// `health`: `health::*` bits; `spool_pending`: alerts not yet acknowledged (spooled or held in memory);
    /// `spool_dropped`: alerts lost since the appliance started (a full spool's drop-oldest, a full memory queue
    /// while the spool could not take alerts, a vanished spool's unreadable records).
    Heartbeat { device_id: u32, epoch: u32, ts_ms: u64, health: u32, spool_pending: u32, spool_dropped: u32 },
}

/// Collector → appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    Ack { seq: u32 },
}

/// Version 1 of a zone state change (no epoch, no rate of rise, no tag): decoded, no longer sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertV1<'a> {
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

/// Version 1 appliance → collector messages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UpV1<'a> {
    #[serde(borrow)]
    Alert(AlertV1<'a>),
    Heartbeat {
        device_id: u32,
        ts_ms: u64,
        health: u32,
    },
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
    #[error("authentication tag does not match")]
    BadTag,
    #[error("frame is too short for its authentication tag")]
    NoTag,
    #[error("version 1 frames carry no authentication and keys are required")]
    Unauthenticated,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn tag(key: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    use hmac::{KeyInit, Mac};
    let mut out = [0u8; TAG_LEN];
    // HMAC accepts keys of any length, so this cannot fail; an empty key means "no key configured".
    if let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    }
    out
}

/// Encodes a version-2 message, tagged with `key`, as a COBS frame (terminator included); returns its length.
pub fn encode<T: Serialize>(msg: &T, key: &[u8], out: &mut [u8; MAX_FRAME]) -> Result<usize, WireError> {
    encode_with(msg, None, key, out)
}

/// Encodes an alert with its `AlertExt` after the body. An alert too long for both (a long zone name and huge
/// numbers) goes without the extension rather than not at all.
pub fn encode_alert(a: &Alert<'_>, ext: &AlertExt, key: &[u8], out: &mut [u8; MAX_FRAME]) -> Result<usize, WireError> {
    let msg = Up::Alert(*a);
    if *ext == AlertExt::default() {
        return encode_with(&msg, None, key, out);
    }
    encode_with(&msg, Some(ext), key, out).or_else(|_| encode_with(&msg, None, key, out))
}

fn encode_with<T: Serialize>(
    msg: &T,
    ext: Option<&AlertExt>,
    key: &[u8],
    out: &mut [u8; MAX_FRAME],
) -> Result<usize, WireError> {
    let mut raw = [0u8; MAX_MESSAGE];
    raw[0] = VERSION;
    let mut body_len =
        postcard::to_slice(msg, &mut raw[1..MAX_MESSAGE - TAG_LEN]).map_err(|_| WireError::TooLong)?.len();
    if let Some(ext) = ext {
        let at = 1 + body_len;
        body_len += postcard::to_slice(ext, &mut raw[at..MAX_MESSAGE - TAG_LEN]).map_err(|_| WireError::TooLong)?.len();
    }
    let signed = 1 + body_len;
    let t = tag(key, &raw[..signed]);
    raw[signed..signed + TAG_LEN].copy_from_slice(&t);
    let n = cobs_encode(&raw[..signed + TAG_LEN], out).ok_or(WireError::TooLong)?;
    out[n] = 0;
    Ok(n + 1)
}

/// Encodes a version-1 message (untagged): only for tests of the version-1 decoder and old-device simulation.
pub fn encode_v1<T: Serialize>(msg: &T, out: &mut [u8; MAX_FRAME]) -> Result<usize, WireError> {
    let mut raw = [0u8; MAX_MESSAGE];
    raw[0] = 1;
    let body_len = postcard::to_slice(msg, &mut raw[1..]).map_err(|_| WireError::TooLong)?.len();
    let n = cobs_encode(&raw[..1 + body_len], out).ok_or(WireError::TooLong)?;
    out[n] = 0;
    Ok(n + 1)
}

/// Un-COBS a frame into `scratch`; returns the raw message length.
fn unframe(frame: &[u8], scratch: &mut [u8; MAX_MESSAGE]) -> Result<usize, WireError> {
    let frame = frame.strip_suffix(&[0]).unwrap_or(frame);
    if frame.is_empty() {
        return Err(WireError::Empty);
    }
    let n = cobs_decode(frame, scratch).ok_or(WireError::Cobs)?;
    if n == 0 {
        return Err(WireError::Empty);
    }
    Ok(n)
}

/// Decodes a collector → appliance frame (version 2, tagged with the device's own key).
pub fn decode_down(frame: &[u8], key: &[u8], scratch: &mut [u8; MAX_MESSAGE]) -> Result<Down, WireError> {
    let n = unframe(frame, scratch)?;
    match scratch[0] {
        VERSION => {
            let signed = n.checked_sub(TAG_LEN).filter(|s| *s > 1).ok_or(WireError::NoTag)?;
            if tag(key, &scratch[..signed]) != scratch[signed..n] {
                return Err(WireError::BadTag);
            }
            postcard::from_bytes(&scratch[1..signed]).map_err(WireError::Body)
        }
        v => Err(WireError::Version(v)),
    }
}

/// A decoded appliance → collector message of any supported version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Received<'a> {
    V2(Up<'a>),
    V1(UpV1<'a>),
}

/// Decodes an appliance → collector frame. `key_of(device_id)` returns the device's key, or None when the
/// collector holds no keys (then tags are not checked and version-1 frames are accepted).
pub fn decode_up<'s>(
    frame: &[u8],
    scratch: &'s mut [u8; MAX_MESSAGE],
    key_of: impl Fn(u32) -> Option<Vec<u8>>,
    keys_required: bool,
) -> Result<Received<'s>, WireError> {
    decode_up_ext(frame, scratch, key_of, keys_required).map(|(m, _)| m)
}

/// `decode_up`, with the alert's `AlertExt` when it carries one (bytes after the body that do not decode as one
/// are ignored, as older decoders ignore them: the tag has been checked over them all the same).
pub fn decode_up_ext<'s>(
    frame: &[u8],
    scratch: &'s mut [u8; MAX_MESSAGE],
    key_of: impl Fn(u32) -> Option<Vec<u8>>,
    keys_required: bool,
) -> Result<(Received<'s>, Option<AlertExt>), WireError> {
    let n = unframe(frame, scratch)?;
    let raw: &'s [u8] = &scratch[..n];
    match raw[0] {
        VERSION => {
            let signed = n.checked_sub(TAG_LEN).filter(|s| *s > 1).ok_or(WireError::NoTag)?;
            let (msg, rest): (Up<'s>, &[u8]) = postcard::take_from_bytes(&raw[1..signed]).map_err(WireError::Body)?;
            let ext = match msg {
                Up::Alert(_) if !rest.is_empty() => postcard::from_bytes::<AlertExt>(rest).ok(),
                _ => None,
            };
            let device = match msg {
                Up::Alert(a) => a.device_id,
                Up::Heartbeat { device_id, .. } => device_id,
            };
            match key_of(device) {
                Some(key) if tag(&key, &raw[..signed]) != raw[signed..n] => Err(WireError::BadTag),
                None if keys_required => Err(WireError::BadTag),
                _ => Ok((Received::V2(msg), ext)),
            }
        }
        1 if keys_required => Err(WireError::Unauthenticated),
        1 => postcard::from_bytes(&raw[1..]).map(|m| (Received::V1(m), None)).map_err(WireError::Body),
        v => Err(WireError::Version(v)),
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

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn typical() -> Alert<'static> {
        Alert {
            device_id: 42,
            epoch: 1_795_000_000,
            seq: 1234,
            ts_ms: 1_795_000_000_000,
            zone: "boiler-room",
            from: 2,
            to: 3,
            sources: 3,
            vision_milli: 812,
            max_deci_c: 874,
            rise_deci_c_min: 215,
            smoke_deci_pct: 310,
            flags: 0,
        }
    }

    fn typical_v1() -> AlertV1<'static> {
        AlertV1 {
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

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn no_keys(_: u32) -> Option<Vec<u8>> {
        None
    }

    fn device_key(d: u32) -> Option<Vec<u8>> {
        (d == 42).then(|| KEY.to_vec())
    }

    #[test]
    fn golden_bytes_of_a_typical_v2_alert() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(&Up::Alert(typical()), KEY, &mut out).unwrap();
        assert_eq!(
            hex(&out[..n]),
            "0202262ac08df6d706d20980bcd9f29e340b626f696c65722d726f6f6d020303ac06d40dae03b60211f9848b2331083bcfcf5b0a8ddf4c3df100",
            "version 2 encoding changed: bump VERSION and keep a decoder for the old one"
        );
        assert!(n <= 64, "a typical alert including its tag is {n} bytes");
    }

    #[test]
    fn an_alert_with_its_event_id_and_frame_still_decodes_as_before_by_older_decoders() {
        let ext = AlertExt { event_id: Some(4711), frame: Some((0, 1234)) };
        let mut out = [0u8; MAX_FRAME];
        let n = encode_alert(&typical(), &ext, KEY, &mut out).unwrap();
        assert_eq!(
            hex(&out[..n]),
            "0202262ac08df6d706d20980bcd9f29e340b626f696c65722d726f6f6d020303ac06d40dae03b6020501e7240113d209fe\
             e45b8024d3c9f3bccef3e155864a8b00",
            "the extension's encoding changed: older collectors and this one must agree"
        );
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(
            decode_up_ext(&out[..n], &mut scratch, device_key, true),
            Ok((Received::V2(Up::Alert(typical())), Some(ext)))
        );
        // The decoder before the extension: the tag over everything, then `from_bytes` of the body, which reads
        // the alert and ignores what follows.
        let mut raw = [0u8; MAX_MESSAGE];
        let m = unframe(&out[..n], &mut raw).unwrap();
        assert_eq!(tag(KEY, &raw[..m - TAG_LEN]), raw[m - TAG_LEN..m]);
        assert_eq!(postcard::from_bytes::<Up<'_>>(&raw[1..m - TAG_LEN]), Ok(Up::Alert(typical())));
        // An alert without one (an older appliance, or no event log) decodes with none, in the same bytes as ever.
        let n = encode_alert(&typical(), &AlertExt::default(), KEY, &mut out).unwrap();
        let mut plain = [0u8; MAX_FRAME];
        let p = encode(&Up::Alert(typical()), KEY, &mut plain).unwrap();
        assert_eq!(&out[..n], &plain[..p]);
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(
            decode_up_ext(&out[..n], &mut scratch, device_key, true),
            Ok((Received::V2(Up::Alert(typical())), None))
        );
        // The largest alert still has room for the largest extension.
        let zone = "z".repeat(MAX_ZONE_NAME);
        let big = Alert { epoch: u32::MAX, seq: u32::MAX, ts_ms: u64::MAX, zone: &zone, ..typical() };
        let ext = AlertExt { event_id: Some(u64::MAX), frame: Some((u16::MAX, u64::MAX)) };
        let n = encode_alert(&big, &ext, KEY, &mut out).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up_ext(&out[..n], &mut scratch, device_key, true).map(|r| r.1), Ok(Some(ext)));
    }

    #[test]
    fn golden_bytes_of_a_typical_v1_alert_still_decode() {
        // Pinned when version 1 was current.
        let golden = "02011f2ad20980bcd9f29e340b626f696c65722d726f6f6d020303ac06d40db60200";
        let mut out = [0u8; MAX_FRAME];
        let n = encode_v1(&UpV1::Alert(typical_v1()), &mut out).unwrap();
        assert_eq!(hex(&out[..n]), golden);
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&out[..n], &mut scratch, no_keys, false), Ok(Received::V1(UpV1::Alert(typical_v1()))));
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&out[..n], &mut scratch, device_key, true), Err(WireError::Unauthenticated));
    }

    #[test]
    fn round_trip_and_rejections() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(&Up::Alert(typical()), KEY, &mut out).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&out[..n], &mut scratch, device_key, true), Ok(Received::V2(Up::Alert(typical()))));

        // Wrong key.
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&out[..n], &mut scratch, |_| Some(b"other".to_vec()), true), Err(WireError::BadTag));
        // Tampered body: flip one bit of the zone and re-frame.
        let mut raw = [0u8; MAX_MESSAGE];
        let m = cobs_decode(&out[..n - 1], &mut raw).unwrap();
        raw[12] ^= 1;
        let mut tampered = [0u8; MAX_FRAME];
        let k = cobs_encode(&raw[..m], &mut tampered).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&tampered[..k], &mut scratch, device_key, true), Err(WireError::BadTag));
        // Truncated, empty, unknown version.
        let mut scratch = [0u8; MAX_MESSAGE];
        assert!(decode_up(&out[..n / 2], &mut scratch, device_key, true).is_err());
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&[0], &mut scratch, device_key, true), Err(WireError::Empty));
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_up(&[3, 9, 1, 0], &mut scratch, device_key, true), Err(WireError::Version(9)));

        // Acks are tagged too.
        let n = encode(&Down::Ack { seq: 7 }, KEY, &mut out).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_down(&out[..n], KEY, &mut scratch), Ok(Down::Ack { seq: 7 }));
        let mut scratch = [0u8; MAX_MESSAGE];
        assert_eq!(decode_down(&out[..n], b"nope", &mut scratch), Err(WireError::BadTag));
    }

    #[test]
    fn flags_keep_the_reason_in_the_upper_six_bits() {
        assert_eq!(flags::pack(2, false, false), 0b0000_1000);
        assert_eq!(flags::pack(8, true, true), 0b0010_0011);
        assert_eq!(flags::pack(5, true, false), 0b0001_0110);
        assert_eq!(flags::pack(14, false, true) >> 2, 14);
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
        let mut rng = crate::prng::XorShift64::new(0x1234_5678);
        for _ in 0..20_000 {
            let mut buf = [0u8; 60];
            rng.fill(&mut buf);
            let x = rng.next();
            let len = (x as usize) % 60;
            let mut scratch = [0u8; MAX_MESSAGE];
            let _ = decode_up(&buf[..len], &mut scratch, device_key, x.is_multiple_of(2));
            let mut scratch = [0u8; MAX_MESSAGE];
            let _ = decode_down(&buf[..len], KEY, &mut scratch);
        }
    }
}
