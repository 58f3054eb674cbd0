//! `[[zones]]`: which cameras and devices form a zone, and the fusion rule (thresholds, persistence, how many
//! kinds of evidence) that turns their readings into its alarm state.

use serde::Deserialize;

use super::{Camera, PathSeg, Sensors, key};

/// Longest zone name in bytes: every alert carries it, and the wire format sizes its field by this.
pub const MAX_ZONE_NAME: usize = 24;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Unique name (at most 24 characters; it travels in every alert).
    pub name: String,
    /// Cameras watching this zone.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Sensor devices in this zone.
    #[serde(default)]
    pub devices: Vec<String>,
    /// A vision score at or above this counts as fire/smoke evidence. Default 0.35.
    #[serde(default = "default_vision_threshold")]
    pub vision_threshold: f32,
    /// Consecutive frames above the threshold before vision counts. Default 3.
    #[serde(default = "default_vision_persist")]
    pub vision_frames: u32,
    /// Hottest thermal pixel at or above this is thermal evidence. Default 60 °C.
    #[serde(default = "default_thermal_c")]
    pub thermal_alarm_c: f32,
    /// Consecutive thermal frames over `thermal_alarm_c` (or rising fast) before thermal counts. Default 2.
    #[serde(default = "default_thermal_frames")]
    pub thermal_frames: u32,
    /// A hot cluster rising at least this fast (°C/min) is thermal evidence even below `thermal_alarm_c`
    /// (the rate-of-rise rule of heat detectors). 0 disables. Default 15.
    #[serde(default = "default_rise")]
    pub rise_alarm_c_per_min: f32,
    /// The rising cluster must span at least this many pixels. Default 2.
    #[serde(default = "default_rise_pixels")]
    pub rise_min_pixels: u16,
    /// A hottest pixel at or above this raises ALARM on its own. Default 120 °C.
    #[serde(default = "default_critical_c")]
    pub thermal_critical_c: f32,
    /// Consecutive smoke readings at the device's alarm level before smoke counts. Default 2.
    #[serde(default = "default_smoke_readings")]
    pub smoke_readings: u32,
    /// Independent kinds of evidence (vision, thermal, smoke, flame) needed within `window_secs` for ALARM.
    /// One kind alone gives PRE_ALARM. Default 2.
    #[serde(default = "default_min_sources")]
    pub min_sources: u32,
    /// How long a piece of evidence stays valid. Default 10 s.
    #[serde(default = "default_window_secs")]
    pub window_secs: f64,
    /// Smoke alone is a confirmed fire signal in many codes; when true, smoke at its alarm level alarms on
    /// its own. Default true.
    #[serde(default = "yes")]
    pub smoke_alone_alarms: bool,
    /// Vision alone can raise ALARM (with `min_sources = 1`). Default false: a camera alone gives PRE_ALARM,
    /// because colour cues alone mistake lamps and sunsets for fire.
    #[serde(default)]
    pub vision_alone_alarms: bool,
    /// ALARM is latched until an operator resets it (button or `POST /api/zones/NAME/reset`); with this set,
    /// it also resets by itself after that many seconds without any evidence. 0 = operator only. Default 0.
    #[serde(default)]
    pub auto_reset_secs: f64,
    /// Alarm verification (UL 864 style): a detection that would alarm first starts a retard/reset period,
    /// then a confirmation window in which a second detection latches ALARM; without one the zone returns to
    /// normal. Never applied to critical heat or to an operator's test. Default false.
    #[serde(default)]
    pub verification: bool,
    /// Retard/reset period of the verification, in seconds: evidence seen during it does not count (the
    /// detector is being reset). At most 60 (UL 864). Default 30.
    #[serde(default = "default_retard_secs")]
    pub verification_retard_secs: f64,
    /// Confirmation window after the retard, in seconds: a second detection in it latches ALARM. At least 60
    /// (UL 864), at most 3600. Default 60.
    #[serde(default = "default_confirm_secs")]
    pub verification_confirm_secs: f64,
    /// Output delay (EN 54-2 §7.11 style), in seconds: ALARM is decided, logged and sent at once, but the relay
    /// and siren are held this long ("delay on"); a long press of the ack button or `POST
    /// /api/zones/NAME/cut-delay` ends it early. Critical heat is never delayed. 0 = off, at most 600. Default 0.
    #[serde(default)]
    pub output_delay_secs: f64,
}

/// Longest retard/reset period UL 864 allows for alarm verification.
pub const MAX_RETARD_SECS: f64 = 60.0;
/// Shortest confirmation window UL 864 allows.
pub const MIN_CONFIRM_SECS: f64 = 60.0;
/// Longest output delay EN 54-2 §7.11 allows (10 minutes).
pub const MAX_OUTPUT_DELAY_SECS: f64 = 600.0;

fn yes() -> bool {
    true
}
fn default_vision_threshold() -> f32 {
    0.35
}
fn default_vision_persist() -> u32 {
    3
}
fn default_thermal_c() -> f32 {
    60.0
}
fn default_thermal_frames() -> u32 {
    2
}
fn default_rise() -> f32 {
    15.0
}
fn default_rise_pixels() -> u16 {
    2
}
fn default_critical_c() -> f32 {
    120.0
}
fn default_smoke_readings() -> u32 {
    2
}
fn default_min_sources() -> u32 {
    2
}
fn default_window_secs() -> f64 {
    10.0
}
fn default_retard_secs() -> f64 {
    30.0
}
fn default_confirm_secs() -> f64 {
    MIN_CONFIRM_SECS
}

/// Semantic checks of the zones against the cameras and devices they name.
pub(super) fn validate(
    zones: &[Zone],
    cameras: &[Camera],
    sensors: &Sensors,
    push: &mut impl FnMut(Vec<PathSeg>, String),
) {
    let mut seen = std::collections::HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let at = |k: &str| vec![key("zones"), PathSeg::Index(i), key(k)];
        if z.name.is_empty() || z.name.len() > MAX_ZONE_NAME {
            push(at("name"), format!("zone name must be 1..={} bytes", MAX_ZONE_NAME));
        } else if let Some(why) = unaddressable(&z.name) {
            push(at("name"), format!("zone name `{}` {why}", z.name));
        } else if !seen.insert(z.name.as_str()) {
            push(at("name"), format!("duplicate zone name `{}`", z.name));
        }
        if z.cameras.is_empty() && z.devices.is_empty() {
            push(at("name"), format!("zone `{}` has no cameras and no devices", z.name));
        }
        for (j, cam) in z.cameras.iter().enumerate() {
            if !cameras.iter().any(|k| &k.name == cam) {
                push(
                    vec![key("zones"), PathSeg::Index(i), key("cameras"), PathSeg::Index(j)],
                    format!("zone `{}` names camera `{cam}`, which is not defined", z.name),
                );
            }
        }
        for (j, dev) in z.devices.iter().enumerate() {
            if !sensors.devices.iter().any(|k| &k.name == dev) {
                push(
                    vec![key("zones"), PathSeg::Index(i), key("devices"), PathSeg::Index(j)],
                    format!("zone `{}` names device `{dev}`, which is not defined in [[sensors.devices]]", z.name),
                );
            }
        }
        for (k, v) in [
            ("vision_frames", z.vision_frames),
            ("thermal_frames", z.thermal_frames),
            ("smoke_readings", z.smoke_readings),
        ] {
            if !(1..=10_000).contains(&v) {
                push(at(k), format!("{k} must be 1..=10000, got {v}"));
            }
        }
        if !(1..=768).contains(&z.rise_min_pixels) {
            push(
                at("rise_min_pixels"),
                format!("rise_min_pixels must be 1..=768 (the array), got {}", z.rise_min_pixels),
            );
        }
        for (k, v) in [("thermal_alarm_c", z.thermal_alarm_c), ("thermal_critical_c", z.thermal_critical_c)] {
            if !(-40.0..=1000.0).contains(&v) {
                push(at(k), format!("{k} must be -40..=1000 °C, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&z.vision_threshold) {
            push(at("vision_threshold"), format!("vision_threshold must be 0..=1, got {}", z.vision_threshold));
        }
        if z.thermal_critical_c < z.thermal_alarm_c {
            push(at("thermal_critical_c"), "thermal_critical_c must be at least thermal_alarm_c".into());
        }
        if !(0.0..=10_000.0).contains(&z.rise_alarm_c_per_min) {
            push(at("rise_alarm_c_per_min"), "rise_alarm_c_per_min must be 0..=10000".into());
        }
        if z.min_sources == 0 || z.min_sources > 4 {
            push(at("min_sources"), format!("min_sources must be 1..=4, got {}", z.min_sources));
        }
        if !(z.window_secs > 0.0 && z.window_secs <= 3600.0) {
            push(at("window_secs"), format!("window_secs must be in (0, 3600], got {}", z.window_secs));
        }
        if !(z.auto_reset_secs >= 0.0 && z.auto_reset_secs <= 86_400.0) {
            push(at("auto_reset_secs"), format!("auto_reset_secs must be 0..=86400, got {}", z.auto_reset_secs));
        }
        // The limits of the standards the options follow: a longer retard or a shorter window would no longer
        // be UL 864 verification, a longer delay no longer an EN 54-2 output delay.
        if !(0.0..=MAX_RETARD_SECS).contains(&z.verification_retard_secs) {
            push(
                at("verification_retard_secs"),
                format!("verification_retard_secs must be 0..=60 (UL 864), got {}", z.verification_retard_secs),
            );
        }
        if !(MIN_CONFIRM_SECS..=3600.0).contains(&z.verification_confirm_secs) {
            push(
                at("verification_confirm_secs"),
                format!("verification_confirm_secs must be 60..=3600 (UL 864), got {}", z.verification_confirm_secs),
            );
        }
        if !(0.0..=MAX_OUTPUT_DELAY_SECS).contains(&z.output_delay_secs) {
            push(
                at("output_delay_secs"),
                format!("output_delay_secs must be 0..=600 (EN 54-2 §7.11), got {}", z.output_delay_secs),
            );
        }
    }
}

/// Why a zone name could not be addressed in `/api/zones/{name}/...` or as an MQTT topic level, if it could not.
fn unaddressable(name: &str) -> Option<&'static str> {
    if name == "all" {
        return Some("is reserved: `/api/zones/all/...` addresses every zone");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) || name.starts_with('.') {
        return Some("may use only letters, digits, `-`, `_` and `.` (not first): it is a URL path and topic segment");
    }
    None
}
