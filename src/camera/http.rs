//! The small, pure pieces of the MJPEG HTTP client: the request (with Basic credentials; the URL itself is
//! configuration syntax, parsed in `config`), the response head, chunked transfer decoding and the decode
//! pacer. No IO here.

use std::time::Duration;
use tokio::time::Instant;

pub use crate::config::HttpUrl;

// The request belongs to the client; the URL syntax to the config.
impl HttpUrl {
    /// The GET request, built once per camera.
    pub fn request(&self) -> Vec<u8> {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let host = if self.port == 80 { host } else { format!("{host}:{}", self.port) };
        let mut r = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ember-edge/{}\r\n\
             Accept: multipart/x-mixed-replace, image/jpeg, */*\r\nConnection: close\r\n",
            self.path,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(c) = &self.credentials {
            r.push_str("Authorization: Basic ");
            r.push_str(&base64(c.as_bytes()));
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The parts of a response head the client needs. `boundary` is a range into the head bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    /// Byte range of the multipart boundary within the buffer given to `parse_head`.
    pub boundary: Option<(usize, usize)>,
    /// Whether the Content-Type looks like a stream of JPEGs (multipart or image/*).
    pub looks_like_mjpeg: bool,
    /// Length of the head including the blank line.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("response is not HTTP (bad status line)")]
    BadStatusLine,
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let Some(end) = find_head_end(buf) else {
        // Without a full status line in a long buffer, this is not HTTP; decide early.
        if buf.len() >= 12 && !buf.starts_with(b"HTTP/") {
            return Err(HeadError::BadStatusLine);
        }
        return Ok(None);
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || code.len() != 3 {
        return Err(HeadError::BadStatusLine);
    }
    let status = std::str::from_utf8(code).ok().and_then(|c| c.parse::<u16>().ok()).ok_or(HeadError::BadStatusLine)?;
    let mut h = Head { status, chunked: false, boundary: None, looks_like_mjpeg: false, len: end };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            h.chunked = value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-type") {
            let lower_starts = |p: &[u8]| value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p);
            h.looks_like_mjpeg = lower_starts(b"multipart/") || lower_starts(b"image/");
            if let Some(b) = super::multipart::boundary_param(value) {
                let start = b.as_ptr() as usize - buf.as_ptr() as usize;
                h.boundary = Some((start, start + b.len()));
            }
        }
    }
    Ok(Some(h))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Decodes `Transfer-Encoding: chunked` in place of the stream: each call returns how many input bytes it
/// used and the payload among them.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: Chunk,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    /// Chunk extensions after `;`, up to the line end.
    Ext,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk; `bool`: the current line is empty so far.
    Trailer(bool),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("bad chunk size line")]
    BadSize,
    #[error("missing CRLF after chunk data")]
    BadDataEnd,
}

impl Dechunker {
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Chunk::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - i);
                    let left = left - n as u64;
                    self.state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                    return Ok((i + n, &input[i..i + n]));
                }
                Chunk::Size => {
                    i += 1;
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            // 15 hex digits is far beyond any real chunk; more is an attack or garbage.
                            if self.digits >= 15 {
                                return Err(ChunkError::BadSize);
                            }
                            self.digits += 1;
                            self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                        }
                        b';' if self.digits > 0 => self.state = Chunk::Ext,
                        b' ' | b'\t' | b'\r' => {}
                        b'\n' if self.digits > 0 => self.end_size_line(),
                        _ => return Err(ChunkError::BadSize),
                    }
                }
                Chunk::Ext => {
                    i += 1;
                    if b == b'\n' {
                        self.end_size_line();
                    }
                }
                Chunk::DataEnd => {
                    i += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = Chunk::Size,
                        _ => return Err(ChunkError::BadDataEnd),
                    }
                }
                Chunk::Trailer(empty) => {
                    i += 1;
                    self.state = match b {
                        b'\n' if empty => Chunk::Done,
                        b'\n' => Chunk::Trailer(true),
                        b'\r' => Chunk::Trailer(empty),
                        _ => Chunk::Trailer(false),
                    };
                }
                Chunk::Done => return Ok((input.len(), &[])),
            }
        }
        Ok((i, &[]))
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 { Chunk::Trailer(true) } else { Chunk::Data(self.size) };
        self.size = 0;
        self.digits = 0;
    }
}

/// Decides which of the camera's frames to decode so the decoded rate averages the set rate. Decoding on a
/// schedule (not "a period since the last one") keeps the average at the rate even though the camera's
/// frames arrive on their own clock; credit is never saved up, so a pause does not cause a burst.
#[derive(Debug, Default, Clone)]
pub struct Pacer {
    last: Option<Instant>,
    due: Option<Instant>,
}

impl Pacer {
    pub fn admit(&mut self, now: Instant, period: Duration) -> bool {
        if let (Some(last), Some(due)) = (self.last, self.due) {
            // A rate raised at run time takes effect at once rather than after the old, longer period.
            let due = due.min(last + period);
            if now < due {
                return false;
            }
            let next = due + period;
            self.due = Some(if next <= now { now + period } else { next });
        } else {
            self.due = Some(now + period);
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://admin:p%40ss@192.168.1.20:8080/video.cgi?x=1#frag").unwrap();
        assert_eq!(u.host, "192.168.1.20");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/video.cgi?x=1");
        assert_eq!(u.credentials.as_deref(), Some("admin:p@ss"));
        assert_eq!(u.redacted(), "http://192.168.1.20:8080/video.cgi?x=1");
        let r = String::from_utf8(u.request()).unwrap();
        assert!(r.starts_with("GET /video.cgi?x=1 HTTP/1.1\r\nHost: 192.168.1.20:8080\r\n"), "{r}");
        assert!(r.contains(&format!("Authorization: Basic {}\r\n", base64(b"admin:p@ss"))));
        assert!(r.ends_with("\r\n\r\n"));

        let u = HttpUrl::parse("HTTP://cam.local").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str(), u.credentials.as_deref()), ("cam.local", 80, "/", None));
        assert!(String::from_utf8(u.request()).unwrap().contains("Host: cam.local\r\n"));
        let u = HttpUrl::parse("http://[fe80::1]:81?q").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("fe80::1", 81, "/?q"));
        assert!(String::from_utf8(u.request()).unwrap().contains("Host: [fe80::1]:81\r\n"));

        for bad in [
            "https://cam/x",
            "rtsp://cam/x",
            "cam/x",
            "http://",
            "http://:80/",
            "http://cam:0/",
            "http://cam:99999/",
            "http://cam:x/",
            "http://u:%zz@cam/",
            "http://[::1/",
            "http://cam/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn response_heads() {
        let buf =
            b"HTTP/1.1 200 OK\r\nServer: cam\r\nContent-Type: multipart/x-mixed-replace; boundary=\"--frame\"\r\n\
                    Transfer-Encoding: Chunked\r\n\r\nBODY";
        let h = parse_head(buf).unwrap().unwrap();
        assert_eq!((h.status, h.chunked, h.looks_like_mjpeg), (200, true, true));
        let (a, b) = h.boundary.unwrap();
        assert_eq!(&buf[a..b], b"frame");
        assert_eq!(&buf[h.len..], b"BODY");

        let h = parse_head(b"HTTP/1.0 401 Unauthorized\nWWW-Authenticate: Basic\n\n").unwrap().unwrap();
        assert_eq!((h.status, h.chunked, h.boundary, h.looks_like_mjpeg), (401, false, None, false));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None));
        assert_eq!(parse_head(b"HTTP/1.1"), Ok(None));
        assert_eq!(parse_head(b"<html><body>oops</body></html>"), Err(HeadError::BadStatusLine));
        assert_eq!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n"), Err(HeadError::BadStatusLine));
        assert_eq!(parse_head(b"\xFF\xD8\xFF\xE0\r\n\r\n"), Err(HeadError::BadStatusLine));
    }

    fn dechunk_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = Dechunker::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut piece = piece;
            while !piece.is_empty() {
                let (n, payload) = d.next(piece)?;
                out.extend_from_slice(payload);
                piece = &piece[n..];
            }
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn chunked_bodies() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(dechunk_all(body, step).unwrap(), (b"helloabcdefghijklmnopqrstuvwxyz".to_vec(), true));
        }
        // A stream in progress: not done yet.
        assert_eq!(dechunk_all(b"3\r\nabc\r\n4\r\nde", 1).unwrap(), (b"abcde".to_vec(), false));
        assert_eq!(dechunk_all(b"zz\r\n", 1), Err(ChunkError::BadSize));
        assert_eq!(dechunk_all(b"\r\n", 1), Err(ChunkError::BadSize));
        assert_eq!(dechunk_all(b"3\r\nabcX", 1), Err(ChunkError::BadDataEnd));
        assert_eq!(dechunk_all(b"ffffffffffffffff\r\n", 1), Err(ChunkError::BadSize));
    }

    #[test]
    fn chunked_garbage_never_panics() {
        let mut x = crate::prng::XorShift64::new(0x0123_4567_89AB_CDEF);
        for _ in 0..2000 {
            let mut d = Dechunker::default();
            let buf: Vec<u8> = (0..64).map(|_| b"0123456789abcdef\r\n;xZ"[x.below(21)]).collect();
            let mut piece = &buf[..];
            while let Ok((n, _)) = d.next(piece) {
                if piece.is_empty() {
                    break;
                }
                piece = &piece[n..];
            }
        }
    }

    #[test]
    fn pacer_averages_the_rate_without_bursts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Camera at 25 fps (40 ms), rate 10 fps: about 10 of every 25 frames over a long run.
        let mut p = Pacer::default();
        let admitted = (0..2500).filter(|k| p.admit(t0 + ms(40 * k), ms(100))).count();
        assert!((995..=1001).contains(&admitted), "{admitted}");
        // Camera slower than the rate: every frame.
        let mut p = Pacer::default();
        assert_eq!((0..100).filter(|k| p.admit(t0 + ms(200 * k), ms(100))).count(), 100);
        // After a long gap, no burst: the next frames are paced again.
        let mut p = Pacer::default();
        assert!(p.admit(t0, ms(100)));
        assert!(p.admit(t0 + ms(5000), ms(100)));
        assert!(!p.admit(t0 + ms(5040), ms(100)));
        assert!(p.admit(t0 + ms(5100), ms(100)));
        // Rate raised from 0.1 fps to 10 fps: takes effect at once.
        let mut p = Pacer::default();
        assert!(p.admit(t0, ms(10_000)));
        assert!(!p.admit(t0 + ms(50), ms(100)));
        assert!(p.admit(t0 + ms(100), ms(100)));
        // Never twice at the same instant.
        assert!(!p.admit(t0 + ms(100), ms(100)));
    }
}
