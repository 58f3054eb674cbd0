//! The control-room receiver for the TCP transport (`ember-tools collect`, and in-process for simulated
//! sites): decodes frames of every supported version, verifies their tags with the device's key, acknowledges
//! each alert by sequence number and drops duplicates — a retransmission or a replayed frame — so each alert
//! has exactly one effect; writes one JSON line per alert and heartbeat. With `--out`, the de-duplication
//! state is recovered from that file at start, so a collector restart does not print anything twice.
//! Bad frames are counted by reason and skipped; the connection and the collector keep running.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Received, Split, Up, WireError};
use crate::event::{ZoneState, evidence};
use crate::telemetry::log_limit::{LogLimit, held_back};
use crate::telemetry::{Counter, Gauge, Registry};

/// Reads a key file: hex text (as `openssl rand -hex 32` writes) or raw bytes.
pub fn read_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let t = text.trim();
    if t.len() >= 32 && t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok((0..t.len()).step_by(2).filter_map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok()).collect())
    } else if bytes.is_empty() {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "key file is empty"))
    } else {
        Ok(bytes)
    }
}

/// Per-device keys from a folder of `<device_id>.key` files.
pub fn load_keys(dir: &Path) -> std::io::Result<HashMap<u32, Vec<u8>>> {
    let mut keys = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let Some(id) =
            p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".key")).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        keys.insert(id, read_key(&p)?);
    }
    Ok(keys)
}

/// Which sequence numbers of one (device, epoch) were seen: everything up to `floor`, plus a set above it.
/// Alerts can arrive out of order (an MQTT broker redelivers queued ones after newer ones), so a high-water
/// mark is not enough. The set is bounded: holes more than `WINDOW` below the newest seq (alerts the
/// appliance's full spool dropped) are given up on and folded into `floor`.
#[derive(Debug, Default)]
struct Seen {
    floor: u32,
    above: std::collections::BTreeSet<u32>,
}

const WINDOW: u32 = 1 << 16;

impl Seen {
    /// Records `seq`; false if it was already seen.
    fn insert(&mut self, seq: u32) -> bool {
        if seq <= self.floor || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        if let Some(&top) = self.above.last()
            && top.saturating_sub(self.floor) > WINDOW
        {
            let new_floor = top - WINDOW;
            self.above.retain(|s| *s > new_floor);
            self.floor = new_floor;
            while self.above.remove(&(self.floor + 1)) {
                self.floor += 1;
            }
        }
        true
    }
}

/// How many appliance connections a collector keeps, and for how long a quiet one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once (further capped by the process's file-descriptor limit, less headroom).
    pub max_connections: usize,
    /// A new connection must deliver one valid frame within this (an appliance sends a heartbeat at once).
    pub first_frame: Duration,
    /// A connection that has delivered frames is closed after this long without one (heartbeats keep it open).
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 512, first_frame: Duration::from_secs(10), idle: Duration::from_secs(300) }
    }
}

/// File descriptors kept free for the output file, the listener, logs and the runtime.
const FD_HEADROOM: u64 = 64;

/// One connection's place: whether it has proved itself with a valid frame, and how to close it.
struct Slot {
    id: u64,
    since: Instant,
    verified: Arc<AtomicBool>,
    close: CancellationToken,
}

/// An alert received later than this after its decision is marked `"late": true`.
pub const LATE_AFTER_MS: u64 = 60_000;

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct Collector {
    sink: Mutex<Box<dyn Write + Send>>,
    /// Sequence numbers seen per (device, epoch).
    seen: Mutex<HashMap<(u32, u32), Seen>>,
    keys: Option<HashMap<u32, Vec<u8>>>,
    registry: Arc<Registry>,
    rejected: Mutex<HashMap<&'static str, Counter>>,
    pub alerts: Counter,
    pub heartbeats: Counter,
    pub duplicates: Counter,
    /// Alerts received more than `LATE_AFTER_MS` after their decision (a replayed spool).
    pub late: Counter,
    /// Alerts devices reported lost in their heartbeats.
    pub lost: Counter,
    spool_trouble: Gauge,
    /// Per device: the loss count and spool trouble its last heartbeat reported.
    reported: Mutex<HashMap<u32, (u32, bool)>>,
    /// Devices whose last heartbeat said their wall clock is not synchronised.
    clock_unsynced: Mutex<std::collections::HashSet<u32>>,
    limits: Limits,
    slots: Mutex<Vec<Slot>>,
    next_slot: AtomicU64,
    refused: Counter,
    evicted: Counter,
    timed_out: Counter,
    warn_frames: LogLimit,
    warn_accept: LogLimit,
}

fn state_label(level: u8) -> &'static str {
    ZoneState::ALL.into_iter().find(|s| s.level() == level).map(ZoneState::label).unwrap_or("unknown")
}

/// The fields every alert version has, as the collector writes them.
fn alert_json(version: u8, epoch: u32, a: &wire::AlertV1<'_>) -> serde_json::Value {
    serde_json::json!({
        "type": "alert",
        "version": version,
        "device_id": a.device_id,
        "epoch": epoch,
        "seq": a.seq,
        "ts_ms": a.ts_ms,
        "zone": a.zone,
        "from": state_label(a.from),
        "to": state_label(a.to),
        "sources": evidence::names(a.sources).collect::<Vec<_>>(),
        "vision_score": a.vision_milli as f64 / 1000.0,
        "max_c": (a.max_deci_c != wire::UNKNOWN_DECI_C).then(|| a.max_deci_c as f64 / 10.0),
        "smoke_pct": (a.smoke_deci_pct != wire::UNKNOWN_DECI_PCT).then(|| a.smoke_deci_pct as f64 / 10.0),
    })
}

fn reason(e: &WireError) -> &'static str {
    match e {
        WireError::Empty => "empty",
        WireError::Version(_) => "version",
        WireError::Cobs => "framing",
        WireError::Body(_) => "body",
        WireError::TooLong => "too_long",
        WireError::BadTag => "bad_tag",
        WireError::NoTag => "truncated",
        WireError::Unauthenticated => "unauthenticated",
    }
}

impl Collector {
    pub fn new(reg: &Arc<Registry>, sink: Box<dyn Write + Send>, keys: Option<HashMap<u32, Vec<u8>>>) -> Arc<Self> {
        Self::with_limits(reg, sink, keys, Limits::default())
    }

    pub fn with_limits(
        reg: &Arc<Registry>,
        sink: Box<dyn Write + Send>,
        keys: Option<HashMap<u32, Vec<u8>>>,
        limits: Limits,
    ) -> Arc<Self> {
        Arc::new(Collector {
            limits,
            slots: Mutex::new(Vec::new()),
            next_slot: AtomicU64::new(0),
            refused: reg.counter(
                "ember_collector_connections_refused_total",
                "Connections closed at once: every slot held by connections that had sent valid frames.",
                &[],
            ),
            evicted: reg.counter(
                "ember_collector_connections_evicted_total",
                "Connections that had sent no valid frame yet, closed to make room for a new one.",
                &[],
            ),
            timed_out: reg.counter(
                "ember_collector_connections_timed_out_total",
                "Connections closed for sending no valid frame in time (first frame or idle timeout).",
                &[],
            ),
            warn_frames: LogLimit::new(WARN_EVERY),
            warn_accept: LogLimit::new(WARN_EVERY),
            sink: Mutex::new(sink),
            seen: Mutex::new(HashMap::new()),
            keys,
            registry: Arc::clone(reg),
            rejected: Mutex::new(HashMap::new()),
            alerts: reg.counter("ember_collector_alerts_total", "Alerts accepted by the collector.", &[]),
            heartbeats: reg.counter("ember_collector_heartbeats_total", "Heartbeats received by the collector.", &[]),
            late: reg.counter(
                "ember_collector_late_alerts_total",
                "Alerts received more than 60 s after their decision (spool replay after an outage), marked late.",
                &[],
            ),
            duplicates: reg.counter(
                "ember_collector_duplicates_total",
                "Alerts already seen (retransmitted or replayed): acknowledged, not written again.",
                &[],
            ),
            lost: reg.counter(
                "ember_collector_device_lost_alerts_total",
                "Alerts the devices report lost in their heartbeats (full spool or memory queue, vanished spool).",
                &[],
            ),
            spool_trouble: reg.gauge(
                "ember_collector_devices_spool_trouble",
                "Devices whose last heartbeat reports that their alert spool cannot be written.",
                &[],
            ),
            reported: Mutex::new(HashMap::new()),
            clock_unsynced: Mutex::new(Default::default()),
        })
    }

    /// Seeds the de-duplication state from a JSON-lines file this collector wrote before.
    pub fn recover_from(&self, path: &Path) -> std::io::Result<usize> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for line in std::io::BufReader::new(f).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
            if v["type"] != "alert" {
                continue;
            }
            let (Some(d), Some(s)) = (v["device_id"].as_u64(), v["seq"].as_u64()) else { continue };
            let e = v["epoch"].as_u64().unwrap_or(0);
            seen.entry((d as u32, e as u32)).or_default().insert(s as u32);
            n += 1;
        }
        Ok(n)
    }

    pub fn rejected(&self, reason: &'static str) -> u64 {
        self.rejected.lock().unwrap_or_else(|p| p.into_inner()).get(reason).map(Counter::get).unwrap_or(0)
    }

    fn reject(&self, why: &'static str) {
        let mut m = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(why)
            .or_insert_with(|| {
                self.registry.counter(
                    "ember_collector_rejected_total",
                    "Frames the collector rejected, by reason.",
                    &[("reason", why)],
                )
            })
            .inc();
    }

    fn emit(&self, v: serde_json::Value) {
        // One write per line, so a crash leaves at most one torn line (which `recover_from` skips).
        let mut line = v.to_string();
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.flush();
    }

    /// True if (device, epoch, seq) is new; records it.
    fn fresh(&self, device: u32, epoch: u32, seq: u32) -> bool {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).entry((device, epoch)).or_default().insert(seq)
    }

    /// Handles one decoded message received at `now_ms`; returns (device, ack) to send, if any.
    fn handle(&self, msg: Received<'_>, ext: Option<wire::AlertExt>, now_ms: u64) -> Option<(u32, Down)> {
        let (device, epoch, seq, alert) = match msg {
            Received::V2(Up::Alert(a)) => {
                let mut value = alert_json(
                    2,
                    a.epoch,
                    &wire::AlertV1 {
                        device_id: a.device_id,
                        seq: a.seq,
                        ts_ms: a.ts_ms,
                        zone: a.zone,
                        from: a.from,
                        to: a.to,
                        sources: a.sources,
                        vision_milli: a.vision_milli,
                        max_deci_c: a.max_deci_c,
                        smoke_deci_pct: a.smoke_deci_pct,
                    },
                );
                value["rise_c_per_min"] = serde_json::json!(
                    (a.rise_deci_c_min != wire::UNKNOWN_DECI_C).then(|| a.rise_deci_c_min as f64 / 10.0)
                );
                value["reason"] = serde_json::json!(crate::event::reason::label(a.flags >> 2));
                value["test"] = serde_json::json!(a.flags & wire::flags::TEST != 0);
                value["operator"] = serde_json::json!(a.flags & wire::flags::OPERATOR != 0);
                // The control room's handle on the alarm's picture: GET /api/events/{event_id}/snapshot.jpg.
                if let Some(x) = ext {
                    if let Some(id) = x.event_id {
                        value["event_id"] = serde_json::json!(id);
                    }
                    if let Some((camera, frame)) = x.frame {
                        value["camera"] = serde_json::json!(camera);
                        value["frame"] = serde_json::json!(frame);
                    }
                }
                (a.device_id, a.epoch, a.seq, value)
            }
            Received::V1(wire::UpV1::Alert(a)) => (a.device_id, 0, a.seq, alert_json(1, 0, &a)),
            Received::V2(Up::Heartbeat { device_id, epoch, ts_ms, health, spool_pending, spool_dropped }) => {
                self.heartbeats.inc();
                let trouble = health & wire::health::SPOOL != 0;
                self.note_losses(device_id, spool_dropped, trouble);
                let bit = |b: u32| health & b != 0;
                {
                    let mut u = self.clock_unsynced.lock().unwrap_or_else(|p| p.into_inner());
                    if bit(wire::health::CLOCK) {
                        u.insert(device_id);
                    } else {
                        u.remove(&device_id);
                    }
                }
                self.emit(serde_json::json!({
                    "type": "heartbeat", "device_id": device_id, "epoch": epoch, "ts_ms": ts_ms, "health": health,
                    "spool_pending": spool_pending, "spool_dropped": spool_dropped, "spool_trouble": trouble,
                    "sources_stale": bit(wire::health::STALE), "night": bit(wire::health::NIGHT),
                    "delay_on": bit(wire::health::DELAY), "clock_unsynced": bit(wire::health::CLOCK),
                    "received_ms": now_ms,
                }));
                return None;
            }
            Received::V1(wire::UpV1::Heartbeat { device_id, ts_ms, health }) => {
                self.heartbeats.inc();
                self.emit(
                    serde_json::json!({"type": "heartbeat", "device_id": device_id, "ts_ms": ts_ms, "health": health}),
                );
                return None;
            }
        };
        if self.fresh(device, epoch, seq) {
            self.alerts.inc();
            let mut alert = alert;
            // A spool replayed after an outage delivers decisions made long ago: they keep their own time, and
            // the control room must not take them for what is happening now.
            let late = alert["ts_ms"].as_u64().is_some_and(|ts| now_ms > ts.saturating_add(LATE_AFTER_MS));
            if late {
                self.late.inc();
            }
            alert["received_ms"] = serde_json::json!(now_ms);
            alert["late"] = serde_json::json!(late);
            // Its `ts_ms` (and so `late`) is the device's guess while its clock is not synchronised.
            if self.clock_unsynced.lock().unwrap_or_else(|p| p.into_inner()).contains(&device) {
                alert["device_clock_unsynced"] = serde_json::json!(true);
            }
            self.emit(alert);
        } else {
            self.duplicates.inc();
            self.reject("replayed");
        }
        Some((device, Down::Ack { seq }))
    }

    /// Counts and logs what a heartbeat says was lost since the last one. A device counts from its start, so
    /// a count lower than the last one means it restarted and all of it is new.
    fn note_losses(&self, device: u32, lost: u32, trouble: bool) {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let (before, was_trouble) = reported.insert(device, (lost, trouble)).unwrap_or((0, false));
        let new = if lost >= before { lost - before } else { lost };
        if new > 0 {
            self.lost.add(u64::from(new));
            log::error!("device {device} reports {new} alerts lost ({lost} since it started)");
        }
        if trouble != was_trouble {
            if trouble {
                log::error!("device {device} reports that its alert spool cannot be written (alerts held in memory)");
            } else {
                log::warn!("device {device} reports its alert spool writable again");
            }
            let n = reported.values().filter(|r| r.1).count();
            self.spool_trouble.set(n as f64);
        }
    }

    /// Decodes, verifies and handles one frame (a COBS frame, with or without its terminator); returns the
    /// acknowledgement to send for it, if any. Bad frames are counted by reason.
    pub fn receive(&self, frame: &[u8]) -> Option<(u32, Down)> {
        self.receive_checked(frame).1
    }

    /// `receive` at a given wall-clock time (ms since the Unix epoch), which decides whether an alert is late.
    pub fn receive_at(&self, frame: &[u8], now_ms: u64) -> Option<(u32, Down)> {
        self.receive_checked_at(frame, now_ms).1
    }

    /// `receive`, and whether the frame was valid (a heartbeat is valid and needs no ack).
    fn receive_checked(&self, frame: &[u8]) -> (bool, Option<(u32, Down)>) {
        self.receive_checked_at(frame, unix_now_ms())
    }

    fn receive_checked_at(&self, frame: &[u8], now_ms: u64) -> (bool, Option<(u32, Down)>) {
        let key_of = |d: u32| self.keys.as_ref().and_then(|k| k.get(&d).cloned());
        let mut scratch = [0u8; MAX_MESSAGE];
        match wire::decode_up_ext(frame, &mut scratch, key_of, self.keys.is_some()) {
            Ok((msg, ext)) => (true, self.handle(msg, ext, now_ms)),
            Err(e) => {
                self.reject(reason(&e));
                if let Some(held) = self.warn_frames.allow(Instant::now()) {
                    log::warn!("collector: frame rejected: {e}{}", held_back(held));
                }
                (false, None)
            }
        }
    }

    /// Serves one appliance connection until it closes, or until it stays quiet too long: a new connection
    /// must send a valid frame within `Limits::first_frame`, a proven one one within `Limits::idle`.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) -> std::io::Result<()> {
        self.serve_tracked(stream, &AtomicBool::new(false)).await
    }

    async fn serve_tracked<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        verified: &AtomicBool,
    ) -> std::io::Result<()> {
        let mut splitter = FrameSplitter::default();
        let mut buf = [0u8; 4096];
        let mut acks: Vec<(u32, Down)> = Vec::with_capacity(64);
        let key_of = |d: u32| self.keys.as_ref().and_then(|k| k.get(&d).cloned());
        let mut deadline = tokio::time::Instant::now() + self.limits.first_frame;
        loop {
            let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => {
                    self.timed_out.inc();
                    return Ok(());
                }
            };
            if n == 0 {
                return Ok(());
            }
            let mut valid = false;
            splitter.feed(&buf[..n], |s| match s {
                Split::Frame(f) => {
                    let (ok, ack) = self.receive_checked(f);
                    valid |= ok;
                    acks.extend(ack);
                }
                Split::Oversize => {
                    self.reject("oversize");
                    if let Some(held) = self.warn_frames.allow(Instant::now()) {
                        log::warn!("collector: oversize frame rejected{}", held_back(held));
                    }
                }
            });
            if valid {
                verified.store(true, Ordering::Relaxed);
                deadline = tokio::time::Instant::now() + self.limits.idle;
            }
            let mut out = [0u8; MAX_FRAME];
            let mut batch: Vec<u8> = Vec::with_capacity(acks.len() * 32);
            for (device, ack) in acks.drain(..) {
                let key = key_of(device).unwrap_or_default();
                if let Ok(n) = wire::encode(&ack, &key, &mut out) {
                    batch.extend_from_slice(&out[..n]);
                }
            }
            if !batch.is_empty() {
                stream.write_all(&batch).await?;
            }
        }
    }

    /// Consumes alerts from an MQTT broker instead of TCP: a persistent session (so the broker queues alerts
    /// while the collector is down) and manual acknowledgements, sent only after the alert is written.
    pub async fn consume_mqtt(
        self: Arc<Self>,
        broker: String,
        topic: String,
        client_id: String,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let (host, port) = super::mqtt::split_host_port(&broker)?;
        let ms = std::time::Duration::from_millis;
        let mut backoff = crate::retry::Backoff::new(ms(200), ms(5000));
        loop {
            let mut connected_at = None;
            let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
            opts.set_clean_session(false).set_manual_acks(true).set_keep_alive(std::time::Duration::from_secs(10));
            let (client, mut events) = AsyncClient::new(opts, 256);
            // Acks the client's request queue could not take yet. Awaiting here instead would deadlock: the
            // queue is only drained by `poll`, in this same loop. Unsent acks stall the broker's delivery window.
            let mut unacked: std::collections::VecDeque<rumqttc::Publish> = std::collections::VecDeque::new();
            let lost = loop {
                while let Some(p) = unacked.front() {
                    if client.try_ack(p).is_err() {
                        break;
                    }
                    unacked.pop_front();
                }
                let ev = tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = client.try_disconnect();
                        return Ok(());
                    }
                    ev = events.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected_at = Some(tokio::time::Instant::now());
                        log::info!("collector: connected to MQTT broker {broker}, subscribing to {topic}");
                        if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                            log::warn!("collector: subscribe failed: {e}");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/alert") || p.topic.ends_with("/heartbeat") {
                            let _ = self.receive(&p.payload);
                        }
                        unacked.push_back(p);
                    }
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            let retry = backoff.failed(connected_at.map(|t| t.elapsed()));
            let n = retry.failures;
            log::log!(
                retry.level(log::Level::Warn),
                "collector: MQTT connection to {broker} lost: {lost} (failure {n} in a row)"
            );
            if !crate::retry::wait(retry.delay, &stop, None).await {
                return Ok(());
            }
        }
    }

    /// Accepts appliance connections. Slots are bounded (`Limits::max_connections`, within the fd budget); when
    /// all are taken, the oldest connection that has not sent a valid frame yet makes room, so idle or junk
    /// connections cannot lock real appliances out. Only when every slot holds a proven appliance is a new
    /// connection refused.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        let cap = self.limits.max_connections.min(fd_budget()).max(1);
        if cap < self.limits.max_connections {
            log::warn!("collector: {cap} connections at most (the file-descriptor limit leaves no room for more)");
        }
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        if let Some(held) = self.warn_accept.allow(Instant::now()) {
                            log::warn!("collector: accept failed: {e}{}", held_back(held));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some((id, verified, close)) = self.take_slot(cap) else {
                self.refused.inc();
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = close.cancelled() => {}
                    r = me.serve_tracked(stream, &verified) => if let Err(e) = r {
                        log::info!("collector: connection from {peer} ended: {e}");
                    }
                }
                me.slots.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.id != id);
            });
        }
    }

    /// A slot for a new connection, evicting the oldest unproven one if all are taken; `None` to refuse.
    fn take_slot(&self, cap: usize) -> Option<(u64, Arc<AtomicBool>, CancellationToken)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= cap {
            let oldest = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.verified.load(Ordering::Relaxed))
                .min_by_key(|(_, s)| s.since)
                .map(|(i, _)| i)?;
            slots.swap_remove(oldest).close.cancel();
            self.evicted.inc();
        }
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let (verified, close) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
        slots.push(Slot { id, since: Instant::now(), verified: Arc::clone(&verified), close: close.clone() });
        Some((id, verified, close))
    }
}

const WARN_EVERY: Duration = Duration::from_secs(5);

/// Connections the file-descriptor limit allows, after raising the soft limit to the hard one (the usual 1024
/// soft limit is a default, not a budget) and keeping headroom.
// rlim_t is u64 here and u32 on 32-bit ARM: the conversion is needed there and a no-op here.
#[allow(clippy::useless_conversion)]
fn fd_budget() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit; the calls touch only this process's limits.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return usize::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    usize::try_from(u64::from(lim.rlim_cur).saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod seen_tests {
    use super::*;

    #[test]
    fn out_of_order_arrivals_are_new_and_repeats_are_not() {
        let mut s = Seen::default();
        assert!(s.insert(2) && s.insert(3) && s.insert(1));
        assert!(!s.insert(2) && !s.insert(1));
        assert_eq!((s.floor, s.above.len()), (3, 0));
        assert!(s.insert(10) && s.insert(5) && !s.insert(10));
        // A permanent hole (dropped by a full spool) is given up on once far enough behind.
        assert!(s.insert(10 + WINDOW + 1));
        assert!(s.floor >= 11 && s.above.len() <= 2);
    }

    /// Issue 18 defect 2: the losses and spool trouble a device reports in its heartbeats are counted and
    /// written out. A device counts from its start, so a lower count is a restart and all new.
    #[test]
    fn reported_losses_and_spool_trouble_are_counted_and_written() {
        let reg = Registry::new();
        let sink = Sink::default();
        let c = Collector::new(&reg, Box::new(sink.clone()), None);
        let mut out = [0u8; MAX_FRAME];
        for (device, health, dropped) in
            [(7, 0, 3), (7, wire::health::SPOOL, 5), (8, wire::health::SPOOL, 1), (7, 0, 2)]
        {
            let hb = Up::Heartbeat {
                device_id: device,
                epoch: 1,
                ts_ms: 1,
                health,
                spool_pending: 0,
                spool_dropped: dropped,
            };
            let n = wire::encode(&hb, &[], &mut out).unwrap();
            assert!(c.receive(&out[..n]).is_none());
        }
        assert_eq!(c.lost.get(), 3 + 2 + 1 + 2);
        assert_eq!(c.spool_trouble.get(), 1.0, "device 8 is still in trouble, 7 no longer");
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let troubles: Vec<bool> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["spool_trouble"].as_bool().unwrap())
            .collect();
        assert_eq!(troubles, [false, true, true, false]);
    }

    /// The collector's output, kept for the test to read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// The JSON lines written so far.
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    /// Device 3's alert number `seq`, decided at `ts_ms`, as a frame.
    fn alert_frame(seq: u32, ts_ms: u64) -> Vec<u8> {
        let a = wire::Alert {
            device_id: 3,
            epoch: 1,
            seq,
            ts_ms,
            zone: "z",
            from: 0,
            to: 3,
            sources: 0,
            vision_milli: 0,
            max_deci_c: wire::UNKNOWN_DECI_C,
            rise_deci_c_min: wire::UNKNOWN_DECI_C,
            smoke_deci_pct: wire::UNKNOWN_DECI_PCT,
            flags: 0,
        };
        let mut out = [0u8; MAX_FRAME];
        let n = wire::encode(&Up::Alert(a), &[], &mut out).unwrap();
        out[..n].to_vec()
    }

    /// Device 3's heartbeat with `health` bits, as a frame.
    fn heartbeat_frame(health: u32) -> Vec<u8> {
        let hb = Up::Heartbeat { device_id: 3, epoch: 1, ts_ms: 1, health, spool_pending: 0, spool_dropped: 0 };
        let mut out = [0u8; MAX_FRAME];
        let n = wire::encode(&hb, &[], &mut out).unwrap();
        out[..n].to_vec()
    }

    /// An alert keeps its decision time; one received more than a minute after it (a replayed spool) is
    /// marked late and counted. Heartbeat site bits come out by name.
    #[test]
    fn replayed_alerts_are_marked_late_and_heartbeat_bits_named() {
        let reg = Registry::new();
        let sink = Sink::default();
        let c = Collector::new(&reg, Box::new(sink.clone()), None);
        let decided = 1_733_526_000_000u64;
        for (seq, received) in [(1, decided + 500), (2, decided + LATE_AFTER_MS), (3, decided + LATE_AFTER_MS + 1)] {
            assert!(c.receive_at(&alert_frame(seq, decided), received).is_some());
        }
        assert!(c.receive_at(&heartbeat_frame(wire::health::NIGHT | wire::health::DELAY), decided).is_none());
        let lines = sink.lines();
        let late: Vec<bool> = lines[..3].iter().map(|l| l["late"].as_bool().unwrap()).collect();
        assert_eq!(late, [false, false, true]);
        assert_eq!(lines[2]["ts_ms"], decided, "the decision's own time is kept");
        assert_eq!(lines[2]["received_ms"], decided + LATE_AFTER_MS + 1);
        assert_eq!(c.late.get(), 1);
        // After a heartbeat that says the device's clock is not synchronised, its alerts say so.
        assert!(c.receive_at(&heartbeat_frame(wire::health::CLOCK), decided).is_none());
        assert!(c.receive_at(&alert_frame(4, 0), decided).is_some());
        let lines = sink.lines();
        assert_eq!(lines[4]["clock_unsynced"], true);
        assert_eq!(lines[5]["device_clock_unsynced"], true, "{}", lines[5]);
        assert!(lines[0].get("device_clock_unsynced").is_none());
        let h = &lines[3];
        assert_eq!(
            (h["night"].as_bool(), h["delay_on"].as_bool(), h["sources_stale"].as_bool()),
            (Some(true), Some(true), Some(false))
        );
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use tokio::net::TcpStream;

    fn heartbeat() -> Vec<u8> {
        let mut out = [0u8; MAX_FRAME];
        let hb = Up::Heartbeat { device_id: 7, epoch: 1, ts_ms: 1, health: 0, spool_pending: 0, spool_dropped: 0 };
        let n = wire::encode(&hb, &[], &mut out).unwrap();
        out[..n].to_vec()
    }

    async fn start(limits: Limits) -> (Arc<Collector>, std::net::SocketAddr, CancellationToken) {
        let reg = Registry::new();
        let c = Collector::with_limits(&reg, Box::new(std::io::sink()), None, limits);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&c).serve(listener, stop.clone()));
        (c, addr, stop)
    }

    /// True when the peer closed the connection within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(within, s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn idle_connections_cannot_lock_out_an_appliance() {
        let limits = Limits { max_connections: 4, first_frame: Duration::from_secs(30), idle: Duration::from_secs(30) };
        let (c, addr, stop) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_for("4 slots taken", || c.slots.lock().unwrap().len() == 4).await;
        // A real appliance: heartbeat at once; it gets in by evicting the oldest silent connection.
        let mut appliance = TcpStream::connect(addr).await.unwrap();
        appliance.write_all(&heartbeat()).await.unwrap();
        wait_for("the heartbeat", || c.heartbeats.get() == 1).await;
        assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await, "the oldest idle one makes room");
        assert_eq!(c.evicted.get(), 1);
        // Fill every slot with proven appliances: a further connection is refused, and none of them evicted.
        let mut proven = vec![appliance];
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&heartbeat()).await.unwrap();
            proven.push(s);
        }
        wait_for("4 heartbeats", || c.heartbeats.get() == 4).await;
        let mut late = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut late, Duration::from_secs(5)).await, "refused when every slot is proven");
        assert_eq!(c.refused.get(), 1);
        for s in &mut proven {
            s.write_all(&heartbeat()).await.unwrap();
        }
        wait_for("8 heartbeats", || c.heartbeats.get() == 8).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn silent_and_idle_connections_time_out() {
        let limits =
            Limits { max_connections: 8, first_frame: Duration::from_millis(200), idle: Duration::from_millis(600) };
        let (c, addr, stop) = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut junk = TcpStream::connect(addr).await.unwrap();
        let mut proven = TcpStream::connect(addr).await.unwrap();
        proven.write_all(&heartbeat()).await.unwrap();
        // Junk keeps bytes flowing but never a valid frame: it is closed like a silent one.
        junk.write_all(b"\x01\x02\x00garbage\x00").await.unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
        assert!(closed_within(&mut junk, Duration::from_secs(3)).await);
        // The proven one outlives the first-frame deadline, then times out after `idle` without frames.
        let t = Instant::now();
        assert!(closed_within(&mut proven, Duration::from_secs(5)).await);
        assert!(t.elapsed() >= Duration::from_millis(300), "idle timeout, not the first-frame one");
        wait_for("the slots to empty", || c.slots.lock().unwrap().is_empty()).await;
        assert_eq!(c.timed_out.get(), 3);
        stop.cancel();
    }
}
