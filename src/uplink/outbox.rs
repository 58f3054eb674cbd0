//! The uplink's state apart from its transport (rumqtt's `MqttState` beside its `EventLoop`): the spool, the
//! counters and gauges, the send cursor, acknowledgements and heartbeats. Both transports (TCP to the collector,
//! MQTT to a broker) drive it and send exactly the bytes it spooled, so an alert is encoded once. It does no
//! network IO and reads no clock: callers pass `now`.
//!
//! The disk never decides whether an alert goes out. When the spool cannot be opened (at start, or again after
//! its folder vanished) or cannot take a record (a full or read-only disk), alerts are held in a bounded memory
//! queue, sent from there when the link is up, and moved into the spool, in order, once it takes them again
//! (retried with `crate::retry`'s backoff). Meanwhile the uplink part is in TROUBLE and heartbeats say so.
//!
//! Sequence numbers: acknowledgements carry only `seq`, so an alert held in memory takes its number from the
//! same counter as the spool (or, with no spool, continues where the spool on disk ends). But that number is
//! not on disk, and a restart could hand it out again; so such an alert carries the process's own *memory
//! epoch* (random, high bit set; spool epochs are Unix seconds and have it clear), and the collector, which
//! de-duplicates per (device, epoch), can never take a later alert for it. Moved into the spool, it keeps its
//! bytes, epoch and number.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod mend;

use super::spool::{Place, Spool, SpoolError};
use super::wire::{self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Split, Up};
use super::{UplinkCounters, alert, wall_ms};
use crate::event::Transition;
use crate::retry::Backoff;
use crate::telemetry::log_limit::{LogLimit, held_back};
use crate::telemetry::{PartHandle, PartState};

/// Alerts held in memory while the spool cannot take them; beyond this the oldest is lost (counted).
pub const MEMORY_ALERTS: usize = 1024;
/// How often a healthy spool is checked for a folder deleted under it.
const CHECK_EVERY: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// An alert frame as it was written to the spool, to be sent as is.
pub struct Frame {
    pub seq: u32,
    len: usize,
    bytes: [u8; MAX_FRAME],
}

impl Frame {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What a connection has been given so far.
struct Link {
    /// Highest sequence handed to the transport on this connection (0: none yet).
    sent_upto: u32,
    /// Every pending alert has been handed over, so a new one can go straight out.
    caught_up: bool,
    heartbeat_due: Instant,
    /// Reassembles the collector's acknowledgements from the byte stream.
    splitter: FrameSplitter,
    acks: Vec<u32>,
}

pub struct Outbox {
    /// None while it cannot be opened.
    spool: Option<Spool>,
    place: Place,
    /// Alerts the spool could not take, oldest first, in sequence order and all newer than the spool's records.
    memory: VecDeque<Frame>,
    memory_epoch: u32,
    /// The next sequence number while there is no spool.
    memory_next: u32,
    /// The highest sequence number used under the memory epoch.
    memory_high: u32,
    /// Alerts lost other than by the spool's own drop-oldest (which `spool.dropped` counts).
    lost: u64,
    /// Drop-oldest losses of spools this outbox has given up (a vanished folder).
    dropped_before: u64,
    /// Why the spool is in trouble; None when it is well.
    trouble: Option<String>,
    /// Whether the spool was in trouble at any moment since the last heartbeat: one that came and went between
    /// two heartbeats still reaches the control room.
    trouble_unreported: bool,
    /// `lost()` when last looked at, and whether a loss since is not yet resolved (see `refresh_part`).
    lost_seen: u64,
    loss_open: bool,
    /// The trouble the health part shows (None: running).
    shown: Option<String>,
    warn_lost: LogLimit,
    backoff: Backoff,
    /// While in trouble: the next attempt to mend it (None: at once).
    retry_at: Option<Instant>,
    /// Next check of a healthy spool's folder (None: at once).
    check_at: Option<Instant>,
    part: Option<PartHandle>,
    /// Where the heartbeat's site bits (stale sources, night mode, output delay) come from.
    site: Option<Arc<dyn super::ha_link::SiteView>>,
    device_id: u32,
    /// HMAC key shared with the collector; empty when none is configured.
    key: Vec<u8>,
    zone_names: Arc<Vec<String>>,
    heartbeat_every: Duration,
    counters: UplinkCounters,
    /// Some while connected.
    link: Option<Link>,
}

impl Outbox {
    /// `spool` is None when it could not be opened (`why`); alerts are held in memory until it can be.
    pub fn new(
        spool: Result<Spool, String>,
        place: Place,
        device_id: u32,
        key: Vec<u8>,
        zone_names: Arc<Vec<String>>,
        heartbeat_every: Duration,
        counters: UplinkCounters,
    ) -> Self {
        let mut rng = crate::prng::XorShift64::from_clock(u64::from(device_id));
        let memory_epoch = (rng.next() as u32) | 0x8000_0000;
        let (spool, trouble) = match spool {
            Ok(s) => (Some(s), None),
            Err(why) => (None, Some(why)),
        };
        // With no spool, number on from where the one on disk ends, if it can be read: a spool opened later
        // then needs no renumbering.
        let memory_next = if spool.is_none() { super::spool::peek_next_seq(&place.dir).unwrap_or(1) } else { 1 };
        let mut o = Outbox {
            spool,
            place,
            memory: VecDeque::new(),
            memory_epoch,
            memory_next,
            memory_high: 0,
            lost: 0,
            dropped_before: 0,
            trouble: None,
            trouble_unreported: false,
            lost_seen: 0,
            loss_open: false,
            shown: None,
            warn_lost: LogLimit::new(Duration::from_secs(10)),
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            retry_at: None,
            check_at: None,
            part: None,
            site: None,
            device_id,
            key,
            zone_names,
            heartbeat_every,
            counters,
            link: None,
        };
        if let Some(why) = trouble {
            o.set_trouble(why);
        }
        o.update_gauges();
        o
    }

    /// The site whose state heartbeats carry beside the uplink's own (`wire::health`).
    pub fn set_site(&mut self, site: Arc<dyn super::ha_link::SiteView>) {
        self.site = Some(site);
    }

    /// The health part that reports the spool's trouble and unresolved losses.
    pub fn set_part(&mut self, part: PartHandle) {
        self.part = Some(part);
        self.shown = None;
        self.refresh_part();
    }

    /// TROUBLE while the spool cannot be opened or written, and after a loss until every alert still pending
    /// is acknowledged (the backlog that overflowed is delivered): a loss is seen on `/health`, not only in a
    /// counter, and clears itself once the situation that caused it has.
    fn refresh_part(&mut self) {
        let lost = self.lost();
        if lost > self.lost_seen {
            self.lost_seen = lost;
            self.loss_open = true;
        }
        if self.loss_open && self.trouble.is_none() && self.pending() == 0 {
            self.loss_open = false;
            log::warn!("uplink: every pending alert acknowledged; {lost} lost since start (counted and reported)");
        }
        let want = match (&self.trouble, self.loss_open) {
            (Some(why), _) => Some(format!("alert spool: {why}")),
            (None, true) => {
                Some(format!("{lost} alerts lost since start; clears once every pending alert is acknowledged"))
            }
            (None, false) => None,
        };
        if want == self.shown {
            return;
        }
        if let Some(p) = &self.part {
            p.set(want.clone().map_or(PartState::Running, PartState::Trouble));
        }
        self.shown = want;
    }

    /// Alerts not yet acknowledged, in the spool and in memory.
    pub fn pending(&self) -> usize {
        self.spool.as_ref().map_or(0, Spool::pending) + self.memory.len()
    }

    /// Alerts held in memory because the spool could not take them.
    pub fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// Why the spool is in trouble, if it is.
    pub fn trouble(&self) -> Option<&str> {
        self.trouble.as_deref()
    }

    pub fn counters(&self) -> &UplinkCounters {
        &self.counters
    }

    /// Every alert lost since start: the spool's drop-oldest and the memory queue's.
    pub fn lost(&self) -> u64 {
        self.lost + self.dropped_before + self.spool.as_ref().map_or(0, |s| s.dropped)
    }

    /// A connection is up: everything unacknowledged is to be (re)sent, oldest first, and a heartbeat is due now.
    pub fn on_connected(&mut self, now: Instant) {
        self.counters.connected.set(1.0);
        self.link = Some(Link {
            sent_upto: 0,
            caught_up: false,
            heartbeat_due: now,
            splitter: FrameSplitter::default(),
            acks: Vec::with_capacity(64),
        });
    }

    pub fn on_disconnected(&mut self) {
        self.counters.connected.set(0.0);
        self.link = None;
    }

    /// Spools the alert for `t` (or holds it in memory when the spool cannot take it). Returns its frame when it
    /// should go out now: connected and nothing older is still to be handed over (otherwise `unsent` brings it
    /// in order). A returned frame counts as sent; if the transport cannot send it after all, it calls
    /// `resend_from(frame.seq)`.
    pub fn on_transition(&mut self, t: &Transition) -> Option<Frame> {
        self.check_intact(t.at);
        let names = Arc::clone(&self.zone_names);
        let zone = names.get(t.zone).map(String::as_str).unwrap_or("?");
        let device = self.device_id;
        let mut frame = Frame { seq: 0, len: 0, bytes: [0u8; MAX_FRAME] };
        let mut spooled = None;
        // Behind alerts held in memory, a new one waits its turn there, so the spool stays in order.
        if let Some(spool) = self.spool.as_mut().filter(|_| self.memory.is_empty()) {
            let (epoch, key) = (spool.epoch(), &self.key);
            let r = spool.append(|seq, buf| {
                let a = alert(device, epoch, seq, zone, t);
                let n = wire::encode_alert(&a, &super::alert_ext(t), key, &mut frame.bytes).ok()?;
                buf.get_mut(..n)?.copy_from_slice(&frame.bytes[..n]);
                frame.len = n;
                Some(n)
            });
            match r {
                Ok(seq) => spooled = Some(seq),
                Err(SpoolError::TooLarge(n)) => {
                    log::error!("alert for zone {zone} cannot be encoded ({n} bytes); lost");
                    self.count_lost(1);
                    return None;
                }
                Err(e) => self.failed(t.at, format!("cannot write: {e}")),
            }
        }
        let seq = match spooled {
            Some(seq) => seq,
            None => {
                let seq = match self.spool.as_mut() {
                    Some(s) => s.reserve_seq(),
                    None => {
                        let s = self.memory_next;
                        self.memory_next = s.wrapping_add(1).max(1);
                        s
                    }
                };
                let a = alert(device, self.memory_epoch, seq, zone, t);
                let Ok(n) = wire::encode_alert(&a, &super::alert_ext(t), &self.key, &mut frame.bytes) else {
                    log::error!("alert for zone {zone} cannot be encoded; lost");
                    self.count_lost(1);
                    return None;
                };
                frame.len = n;
                frame.seq = seq;
                self.hold(Frame { seq, len: n, bytes: frame.bytes }, t.at);
                seq
            }
        };
        self.update_gauges();
        frame.seq = seq;
        let link = self.link.as_mut().filter(|l| l.caught_up)?;
        link.sent_upto = seq;
        self.counters.sent.inc();
        Some(frame)
    }

    fn hold(&mut self, f: Frame, now: Instant) {
        self.memory_high = self.memory_high.max(f.seq);
        self.memory.push_back(f);
        if self.memory.len() > MEMORY_ALERTS {
            self.memory.pop_front();
            self.count_lost(1);
            if let Some(held) = self.warn_lost.allow(now.into_std()) {
                log::error!(
                    "uplink: {MEMORY_ALERTS} alerts held in memory and the spool takes none: the oldest is lost{}",
                    held_back(held)
                );
            }
        }
    }

    fn count_lost(&mut self, n: u64) {
        self.lost += n;
        self.counters.lost.add(n);
    }

    /// Hands spooled alerts not yet given to this connection to `send`, oldest first, at most `room` of them.
    /// `send` returns false when it cannot take one (which stays unsent). Returns how many were handed over;
    /// nothing when not connected.
    pub fn unsent(&mut self, room: usize, mut send: impl FnMut(u32, &[u8]) -> bool) -> Result<usize, SpoolError> {
        let Some(link) = self.link.as_mut().filter(|l| !l.caught_up) else { return Ok(0) };
        let (from, mut handed, mut stopped) = (link.sent_upto, 0usize, false);
        let mut last = from;
        let mut each = |seq: u32, frame: &[u8]| {
            if seq <= from {
                return true;
            }
            if handed == room || !send(seq, frame) {
                stopped = true;
                return false;
            }
            handed += 1;
            last = seq;
            true
        };
        let mut more = true;
        if let Some(spool) = &self.spool {
            spool.for_each_pending(|seq, f| {
                more = each(seq, f);
                more
            })?;
        }
        // Only past every spooled one: a refused alert must stay the first one handed over next time.
        if more {
            for f in &self.memory {
                if !each(f.seq, f.bytes()) {
                    break;
                }
            }
        }
        link.sent_upto = last;
        link.caught_up = !stopped;
        self.counters.sent.add(handed as u64);
        Ok(handed)
    }

    /// Hands alerts from `seq` on over again (a transport could not send them).
    pub fn resend_from(&mut self, seq: u32) {
        if let Some(link) = self.link.as_mut() {
            link.sent_upto = link.sent_upto.min(seq.saturating_sub(1));
            link.caught_up = false;
        }
    }

    /// The collector or broker acknowledged `seq`: it leaves the spool (or memory).
    pub fn on_ack(&mut self, seq: u32) {
        self.record_ack(seq);
        self.update_gauges();
    }

    fn record_ack(&mut self, seq: u32) {
        let mut counted = false;
        if let Ok(i) = self.memory.binary_search_by_key(&seq, |f| f.seq) {
            self.memory.remove(i);
            counted = true;
        }
        // Also for a held alert: its number came from the spool's counter, and the hole it leaves must close.
        let Some(spool) = self.spool.as_mut() else {
            if counted {
                self.counters.acked.inc();
            }
            return;
        };
        match spool.ack(seq) {
            Ok(new) => counted |= new,
            Err(e) => {
                // Kept in memory and written once the disk takes it (`maintain`).
                counted = true;
                if self.trouble.is_none() {
                    self.set_trouble(format!("cannot record acknowledgements or free their segments: {e}"));
                }
            }
        }
        if counted {
            self.counters.acked.inc();
        }
    }

    /// Bytes read from the collector: acknowledgements, tagged and framed. Bad ones are counted and ignored.
    pub fn on_received(&mut self, bytes: &[u8]) {
        let Some(link) = self.link.as_mut() else { return };
        let (key, rejected, acks) = (&self.key, &self.counters.rejected_acks, &mut link.acks);
        link.splitter.feed(bytes, |s| match s {
            Split::Frame(f) => {
                let mut scratch = [0u8; MAX_MESSAGE];
                match wire::decode_down(f, key, &mut scratch) {
                    Ok(Down::Ack { seq }) => acks.push(seq),
                    Err(e) => {
                        rejected.inc();
                        log::warn!("uplink: acknowledgement rejected: {e}");
                    }
                }
            }
            Split::Oversize => rejected.inc(),
        });
        let mut acks = std::mem::take(&mut link.acks);
        for seq in acks.drain(..) {
            self.record_ack(seq);
        }
        if let Some(link) = self.link.as_mut() {
            link.acks = acks;
        }
        self.update_gauges();
    }

    /// When `maintain` is next due.
    pub fn maintain_due(&self, now: Instant) -> Instant {
        if self.trouble.is_some() { self.retry_at.unwrap_or(now) } else { self.check_at.unwrap_or(now) }
    }

    /// Checks the spool and, when in trouble and the retry is due, tries to mend it: open it, write pending
    /// acknowledgements, move the alerts held in memory into it in order.
    pub fn maintain(&mut self, now: Instant) {
        self.check_at = Some(now + CHECK_EVERY);
        self.check_intact(now);
        if self.trouble.is_some() && self.retry_at.is_none_or(|r| now >= r) {
            self.mend(now);
        }
        self.update_gauges();
    }

    /// When the next heartbeat is due; None when not connected.
    pub fn heartbeat_due(&self) -> Option<Instant> {
        self.link.as_ref().map(|l| l.heartbeat_due)
    }

    /// Encodes a heartbeat into `out` if one is due at `now`; returns its length. A late heartbeat delays the
    /// next one rather than sending a burst.
    pub fn heartbeat(&mut self, now: Instant, out: &mut [u8; MAX_FRAME]) -> Option<usize> {
        let link = self.link.as_mut()?;
        if now < link.heartbeat_due {
            return None;
        }
        let next = link.heartbeat_due + self.heartbeat_every;
        link.heartbeat_due = if next > now { next } else { now + self.heartbeat_every };
        let msg = Up::Heartbeat {
            device_id: self.device_id,
            epoch: self.spool.as_ref().map_or(self.memory_epoch, Spool::epoch),
            ts_ms: wall_ms(now),
            health: if self.trouble.is_some() || self.trouble_unreported { wire::health::SPOOL } else { 0 }
                | if self.loss_open { wire::health::LOSS } else { 0 }
                | self.site.as_ref().map_or(0, |s| s.health_bits()),
            spool_pending: self.pending().min(u32::MAX as usize) as u32,
            spool_dropped: self.lost().min(u32::MAX as u64) as u32,
        };
        self.trouble_unreported = false;
        wire::encode(&msg, &self.key, out).ok()
    }

    fn update_gauges(&mut self) {
        self.refresh_part();
        self.counters.pending.set(self.pending() as f64);
        self.counters.dropped.set((self.dropped_before + self.spool.as_ref().map_or(0, |s| s.dropped)) as f64);
        self.counters.spool_bytes.set(self.spool.as_ref().map_or(0, Spool::bytes) as f64);
        self.counters.in_memory.set(self.memory.len() as f64);
        self.counters.spool_trouble.set(if self.trouble.is_some() { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ZoneState, evidence, reason};
    use crate::telemetry::{Counter, Gauge};
    use crate::uplink::spool::Fsync;
    use crate::uplink::wire::{Received, decode_up};

    const KEY: &[u8] = b"outbox-test-key";

    fn counters() -> UplinkCounters {
        UplinkCounters {
            sent: Counter::default(),
            acked: Counter::default(),
            dropped: Gauge::default(),
            reconnects: Counter::default(),
            pending: Gauge::default(),
            connected: Gauge::default(),
            spool_bytes: Gauge::default(),
            rejected_acks: Counter::default(),
            in_memory: Gauge::default(),
            spool_trouble: Gauge::default(),
            lost: Counter::default(),
            tls_refused: Vec::new(),
        }
    }

    fn outbox(name: &str) -> (Outbox, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ember-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        (with_spool(Ok(spool), &dir, 1 << 20), dir)
    }

    fn with_spool(spool: Result<Spool, String>, dir: &std::path::Path, max_bytes: u64) -> Outbox {
        let names = Arc::new(vec!["hall".to_owned()]);
        let place = Place { dir: dir.to_path_buf(), max_bytes, fsync: Fsync::Never };
        Outbox::new(spool, place, 7, KEY.to_vec(), names, Duration::from_secs(30), counters())
    }

    fn transition(to: ZoneState) -> Transition {
        Transition {
            zone: 0,
            at: Instant::now(),
            from: ZoneState::Normal,
            to,
            sources: evidence::VISION,
            vision_score: 0.5,
            max_c: 25.0,
            rise_c_per_min: f32::NAN,
            smoke_pct: 5.0,
            operator: false,
            test: false,
            reason: reason::SINGLE_SOURCE,
            vision_frame: None,
            thermal_device: None,
            event_id: None,
        }
    }

    fn seq_of(frame: &[u8]) -> u32 {
        let mut scratch = [0u8; MAX_MESSAGE];
        match decode_up(frame, &mut scratch, |_| Some(KEY.to_vec()), true).unwrap() {
            Received::V2(Up::Alert(a)) => a.seq,
            other => panic!("not an alert: {other:?}"),
        }
    }

    fn ack(seq: u32, key: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let n = wire::encode(&Down::Ack { seq }, key, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn all_unsent(o: &mut Outbox, room: usize) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        o.unsent(room, |seq, f| {
            v.push((seq, f.to_vec()));
            true
        })
        .unwrap();
        v
    }

    #[test]
    fn alerts_are_spooled_while_down_resent_in_order_and_then_sent_as_spooled() {
        let (mut o, dir) = outbox("order");
        assert!(o.on_transition(&transition(ZoneState::PreAlarm)).is_none(), "not connected");
        assert!(o.on_transition(&transition(ZoneState::Alarm)).is_none());
        assert!(all_unsent(&mut o, 64).is_empty(), "nothing is handed over while down");
        o.on_connected(Instant::now());
        assert_eq!(o.counters().connected.get(), 1.0);
        let resent = all_unsent(&mut o, 64);
        assert_eq!(resent.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        assert!(resent.iter().all(|(seq, f)| seq_of(f) == *seq));
        // Caught up: a new alert goes straight out, as the very bytes the spool holds (encoded once).
        let f = o.on_transition(&transition(ZoneState::Normal)).expect("sent at once");
        assert_eq!((f.seq, seq_of(f.bytes())), (3, 3));
        let mut spooled = Vec::new();
        o.spool
            .as_ref()
            .unwrap()
            .for_each_pending(|seq, b| {
                spooled.push((seq, b.to_vec()));
                true
            })
            .unwrap();
        assert_eq!(spooled[2], (3, f.bytes().to_vec()));
        assert!(all_unsent(&mut o, 64).is_empty(), "nothing is sent twice on one connection");
        assert_eq!((o.counters().sent.get(), o.pending()), (3, 3));
        // After a reconnect everything unacknowledged goes again.
        o.on_disconnected();
        assert_eq!(o.counters().connected.get(), 0.0);
        o.on_connected(Instant::now());
        assert_eq!(all_unsent(&mut o, 64).len(), 3);
        assert_eq!(o.counters().sent.get(), 6, "resends count as sent");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_partial_handover_keeps_new_alerts_in_line_and_refused_or_failed_sends_go_again() {
        let (mut o, dir) = outbox("room");
        for _ in 0..5 {
            o.on_transition(&transition(ZoneState::PreAlarm));
        }
        o.on_connected(Instant::now());
        assert_eq!(all_unsent(&mut o, 2).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        assert!(o.on_transition(&transition(ZoneState::Alarm)).is_none(), "older alerts are still waiting");
        // The transport takes one more, then refuses: the refused one stays unsent.
        let mut took = Vec::new();
        let n = o
            .unsent(64, |seq, _| {
                took.push(seq);
                took.len() < 2
            })
            .unwrap();
        assert_eq!((n, &took[..]), (1, &[3, 4][..]));
        assert_eq!(all_unsent(&mut o, 64).iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5, 6]);
        let f = o.on_transition(&transition(ZoneState::Normal)).expect("caught up");
        assert_eq!(f.seq, 7);
        // The transport could not send 7 after all: it goes out with the next handover.
        o.resend_from(f.seq);
        assert_eq!(all_unsent(&mut o, 64).iter().map(|r| r.0).collect::<Vec<_>>(), [7]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn acknowledgements_free_the_spool_and_bad_ones_are_counted() {
        let (mut o, dir) = outbox("acks");
        o.on_connected(Instant::now());
        for _ in 0..3 {
            o.on_transition(&transition(ZoneState::PreAlarm));
        }
        // Acks arrive as a byte stream, split anywhere.
        let mut bytes = ack(1, KEY);
        bytes.extend(ack(3, KEY));
        bytes.extend(ack(3, b"wrong key"));
        let (a, b) = bytes.split_at(5);
        o.on_received(a);
        o.on_received(b);
        assert_eq!((o.counters().acked.get(), o.counters().rejected_acks.get()), (2, 1));
        assert_eq!((o.pending(), o.counters().pending.get()), (1, 1.0));
        o.on_ack(2); // as the MQTT transport reports a PUBACK
        o.on_ack(2);
        assert_eq!((o.counters().acked.get(), o.pending()), (3, 0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn heartbeats_are_due_on_connect_and_then_every_period_without_bursts() {
        let (mut o, dir) = outbox("heartbeat");
        let mut out = [0u8; MAX_FRAME];
        let t0 = Instant::now();
        assert!(o.heartbeat(t0, &mut out).is_none() && o.heartbeat_due().is_none(), "not connected");
        o.on_connected(t0);
        let n = o.heartbeat(t0, &mut out).expect("due at once");
        let mut scratch = [0u8; MAX_MESSAGE];
        let hb = decode_up(&out[..n], &mut scratch, |_| Some(KEY.to_vec()), true).unwrap();
        assert!(matches!(hb, Received::V2(Up::Heartbeat { device_id: 7, spool_pending: 0, .. })), "{hb:?}");
        let s = Duration::from_secs;
        assert!(o.heartbeat(t0 + s(29), &mut out).is_none());
        assert!(o.heartbeat(t0 + s(30), &mut out).is_some());
        assert_eq!(o.heartbeat_due(), Some(t0 + s(60)));
        // Two periods late: one heartbeat, and the next a whole period later.
        assert!(o.heartbeat(t0 + s(125), &mut out).is_some());
        assert!(o.heartbeat(t0 + s(126), &mut out).is_none());
        assert_eq!(o.heartbeat_due(), Some(t0 + s(155)));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn epoch_and_seq(frame: &[u8]) -> (u32, u32) {
        let mut scratch = [0u8; MAX_MESSAGE];
        match decode_up(frame, &mut scratch, |_| Some(KEY.to_vec()), true).unwrap() {
            Received::V2(Up::Alert(a)) => (a.epoch, a.seq),
            other => panic!("not an alert: {other:?}"),
        }
    }

    /// The site's bits (stale sources, night mode, output delay) ride in every heartbeat beside the spool's.
    #[test]
    fn heartbeats_carry_the_sites_bits() {
        struct Site(std::sync::atomic::AtomicU32);
        impl crate::uplink::ha_link::SiteView for Site {
            fn zone_state(&self, _: usize) -> crate::event::ZoneState {
                crate::event::ZoneState::Normal
            }
            fn source_online(&self, _: usize) -> bool {
                true
            }
            fn diagnostics(&self, _: &mut crate::uplink::ha::Diagnostics) {}
            fn health_bits(&self) -> u32 {
                self.0.load(std::sync::atomic::Ordering::Relaxed)
            }
        }
        let (mut o, dir) = outbox("site-bits");
        let site = Arc::new(Site(std::sync::atomic::AtomicU32::new(wire::health::DELAY)));
        o.set_site(site.clone());
        let t0 = Instant::now();
        o.on_connected(t0);
        assert_eq!(heartbeat_of(&mut o, t0).0, wire::health::DELAY);
        site.0.store(wire::health::STALE | wire::health::NIGHT, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(heartbeat_of(&mut o, t0 + Duration::from_secs(60)).0, wire::health::STALE | wire::health::NIGHT);
        drop(o);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn heartbeat_of(o: &mut Outbox, now: Instant) -> (u32, u32, u32) {
        let mut out = [0u8; MAX_FRAME];
        o.link.as_mut().unwrap().heartbeat_due = now;
        let n = o.heartbeat(now, &mut out).unwrap();
        let mut scratch = [0u8; MAX_MESSAGE];
        match decode_up(&out[..n], &mut scratch, |_| Some(KEY.to_vec()), true).unwrap() {
            Received::V2(Up::Heartbeat { health, spool_pending, spool_dropped, .. }) => {
                (health, spool_pending, spool_dropped)
            }
            other => panic!("not a heartbeat: {other:?}"),
        }
    }

    fn on_disk(dir: &std::path::Path) -> Vec<(u32, (u32, u32))> {
        let (s, _) = Spool::open(dir, 1 << 20, Fsync::Never).unwrap();
        let mut v = Vec::new();
        s.for_each_pending(|seq, f| {
            v.push((seq, epoch_and_seq(f)));
            true
        })
        .unwrap();
        v
    }

    /// Issue 18 defect 1: a spool that cannot be opened (here a file where its folder should be, which stops
    /// root too) used to stop the start. Alerts are held in memory, sent from there, and moved into the spool
    /// in order once it opens.
    #[test]
    fn without_a_spool_alerts_are_held_in_memory_sent_and_moved_into_it_once_it_opens() {
        let dir = std::env::temp_dir().join(format!("ember-outbox-nospool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::write(&dir, b"in the way").unwrap();
        let spool = Spool::open(&dir, 1 << 20, Fsync::Never).map(|s| s.0).map_err(|e| e.to_string());
        assert!(spool.is_err());
        let mut o = with_spool(spool, &dir, 1 << 20);
        assert!(o.trouble().is_some());
        assert_eq!(o.counters().spool_trouble.get(), 1.0);
        let t0 = Instant::now();
        assert!(o.on_transition(&transition(ZoneState::PreAlarm)).is_none(), "not connected");
        o.on_transition(&transition(ZoneState::Alarm));
        assert_eq!((o.in_memory(), o.pending(), o.counters().in_memory.get()), (2, 2, 2.0));
        o.on_connected(t0);
        let sent = all_unsent(&mut o, 64);
        let ids: Vec<(u32, u32)> = sent.iter().map(|(_, f)| epoch_and_seq(f)).collect();
        let memory_epoch = ids[0].0;
        assert!(memory_epoch >= 0x8000_0000, "a memory epoch is apart from every spool epoch");
        assert_eq!(ids, [(memory_epoch, 1), (memory_epoch, 2)]);
        assert_eq!(heartbeat_of(&mut o, t0), (wire::health::SPOOL, 2, 0));
        o.on_ack(1);
        let f = o.on_transition(&transition(ZoneState::Normal)).expect("sent at once from memory");
        assert_eq!(epoch_and_seq(f.bytes()), (memory_epoch, 3));
        // Still in the way: the retry fails and backs off.
        o.maintain(t0 + Duration::from_secs(60));
        assert!(o.trouble().is_some());
        std::fs::remove_file(&dir).unwrap();
        o.maintain(t0 + Duration::from_secs(120));
        assert_eq!((o.trouble(), o.in_memory(), o.pending()), (None, 0, 2));
        assert_eq!(o.counters().spool_trouble.get(), 0.0);
        // Moved in order, with the bytes that were sent: a resend after a restart is a duplicate the collector
        // recognises, never a new alert.
        assert_eq!(on_disk(&dir), [(2, (memory_epoch, 2)), (3, (memory_epoch, 3))]);
        let f = o.on_transition(&transition(ZoneState::Alarm)).expect("caught up");
        let (epoch, seq) = epoch_and_seq(f.bytes());
        assert!(epoch < 0x8000_0000 && seq == 4, "spooled again: ({epoch}, {seq})");
        // The retry at 60 s failed after the last heartbeat: the next one still says so, once.
        assert_eq!(heartbeat_of(&mut o, t0).0, wire::health::SPOOL);
        assert_eq!(heartbeat_of(&mut o, t0).0, 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A full disk used to clear its trouble at the first retry after the collector had acknowledged what
    /// memory held (nothing left to write, so nothing failed), and raise it again at the next alert: /health
    /// and the heartbeats flapped and, between alerts, said all was well. The retry now probes the disk.
    #[test]
    fn a_disk_that_still_refuses_writes_stays_in_trouble_once_memory_is_acknowledged() {
        let (mut o, dir) = outbox("still-full");
        o.on_transition(&transition(ZoneState::Alarm));
        drop(o);
        // Reopened, the spool starts a new segment at its next append; a folder in its place refuses it.
        let (spool, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let mut o = with_spool(Ok(spool), &dir, 1 << 20);
        let blocker = dir.join(format!("{:016}.seg", 2));
        std::fs::create_dir_all(&blocker).unwrap();
        let t0 = Instant::now();
        o.on_connected(t0);
        all_unsent(&mut o, 64);
        let f = o.on_transition(&transition(ZoneState::Normal)).expect("sent from memory");
        assert!(o.trouble().is_some());
        o.on_ack(1);
        o.on_ack(f.seq);
        assert_eq!((o.in_memory(), o.pending()), (0, 0));
        for minute in 1..=3 {
            o.maintain(t0 + Duration::from_secs(60 * minute));
            assert!(o.trouble().is_some(), "still refused after {minute} min");
            assert_eq!(o.counters().spool_trouble.get(), 1.0);
            assert_eq!(heartbeat_of(&mut o, t0).0, wire::health::SPOOL);
        }
        std::fs::remove_dir(&blocker).unwrap();
        o.maintain(t0 + Duration::from_secs(600));
        assert_eq!((o.trouble(), o.counters().spool_trouble.get()), (None, 0.0));
        // The probe leaves nothing behind: the segment it opened is empty, and the next alert is spooled.
        assert_eq!(std::fs::metadata(&blocker).unwrap().len(), 0);
        let f = o.on_transition(&transition(ZoneState::Alarm)).expect("sent");
        assert!(epoch_and_seq(f.bytes()).0 < 0x8000_0000, "spooled, not held");
        assert_eq!(on_disk(&dir).len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 18 defect 2: when the spool stops taking records (here a folder where its next segment must go,
    /// as on a full or read-only disk), alerts are still sent, and the memory queue's overflow is counted and
    /// reported in heartbeats.
    #[test]
    fn alerts_the_spool_cannot_take_are_still_sent_and_overflow_is_counted() {
        let (mut o, dir) = outbox("stuck");
        for _ in 0..10 {
            o.on_transition(&transition(ZoneState::Alarm));
        }
        drop(o);
        // Reopened, the spool starts a new segment at its next append: that is where it gets stuck.
        let (spool, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let spool_epoch = spool.epoch();
        let mut o = with_spool(Ok(spool), &dir, 1 << 20);
        std::fs::create_dir_all(dir.join(format!("{:016}.seg", 2))).unwrap();
        let t0 = Instant::now();
        o.on_connected(t0);
        assert_eq!(all_unsent(&mut o, 64).len(), 10);
        let mut sent = Vec::new();
        for _ in 0..100 {
            let f = o.on_transition(&transition(ZoneState::Alarm)).expect("every alert goes out");
            sent.push(epoch_and_seq(f.bytes()));
        }
        assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), (11..=110).collect::<Vec<_>>());
        assert!(sent.iter().all(|s| s.0 != spool_epoch && s.0 >= 0x8000_0000), "held alerts: the memory epoch");
        assert_eq!(o.in_memory(), 100);
        assert!(o.trouble().is_some());
        for seq in 1..=110 {
            o.on_ack(seq);
        }
        assert_eq!((o.pending(), o.counters().acked.get()), (0, 110));
        o.on_disconnected();
        let n = MEMORY_ALERTS + 76;
        for _ in 0..n {
            o.on_transition(&transition(ZoneState::PreAlarm));
        }
        assert_eq!((o.in_memory(), o.lost(), o.counters().lost.get()), (MEMORY_ALERTS, 76, 76));
        o.on_connected(t0);
        let both = wire::health::SPOOL | wire::health::LOSS;
        assert_eq!(heartbeat_of(&mut o, t0), (both, MEMORY_ALERTS as u32, 76));
        o.on_disconnected();
        let health = crate::telemetry::Health::new();
        o.set_part(health.register("uplink", None));
        assert!(
            health.failing(t0)[0].starts_with("uplink (trouble: alert spool: cannot write"),
            "{:?}",
            health.failing(t0)
        );
        std::fs::remove_dir(dir.join(format!("{:016}.seg", 2))).unwrap();
        o.maintain(t0 + Duration::from_secs(60));
        assert_eq!((o.trouble(), o.in_memory(), o.pending()), (None, 0, MEMORY_ALERTS));
        let disk = on_disk(&dir);
        assert_eq!(disk.len(), MEMORY_ALERTS);
        assert_eq!(disk[0].0, 110 + 76 + 1, "the oldest were the ones lost");
        assert!(disk.windows(2).all(|w| w[1].0 == w[0].0 + 1 && w[0].0 == w[0].1.1));
        // The spool is well again, but the loss stays in TROUBLE until the backlog is delivered.
        assert_eq!(
            health.failing(t0),
            ["uplink (trouble: 76 alerts lost since start; clears once every pending alert is acknowledged)"]
        );
        o.on_connected(t0);
        assert_eq!(heartbeat_of(&mut o, t0).0, wire::health::LOSS);
        for (seq, _) in all_unsent(&mut o, usize::MAX) {
            o.on_ack(seq);
        }
        assert!(health.failing(t0).is_empty(), "{:?} pending {}", health.failing(t0), o.pending());
        assert_eq!(heartbeat_of(&mut o, t0), (0, 0, 76), "the count stays, the trouble clears");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 18 defect 2: a spool folder deleted under the running appliance used to take its pending alerts
    /// with it at the next restart. They are still readable through the open segments: they go to memory and
    /// into a new folder, under their own epoch and numbers.
    #[test]
    fn a_deleted_spool_folder_is_noticed_and_its_alerts_rewritten() {
        let (mut o, dir) = outbox("deleted");
        let epoch = o.spool.as_ref().unwrap().epoch();
        for _ in 0..3 {
            o.on_transition(&transition(ZoneState::Alarm));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        o.maintain(Instant::now());
        assert_eq!((o.trouble(), o.in_memory(), o.pending(), o.lost()), (None, 0, 3, 0));
        assert_eq!(on_disk(&dir), [(1, (epoch, 1)), (2, (epoch, 2)), (3, (epoch, 3))]);
        o.on_connected(Instant::now());
        assert_eq!(all_unsent(&mut o, 64).len(), 3);
        assert_eq!(o.on_transition(&transition(ZoneState::Normal)).map(|f| f.seq), Some(4));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_refused_spooled_alert_stays_first_in_line_before_those_held_in_memory() {
        let (mut o, dir) = outbox("refused");
        o.on_transition(&transition(ZoneState::Alarm));
        o.on_transition(&transition(ZoneState::Normal));
        drop(o);
        let (spool, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let mut o = with_spool(Ok(spool), &dir, 1 << 20);
        std::fs::create_dir_all(dir.join(format!("{:016}.seg", 2))).unwrap();
        o.on_transition(&transition(ZoneState::Alarm));
        o.on_transition(&transition(ZoneState::Normal));
        assert_eq!((o.pending(), o.in_memory()), (4, 2));
        o.on_connected(Instant::now());
        let mut calls = 0;
        let n = o
            .unsent(64, |_, _| {
                calls += 1;
                calls > 1
            })
            .unwrap();
        assert_eq!((n, calls), (0, 1), "nothing is handed over past a refusal");
        assert_eq!(all_unsent(&mut o, 64).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A spool that could not be read at start comes back holding records numbered past the alerts held in
    /// memory: they are renumbered under the memory epoch, above the spool's numbers, and nothing clashes.
    #[test]
    fn held_alerts_are_renumbered_when_the_spool_comes_back_with_newer_records() {
        let base = std::env::temp_dir().join(format!("ember-outbox-renumber-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let (dir, elsewhere) = (base.join("spool"), base.join("elsewhere"));
        std::fs::write(&dir, b"in the way").unwrap();
        let mut o = with_spool(Err("in the way".into()), &dir, 1 << 20);
        o.on_transition(&transition(ZoneState::Alarm));
        o.on_transition(&transition(ZoneState::Normal));
        let (mut other, _) = Spool::open(&elsewhere, 1 << 20, Fsync::Never).unwrap();
        for _ in 0..5 {
            other
                .append(|_, buf| {
                    buf[..4].copy_from_slice(b"prev");
                    Some(4)
                })
                .unwrap();
        }
        let old_epoch = other.epoch();
        drop(other);
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&elsewhere, &dir).unwrap();
        o.maintain(Instant::now() + Duration::from_secs(60));
        assert_eq!((o.trouble(), o.in_memory(), o.pending()), (None, 0, 7));
        let (s, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let mut got = Vec::new();
        s.for_each_pending(|seq, f| {
            got.push((seq, if f == b"prev" { (old_epoch, seq) } else { epoch_and_seq(f) }));
            true
        })
        .unwrap();
        let m = o.memory_epoch;
        assert_eq!(got[..5].iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(got[5..], [(6, (m, 6)), (7, (m, 7))]);
        let _ = std::fs::remove_dir_all(base);
    }
}
