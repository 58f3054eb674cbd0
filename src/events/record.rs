//! The event log's on-disk record, pure: `[len u16][crc32 u32][id u64][payload]`, the payload one event as
//! JSON (readable with `strings` on a board when everything else fails). `scan` walks a segment's bytes and
//! stops at the first record whose length, CRC, id order or payload does not check: that is a torn tail (a
//! crash or power cut during a write) and everything from there on is discarded, as the alert spool does.

use super::Event;

pub const HEADER: usize = 2 + 4 + 8;
/// Longest payload; `encode` shortens an event's detail to fit.
pub const MAX_PAYLOAD: usize = 1024;

fn crc(id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one record for `ev` to `out` (cleared first). None if the event cannot be encoded even with its
/// detail cut.
pub fn encode(ev: &Event, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.resize(HEADER, 0);
    let mut ev = std::borrow::Cow::Borrowed(ev);
    loop {
        out.truncate(HEADER);
        serde_json::to_writer(&mut *out, ev.as_ref()).ok()?;
        let len = out.len() - HEADER;
        if len <= MAX_PAYLOAD {
            break;
        }
        if ev.detail.is_empty() {
            return None;
        }
        // Cut on a character boundary; whatever the detail held, a shorter one fits eventually.
        let d = &mut ev.to_mut().detail;
        let mut keep = d.len().saturating_sub(len - MAX_PAYLOAD + 3).min(d.len() / 2);
        while !d.is_char_boundary(keep) {
            keep -= 1;
        }
        d.truncate(keep);
        d.push('…');
    }
    let len = out.len() - HEADER;
    let sum = crc(ev.id, &out[HEADER..]);
    out[..2].copy_from_slice(&(len as u16).to_le_bytes());
    out[2..6].copy_from_slice(&sum.to_le_bytes());
    out[6..14].copy_from_slice(&ev.id.to_le_bytes());
    Some(())
}

/// One whole record found by `scan`: where it is and what the index keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: u64,
    pub ms: u64,
    pub kind: u8,
    pub offset: u32,
    pub len: u32,
}

/// Decodes the record at the start of `data`: the event and the record's total length.
pub fn decode(data: &[u8]) -> Option<(Event, usize)> {
    if data.len() < HEADER {
        return None;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let sum = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[6..14]);
    let id = u64::from_le_bytes(id);
    let end = HEADER.checked_add(len)?;
    if len == 0 || len > MAX_PAYLOAD || end > data.len() || crc(id, &data[HEADER..end]) != sum {
        return None;
    }
    let ev: Event = serde_json::from_slice(&data[HEADER..end]).ok()?;
    // A record whose header and payload disagree was not written by us.
    if ev.id != id {
        return None;
    }
    Some((ev, end))
}

/// Walks `data` (one segment) from the start: the whole records, in order, and where the valid part ends.
/// Ids must rise; `after` is the id the previous segment ended with.
pub fn scan(data: &[u8], after: u64, found: &mut Vec<Found>) -> usize {
    let mut pos = 0usize;
    let mut last = after;
    while let Some((ev, n)) = decode(&data[pos..]) {
        if ev.id <= last || pos > u32::MAX as usize {
            break;
        }
        found.push(Found { id: ev.id, ms: ev.ms, kind: ev.kind as u8, offset: pos as u32, len: n as u32 });
        last = ev.id;
        pos += n;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    fn ev(id: u64, detail: &str) -> Event {
        Event {
            id,
            ms: 1_700_000_000_000 + id,
            kind: Kind::Zone,
            zone: Some("hall".into()),
            detail: detail.into(),
            ..Event::default()
        }
    }

    #[test]
    fn round_trips_and_stops_at_a_torn_tail() {
        let mut data = Vec::new();
        let mut rec = Vec::new();
        for i in 1..=3 {
            encode(&ev(i, "normal → alarm"), &mut rec).unwrap();
            data.extend_from_slice(&rec);
        }
        let whole = data.len();
        encode(&ev(4, "cut"), &mut rec).unwrap();
        data.extend_from_slice(&rec[..rec.len() - 3]);
        let mut found = Vec::new();
        assert_eq!(scan(&data, 0, &mut found), whole);
        assert_eq!(found.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2, 3]);
        let (back, n) = decode(&data[found[1].offset as usize..]).unwrap();
        assert_eq!((back, n as u32), (ev(2, "normal → alarm"), found[1].len));
    }

    #[test]
    fn a_flipped_bit_or_falling_id_ends_the_valid_part() {
        let mut rec = Vec::new();
        let mut data = Vec::new();
        for i in [5, 6, 4, 7] {
            encode(&ev(i, "x"), &mut rec).unwrap();
            data.extend_from_slice(&rec);
        }
        let mut found = Vec::new();
        scan(&data, 0, &mut found);
        assert_eq!(found.iter().map(|f| f.id).collect::<Vec<_>>(), [5, 6]);
        found.clear();
        data[HEADER + 3] ^= 0x10;
        assert_eq!(scan(&data, 0, &mut found), 0);
        assert!(found.is_empty());
        // Ids continue across segments.
        encode(&ev(9, "x"), &mut rec).unwrap();
        assert_eq!(scan(&rec, 9, &mut found), 0);
    }

    #[test]
    fn an_oversized_detail_is_cut_to_fit() {
        let mut rec = Vec::new();
        encode(&ev(1, &"é".repeat(3000)), &mut rec).unwrap();
        assert!(rec.len() <= HEADER + MAX_PAYLOAD);
        let (back, _) = decode(&rec).unwrap();
        assert!(back.detail.ends_with('…') && back.detail.len() < 1000);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_yield_only_checked_records() {
        let mut rng = crate::prng::XorShift64::new(7);
        let mut rec = Vec::new();
        encode(&ev(1, "seed"), &mut rec).unwrap();
        for round in 0..4000 {
            let n = rng.below(300);
            let mut data: Vec<u8> = {
                let mut d = vec![0u8; n];
                rng.fill(&mut d);
                d
            };
            if round % 3 == 0 {
                // A valid record followed by, or with, damage: the damage must never come back as an event.
                let mut v = rec.clone();
                if round % 2 == 0 && !v.is_empty() {
                    let at = rng.below(v.len());
                    v[at] ^= 1 << rng.below(8);
                }
                v.extend_from_slice(&data);
                data = v;
            }
            let mut found = Vec::new();
            let end = scan(&data, 0, &mut found);
            assert!(end <= data.len());
            for f in &found {
                let (e, _) = decode(&data[f.offset as usize..]).unwrap();
                assert_eq!(e.id, f.id);
            }
        }
    }
}
