//! The sensor server: accepts device connections (TCP, capped) and serial links, feeds every byte to the
//! decoder, binds device identity to the link (serial number or loc id first, then the static IP or port
//! map; never just the peer IP, so two devices behind one NAT stay distinct), plans the commands the device
//! needs, and hands packets to the per-device state. Bad packets are counted by reason and the link is
//! kept; an endless line, a line trickled in for too long (slow-loris) or a silent link is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DeviceMap;
use super::commands::Planner;
use super::device::Devices;
use super::proto::{Decoder, Event, Packet};
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
                "Device connections refused over the limit.",
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
    /// A link that sends nothing for this long is closed (devices stream every few seconds).
    pub idle_timeout: Duration,
}

struct Conn {
    identity: Option<usize>,
    peer: Peer,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl SensorServer {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        loop {
            let (stream, addr) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning; the listener itself is fine.
                        log::warn!("sensor accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                self.counters.refused.inc();
                log::debug!("sensor connection from {addr} refused: {} links open", self.max_connections);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let peer = Peer { label: addr.to_string(), ip: Some(addr.ip()), bound: None };
                if let Err(e) = me.serve_link(stream, peer, &stop).await {
                    log::debug!("sensor connection {addr} ended: {e}");
                }
            });
        }
    }

    /// Serves one link until it closes or `stop`; counts it as open meanwhile. Generic for tests and serial.
    pub async fn serve_link<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: Peer,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        self.counters.connections.inc();
        self.counters.active.add(1.0);
        let r = tokio::select! {
            _ = stop.cancelled() => Ok(()),
            r = self.run_link(stream, peer) => r,
        };
        self.counters.active.add(-1.0);
        r
    }

    async fn run_link<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peer: Peer) -> std::io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut dec = Decoder::new();
        let identity = peer.bound.or_else(|| peer.ip.and_then(|ip| self.map.by_ip(ip)));
        let mut conn = Conn { identity, peer };
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
        let device = match p {
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
            Packet::Frame { loc, words } => {
                self.counters.packet("frame");
                let d = self.device(loc, conn);
                if let Some(d) = d {
                    self.devices.frame(d, words, now);
                }
                d
            }
            Packet::RawCounts { loc, .. } => {
                // Legacy frames carry raw counts, not temperatures: EmberEye's mistake was reading them as °C.
                self.counters.packet("raw_counts");
                self.device(loc, conn)
            }
            Packet::Sensor { loc, fields } => {
                self.counters.packet("sensor");
                let sent_ns = fields.get("TS").map(|v| v.as_f64() as u64).unwrap_or(0);
                if sent_ns > 0 {
                    self.counters.latency.observe(unix_nanos().saturating_sub(sent_ns) as f64 / 1e9);
                }
                let d = self.device(loc, conn);
                if let Some(d) = d {
                    self.devices.sensor(d, &fields, sent_ns, now);
                }
                d
            }
            Packet::Eeprom { loc, words } => {
                self.counters.packet("eeprom");
                let d = self.device(loc, conn);
                if let Some(d) = d {
                    self.devices.eeprom(d, words, now);
                }
                d
            }
        };
        if let Some(d) = device {
            if let Some(c) = self.counters.per_device.get(d) {
                c.inc();
            }
            self.devices.seen(d, now);
        }
    }
}
