//! The fusion task: the IO loop around the pure machine. It takes observations from the queue, ticks the
//! machine twice a second, sets the local alarm outputs directly (no queue, no network between them; a zone whose
//! output delay runs holds its relay and siren), and hands each transition and delay change to the status page,
//! the metrics, the log and then the uplink queue (transitions only: a delay is local), after the outputs: the
//! alert carries the id its event got from the log (so the control room can ask for the alarm's snapshot).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{Fusion, Note, NoteKind};
use crate::alarm::{Outputs, SharedAlarm};
use crate::event::{Observation, OperatorCmd, Transition, ZoneState};
use crate::events::{Event, EventLog, Kind};
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
    /// The event log: offered each transition, trouble and output change after the outputs are set (never
    /// waited for); while it cannot write, the trouble output is on.
    pub events: Option<EventLog>,
}

impl FusionTask {
    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let FusionTask { mut fusion, input, alarm, uplink, zone_names, metrics, zone_status, events } = self;
        let FusionMetrics { zone_gauges, transitions, decision_latency, alarm_latency } = metrics;
        let mut last_outputs = Outputs::SAFE;
        let mut states = vec![ZoneState::Normal; fusion.zone_count()];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(Outputs::SAFE) {
            log::error!("alarm outputs cannot be initialised: {e}");
        }
        let mut pending: Vec<Transition> = Vec::with_capacity(16);
        let mut notes: Vec<Note> = Vec::with_capacity(16);
        let mut log_trouble = false;
        loop {
            let mut sent_ns = 0;
            let mut noted: Option<Observation> = None;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                o = input.pop() => {
                    if let Observation::Adc(a) = &o {
                        sent_ns = a.sent_ns;
                    }
                    fusion.observe(&o, &mut |t| pending.push(t));
                    if matches!(o, Observation::SourceHealth { .. } | Observation::Operator { cmd: OperatorCmd::Button | OperatorCmd::LongPress, .. }) {
                        noted = Some(o);
                    }
                }
                _ = tick.tick() => {
                    part.beat();
                    fusion.tick(tokio::time::Instant::now(), &mut |t| pending.push(t));
                    if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).tick() {
                        log::error!("alarm outputs could not be set: {e}");
                    }
                }
            }
            fusion.drain_notes(|n| notes.push(n));
            let trouble_now = events.as_ref().is_some_and(EventLog::in_trouble);
            if pending.is_empty() && notes.is_empty() && trouble_now == log_trouble {
                observe_latency(&decision_latency, sent_ns);
                if let (Some(log), Some(o)) = (&events, noted) {
                    log_observation(log, &o);
                }
                continue;
            }
            log_trouble = trouble_now;
            let mut changes: Vec<Transition> = Vec::new();
            for t in pending.drain(..) {
                changes.push(t);
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
            }
            for n in &notes {
                let zone = zone_names.get(n.zone).map(String::as_str).unwrap_or("?");
                match n.what {
                    NoteKind::DelayOn(d) => {
                        log::warn!("zone {zone}: delay on: relay and siren held for {} s", d.as_secs())
                    }
                    w => log::warn!("zone {zone}: {}", w.label()),
                }
                let until = match n.what {
                    NoteKind::DelayOn(d) => Some(crate::live::status::unix_ms().saturating_add(d.as_millis() as u64)),
                    _ => None,
                };
                zone_status.set_delay(n.zone, until);
            }
            // A zone whose output delay runs has decided ALARM but holds the relay and siren.
            let mut outputs = Outputs::from_states(
                states.iter().enumerate().map(|(i, s)| if fusion.delay_running(i) { ZoneState::Normal } else { *s }),
            );
            // An event log that cannot write is a fault of the panel: TROUBLE, as a lost source is.
            outputs.trouble_led |= log_trouble;
            if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(outputs) {
                log::error!("alarm outputs could not be set: {e}");
            }
            observe_latency(&decision_latency, sent_ns);
            let changed = outputs != last_outputs;
            if changed {
                // The packet that changed the outputs: its latency is input → line change.
                observe_latency(&alarm_latency, sent_ns);
            }
            // The log comes after the outputs: it must never delay them.
            if let Some(log) = &events {
                if let Some(o) = noted {
                    log_observation(log, &o);
                }
                for t in &mut changes {
                    t.event_id = Some(log_transition(log, t));
                }
                for n in &notes {
                    log_note(log, n);
                }
                if changed {
                    log.record(Event::now(Kind::Output, describe_outputs(&outputs)));
                }
            }
            // The alerts after the log: each carries its event's id (queueing never waits either).
            if let Some(q) = &uplink {
                for t in &changes {
                    if q.push(*t) == crate::queue::Pushed::Refused {
                        let zone = zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
                        log::warn!("uplink queue full: alert for zone {zone} not queued");
                    }
                }
            }
            last_outputs = outputs;
            notes.clear();
        }
    }
}

/// A source's trouble or restore, or an ack-button press, as an event (the web records its own commands).
fn log_observation(log: &EventLog, o: &Observation) {
    match *o {
        Observation::SourceHealth { source, ok, .. } => {
            let (kind, what) =
                if ok { (Kind::Restored, "restored") } else { (Kind::Trouble, "trouble: silent or faulty") };
            let mut ev = Event::now(kind, what);
            ev.source = Some(log.source_name(source));
            log.record(ev);
        }
        Observation::Operator { zone, cmd, .. } => {
            // The long press is named as pressed: what it did (cut a delay or reset) follows as its own events.
            let what =
                if cmd == OperatorCmd::LongPress { "long-press".to_owned() } else { format!("{cmd:?}").to_lowercase() };
            let mut ev = Event::now(Kind::Operator, what);
            ev.zone = Some(zone.map_or_else(|| "all".to_owned(), |z| log.zone_name(z)));
            ev.by = Some("button".into());
            log.record(ev);
        }
        _ => {}
    }
}

/// Records a transition (with its snapshot request where it has one); returns the event's id.
fn log_transition(log: &EventLog, t: &Transition) -> u64 {
    let why: Vec<&str> = crate::event::evidence::names(t.sources).collect();
    let mut detail = format!("{} → {} ({}", t.from.label(), t.to.label(), crate::event::reason::label(t.reason));
    if !why.is_empty() {
        detail.push_str(&format!("; evidence {}", why.join(", ")));
    }
    if t.test {
        detail.push_str("; test");
    }
    detail.push(')');
    detail.push_str(&frame_note(t));
    let mut ev = Event::now(Kind::Zone, detail);
    ev.zone = Some(log.zone_name(t.zone));
    match snapshot_of(t) {
        Some(r) => log.record_with_snapshot(ev, r),
        None => log.record_id(ev),
    }
}

/// What to keep of the moment a zone went to PRE_ALARM or ALARM on vision or thermal evidence: the deciding
/// frame and its device grid. The log's writer gives it the event's id; the snapshot writer does the rest.
fn snapshot_of(t: &Transition) -> Option<crate::snapshot::Request> {
    let rising = matches!(t.to, ZoneState::PreAlarm | ZoneState::Alarm) && t.from != t.to;
    (rising && (t.vision_frame.is_some() || t.thermal_device.is_some())).then_some(crate::snapshot::Request {
        event: 0,
        frame: t.vision_frame,
        device: t.thermal_device,
    })
}

/// An output delay's change as a zone event: "delay on (300 s)", "delay cut by operator", "delay expired".
fn log_note(log: &EventLog, n: &Note) {
    let detail = match n.what {
        NoteKind::DelayOn(d) => format!("delay on ({} s, relay and siren held)", d.as_secs()),
        w => w.label().to_owned(),
    };
    let mut ev = Event::now(Kind::Zone, detail);
    ev.zone = Some(log.zone_name(n.zone));
    log.record(ev);
}

fn describe_outputs(o: &Outputs) -> String {
    format!(
        "relay {}, siren {:?}, trouble {}",
        if o.relay { "on" } else { "off" },
        o.siren,
        if o.trouble_led { "on" } else { "off" }
    )
    .to_lowercase()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{RecordingOutput, Siren};
    use crate::event::AdcReading;
    use crate::queue::Overflow;
    use crate::telemetry::Health;
    use tokio::time::Instant;

    fn smoke(pct: f32) -> Observation {
        Observation::Adc(AdcReading {
            device: 0,
            at: Instant::now(),
            smoke_pct: Some(pct),
            flame_pct: None,
            flame_digital: None,
            sent_ns: 0,
        })
    }

    /// The output delay through the real loop: ALARM shows at once, the relay and siren wait for the long
    /// press or the delay's end, and the status board says "delay on" meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_delayed_alarm_holds_relay_and_siren_until_cut_or_expired() {
        let text = "[[sensors.devices]]\nname = \"d\"\nloc_id = \"1\"\n[[zones]]\nname = \"z\"\ndevices = [\"d\"]\n\
                    smoke_readings = 1\noutput_delay_secs = 120\n";
        let c = crate::config::load_str("t.toml", text, std::path::Path::new(".")).unwrap().config;
        let rec = RecordingOutput::default();
        let applied = rec.applied.clone();
        let alarm: SharedAlarm = Arc::new(std::sync::Mutex::new(Box::new(rec)));
        let input = Queue::new("obs", 16, Overflow::DropOldest);
        let names = Arc::new(vec!["z".to_owned()]);
        let board = Arc::new(ZoneBoard::new(vec!["z".into()]));
        let task = FusionTask {
            fusion: Fusion::from_config(&c),
            input: input.clone(),
            alarm,
            uplink: None,
            zone_names: Arc::clone(&names),
            metrics: FusionMetrics::register(&Registry::new(), &names),
            zone_status: Arc::clone(&board),
            events: None,
        };
        let health = Health::new();
        let stop = CancellationToken::new();
        let run = tokio::spawn(task.run(health.register("fusion", None), stop.clone()));
        let last = || applied.lock().unwrap().last().copied().unwrap();
        let step = |secs| tokio::time::sleep(Duration::from_secs(secs));

        input.push(smoke(40.0));
        step(1).await;
        assert_eq!(board.state(0), Some(ZoneState::Alarm), "decided at once");
        assert_eq!(board.zones_json()[0]["delay_on"], true);
        assert_eq!((last().relay, last().siren), (false, Siren::Off), "outputs held");
        step(60).await;
        assert!(!last().relay, "still held a minute in");
        input.push(Observation::Operator { zone: None, cmd: OperatorCmd::LongPress, at: Instant::now() });
        step(1).await;
        assert_eq!((last().relay, last().siren), (true, Siren::Steady), "the long press cut the delay");
        assert_eq!(board.zones_json()[0]["delay_on"], false);
        assert_eq!(board.state(0), Some(ZoneState::Alarm), "a cut, not a reset");

        // Reset, alarm again, and let the delay run out.
        input.push(Observation::Operator { zone: Some(0), cmd: OperatorCmd::Reset, at: Instant::now() });
        step(1).await;
        input.push(smoke(40.0));
        step(1).await;
        assert_eq!(board.state(0), Some(ZoneState::Alarm));
        assert!(!last().relay);
        step(117).await;
        assert!(!last().relay, "119 s in");
        // The next half-second tick after 120 s notices the end.
        step(3).await;
        assert_eq!((last().relay, last().siren), (true, Siren::Steady), "expired: outputs on");
        stop.cancel();
        run.await.unwrap().unwrap();
    }
}
