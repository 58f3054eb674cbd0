//! The sensor server: accepts device connections (TCP, capped) and serial links, feeds every byte to the
//! decoder, binds device identity to the link (serial number or loc id first, then the static IP or port
//! map; never just the peer IP, so two devices behind one NAT stay distinct), plans the commands the device
//! needs, and hands packets to the per-device state. Bad packets are counted by reason and the link is
//! kept; an endless line, a line trickled in for too long (slow-loris) or a silent link is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DeviceMap;
use super::claims::{Claims, Pin, Source, Verdict};
use super::commands::Planner;
use super::device::Devices;
use super::proto::{Decoder, Event, Packet};
use crate::telemetry::log_limit::{LogLimit, held_back};
use crate::telemetry::metrics::Histogram;
use crate::telemetry::{Counter, Gauge, Registry};

/// A line this long without a terminator is not a slow device but a broken or hostile one.
pub const ENDLESS_LINE: usize = 64 * 1024;
/// A partial line older than this is a slow-loris, not a device (a real frame line arrives in ~170 ms).
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SensorCounters {
    registry: Arc<Registry>,
    pub connections: Counter,
    pub refused: Counter,
    pub evicted: Counter,
    pub unidentified: Counter,
    pub active: Gauge,
    pub bytes: Counter,
    pub closed_endless: Counter,
    pub closed_slow: Counter,
    pub closed_idle: Counter,
    pub unknown_device: Counter,
    pub commands: Counter,
    pub latency: Histogram,
    /// Packets attributed to each configured device, by index; the load tool reads its own device's count.
    pub per_device: Vec<Counter>,
    pub per_device_dropped: Vec<Counter>,
    packets: Mutex<HashMap<&'static str, Counter>>,
    rejected: Mutex<HashMap<&'static str, Counter>>,
}

impl SensorCounters {
    pub fn new(registry: &Arc<Registry>, map: &DeviceMap) -> Self {
        let r = registry;
        SensorCounters {
            registry: Arc::clone(registry),
            connections: r.counter(
                "ember_sensor_connections_total",
                "Device links opened (TCP accepted or serial opened).",
                &[],
            ),
            refused: r.counter(
                "ember_sensor_connections_refused_total",
                "Device connections refused: over the per-address limit, or every slot held by identified links.",
                &[],
            ),
            evicted: r.counter(
                "ember_sensor_connections_evicted_total",
                "Connections that had not identified yet, closed to make room for a new one.",
                &[],
            ),
            unidentified: r.counter(
                "ember_sensor_unidentified_closed_total",
                "Connections closed for not speaking for a configured device within identify_secs.",
                &[],
            ),
            active: r.gauge("ember_sensor_connections_active", "Device links open now.", &[]),
            bytes: r.counter("ember_sensor_bytes_total", "Bytes received from devices.", &[]),
            closed_endless: r.counter(
                "ember_sensor_endless_lines_total",
                "Links closed for sending a line without terminator longer than 64 KiB.",
                &[],
            ),
            closed_slow: r.counter(
                "ember_sensor_slow_lines_total",
                "Links closed for trickling one line for over 20 s.",
                &[],
            ),
            closed_idle: r.counter(
                "ember_sensor_idle_closed_total",
                "Links closed after sending nothing for too long.",
                &[],
            ),
            unknown_device: r.counter(
                "ember_sensor_unknown_device_total",
                "Packets from devices that match no [[sensors.devices]] entry.",
                &[],
            ),
            commands: r.counter("ember_sensor_commands_total", "Commands written to devices.", &[]),
            latency: r.histogram(
                "ember_sensor_packet_latency_seconds",
                "Packet written by a device (its TS field, ns since the epoch) to packet decoded here.",
                &[],
            ),
            per_device: map
                .names
                .iter()
                .map(|n| {
                    r.counter(
                        "ember_sensor_device_packets_total",
                        "Packets attributed to a configured device.",
                        &[("device", n)],
                    )
                })
                .collect(),
            per_device_dropped: map
                .names
                .iter()
                .map(|n| {
                    r.counter(
                        "ember_sensor_device_impostor_packets_total",
                        "Packets for a device dropped because another link speaks for it (impostor or duplicate).",
                        &[("device", n)],
                    )
                })
                .collect(),
            packets: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
        }
    }

    fn labelled(&self, which: bool, value: &'static str) -> Counter {
        let (map, name, help, label) = if which {
            (&self.packets, "ember_sensor_packets_total", "Packets accepted, by kind.", "kind")
        } else {
            (&self.rejected, "ember_sensor_rejected_total", "Packets rejected, by reason.", "reason")
        };
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(value).or_insert_with(|| self.registry.counter(name, help, &[(label, value)])).clone()
    }

    pub fn packet(&self, kind: &'static str) {
        self.labelled(true, kind).inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.labelled(false, reason).inc();
    }
}

/// Who is at the other end of a link before it says anything.
#[derive(Debug, Clone)]
pub struct Peer {
    pub label: String,
    pub ip: Option<IpAddr>,
    /// A serial port configured for one device.
    pub bound: Option<usize>,
}

pub struct SensorServer {
    pub map: Arc<DeviceMap>,
    pub devices: Arc<Devices>,
    pub counters: Arc<SensorCounters>,
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// A TCP link that has not spoken for a configured device within this is closed.
    pub identify: Duration,
    /// A link that sends nothing for this long is closed (devices stream every few seconds).
    pub idle_timeout: Duration,
    claims: Mutex<Claims>,
    /// Peer labels of live links, to name both sides of a tamper.
    labels: Mutex<HashMap<u64, String>>,
    next_link: AtomicU64,
    slots: Mutex<Vec<Slot>>,
}

/// A TCP link's place in the connection cap.
struct Slot {
    link: u64,
    ip: IpAddr,
    since: Instant,
    identified: Arc<AtomicBool>,
    close: CancellationToken,
}

/// What the accept loop watches on a TCP link.
struct Watch {
    identified: Arc<AtomicBool>,
    close: CancellationToken,
}

struct Conn {
    link: u64,
    identity: Option<usize>,
    peer: Peer,
    /// Set once a packet was attributed to a configured device.
    identified: Arc<AtomicBool>,
    /// Tamper already logged for this link.
    warned: bool,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A silent owner of an unpinned device gives it up after this (the device rebooted; its old link is
/// half-open), and never later than the device is declared offline.
const HANDOVER: Duration = Duration::from_secs(10);

impl SensorServer {
    pub fn from_config(
        cfg: &crate::config::Sensors,
        map: Arc<DeviceMap>,
        devices: Arc<Devices>,
        counters: Arc<SensorCounters>,
    ) -> SensorServer {
        let pins = cfg
            .devices
            .iter()
            .map(|d| Pin { ip: d.ip, serial: cfg.serial.iter().any(|p| p.device.as_deref() == Some(d.name.as_str())) });
        let offline = Duration::from_secs(cfg.offline_after_secs);
        SensorServer {
            map,
            devices,
            counters,
            max_connections: cfg.max_connections,
            max_per_ip: cfg.max_connections_per_ip,
            identify: Duration::from_secs(cfg.identify_secs),
            idle_timeout: Duration::from_secs(cfg.offline_after_secs.saturating_mul(2).max(60)),
            claims: Mutex::new(Claims::new(pins, HANDOVER.min(offline))),
            labels: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            slots: Mutex::new(Vec::new()),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        let accept_warn = LogLimit::new(Duration::from_secs(5));
        loop {
            let (stream, addr) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning; the listener itself is fine.
                        if let Some(held) = accept_warn.allow(std::time::Instant::now()) {
                            log::warn!("sensor accept failed: {e}{}", held_back(held));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let link = self.next_link.fetch_add(1, Ordering::Relaxed);
            let Some(watch) = self.take_slot(link, addr.ip()) else {
                self.counters.refused.inc();
                log::debug!("sensor connection from {addr} refused");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                let peer = Peer { label: addr.to_string(), ip: Some(addr.ip()), bound: None };
                if let Err(e) = me.serve_watched(stream, peer, &stop, link, Some(watch)).await {
                    log::debug!("sensor connection {addr} ended: {e}");
                }
                me.slots.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.link != link);
            });
        }
    }

    /// A place for a new TCP link: refused over the per-address cap; when every slot is taken, the oldest link
    /// that has not identified yet makes room, and only if all have identified is the new one refused.
    fn take_slot(&self, link: u64, ip: IpAddr) -> Option<Watch> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.iter().filter(|s| s.ip == ip).count() >= self.max_per_ip {
            return None;
        }
        if slots.len() >= self.max_connections {
            let oldest = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.identified.load(Ordering::Relaxed))
                .min_by_key(|(_, s)| s.since)
                .map(|(i, _)| i)?;
            slots.swap_remove(oldest).close.cancel();
            self.counters.evicted.inc();
        }
        let (identified, close) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
        slots.push(Slot { link, ip, since: Instant::now(), identified: Arc::clone(&identified), close: close.clone() });
        Some(Watch { identified, close })
    }

    /// Serves one link until it closes or `stop`; counts it as open meanwhile. Generic for tests and serial.
    pub async fn serve_link<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: Peer,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        self.serve_watched(stream, peer, stop, link, None).await
    }

    async fn serve_watched<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: Peer,
        stop: &CancellationToken,
        link: u64,
        watch: Option<Watch>,
    ) -> std::io::Result<()> {
        self.counters.connections.inc();
        self.counters.active.add(1.0);
        self.labels.lock().unwrap_or_else(|p| p.into_inner()).insert(link, peer.label.clone());
        let identified = watch.as_ref().map(|w| Arc::clone(&w.identified)).unwrap_or_default();
        let label = peer.label.clone();
        // Only TCP links from the accept loop have to identify; serial ports and test links do not.
        let must_identify = async {
            match &watch {
                Some(w) => {
                    tokio::select! {
                        _ = w.close.cancelled() => {}
                        _ = async {
                            tokio::time::sleep(self.identify).await;
                            if w.identified.load(Ordering::Relaxed) {
                                std::future::pending::<()>().await;
                            }
                            self.counters.unidentified.inc();
                            log::debug!("sensor connection {label} closed: not identified within {:?}", self.identify);
                        } => {}
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let r = tokio::select! {
            _ = stop.cancelled() => Ok(()),
            _ = must_identify => Ok(()),
            r = self.run_link(stream, peer, link, identified) => r,
        };
        self.link_closed(link);
        self.counters.active.add(-1.0);
        r
    }

    /// Releases what a closed link claimed; a tamper it caused clears when no other contender is left.
    fn link_closed(&self, link: u64) {
        self.labels.lock().unwrap_or_else(|p| p.into_inner()).remove(&link);
        let cleared: Vec<usize> = {
            let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            let before: Vec<bool> = (0..self.map.names.len()).map(|d| claims.tampered(d)).collect();
            claims.closed(link);
            before.iter().enumerate().filter(|(d, was)| **was && !claims.tampered(*d)).map(|(d, _)| d).collect()
        };
        let now = Instant::now();
        for d in cleared {
            self.devices.set_tamper(d, false, now);
        }
    }

    /// Whether a packet for `device` from this link is taken (see `sensor::claims`).
    fn claim(&self, device: usize, conn: &mut Conn, now: Instant) -> bool {
        let from = Source { ip: conn.peer.ip, bound: conn.peer.bound };
        let (verdict, was, is, owner) = {
            let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            let was = claims.tampered(device);
            let verdict = claims.claim(device, conn.link, from, now);
            (verdict, was, claims.tampered(device), claims.owner(device))
        };
        if was != is {
            self.devices.set_tamper(device, is, now);
        }
        if verdict == Verdict::Accept {
            return true;
        }
        let reason = if verdict == Verdict::Impostor { "impostor" } else { "duplicate" };
        self.counters.reject(reason);
        if let Some(c) = self.counters.per_device_dropped.get(device) {
            c.inc();
        }
        if !conn.warned {
            conn.warned = true;
            let name = self.map.names.get(device).map(String::as_str).unwrap_or("?");
            let other = owner
                .and_then(|o| self.labels.lock().unwrap_or_else(|p| p.into_inner()).get(&o).cloned())
                .unwrap_or_else(|| "its configured source".into());
            log::warn!(
                "sensor device {name}: {} speaks for it while {other} does ({reason}); its packets are dropped \
                 and the device is in trouble (tamper) while it stays connected",
                conn.peer.label
            );
        }
        false
    }

    async fn run_link<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: Peer,
        link: u64,
        identified: Arc<AtomicBool>,
    ) -> std::io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut dec = Decoder::new();
        let identity = peer.bound.or_else(|| peer.ip.and_then(|ip| self.map.by_ip(ip)));
        let mut conn = Conn { link, identity, peer, identified, warned: false };
        let mut planner = Planner::new();
        // 4 KiB per link: a thousand links must fit a Pi's memory budget; frames span a few reads anyway.
        let mut buf = vec![0u8; 4096];
        let mut last_byte = Instant::now();
        let mut line_started: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let dev_cfg = conn.identity.and_then(|d| self.devices.config(d));
            if let Some(cmd) = planner.due(now, dev_cfg) {
                wr.write_all(cmd).await?;
                wr.flush().await?;
                self.counters.commands.inc();
            }
            let wake = planner.wake_at(now, dev_cfg).min(last_byte + self.idle_timeout);
            let wake = match line_started {
                Some(t) => wake.min(t + LINE_TIMEOUT),
                None => wake,
            };
            let n = tokio::select! {
                r = rd.read(&mut buf) => r?,
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= last_byte + self.idle_timeout {
                        self.counters.closed_idle.inc();
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "link idle"));
                    }
                    if line_started.is_some_and(|t| now >= t + LINE_TIMEOUT) {
                        self.counters.closed_slow.inc();
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "line trickled for too long"));
                    }
                    continue;
                }
            };
            if n == 0 {
                dec.finish();
                self.drain(&mut dec, &mut conn);
                return Ok(());
            }
            last_byte = Instant::now();
            self.counters.bytes.add(n as u64);
            let mut off = 0;
            while off < n {
                off += dec.push(&buf[off..n]);
                self.drain(&mut dec, &mut conn);
                if dec.discarding_bytes() > ENDLESS_LINE {
                    self.counters.closed_endless.inc();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "line without terminator exceeds 64 KiB",
                    ));
                }
            }
            // A line still open after this read started (or continues) the slow-loris clock.
            line_started = if dec.pending_bytes() > 0 { Some(line_started.unwrap_or(last_byte)) } else { None };
        }
    }

    fn drain(&self, dec: &mut Decoder, conn: &mut Conn) {
        while let Some(ev) = dec.pull() {
            match ev {
                Event::Rejected(r) => {
                    self.counters.reject(r.reason());
                    log::debug!("sensor {}: packet rejected: {r}", conn.peer.label);
                }
                Event::Packet(p) => self.packet(p, conn),
            }
        }
    }

    fn device(&self, loc: Option<&str>, conn: &Conn) -> Option<usize> {
        let d = loc.and_then(|l| self.map.by_loc(l)).or(conn.identity);
        if d.is_none() {
            self.counters.unknown_device.inc();
        }
        d
    }

    fn packet(&self, p: Packet<'_>, conn: &mut Conn) {
        let now = Instant::now();
        let sent_ns = match &p {
            Packet::Sensor { fields, .. } => fields.get("TS").map(|v| v.as_f64() as u64).unwrap_or(0),
            _ => 0,
        };
        let device = match &p {
            Packet::SerialNo(s) => {
                self.counters.packet("serialno");
                if let Some(d) = self.map.by_serial(s) {
                    conn.identity = Some(d);
                }
                conn.identity
            }
            Packet::LocId(l) => {
                self.counters.packet("locid");
                if let Some(d) = self.map.by_loc(l) {
                    conn.identity = Some(d);
                }
                conn.identity
            }
            Packet::Frame { loc, .. } => {
                self.counters.packet("frame");
                self.device(*loc, conn)
            }
            Packet::RawCounts { loc, .. } => {
                // Legacy frames carry raw counts, not temperatures: EmberEye's mistake was reading them as °C.
                self.counters.packet("raw_counts");
                self.device(*loc, conn)
            }
            Packet::Sensor { loc, .. } => {
                self.counters.packet("sensor");
                if sent_ns > 0 {
                    self.counters.latency.observe(unix_nanos().saturating_sub(sent_ns) as f64 / 1e9);
                }
                self.device(*loc, conn)
            }
            Packet::Eeprom { loc, .. } => {
                self.counters.packet("eeprom");
                self.device(*loc, conn)
            }
        };
        let Some(d) = device else { return };
        conn.identified.store(true, Ordering::Relaxed);
        // Nothing from a link that is not the device's reaches its state: no false alarm, no hidden fire.
        if !self.claim(d, conn, now) {
            return;
        }
        match p {
            Packet::Frame { words, .. } => self.devices.frame(d, words, now),
            Packet::Sensor { fields, .. } => self.devices.sensor(d, &fields, sent_ns, now),
            Packet::Eeprom { words, .. } => self.devices.eeprom(d, words, now),
            Packet::SerialNo(_) | Packet::LocId(_) | Packet::RawCounts { .. } => {}
        }
        if let Some(c) = self.counters.per_device.get(d) {
            c.inc();
        }
        self.devices.seen(d, now);
    }
}
