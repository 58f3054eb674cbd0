//! The fusion task: the IO loop around the pure machine. It takes observations from the queue, ticks the
//! machine twice a second, sets the local alarm outputs directly (no queue, no network between them), and hands
//! each transition to the status page, the metrics, the log and the uplink queue.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Fusion;
use crate::alarm::{Outputs, SharedAlarm};
use crate::event::{Observation, Transition, ZoneState};
use crate::live::ZoneBoard;
use crate::queue::Queue;
use crate::telemetry::metrics::Histogram;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};

pub struct FusionMetrics {
    zone_gauges: Vec<Gauge>,
    transitions: Counter,
    decision_latency: Histogram,
    alarm_latency: Histogram,
}

impl FusionMetrics {
    /// Registers the zone and latency metrics; one state gauge per zone, in config order.
    pub fn register(reg: &Registry, zone_names: &[String]) -> Self {
        let zone_gauges = zone_names
            .iter()
            .map(|z| {
                reg.gauge("ember_zone_state", "Zone state: 0 normal, 1 trouble, 2 pre-alarm, 3 alarm.", &[("zone", z)])
            })
            .collect();
        FusionMetrics {
            zone_gauges,
            transitions: reg.counter("ember_zone_transitions_total", "Zone state changes.", &[]),
            alarm_latency: reg.histogram(
                "ember_alarm_latency_seconds",
                "Decisive sensor packet written by the device (its TS field) to the alarm outputs changed.",
                &[],
            ),
            decision_latency: reg.histogram(
                "ember_decision_latency_seconds",
                "Sensor packet written by the device (its TS field) to fusion decided and outputs applied.",
                &[],
            ),
        }
    }
}

/// The fusion loop: observations in, transitions out to the alarm outputs (directly) and the uplink queue.
pub struct FusionTask {
    pub fusion: Fusion,
    pub input: Queue<Observation>,
    pub alarm: SharedAlarm,
    pub uplink: Option<Queue<Transition>>,
    pub zone_names: Arc<Vec<String>>,
    pub metrics: FusionMetrics,
    /// Zone states and recent transitions for the status page.
    pub zone_status: Arc<ZoneBoard>,
}

impl FusionTask {
    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let FusionTask { mut fusion, input, alarm, uplink, zone_names, metrics, zone_status } = self;
        let FusionMetrics { zone_gauges, transitions, decision_latency, alarm_latency } = metrics;
        let mut last_outputs = Outputs::SAFE;
        let mut states = vec![ZoneState::Normal; fusion.zone_count()];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(Outputs::SAFE) {
            log::error!("alarm outputs cannot be initialised: {e}");
        }
        let mut pending: Vec<Transition> = Vec::with_capacity(16);
        loop {
            let mut sent_ns = 0;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                o = input.pop() => {
                    if let Observation::Adc(a) = &o {
                        sent_ns = a.sent_ns;
                    }
                    fusion.observe(&o, &mut |t| pending.push(t));
                }
                _ = tick.tick() => {
                    part.beat();
                    fusion.tick(tokio::time::Instant::now(), &mut |t| pending.push(t));
                    if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).tick() {
                        log::error!("alarm outputs could not be set: {e}");
                    }
                }
            }
            if pending.is_empty() {
                observe_latency(&decision_latency, sent_ns);
                continue;
            }
            for t in pending.drain(..) {
                states[t.zone] = t.to;
                zone_status.record(&t, crate::live::status::unix_ms());
                transitions.inc();
                if let Some(g) = zone_gauges.get(t.zone) {
                    g.set(t.to.level() as f64);
                }
                let zone = zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
                let why: Vec<&str> = crate::event::evidence::names(t.sources).collect();
                match t.to {
                    ZoneState::Alarm => log::error!(
                        "FIRE ALARM in zone {zone}: evidence {why:?}, vision {:.2}{}, max {:.1} °C, smoke {:.1} %",
                        t.vision_score,
                        frame_note(&t),
                        t.max_c,
                        t.smoke_pct
                    ),
                    ZoneState::PreAlarm | ZoneState::Trouble => log::warn!(
                        "zone {zone}: {} → {} ({}, evidence {why:?}{})",
                        t.from.label(),
                        t.to.label(),
                        crate::event::reason::label(t.reason),
                        frame_note(&t)
                    ),
                    _ => log::info!(
                        "zone {zone}: {} → {} ({})",
                        t.from.label(),
                        t.to.label(),
                        crate::event::reason::label(t.reason)
                    ),
                }
                if let Some(q) = &uplink
                    && q.push(t) == crate::queue::Pushed::Refused
                {
                    log::warn!("uplink queue full: alert for zone {zone} not queued");
                }
            }
            let outputs = Outputs::from_states(states.iter().copied());
            if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(outputs) {
                log::error!("alarm outputs could not be set: {e}");
            }
            observe_latency(&decision_latency, sent_ns);
            if outputs != last_outputs {
                // The packet that changed the outputs: its latency is input → line change.
                observe_latency(&alarm_latency, sent_ns);
                last_outputs = outputs;
            }
        }
    }
}

/// " (camera N frame M)" naming the picture behind a vision decision, for the log; empty without one.
fn frame_note(t: &Transition) -> String {
    t.vision_frame.map(|f| format!(" (camera {} frame {})", f.camera, f.frame)).unwrap_or_default()
}

fn observe_latency(h: &Histogram, sent_ns: u64) {
    if sent_ns > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.observe(now.saturating_sub(sent_ns) as f64 / 1e9);
    }
}
