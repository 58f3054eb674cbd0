//! The control-room receiver for the TCP transport (`ember-edge collect`, and in-process for simulated
//! sites): decodes frames of every supported version, verifies their tags with the device's key, acknowledges
//! each alert by sequence number and drops duplicates — a retransmission or a replayed frame — so each alert
//! has exactly one effect; writes one JSON line per alert and heartbeat. With `--out`, the de-duplication
//! state is recovered from that file at start, so a collector restart does not print anything twice.
//! Bad frames are counted by reason and skipped; the connection and the collector keep running.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Received, Split, Up, WireError};
use crate::event::{ZoneState, evidence};
use crate::telemetry::{Counter, Registry};

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
        Arc::new(Collector {
            sink: Mutex::new(sink),
            seen: Mutex::new(HashMap::new()),
            keys,
            registry: Arc::clone(reg),
            rejected: Mutex::new(HashMap::new()),
            alerts: reg.counter("ember_collector_alerts_total", "Alerts accepted by the collector.", &[]),
            heartbeats: reg.counter("ember_collector_heartbeats_total", "Heartbeats received by the collector.", &[]),
            duplicates: reg.counter(
                "ember_collector_duplicates_total",
                "Alerts already seen (retransmitted or replayed): acknowledged, not written again.",
                &[],
            ),
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

    /// Handles one decoded message; returns (device, ack) to send, if any.
    fn handle(&self, msg: Received<'_>) -> Option<(u32, Down)> {
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
                (a.device_id, a.epoch, a.seq, value)
            }
            Received::V1(wire::UpV1::Alert(a)) => (a.device_id, 0, a.seq, alert_json(1, 0, &a)),
            Received::V2(Up::Heartbeat { device_id, epoch, ts_ms, health, spool_pending, spool_dropped }) => {
                self.heartbeats.inc();
                self.emit(serde_json::json!({
                    "type": "heartbeat", "device_id": device_id, "epoch": epoch, "ts_ms": ts_ms, "health": health,
                    "spool_pending": spool_pending, "spool_dropped": spool_dropped,
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
            self.emit(alert);
        } else {
            self.duplicates.inc();
            self.reject("replayed");
        }
        Some((device, Down::Ack { seq }))
    }

    /// Decodes, verifies and handles one frame (a COBS frame, with or without its terminator); returns the
    /// acknowledgement to send for it, if any. Bad frames are counted by reason.
    pub fn receive(&self, frame: &[u8]) -> Option<(u32, Down)> {
        let key_of = |d: u32| self.keys.as_ref().and_then(|k| k.get(&d).cloned());
        let mut scratch = [0u8; MAX_MESSAGE];
        match wire::decode_up(frame, &mut scratch, key_of, self.keys.is_some()) {
            Ok(msg) => self.handle(msg),
            Err(e) => {
                self.reject(reason(&e));
                log::warn!("collector: frame rejected: {e}");
                None
            }
        }
    }

    /// Serves one appliance connection until it closes.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) -> std::io::Result<()> {
        let mut splitter = FrameSplitter::default();
        let mut buf = [0u8; 4096];
        let mut acks: Vec<(u32, Down)> = Vec::with_capacity(64);
        let key_of = |d: u32| self.keys.as_ref().and_then(|k| k.get(&d).cloned());
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            splitter.feed(&buf[..n], |s| match s {
                Split::Frame(f) => acks.extend(self.receive(f)),
                Split::Oversize => {
                    self.reject("oversize");
                    log::warn!("collector: oversize frame rejected");
                }
            });
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
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
            opts.set_clean_session(false).set_manual_acks(true).set_keep_alive(std::time::Duration::from_secs(10));
            let (client, mut events) = AsyncClient::new(opts, 256);
            // Acks the client's request queue could not take yet. Awaiting here instead would deadlock: the
            // queue is only drained by `poll`, in this same loop. Unsent acks stall the broker's delivery window.
            let mut unacked: std::collections::VecDeque<rumqttc::Publish> = std::collections::VecDeque::new();
            loop {
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
                        delay = std::time::Duration::from_millis(200);
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
                    Err(e) => {
                        log::warn!("collector: MQTT connection to {broker} lost: {e}");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("collector accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = me.serve_connection(stream) => if let Err(e) = r {
                        log::info!("collector: connection from {peer} ended: {e}");
                    }
                }
            });
        }
    }
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
}
