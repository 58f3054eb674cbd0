//! The uplink: every zone transition becomes a numbered, authenticated alert that is appended to the durable
//! spool first and sent second; it leaves the spool only when the collector acknowledges its sequence number.
//! After a reconnect (exponential backoff with jitter) everything unacknowledged is resent in order, so
//! delivery is at-least-once and, with the collector's de-duplication, exactly-once in effect. The spool
//! survives crashes and restarts, keeps counting sequence numbers, and is bounded (drop-oldest, counted, and
//! reported upstream in heartbeats).

pub mod build;
pub mod collector;
pub mod mqtt;
pub mod spool;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::event::Transition;
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle};
use spool::Spool;
use wire::{Alert, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Split, Up};

/// Wall-clock milliseconds of a monotonic instant.
pub fn wall_ms(at: tokio::time::Instant) -> u64 {
    let age = tokio::time::Instant::now().saturating_duration_since(at);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(age).as_millis() as u64
}

fn deci_i16(v: f32) -> i16 {
    if v.is_finite() {
        (v * 10.0).round().clamp(i16::MIN as f32 + 1.0, i16::MAX as f32) as i16
    } else {
        wire::UNKNOWN_DECI_C
    }
}

/// Builds the wire alert for a transition.
pub fn alert<'a>(device_id: u32, epoch: u32, seq: u32, zone: &'a str, t: &Transition) -> Alert<'a> {
    Alert {
        device_id,
        epoch,
        seq,
        ts_ms: wall_ms(t.at),
        zone,
        from: t.from.level(),
        to: t.to.level(),
        sources: t.sources,
        vision_milli: if t.vision_score.is_finite() {
            (t.vision_score.clamp(0.0, 1.0) * 1000.0).round() as u16
        } else {
            0
        },
        max_deci_c: deci_i16(t.max_c),
        rise_deci_c_min: deci_i16(t.rise_c_per_min),
        smoke_deci_pct: if t.smoke_pct.is_finite() {
            (t.smoke_pct * 10.0).round().clamp(0.0, u16::MAX as f32 - 1.0) as u16
        } else {
            wire::UNKNOWN_DECI_PCT
        },
        flags: wire::flags::pack(t.reason, t.operator, t.test),
    }
}

pub struct UplinkCounters {
    pub sent: Counter,
    pub acked: Counter,
    pub dropped: Gauge,
    pub reconnects: Counter,
    pub pending: Gauge,
    pub connected: Gauge,
    pub spool_bytes: Gauge,
    pub rejected_acks: Counter,
}

/// How alerts travel.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Framed TCP to `ember-edge collect`, acknowledged per alert.
    Tcp,
    /// QoS-1 publishes under this topic prefix, acknowledged by the broker.
    Mqtt { topic_prefix: String },
}

pub struct UplinkTask {
    pub transport: Transport,
    pub server: String,
    pub device_id: u32,
    /// HMAC key shared with the collector; empty when none is configured.
    pub key: Vec<u8>,
    pub zone_names: Arc<Vec<String>>,
    pub input: Queue<Transition>,
    pub spool: Spool,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub heartbeat: Duration,
    pub counters: UplinkCounters,
}

/// A small xorshift for backoff jitter; no need for a cryptographic generator here.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Jitter(seed ^ ((std::process::id() as u64) << 32) | 1)
    }
    /// Uniform in [d/2, d].
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let frac = (self.0 % 1000) as f64 / 1000.0;
        d.mul_f64(0.5 + frac / 2.0)
    }
}

impl UplinkTask {
    fn update_gauges(&self) {
        self.counters.pending.set(self.spool.pending() as f64);
        self.counters.dropped.set(self.spool.dropped as f64);
        self.counters.spool_bytes.set(self.spool.bytes() as f64);
    }

    fn heartbeat_msg(&self) -> Up<'static> {
        Up::Heartbeat {
            device_id: self.device_id,
            epoch: self.spool.epoch(),
            ts_ms: wall_ms(tokio::time::Instant::now()),
            health: 0,
            spool_pending: self.spool.pending() as u32,
            spool_dropped: self.spool.dropped.min(u32::MAX as u64) as u32,
        }
    }

    /// Counts a reconnect and waits `delay`, spooling alerts meanwhile so nothing backs up into fusion.
    /// False when asked to stop.
    async fn wait_to_reconnect(&mut self, delay: Duration, stop: &CancellationToken) -> bool {
        self.counters.reconnects.inc();
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut wait => return true,
                t = self.input.pop() => { self.spool_transition(&t); }
            }
        }
    }

    /// Appends a transition to the spool; returns the encoded frame's sequence number.
    fn spool_transition(&mut self, t: &Transition) -> Option<u32> {
        let zone = self.zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
        let (device, epoch, key) = (self.device_id, self.spool.epoch(), &self.key);
        let r = self.spool.append(|seq, buf| {
            let mut frame = [0u8; MAX_FRAME];
            let n = wire::encode(&Up::Alert(alert(device, epoch, seq, zone, t)), key, &mut frame).ok()?;
            buf[..n].copy_from_slice(&frame[..n]);
            Some(n)
        });
        self.update_gauges();
        match r {
            Ok(seq) => Some(seq),
            Err(e) => {
                log::error!("alert for zone {zone} could not be spooled: {e}");
                None
            }
        }
    }

    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        match self.transport.clone() {
            Transport::Tcp => self.run_tcp(part, stop).await,
            Transport::Mqtt { topic_prefix } => self.run_mqtt(topic_prefix, part, stop).await,
        }
    }

    async fn run_tcp(mut self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let mut jitter = Jitter::new();
        let mut delay = self.reconnect_min;
        self.update_gauges();
        loop {
            part.beat();
            let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.server));
            let stream = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = connect => r,
            };
            match stream {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.counters.connected.set(1.0);
                    log::info!("uplink connected to {} ({} alerts pending)", self.server, self.spool.pending());
                    delay = self.reconnect_min;
                    let r = self.session(stream, &part, &stop).await;
                    self.counters.connected.set(0.0);
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    if let Err(e) = r {
                        log::warn!("uplink to {} lost: {e}", self.server);
                    }
                }
                Ok(Err(e)) => log::debug!("uplink connect to {} failed: {e}", self.server),
                Err(_) => log::debug!("uplink connect to {} timed out", self.server),
            }
            if !self.wait_to_reconnect(jitter.apply(delay), &stop).await {
                return Ok(());
            }
            delay = (delay * 2).min(self.reconnect_max);
        }
    }

    /// Writes every unacknowledged alert, oldest first, in batches read from the spool.
    async fn resend(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut from = 0u32;
        let mut batch: Vec<u8> = Vec::with_capacity(64 * MAX_FRAME);
        loop {
            batch.clear();
            let mut count = 0;
            let mut last = from;
            let r = self.spool.for_each_pending(|seq, frame| {
                if seq < from {
                    return true;
                }
                batch.extend_from_slice(frame);
                count += 1;
                last = seq;
                count < 64
            });
            if let Err(e) = r {
                return Err(std::io::Error::other(e.to_string()));
            }
            if count == 0 {
                return Ok(());
            }
            stream.write_all(&batch).await?;
            self.counters.sent.add(count as u64);
            from = last.wrapping_add(1);
        }
    }

    async fn session(
        &mut self,
        mut stream: TcpStream,
        part: &PartHandle,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        self.resend(&mut stream).await?;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut splitter = FrameSplitter::default();
        let mut rbuf = [0u8; 1024];
        let mut out = [0u8; MAX_FRAME];
        let mut acks: Vec<u32> = Vec::with_capacity(64);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                t = self.input.pop() => {
                    if let Some(seq) = self.spool_transition(&t) {
                        let (device, epoch, key) = (self.device_id, self.spool.epoch(), &self.key);
                        let zone = self.zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
                        if let Ok(n) = wire::encode(&Up::Alert(alert(device, epoch, seq, zone, &t)), key, &mut out) {
                            stream.write_all(&out[..n]).await?;
                            self.counters.sent.inc();
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    part.beat();
                    if let Ok(n) = wire::encode(&self.heartbeat_msg(), &self.key, &mut out) {
                        stream.write_all(&out[..n]).await?;
                    }
                }
                r = stream.read(&mut rbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "collector closed the connection"));
                    }
                    let key = &self.key;
                    let rejected = &self.counters.rejected_acks;
                    splitter.feed(&rbuf[..n], |s| match s {
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
                    for seq in acks.drain(..) {
                        match self.spool.ack(seq) {
                            Ok(true) => self.counters.acked.inc(),
                            Ok(false) => {}
                            Err(e) => log::error!("uplink spool cannot record acknowledgement {seq}: {e}"),
                        }
                    }
                    self.update_gauges();
                }
            }
        }
    }
}
