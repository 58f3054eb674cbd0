//! Config of the sensor link: TCP listeners, serial ports, the devices we expect (identity, command mode,
//! thermal conversion, ADC thresholds and supervision) and simulated devices.

use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensors {
    /// TCP listeners for EmberEye-protocol devices (devices connect to us). Default ["127.0.0.1:4888"]:
    /// loopback, so a fresh install exposes nothing; set "0.0.0.0:4888" on a board.
    #[serde(default = "default_sensor_listen")]
    pub listen: Vec<SocketAddr>,
    /// Most simultaneous device connections; more are refused. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most simultaneous connections from one address; more are refused. Default 16.
    #[serde(default = "default_max_per_ip")]
    pub max_connections_per_ip: usize,
    /// A connection that has not spoken for a configured device within this is closed, so anonymous
    /// connections cannot hold the slots real devices need. Default 10 s.
    #[serde(default = "default_identify_secs")]
    pub identify_secs: u64,
    /// A device silent this long is offline (trouble, not alarm). Default 30 s.
    #[serde(default = "default_offline_secs")]
    pub offline_after_secs: u64,
    /// Devices we expect, matched by location id or serial number (or peer IP / serial port).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Devices on serial ports (UART bridges), read with the same decoder as TCP.
    #[serde(default)]
    pub serial: Vec<SerialPort>,
}

impl Default for Sensors {
    fn default() -> Self {
        Sensors {
            listen: default_sensor_listen(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_per_ip(),
            identify_secs: default_identify_secs(),
            offline_after_secs: default_offline_secs(),
            devices: Vec::new(),
            serial: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceMode {
    /// The device streams after `PERIOD_ON`.
    Continuous,
    /// The device sends one frame per `REQUEST1`, sent every `poll_secs`.
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThermalMode {
    /// EmberEye's formula (raw/100 + 27): for side-by-side comparison only; it under-reads real heat badly.
    Compat,
    /// The Melexis MLX90640 algorithm with the device's own EEPROM calibration: real temperatures.
    Calibrated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Unique name, used by zones and in metrics labels.
    pub name: String,
    /// Location id the device announces (`#locid:` or embedded as in `#frame1234:`).
    #[serde(default)]
    pub loc_id: Option<String>,
    /// Serial number the device announces (`#serialno:`).
    #[serde(default)]
    pub serial: Option<String>,
    /// Peer IP of the device. It identifies the device when it announces nothing (static map, like
    /// EmberEye's), and it pins the device: packets for it from any other address are dropped as impostors.
    #[serde(default)]
    pub ip: Option<std::net::IpAddr>,
    /// Streaming or polled. Default "continuous".
    #[serde(default = "default_mode")]
    pub mode: DeviceMode,
    /// Seconds between `REQUEST1` polls (mode "on_demand"). Default 5.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: f64,
    /// Seconds between `EEPROM1` re-reads after the one at connect; 0 = only at connect. Default 3600.
    #[serde(default = "default_eeprom_secs")]
    pub eeprom_refresh_secs: f64,
    /// How thermal frames become temperatures. Default "calibrated".
    #[serde(default = "default_thermal_mode")]
    pub thermal: ThermalMode,
    /// Emissivity of the scene for calibrated mode (0.1..=1). Default 0.95.
    #[serde(default = "default_emissivity")]
    pub emissivity: f32,
    /// Pixels at or above this are "hot" and grouped into clusters. Default 50 °C.
    #[serde(default = "default_hot_c")]
    pub hot_cluster_c: f32,
    /// Window over which the rate of rise is fitted. Default 60 s.
    #[serde(default = "default_rise_window")]
    pub rise_window_secs: f32,
    /// Smoke channel (ADC1) alarm level in percent of full scale. Default 25.
    #[serde(default = "default_smoke_pct")]
    pub smoke_alarm_pct: f32,
    /// Analog flame channel (ADC2) level in percent that counts as flame; None ignores ADC2 (the real
    /// device idles at 32 %, already above EmberEye's 25 %). Default none.
    #[serde(default)]
    pub flame_alarm_pct: Option<f32>,
    /// An ADC channel at 0 or full scale this many readings in a row is stuck (trouble). Default 5.
    #[serde(default = "default_rail_readings")]
    pub adc_rail_readings: u32,
    /// A smoke channel that repeats the exact same value this long is dead (trouble); 0 disables. Default 90 s,
    /// so the fault shows within 100 s.
    #[serde(default = "default_static_secs")]
    pub adc_static_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// Device path, e.g. "/dev/ttyAMA0" or a udev symlink like "/dev/ember-thermal0".
    pub path: String,
    /// Baud rate. Default 115200.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 5..=8. Default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Default "none".
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Device name this port belongs to when the device announces no id. Optional.
    #[serde(default)]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Room temperature, clean air.
    Idle,
    /// Idle for `fire_after_secs`, then a fire: a hot spot rising at 12 °C/s and smoke building.
    Fire,
    /// Idle, then smoke without much heat (smouldering).
    Smoke,
    /// Idle room, but the link drops every few frames and some packets arrive corrupted.
    Flaky,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulator {
    /// Location id the simulated device announces; match it with a [[sensors.devices]] entry.
    pub loc_id: String,
    /// Serial number it announces. Default "SIM0001".
    #[serde(default = "default_serial")]
    pub serial: String,
    /// What the simulated room does. Default "idle".
    #[serde(default = "default_scenario")]
    pub scenario: Scenario,
    /// Seconds between frames. Default 1.
    #[serde(default = "default_sim_interval")]
    pub interval_secs: f64,
    /// Seconds of idle before the fire or smoke starts. Default 3.
    #[serde(default = "default_fire_after")]
    pub fire_after_secs: f64,
}

fn default_sensor_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 4888))]
}
fn default_max_connections() -> usize {
    256
}
fn default_max_per_ip() -> usize {
    16
}
fn default_identify_secs() -> u64 {
    10
}
fn default_offline_secs() -> u64 {
    30
}
fn default_mode() -> DeviceMode {
    DeviceMode::Continuous
}
fn default_poll_secs() -> f64 {
    5.0
}
fn default_eeprom_secs() -> f64 {
    3600.0
}
fn default_thermal_mode() -> ThermalMode {
    ThermalMode::Calibrated
}
fn default_emissivity() -> f32 {
    0.95
}
fn default_hot_c() -> f32 {
    50.0
}
fn default_rise_window() -> f32 {
    60.0
}
fn default_smoke_pct() -> f32 {
    25.0
}
fn default_rail_readings() -> u32 {
    5
}
/// 90 s: a dead smoke channel is then TROUBLE within the 100 s EN 54-2 gives a panel to show a fault (the
/// reading interval adds at most a few seconds; `tests/trouble_bound.rs` proves it).
fn default_static_secs() -> f64 {
    90.0
}
fn default_baud() -> u32 {
    115_200
}
fn default_data_bits() -> u8 {
    8
}
fn default_parity() -> Parity {
    Parity::None
}
fn default_stop_bits() -> u8 {
    1
}
fn default_serial() -> String {
    "SIM0001".into()
}
fn default_scenario() -> Scenario {
    Scenario::Idle
}
fn default_sim_interval() -> f64 {
    1.0
}
fn default_fire_after() -> f64 {
    3.0
}

use super::{PathSeg, key};

/// Semantic checks of the sensor section.
pub(super) fn validate(s: &Sensors, has_simulators: bool, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    let mut seen = std::collections::HashSet::new();
    for (i, d) in s.devices.iter().enumerate() {
        let at = |k: &str| vec![key("sensors"), key("devices"), PathSeg::Index(i), key(k)];
        if !seen.insert(d.name.as_str()) {
            push(at("name"), format!("duplicate device name `{}`", d.name));
        }
        let bound_by_port = s.serial.iter().any(|p| p.device.as_deref() == Some(d.name.as_str()));
        if d.loc_id.is_none() && d.serial.is_none() && d.ip.is_none() && !bound_by_port {
            push(at("name"), format!("device `{}` needs a loc_id, serial, ip or a serial port naming it", d.name));
        }
        if d.mode == DeviceMode::OnDemand && d.ip.is_none() && !bound_by_port {
            push(
                at("mode"),
                format!(
                    "on-demand device `{}` needs `ip` or a serial port naming it: it is polled before it says who it is",
                    d.name
                ),
            );
        }
        if !(0.0..=100.0).contains(&d.smoke_alarm_pct) {
            push(at("smoke_alarm_pct"), format!("smoke_alarm_pct must be 0..=100, got {}", d.smoke_alarm_pct));
        }
        if d.flame_alarm_pct.is_some_and(|f| !(0.0..=100.0).contains(&f)) {
            push(at("flame_alarm_pct"), "flame_alarm_pct must be 0..=100".into());
        }
        if !(d.poll_secs >= 1.0 && d.poll_secs <= 3600.0) {
            push(at("poll_secs"), format!("poll_secs must be 1..=3600, got {}", d.poll_secs));
        }
        if !(d.eeprom_refresh_secs == 0.0 || (60.0..=86_400.0).contains(&d.eeprom_refresh_secs)) {
            push(at("eeprom_refresh_secs"), "eeprom_refresh_secs must be 0 or 60..=86400".into());
        }
        if !(0.1..=1.0).contains(&d.emissivity) {
            push(at("emissivity"), format!("emissivity must be 0.1..=1, got {}", d.emissivity));
        }
        if !(5.0..=3600.0).contains(&d.rise_window_secs) {
            push(at("rise_window_secs"), "rise_window_secs must be 5..=3600".into());
        }
        if !(1..=10_000).contains(&d.adc_rail_readings) {
            push(at("adc_rail_readings"), format!("adc_rail_readings must be 1..=10000, got {}", d.adc_rail_readings));
        }
        if !(0.0..=86_400.0).contains(&d.adc_static_secs) {
            push(at("adc_static_secs"), format!("adc_static_secs must be 0..=86400, got {}", d.adc_static_secs));
        }
        if !(-40.0..=1000.0).contains(&d.hot_cluster_c) {
            push(at("hot_cluster_c"), format!("hot_cluster_c must be -40..=1000 °C, got {}", d.hot_cluster_c));
        }
    }
    for (i, p) in s.serial.iter().enumerate() {
        let at = |k: &str| vec![key("sensors"), key("serial"), PathSeg::Index(i), key(k)];
        if !(5..=8).contains(&p.data_bits) {
            push(at("data_bits"), format!("data_bits must be 5..=8, got {}", p.data_bits));
        }
        if !(1..=2).contains(&p.stop_bits) {
            push(at("stop_bits"), format!("stop_bits must be 1 or 2, got {}", p.stop_bits));
        }
        if p.baud == 0 {
            push(at("baud"), "baud must be positive".into());
        }
        if let Some(dev) = &p.device
            && !s.devices.iter().any(|d| &d.name == dev)
        {
            push(at("device"), format!("serial port names device `{dev}`, which is not defined"));
        }
    }
    // Every duration from here ends up added to an Instant: an absurd one would overflow it at run time.
    let at = |k: &str| vec![key("sensors"), key(k)];
    if !(1..=100_000).contains(&s.max_connections) {
        push(at("max_connections"), format!("max_connections must be 1..=100000, got {}", s.max_connections));
    }
    if !(1..=100_000).contains(&s.max_connections_per_ip) {
        push(
            at("max_connections_per_ip"),
            format!("max_connections_per_ip must be 1..=100000, got {}", s.max_connections_per_ip),
        );
    }
    if !(1..=3600).contains(&s.identify_secs) {
        push(at("identify_secs"), format!("identify_secs must be 1..=3600, got {}", s.identify_secs));
    }
    if !(1..=86_400).contains(&s.offline_after_secs) {
        push(at("offline_after_secs"), format!("offline_after_secs must be 1..=86400, got {}", s.offline_after_secs));
    }
    if has_simulators && s.listen.is_empty() {
        push(vec![key("simulator")], "simulated devices need a [sensors] listen address to connect to".into());
    }
}

/// Semantic checks of the simulated devices.
pub(super) fn validate_simulators(sims: &[Simulator], push: &mut impl FnMut(Vec<PathSeg>, String)) {
    for (i, s) in sims.iter().enumerate() {
        let at = |k: &str| vec![key("simulator"), PathSeg::Index(i), key(k)];
        if !(s.interval_secs >= 0.05 && s.interval_secs <= 3600.0) {
            push(at("interval_secs"), format!("interval_secs must be 0.05..=3600, got {}", s.interval_secs));
        }
        if !(0.0..=86_400.0).contains(&s.fire_after_secs) {
            push(at("fire_after_secs"), format!("fire_after_secs must be 0..=86400, got {}", s.fire_after_secs));
        }
        if s.loc_id.is_empty() || s.loc_id.contains([':', '!', '\n', '\r']) {
            push(at("loc_id"), "loc_id must be non-empty and free of `:`, `!` and line breaks".into());
        }
    }
}
