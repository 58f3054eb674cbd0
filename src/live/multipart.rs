//! `multipart/x-mixed-replace` both ways: the part header the server writes before each JPEG (into a fixed
//! buffer), and an incremental parser for clients (the load tool) that accepts any boundary and parts with or
//! without `Content-Length`, fed chunks of any size without copying bodies.

use std::io::Write;

/// The boundary this server uses.
pub const BOUNDARY: &str = "frame";

/// Writes the delimiter and headers of one part into `buf`; returns the bytes used. 128 bytes always suffice.
pub fn part_header(buf: &mut [u8; 128], len: usize, seq: u64) -> usize {
    let mut w = &mut buf[..];
    let before = w.len();
    // Cannot fail: the longest header (two u64s) is under 100 bytes.
    let _ = write!(w, "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Frame: {seq}\r\n\r\n");
    before - w.len()
}

/// What the parser found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A whole part of `len` body bytes ended.
    Part { len: usize },
}

#[derive(Debug)]
enum St {
    /// Looking for `--boundary` at a line start.
    Delimiter,
    /// Reading part headers up to an empty line.
    Headers,
    /// `remaining` body bytes of a part with Content-Length.
    Body { remaining: usize, len: usize },
    /// A body without Content-Length: up to the next delimiter.
    Scan { len: usize },
}

/// Error: the stream is not multipart as announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("part header longer than 4 KiB")]
    HeaderTooLong,
    #[error("bad Content-Length in a part")]
    BadLength,
    #[error("part larger than the limit")]
    TooLarge,
}

pub struct Parser {
    delimiter: Vec<u8>,
    st: St,
    line: Vec<u8>,
    max_part: usize,
    /// Body bytes held back while scanning, in case they start a delimiter split over two chunks.
    tail: Vec<u8>,
}

const MAX_HEADER: usize = 4096;

/// The boundary named in a `Content-Type: multipart/...; boundary=X` value, quotes removed.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (_, rest) = content_type.split_once("boundary=")?;
    let b = rest.split(';').next()?.trim().trim_matches('"');
    (!b.is_empty()).then(|| b.to_owned())
}

impl Parser {
    pub fn new(boundary: &str, max_part: usize) -> Self {
        // Some servers write the boundary with its leading dashes already in the header value.
        let b = boundary.strip_prefix("--").unwrap_or(boundary);
        Parser {
            delimiter: format!("--{b}").into_bytes(),
            st: St::Delimiter,
            line: Vec::with_capacity(256),
            max_part,
            tail: Vec::new(),
        }
    }

    /// Consumes a chunk; calls `on` for every completed part.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Event)) -> Result<(), ParseError> {
        while !data.is_empty() {
            match self.st {
                St::Delimiter | St::Headers => {
                    let nl = data.iter().position(|&b| b == b'\n');
                    let take = nl.map(|p| p + 1).unwrap_or(data.len());
                    if self.line.len() + take > MAX_HEADER {
                        return Err(ParseError::HeaderTooLong);
                    }
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if nl.is_some() {
                        self.line_done()?;
                    }
                }
                St::Body { remaining, len } => {
                    let n = remaining.min(data.len());
                    data = &data[n..];
                    if n == remaining {
                        on(Event::Part { len });
                        self.st = St::Delimiter;
                    } else {
                        self.st = St::Body { remaining: remaining - n, len };
                    }
                }
                St::Scan { len } => {
                    // Search held-back bytes plus this chunk for "\r\n--boundary".
                    let mut pat = Vec::with_capacity(self.delimiter.len() + 2);
                    pat.extend_from_slice(b"\r\n");
                    pat.extend_from_slice(&self.delimiter);
                    self.tail.extend_from_slice(data);
                    data = &[];
                    if let Some(p) = self.tail.windows(pat.len()).position(|w| w == &pat[..]) {
                        let body = len + p;
                        on(Event::Part { len: body });
                        let rest = self.tail.split_off(p + 2);
                        self.tail.clear();
                        self.st = St::Delimiter;
                        self.line.clear();
                        self.feed(&rest, on)?;
                    } else {
                        let keep = pat.len() - 1;
                        if self.tail.len() > keep {
                            let drop = self.tail.len() - keep;
                            self.tail.drain(..drop);
                            let len = len + drop;
                            if len > self.max_part {
                                return Err(ParseError::TooLarge);
                            }
                            self.st = St::Scan { len };
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn line_done(&mut self) -> Result<(), ParseError> {
        let line = std::str::from_utf8(&self.line).unwrap_or("").trim_end_matches(['\r', '\n']);
        match self.st {
            // Anything else between parts (blank lines, preamble) is skipped.
            St::Delimiter if line.as_bytes().starts_with(&self.delimiter) => {
                self.st = St::Headers;
                self.tail.clear();
            }
            St::Headers if line.is_empty() => {
                // Content-Length was remembered in `tail` as its decimal text (no allocation per part).
                let len = std::str::from_utf8(&self.tail).ok().and_then(|t| t.parse::<usize>().ok());
                self.tail.clear();
                self.st = match len {
                    Some(0) => St::Delimiter,
                    Some(n) if n > self.max_part => return Err(ParseError::TooLarge),
                    Some(n) => St::Body { remaining: n, len: n },
                    None => St::Scan { len: 0 },
                };
            }
            St::Headers => {
                if let Some((k, v)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case("content-length")
                {
                    let v = v.trim();
                    if v.parse::<usize>().is_err() {
                        return Err(ParseError::BadLength);
                    }
                    self.tail.clear();
                    self.tail.extend_from_slice(v.as_bytes());
                }
            }
            _ => {}
        }
        // A zero-length part ends at once.
        self.line.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &mut Parser, stream: &[u8], chunk: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            p.feed(c, &mut |Event::Part { len }| out.push(len)).unwrap();
        }
        out
    }

    fn server_stream(bodies: &[&[u8]]) -> Vec<u8> {
        let mut s = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let mut h = [0u8; 128];
            let n = part_header(&mut h, b.len(), i as u64);
            s.extend_from_slice(&h[..n]);
            s.extend_from_slice(b);
            s.extend_from_slice(b"\r\n");
        }
        s
    }

    #[test]
    fn writer_output_parses_back_at_every_chunk_size() {
        let bodies: [&[u8]; 3] = [b"\xff\xd8abc\xff\xd9", b"", b"--frame\r\n inside a body is fine"];
        let s = server_stream(&bodies);
        assert!(s.starts_with(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 7\r\n"));
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut p = Parser::new(BOUNDARY, 1 << 20);
            // The empty part produces no event: there is no frame in it.
            assert_eq!(parts(&mut p, &s, chunk), vec![7, 31], "chunk {chunk}");
        }
    }

    #[test]
    fn parts_without_length_and_any_boundary() {
        let ct = "multipart/x-mixed-replace; boundary=\"--myboundary\"";
        let b = boundary_of(ct).unwrap();
        assert_eq!(b, "--myboundary");
        let s =
            b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\nAAAA\r\n--myboundary\r\n\r\nBB-\r\n\r\n--myboundary\r\n";
        for chunk in [1, 5, 100] {
            let mut p = Parser::new(&b, 1 << 20);
            assert_eq!(parts(&mut p, s, chunk), vec![4, 5], "chunk {chunk}");
        }
    }

    #[test]
    fn oversized_and_malformed_parts_are_errors() {
        let mut p = Parser::new("x", 10);
        let e = p.feed(b"--x\r\nContent-Length: 11\r\n\r\n", &mut |_| {});
        assert_eq!(e, Err(ParseError::TooLarge));
        let mut p = Parser::new("x", 10);
        let e = p.feed(b"--x\r\nContent-Length: ten\r\n", &mut |_| {});
        assert_eq!(e, Err(ParseError::BadLength));
        let mut p = Parser::new("x", 10);
        assert_eq!(p.feed(&[b'a'; 5000], &mut |_| {}), Err(ParseError::HeaderTooLong));
    }
}
