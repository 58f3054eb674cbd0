//! The MJPEG multipart framer (`camera::multipart`): the boundary from a Content-Type value, then the stream in
//! arbitrary chunks, with a stream end in the middle. Checks that `push` always makes progress, a JPEG it
//! returns fits the configured bound and starts with SOI, and `boundary_param` never returns an empty boundary.

use ember_edge::camera::multipart::{MultipartParser, boundary_param};

#[path = "chunks.rs"]
mod chunks;

/// Small, so the oversize path is reached by small inputs too.
const MAX_PART: usize = 4096;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // The Content-Type header value is the first line; the stream is the rest.
        let (head, stream) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (&data[..0], data),
        };
        let mut p = MultipartParser::new(MAX_PART);
        if let Some(b) = boundary_param(head) {
            // One leading `--` is dropped (cameras that put the delimiter's dashes in the parameter); a boundary
            // that itself starts with dashes keeps the rest.
            assert!(!b.is_empty());
            p.set_boundary(b);
        }
        let (stream, mut chunks) = chunks::split(stream);
        // The connection drops halfway (and the next one goes on with the rest) when the header line's length
        // is odd.
        let cut = if head.len() % 2 == 1 { stream.len() / 2 } else { usize::MAX };
        let (mut rest, mut fed) = (stream, 0);
        while !rest.is_empty() {
            let take = chunks.next(rest.len());
            let (n, part) = p.push(&rest[..take]);
            let part = part.map(|j| (j.len(), j.starts_with(&[0xFF, 0xD8])));
            assert!(n <= take);
            match part {
                Some((len, soi)) => {
                    assert!(len <= MAX_PART && soi, "bad part of {len} bytes");
                    assert_eq!(p.last_part().len(), len);
                }
                // Without a part, push consumes everything it was given (else the caller would spin).
                None => assert_eq!(n, take, "no part returned, yet not all bytes consumed"),
            }
            rest = &rest[n..];
            fed += n;
            if fed >= cut {
                p.end_of_stream();
                fed = 0;
            }
        }
        p.end_of_stream();
        let _ = p.stats();
    });
}
