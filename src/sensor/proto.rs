//! Sans-IO decoder for the EmberEye sensor protocol, device → server direction
//! (`docs/embereye-protocol.md` §1.2, §1.3, §1.3.1, §3).
//!
//! Feed bytes with [`Decoder::push`] and drain [`Event`]s with [`Decoder::pull`]:
//!
//! ```
//! use ember_edge::sensor::proto::{Decoder, Event, Packet};
//! let mut dec = Decoder::new();
//! let mut rest: &[u8] = b"#serialno:SIM1!\r\n#locid: lab !";
//! while !rest.is_empty() {
//!     let n = dec.push(rest);
//!     rest = &rest[n..];
//!     while let Some(ev) = dec.pull() {
//!         if let Event::Packet(Packet::LocId(id)) = ev { assert_eq!(id, "lab"); }
//!     }
//! }
//! ```
//!
//! Design choices and why:
//! * Framing: packets end at `\n`, `\r\n` or `!`. EmberEye itself only splits on `\n`, but the
//!   real device sends `…!\r\n` and some peers send `!` alone (doc §1.5 recommends accepting all
//!   three). Because `!` is a terminator, the `\r\n` that follows it becomes an empty line, which is
//!   trimmed and silently skipped. Side effect (an intended improvement): `#a!#b!\n` is two packets,
//!   where EmberEye would parse one garbled packet.
//! * Memory: one fixed `MAX_LINE` byte buffer plus fixed word arrays, all allocated in
//!   [`Decoder::new`]. `push`/`pull` never allocate; packets borrow from the decoder.
//! * Over-long lines are reported once as [`Reject::Oversize`] and then discarded up to the next
//!   terminator, so one bad line does not kill the connection. [`Decoder::discarding_bytes`] lets
//!   the IO layer enforce its own hard cap (EmberEye's async server closes at 64 KiB).
//! * Parsing follows EmberEye's async (live) server, including its quirks (loc-id forms, the
//!   `ADC3:=1` key, the `#Sensor:` no-loc mis-parse). Lengths in reject reasons are counted like
//!   Python counts characters of a UTF-8 string decoded with `errors='ignore'`, so
//!   `FrameLength(n)` matches EmberEye's `frame length n` log line.

use core::fmt::{self, Write as _};

/// Longest accepted line (after the terminator is removed): a 3336-hex frame plus prefix fits.
pub const MAX_LINE: usize = 4096;
pub const GRID_W: usize = 32;
pub const GRID_H: usize = 24;
pub const PIXELS: usize = GRID_W * GRID_H;
/// 768 pixel RAM words + 64 aux RAM words + 2 driver words (MLX90640 `GetFrameData` layout).
pub const FRAME_WORDS: usize = 834;
/// MLX90640 calibration EEPROM, 0x2400..0x273F.
pub const EEPROM_WORDS: usize = 832;

const FRAME_HEX: usize = FRAME_WORDS * 4; // 3336
const RAW_HEX: usize = PIXELS * 4; // 3072, legacy "grid only" frames
const EEPROM_HEX: usize = EEPROM_WORDS * 4; // 3328

/// Why a line was dropped. Carries EmberEye's numbers (`frame length N`, `frame count N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Line longer than [`MAX_LINE`]; reported once, the rest of the line is discarded.
    Oversize,
    /// A text field (serial, loc id, sensor body) is not valid UTF-8, so it cannot be a `&str`.
    NotUtf8OrAscii,
    /// No known, case-sensitive prefix (`#serialno:`, `#locid:`, `#frame`, `#Sensor`, `#EEPROM`).
    UnknownPacket,
    FrameNoColon,
    /// Payload is neither 3336 nor 3072 characters long (character count of the payload).
    FrameLength(usize),
    /// Space-separated payload without exactly 768 tokens (token count).
    FrameCount(usize),
    /// 3336/3072-character payload with a non-hex character.
    FrameBadHex,
    /// Space-separated payload with a token that is not an integer 0..=65535.
    FrameBadValue,
    SensorNoColon,
    /// A `K=V` value is not an integer (or a float when it contains `.`); EmberEye drops the
    /// whole packet in that case, and so do we.
    SensorBadValue,
    EepromNoColon,
    /// EEPROM payload not exactly 3328 characters (character count).
    EepromLength(usize),
    EepromBadHex,
}

impl Reject {
    /// Stable snake_case label, suitable as a metrics label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Oversize => "oversize",
            Reject::NotUtf8OrAscii => "not_utf8",
            Reject::UnknownPacket => "unknown_packet",
            Reject::FrameNoColon => "frame_no_colon",
            Reject::FrameLength(_) => "frame_length",
            Reject::FrameCount(_) => "frame_count",
            Reject::FrameBadHex => "frame_bad_hex",
            Reject::FrameBadValue => "frame_bad_value",
            Reject::SensorNoColon => "sensor_no_colon",
            Reject::SensorBadValue => "sensor_bad_value",
            Reject::EepromNoColon => "eeprom_no_colon",
            Reject::EepromLength(_) => "eeprom_length",
            Reject::EepromBadHex => "eeprom_bad_hex",
        }
    }
}

impl fmt::Display for Reject {
    /// Human text close to EmberEye's `tcp_errors.log` reasons, for logs and differential tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::FrameLength(n) => write!(f, "frame length {n}"),
            Reject::FrameCount(n) => write!(f, "frame count {n}"),
            Reject::EepromLength(n) => write!(f, "eeprom length {n} (expected {EEPROM_HEX})"),
            Reject::UnknownPacket => f.write_str("unknown packet type"),
            other => other.reason().chars().try_for_each(|c| f.write_char(if c == '_' { ' ' } else { c })),
        }
    }
}

/// A sensor value: EmberEye parses a float if the text contains `.`, else an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SensorValue {
    Int(i64),
    Float(f64),
}

impl SensorValue {
    pub fn as_f64(self) -> f64 {
        match self {
            SensorValue::Int(i) => i as f64,
            SensorValue::Float(x) => x,
        }
    }
}

/// Zero-copy view of a validated `#Sensor` body. Fields are re-split on demand instead of being
/// stored, because storing `&str`s inside the decoder would be self-referential; bodies are tiny
/// (≈40 bytes) and bounded by `MAX_LINE`, so re-splitting is cheap and needs no field cap.
#[derive(Debug, Clone, Copy)]
pub struct SensorFields<'a> {
    body: &'a str,
    len: usize,
}

impl<'a> SensorFields<'a> {
    /// Number of `K=V` fields (parts without `=` are ignored, as in EmberEye).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Fields in wire order; keys are trimmed with trailing `:` removed (`ADC3:=1` → `ADC3`).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, SensorValue)> + 'a {
        self.body.split(',').filter_map(parse_field).filter_map(|(k, v)| v.ok().map(|v| (k, v)))
    }
    /// Value of `key`; the LAST occurrence wins, like the Python dict EmberEye builds.
    pub fn get(&self, key: &str) -> Option<SensorValue> {
        self.iter().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }
    /// Smoke sensor, 12-bit (doc §3).
    pub fn adc1(&self) -> Option<SensorValue> {
        self.get("ADC1")
    }
    /// Analog flame sensor, 12-bit.
    pub fn adc2(&self) -> Option<SensorValue> {
        self.get("ADC2")
    }
    pub fn adc3(&self) -> Option<SensorValue> {
        self.get("ADC3")
    }
    pub fn dio(&self) -> Option<SensorValue> {
        self.get("DIO")
    }
    /// Digital flame input (simulators only; the real device does not send it).
    pub fn mpy30(&self) -> Option<SensorValue> {
        self.get("MPY30")
    }
}

/// One `K=V` part, or `None` for parts without `=`. EmberEye: split at first `=`, key stripped
/// then trailing `:`s removed, value stripped, float if it contains `.` else int.
fn parse_field(part: &str) -> Option<(&str, Result<SensorValue, ()>)> {
    let (k, v) = part.split_once('=')?;
    let key = k.trim().trim_end_matches(':');
    let v = v.trim();
    let val = if v.contains('.') {
        v.parse::<f64>().map(SensorValue::Float).map_err(drop)
    } else {
        v.parse::<i64>().map(SensorValue::Int).map_err(drop)
    };
    Some((key, val))
}

/// A decoded packet, borrowing the decoder's buffers (valid until the next `push`/`pull`).
/// `loc` is `None` when the packet carries no loc id; EmberEye then uses the peer IP, which is
/// the IO layer's business.
#[derive(Debug, Clone, Copy)]
pub enum Packet<'a> {
    SerialNo(&'a str),
    LocId(&'a str),
    /// 3336-hex frame: 834 raw words (768 pixel RAM words, row-major 24×32, then 66 aux words).
    Frame {
        loc: Option<&'a str>,
        words: &'a [u16; FRAME_WORDS],
    },
    /// Legacy 3072-hex or 768 space-separated values: raw counts, NOT temperatures.
    RawCounts {
        loc: Option<&'a str>,
        counts: &'a [u16; PIXELS],
        spaced: bool,
    },
    Sensor {
        loc: Option<&'a str>,
        fields: SensorFields<'a>,
    },
    /// EEPROM1 reply; `loc` is the id between `#EEPROM` and `:` (EmberEye's `frame_id`).
    Eeprom {
        loc: Option<&'a str>,
        words: &'a [u16; EEPROM_WORDS],
    },
}

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Packet(Packet<'a>),
    Rejected(Reject),
}

/// Running totals since construction (cheap to copy out for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub packets: u64,
    pub rejected: u64,
    pub empty_lines: u64,
}

pub struct Decoder {
    buf: Box<[u8; MAX_LINE]>,
    /// Bytes of the current line held in `buf`.
    len: usize,
    /// A terminator was seen; `buf[..len]` is a complete line waiting for `pull`.
    ready: bool,
    /// Current line overflowed; bytes are dropped until the next terminator.
    discarding: bool,
    /// Length so far of the current over-long line (0 when not discarding).
    discarded: usize,
    oversize_pending: bool,
    /// Length of the line most recently handed to the parser (for `last_line`).
    last_len: usize,
    frame: Box<[u16; FRAME_WORDS]>,
    raw: Box<[u16; PIXELS]>,
    eeprom: Box<[u16; EEPROM_WORDS]>,
    stats: Stats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("len", &self.len)
            .field("ready", &self.ready)
            .field("discarded", &self.discarded)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Allocates all buffers (≈9.3 KiB) once; nothing else is allocated afterwards.
    pub fn new() -> Self {
        Decoder {
            buf: Box::new([0; MAX_LINE]),
            len: 0,
            ready: false,
            discarding: false,
            discarded: 0,
            oversize_pending: false,
            last_len: 0,
            frame: Box::new([0; FRAME_WORDS]),
            raw: Box::new([0; PIXELS]),
            eeprom: Box::new([0; EEPROM_WORDS]),
            stats: Stats::default(),
        }
    }

    /// Consumes bytes up to and including the first terminator (or all of `input` if it has
    /// none); returns how many were consumed. Returns 0 while a completed line has not been
    /// pulled yet, so always drain [`pull`](Self::pull) before pushing again.
    pub fn push(&mut self, input: &[u8]) -> usize {
        if self.ready {
            return 0;
        }
        let (body, terminated) = match input.iter().position(|&b| b == b'\n' || b == b'!') {
            Some(i) => (input.split_at(i).0, true),
            None => (input, false),
        };
        if self.discarding {
            self.discarded = self.discarded.saturating_add(body.len());
        } else if let Some(dst) = self.buf.get_mut(self.len..self.len + body.len()) {
            dst.copy_from_slice(body);
            self.len += body.len();
        } else {
            // Overflow: what is buffered is useless now; count it as discarded too so the IO
            // layer sees the true length of the offending line.
            self.discarding = true;
            self.oversize_pending = true;
            self.discarded = self.len.saturating_add(body.len());
            self.len = 0;
        }
        if terminated {
            if self.discarding {
                self.discarding = false;
                self.discarded = 0;
            } else {
                self.ready = true;
            }
        }
        let consumed = body.len() + usize::from(terminated);
        self.stats.bytes += consumed as u64;
        consumed
    }

    /// At EOF: treat a pending unterminated line as complete (EmberEye's async server parses a
    /// final line without `\n`). A partially discarded over-long line stays dropped.
    pub fn finish(&mut self) {
        if !self.discarding && self.len > 0 {
            self.ready = true;
        }
        self.discarding = false;
        self.discarded = 0;
    }

    /// Bytes of the current over-long line seen so far (0 if the current line fits).
    /// An IO layer should close the connection once this exceeds its limit (e.g. 64 KiB).
    pub fn discarding_bytes(&self) -> usize {
        self.discarded
    }

    /// Bytes of an unfinished line held or discarded so far (0 between lines). An IO layer uses it to
    /// notice a line that is being trickled in (slow-loris).
    pub fn pending_bytes(&self) -> usize {
        if self.ready { 0 } else { self.len + self.discarded }
    }

    /// Raw bytes of the line most recently parsed by `pull` (e.g. to log a rejected line).
    /// Empty for `Oversize`, whose bytes were not kept.
    pub fn last_line(&self) -> &[u8] {
        self.buf.get(..self.last_len).unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Next event, or `None` when more input is needed. Empty lines are skipped silently.
    pub fn pull(&mut self) -> Option<Event<'_>> {
        if self.oversize_pending {
            self.oversize_pending = false;
            self.last_len = 0;
            self.stats.rejected += 1;
            return Some(Event::Rejected(Reject::Oversize));
        }
        if !self.ready {
            return None;
        }
        // Mark the line consumed now; its bytes stay in `buf` until the next push, which is
        // exactly as long as the returned borrow can live.
        self.ready = false;
        self.last_len = self.len;
        let n = core::mem::take(&mut self.len);
        let line = self.buf.get(..n).unwrap_or_default().trim_ascii();
        if line.is_empty() {
            self.stats.empty_lines += 1;
            return None;
        }
        match parse_line(line, &mut self.frame, &mut self.raw, &mut self.eeprom) {
            Ok(p) => {
                self.stats.packets += 1;
                Some(Event::Packet(p))
            }
            Err(r) => {
                self.stats.rejected += 1;
                Some(Event::Rejected(r))
            }
        }
    }
}

fn parse_line<'a>(
    line: &'a [u8],
    frame: &'a mut [u16; FRAME_WORDS],
    raw: &'a mut [u16; PIXELS],
    eeprom: &'a mut [u16; EEPROM_WORDS],
) -> Result<Packet<'a>, Reject> {
    // Prefix checks are case-sensitive `startswith`, like EmberEye; the value is the text after
    // the first `:`, which for these two prefixes is the prefix's own colon.
    if let Some(rest) = line.strip_prefix(b"#serialno:") {
        return text(rest).map(Packet::SerialNo);
    }
    if let Some(rest) = line.strip_prefix(b"#locid:") {
        return text(rest).map(Packet::LocId);
    }
    if let Some(rest) = line.strip_prefix(b"#frame") {
        return parse_frame(rest, frame, raw);
    }
    if let Some(rest) = line.strip_prefix(b"#Sensor") {
        let (loc, body) = split_loc(rest).ok_or(Reject::SensorNoColon)?;
        let loc = loc_str(loc)?;
        let body = core::str::from_utf8(body).map_err(|_| Reject::NotUtf8OrAscii)?;
        let mut len = 0;
        for (_, v) in body.split(',').filter_map(parse_field) {
            v.map_err(|()| Reject::SensorBadValue)?;
            len += 1;
        }
        return Ok(Packet::Sensor { loc, fields: SensorFields { body, len } });
    }
    if let Some(rest) = line.strip_prefix(b"#EEPROM") {
        // EmberEye: id = before the first `:`, data = after it (stripped), exactly 3328 chars.
        let colon = rest.iter().position(|&b| b == b':').ok_or(Reject::EepromNoColon)?;
        let (id, data) = rest.split_at(colon);
        let loc = loc_str(Some(id))?;
        let data = data.get(1..).unwrap_or_default().trim_ascii();
        let n = py_len(data);
        if n != EEPROM_HEX {
            return Err(Reject::EepromLength(n));
        }
        decode_hex(data, &mut eeprom[..]).ok_or(Reject::EepromBadHex)?;
        return Ok(Packet::Eeprom { loc, words: eeprom });
    }
    Err(Reject::UnknownPacket)
}

/// `#frame` payload acceptance of the async (live) server, doc §1.3.1.
fn parse_frame<'a>(
    rest: &'a [u8],
    frame: &'a mut [u16; FRAME_WORDS],
    raw: &'a mut [u16; PIXELS],
) -> Result<Packet<'a>, Reject> {
    let (loc, data) = split_loc(rest).ok_or(Reject::FrameNoColon)?;
    let loc = loc_str(loc)?;
    let data = data.trim_ascii();
    let tokens = || data.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty());
    if data.contains(&b' ') {
        let n = tokens().count();
        if n != PIXELS {
            return Err(Reject::FrameCount(n));
        }
        for (slot, tok) in raw.iter_mut().zip(tokens()) {
            *slot = spaced_word(tok).ok_or(Reject::FrameBadValue)?;
        }
        return Ok(Packet::RawCounts { loc, counts: raw, spaced: true });
    }
    match py_len(data) {
        FRAME_HEX => {
            decode_hex(data, &mut frame[..]).ok_or(Reject::FrameBadHex)?;
            Ok(Packet::Frame { loc, words: frame })
        }
        RAW_HEX => {
            decode_hex(data, &mut raw[..]).ok_or(Reject::FrameBadHex)?;
            Ok(Packet::RawCounts { loc, counts: raw, spaced: false })
        }
        n => Err(Reject::FrameLength(n)),
    }
}

/// One token of a space-separated frame. EmberEye reads each with `int(tok, 16)` (doc §1.3.1), so `0100` is 256:
/// hex digits in either case, an optional `0x`, and `_` between digits as Python allows. A value that does not fit
/// the sensor's 16-bit word, a sign or anything else is a bad value (Python would keep a negative or huge number,
/// which no MLX90640 word can be).
fn spaced_word(tok: &[u8]) -> Option<u16> {
    let digits = tok.strip_prefix(b"0x").or_else(|| tok.strip_prefix(b"0X")).unwrap_or(tok);
    if digits.is_empty() || digits.first() == Some(&b'_') || digits.last() == Some(&b'_') {
        return None;
    }
    let mut value: u32 = 0;
    let mut last_underscore = false;
    for &c in digits {
        if c == b'_' {
            if last_underscore {
                return None;
            }
            last_underscore = true;
            continue;
        }
        last_underscore = false;
        value = (value << 4) | (c as char).to_digit(16)?;
        if value > u16::MAX as u32 {
            return None;
        }
    }
    Some(value as u16)
}

/// EmberEye's three loc-id forms, applied to the text after `#frame`/`#Sensor`:
/// (a) `1234:DATA` → loc `1234`; (b) `:roomB:DATA` → loc `roomB` (stripped);
/// (c) `:DATA` without a second colon → no loc. `None` if there is no colon at all.
/// Form (b) is why `#Sensor:ADC1=1,ADC3:=1` mis-parses in EmberEye; we keep that quirk.
fn split_loc(rest: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let colon = rest.iter().position(|&b| b == b':')?;
    let (id, data) = rest.split_at(colon);
    let data = data.get(1..).unwrap_or_default();
    if !id.is_empty() {
        return Some((Some(id), data));
    }
    match data.iter().position(|&b| b == b':') {
        Some(c) => {
            let (id, data) = data.split_at(c);
            Some((Some(id.trim_ascii()), data.get(1..).unwrap_or_default()))
        }
        None => Some((None, data)),
    }
}

/// Empty loc ids mean "none" (EmberEye falls back to the peer IP).
fn loc_str(loc: Option<&[u8]>) -> Result<Option<&str>, Reject> {
    match loc {
        Some(b) if !b.is_empty() => core::str::from_utf8(b).map(Some).map_err(|_| Reject::NotUtf8OrAscii),
        _ => Ok(None),
    }
}

fn text(b: &[u8]) -> Result<&str, Reject> {
    core::str::from_utf8(b).map(str::trim).map_err(|_| Reject::NotUtf8OrAscii)
}

/// Length as Python's `len()` sees it after `bytes.decode('utf-8', errors='ignore')`: valid
/// UTF-8 counts per character, invalid bytes vanish. Keeps `FrameLength(n)` equal to EmberEye's.
fn py_len(b: &[u8]) -> usize {
    if b.is_ascii() {
        return b.len();
    }
    b.utf8_chunks().map(|c| c.valid().chars().count()).sum()
}

/// Big-endian 4-hex-digit words, either case. `None` on a length mismatch or non-hex byte
/// (stricter than Python's `int(x, 16)`, which would also take `+`, `_` or `0x` inside a word).
fn decode_hex(data: &[u8], out: &mut [u16]) -> Option<()> {
    if data.len() != out.len() * 4 {
        return None;
    }
    for (w, quad) in out.iter_mut().zip(data.chunks_exact(4)) {
        let mut v = 0u16;
        for &c in quad {
            let d = (c as char).to_digit(16)?;
            v = (v << 4) | d as u16;
        }
        *w = v;
    }
    Some(())
}

#[cfg(test)]
mod tests;
