//! The uplink's state apart from its transport (rumqtt's `MqttState` beside its `EventLoop`): the spool, the
//! counters and gauges, the send cursor, acknowledgements and heartbeats. Both transports (TCP to the collector,
//! MQTT to a broker) drive it and send exactly the bytes it spooled, so an alert is encoded once. It does no
//! network IO and reads no clock: callers pass `now`.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::spool::{Spool, SpoolError};
use super::wire::{self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Split, Up};
use super::{UplinkCounters, alert, wall_ms};
use crate::event::Transition;

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
    spool: Spool,
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
    pub fn new(
        spool: Spool,
        device_id: u32,
        key: Vec<u8>,
        zone_names: Arc<Vec<String>>,
        heartbeat_every: Duration,
        counters: UplinkCounters,
    ) -> Self {
        let o = Outbox { spool, device_id, key, zone_names, heartbeat_every, counters, link: None };
        o.update_gauges();
        o
    }

    /// Alerts in the spool not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.spool.pending()
    }

    pub fn counters(&self) -> &UplinkCounters {
        &self.counters
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

    /// Spools the alert for `t`. Returns its frame when it should go out now: connected and nothing older is
    /// still to be handed over (otherwise `unsent` brings it in order). A returned frame counts as sent; if the
    /// transport cannot send it after all, it calls `resend_from(frame.seq)`.
    pub fn on_transition(&mut self, t: &Transition) -> Option<Frame> {
        let zone = self.zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
        let (device, epoch, key) = (self.device_id, self.spool.epoch(), &self.key);
        let mut frame = Frame { seq: 0, len: 0, bytes: [0u8; MAX_FRAME] };
        let r = self.spool.append(|seq, buf| {
            let n = wire::encode(&Up::Alert(alert(device, epoch, seq, zone, t)), key, &mut frame.bytes).ok()?;
            buf.get_mut(..n)?.copy_from_slice(&frame.bytes[..n]);
            frame.len = n;
            Some(n)
        });
        self.update_gauges();
        match r {
            Ok(seq) => {
                frame.seq = seq;
                let link = self.link.as_mut().filter(|l| l.caught_up)?;
                link.sent_upto = seq;
                self.counters.sent.inc();
                Some(frame)
            }
            Err(e) => {
                log::error!("alert for zone {zone} could not be spooled: {e}");
                None
            }
        }
    }

    /// Hands spooled alerts not yet given to this connection to `send`, oldest first, at most `room` of them.
    /// `send` returns false when it cannot take one (which stays unsent). Returns how many were handed over;
    /// nothing when not connected.
    pub fn unsent(&mut self, room: usize, mut send: impl FnMut(u32, &[u8]) -> bool) -> Result<usize, SpoolError> {
        let Some(link) = self.link.as_mut().filter(|l| !l.caught_up) else { return Ok(0) };
        let (from, mut handed, mut stopped) = (link.sent_upto, 0usize, false);
        let mut last = from;
        self.spool.for_each_pending(|seq, frame| {
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
        })?;
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

    /// The collector or broker acknowledged `seq`: it leaves the spool.
    pub fn on_ack(&mut self, seq: u32) {
        self.record_ack(seq);
        self.update_gauges();
    }

    fn record_ack(&mut self, seq: u32) {
        match self.spool.ack(seq) {
            Ok(true) => self.counters.acked.inc(),
            Ok(false) => {}
            Err(e) => log::error!("uplink spool cannot record acknowledgement {seq}: {e}"),
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
            epoch: self.spool.epoch(),
            ts_ms: wall_ms(now),
            health: 0,
            spool_pending: self.spool.pending() as u32,
            spool_dropped: self.spool.dropped.min(u32::MAX as u64) as u32,
        };
        wire::encode(&msg, &self.key, out).ok()
    }

    fn update_gauges(&self) {
        self.counters.pending.set(self.spool.pending() as f64);
        self.counters.dropped.set(self.spool.dropped as f64);
        self.counters.spool_bytes.set(self.spool.bytes() as f64);
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
        }
    }

    fn outbox(name: &str) -> (Outbox, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ember-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let names = Arc::new(vec!["hall".to_owned()]);
        (Outbox::new(spool, 7, KEY.to_vec(), names, Duration::from_secs(30), counters()), dir)
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
}
