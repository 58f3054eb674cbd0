//! Mending the spool: noticing a folder deleted under the outbox, opening the spool again, writing pending
//! acknowledgements and moving alerts held in memory into it in order, with the crate's backoff between
//! attempts; and the last attempt at shutdown.

use tokio::time::Instant;

use super::super::spool::{Spool, SpoolError};
use super::super::wire::{self, MAX_FRAME, MAX_MESSAGE, Received, Up};
use super::{Frame, MEMORY_ALERTS, Outbox, RETRY_MAX, RETRY_MIN};
use crate::retry::Backoff;

impl Outbox {
    /// The spool's folder or active segment is gone (deleted under us): what it holds would not survive a
    /// restart. Its pending records are still readable through the open files: they move to memory, and a new
    /// spool is made in their place.
    pub(super) fn check_intact(&mut self, now: Instant) {
        if self.spool.as_ref().is_none_or(Spool::intact) {
            return;
        }
        let Some(old) = self.spool.take() else { return };
        let mut rescued: Vec<Frame> = Vec::new();
        let read = old.for_each_pending(|seq, f| {
            let mut bytes = [0u8; MAX_FRAME];
            if let Some(b) = bytes.get_mut(..f.len()) {
                b.copy_from_slice(f);
                rescued.push(Frame { seq, len: f.len(), bytes });
            }
            true
        });
        if let Err(e) = read {
            let unread = old.pending().saturating_sub(rescued.len()) as u64;
            log::error!("uplink spool vanished and {unread} of its alerts cannot be read: {e}");
            self.count_lost(unread);
        }
        self.dropped_before += old.dropped;
        self.memory_next = old.next_seq();
        let n = rescued.len();
        for f in rescued.into_iter().rev() {
            self.memory.push_front(f);
        }
        let mut over = 0;
        while self.memory.len() > MEMORY_ALERTS {
            self.memory.pop_front();
            over += 1;
        }
        if over > 0 {
            log::error!("uplink: {over} alerts of the vanished spool do not fit in memory: lost");
            self.count_lost(over);
        }
        self.retry_at = None;
        self.failed(
            now,
            format!("the spool folder {} vanished ({n} alerts moved to memory)", self.place.dir.display()),
        );
        self.retry_at = Some(now);
    }

    pub(super) fn mend(&mut self, now: Instant) {
        if self.spool.is_none() {
            match Spool::open(&self.place.dir, self.place.max_bytes, self.place.fsync) {
                Ok((mut s, rec)) => {
                    log::info!(
                        "alert spool {} opened ({} records recovered, {} torn bytes discarded)",
                        self.place.dir.display(),
                        rec.records,
                        rec.torn_bytes
                    );
                    s.advance_to(self.memory.front().map_or(self.memory_next, |f| f.seq));
                    self.spool = Some(s);
                }
                Err(e) => return self.failed(now, format!("cannot open: {e}")),
            }
        }
        let Some(spool) = self.spool.as_mut() else { return };
        if let Err(e) = spool.flush_state() {
            return self.failed(now, format!("cannot record acknowledgements or free their segments: {e}"));
        }
        let mut moved = 0usize;
        while let Some(f) = self.memory.front() {
            let r = if f.seq > spool.floor_seq() {
                spool.append_frame(f.seq, f.bytes())
            } else {
                // The folder came back holding newer records than this alert's number (it could not be read
                // when numbering began): it needs a new number, so it may reach the collector twice. Under the
                // memory epoch, above every number that epoch has used, the new one cannot clash.
                spool.advance_to(self.memory_high.wrapping_add(1).max(1));
                let seq = spool.reserve_seq();
                self.memory_high = self.memory_high.max(seq);
                match renumber(f, seq, self.memory_epoch, &self.key) {
                    Some(r) => {
                        log::warn!("uplink: alert {} renumbered {} to enter the spool in order", f.seq, r.seq);
                        let r2 = spool.append_frame(r.seq, r.bytes());
                        if r2.is_ok() {
                            self.memory.pop_front();
                            moved += 1;
                            continue;
                        }
                        r2
                    }
                    None => Err(SpoolError::TooLarge(f.len)),
                }
            };
            match r {
                Ok(()) => {
                    self.memory.pop_front();
                    moved += 1;
                }
                Err(e) => return self.failed(now, format!("cannot write: {e}")),
            }
        }
        // With nothing moved, nothing has shown that the disk takes writes again: a full disk would otherwise
        // clear its trouble as soon as the collector acknowledged what memory held, and raise it again at the
        // next alert, so /health and the heartbeats would flap and mostly say all is well.
        if moved == 0
            && self.trouble.is_some()
            && let Err(e) = spool.probe()
        {
            return self.failed(now, format!("cannot write: {e}"));
        }
        spool.advance_to(self.memory_next);
        if let Some(why) = self.trouble.take() {
            log::warn!("uplink spool writable again after '{why}': {moved} alerts moved from memory into it");
        }
        self.retry_at = None;
        self.backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    }

    pub(super) fn failed(&mut self, now: Instant, why: String) {
        let r = self.backoff.failed(None);
        self.retry_at = Some(now + r.delay);
        log::log!(
            r.level(log::Level::Error),
            "uplink spool {}: {why}; {} alerts held in memory (sent from there), retrying in {:.1} s",
            self.place.dir.display(),
            self.memory.len(),
            r.delay.as_secs_f64()
        );
        self.set_trouble(why);
    }

    pub(super) fn set_trouble(&mut self, why: String) {
        self.trouble = Some(why);
        self.trouble_unreported = true;
        self.refresh_part();
    }

    /// At shutdown: a last attempt to spool what memory holds; what remains is lost, and said so.
    pub fn shutdown(&mut self, now: Instant) {
        if self.memory.is_empty() {
            return;
        }
        self.mend(now);
        if !self.memory.is_empty() {
            log::error!(
                "uplink: {} alerts held in memory are lost at shutdown (the spool cannot take them)",
                self.memory.len()
            );
        }
    }
}

/// `f` re-encoded under `epoch` and `seq` (same content).
fn renumber(f: &Frame, seq: u32, epoch: u32, key: &[u8]) -> Option<Frame> {
    let mut scratch = [0u8; MAX_MESSAGE];
    let Ok((Received::V2(Up::Alert(mut a)), ext)) =
        wire::decode_up_ext(f.bytes(), &mut scratch, |_| Some(key.to_vec()), true)
    else {
        return None;
    };
    (a.epoch, a.seq) = (epoch, seq);
    let mut out = Frame { seq, len: 0, bytes: [0u8; MAX_FRAME] };
    // The event id and deciding frame stay with the alert.
    out.len = wire::encode_alert(&a, &ext.unwrap_or_default(), key, &mut out.bytes).ok()?;
    Some(out)
}
