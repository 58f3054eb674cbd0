//! The durable outbox: every alert is appended to an on-disk spool before it is sent, and leaves it only when
//! the collector has acknowledged it. Append-only segment files hold records `[len u16][crc32 u32][seq u32]
//! [frame]`, each written with a single `write`; on open, a record whose length or CRC does not check (a torn
//! tail after a crash or power cut) ends that segment and is truncated away. The acknowledged high-water mark
//! and the spool's epoch live in a small `state` file replaced atomically (write, fsync, rename), so sequence
//! numbers keep counting across restarts and a wiped spool starts a new epoch the collector can tell apart.
//!
//! Size is bounded: when a new record would exceed `max_bytes`, the oldest segment is dropped and its records
//! counted (reported upstream in heartbeats). fsync policy, for SD cards: `Always` syncs every record (alerts
//! are rare — state changes, not samples — so this costs little wear and is the default); `Never` leaves it to
//! the kernel (safe against a process crash or SIGKILL, not against power loss).
//!
//! Every segment stays open, so pending records can still be read when the folder is deleted under a running
//! appliance (`intact` tells; the outbox then carries them in memory into a new folder). An acknowledgement
//! that cannot be persisted (a read-only or full disk) stays in memory, and the segments it frees are only
//! deleted once it is persisted (`flush_state`): deleting them first could let sequence numbers be reused.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 2 + 4 + 4;
/// A record's frame is at most this long (the wire's fixed buffer).
pub const MAX_RECORD: usize = super::wire::MAX_FRAME;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("record of {0} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLarge(usize),
    #[error("record {0} is not above the spool's last sequence number {1}")]
    OutOfOrder(u32, u32),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

struct Segment {
    id: u64,
    path: PathBuf,
    /// Read (and, for the active segment, append) handle, kept so a deleted folder's records stay readable.
    file: File,
    /// (seq, offset, total record length) of each record, in file order.
    records: Vec<(u32, u64, u32)>,
    bytes: u64,
}

/// Where a spool lives and how it is bounded: what the outbox needs to open it again after a failure.
#[derive(Debug, Clone)]
pub struct Place {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: Fsync,
}

/// What `open` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub records: usize,
    pub torn_bytes: u64,
    pub segments: usize,
}

pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// The newest segment takes appends (false after `open` and after a failed rollback: a new one is made).
    active: bool,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: Fsync,
    epoch: u32,
    acked_upto: u32,
    /// Acknowledged out of order, above `acked_upto`.
    acked_ahead: BTreeSet<u32>,
    next_seq: u32,
    total_bytes: u64,
    pub dropped: u64,
    /// The acknowledged mark moved but could not be written yet.
    state_dirty: bool,
}

/// Deletes a segment file; one already gone (deleted with its folder, or by another opener) is fine.
fn remove(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// The whole records at the start of `data`, as (seq, offset, length), and where they end.
fn parse(data: &[u8]) -> (Vec<(u32, u64, u32)>, usize) {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER <= data.len() {
        let len = u16::from_le_bytes([data[pos], data[pos + 1]]) as usize;
        let sum = u32::from_le_bytes([data[pos + 2], data[pos + 3], data[pos + 4], data[pos + 5]]);
        let seq = u32::from_le_bytes([data[pos + 6], data[pos + 7], data[pos + 8], data[pos + 9]]);
        let end = pos + HEADER + len;
        if len == 0 || len > MAX_RECORD || end > data.len() || crc(seq, &data[pos + HEADER..end]) != sum {
            break;
        }
        records.push((seq, pos as u64, (HEADER + len) as u32));
        pos = end;
    }
    (records, pos)
}

/// The sequence number a spool in `dir` would give its next record, read without writing anything (a spool
/// that cannot be opened for writing may still be readable); None when it cannot be read.
pub fn peek_next_seq(dir: &Path) -> Option<u32> {
    let b = std::fs::read(dir.join("state")).ok()?;
    let acked = match b.get(..12) {
        Some(b) if b.len() == 12 && crc32fast::hash(&b[..8]).to_le_bytes() == b[8..12] => {
            u32::from_le_bytes([b[4], b[5], b[6], b[7]])
        }
        _ => 0,
    };
    let mut next = acked.wrapping_add(1).max(1);
    for e in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        if e.file_name().to_str().is_some_and(|n| n.ends_with(".seg")) {
            let data = std::fs::read(e.path()).ok()?;
            if let Some(&(last, _, _)) = parse(&data).0.last() {
                next = next.max(last.wrapping_add(1).max(1));
            }
        }
    }
    Some(next)
}

/// Log target of the one debug line per record written (`spooled seq=N synced=0|1`): off unless asked for
/// (`RUST_LOG=ember_edge::uplink::spooled=debug`), for tests that must know what the spool has promised.
pub const SPOOLED_LOG: &str = "ember_edge::uplink::spooled";

/// Makes the folder's entries (a new segment's name) durable.
/// One write at the end of an append-mode segment, synced with `Always`.
fn append(file: &File, bytes: &[u8], fsync: Fsync) -> std::io::Result<()> {
    let mut f = file;
    f.write_all(bytes)?;
    if fsync == Fsync::Always { file.sync_data() } else { Ok(()) }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn crc(seq: u32, frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(frame);
    h.finalize()
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from any torn tail.
    pub fn open(dir: &Path, max_bytes: u64, fsync: Fsync) -> Result<(Spool, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state_path = dir.join("state");
        let (epoch, acked_upto) = match std::fs::read(&state_path) {
            Ok(b) if b.len() == 12 && crc32fast::hash(&b[..8]).to_le_bytes() == b[8..12] => {
                (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
            }
            // A missing or damaged state file starts a new epoch, so the collector cannot mistake new alerts
            // for old ones it already has.
            _ => (new_epoch(), 0),
        };
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            segments: VecDeque::new(),
            active: false,
            max_bytes: max_bytes.max(4096),
            segment_bytes: (max_bytes / 8).clamp(4096, 1 << 20),
            fsync,
            epoch,
            acked_upto,
            acked_ahead: BTreeSet::new(),
            next_seq: acked_upto.wrapping_add(1).max(1),
            total_bytes: 0,
            dropped: 0,
            state_dirty: false,
        };
        let mut rec = Recovery::default();
        for id in ids {
            let path = dir.join(format!("{id:016}.seg"));
            let (seg, torn) = Self::scan(id, &path)?;
            rec.torn_bytes += torn;
            rec.records += seg.records.len();
            rec.segments += 1;
            if let Some(&(last, _, _)) = seg.records.last() {
                spool.next_seq = spool.next_seq.max(last.wrapping_add(1));
            }
            spool.total_bytes += seg.bytes;
            spool.segments.push_back(seg);
        }
        spool.write_state()?;
        if fsync == Fsync::Always {
            // The state file's rename, and a new spool folder's own name in its parent. The parent may not be
            // readable by this user (a folder prepared by the installer): then its entry is the installer's
            // to have made durable, so that one is best effort.
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = sync_dir(parent);
            }
        }
        spool.compact()?;
        Ok((spool, rec))
    }

    fn scan(id: u64, path: &Path) -> Result<(Segment, u64), SpoolError> {
        let mut f = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data).map_err(io(path))?;
        let (records, pos) = parse(&data);
        let torn = (data.len() - pos) as u64;
        if torn > 0 {
            f.set_len(pos as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        Ok((Segment { id, path: path.to_path_buf(), file: f, records, bytes: pos as u64 }, torn))
    }

    fn write_state(&self) -> Result<(), SpoolError> {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.epoch.to_le_bytes());
        b[4..8].copy_from_slice(&self.acked_upto.to_le_bytes());
        let sum = crc32fast::hash(&b[..8]);
        b[8..].copy_from_slice(&sum.to_le_bytes());
        let tmp = self.dir.join("state.tmp");
        let path = self.dir.join("state");
        let replaced = File::create(&tmp).and_then(|mut f| {
            f.write_all(&b)?;
            if self.fsync == Fsync::Always {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
        });
        let Err(e) = replaced else { return Ok(()) };
        // On a full disk the new file gets no block, and an ack that cannot be persisted would keep every old
        // segment, so the disk would never recover. The existing state file already owns its block: overwrite
        // its 12 bytes in place. A torn write there (power cut within one sector) fails the CRC and costs a new
        // epoch at the next start, which makes the collector take resends as new: duplicates, never a loss.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new().write(true).open(&path).map_err(|_| io(&tmp)(e))?;
        f.write_all(&b).map_err(io(&path))?;
        if self.fsync == Fsync::Always {
            f.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    pub fn pending(&self) -> usize {
        self.segments.iter().map(|s| s.records.iter().filter(|r| !self.is_acked(r.0)).count()).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn is_acked(&self, seq: u32) -> bool {
        seq <= self.acked_upto || self.acked_ahead.contains(&seq)
    }

    /// Appends a record with the next sequence number; `frame` is built by `make(seq)`. Returns the seq.
    pub fn append(
        &mut self,
        make: impl FnOnce(u32, &mut [u8; MAX_RECORD]) -> Option<usize>,
    ) -> Result<u32, SpoolError> {
        let seq = self.next_seq;
        let mut buf = [0u8; HEADER + MAX_RECORD];
        let (_, body) = buf.split_at_mut(HEADER);
        let body: &mut [u8; MAX_RECORD] = body.try_into().map_err(|_| SpoolError::TooLarge(0))?;
        let len = make(seq, body).ok_or(SpoolError::TooLarge(MAX_RECORD + 1))?;
        self.write_record(seq, &mut buf, len)?;
        Ok(seq)
    }

    /// Appends `frame`, already built for `seq` (an alert held in memory while the spool could not take it).
    /// `seq` must be above `floor_seq`, so records stay in order and none is born acknowledged.
    pub fn append_frame(&mut self, seq: u32, frame: &[u8]) -> Result<(), SpoolError> {
        let mut buf = [0u8; HEADER + MAX_RECORD];
        let body = buf.get_mut(HEADER..HEADER + frame.len()).ok_or(SpoolError::TooLarge(frame.len()))?;
        body.copy_from_slice(frame);
        let floor = self.floor_seq();
        if seq <= floor {
            return Err(SpoolError::OutOfOrder(seq, floor));
        }
        let next = self.next_seq.max(seq.wrapping_add(1).max(1));
        self.write_record(seq, &mut buf, frame.len())?;
        self.next_seq = next;
        Ok(())
    }

    /// The highest sequence number written or acknowledged: an appended record must be above it.
    pub fn floor_seq(&self) -> u32 {
        let last = self.segments.iter().rev().find_map(|s| s.records.last()).map_or(0, |r| r.0);
        last.max(self.acked_upto)
    }

    /// Takes the next sequence number without writing a record: for an alert the spool could not take, which
    /// is sent from memory under the same numbering so acknowledgements stay unambiguous.
    pub fn reserve_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1).max(1);
        seq
    }

    /// Numbers from `seq` on (sequence numbers already handed out from memory before this spool was opened).
    pub fn advance_to(&mut self, seq: u32) {
        self.next_seq = self.next_seq.max(seq);
    }

    fn write_record(&mut self, seq: u32, buf: &mut [u8; HEADER + MAX_RECORD], len: usize) -> Result<(), SpoolError> {
        if len == 0 || len > MAX_RECORD {
            return Err(SpoolError::TooLarge(len));
        }
        let sum = crc(seq, &buf[HEADER..HEADER + len]);
        buf[..2].copy_from_slice(&(len as u16).to_le_bytes());
        buf[2..6].copy_from_slice(&sum.to_le_bytes());
        buf[6..10].copy_from_slice(&seq.to_le_bytes());
        let total = (HEADER + len) as u64;
        while self.total_bytes + total > self.max_bytes && !self.segments.is_empty() {
            self.drop_oldest()?;
        }
        self.open_segment_for(total)?;
        let fsync = self.fsync;
        let Some(seg) = self.segments.back_mut() else {
            return Err(SpoolError::TooLarge(0));
        };
        // One write per record: a crash leaves either the whole record or a torn tail that `scan` drops.
        if let Err(e) = append(&seg.file, &buf[..total as usize], fsync) {
            // A full disk writes part of a record and then fails. Left in place, those bytes would shift every
            // later record away from the offset the index gives it (resends would go out as garbage, and the next
            // start would drop them as torn). So cut the file back to its last whole record; if even that fails,
            // the next append opens a new segment and the torn bytes end this one, where `scan` drops them.
            if seg.file.set_len(seg.bytes).is_err() {
                self.active = false;
            }
            return Err(io(&seg.path)(e));
        }
        seg.records.push((seq, seg.bytes, total as u32));
        seg.bytes += total;
        self.total_bytes += total;
        self.next_seq = seq.wrapping_add(1).max(1);
        // Said only now, after the write (and with `Always` the fsync) returned: the power-cut test
        // (board/qemu-system.sh --power-cut) takes every `synced=1` line as a promise that the alert survives.
        log::debug!(target: SPOOLED_LOG, "spooled seq={seq} synced={}", u8::from(fsync == Fsync::Always));
        Ok(())
    }

    /// Makes sure the last segment takes a record of `total` bytes: a new one when it is full or closed.
    fn open_segment_for(&mut self, total: u64) -> Result<(), SpoolError> {
        let need_new = match self.segments.back() {
            Some(s) => !self.active || s.bytes + total > self.segment_bytes,
            None => true,
        };
        if need_new {
            let id = self.segments.back().map(|s| s.id + 1).unwrap_or(1);
            let path = self.dir.join(format!("{id:016}.seg"));
            let file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io(&path))?;
            // The new file's name must survive a power cut as well as its records: fsync the folder once per
            // segment (ext4's journal happens to commit the entry with the file's own fsync, other file systems
            // need this).
            if self.fsync == Fsync::Always {
                sync_dir(&self.dir)?;
            }
            self.active = true;
            self.segments.push_back(Segment { id, path, file, records: Vec::new(), bytes: 0 });
        }
        Ok(())
    }

    /// Whether the disk takes the largest record where the next one would go, without writing one: that many
    /// zero bytes are appended and cut away again. After a failed write with nothing waiting to be written,
    /// only this tells a disk that has room again from one that is still full. A power cut between the two
    /// leaves a zero tail, which the next open discards as torn.
    pub fn probe(&mut self) -> Result<(), SpoolError> {
        self.open_segment_for((HEADER + MAX_RECORD) as u64)?;
        let fsync = self.fsync;
        let Some(seg) = self.segments.back_mut() else {
            return Err(SpoolError::TooLarge(0));
        };
        let written = append(&seg.file, &[0u8; HEADER + MAX_RECORD], fsync);
        let cut = seg.file.set_len(seg.bytes);
        if cut.is_err() {
            self.active = false;
        }
        written.and(cut).map_err(io(&seg.path))
    }

    fn drop_oldest(&mut self) -> Result<(), SpoolError> {
        if let Some(seg) = self.segments.pop_front() {
            let lost = seg.records.iter().filter(|r| !self.is_acked(r.0)).count() as u64;
            self.dropped += lost;
            if let Some(&(last, _, _)) = seg.records.last() {
                // Dropped alerts count as handled, so the ack mark can move past them.
                if last > self.acked_upto {
                    self.acked_upto = last;
                    self.acked_ahead.retain(|s| *s > last);
                }
            }
            self.total_bytes -= seg.bytes;
            if self.segments.is_empty() {
                self.active = false;
            }
            if lost > 0 {
                log::warn!("uplink spool full: dropped {lost} unacknowledged alerts (oldest first)");
            }
            self.state_dirty = true;
            remove(&seg.path)?;
            self.flush_state()?;
        }
        Ok(())
    }

    /// Marks `seq` acknowledged; frees fully acknowledged segments. When the mark cannot be written, it is kept
    /// and written by a later ack or `flush_state`, and the error is returned.
    pub fn ack(&mut self, seq: u32) -> Result<bool, SpoolError> {
        if self.is_acked(seq) || seq >= self.next_seq {
            return Ok(false);
        }
        self.acked_ahead.insert(seq);
        let before = self.acked_upto;
        while self.acked_ahead.remove(&self.acked_upto.wrapping_add(1)) {
            self.acked_upto = self.acked_upto.wrapping_add(1);
        }
        // Holes left by dropped or never-written seqs: advance over seqs no segment holds any more.
        let lowest_held = self.segments.iter().flat_map(|s| s.records.iter()).map(|r| r.0).find(|s| !self.is_acked(*s));
        if let Some(&first_ahead) = self.acked_ahead.first()
            && lowest_held.is_none_or(|l| l > first_ahead)
        {
            let upto = lowest_held.map(|l| l - 1).unwrap_or(self.next_seq - 1);
            self.acked_upto = self.acked_upto.max(upto);
            let a = self.acked_upto;
            self.acked_ahead.retain(|s| *s > a);
        }
        if self.acked_upto != before {
            self.state_dirty = true;
        }
        self.flush_state()?;
        Ok(true)
    }

    /// True while an acknowledgement waits to be written (a read-only or full disk).
    pub fn state_dirty(&self) -> bool {
        self.state_dirty
    }

    /// Writes a pending acknowledgement mark, then frees the segments it covers.
    pub fn flush_state(&mut self) -> Result<(), SpoolError> {
        if self.state_dirty {
            self.write_state()?;
            self.state_dirty = false;
        }
        self.compact()
    }

    /// False when the folder or the segment being appended to is no longer where the spool put it (deleted or
    /// replaced under a running appliance): what it holds would not survive a restart.
    pub fn intact(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(dir) = std::fs::metadata(&self.dir) else { return false };
        let Some(seg) = self.segments.back() else { return dir.is_dir() };
        match (std::fs::metadata(&seg.path), seg.file.metadata()) {
            (Ok(on_disk), Ok(open)) => on_disk.ino() == open.ino() && on_disk.dev() == open.dev(),
            _ => false,
        }
    }

    /// Deletes segments whose every record is acknowledged (keeping the active one open for appends).
    fn compact(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let done = self.segments.front().is_some_and(|s| s.records.iter().all(|r| self.is_acked(r.0)));
            if !done {
                break;
            }
            if let Some(seg) = self.segments.front() {
                remove(&seg.path)?;
            }
            if let Some(seg) = self.segments.pop_front() {
                self.total_bytes -= seg.bytes;
            }
        }
        Ok(())
    }

    /// Calls `each(seq, frame)` for every unacknowledged record, oldest first (for resending after a reconnect).
    pub fn for_each_pending(&self, mut each: impl FnMut(u32, &[u8]) -> bool) -> Result<(), SpoolError> {
        let mut buf = [0u8; HEADER + MAX_RECORD];
        for seg in &self.segments {
            let mut f = &seg.file;
            for &(seq, off, len) in &seg.records {
                if self.is_acked(seq) {
                    continue;
                }
                f.seek(SeekFrom::Start(off)).map_err(io(&seg.path))?;
                let rec = &mut buf[..len as usize];
                f.read_exact(rec).map_err(io(&seg.path))?;
                if !each(seq, &rec[HEADER..]) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// A new spool epoch: random in 1..2^31 (the memory epochs are above). Not the wall clock: a board without a
/// real-time clock boots at 1970 or at its last saved time, so two wiped spools could get the same clock-made
/// epoch and the collector would take the second one's alerts for ones it already has, a silent loss.
fn new_epoch() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    let v = if random { u32::from_le_bytes(b) } else { crate::prng::XorShift64::from_clock(0x5eed).next() as u32 };
    (v & 0x7FFF_FFFF).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fresh spools get distinct epochs below the memory epochs even when opened within one second (a board
    /// that boots at the same restored time each time): the wall clock used to make them all the same.
    #[test]
    fn new_epochs_are_distinct_whatever_the_clock() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..50 {
            let dir = std::env::temp_dir().join(format!("ember-spool-epoch-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let (s, _) = Spool::open(&dir, 1 << 16, Fsync::Never).unwrap();
            let e = s.epoch();
            assert!((1..1 << 31).contains(&e), "{e}");
            assert!(seen.insert(e), "epoch {e} repeated");
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ember-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(s: &mut Spool, text: &str) -> u32 {
        s.append(|seq, buf| {
            let b = format!("{seq}:{text}");
            buf[..b.len()].copy_from_slice(b.as_bytes());
            Some(b.len())
        })
        .unwrap()
    }

    fn pending(s: &Spool) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        s.for_each_pending(|seq, f| {
            v.push((seq, String::from_utf8_lossy(f).into_owned()));
            true
        })
        .unwrap();
        v
    }

    #[test]
    fn survives_reopen_and_keeps_counting() {
        let d = dir("reopen");
        let (mut s, r) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!(r, Recovery::default());
        let epoch = s.epoch();
        for i in 0..5 {
            put(&mut s, &format!("a{i}"));
        }
        s.ack(1).unwrap();
        s.ack(2).unwrap();
        drop(s);
        let (s, r) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!(r.records, 5);
        assert_eq!(s.epoch(), epoch);
        assert_eq!(pending(&s).iter().map(|p| p.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(s.next_seq(), 6);
        let _ = std::fs::remove_dir_all(&d);
    }

    const FULL_DISK_CHILD: &str = "EMBER_SPOOL_FULL_DISK_DIR";

    /// A file-size limit makes the kernel write part of a record and then fail (EFBIG), which is what a full
    /// disk does (ENOSPC). The limit is per process, so the spool runs in a child: this test binary again, with
    /// only this test selected.
    #[test]
    fn short_write_is_rolled_back_and_later_records_stay_readable() {
        if let Some(d) = std::env::var_os(FULL_DISK_CHILD) {
            full_disk_child(Path::new(&d));
            return;
        }
        let d = dir("full-disk");
        std::fs::create_dir_all(&d).unwrap();
        let name = "uplink::spool::tests::short_write_is_rolled_back_and_later_records_stay_readable";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(FULL_DISK_CHILD, &d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // What the child left on disk reopens whole: no torn bytes, every record where its index says.
        let (s, r) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!(r.torn_bytes, 0);
        let want: Vec<(u32, String)> = [(1, "1:a0"), (2, "2:a1"), (3, "3:a2"), (4, "4:after0"), (5, "5:after1")]
            .iter()
            .map(|(n, t)| (*n, t.to_string()))
            .collect();
        assert_eq!(pending(&s), want);
        let _ = std::fs::remove_dir_all(&d);
    }

    // rlim_t is u64 here and u32 on 32-bit ARM: the cast is needed there and a no-op here.
    #[allow(clippy::unnecessary_cast)]
    fn full_disk_child(d: &Path) {
        // SAFETY: plain libc calls on this process's own signal disposition and limits; no memory is shared.
        unsafe {
            // Past the limit the kernel also sends SIGXFSZ, whose default action would kill the child.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        let (mut s, _) = Spool::open(d, 1 << 20, Fsync::Always).unwrap();
        for i in 0..3 {
            put(&mut s, &format!("a{i}"));
        }
        let seg_len = std::fs::metadata(&s.segments.back().unwrap().path).unwrap().len();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `lim` is a valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) }, 0);
        let saved = lim.rlim_cur;
        // Room for 7 of the next record's 17 bytes: a short write, then EFBIG.
        lim.rlim_cur = (seg_len + 7) as libc::rlim_t;
        // SAFETY: as above; lowering the soft limit only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
        let failed = s.append(|_, buf| {
            buf[..7].copy_from_slice(b"x:torn!");
            Some(7)
        });
        assert!(failed.is_err(), "the write past the limit must fail");
        assert!(s.probe().is_err(), "the probe sees the same refusal");
        assert_eq!(std::fs::metadata(&s.segments.back().unwrap().path).unwrap().len(), seg_len, "probe cut back");
        lim.rlim_cur = saved;
        // SAFETY: as above; back to the saved soft limit, which is within the hard limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
        assert_eq!(std::fs::metadata(&s.segments.back().unwrap().path).unwrap().len(), seg_len, "rolled back");
        s.probe().unwrap();
        assert_eq!(std::fs::metadata(&s.segments.back().unwrap().path).unwrap().len(), seg_len, "probe cut back");
        put(&mut s, "after0");
        put(&mut s, "after1");
        let got: Vec<String> = pending(&s).into_iter().map(|p| p.1).collect();
        assert_eq!(got, ["1:a0", "2:a1", "3:a2", "4:after0", "5:after1"]);
    }

    /// When no new state file can be made (a full disk; here a directory in its way), the ack is still persisted
    /// in place, so acknowledged segments are freed and the disk can recover.
    #[test]
    fn ack_is_persisted_when_no_new_state_file_can_be_made() {
        let d = dir("state-in-place");
        let (mut s, _) = Spool::open(&d, 1 << 20, Fsync::Always).unwrap();
        for i in 0..4 {
            put(&mut s, &format!("s{i}"));
        }
        std::fs::create_dir(d.join("state.tmp")).unwrap();
        assert!(s.ack(1).unwrap());
        assert!(s.ack(2).unwrap());
        drop(s);
        let (s, _) = Spool::open(&d, 1 << 20, Fsync::Always).unwrap();
        assert_eq!(pending(&s).iter().map(|p| p.0).collect::<Vec<_>>(), [3, 4]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Issue 18 defect 2: an ack that cannot be written at all (here directories where both the state file and
    /// its replacement go, which stops root too) is kept, and once the disk takes it again it is written and
    /// the segments it covers are freed; before that none is deleted, so no sequence number can come back.
    #[test]
    fn an_ack_that_cannot_be_written_is_kept_and_written_once_the_disk_takes_it() {
        let d = dir("ack-blocked");
        let (mut s, _) = Spool::open(&d, 32768, Fsync::Always).unwrap();
        for i in 0..600 {
            put(&mut s, &format!("payload-{i:04}"));
        }
        let segments = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
                .count()
        };
        let before = segments(&d);
        assert!(before > 2, "{before} segments");
        std::fs::remove_file(d.join("state")).unwrap();
        std::fs::create_dir_all(d.join("state").join("x")).unwrap();
        std::fs::create_dir_all(d.join("state.tmp").join("x")).unwrap();
        for seq in 1..=600 {
            assert!(s.ack(seq).is_err(), "the disk takes no state");
        }
        assert!(s.state_dirty());
        assert_eq!((s.pending(), segments(&d)), (0, before), "nothing freed before the ack is written");
        assert!(s.flush_state().is_err());
        std::fs::remove_dir_all(d.join("state")).unwrap();
        std::fs::remove_dir_all(d.join("state.tmp")).unwrap();
        s.flush_state().unwrap();
        assert!(!s.state_dirty());
        assert_eq!(segments(&d), 1);
        drop(s);
        let (s, _) = Spool::open(&d, 32768, Fsync::Always).unwrap();
        assert_eq!((s.pending(), s.next_seq()), (0, 601));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_is_truncated_and_the_rest_kept() {
        let d = dir("torn");
        let (mut s, _) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        for i in 0..3 {
            put(&mut s, &format!("r{i}"));
        }
        drop(s);
        let seg = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(seg.path()).unwrap();
        f.write_all(&[7, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!((r.records, r.torn_bytes), (3, 5));
        assert_eq!(put(&mut s, "after"), 4);
        drop(s);
        let (s, _) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!(pending(&s).len(), 4);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// What a power cut leaves on ext4 when the size reached the disk but the data did not: the file ends in
    /// zeros. They are a torn tail, counted and cut away; every record before them (fsync'd, several segments, each
    /// new segment's name synced with its folder) is still there, and numbering goes on after the last one.
    #[test]
    fn a_zero_filled_tail_after_a_power_cut_is_counted_as_torn() {
        let d = dir("zero-tail").join("nested");
        let (mut s, _) = Spool::open(&d, 32768, Fsync::Always).unwrap();
        for i in 0..400 {
            put(&mut s, &format!("z{i}"));
        }
        drop(s);
        let mut segs: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        assert!(segs.len() > 1, "the records should span segments");
        let mut f = OpenOptions::new().append(true).open(&segs[segs.len() - 1]).unwrap();
        f.write_all(&[0u8; 300]).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&d, 32768, Fsync::Always).unwrap();
        assert_eq!((r.records, r.torn_bytes), (400, 300));
        assert_eq!(pending(&s).iter().map(|p| p.0).collect::<Vec<_>>(), (1..=400).collect::<Vec<u32>>());
        assert_eq!(put(&mut s, "after"), 401);
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    #[test]
    fn corrupted_middle_record_ends_the_segment_without_panic() {
        let d = dir("corrupt");
        let (mut s, _) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        for i in 0..4 {
            put(&mut s, &format!("c{i}"));
        }
        drop(s);
        let seg = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(seg.path()).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(seg.path(), &bytes).unwrap();
        let (s, r) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert!(r.records < 4 && r.torn_bytes > 0);
        assert!(pending(&s).iter().all(|(seq, t)| t.starts_with(&format!("{seq}:"))));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts() {
        let d = dir("full");
        let (mut s, _) = Spool::open(&d, 8192, Fsync::Never).unwrap();
        for i in 0..2000 {
            put(&mut s, &format!("payload-{i:06}"));
        }
        assert!(s.bytes() <= 8192);
        assert!(s.dropped > 0);
        let p = pending(&s);
        assert_eq!(p.last().map(|x| x.0), Some(2000), "the newest alerts are kept");
        assert_eq!(p.len() as u64 + s.dropped, 2000);
        // Everything left can be acknowledged and the spool empties.
        for (seq, _) in &p {
            s.ack(*seq).unwrap();
        }
        assert_eq!(s.pending(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn acks_out_of_order_and_segments_are_freed() {
        let d = dir("acks");
        let (mut s, _) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        for i in 0..500 {
            put(&mut s, &format!("x{i:04}"));
        }
        let segs_before = std::fs::read_dir(&d).unwrap().count();
        for seq in (1..=500).rev() {
            s.ack(seq).unwrap();
        }
        assert_eq!(s.pending(), 0);
        assert!(std::fs::read_dir(&d).unwrap().count() <= segs_before);
        drop(s);
        let (s, _) = Spool::open(&d, 1 << 20, Fsync::Never).unwrap();
        assert_eq!((s.pending(), s.next_seq()), (0, 501));
        let _ = std::fs::remove_dir_all(&d);
    }
}
