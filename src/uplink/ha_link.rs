//! The IO side of Home Assistant discovery on one MQTT connection: subscribes to Home Assistant's birth topic
//! and (with buttons) the command topics, publishes what `ha` builds, and queues button presses for fusion as
//! the HTTP API does. It only reads the appliance's state and queues commands: the alarm outputs never wait
//! for MQTT.

use std::sync::Arc;

use rumqttc::{AsyncClient, Publish, QoS};
use tokio::time::{Duration, Instant};

use super::ha::{self, Diagnostics, HaModel, Schedule};
use crate::event::{Observation, Transition, ZoneState};
use crate::prng::XorShift64;
use crate::queue::{Pushed, Queue};
use crate::telemetry::{Counter, Registry};

/// What Home Assistant is shown of the appliance, read at publish time.
pub trait SiteView: Send + Sync {
    fn zone_state(&self, zone: usize) -> ZoneState;
    /// Sources in `HaModel::sources` order: cameras, then sensor devices.
    fn source_online(&self, source: usize) -> bool;
    /// Fills everything but the spool depth.
    fn diagnostics(&self, out: &mut Diagnostics);
    /// The site's `wire::health` bits for heartbeats (`STALE`, `NIGHT`, `DELAY`); the uplink adds its own.
    fn health_bits(&self) -> u32;
    /// The event id of the newest alarm snapshot with a camera picture; None while there is none.
    fn newest_picture(&self) -> Option<u64> {
        None
    }
    /// That snapshot's picture (`snapshot.jpg`, the deciding frame with the boxes).
    fn picture(&self, _id: u64) -> Option<Vec<u8>> {
        None
    }
}

/// Everything the uplink needs for Home Assistant, built once at start-up.
pub struct HaSetup {
    pub model: HaModel,
    pub view: Arc<dyn SiteView>,
    /// Where button presses go: fusion's observation queue.
    pub operator: Queue<Observation>,
    pub commands_accepted: Counter,
    pub commands_refused: Counter,
}

impl std::fmt::Debug for HaSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaSetup").field("model", &self.model).finish_non_exhaustive()
    }
}

impl HaSetup {
    pub fn new(model: HaModel, view: Arc<dyn SiteView>, operator: Queue<Observation>, reg: &Registry) -> Self {
        let c = |result| {
            reg.counter(
                "ember_ha_commands_total",
                "Home Assistant button presses received, by result (refused: button not configured or unknown).",
                &[("result", result)],
            )
        };
        HaSetup { model, view, operator, commands_accepted: c("accepted"), commands_refused: c("refused") }
    }
}

/// How often source connectivity and the newest alarm picture are looked at (published only when they change).
const SOURCE_POLL: Duration = Duration::from_secs(1);

/// Hands one publish to the client: false when its queue is full.
pub(super) type Sink<'a> = dyn FnMut(String, QoS, bool, Vec<u8>) -> bool + 'a;

/// One connection's Home Assistant state.
pub(super) struct HaLink<'a> {
    setup: &'a HaSetup,
    schedule: Schedule,
    sources: Vec<Option<bool>>,
    next_poll: Instant,
    rng: XorShift64,
    diag: Diagnostics,
    /// The snapshot last published on the picture topic (None: not yet on this connection).
    picture: Option<u64>,
}

impl<'a> HaLink<'a> {
    pub(super) fn new(setup: &'a HaSetup) -> Self {
        HaLink {
            setup,
            schedule: Schedule::new(setup.model.diagnostics),
            sources: vec![None; setup.model.sources.len()],
            next_poll: Instant::now(),
            rng: XorShift64::from_clock(setup.model.device_id as u64),
            diag: Diagnostics::default(),
            picture: None,
        }
    }

    /// Subscribes and publishes everything.
    pub(super) fn on_connected(&mut self, client: &AsyncClient, out: &mut Sink<'_>, spool: u64) {
        let m = &self.setup.model;
        for topic in std::iter::once(m.birth_topic()).chain(m.command_filter()) {
            if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                log::warn!("home assistant: cannot subscribe to {topic}: {e}");
            }
        }
        self.send_all(out, Instant::now(), spool);
    }

    fn send_all(&mut self, out: &mut Sink<'_>, now: Instant, spool: u64) {
        let m = &self.setup.model;
        let mut ok = out(m.discovery_topic(), QoS::AtLeastOnce, true, m.discovery().to_string().into_bytes());
        for z in 0..m.zones.len() {
            ok &= self.zone(out, z, self.setup.view.zone_state(z));
        }
        self.sources.iter_mut().for_each(|s| *s = None);
        ok &= self.poll_sources(out);
        self.picture = None;
        ok &= self.poll_picture(out);
        self.schedule.sent_all(now);
        ok &= self.diagnostics(out, spool);
        if !ok {
            // The client's queue was full: try the whole set again shortly.
            self.schedule.on_birth(now, 0.0);
        }
    }

    fn zone(&self, out: &mut Sink<'_>, zone: usize, s: ZoneState) -> bool {
        match self.setup.model.zone_topic(zone) {
            Some(t) => out(t, QoS::AtLeastOnce, true, ha::zone_payload(s).into_bytes()),
            None => true,
        }
    }

    fn poll_sources(&mut self, out: &mut Sink<'_>) -> bool {
        let mut ok = true;
        for i in 0..self.sources.len() {
            let online = self.setup.view.source_online(i);
            if self.sources[i] == Some(online) {
                continue;
            }
            let Some(t) = self.setup.model.source_topic(i) else { continue };
            if out(t, QoS::AtLeastOnce, true, ha::source_payload(online).as_bytes().to_vec()) {
                self.sources[i] = Some(online);
            } else {
                ok = false;
            }
        }
        ok
    }

    /// Publishes the newest alarm picture when it is not the one last sent (retained: Home Assistant shows it
    /// after a restart too). Read from the snapshot store here, on the uplink task, a few tens of KB per alarm.
    fn poll_picture(&mut self, out: &mut Sink<'_>) -> bool {
        let m = &self.setup.model;
        let Some(id) = m.picture.then(|| self.setup.view.newest_picture()).flatten() else { return true };
        if self.picture == Some(id) {
            return true;
        }
        let Some(jpeg) = self.setup.view.picture(id) else { return true };
        if !out(m.picture_topic(), QoS::AtLeastOnce, true, jpeg) {
            return false;
        }
        self.picture = Some(id);
        true
    }

    fn diagnostics(&mut self, out: &mut Sink<'_>, spool: u64) -> bool {
        self.setup.view.diagnostics(&mut self.diag);
        self.diag.spool_depth = spool;
        out(
            self.setup.model.diagnostics_topic(),
            QoS::AtMostOnce,
            false,
            ha::diagnostics_payload(&self.diag).into_bytes(),
        )
    }

    /// A zone changed: its state, and an event when an operator caused it.
    pub(super) fn on_transition(&self, out: &mut Sink<'_>, t: &Transition) {
        self.zone(out, t.zone, t.to);
        let name = self.setup.model.zones.get(t.zone).map(|z| z.name.as_str()).unwrap_or("?");
        if let Some(e) = ha::event_payload(t.reason, name, t.to) {
            out(self.setup.model.event_topic(), QoS::AtLeastOnce, false, e.into_bytes());
        }
    }

    /// A message on a subscribed topic.
    pub(super) fn on_message(&mut self, p: &Publish) {
        let m = &self.setup.model;
        if p.topic == m.birth_topic() {
            if &p.payload[..] == b"online" {
                let jitter = self.rng.unit();
                self.schedule.on_birth(Instant::now(), jitter);
                log::info!("home assistant came online: discovery will be re-sent");
            }
            return;
        }
        match m.parse_command(&p.topic, &p.payload) {
            Ok(c) => {
                let at = Instant::now();
                if self.setup.operator.push(Observation::Operator { zone: c.zone, cmd: c.cmd, at }) == Pushed::Refused {
                    self.setup.commands_refused.inc();
                    log::warn!("home assistant: {:?} not queued (observation queue full)", c.cmd);
                    return;
                }
                self.setup.commands_accepted.inc();
                let zone = c.zone.and_then(|z| m.zones.get(z)).map(|z| z.name.as_str()).unwrap_or("all");
                log::info!("operator (home assistant): {:?} for zone {zone}", c.cmd);
            }
            Err(why) => {
                self.setup.commands_refused.inc();
                log::warn!("home assistant command refused: {why}");
            }
        }
    }

    /// The next time `tick` has something to do.
    pub(super) fn next_due(&self) -> Instant {
        self.schedule.next().map_or(self.next_poll, |t| t.min(self.next_poll))
    }

    pub(super) fn tick(&mut self, out: &mut Sink<'_>, spool: u64) {
        let now = Instant::now();
        if self.schedule.resend_due(now) {
            self.send_all(out, now, spool);
            return;
        }
        if now >= self.next_poll {
            self.next_poll = now + SOURCE_POLL;
            self.poll_sources(out);
            self.poll_picture(out);
        }
        if self.schedule.take_diagnostics(now) {
            self.diagnostics(out, spool);
        }
    }
}
