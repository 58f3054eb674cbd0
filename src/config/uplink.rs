//! `[uplink]` and `[collector]`: where alerts go (TCP collector or MQTT broker), the durable spool that holds
//! them until acknowledged, and the in-process collector for simulated sites.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

use super::{PathSeg, key};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// Send alerts upstream. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// "tcp" to `ember-tools collect`, or "mqtt" to a broker (QoS 1). Default "tcp".
    #[serde(default = "default_transport")]
    pub transport: UplinkTransport,
    /// MQTT topic prefix: alerts go to `<prefix>/<device_id>/alert`, heartbeats to `/heartbeat`, and
    /// `/status` holds a retained online/offline (last will). Default "ember".
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// The collector's or broker's address (host:port). Required when enabled (tcp: unless the in-process
    /// collector is on).
    #[serde(default)]
    pub server: Option<String>,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with jitter. Default 200 ms.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay. Default 10000 ms.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Seconds between heartbeats (about once a minute: the control room sees a silent appliance within two).
    /// Default 60.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// File holding this device's HMAC key (hex or raw bytes), shared with the collector. Unset: frames carry
    /// a tag made with an empty key, which a collector holding keys rejects.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Folder of the durable alert spool (relative to the config file). Unset: a temporary folder, so alerts
    /// survive a lost link but not a restart (fine for a demo, not for a site).
    #[serde(default)]
    pub spool_dir: Option<String>,
    /// Most bytes the spool may hold; beyond it the oldest alerts are dropped and counted. Default 8 MiB
    /// (about 100,000 alerts).
    #[serde(default = "default_spool_bytes")]
    pub spool_max_bytes: u64,
    /// Folder of the event log (relative to the config file): every transition, trouble, operator action,
    /// output change, start and stop. Unset: a temporary folder, so the log does not survive a restart.
    #[serde(default)]
    pub events_dir: Option<String>,
    /// Most bytes the event log may hold (it also keeps at most 4096 events); beyond it the oldest are dropped
    /// and counted. Default 1 MiB.
    #[serde(default = "default_events_bytes")]
    pub events_max_bytes: u64,
    /// Folder of the alarm snapshots (relative to the config file): the deciding camera frame with its boxes and
    /// the frames before it, or the thermal grid, per PRE_ALARM/ALARM event. Unset: `snapshots` inside the
    /// event log's folder.
    #[serde(default)]
    pub snapshots_dir: Option<String>,
    /// Most bytes the snapshot store may hold; beyond it the oldest snapshots are removed and counted.
    /// Default 8 MiB.
    #[serde(default = "default_snapshots_bytes")]
    pub snapshots_max_bytes: u64,
    /// Most snapshots kept (one per alarm event), oldest removed first. Default 64.
    #[serde(default = "default_snapshots_count")]
    pub snapshots_max_count: u32,
    /// "always": fsync every alert (default; alerts are rare, so SD-card wear is negligible and a power cut
    /// loses nothing acknowledged to fusion). "never": leave it to the kernel (survives crashes, not power loss).
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    /// MQTT transport only: TLS and Home Assistant discovery.
    #[serde(default)]
    pub mqtt: MqttSettings,
}

/// `[uplink.mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Publish Home Assistant MQTT discovery and entity states. Default false.
    #[serde(default)]
    pub home_assistant: bool,
    /// Home Assistant's discovery prefix (its birth message is read from `<prefix>/status`). Default
    /// "homeassistant".
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// Operator buttons offered to Home Assistant: any of "acknowledge", "silence", "test", "cut_delay". Default none;
    /// commands for a button not listed are refused.
    #[serde(default)]
    pub buttons: Vec<HaButton>,
    /// Shortest period of the diagnostic sensors (hottest °C, smoke %, camera fps, spool depth); Home
    /// Assistant marks them unavailable after 3 periods without one. Default 30 s.
    #[serde(default = "default_diagnostics_secs")]
    pub diagnostics_secs: u64,
    /// PEM file of the CA(s) that signed the broker's certificate: set, the connection uses TLS and the broker
    /// must present a valid certificate for the host of `server`. Default unset (plain TCP).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate (chain) for brokers that require one; needs `client_key`. Default unset.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`. Default unset.
    #[serde(default)]
    pub client_key: Option<String>,
}

/// An operator action Home Assistant may trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaButton {
    Acknowledge,
    Silence,
    Test,
    /// Ends a zone's running output delay (`[[zones]] output_delay_secs`): a manual input from Home Assistant.
    CutDelay,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            home_assistant: false,
            discovery_prefix: default_discovery_prefix(),
            buttons: Vec::new(),
            diagnostics_secs: default_diagnostics_secs(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
fn default_diagnostics_secs() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkTransport {
    Tcp,
    Mqtt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    Never,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            enabled: false,
            transport: default_transport(),
            topic_prefix: default_topic_prefix(),
            server: None,
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            heartbeat_secs: default_heartbeat(),
            key_file: None,
            spool_dir: None,
            spool_max_bytes: default_spool_bytes(),
            events_dir: None,
            events_max_bytes: default_events_bytes(),
            snapshots_dir: None,
            snapshots_max_bytes: default_snapshots_bytes(),
            snapshots_max_count: default_snapshots_count(),
            fsync: default_fsync(),
            mqtt: MqttSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// Run a collector inside this process and print each alert as a JSON line on stdout. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Where it listens. Default 127.0.0.1:4900.
    #[serde(default = "default_collector_listen")]
    pub listen: Option<SocketAddr>,
}

fn default_reconnect_min() -> u64 {
    200
}
fn default_reconnect_max() -> u64 {
    10_000
}
fn default_heartbeat() -> u64 {
    60
}
fn default_transport() -> UplinkTransport {
    UplinkTransport::Tcp
}
fn default_topic_prefix() -> String {
    "ember".into()
}
fn default_events_bytes() -> u64 {
    1 << 20
}
fn default_snapshots_bytes() -> u64 {
    8 << 20
}
fn default_snapshots_count() -> u32 {
    64
}
fn default_spool_bytes() -> u64 {
    8 << 20
}
fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}
fn default_collector_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 4900)))
}

/// Semantic checks of the uplink (the collector only as far as the uplink relies on it).
pub(super) fn validate(
    u: &Uplink,
    collector: &Collector,
    base_dir: &Path,
    push: &mut impl FnMut(Vec<PathSeg>, String),
) {
    if u.enabled {
        match &u.server {
            None if u.transport == UplinkTransport::Mqtt => push(
                vec![key("uplink"), key("enabled")],
                "uplink transport mqtt needs `server` (the broker's host:port)".into(),
            ),
            None if !collector.enabled => push(
                vec![key("uplink"), key("enabled")],
                "uplink is enabled but neither `server` nor an in-process [collector] is set".into(),
            ),
            Some(s) if !valid_host_port(s) => push(
                vec![key("uplink"), key("server")],
                format!("server must be host:port with port 1..=65535, got `{s}`"),
            ),
            _ => {}
        }
    }
    if u.reconnect_min_ms == 0 || u.reconnect_min_ms > u.reconnect_max_ms || u.reconnect_max_ms > 3_600_000 {
        push(
            vec![key("uplink"), key("reconnect_min_ms")],
            "reconnect_min_ms must be at least 1 and at most reconnect_max_ms (≤ 1 h)".into(),
        );
    }
    if !(1..=86_400).contains(&u.heartbeat_secs) {
        push(
            vec![key("uplink"), key("heartbeat_secs")],
            format!("heartbeat_secs must be 1..=86400, got {}", u.heartbeat_secs),
        );
    }
    if u.topic_prefix.is_empty() || u.topic_prefix.contains(['#', '+']) {
        push(
            vec![key("uplink"), key("topic_prefix")],
            "topic_prefix must be non-empty and free of MQTT wildcards".into(),
        );
    }
    if !(4096..=(1u64 << 34)).contains(&u.spool_max_bytes) {
        push(vec![key("uplink"), key("spool_max_bytes")], "spool_max_bytes must be 4096..=16 GiB".into());
    }
    if !(4096..=(1u64 << 30)).contains(&u.events_max_bytes) {
        push(vec![key("uplink"), key("events_max_bytes")], "events_max_bytes must be 4096..=1 GiB".into());
    }
    if !(65536..=(1u64 << 34)).contains(&u.snapshots_max_bytes) {
        push(vec![key("uplink"), key("snapshots_max_bytes")], "snapshots_max_bytes must be 65536..=16 GiB".into());
    }
    if !(1..=4096).contains(&u.snapshots_max_count) {
        push(vec![key("uplink"), key("snapshots_max_count")], "snapshots_max_count must be 1..=4096".into());
    }
    validate_mqtt(&u.mqtt, base_dir, push);
    if let Some(k) = &u.key_file
        && !base_dir.join(k).is_file()
    {
        push(vec![key("uplink"), key("key_file")], format!("key file `{}` does not exist", base_dir.join(k).display()));
    }
}

fn validate_mqtt(m: &MqttSettings, base_dir: &Path, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    let at = |k: &str| vec![key("uplink"), key("mqtt"), key(k)];
    if m.discovery_prefix.is_empty() || m.discovery_prefix.contains(['#', '+']) {
        push(at("discovery_prefix"), "discovery_prefix must be non-empty and free of MQTT wildcards".into());
    }
    if !(1..=3600).contains(&m.diagnostics_secs) {
        push(at("diagnostics_secs"), format!("diagnostics_secs must be 1..=3600, got {}", m.diagnostics_secs));
    }
    if !m.buttons.is_empty() && !m.home_assistant {
        push(at("buttons"), "buttons are Home Assistant entities: they need home_assistant = true".into());
    }
    for (k, v) in [("ca_file", &m.ca_file), ("client_cert", &m.client_cert), ("client_key", &m.client_key)] {
        if let Some(f) = v
            && !base_dir.join(f).is_file()
        {
            push(at(k), format!("`{}` does not exist", base_dir.join(f).display()));
        }
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        push(at("client_cert"), "client_cert and client_key go together".into());
    }
    if (m.client_cert.is_some() || m.client_key.is_some()) && m.ca_file.is_none() {
        push(at("ca_file"), "a client certificate is only sent over TLS: set ca_file too".into());
    }
}

/// The collector's own check (reported after the board profile's problems, as it always was).
pub(super) fn validate_collector(collector: &Collector, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    if collector.enabled && collector.listen.is_none() {
        push(vec![key("collector"), key("enabled")], "collector is enabled but `listen` is not set".into());
    }
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
