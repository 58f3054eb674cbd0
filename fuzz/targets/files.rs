//! Shared by the spool and event log targets: turn one input into the files of a folder, and repair record
//! CRCs on request so the fuzzer gets past the checksum to the recovery logic behind it.
//!
//! Layout: a flags byte (bit 0: repair CRCs, bit 1: write the given `state` file, bits 2-3: 1 + number of
//! segment files), the 12-byte state file when bit 1 is set, then each segment as `[len u16 LE][bytes]`
//! (cut short at the end of the input); whatever the segments leave drives the operations after opening.

// Each target uses part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub struct Layout<'a> {
    pub repair: bool,
    pub state: Option<&'a [u8]>,
    pub segments: Vec<&'a [u8]>,
    pub ops: &'a [u8],
}

pub fn layout(data: &[u8]) -> Layout<'_> {
    let (flags, mut rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    let state = if flags & 2 != 0 {
        let n = rest.len().min(12);
        let (s, r) = rest.split_at(n);
        rest = r;
        Some(s)
    } else {
        None
    };
    let count = 1 + usize::from((flags >> 2) & 3);
    let mut segments = Vec::new();
    for _ in 0..count {
        let len = match rest {
            [a, b, r @ ..] => {
                rest = r;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => 0,
        };
        let (seg, r) = rest.split_at(len.min(rest.len()));
        segments.push(seg);
        rest = r;
    }
    Layout { repair: flags & 1 != 0, state, segments, ops: rest }
}

/// Fixes the CRC of every record `[len u16][crc u32][key: key_len bytes][payload: len]` whose length fits,
/// where the CRC covers key then payload (the spool's and the event log's record format).
pub fn repair(seg: &mut [u8], key_len: usize, max_payload: usize) {
    let header = 6 + key_len;
    let mut pos = 0;
    while pos + header <= seg.len() {
        let len = usize::from(u16::from_le_bytes([seg[pos], seg[pos + 1]]));
        let end = pos + header + len;
        if len == 0 || len > max_payload || end > seg.len() {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&seg[pos + 6..end]);
        seg[pos + 2..pos + 6].copy_from_slice(&h.finalize().to_le_bytes());
        pos = end;
    }
}

/// An empty folder of this process's own on tmpfs (the targets write files on every input).
pub fn fresh_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("ember-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the fuzz folder");
    dir
}

/// Every file in `dir` with its bytes, sorted by name.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default())).collect())
        .unwrap_or_default();
    v.sort();
    v
}
