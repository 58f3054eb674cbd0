use super::*;
// A fixed-seed generator, so failures reproduce.
use crate::camera::replay::DEMO_FRAMES;
use crate::prng::XorShift64 as Rng;

fn jpegs() -> Vec<&'static [u8]> {
    DEMO_FRAMES.iter().map(|f| f.1).collect()
}

/// Pushes `stream` in chunks whose sizes come from `chunk`; returns the JPEGs and the final stats.
fn run(p: &mut MultipartParser, stream: &[u8], mut chunk: impl FnMut() -> usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let end = (pos + chunk().max(1)).min(stream.len());
        let mut piece = &stream[pos..end];
        while !piece.is_empty() {
            let (n, part) = p.push(piece);
            if let Some(j) = part {
                out.push(j.to_vec());
            }
            assert!(n <= piece.len());
            // Without a completed part, a push consumes all it was given.
            assert!(n == piece.len() || out.last().is_some());
            piece = &piece[n..];
        }
        pos = end;
    }
    out
}

fn whole(p: &mut MultipartParser, stream: &[u8]) -> Vec<Vec<u8>> {
    run(p, stream, || usize::MAX)
}

fn standard(frames: &[&[u8]], boundary: &str, with_length: bool) -> Vec<u8> {
    let mut s = Vec::new();
    for f in frames {
        s.extend_from_slice(format!("--{boundary}\r\nContent-Type: image/jpeg\r\n").as_bytes());
        if with_length {
            s.extend_from_slice(format!("Content-Length: {}\r\n", f.len()).as_bytes());
        }
        s.extend_from_slice(b"X-Timestamp: 1700000000.123\r\n\r\n");
        s.extend_from_slice(f);
        s.extend_from_slice(b"\r\n");
    }
    s
}

#[test]
fn standard_stream_whole_byte_by_byte_and_random_splits() {
    let frames = jpegs();
    for with_length in [true, false] {
        let stream = standard(&frames, "myboundary", with_length);
        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"myboundary");
        assert_eq!(whole(&mut p, &stream), frames);
        assert_eq!(p.stats(), Stats { parts: 5, ..Stats::default() }, "with_length {with_length}");

        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"--myboundary");
        assert_eq!(run(&mut p, &stream, || 1), frames);
        assert_eq!(p.stats(), Stats { parts: 5, ..Stats::default() });

        for seed in 1..40u64 {
            let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let max = [2usize, 7, 64, 1500, 70_000][seed as usize % 5];
            let mut p = MultipartParser::new(1 << 20);
            p.set_boundary(b"myboundary");
            let got = run(&mut p, &stream, || 1 + rng.below(max));
            assert_eq!(got, frames, "seed {seed}");
            assert_eq!(p.stats(), Stats { parts: 5, ..Stats::default() }, "seed {seed}");
        }
    }
}

#[test]
fn lying_servers_still_give_every_frame() {
    let frames = jpegs();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Header says one boundary, body uses another.
        ("wrong boundary", standard(&frames, "other", true)),
        // Boundary lines without the leading dashes.
        ("bare boundary", {
            let mut s = Vec::new();
            for f in &frames {
                s.extend_from_slice(b"myboundary\r\nContent-Type: image/jpeg\r\n\r\n");
                s.extend_from_slice(f);
            }
            s
        }),
        // Parts without any headers, not even a blank line.
        ("no headers", {
            let mut s = Vec::new();
            for f in &frames {
                s.extend_from_slice(b"--myboundary\r\n");
                s.extend_from_slice(f);
            }
            s
        }),
        // Concatenated JPEGs, as `ffmpeg -f mjpeg` writes.
        ("concatenated", frames.concat()),
        // Content-Length that counts the trailing CRLF, or is simply too long or too short.
        ("length +2", {
            let mut s = Vec::new();
            for f in &frames {
                s.extend_from_slice(format!("--myboundary\r\nContent-Length: {}\r\n\r\n", f.len() + 2).as_bytes());
                s.extend_from_slice(f);
                s.extend_from_slice(b"\r\n");
            }
            s
        }),
        ("length short", {
            let mut s = Vec::new();
            for f in &frames {
                s.extend_from_slice(format!("--myboundary\r\nContent-Length: {}\r\n\r\n", f.len() / 2).as_bytes());
                s.extend_from_slice(f);
            }
            s
        }),
        ("length huge", {
            let mut s = Vec::new();
            for f in &frames {
                s.extend_from_slice(b"--myboundary\r\nContent-Length: 99999999\r\n\r\n");
                s.extend_from_slice(f);
            }
            s
        }),
    ];
    for (name, stream) in cases {
        for step in [usize::MAX, 1, 333] {
            let mut p = MultipartParser::new(1 << 20);
            p.set_boundary(b"\"myboundary\"".strip_prefix(b"\"").unwrap().strip_suffix(b"\"").unwrap());
            assert_eq!(run(&mut p, &stream, || step), frames, "{name}, step {step}");
            let s = p.stats();
            assert_eq!((s.parts, s.garbage_bytes, s.truncated, s.oversized), (5, 0, 0, 0), "{name}: {s:?}");
            match name {
                "wrong boundary" => assert_eq!(s.foreign_boundaries, 5),
                "length short" => assert_eq!(s.length_mismatches, 5),
                "length huge" => assert_eq!(s.length_mismatches, 0),
                _ => assert_eq!((s.length_mismatches, s.foreign_boundaries), (0, 0), "{name}: {s:?}"),
            }
        }
    }
}

#[test]
fn garbage_between_parts_is_counted_exactly() {
    let frames = jpegs();
    let html = b"<html><body><h1>500 Internal Server Error</h1></body></html>\r\n";
    let mut s = Vec::new();
    s.extend_from_slice(html);
    for f in &frames {
        s.extend_from_slice(b"hello garbage\r\n");
        s.extend_from_slice(b"--b\r\nContent-Type: image/jpeg\r\n\r\n");
        s.extend_from_slice(f);
        // Binary junk with a lone FF that is not an SOI.
        s.extend_from_slice(&[0x00, 0x13, 0xFF, 0x41, 0x42]);
    }
    let expect = (html.len() + frames.len() * (15 + 5)) as u64;
    for step in [usize::MAX, 1, 17] {
        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"b");
        assert_eq!(run(&mut p, &s, || step), frames);
        p.end_of_stream();
        assert_eq!(p.stats(), Stats { parts: 5, garbage_bytes: expect, ..Stats::default() }, "step {step}");
    }
}

#[test]
fn random_binary_garbage_between_parts_never_costs_a_frame() {
    let frames = jpegs();
    let mut rng = Rng::new(0x1234_5678_9ABC_DEF1);
    for round in 0..30 {
        let mut s = Vec::new();
        for f in &frames {
            let n = rng.below(3000);
            // Garbage may contain anything except a JPEG start, which would be a (malformed) JPEG.
            let mut last = 0u8;
            for _ in 0..n {
                let mut b = rng.next() as u8;
                if last == 0xFF && b == 0xD8 {
                    b = 0;
                }
                s.push(b);
                last = b;
            }
            if last == 0xFF {
                s.push(0);
            }
            s.extend_from_slice(b"\r\n--b\r\n\r\n");
            s.extend_from_slice(f);
        }
        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"b");
        let got = run(&mut p, &s, || 1 + rng.below(5000));
        assert_eq!(got, frames, "round {round}");
        assert!(p.stats().garbage_bytes > 0);
    }
}

#[test]
fn oversized_parts_are_skipped_without_growing() {
    let frames = jpegs();
    let small = frames.iter().map(|f| f.len()).min().unwrap();
    let cap = small + 10;
    let want: Vec<&[u8]> = frames.iter().copied().filter(|f| f.len() <= cap).collect();
    assert!(!want.is_empty() && want.len() < frames.len());
    for with_length in [true, false] {
        let stream = standard(&frames, "b", with_length);
        for step in [usize::MAX, 1, 999] {
            let mut p = MultipartParser::new(cap);
            p.set_boundary(b"b");
            assert_eq!(run(&mut p, &stream, || step), want);
            assert_eq!(p.capacity(), cap);
            let s = p.stats();
            assert_eq!((s.parts, s.oversized, s.garbage_bytes), (want.len() as u64, (5 - want.len()) as u64, 0));
        }
    }
}

#[test]
fn truncated_parts_are_counted_and_never_delivered() {
    let frames = jpegs();
    // Each frame cut somewhere, followed by the next part's boundary and a whole frame.
    let mut rng = Rng::new(77);
    let scan_start = frames[0].windows(2).position(|w| w == [0xFF, 0xDA]).unwrap() + 14;
    for _ in 0..200 {
        let cut = 3 + rng.below(frames[0].len() - 4);
        let mut s = standard(&frames[..1], "b", false);
        let head = s.len() - frames[0].len() - 2;
        s.truncate(head + cut);
        s.extend_from_slice(&standard(&frames[1..2], "b", true));
        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"b");
        let got = run(&mut p, &s, || 1 + rng.below(4000));
        let st = p.stats();
        if cut > scan_start {
            assert_eq!(got, vec![frames[1].to_vec()], "cut {cut}: {st:?}");
        } else {
            // Cut inside a header segment: its length may swallow the next part's start (a documented limit).
            assert!(got.is_empty() || got == vec![frames[1].to_vec()], "cut {cut}");
        }
        // The cut can land where the JPEG's own structure makes the rest look malformed, then the bytes
        // already seen are garbage; either way it is counted and nothing bad comes out.
        assert_eq!(st.truncated + st.malformed, 1, "cut {cut}: {st:?}");
    }
    // The connection drops mid-part.
    let s = standard(&frames[..2], "b", true);
    let mut p = MultipartParser::new(1 << 20);
    let got = whole(&mut p, &s[..s.len() - 1000]);
    assert_eq!(got, vec![frames[0].to_vec()]);
    p.end_of_stream();
    assert_eq!(p.stats().truncated, 1);
    // The next connection starts clean.
    assert_eq!(whole(&mut p, &s), frames[..2].to_vec());
    assert_eq!(p.stats().parts, 3);
}

#[test]
fn embedded_thumbnail_does_not_end_the_part() {
    let frames = jpegs();
    let (outer, thumb) = (frames[0], frames[4]);
    assert!(thumb.len() < 65_000);
    // APP1 segment holding a whole JPEG, right after the outer SOI.
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1];
    j.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
    j.extend_from_slice(thumb);
    j.extend_from_slice(&outer[2..]);
    let mut p = MultipartParser::new(1 << 20);
    assert_eq!(run(&mut p, &j, || 4096), vec![j.clone()]);
    assert_eq!(p.stats().parts, 1);
}

#[test]
fn declared_non_image_parts_are_skipped_whole() {
    let frames = jpegs();
    // A metadata part whose binary body contains what looks like an SOI.
    let meta: Vec<u8> = [b"{\"motion\":1}\n".as_slice(), &[0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0], b"--b\r\n"].concat();
    let mut s = Vec::new();
    for f in &frames[..2] {
        s.extend_from_slice(
            format!("--b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", meta.len()).as_bytes(),
        );
        s.extend_from_slice(&meta);
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(&standard(&[f], "b", true));
    }
    // A JPEG labelled as octet-stream is still a JPEG.
    s.extend_from_slice(
        format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", frames[2].len())
            .as_bytes(),
    );
    s.extend_from_slice(frames[2]);
    for step in [usize::MAX, 1, 5] {
        let mut p = MultipartParser::new(1 << 20);
        p.set_boundary(b"b");
        assert_eq!(run(&mut p, &s, || step), frames[..3].to_vec());
        let st = p.stats();
        assert_eq!((st.parts, st.other_parts, st.garbage_bytes, st.malformed), (3, 2, 0, 0), "{st:?}");
    }
}

#[test]
fn random_input_never_panics_and_parts_are_well_formed() {
    let frames = jpegs();
    let base = standard(&frames, "b", true);
    let mut rng = Rng::new(0xDEAD_BEEF_CAFE_F00D);
    let mut total = Stats::default();
    for round in 0..300 {
        let mut s: Vec<u8> =
            if round % 3 == 0 { (0..rng.below(20_000)).map(|_| rng.next() as u8).collect() } else { base.clone() };
        // Mutations, biased towards the bytes that drive the state machine.
        for _ in 0..rng.below(40) {
            if s.is_empty() {
                break;
            }
            let at = rng.below(s.len());
            let b = [0xFF, 0xD8, 0xD9, 0xDA, 0x00, b'\n', b'-', rng.next() as u8][rng.below(8)];
            match rng.below(3) {
                0 => s[at] = b,
                1 => s.insert(at, b),
                _ => {
                    s.remove(at);
                }
            }
        }
        let cap = [64usize, 30_000, 1 << 20][round % 3];
        let mut p = MultipartParser::new(cap);
        p.set_boundary(b"b");
        let got = run(&mut p, &s, || 1 + rng.below(3000));
        p.end_of_stream();
        for j in &got {
            assert!(j.len() <= cap);
            assert_eq!(&j[..2], &[0xFF, 0xD8]);
            assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
        }
        let st = p.stats();
        assert_eq!(st.parts, got.len() as u64);
        total.parts += st.parts;
        total.truncated += st.truncated;
        total.malformed += st.malformed;
        total.oversized += st.oversized;
    }
    println!("random rounds: {total:?}");
    assert!(total.parts > 0 && total.truncated + total.malformed > 0);
}

#[test]
fn boundary_parameter_forms() {
    let cases: [(&[u8], Option<&[u8]>); 8] = [
        (b"multipart/x-mixed-replace; boundary=myboundary", Some(b"myboundary")),
        (b"multipart/x-mixed-replace;boundary=--myboundary", Some(b"myboundary")),
        (b"multipart/x-mixed-replace; boundary=\"my boundary\"; charset=x", Some(b"my boundary")),
        (b"multipart/x-mixed-replace; BOUNDARY=abc; x=y", Some(b"abc")),
        (b"multipart/x-mixed-replace boundary=abc", Some(b"abc")),
        (b"multipart/x-mixed-replace", None),
        (b"multipart/x-mixed-replace; boundary=", None),
        (b"multipart/x-mixed-replace; boundary=\"", None),
    ];
    for (ct, want) in cases {
        assert_eq!(boundary_param(ct), want, "{}", String::from_utf8_lossy(ct));
    }
}

#[test]
fn steady_state_does_not_allocate() {
    let frames = jpegs();
    let stream = standard(&frames, "b", true);
    let mut p = MultipartParser::new(1 << 20);
    p.set_boundary(b"b");
    let before = crate::alloc_count::allocations();
    let mut parts = 0;
    for _ in 0..3 {
        let mut piece = &stream[..];
        while !piece.is_empty() {
            let (n, part) = p.push(&piece[..piece.len().min(4096)]);
            parts += usize::from(part.is_some());
            piece = &piece[n..];
        }
    }
    assert_eq!(crate::alloc_count::allocations(), before);
    assert_eq!(parts, 15);
}

#[test]
fn timing_framer() {
    // Throughput of the framer alone, printed for docs (run with --release for real numbers).
    let frames = jpegs();
    let stream = standard(&frames, "b", true);
    let mut p = MultipartParser::new(1 << 20);
    p.set_boundary(b"b");
    let rounds = if cfg!(debug_assertions) { 5 } else { 200 };
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        for piece in stream.chunks(64 * 1024) {
            let mut piece = piece;
            while !piece.is_empty() {
                let (n, part) = p.push(std::hint::black_box(piece));
                std::hint::black_box(part);
                piece = &piece[n..];
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let mb = (stream.len() * rounds) as f64 / 1e6;
    println!("framer: {:.0} MB/s, {:.1} us per frame", mb / secs, secs * 1e6 / (rounds * frames.len()) as f64);
    assert_eq!(p.stats().parts, (rounds * frames.len()) as u64);
}
