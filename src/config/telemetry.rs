//! `[telemetry]`: the HTTP listener (metrics, health, operator commands, live view), who may use it, and the
//! live view's viewer limits and JPEG quality.

use serde::Deserialize;
use std::net::SocketAddr;

use super::{PathSeg, key};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Address of the /metrics and /health listener. Default 127.0.0.1:9090 (loopback only).
    #[serde(default = "default_telemetry_listen")]
    pub listen: SocketAddr,
    /// A secret every request must carry (`Authorization: Bearer TOKEN` or `?token=TOKEN`), except /health.
    /// Required (this or `basic_auth`) when `listen` is not a loopback address. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// "user:password" for HTTP basic auth (browsers prompt for it), accepted besides `token`. Default: none.
    #[serde(default)]
    pub basic_auth: Option<String>,
    /// Live-view viewers (MJPEG streams and snapshots waiting for a frame) at once, all cameras. Beyond it: 503.
    /// Default 16.
    #[serde(default = "default_max_viewers")]
    pub max_viewers: usize,
    /// Live-view viewers at once per camera. Beyond it: 503. Default 8.
    #[serde(default = "default_max_viewers_per_camera")]
    pub max_viewers_per_camera: usize,
    /// A viewer that cannot take a frame within this many milliseconds of it being ready is disconnected
    /// (it only ever gets the newest frame, so a slow one skips frames before that). Default 2000.
    #[serde(default = "default_viewer_max_lag_ms")]
    pub viewer_max_lag_ms: u64,
    /// JPEG quality of the live view, 1..=100. Default 70.
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// Host names (without port) requests may name in their `Host` header besides IP literals, `localhost`
    /// and this machine's hostname (also as `<hostname>.local`); any other Host gets 421, so a page that
    /// points its own DNS name at the appliance cannot use it. Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            listen: default_telemetry_listen(),
            token: None,
            basic_auth: None,
            max_viewers: default_max_viewers(),
            max_viewers_per_camera: default_max_viewers_per_camera(),
            viewer_max_lag_ms: default_viewer_max_lag_ms(),
            jpeg_quality: default_jpeg_quality(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn default_telemetry_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_max_viewers() -> usize {
    16
}
fn default_max_viewers_per_camera() -> usize {
    8
}
fn default_viewer_max_lag_ms() -> u64 {
    2000
}
fn default_jpeg_quality() -> u8 {
    70
}

/// Config checks for the live view and the listener's access control.
pub(super) fn validate(t: &Telemetry, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    let at = |k: &str| vec![key("telemetry"), key(k)];
    if !t.listen.ip().is_loopback() && t.token.is_none() && t.basic_auth.is_none() {
        push(
            at("listen"),
            format!(
                "listen {} is not a loopback address: set `token` or `basic_auth` so the camera views, status and \
                 operator commands are not open to the whole network",
                t.listen
            ),
        );
    }
    if let Some(tok) = &t.token
        && (tok.len() < 8 || tok.contains(|c: char| !c.is_ascii_graphic() || c == '&'))
    {
        push(at("token"), "token must be at least 8 printable ASCII characters, without `&` or spaces".into());
    }
    if let Some(b) = &t.basic_auth
        && !b.split_once(':').is_some_and(|(u, p)| !u.is_empty() && p.len() >= 8)
    {
        push(at("basic_auth"), "basic_auth must be \"user:password\" with a password of at least 8 characters".into());
    }
    if !(1..=10_000).contains(&t.max_viewers) {
        push(at("max_viewers"), format!("max_viewers must be 1..=10000, got {}", t.max_viewers));
    }
    if !(1..=10_000).contains(&t.max_viewers_per_camera) {
        push(
            at("max_viewers_per_camera"),
            format!("max_viewers_per_camera must be 1..=10000, got {}", t.max_viewers_per_camera),
        );
    }
    if !(100..=60_000).contains(&t.viewer_max_lag_ms) {
        push(at("viewer_max_lag_ms"), format!("viewer_max_lag_ms must be 100..=60000, got {}", t.viewer_max_lag_ms));
    }
    if !(1..=100).contains(&t.jpeg_quality) {
        push(at("jpeg_quality"), format!("jpeg_quality must be 1..=100, got {}", t.jpeg_quality));
    }
}
