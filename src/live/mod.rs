//! The live view: cameras as MJPEG streams and snapshots (optionally with the detection overlay), the
//! `/api/status` document (zones, cameras, devices with their thermal grids, trouble, recent alerts) and the
//! status page at `/` that shows all of it, updating without reloads. `crate::web` serves them.
//!
//! Encode once, fan out: a camera's newest frame is copied (only while someone watches) and JPEG-encoded at
//! most once per frame interval on the camera's encoder thread, into a small pool of shared buffers; every
//! viewer sends the same bytes and only ever the newest frame. Viewers are limited per camera and in total
//! (503 beyond), and one that cannot take a frame within the configured lag is disconnected.

pub mod camera;
pub mod fanout;
pub mod multipart;
pub mod overlay;
pub mod status;
pub mod viewers;

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sensor::device::Devices;
use crate::telemetry::{Counter, Health, Registry, metrics};

pub use camera::{CameraLive, Variant};
pub use status::ZoneBoard;

/// The status page served at `/`.
pub const PAGE: &str = include_str!("page.html");

/// Everything the live routes need, shared by the web listener's connections.
pub struct Live {
    pub site: String,
    pub cameras: Vec<Arc<CameraLive>>,
    pub limits: viewers::ViewerLimits,
    pub max_lag: Duration,
    pub board: Arc<ZoneBoard>,
    devices: Arc<Devices>,
    device_names: Vec<String>,
    health: Arc<Health>,
    clock: Arc<crate::telemetry::clock::ClockWatch>,
    stop: CancellationToken,
    pub counters: ViewerCounters,
    /// The event log, whose snapshot store Home Assistant's alarm picture comes from (`attach_events`).
    events: std::sync::OnceLock<crate::events::EventLog>,
}

pub struct ViewerCounters {
    pub refused: Counter,
    pub lagged: Counter,
    pub frames_sent: Counter,
    pub bytes_sent: Counter,
    pub frames_skipped: Counter,
}

/// Shared JPEG buffers per camera and variant beyond the viewers: the published frame plus one being written.
const SPARE_SLOTS: usize = 2;

impl Live {
    /// Builds the per-camera state from the config; `start` runs the encoder threads. `devices` gives the
    /// thermal grids on the page and in the overlay.
    pub fn new(
        c: &Config,
        registry: &Arc<Registry>,
        health: &Arc<Health>,
        devices: &Arc<Devices>,
        clock: &Arc<crate::telemetry::clock::ClockWatch>,
        stop: CancellationToken,
    ) -> Arc<Live> {
        let t = &c.telemetry;
        let cameras: Vec<Arc<CameraLive>> = c
            .cameras
            .iter()
            .enumerate()
            .map(|(i, cam)| {
                // Devices that share a zone with this camera: their thermal grids go in its overlay.
                let mut thermal: Vec<usize> = Vec::new();
                for z in c.zones.iter().filter(|z| z.cameras.contains(&cam.name)) {
                    for d in &z.devices {
                        if let Some(k) = c.sensors.devices.iter().position(|x| &x.name == d)
                            && !thermal.contains(&k)
                        {
                            thermal.push(k);
                        }
                    }
                }
                let max_len = crate::frame::PixelFormat::Rgb24.frame_len(cam.max_width(), cam.max_height());
                // A viewer holds at most one buffer (while writing it), so this many never runs dry.
                let slots = t.max_viewers_per_camera.min(t.max_viewers) + SPARE_SLOTS;
                Arc::new(CameraLive::new(
                    i,
                    &cam.name,
                    cam.fps,
                    max_len,
                    slots,
                    t.jpeg_quality,
                    thermal,
                    Arc::clone(devices),
                    camera::LiveCounters::new(registry, &cam.name),
                ))
            })
            .collect();
        for cam in &cameras {
            let c2 = Arc::clone(cam);
            registry.probe(
                "ember_live_viewers",
                "Live-view viewers connected now.",
                metrics::Kind::Gauge,
                &[("camera", cam.name.as_str())],
                move || c2.viewers() as f64,
            );
        }
        let counters = ViewerCounters {
            refused: registry.counter(
                "ember_live_viewers_refused_total",
                "Live-view requests answered 503 because the viewer limits were reached.",
                &[],
            ),
            lagged: registry.counter(
                "ember_live_viewers_lagged_total",
                "Viewers disconnected for not taking a frame within the configured lag.",
                &[],
            ),
            frames_sent: registry.counter("ember_live_frames_sent_total", "Frames written to live-view viewers.", &[]),
            bytes_sent: registry.counter("ember_live_bytes_sent_total", "Bytes written to live-view viewers.", &[]),
            frames_skipped: registry.counter(
                "ember_live_viewer_frames_skipped_total",
                "Frames a slow viewer never got because a newer one replaced them (newest wins).",
                &[],
            ),
        };
        Arc::new(Live {
            site: c.site.name.clone(),
            limits: viewers::ViewerLimits::new(cameras.len(), t.max_viewers_per_camera, t.max_viewers),
            cameras,
            max_lag: Duration::from_millis(t.viewer_max_lag_ms),
            board: Arc::new(ZoneBoard::new(c.zones.iter().map(|z| z.name.clone()).collect())),
            devices: Arc::clone(devices),
            device_names: c.sensors.devices.iter().map(|d| d.name.clone()).collect(),
            health: Arc::clone(health),
            clock: Arc::clone(clock),
            stop,
            counters,
            events: std::sync::OnceLock::new(),
        })
    }

    /// Gives Home Assistant's view the event log, for the newest alarm picture (once; later calls are ignored).
    pub fn attach_events(&self, events: crate::events::EventLog) {
        let _ = self.events.set(events);
    }

    /// Starts one encoder thread per camera; they end when the stop token is cancelled.
    pub fn start(&self) -> std::io::Result<()> {
        for cam in &self.cameras {
            let (cam, stop) = (Arc::clone(cam), self.stop.clone());
            std::thread::Builder::new()
                .name(format!("live-{}", cam.index))
                .stack_size(256 * 1024)
                .spawn(move || cam.run_encoder(stop))?;
        }
        Ok(())
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// A camera by name or index.
    pub fn camera(&self, id: &str) -> Option<&Arc<CameraLive>> {
        self.cameras
            .iter()
            .find(|c| c.name == id)
            .or_else(|| id.parse::<usize>().ok().and_then(|i| self.cameras.get(i)))
    }

    /// "live", "starting", "stalled" (no frame for 3 intervals and at least 2 s) or "failed" (source task died).
    pub fn camera_state(&self, cam: &CameraLive) -> &'static str {
        let part = format!("camera:{}", cam.name);
        if self.health.states().iter().any(|(n, s)| *n == part && matches!(s, crate::telemetry::PartState::Failed(_))) {
            return "failed";
        }
        match cam.frame_age() {
            None => "starting",
            Some(age) if age > Duration::from_secs_f64((3.0 / cam.fps).max(2.0)) => "stalled",
            Some(_) => "live",
        }
    }

    pub fn cameras_json(&self) -> serde_json::Value {
        self.cameras
            .iter()
            .map(|c| {
                let (w, h) = c.size();
                serde_json::json!({
                    "id": c.name, "index": c.index, "state": self.camera_state(c),
                    "fps": (c.measured_fps() * 10.0).round() / 10.0, "fps_config": c.fps,
                    "width": w, "height": h, "frames": c.frames(), "viewers": self.limits.viewers(c.index),
                    "score": (c.detection_score() as f64 * 1000.0).round() / 1000.0,
                    "mode": c.mode().as_str(),
                    "snapshot": format!("/cameras/{}/snapshot.jpg", c.name),
                    "stream": format!("/cameras/{}/stream.mjpg", c.name),
                })
            })
            .collect()
    }

    /// The whole `/api/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let now = tokio::time::Instant::now();
        let mut trouble: Vec<String> = self.health.failing(now);
        let mut devices = Vec::new();
        let mut grid = Box::new([0f32; crate::sensor::proto::PIXELS]);
        for (i, name) in self.device_names.iter().enumerate() {
            let Some(v) = self.devices.thermal_grid(i, &mut grid) else { continue };
            let faults: Vec<&str> = crate::sensor::device::fault::names(v.faults).collect();
            for f in &faults {
                trouble.push(format!("device {name}: {f}"));
            }
            let cells: Vec<serde_json::Value> =
                grid.iter().map(|t| serde_json::json!((*t as f64 * 10.0).round() / 10.0)).collect();
            devices.push(serde_json::json!({
                "name": name, "online": v.online, "faults": faults, "hot_c": v.hot_c,
                "thermal": if v.has_frame { serde_json::json!({"width": crate::sensor::proto::GRID_W,
                    "height": crate::sensor::proto::GRID_H, "celsius": cells}) } else { serde_json::Value::Null },
            }));
        }
        // Night mode is information, not trouble: the camera works, its pictures carry no colour.
        let mut info: Vec<String> = Vec::new();
        for c in &self.cameras {
            let s = self.camera_state(c);
            if s == "stalled" || s == "failed" {
                trouble.push(format!("camera {}: {s}", c.name));
            }
            if c.mode() == crate::detect::night::Mode::Night {
                info.push(format!(
                    "camera {}: night mode (grey pictures): vision gives no fire evidence, its zones rely on \
                     thermal and smoke sources",
                    c.name
                ));
            }
        }
        serde_json::json!({
            "site": self.site,
            "time_ms": status::unix_ms(),
            "clock_synchronised": self.clock.synchronised(),
            "zones": self.board.zones_json(),
            "cameras": self.cameras_json(),
            "devices": devices,
            "trouble": trouble,
            "info": info,
            "alerts": self.board.alerts_json(),
        })
    }
}

/// Home Assistant reads the same state as the status page.
impl crate::uplink::ha_link::SiteView for Live {
    fn zone_state(&self, zone: usize) -> crate::event::ZoneState {
        self.board.state(zone).unwrap_or(crate::event::ZoneState::Normal)
    }

    fn source_online(&self, source: usize) -> bool {
        match self.cameras.get(source) {
            Some(c) => self.camera_state(c) == "live",
            None => self.devices.summary(source - self.cameras.len()).is_some_and(|(online, _, _)| online),
        }
    }

    fn diagnostics(&self, out: &mut crate::uplink::ha::Diagnostics) {
        let (mut hottest, mut smoke) = (None::<f32>, None::<f32>);
        for d in 0..self.devices.count() {
            if let Some((true, h, s)) = self.devices.summary(d) {
                hottest = h.map_or(hottest, |h| Some(hottest.map_or(h, |x| x.max(h))));
                smoke = s.map_or(smoke, |s| Some(smoke.map_or(s, |x| x.max(s))));
            }
        }
        out.hottest_c = hottest;
        out.smoke_pct = smoke;
        out.camera_fps.clear();
        out.camera_fps
            .extend(self.cameras.iter().map(|c| (self.camera_state(c) == "live").then(|| c.measured_fps() as f32)));
    }

    fn newest_picture(&self) -> Option<u64> {
        self.events.get()?.snapshots()?.newest_picture()
    }

    fn picture(&self, id: u64) -> Option<Vec<u8>> {
        self.events.get()?.snapshots()?.file(id, "snapshot.jpg").map(|(_, b)| b)
    }

    fn health_bits(&self) -> u32 {
        use crate::uplink::wire::health;
        let sources = self.cameras.len() + self.devices.count();
        let stale = (0..sources).any(|s| !self.source_online(s));
        let night = self.cameras.iter().any(|c| c.mode() == crate::detect::night::Mode::Night);
        // CLOCK rides here rather than in the outbox: it is the site's clock the alerts were stamped with.
        (if stale { health::STALE } else { 0 })
            | (if night { health::NIGHT } else { 0 })
            | (if self.board.any_delay() { health::DELAY } else { 0 })
            | (if self.clock.synchronised() { 0 } else { health::CLOCK })
    }
}
