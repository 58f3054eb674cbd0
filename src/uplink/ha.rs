//! Home Assistant MQTT discovery, as pure functions of the configuration and the appliance's state: the one
//! retained device-based discovery message (`<discovery prefix>/device/<unique id>/config` with `dev`, `o` and
//! `cmps`), the state payloads its entities read, the operator commands its buttons send, and when to publish
//! (re-sending after Home Assistant's birth message, rate-limiting the diagnostics). `ha_link` does the IO.
//!
//! Topics, under the uplink's `<topic_prefix>/<device_id>`: `status` (availability, the last will),
//! `zone/<zone>` (retained JSON: state, fire, trouble), `source/<source>` (retained `online`/`offline`),
//! `diagnostics` (JSON, not retained: `expire_after` turns the sensors unavailable when it stops), `event`
//! (operator actions) and `command/<zone>/<action>` (buttons, only those configured).

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::config::{Config, HaButton};
use crate::event::{OperatorCmd, ZoneState, reason};

/// Largest MQTT packet the uplink sends: room for the discovery message of hundreds of zones.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Payload of a button press (Home Assistant's default).
pub const PRESS: &str = "PRESS";

/// The fire binary_sensor's device class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireClass {
    Smoke,
    Heat,
}

#[derive(Debug, Clone)]
pub struct HaZone {
    pub name: String,
    /// Used in unique ids and topics: stable as long as the name is.
    pub slug: String,
    pub class: FireClass,
}

#[derive(Debug, Clone)]
pub struct HaSource {
    pub name: String,
    pub slug: String,
    pub camera: bool,
}

/// What Home Assistant is told about this appliance.
#[derive(Debug, Clone)]
pub struct HaModel {
    pub device_id: u32,
    pub site: String,
    /// `<topic_prefix>/<device_id>`.
    pub base: String,
    pub discovery_prefix: String,
    pub zones: Vec<HaZone>,
    pub sources: Vec<HaSource>,
    pub buttons: Vec<HaButton>,
    pub diagnostics: Duration,
    /// An image entity shows the newest alarm snapshot (a site with cameras).
    pub picture: bool,
}

/// The diagnostic readings, None where unknown (Home Assistant shows "unknown").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics {
    pub hottest_c: Option<f32>,
    pub smoke_pct: Option<f32>,
    /// Measured frames per second, per camera in config order.
    pub camera_fps: Vec<Option<f32>>,
    pub spool_depth: u64,
}

/// A button press Home Assistant sent: the zone index (None = every zone) and the operator command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub zone: Option<usize>,
    pub cmd: OperatorCmd,
}

/// Lower-case ASCII letters and digits, everything else `_`: safe in unique ids, object ids and topic levels.
pub fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Slugs of `names`, made unique by appending `_<index>` where two names map to the same slug.
fn unique_slugs<'a>(names: impl Iterator<Item = &'a str>, taken: &mut Vec<String>) -> Vec<String> {
    names
        .enumerate()
        .map(|(i, n)| {
            let mut s = slug(n);
            if taken.contains(&s) {
                s = format!("{s}_{i}");
            }
            taken.push(s.clone());
            s
        })
        .collect()
}

impl HaModel {
    pub fn from_config(c: &Config) -> Self {
        let mut taken = vec!["all".to_owned()];
        let zone_slugs = unique_slugs(c.zones.iter().map(|z| z.name.as_str()), &mut taken);
        let zones = c
            .zones
            .iter()
            .zip(zone_slugs)
            .map(|(z, slug)| {
                // Cameras see smoke, and so does a device's smoke channel unless its alarm level is out of reach
                // (100 %): a zone left with thermal arrays alone is a heat detector.
                let smoke = !z.cameras.is_empty()
                    || c.sensors
                        .devices
                        .iter()
                        .filter(|d| z.devices.contains(&d.name))
                        .any(|d| d.smoke_alarm_pct < 100.0);
                HaZone {
                    name: z.name.clone(),
                    slug,
                    class: if smoke || z.devices.is_empty() { FireClass::Smoke } else { FireClass::Heat },
                }
            })
            .collect();
        let mut taken = Vec::new();
        let names: Vec<(&str, bool)> = c
            .cameras
            .iter()
            .map(|k| (k.name.as_str(), true))
            .chain(c.sensors.devices.iter().map(|d| (d.name.as_str(), false)))
            .collect();
        let slugs = unique_slugs(names.iter().map(|(n, _)| *n), &mut taken);
        let sources = names
            .iter()
            .zip(slugs)
            .map(|((n, camera), slug)| HaSource { name: (*n).to_owned(), slug, camera: *camera })
            .collect();
        let m = &c.uplink.mqtt;
        let mut buttons = m.buttons.clone();
        buttons.dedup();
        HaModel {
            device_id: c.site.device_id.unwrap_or_default(),
            site: c.site.name.clone(),
            base: format!("{}/{}", c.uplink.topic_prefix, c.site.device_id.unwrap_or_default()),
            discovery_prefix: m.discovery_prefix.clone(),
            zones,
            sources,
            buttons,
            diagnostics: Duration::from_secs(m.diagnostics_secs.max(1)),
            picture: !c.cameras.is_empty(),
        }
    }

    /// The device's unique id, the node of the discovery topic.
    pub fn unique_id(&self) -> String {
        format!("ember_edge_{}", self.device_id)
    }

    pub fn discovery_topic(&self) -> String {
        format!("{}/device/{}/config", self.discovery_prefix, self.unique_id())
    }

    /// Home Assistant's birth and last-will topic.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    pub fn availability_topic(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn zone_topic(&self, zone: usize) -> Option<String> {
        self.zones.get(zone).map(|z| format!("{}/zone/{}", self.base, z.slug))
    }

    pub fn source_topic(&self, source: usize) -> Option<String> {
        self.sources.get(source).map(|s| format!("{}/source/{}", self.base, s.slug))
    }

    pub fn diagnostics_topic(&self) -> String {
        format!("{}/diagnostics", self.base)
    }

    pub fn event_topic(&self) -> String {
        format!("{}/event", self.base)
    }

    /// Where the newest alarm snapshot's JPEG goes (retained), for the image entity.
    pub fn picture_topic(&self) -> String {
        format!("{}/snapshot", self.base)
    }

    /// What the appliance subscribes to for buttons; None when no button is configured.
    pub fn command_filter(&self) -> Option<String> {
        (!self.buttons.is_empty()).then(|| format!("{}/command/#", self.base))
    }

    fn command_topic(&self, zone: &str, action: &str) -> String {
        format!("{}/command/{zone}/{action}", self.base)
    }

    /// The discovery message's payload.
    pub fn discovery(&self) -> Value {
        let id = self.unique_id();
        let mut cmps = Map::new();
        let mut add = |object: String, mut c: Value| {
            c["unique_id"] = json!(format!("{id}_{object}"));
            c["object_id"] = json!(format!("{id}_{object}"));
            cmps.insert(object, c);
        };
        for z in &self.zones {
            let topic = format!("{}/zone/{}", self.base, z.slug);
            let class = match z.class {
                FireClass::Smoke => "smoke",
                FireClass::Heat => "heat",
            };
            add(
                format!("{}_fire", z.slug),
                json!({"p": "binary_sensor", "name": format!("{} fire", z.name), "device_class": class,
                    "state_topic": topic, "value_template": "{{ value_json.fire }}"}),
            );
            add(
                format!("{}_trouble", z.slug),
                json!({"p": "binary_sensor", "name": format!("{} trouble", z.name), "device_class": "problem",
                    "state_topic": topic, "value_template": "{{ value_json.trouble }}"}),
            );
            add(
                format!("{}_state", z.slug),
                json!({"p": "sensor", "name": format!("{} state", z.name), "device_class": "enum",
                    "options": ZoneState::ALL.iter().map(|s| s.label()).collect::<Vec<_>>(),
                    "state_topic": topic, "value_template": "{{ value_json.state }}", "icon": "mdi:fire-alert"}),
            );
            for (action, label) in self.zone_actions() {
                add(
                    format!("{}_{}", z.slug, action.replace('-', "_")),
                    json!({"p": "button", "name": format!("{} {label}", z.name),
                        "command_topic": self.command_topic(&z.slug, action), "payload_press": PRESS}),
                );
            }
        }
        for s in &self.sources {
            add(
                format!("{}_connected", s.slug),
                json!({"p": "binary_sensor", "name": format!("{} {}", if s.camera { "Camera" } else { "Sensor" }, s.name),
                    "device_class": "connectivity", "entity_category": "diagnostic",
                    "state_topic": format!("{}/source/{}", self.base, s.slug),
                    "payload_on": "online", "payload_off": "offline"}),
            );
        }
        let expire = self.diagnostics.as_secs() * 3;
        let diag = |name: &str, field: &str, unit: &str| {
            json!({"p": "sensor", "name": name, "entity_category": "diagnostic", "state_class": "measurement",
                "unit_of_measurement": unit, "expire_after": expire, "state_topic": self.diagnostics_topic(),
                "value_template": format!("{{{{ value_json.{field} }}}}")})
        };
        let mut hottest = diag("Hottest spot", "hottest_c", "°C");
        hottest["device_class"] = json!("temperature");
        add("hottest".into(), hottest);
        add("smoke".into(), diag("Smoke", "smoke_pct", "%"));
        add("spool_depth".into(), diag("Alerts not yet delivered", "spool_depth", "alerts"));
        for (i, s) in self.sources.iter().filter(|s| s.camera).enumerate() {
            add(format!("{}_fps", s.slug), diag(&format!("Camera {} fps", s.name), &format!("camera_fps[{i}]"), "fps"));
        }
        if self.picture {
            add(
                "snapshot".into(),
                json!({"p": "image", "name": "Alarm snapshot", "image_topic": self.picture_topic(),
                    "content_type": "image/jpeg", "icon": "mdi:fire-alert"}),
            );
        }
        add(
            "operator".into(),
            json!({"p": "event", "name": "Operator action", "state_topic": self.event_topic(),
                "event_types": EVENT_TYPES}),
        );
        json!({
            "dev": {"ids": [id], "name": format!("ember-edge {}", self.site), "mf": "ember-edge",
                "mdl": "ember-edge fire detection appliance", "sw": env!("CARGO_PKG_VERSION"),
                "sn": self.device_id.to_string()},
            "o": {"name": "ember-edge", "sw": env!("CARGO_PKG_VERSION")},
            "avty_t": self.availability_topic(),
            "pl_avail": "online",
            "pl_not_avail": "offline",
            "qos": 1,
            "cmps": cmps,
        })
    }

    /// The command-topic actions and button names of the configured buttons.
    fn zone_actions(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = Vec::new();
        for b in &self.buttons {
            match b {
                HaButton::Acknowledge => v.push(("acknowledge", "acknowledge")),
                HaButton::Silence => v.push(("silence", "silence")),
                HaButton::Test => v.extend([("test-start", "start test"), ("test-end", "end test")]),
                HaButton::CutDelay => v.push(("cut-delay", "cut output delay")),
            }
        }
        v
    }

    /// A message on the command topic: the command, or why it is refused.
    pub fn parse_command(&self, topic: &str, payload: &[u8]) -> Result<Command, String> {
        let rest = topic
            .strip_prefix(self.base.as_str())
            .and_then(|r| r.strip_prefix("/command/"))
            .ok_or_else(|| format!("`{topic}` is not a command topic"))?;
        let (zone, action) = rest.split_once('/').ok_or_else(|| format!("`{topic}`: no action"))?;
        if payload != PRESS.as_bytes() {
            return Err(format!("`{topic}`: payload is not {PRESS}"));
        }
        let (button, cmd) = match action {
            "acknowledge" => (HaButton::Acknowledge, OperatorCmd::Acknowledge),
            "silence" => (HaButton::Silence, OperatorCmd::Silence),
            "test-start" => (HaButton::Test, OperatorCmd::TestStart),
            "test-end" => (HaButton::Test, OperatorCmd::TestEnd),
            "cut-delay" => (HaButton::CutDelay, OperatorCmd::CutDelay),
            _ => return Err(format!("`{topic}`: unknown action `{action}`")),
        };
        if !self.buttons.contains(&button) {
            return Err(format!("`{topic}`: the {action} button is not configured ([uplink.mqtt] buttons)"));
        }
        let zone = if zone == "all" {
            None
        } else {
            Some(self.zones.iter().position(|z| z.slug == zone).ok_or_else(|| format!("`{topic}`: unknown zone"))?)
        };
        Ok(Command { zone, cmd })
    }
}

/// The zone's retained state: `{"state": <label>, "fire": ON|OFF, "trouble": ON|OFF}`.
pub fn zone_payload(s: ZoneState) -> String {
    let on = |b: bool| if b { "ON" } else { "OFF" };
    json!({"state": s.label(), "fire": on(s.is_alarm()), "trouble": on(s == ZoneState::Trouble)}).to_string()
}

pub fn source_payload(online: bool) -> &'static str {
    if online { "online" } else { "offline" }
}

/// The event entity's types.
pub const EVENT_TYPES: [&str; 5] = ["acknowledge", "silence", "reset", "test_start", "test_end"];

/// The event for a transition an operator caused; None for any other.
pub fn event_payload(reason: u8, zone: &str, to: ZoneState) -> Option<String> {
    let kind = match reason {
        reason::OPERATOR_ACK => "acknowledge",
        reason::OPERATOR_SILENCE => "silence",
        reason::OPERATOR_RESET => "reset",
        reason::TEST_START => "test_start",
        reason::TEST_END => "test_end",
        _ => return None,
    };
    Some(json!({"event_type": kind, "zone": zone, "state": to.label()}).to_string())
}

pub fn diagnostics_payload(d: &Diagnostics) -> String {
    let r1 = |v: Option<f32>| v.filter(|x| x.is_finite()).map(|x| (x as f64 * 10.0).round() / 10.0);
    json!({"hottest_c": r1(d.hottest_c), "smoke_pct": r1(d.smoke_pct),
        "camera_fps": d.camera_fps.iter().map(|f| r1(*f)).collect::<Vec<_>>(), "spool_depth": d.spool_depth})
    .to_string()
}

/// When to (re-)send what: discovery and states at connect and a random short delay after Home Assistant's
/// birth message (so a fleet does not answer a restarting Home Assistant all at once), diagnostics at most
/// once per period.
#[derive(Debug)]
pub struct Schedule {
    period: Duration,
    resend_at: Option<Instant>,
    next_diag: Option<Instant>,
}

impl Schedule {
    pub fn new(period: Duration) -> Self {
        Schedule { period, resend_at: None, next_diag: None }
    }

    /// Home Assistant came online; `jitter` in 0..1 picks the delay within 0.5..=3 s.
    pub fn on_birth(&mut self, now: Instant, jitter: f64) {
        if self.resend_at.is_none() {
            self.resend_at = Some(now + Duration::from_millis(500 + (jitter.clamp(0.0, 1.0) * 2500.0) as u64));
        }
    }

    /// Everything was just sent (connect or re-send).
    pub fn sent_all(&mut self, now: Instant) {
        self.resend_at = None;
        self.next_diag = Some(now + self.period);
    }

    pub fn resend_due(&self, now: Instant) -> bool {
        self.resend_at.is_some_and(|t| now >= t)
    }

    /// True (and the next one scheduled) when diagnostics may go out now.
    pub fn take_diagnostics(&mut self, now: Instant) -> bool {
        match self.next_diag {
            Some(t) if now < t => false,
            _ => {
                self.next_diag = Some(now + self.period);
                true
            }
        }
    }

    /// The next instant anything is due.
    pub fn next(&self) -> Option<Instant> {
        match (self.resend_at, self.next_diag) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
#[path = "ha_tests.rs"]
mod tests;
