//! The TCP sensor server: accepts device connections (capped), sends the bare `PERIOD_ON` that both real
//! firmware and EmberEye's simulators need, feeds every byte to the decoder, binds device identity to the
//! connection (serial number or loc id, not the peer IP: two devices behind one NAT stay distinct) and turns
//! packets into observations. Bad packets are counted by reason and the connection is kept; only an endless
//! line without a terminator closes the connection that sent it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::proto::{Decoder, Event, PIXELS, Packet};
use super::{DeviceMap, adc_percent, thermal_compat};
use crate::event::{AdcReading, Observation, ThermalSummary};
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, Registry};

/// A line this long without a terminator is not a slow device but a broken or hostile one.
pub const ENDLESS_LINE: usize = 64 * 1024;

pub struct SensorCounters {
    registry: Arc<Registry>,
    pub connections: Counter,
    pub refused: Counter,
    pub active: Gauge,
    pub bytes: Counter,
    pub endless_lines: Counter,
    pub unknown_device: Counter,
    packets: Mutex<HashMap<&'static str, Counter>>,
    rejected: Mutex<HashMap<&'static str, Counter>>,
    pub thermal_max: Vec<Gauge>,
    pub smoke_pct: Vec<Gauge>,
}

impl SensorCounters {
    pub fn new(registry: &Arc<Registry>, devices: &DeviceMap) -> Self {
        let r = registry;
        SensorCounters {
            registry: Arc::clone(registry),
            connections: r.counter("ember_sensor_connections_total", "Device connections accepted.", &[]),
            refused: r.counter(
                "ember_sensor_connections_refused_total",
                "Device connections refused over the limit.",
                &[],
            ),
            active: r.gauge("ember_sensor_connections_active", "Device connections open now.", &[]),
            bytes: r.counter("ember_sensor_bytes_total", "Bytes received from devices.", &[]),
            endless_lines: r.counter(
                "ember_sensor_endless_lines_total",
                "Connections closed for sending a line without terminator longer than 64 KiB.",
                &[],
            ),
            unknown_device: r.counter(
                "ember_sensor_unknown_device_total",
                "Packets from devices that match no [[sensors.devices]] entry.",
                &[],
            ),
            packets: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            thermal_max: devices
                .names
                .iter()
                .map(|n| {
                    r.gauge("ember_thermal_max_celsius", "Hottest pixel of the last thermal frame.", &[("device", n)])
                })
                .collect(),
            smoke_pct: devices
                .names
                .iter()
                .map(|n| {
                    r.gauge(
                        "ember_sensor_smoke_percent",
                        "Smoke channel (ADC1) in percent of full scale.",
                        &[("device", n)],
                    )
                })
                .collect(),
        }
    }

    fn labelled(
        &self,
        map: &Mutex<HashMap<&'static str, Counter>>,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Counter {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(value).or_insert_with(|| self.registry.counter(name, help, &[(label, value)])).clone()
    }

    pub fn packet(&self, kind: &'static str) {
        self.labelled(&self.packets, "ember_sensor_packets_total", "Packets accepted, by kind.", "kind", kind).inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.labelled(&self.rejected, "ember_sensor_rejected_total", "Packets rejected, by reason.", "reason", reason)
            .inc();
    }
}

pub struct SensorServer {
    pub devices: Arc<DeviceMap>,
    pub output: Queue<Observation>,
    pub counters: Arc<SensorCounters>,
    pub max_connections: usize,
}

/// Per-connection state: who is talking, and the decoder.
struct Conn {
    identity: Option<usize>,
    peer: String,
}

impl SensorServer {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("sensor accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                self.counters.refused.inc();
                log::warn!("sensor connection from {peer} refused: {} connections open", self.max_connections);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                me.counters.connections.inc();
                me.counters.active.set(me.counters.active.get() + 1.0);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = me.serve_connection(stream, peer) => if let Err(e) = r {
                        log::info!("sensor connection {peer} ended: {e}");
                    }
                }
                me.counters.active.set(me.counters.active.get() - 1.0);
            });
        }
    }

    /// Serves one device connection until it closes. Generic so tests can use in-memory streams.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
    ) -> std::io::Result<()> {
        // Bare, as its own write: the real firmware ignores `PERIOD_ON\r\n` (doc §1.5).
        stream.write_all(b"PERIOD_ON").await?;
        stream.flush().await?;
        let mut dec = Decoder::new();
        let mut conn = Conn { identity: None, peer: peer.to_string() };
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                dec.finish();
                self.drain(&mut dec, &mut conn);
                return Ok(());
            }
            self.counters.bytes.add(n as u64);
            let mut off = 0;
            while off < n {
                off += dec.push(&buf[off..n]);
                self.drain(&mut dec, &mut conn);
                if dec.discarding_bytes() > ENDLESS_LINE {
                    self.counters.endless_lines.inc();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "line without terminator exceeds 64 KiB",
                    ));
                }
            }
        }
    }

    fn drain(&self, dec: &mut Decoder, conn: &mut Conn) {
        while let Some(ev) = dec.pull() {
            match ev {
                Event::Rejected(r) => {
                    self.counters.reject(r.reason());
                    log::debug!("sensor {}: packet rejected: {r}", conn.peer);
                }
                Event::Packet(p) => self.packet(p, conn),
            }
        }
    }

    fn device(&self, loc: Option<&str>, conn: &Conn) -> Option<usize> {
        let d = loc.and_then(|l| self.devices.by_loc(l)).or(conn.identity);
        if d.is_none() {
            self.counters.unknown_device.inc();
        }
        d
    }

    fn packet(&self, p: Packet<'_>, conn: &mut Conn) {
        let now = tokio::time::Instant::now();
        match p {
            Packet::SerialNo(s) => {
                self.counters.packet("serialno");
                if let Some(d) = self.devices.by_serial(s) {
                    conn.identity = Some(d);
                }
            }
            Packet::LocId(l) => {
                self.counters.packet("locid");
                if let Some(d) = self.devices.by_loc(l) {
                    conn.identity = Some(d);
                }
            }
            Packet::Frame { loc, words } => {
                self.counters.packet("frame");
                let Some(device) = self.device(loc, conn) else { return };
                let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
                for &w in &words[..PIXELS] {
                    let t = thermal_compat::compat_celsius(w, 0.0);
                    min = min.min(t);
                    max = max.max(t);
                    sum += t as f64;
                }
                if let Some(g) = self.counters.thermal_max.get(device) {
                    g.set(max as f64);
                }
                let mean_c = (sum / PIXELS as f64) as f32;
                self.output.push(Observation::Thermal(ThermalSummary {
                    device,
                    at: now,
                    min_c: min,
                    max_c: max,
                    mean_c,
                }));
            }
            Packet::RawCounts { .. } => {
                // Legacy frames carry raw counts, not temperatures; EmberEye's mistake was treating them as °C.
                self.counters.packet("raw_counts");
            }
            Packet::Sensor { loc, fields } => {
                self.counters.packet("sensor");
                let Some(device) = self.device(loc, conn) else { return };
                let smoke_pct = fields.adc1().map(|v| adc_percent(v.as_f64()));
                if let (Some(s), Some(g)) = (smoke_pct, self.counters.smoke_pct.get(device)) {
                    g.set(s as f64);
                }
                self.output.push(Observation::Adc(AdcReading {
                    device,
                    at: now,
                    smoke_pct,
                    flame_pct: fields.adc2().map(|v| adc_percent(v.as_f64())),
                    flame_digital: fields.mpy30().map(|v| v.as_f64() == 1.0),
                }));
            }
            Packet::Eeprom { .. } => self.counters.packet("eeprom"),
        }
    }
}
