//! The server side of `multipart/x-mixed-replace`: the part header written before each live-view JPEG, into a
//! fixed buffer. Clients (the load tool, tests) read these streams with `camera::multipart`, the one parser.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::multipart::{MultipartParser, Stats};
    use crate::camera::replay::DEMO_FRAMES;

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
        let (a, b) = (DEMO_FRAMES[0].1, DEMO_FRAMES[1].1);
        let bodies: [&[u8]; 3] = [a, b"", b];
        let s = server_stream(&bodies);
        let want = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame: 0\r\n\r\n", a.len());
        assert!(s.starts_with(want.as_bytes()));
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut p = MultipartParser::new(1 << 20);
            p.set_boundary(BOUNDARY.as_bytes());
            let mut got: Vec<Vec<u8>> = Vec::new();
            for mut c in s.chunks(chunk) {
                while !c.is_empty() {
                    let (n, part) = p.push(c);
                    if let Some(j) = part {
                        got.push(j.to_vec());
                    }
                    c = &c[n..];
                }
            }
            // The empty part produces no frame: there is no picture in it.
            assert_eq!(got, [a.to_vec(), b.to_vec()], "chunk {chunk}");
            assert_eq!(p.stats(), Stats { parts: 2, ..Stats::default() }, "chunk {chunk}");
        }
    }
}
