//! Sans-IO framer for MJPEG byte streams: `multipart/x-mixed-replace` HTTP bodies from IP cameras and plain
//! concatenated JPEG files (`ffmpeg -f mjpeg`). Bytes are pushed in; complete JPEGs come out of one buffer of
//! fixed capacity, allocated once.
//!
//! Cameras lie about their framing: a boundary that differs from the one in the header, no Content-Length,
//! a wrong Content-Length, parts with no headers, text or garbage between parts. So the JPEG's own structure
//! decides where a part ends: from SOI (FF D8) the marker segments are walked by their lengths (so an EXIF
//! thumbnail's own SOI/EOI is skipped) and the entropy-coded data is scanned up to EOI (FF D9). Boundary and
//! header lines only reset the per-part state, and a declared Content-Length only marks which bytes are
//! not garbage (and lets a declared non-image part be skipped whole). A new SOI where a part cannot contain one
//! ends that part as truncated, which is how the framer resynchronises after a cut.
//!
//! A part larger than the buffer is framed to its end without being stored and counted as oversized.
//!
//! Known limit: a part cut inside one of its header segments (the first few hundred bytes) makes the framer
//! skip that segment's declared length, which can swallow the start of the next part too; framing resumes
//! at the part after.

/// RFC 2046 limits a boundary to 70 characters.
pub const MAX_BOUNDARY: usize = 70;
/// Longer lines between parts are garbage (and only their first `MAX_LINE` bytes are looked at).
const MAX_LINE: usize = 256;

/// What the framer has seen since it was created. Plain numbers: the IO task turns them into metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Complete JPEGs handed out.
    pub parts: u64,
    /// Bytes outside any JPEG that were neither boundary, header or blank lines nor inside a declared
    /// Content-Length; bytes of abandoned false starts are included.
    pub garbage_bytes: u64,
    /// JPEGs larger than the buffer, skipped.
    pub oversized: u64,
    /// JPEGs that started (SOI) but ended without EOI: a new SOI came first or the stream ended.
    pub truncated: u64,
    /// An SOI followed by bytes that are not a JPEG marker structure (counted in `garbage_bytes` too).
    pub malformed: u64,
    /// Parts whose Content-Length ran out before the JPEG's EOI (the JPEG structure was followed).
    pub length_mismatches: u64,
    /// Parts declared with a non-image Content-Type and a Content-Length, skipped whole.
    pub other_parts: u64,
    /// Boundary lines that did not match the boundary from the Content-Type header.
    pub foreign_boundaries: u64,
}

#[derive(Clone, Copy, Debug)]
enum Jpeg {
    /// Between header segments: expects 0xFF.
    Marker,
    /// After 0xFF between segments: the marker code (0xFF fill bytes allowed).
    Code,
    LenHi(u8),
    LenLo(u8, u8),
    /// Inside a marker segment's payload; `sos` means entropy-coded data follows.
    Segment {
        left: usize,
        sos: bool,
    },
    Entropy,
    /// 0xFF seen inside entropy-coded data.
    EntropyFf,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Between parts: boundary/header lines, blank lines, garbage; looking for SOI.
    Between,
    /// A declared non-image part body.
    Skip(u64),
    Jpeg(Jpeg),
}

pub struct MultipartParser {
    boundary: [u8; MAX_BOUNDARY],
    boundary_len: usize,
    buf: Box<[u8]>,
    len: usize,
    /// Current part has outgrown `buf`: framed, not stored.
    overflow: bool,
    /// Bytes of the current part so far (stored or not).
    part_bytes: u64,
    state: State,
    line: [u8; MAX_LINE],
    line_len: usize,
    /// Bytes of the current line outside a declared body (garbage if the line turns out to be garbage).
    line_undeclared: u64,
    /// The previous byte between parts was 0xFF (maybe the start of SOI); whether it was undeclared.
    pending_ff: Option<bool>,
    in_headers: bool,
    /// Content-Length of the coming part, from its headers.
    content_length: Option<u64>,
    /// The coming part declared a Content-Type that is not image/*.
    non_image: bool,
    /// The declared body just started; its first byte decides whether it is skipped as a non-image part.
    skip_candidate: bool,
    /// Bytes of the declared body (Content-Length) not yet consumed.
    declared_left: Option<u64>,
    /// The current JPEG started inside a declared body (so running past its end is a length mismatch).
    part_declared: bool,
    stats: Stats,
}

impl MultipartParser {
    /// A framer whose JPEGs may be at most `max_part` bytes; the buffer is allocated here, once.
    pub fn new(max_part: usize) -> Self {
        MultipartParser {
            boundary: [0; MAX_BOUNDARY],
            boundary_len: 0,
            buf: vec![0u8; max_part.max(4)].into_boxed_slice(),
            len: 0,
            overflow: false,
            part_bytes: 0,
            state: State::Between,
            line: [0; MAX_LINE],
            line_len: 0,
            line_undeclared: 0,
            pending_ff: None,
            in_headers: false,
            content_length: None,
            non_image: false,
            skip_candidate: false,
            declared_left: None,
            part_declared: false,
            stats: Stats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The JPEG the last `push` returned (meaningful only right after it returned one).
    pub fn last_part(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The boundary announced by the server (with or without its leading `--`); empty or too long: none.
    pub fn set_boundary(&mut self, b: &[u8]) {
        let b = b.strip_prefix(b"--").unwrap_or(b);
        if b.len() <= MAX_BOUNDARY {
            self.boundary[..b.len()].copy_from_slice(b);
            self.boundary_len = b.len();
        } else {
            self.boundary_len = 0;
        }
    }

    /// The stream ended (connection closed or dropped): a part in progress is truncated. Per-stream state
    /// is reset so the next connection starts clean; the boundary is kept until `set_boundary` changes it.
    pub fn end_of_stream(&mut self) {
        if let State::Jpeg(_) = self.state {
            self.end_part_truncated();
        }
        if self.pending_ff.take() == Some(true) {
            self.stats.garbage_bytes += 1;
        }
        if self.line_len > 0 || self.line_undeclared > 0 {
            self.classify_line();
        }
        self.state = State::Between;
        self.in_headers = false;
        self.content_length = None;
        self.non_image = false;
        self.skip_candidate = false;
        self.declared_left = None;
    }

    /// Frames `input`. Returns how many bytes were consumed and, when a JPEG was completed, the JPEG (valid
    /// until the next call). Call again with the rest of the input after a JPEG.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<&[u8]>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Between => {
                    let b = input[i];
                    if self.skip_candidate {
                        self.skip_candidate = false;
                        if b != 0xFF
                            && let Some(n) = self.declared_left
                        {
                            self.state = State::Skip(n);
                            continue;
                        }
                    }
                    i += 1;
                    let undeclared = self.take_declared(1) == 0;
                    self.between(b, undeclared);
                }
                State::Skip(left) => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    i += n;
                    self.take_declared(n);
                    let left = left - n as u64;
                    if left == 0 {
                        self.stats.other_parts += 1;
                        self.state = State::Between;
                        self.declared_left = None;
                    } else {
                        self.state = State::Skip(left);
                    }
                }
                State::Jpeg(Jpeg::Segment { left, sos }) => {
                    let n = (input.len() - i).min(left);
                    self.store(&input[i..i + n]);
                    i += n;
                    let left = left - n;
                    self.state = State::Jpeg(match (left, sos) {
                        (0, true) => Jpeg::Entropy,
                        (0, false) => Jpeg::Marker,
                        _ => Jpeg::Segment { left, sos },
                    });
                }
                State::Jpeg(Jpeg::Entropy) => {
                    let rest = &input[i..];
                    let n = match rest.iter().position(|&b| b == 0xFF) {
                        Some(p) => {
                            self.state = State::Jpeg(Jpeg::EntropyFf);
                            p + 1
                        }
                        None => rest.len(),
                    };
                    self.store(&rest[..n]);
                    i += n;
                }
                State::Jpeg(j) => {
                    let b = input[i];
                    match self.jpeg_byte(j, b) {
                        Step::Next => i += 1,
                        // Not a JPEG after all: this byte is looked at again between parts.
                        Step::Abandon => {}
                        Step::Done => {
                            i += 1;
                            return (i, Some(&self.buf[..self.len]));
                        }
                    }
                }
            }
        }
        (i, None)
    }

    /// Consumes `n` bytes of a declared body; returns how many of them were declared.
    fn take_declared(&mut self, n: usize) -> usize {
        let Some(left) = self.declared_left else { return 0 };
        let d = left.min(n as u64);
        self.declared_left = Some(left - d).filter(|&l| l > 0);
        d as usize
    }

    fn store(&mut self, bytes: &[u8]) {
        if self.part_declared && self.declared_left.is_none() {
            // The declared length ended inside the JPEG: its structure is trusted, the header was wrong.
            self.part_declared = false;
            self.stats.length_mismatches += 1;
        }
        self.take_declared(bytes.len());
        self.store_raw(bytes);
    }

    /// Stores without touching the declared length (for bytes already accounted for).
    fn store_raw(&mut self, bytes: &[u8]) {
        self.part_bytes += bytes.len() as u64;
        if self.overflow {
            return;
        }
        if self.len + bytes.len() <= self.buf.len() {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.overflow = true;
        }
    }

    fn between(&mut self, b: u8, undeclared: bool) {
        if let Some(ff_undeclared) = self.pending_ff.take() {
            if b == 0xD8 {
                self.start_part();
                return;
            }
            if ff_undeclared {
                self.line_undeclared += 1;
            }
        }
        if b == 0xFF {
            self.pending_ff = Some(undeclared);
            return;
        }
        if undeclared {
            self.line_undeclared += 1;
        }
        if b == b'\n' {
            self.classify_line();
        } else if self.line_len < MAX_LINE {
            self.line[self.line_len] = b;
            self.line_len += 1;
        } else {
            // Too long for a boundary or header line: it can only be garbage; keep counting it.
            self.line_len = MAX_LINE + 1;
        }
    }

    fn classify_line(&mut self) {
        let stored = self.line_len.min(MAX_LINE);
        let long = self.line_len > MAX_LINE;
        let undeclared = self.line_undeclared;
        self.line_len = 0;
        self.line_undeclared = 0;
        let line = trim(&self.line[..stored]);
        let garbage = if long {
            true
        } else if line.is_empty() {
            if self.in_headers {
                self.end_headers();
            }
            false
        } else if let Some(rest) = line.strip_prefix(b"--").or_else(|| self.is_boundary(line).then_some(line)) {
            let known = &self.boundary[..self.boundary_len];
            let name = rest.strip_suffix(b"--").unwrap_or(rest);
            let name = name.strip_prefix(b"--").unwrap_or(name);
            if !known.is_empty() && name != known {
                self.stats.foreign_boundaries += 1;
            }
            self.in_headers = true;
            self.content_length = None;
            self.non_image = false;
            self.declared_left = None;
            false
        } else if let Some((name, value)) = header(line) {
            self.in_headers = true;
            if name.eq_ignore_ascii_case(b"content-length") {
                self.content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"content-type") {
                self.non_image = !starts_with_ignore_case(value, b"image/");
            }
            false
        } else {
            true
        };
        if garbage {
            self.stats.garbage_bytes += undeclared;
        }
    }

    fn is_boundary(&self, line: &[u8]) -> bool {
        self.boundary_len > 0 && {
            let known = &self.boundary[..self.boundary_len];
            line == known || line.strip_suffix(b"--") == Some(known)
        }
    }

    fn end_headers(&mut self) {
        self.in_headers = false;
        self.declared_left = self.content_length.take().filter(|&n| n > 0);
        self.skip_candidate = self.non_image && self.declared_left.is_some();
        self.non_image = false;
    }

    fn start_part(&mut self) {
        // A boundary or header line written right up against the JPEG counts as a line.
        if self.line_len > 0 || self.line_undeclared > 0 {
            self.classify_line();
        }
        if self.in_headers {
            self.in_headers = false;
            if self.declared_left.is_none() {
                // Headers, then the JPEG without a blank line: the length still describes this part.
                self.declared_left = self.content_length.take().map(|n| n.saturating_sub(2)).filter(|&n| n > 0);
            }
        }
        self.content_length = None;
        self.non_image = false;
        self.skip_candidate = false;
        self.part_declared = self.declared_left.is_some();
        self.begin_jpeg();
    }

    /// A fresh part holding the SOI, whose two bytes the caller has already taken from the declared length.
    fn begin_jpeg(&mut self) {
        self.len = 0;
        self.part_bytes = 0;
        self.overflow = false;
        self.state = State::Jpeg(Jpeg::Marker);
        self.store_raw(&[0xFF, 0xD8]);
    }

    fn jpeg_byte(&mut self, j: Jpeg, b: u8) -> Step {
        let next = match (j, b) {
            (Jpeg::Marker, 0xFF) => Jpeg::Code,
            (Jpeg::Marker, _) => return self.abandon(),
            (Jpeg::Code, 0xFF) | (Jpeg::EntropyFf, 0xFF) => j,
            (Jpeg::Code | Jpeg::EntropyFf, 0xD8) => {
                // A new image begins where this one cannot: this one was cut short.
                self.end_part_truncated();
                // The next part's headers, if any, were swallowed as this part's data: its length is unknown.
                self.declared_left = None;
                self.part_declared = false;
                self.begin_jpeg();
                return Step::Next;
            }
            (Jpeg::Code | Jpeg::EntropyFf, 0xD9) => {
                self.store(&[b]);
                return self.end_part();
            }
            // 0x02..=0xBF are reserved codes no encoder writes: this is not (or no longer) a JPEG. Typically an
            // FF at the very end of a cut part followed by the next part's CR LF.
            (Jpeg::Code, 0x00) | (Jpeg::Code | Jpeg::EntropyFf, 0x02..=0xBF) => return self.abandon(),
            (Jpeg::Code, 0x01 | 0xD0..=0xD7) => Jpeg::Marker,
            (Jpeg::EntropyFf, 0x00 | 0xD0..=0xD7) => Jpeg::Entropy,
            (Jpeg::Code | Jpeg::EntropyFf, code) => Jpeg::LenHi(code),
            (Jpeg::LenHi(code), hi) => Jpeg::LenLo(code, hi),
            (Jpeg::LenLo(code, hi), lo) => {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                if len < 2 {
                    return self.abandon();
                }
                let sos = code == 0xDA;
                match (len - 2, sos) {
                    (0, true) => Jpeg::Entropy,
                    (0, false) => Jpeg::Marker,
                    (left, sos) => Jpeg::Segment { left, sos },
                }
            }
            (Jpeg::Segment { .. } | Jpeg::Entropy, _) => unreachable_state(j),
        };
        self.store(&[b]);
        self.state = State::Jpeg(next);
        Step::Next
    }

    fn end_part(&mut self) -> Step {
        self.state = State::Between;
        self.part_declared = false;
        if self.overflow {
            self.stats.oversized += 1;
            Step::Next
        } else {
            self.stats.parts += 1;
            Step::Done
        }
    }

    fn end_part_truncated(&mut self) {
        if self.overflow {
            self.stats.oversized += 1;
        } else {
            self.stats.truncated += 1;
        }
        self.state = State::Between;
        self.part_declared = false;
        self.overflow = false;
        self.len = 0;
    }

    /// The bytes after an SOI were not a JPEG: count them as garbage and look at the current byte again.
    fn abandon(&mut self) -> Step {
        self.stats.malformed += 1;
        self.stats.garbage_bytes += self.part_bytes;
        self.part_declared = false;
        self.state = State::Between;
        self.overflow = false;
        self.len = 0;
        Step::Abandon
    }
}

enum Step {
    Next,
    Abandon,
    Done,
}

/// Segment and Entropy states are handled in bulk by `push`; reaching `jpeg_byte` with them is a bug, handled
/// without a panic by staying in the same state.
fn unreachable_state(j: Jpeg) -> Jpeg {
    debug_assert!(false, "bulk state {j:?} reached the byte handler");
    j
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// `Name: value` with an RFC 7230 token as the name.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (!name.is_empty() && name.iter().all(token)).then(|| (name, trim(&line[colon + 1..])))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The `boundary` parameter of a Content-Type value (quoted or not), without a leading `--`.
pub fn boundary_param(content_type: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"boundary=";
    // Searched anywhere, not only after a `;`: some cameras separate parameters with spaces or commas.
    let at = content_type.windows(KEY.len()).position(|w| w.eq_ignore_ascii_case(KEY))?;
    let v = trim(&content_type[at + KEY.len()..]);
    let v = match v.strip_prefix(b"\"") {
        Some(q) => &q[..q.iter().position(|&b| b == b'"').unwrap_or(q.len())],
        None => &v[..v.iter().position(|&b| b == b';' || b == b',' || b.is_ascii_whitespace()).unwrap_or(v.len())],
    };
    let v = v.strip_prefix(b"--").unwrap_or(v);
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests;
