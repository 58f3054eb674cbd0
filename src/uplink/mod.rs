//! The uplink: turns zone transitions into numbered alerts, keeps every unacknowledged alert in a bounded
//! outbox, and delivers them in order over TCP to a collector, reconnecting with exponential backoff and
//! jitter and resending what was not acknowledged (at-least-once; the collector de-duplicates by sequence).
//! Issue 5 puts the outbox on disk and adds authentication and MQTT.

pub mod collector;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::event::Transition;
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle};
use wire::{Alert, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Split, Up};

/// Wall-clock milliseconds of a monotonic instant.
pub fn wall_ms(at: tokio::time::Instant) -> u64 {
    let age = tokio::time::Instant::now().saturating_duration_since(at);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(age).as_millis() as u64
}

/// Builds the wire alert for a transition.
pub fn alert<'a>(device_id: u32, seq: u32, zone: &'a str, t: &Transition) -> Alert<'a> {
    let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
    Alert {
        device_id,
        seq,
        ts_ms: wall_ms(t.at),
        zone,
        from: t.from.level(),
        to: t.to.level(),
        sources: t.sources,
        vision_milli: (finite(t.vision_score).clamp(0.0, 1.0) * 1000.0).round() as u16,
        max_deci_c: if t.max_c.is_finite() {
            (t.max_c * 10.0).round().clamp(i16::MIN as f32 + 1.0, i16::MAX as f32) as i16
        } else {
            wire::UNKNOWN_DECI_C
        },
        smoke_deci_pct: if t.smoke_pct.is_finite() {
            (t.smoke_pct * 10.0).round().clamp(0.0, u16::MAX as f32 - 1.0) as u16
        } else {
            wire::UNKNOWN_DECI_PCT
        },
    }
}

struct Pending {
    seq: u32,
    len: usize,
    frame: [u8; MAX_FRAME],
}

pub struct UplinkCounters {
    pub sent: Counter,
    pub acked: Counter,
    pub dropped: Counter,
    pub reconnects: Counter,
    pub pending: Gauge,
    pub connected: Gauge,
}

pub struct UplinkTask {
    pub server: String,
    pub device_id: u32,
    pub zone_names: Arc<Vec<String>>,
    pub input: Queue<Transition>,
    pub outbox_capacity: usize,
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
    fn enqueue(&self, outbox: &mut VecDeque<Pending>, next_seq: &mut u32, t: &Transition) {
        let zone = self.zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
        let seq = *next_seq;
        *next_seq = next_seq.wrapping_add(1).max(1);
        let mut p = Pending { seq, len: 0, frame: [0; MAX_FRAME] };
        match wire::encode(&Up::Alert(alert(self.device_id, seq, zone, t)), &mut p.frame) {
            Ok(n) => p.len = n,
            Err(e) => {
                log::error!("alert {seq} cannot be encoded: {e}");
                self.counters.dropped.inc();
                return;
            }
        }
        if outbox.len() >= self.outbox_capacity {
            // The outbox is full only after a long outage; keep the newest alerts and say how many went.
            outbox.pop_front();
            self.counters.dropped.inc();
            log::warn!("uplink outbox full ({}): oldest alert dropped", self.outbox_capacity);
        }
        outbox.push_back(p);
        self.counters.pending.set(outbox.len() as f64);
    }

    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let mut outbox: VecDeque<Pending> = VecDeque::with_capacity(self.outbox_capacity);
        let mut next_seq: u32 = 1;
        let mut jitter = Jitter::new();
        let mut delay = self.reconnect_min;
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
                    log::info!("uplink connected to {} ({} alerts pending)", self.server, outbox.len());
                    delay = self.reconnect_min;
                    let r = self.session(stream, &mut outbox, &mut next_seq, &part, &stop).await;
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
            self.counters.reconnects.inc();
            // Keep accepting alerts while we wait, so nothing backs up into fusion.
            let wait = tokio::time::sleep(jitter.apply(delay));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = &mut wait => break,
                    t = self.input.pop() => self.enqueue(&mut outbox, &mut next_seq, &t),
                }
            }
            delay = (delay * 2).min(self.reconnect_max);
        }
    }

    async fn session(
        &self,
        mut stream: TcpStream,
        outbox: &mut VecDeque<Pending>,
        next_seq: &mut u32,
        part: &PartHandle,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        for p in outbox.iter() {
            stream.write_all(&p.frame[..p.len]).await?;
            self.counters.sent.inc();
        }
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut splitter = FrameSplitter::default();
        let mut rbuf = [0u8; 512];
        let mut hb = [0u8; MAX_FRAME];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                t = self.input.pop() => {
                    self.enqueue(outbox, next_seq, &t);
                    if let Some(p) = outbox.back() {
                        stream.write_all(&p.frame[..p.len]).await?;
                        self.counters.sent.inc();
                    }
                }
                _ = heartbeat.tick() => {
                    part.beat();
                    let ts_ms = wall_ms(tokio::time::Instant::now());
                    if let Ok(n) = wire::encode(&Up::Heartbeat { device_id: self.device_id, ts_ms, health: 0 }, &mut hb) {
                        stream.write_all(&hb[..n]).await?;
                    }
                }
                r = stream.read(&mut rbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "collector closed the connection"));
                    }
                    let mut acked = Vec::<u32>::new();
                    splitter.feed(&rbuf[..n], |s| {
                        if let Split::Frame(f) = s {
                            let mut scratch = [0u8; MAX_MESSAGE];
                            if let Ok(Down::Ack { seq }) = wire::decode::<Down>(f, &mut scratch) {
                                acked.push(seq);
                            }
                        }
                    });
                    for seq in acked {
                        if let Some(i) = outbox.iter().position(|p| p.seq == seq) {
                            outbox.remove(i);
                            self.counters.acked.inc();
                        }
                    }
                    self.counters.pending.set(outbox.len() as f64);
                }
            }
        }
    }
}
