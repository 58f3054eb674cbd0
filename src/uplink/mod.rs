//! The uplink: every zone transition becomes a numbered, authenticated alert that is appended to the durable
//! spool first and sent second; it leaves the spool only when the collector acknowledges its sequence number.
//! After a reconnect (`crate::retry`'s backoff) everything unacknowledged is resent in order, so
//! delivery is at-least-once and, with the collector's de-duplication, exactly-once in effect. The spool
//! survives crashes and restarts, keeps counting sequence numbers, and is bounded (drop-oldest, counted, and
//! reported upstream in heartbeats). A spool that cannot be opened or written never holds an alert back: the
//! outbox keeps it in memory and sends it from there (see `outbox`).

pub mod build;
pub mod collector;
pub mod ha;
pub mod ha_link;
pub mod mqtt;
pub mod outbox;
pub mod spool;
mod tcp;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

use crate::event::Transition;
use crate::queue::Queue;
use crate::retry::Backoff;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};
use outbox::Outbox;
use spool::{Place, Spool};
use wire::Alert;

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
/// The event id and deciding camera frame an alert carries after its body (`wire::AlertExt`).
pub fn alert_ext(t: &Transition) -> wire::AlertExt {
    wire::AlertExt {
        event_id: t.event_id,
        frame: t.vision_frame.and_then(|f| Some((u16::try_from(f.camera).ok()?, f.frame))),
    }
}

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
    pub in_memory: Gauge,
    pub spool_trouble: Gauge,
    pub lost: Counter,
    /// `ember_uplink_tls_refused_total`, in `tls::REASONS` order.
    pub tls_refused: Vec<Counter>,
}

impl UplinkCounters {
    /// Registers the uplink's metrics.
    pub fn register(reg: &Registry) -> Self {
        UplinkCounters {
            sent: reg.counter("ember_uplink_sent_total", "Alert frames written to the uplink (resends included).", &[]),
            acked: reg.counter("ember_uplink_acked_total", "Alerts acknowledged by the collector.", &[]),
            dropped: reg.gauge("ember_uplink_dropped", "Alerts dropped from a full spool since it was created.", &[]),
            reconnects: reg.counter(
                "ember_uplink_reconnects_total",
                "Uplink connection attempts after the first.",
                &[],
            ),
            pending: reg.gauge("ember_uplink_pending", "Alerts not yet acknowledged, in the spool or held in memory.", &[]),
            connected: reg.gauge("ember_uplink_connected", "1 while connected to the collector.", &[]),
            spool_bytes: reg.gauge("ember_uplink_spool_bytes", "Bytes in the alert spool.", &[]),
            rejected_acks: reg.counter(
                "ember_uplink_rejected_acks_total",
                "Acknowledgements with a bad tag or framing, ignored.",
                &[],
            ),
            in_memory: reg.gauge(
                "ember_uplink_memory_alerts",
                "Alerts held in memory (and sent from there) because the spool cannot take them.",
                &[],
            ),
            spool_trouble: reg.gauge(
                "ember_uplink_spool_trouble",
                "1 while the alert spool cannot be opened or written (alerts are held in memory).",
                &[],
            ),
            lost: reg.counter(
                "ember_uplink_lost_total",
                "Alerts lost outside the spool's drop-oldest: pushed out of the full memory queue, or unreadable in a vanished spool.",
                &[],
            ),
            tls_refused: tls::refusal_counters(reg),
        }
    }
}

/// How alerts travel.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Framed TCP to `ember-tools collect`, acknowledged per alert.
    Tcp,
    /// QoS-1 publishes, acknowledged by the broker.
    Mqtt(MqttTransport),
}

/// Where and how MQTT publishes go.
#[derive(Debug, Clone)]
pub struct MqttTransport {
    pub topic_prefix: String,
    /// TLS to the broker; None: plain TCP.
    pub tls: Option<tls::TlsFiles>,
    /// Home Assistant discovery on the same connection.
    pub ha: Option<Arc<ha_link::HaSetup>>,
}

pub struct UplinkTask {
    pub transport: Transport,
    pub server: String,
    pub device_id: u32,
    /// HMAC key shared with the collector; empty when none is configured.
    pub key: Vec<u8>,
    pub zone_names: Arc<Vec<String>>,
    pub input: Queue<Transition>,
    /// The opened spool, or why it could not be opened (alerts are then held in memory until it can).
    pub spool: Result<Spool, String>,
    pub place: Place,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub heartbeat: Duration,
    pub counters: UplinkCounters,
    /// The site whose state heartbeats carry (stale sources, night mode, output delay).
    pub site: Option<Arc<dyn ha_link::SiteView>>,
}

/// How one connection attempt ended.
struct Attempt {
    /// How long the link was up; None if it never came up.
    up_for: Option<Duration>,
    why: String,
}

impl UplinkTask {
    /// Connects, sends, and reconnects until `stop`. Transitions keep being spooled while the link is down, so
    /// nothing backs up into fusion.
    ///
    /// The outbox is built and its health part set when this is called, before the future first runs: the
    /// appliance reports ready right after spawning its tasks, and a spool that could not be opened must show
    /// on the first `/health` answer, not only once the scheduler has got round to this task.
    pub fn run(
        self,
        part: PartHandle,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let UplinkTask { transport, server, device_id, key, zone_names, input, spool, place, site, .. } = self;
        let reconnects = self.counters.reconnects.clone();
        let tls_refused = self.counters.tls_refused.clone();
        let mut outbox = Outbox::new(spool, place, device_id, key, zone_names, self.heartbeat, self.counters);
        outbox.set_part(part.clone());
        if let Some(site) = site {
            outbox.set_site(site);
        }
        let broker = match &transport {
            Transport::Tcp => Ok(None),
            Transport::Mqtt(m) => mqtt::Broker::new(&server, m, device_id, tls_refused).map(Some),
        };
        let mut backoff = Backoff::new(self.reconnect_min, self.reconnect_max);
        async move {
            let broker = broker?;
            loop {
                part.beat();
                let attempt = match &broker {
                    None => tcp::attempt(&server, &mut outbox, &input, &part, &stop).await,
                    Some(b) => b.attempt(&mut outbox, &input, &part, &stop).await,
                };
                outbox.on_disconnected();
                if stop.is_cancelled() {
                    outbox.shutdown(tokio::time::Instant::now());
                    return Ok(());
                }
                let retry = backoff.failed(attempt.up_for);
                log::log!(
                    retry.level(log::Level::Warn),
                    "uplink to {}{server}: {}; retrying in {:.1} s (failure {} in a row)",
                    if broker.is_some() { "MQTT broker " } else { "" },
                    attempt.why,
                    retry.delay.as_secs_f64(),
                    retry.failures
                );
                reconnects.inc();
                let spool_meanwhile = async {
                    loop {
                        let due = outbox.maintain_due(tokio::time::Instant::now());
                        tokio::select! {
                            t = input.pop() => { outbox.on_transition(&t); }
                            _ = tokio::time::sleep_until(due) => outbox.maintain(tokio::time::Instant::now()),
                        }
                    }
                };
                if !crate::retry::wait_doing(retry.delay, &stop, Some(&part), spool_meanwhile).await {
                    outbox.shutdown(tokio::time::Instant::now());
                    return Ok(());
                }
            }
        }
    }
}
