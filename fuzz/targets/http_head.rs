//! The status server's request head parser (`web::head`): the request line, the percent-decoded path and the
//! header lookups every route makes, and the segment decoder the routes that take a name use.

use ember_edge::web::head;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(h) = head::parse(data) else { return };
        assert!(!h.method.is_empty());
        // Every `%` the client sent in the path is followed by two hex digits (anything else is a 400).
        let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
        let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        let raw = target.split(|&b| b == b'?').next().unwrap_or_default();
        for (i, _) in raw.iter().enumerate().filter(|(_, b)| **b == b'%') {
            let hex = raw.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            assert!(hex, "accepted a bad percent-escape at {i} in {:?}", String::from_utf8_lossy(raw));
        }
        for name in ["host", "origin", "authorization", "cookie", "content-length", "content-type", "x-ember-token"] {
            let _ = h.header(name);
            let _ = h.single(name);
        }
        for seg in h.path.split('/') {
            let _ = head::segment(seg);
        }
    });
}
