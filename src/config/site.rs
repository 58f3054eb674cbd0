//! `[site]`, `[runtime]` and `[alarm]`: who the appliance is and which board profile it runs on, queue sizes and
//! shutdown timing, and which driver sets the local alarm outputs.

use serde::Deserialize;

use super::{PathSeg, key};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Numeric device id carried in every alert; required when the uplink is enabled (the control room tells
    /// appliances apart by it). No default.
    #[serde(default)]
    pub device_id: Option<u32>,
    /// Human-readable name for logs. Default "ember-edge".
    #[serde(default = "default_site_name")]
    pub name: String,
    /// The board profile (relative to this file), e.g. "../board/rpi4.toml": GPIO lines, cameras, UARTs.
    #[serde(default)]
    pub board: Option<String>,
}

impl Default for Site {
    fn default() -> Self {
        Site { device_id: None, name: default_site_name(), board: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Capacity of the queue from sources to fusion (drop-oldest, counted). Default 1024.
    #[serde(default = "default_observation_queue")]
    pub observation_queue: usize,
    /// Capacity of the queue from fusion to the uplink (drop-newest, counted). Default 256.
    #[serde(default = "default_uplink_queue")]
    pub uplink_queue: usize,
    /// How long tasks get to stop after SIGINT/SIGTERM before they are aborted. Default 1500 ms.
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_timeout_ms: u64,
    /// Frames in the preallocated pool per camera. Default 4.
    #[serde(default = "default_pool_frames")]
    pub frames_per_camera: usize,
    /// The hardware watchdog device (e.g. "/dev/watchdog"), fed while every part is healthy. Default unset
    /// (off).
    #[serde(default)]
    pub hardware_watchdog: Option<String>,
    /// Seconds without a feed before the hardware watchdog resets the board. Default 15 (the Raspberry Pi's
    /// maximum).
    #[serde(default = "default_watchdog_secs")]
    pub hardware_watchdog_secs: u32,
}

fn default_watchdog_secs() -> u32 {
    15
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            observation_queue: default_observation_queue(),
            uplink_queue: default_uplink_queue(),
            shutdown_timeout_ms: default_shutdown_ms(),
            frames_per_camera: default_pool_frames(),
            hardware_watchdog: None,
            hardware_watchdog_secs: default_watchdog_secs(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmBackend {
    /// Logs output changes; for laptops and simulated sites.
    Log,
    /// GPIO lines of the board profile, through the Linux GPIO character device.
    Gpio,
    /// Raspberry Pi register access by BCM number (a build with `--features rppal`).
    Rppal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    /// Which output driver. Default "log".
    #[serde(default = "default_alarm_backend")]
    pub backend: AlarmBackend,
    /// A press of the ack button held at least this long is a long press: it cuts every running output delay,
    /// or, when none runs, resets. Shorter presses acknowledge, then silence. 0.5..=30. Default 2.
    #[serde(default = "default_long_press_secs")]
    pub long_press_secs: f64,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { backend: AlarmBackend::Log, long_press_secs: default_long_press_secs() }
    }
}

fn default_long_press_secs() -> f64 {
    2.0
}

fn default_site_name() -> String {
    "ember-edge".into()
}
fn default_observation_queue() -> usize {
    1024
}
fn default_uplink_queue() -> usize {
    256
}
fn default_shutdown_ms() -> u64 {
    1500
}
fn default_pool_frames() -> usize {
    4
}
fn default_alarm_backend() -> AlarmBackend {
    AlarmBackend::Log
}

/// Semantic checks of the alarm section.
pub(super) fn validate_alarm(a: &Alarm, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    // Shorter than half a second is a bounce or a nervous press, not a deliberate hold.
    if !(0.5..=30.0).contains(&a.long_press_secs) {
        push(
            vec![key("alarm"), key("long_press_secs")],
            format!("long_press_secs must be 0.5..=30, got {}", a.long_press_secs),
        );
    }
}

/// Semantic checks of the runtime section.
pub(super) fn validate_runtime(r: &Runtime, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    for (name, cap) in [("observation_queue", r.observation_queue), ("uplink_queue", r.uplink_queue)] {
        if !(1..=1_000_000).contains(&cap) {
            push(vec![key("runtime"), key(name)], format!("{name} must be 1..=1000000, got {cap}"));
        }
    }
    if !(1..=64).contains(&r.frames_per_camera) {
        push(vec![key("runtime"), key("frames_per_camera")], "frames_per_camera must be 1..=64".into());
    }
    if !(100..=60_000).contains(&r.shutdown_timeout_ms) {
        push(
            vec![key("runtime"), key("shutdown_timeout_ms")],
            format!("shutdown_timeout_ms must be 100..=60000, got {}", r.shutdown_timeout_ms),
        );
    }
    if !(2..=600).contains(&r.hardware_watchdog_secs) {
        push(
            vec![key("runtime"), key("hardware_watchdog_secs")],
            format!("hardware_watchdog_secs must be 2..=600, got {}", r.hardware_watchdog_secs),
        );
    }
}
