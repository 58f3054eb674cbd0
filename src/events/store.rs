//! The event log on disk: append-only segment files (`NNNN.evl`) of `record`s, bounded in bytes and in count.
//! Opening recovers as the alert spool does: each segment is scanned and a torn tail (a crash or power cut
//! mid-write) is cut off. A write that fails part-way (a full disk) is rolled back to the last whole record,
//! so later records never sit behind garbage. When a new record would pass `max_bytes` or the index is full,
//! the oldest segment goes, and its events are counted as dropped.
//!
//! The index of every stored event (id, time, kind, where) has a fixed capacity (`INDEX_CAP`, a `heapless`
//! deque allocated once), so the memory the log takes does not grow with its age; segments roll every
//! `INDEX_CAP / 8` events so dropping the oldest one always makes room.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Found};
use super::{Event, Kind};
use crate::uplink::spool::Fsync;

/// Most events the log holds (and indexes) at once.
pub const INDEX_CAP: usize = 4096;
const ROLL_ENTRIES: usize = INDEX_CAP / 8;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    seg: u64,
    offset: u32,
    len: u32,
    kind: u8,
}

struct Seg {
    id: u64,
    path: PathBuf,
    bytes: u64,
    entries: usize,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    pub records: usize,
    pub torn_bytes: u64,
    /// The kind of the newest stored event: anything but `Stop` means the last run did not end cleanly.
    pub last_kind: Option<Kind>,
    /// Events removed at open to respect the bounds (a smaller `max_bytes` than last time).
    pub dropped: u64,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Only events with a greater id (paging: pass the last id of the previous page).
    pub since: u64,
    pub limit: usize,
    pub kind: Option<Kind>,
    /// The newest `limit` matching events instead of the oldest (still in id order).
    pub newest: bool,
}

pub struct Store {
    dir: PathBuf,
    segs: VecDeque<Seg>,
    index: Box<heapless::Deque<Entry, INDEX_CAP>>,
    active: Option<File>,
    writable: bool,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: Fsync,
    next_id: u64,
    total_bytes: u64,
    /// Events dropped, oldest first, to keep within the bounds since this store was opened.
    pub dropped: u64,
    buf: Vec<u8>,
}

fn seg_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".evl")?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

impl Store {
    /// Opens (or creates) the log in `dir` for appending, cutting off torn tails.
    pub fn open(dir: &Path, max_bytes: u64, fsync: Fsync) -> std::io::Result<(Store, Opened)> {
        std::fs::create_dir_all(dir)?;
        Self::load(dir, max_bytes.max(4096), fsync, true)
    }

    /// Opens the log in `dir` to read it while the appliance may be writing: nothing is changed on disk (a tail
    /// being written looks torn and is simply not shown yet).
    pub fn open_read_only(dir: &Path) -> std::io::Result<Store> {
        Self::load(dir, u64::MAX, Fsync::Never, false).map(|(s, _)| s)
    }

    fn load(dir: &Path, max_bytes: u64, fsync: Fsync, writable: bool) -> std::io::Result<(Store, Opened)> {
        let mut store = Store {
            dir: dir.to_path_buf(),
            segs: VecDeque::new(),
            index: Box::default(),
            active: None,
            writable,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(4096, 1 << 20),
            fsync,
            next_id: 1,
            total_bytes: 0,
            dropped: 0,
            buf: Vec::with_capacity(record::HEADER + record::MAX_PAYLOAD),
        };
        let mut opened = Opened::default();
        let mut found: Vec<(u64, Vec<Found>)> = Vec::new();
        let mut last = 0u64;
        let mut data = Vec::new();
        for id in seg_ids(dir)? {
            let path = dir.join(format!("{id:016}.evl"));
            data.clear();
            match File::open(&path) {
                Ok(mut f) => f.read_to_end(&mut data)?,
                // The writer dropped it since the listing: a reader just goes on.
                Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut recs = Vec::new();
            let valid = record::scan(&data, last, &mut recs);
            let torn = (data.len() - valid) as u64;
            if torn > 0 && writable {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
            opened.torn_bytes += torn;
            if let Some(r) = recs.last() {
                last = r.id;
                opened.last_kind = Kind::from_u8(r.kind);
            }
            opened.records += recs.len();
            store.total_bytes += valid as u64;
            store.segs.push_back(Seg { id, path, bytes: valid as u64, entries: recs.len() });
            found.push((id, recs));
        }
        store.next_id = last + 1;
        let mut total: usize = found.iter().map(|(_, r)| r.len()).sum();
        while (total > INDEX_CAP || store.total_bytes > store.max_bytes) && !found.is_empty() {
            let (_, recs) = found.remove(0);
            total -= recs.len();
            opened.dropped += recs.len() as u64;
            store.remove_oldest_file()?;
        }
        for (seg, recs) in found {
            for r in recs {
                let e = Entry { id: r.id, seg, offset: r.offset, len: r.len, kind: r.kind };
                if store.index.push_back(e).is_err() {
                    // Only a read-only view of a log written with other bounds can have more.
                    store.index.pop_front();
                    let _ = store.index.push_back(e);
                }
            }
        }
        Ok((store, opened))
    }

    fn remove_oldest_file(&mut self) -> std::io::Result<()> {
        let Some(seg) = self.segs.pop_front() else { return Ok(()) };
        self.total_bytes -= seg.bytes;
        if self.segs.is_empty() {
            self.active = None;
        }
        if self.writable { std::fs::remove_file(&seg.path) } else { Ok(()) }
    }

    /// Drops the oldest segment and its index entries; returns how many events went.
    fn drop_oldest(&mut self) -> std::io::Result<u64> {
        let Some(seg) = self.segs.front().map(|s| s.id) else { return Ok(0) };
        let mut n = 0;
        while self.index.front().is_some_and(|e| e.seg == seg) {
            self.index.pop_front();
            n += 1;
        }
        self.dropped += n;
        self.remove_oldest_file()?;
        Ok(n)
    }

    /// The id the next event must have at least.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends `ev` (its id at least `next_id`) with one write, synced as the policy says. Returns how many
    /// old events were dropped to make room. On error nothing of the record stays in the log.
    pub fn append(&mut self, ev: &Event) -> std::io::Result<u64> {
        use std::io::{Error, ErrorKind};
        if !self.writable || ev.id < self.next_id {
            return Err(Error::new(ErrorKind::InvalidInput, "event log: read-only or event id out of order"));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.append_buf(ev, &mut buf);
        self.buf = buf;
        r
    }

    fn append_buf(&mut self, ev: &Event, buf: &mut Vec<u8>) -> std::io::Result<u64> {
        use std::io::{Error, ErrorKind};
        record::encode(ev, buf).ok_or_else(|| Error::new(ErrorKind::InvalidData, "event cannot be encoded"))?;
        let total = buf.len() as u64;
        let mut dropped = 0;
        while (self.total_bytes + total > self.max_bytes || self.index.is_full()) && !self.segs.is_empty() {
            dropped += self.drop_oldest()?;
        }
        let roll = match self.segs.back() {
            Some(s) => self.active.is_none() || s.bytes + total > self.segment_bytes || s.entries >= ROLL_ENTRIES,
            None => true,
        };
        if roll {
            let id = self.segs.back().map(|s| s.id + 1).unwrap_or(1);
            let path = self.dir.join(format!("{id:016}.evl"));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            self.active = Some(f);
            self.segs.push_back(Seg { id, path, bytes: 0, entries: 0 });
        }
        let (Some(f), Some(seg)) = (self.active.as_mut(), self.segs.back_mut()) else {
            return Err(Error::other("event log has no open segment"));
        };
        let fsync = self.fsync;
        let written = f.write_all(buf).and_then(|()| if fsync == Fsync::Always { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // A short write (full disk) would leave garbage that every later record sits behind: cut it off, and if
            // even that fails, start a new segment next time (the garbage then ends this one, where open cuts it).
            if f.set_len(seg.bytes).is_err() {
                self.active = None;
            }
            return Err(e);
        }
        let entry = Entry { id: ev.id, seg: seg.id, offset: seg.bytes as u32, len: total as u32, kind: ev.kind as u8 };
        seg.bytes += total;
        seg.entries += 1;
        self.total_bytes += total;
        self.next_id = ev.id + 1;
        // Room was made above; a failure here would be a bug in the bounds, and costs the oldest entry only.
        if self.index.push_back(entry).is_err() {
            self.index.pop_front();
            let _ = self.index.push_back(entry);
        }
        Ok(dropped)
    }

    /// The events `q` asks for, read back from the segments. Records that no longer decode (a file changed under
    /// a read-only view) are skipped.
    pub fn query(&self, q: &Query) -> Vec<Event> {
        let limit = q.limit.min(INDEX_CAP);
        let matches = |e: &&Entry| e.id > q.since && q.kind.is_none_or(|k| k as u8 == e.kind);
        let picked: Vec<Entry> = if q.newest {
            let mut v: Vec<Entry> = self.index.iter().rev().filter(matches).take(limit).copied().collect();
            v.reverse();
            v
        } else {
            self.index.iter().filter(matches).take(limit).copied().collect()
        };
        let mut out = Vec::with_capacity(picked.len());
        let mut open: Option<(u64, File)> = None;
        let mut buf = Vec::new();
        for e in picked {
            if open.as_ref().is_none_or(|(s, _)| *s != e.seg) {
                open = File::open(self.dir.join(format!("{:016}.evl", e.seg))).ok().map(|f| (e.seg, f));
            }
            let Some((_, f)) = &open else { continue };
            buf.resize(e.len as usize, 0);
            if f.read_exact_at(&mut buf, e.offset as u64).is_ok()
                && let Some((ev, _)) = record::decode(&buf)
                && ev.id == e.id
            {
                out.push(ev);
            }
        }
        out
    }

    /// The oldest id still held, if any.
    pub fn first_id(&self) -> Option<u64> {
        self.index.front().map(|e| e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ember-events-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn ev(id: u64, kind: Kind) -> Event {
        Event { id, ms: id * 10, kind, detail: format!("event {id}"), ..Event::default() }
    }

    fn ids(v: &[Event]) -> Vec<u64> {
        v.iter().map(|e| e.id).collect()
    }

    #[test]
    fn pages_filters_and_survives_reopen_with_a_torn_tail() {
        let d = dir("pages");
        let (mut s, o) = Store::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!(o, Opened::default());
        for i in 1..=25 {
            s.append(&ev(i, if i % 5 == 0 { Kind::Operator } else { Kind::Zone })).unwrap();
        }
        let q = |since, limit, kind, newest| Query { since, limit, kind, newest };
        assert_eq!(ids(&s.query(&q(0, 10, None, false))), (1..=10).collect::<Vec<_>>());
        assert_eq!(ids(&s.query(&q(10, 10, None, false))), (11..=20).collect::<Vec<_>>());
        assert_eq!(ids(&s.query(&q(20, 10, None, false))), (21..=25).collect::<Vec<_>>());
        assert_eq!(ids(&s.query(&q(0, 3, Some(Kind::Operator), false))), [5, 10, 15]);
        assert_eq!(ids(&s.query(&q(0, 2, Some(Kind::Operator), true))), [20, 25]);
        assert_eq!(s.query(&q(0, 1, None, false))[0], ev(1, Kind::Zone));
        drop(s);
        // A torn tail: half a record after the last whole one.
        let seg = d.join(format!("{:016}.evl", 1));
        let mut rec = Vec::new();
        record::encode(&ev(26, Kind::Zone), &mut rec).unwrap();
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&rec[..rec.len() / 2]).unwrap();
        let view = Store::open_read_only(&d).unwrap();
        assert_eq!(view.len(), 25);
        let (mut s, o) = Store::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!((o.records, o.torn_bytes, o.last_kind), (25, (rec.len() / 2) as u64, Some(Kind::Operator)));
        assert_eq!(s.next_id(), 26);
        s.append(&ev(26, Kind::Stop)).unwrap();
        assert!(s.append(&ev(26, Kind::Stop)).is_err(), "ids only rise");
        drop(s);
        let (s, o) = Store::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!((o.records, o.torn_bytes, o.last_kind), (26, 0, Some(Kind::Stop)));
        assert_eq!(ids(&s.query(&q(24, 10, None, false))), [25, 26]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_log_drops_the_oldest_and_counts_them() {
        let d = dir("full");
        let (mut s, _) = Store::open(&d, 16 * 1024, Fsync::Never).unwrap();
        let mut dropped = 0;
        for i in 1..=2000 {
            dropped += s.append(&ev(i, Kind::Zone)).unwrap();
            assert!(s.bytes() <= 16 * 1024);
        }
        assert!(dropped > 1000, "{dropped}");
        assert_eq!(s.dropped, dropped);
        assert_eq!(dropped + s.len() as u64, 2000);
        let first = s.first_id().unwrap();
        assert_eq!(first, dropped + 1, "the oldest go first");
        let all = s.query(&Query { since: 0, limit: usize::MAX, kind: None, newest: false });
        assert_eq!(ids(&all), (first..=2000).collect::<Vec<_>>());
        drop(s);
        // Reopening with a smaller bound drops (and counts) more, still oldest first.
        let (s, o) = Store::open(&d, 4096, Fsync::Never).unwrap();
        assert!(o.dropped > 0 && s.bytes() <= 4096);
        assert_eq!(s.query(&Query { since: 0, limit: 1, kind: None, newest: true })[0].id, 2000);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_count_bound_holds_with_small_events() {
        let d = dir("count");
        let (mut s, _) = Store::open(&d, 64 << 20, Fsync::Never).unwrap();
        for i in 1..=(INDEX_CAP as u64 + 700) {
            s.append(&Event { id: i, ..Event::default() }).unwrap();
        }
        assert!(s.len() <= INDEX_CAP);
        assert_eq!(s.dropped + s.len() as u64, INDEX_CAP as u64 + 700);
        let _ = std::fs::remove_dir_all(&d);
    }
}
