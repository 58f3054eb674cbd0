//! The site configuration: typed TOML with `deny_unknown_fields`, a default for every optional field, and a
//! semantic validation pass. Loading reports every problem at once as `FILE:LINE:COL: message`
//! (see `load`). The commented reference config, `configs/default.toml`, is embedded in the binary.

mod load;
mod model;
mod sensors;

pub use load::{ConfigProblem, PathSeg, locate, parse_all};
pub use model::ModelSection;
pub use sensors::*;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The reference config, also the simulated site that `ember-edge demo` runs.
pub const DEFAULT_TOML: &str = include_str!("../../configs/default.toml");
pub const DEFAULT_NAME: &str = "<embedded default.toml>";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this appliance is.
    #[serde(default)]
    pub site: Site,
    /// The HTTP listener for /metrics and /health.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Queue sizes and shutdown timing.
    #[serde(default)]
    pub runtime: Runtime,
    /// Cameras, each feeding a detector.
    #[serde(default)]
    pub cameras: Vec<Camera>,
    /// The sensor link (EmberEye protocol) and the devices it expects.
    #[serde(default)]
    pub sensors: Sensors,
    /// Simulated sensor devices that connect to our own sensor port (for laptops and the demo).
    #[serde(default)]
    pub simulator: Vec<Simulator>,
    /// Zones: groups of sources fused into one alarm state.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Local alarm outputs.
    #[serde(default)]
    pub alarm: Alarm,
    /// Alerts to the control room.
    #[serde(default)]
    pub uplink: Uplink,
    /// An in-process alert collector (the control-room receiver), for simulated sites.
    #[serde(default)]
    pub collector: Collector,
    /// The optional TFLite CNN for cameras with `detector = "model"`.
    #[serde(default)]
    pub model: ModelSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Numeric device id carried in every alert. Default 1.
    #[serde(default = "one_u32")]
    pub device_id: u32,
    /// Human-readable name for logs. Default "ember-edge".
    #[serde(default = "default_site_name")]
    pub name: String,
    /// The board profile (relative to this file), e.g. "../board/rpi4.toml": GPIO lines, cameras, UARTs.
    #[serde(default)]
    pub board: Option<String>,
}

impl Default for Site {
    fn default() -> Self {
        Site { device_id: 1, name: default_site_name(), board: None }
    }
}

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
        }
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
}

impl Camera {
    /// The floor of the adaptive rate.
    pub fn min_fps(&self) -> f64 {
        self.min_fps.unwrap_or((self.fps / 5.0).max(0.2)).min(self.fps)
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            observation_queue: default_observation_queue(),
            uplink_queue: default_uplink_queue(),
            shutdown_timeout_ms: default_shutdown_ms(),
            frames_per_camera: default_pool_frames(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraSource {
    /// A folder of JPEG files played in name order at `fps`, looping; `builtin:demo` is the set in the binary;
    /// or one .mjpeg/.mjpg file of concatenated JPEGs (as `ffmpeg -f mjpeg` writes).
    Replay,
    /// An IP camera's MJPEG stream over HTTP (`multipart/x-mixed-replace`), from `url`.
    Mjpeg,
    /// A V4L2 capture device (USB/UVC webcam, CSI camera through its V4L2 node); needs a build with the `v4l2`
    /// cargo feature.
    V4l2,
}

/// Pixel format asked of a V4L2 camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureFormat {
    /// Uncompressed 4:2:2 (FourCC YUYV): no decoding; the detector reads it as is. Most USB cameras give it
    /// only at small sizes or low rates.
    Yuyv,
    /// Motion JPEG (FourCC MJPG), decoded to RGB per kept frame; how USB cameras deliver large frames.
    Mjpeg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// EmberEye's HSV colour heuristic, bit-exact, for comparison with existing installs.
    Embereye,
    /// Colour classes, fire/smoke regions and a small learned scorer on a fixed sample grid, confirmed over
    /// frames (persistence plus flicker or growth); reads RGB and YUYV. See docs/DETECTOR.md.
    Default,
    /// The TFLite CNN of `[model]` (feature `tflite`) on the grid detector's candidate regions, with the same
    /// confirmation over frames; the grid detector alone when the model cannot be loaded.
    Model,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Unique name, used by zones and in metrics labels.
    pub name: String,
    /// Where frames come from.
    pub source: CameraSource,
    /// Replay only: a folder of .jpg files or an .mjpeg/.mjpg file (relative to the config file), or
    /// `builtin:demo`.
    #[serde(default)]
    pub path: Option<String>,
    /// MJPEG only: the stream URL, `http://[user:pass@]host[:port]/path` (credentials go as Basic auth).
    #[serde(default)]
    pub url: Option<String>,
    /// MJPEG and .mjpeg replay: largest JPEG accepted, in bytes; larger ones are skipped and counted. Default
    /// 1 MiB.
    #[serde(default = "default_max_jpeg_bytes")]
    pub max_jpeg_bytes: usize,
    /// MJPEG: no bytes for this long (or bytes but no frame for twice this long) drops the connection and
    /// reconnects. Default 5000 ms.
    #[serde(default = "default_camera_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// MJPEG: TCP connect timeout. Default 5000 ms.
    #[serde(default = "default_camera_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// MJPEG: the first reconnect waits up to this long (full jitter); the ceiling doubles per failure.
    /// Default 500 ms.
    #[serde(default = "default_camera_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// MJPEG: ceiling of the reconnect wait. Default 30000 ms.
    #[serde(default = "default_camera_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// V4L2: the capture node, e.g. "/dev/video0" or a stable "/dev/v4l/by-id/usb-…-video-index0".
    /// Default "/dev/video0".
    #[serde(default = "default_video_device")]
    pub device: String,
    /// V4L2: "yuyv" or "mjpeg". Default "yuyv".
    #[serde(default = "default_capture_format")]
    pub format: CaptureFormat,
    /// V4L2: frame width to ask the driver for; it may grant another size (logged and in
    /// `ember_camera_granted_width`), which must still fit `max_width`. Default 640.
    #[serde(default = "default_width")]
    pub width: usize,
    /// V4L2: frame height to ask for. Default 480.
    #[serde(default = "default_height")]
    pub height: usize,
    /// Frames per second to capture and analyse: the ceiling of the adaptive rate. Default 5.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Floor of the adaptive rate: when detection falls behind, the rate drops by a quarter per second down to
    /// this, and climbs back by 1 fps per second when there is headroom. Default fps / 5 (at least 0.2).
    #[serde(default)]
    pub min_fps: Option<f64>,
    /// Largest frame width accepted; sizes the frame pool. Default 640.
    #[serde(default = "default_width")]
    pub max_width: usize,
    /// Largest frame height accepted. Default 480.
    #[serde(default = "default_height")]
    pub max_height: usize,
    /// Which detector scores this camera's frames: "embereye" or "default". Default "embereye".
    #[serde(default = "default_detector")]
    pub detector: DetectorKind,
    /// Replay only: scale every frame to this [width, height] (nearest neighbour), to stand in for a camera of
    /// that resolution; must fit max_width x max_height. Unset: frames keep their own size.
    #[serde(default)]
    pub replay_size: Option<[usize; 2]>,
    /// Areas the `default` detector ignores (e.g. a lamp, a window at sunset), each `[x0, y0, x1, y1]` in
    /// relative frame coordinates 0..1 with x0 < x1 and y0 < y1. Default none.
    #[serde(default)]
    pub mask: Vec<[f32; 4]>,
}

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
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { backend: AlarmBackend::Log }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// Send alerts upstream. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// "tcp" to `ember-edge collect`, or "mqtt" to a broker (QoS 1). Default "tcp".
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
    /// Seconds between heartbeats. Default 30.
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
    /// "always": fsync every alert (default; alerts are rare, so SD-card wear is negligible and a power cut
    /// loses nothing acknowledged to fusion). "never": leave it to the kernel (survives crashes, not power loss).
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
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
            fsync: default_fsync(),
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

fn one_u32() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_site_name() -> String {
    "ember-edge".into()
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
fn default_fps() -> f64 {
    5.0
}
fn default_width() -> usize {
    640
}
fn default_height() -> usize {
    480
}
fn default_max_jpeg_bytes() -> usize {
    1 << 20
}
fn default_camera_timeout_ms() -> u64 {
    5000
}
fn default_camera_reconnect_min() -> u64 {
    500
}
fn default_camera_reconnect_max() -> u64 {
    30_000
}
fn default_video_device() -> String {
    "/dev/video0".into()
}
fn default_capture_format() -> CaptureFormat {
    CaptureFormat::Yuyv
}
fn default_detector() -> DetectorKind {
    DetectorKind::Embereye
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
fn default_alarm_backend() -> AlarmBackend {
    AlarmBackend::Log
}
fn default_reconnect_min() -> u64 {
    200
}
fn default_reconnect_max() -> u64 {
    10_000
}
fn default_heartbeat() -> u64 {
    30
}
fn default_transport() -> UplinkTransport {
    UplinkTransport::Tcp
}
fn default_topic_prefix() -> String {
    "ember".into()
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

/// A loaded, validated config and where it came from (relative paths resolve against `base_dir`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source_name: String,
    pub base_dir: PathBuf,
}

impl Loaded {
    /// Resolves a path written in the config.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }
}

/// Parses and validates `text`; `name` is used in messages and `base_dir` for relative paths.
pub fn load_str(name: &str, text: &str, base_dir: &Path) -> Result<Loaded, Vec<ConfigProblem>> {
    let config: Config = load::parse_all(name, text)?;
    let problems: Vec<ConfigProblem> =
        validate(&config, base_dir).into_iter().map(|(path, msg)| load::locate(name, text, &path, msg)).collect();
    if problems.is_empty() {
        Ok(Loaded { config, source_name: name.to_owned(), base_dir: base_dir.to_path_buf() })
    } else {
        Err(problems)
    }
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<ConfigProblem>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem { file: name.clone(), line: 0, col: 0, message: format!("cannot read: {e}") }]
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&name, &text, &base)
}

/// The embedded default (the simulated site); relative paths resolve against the working directory.
pub fn load_default() -> Result<Loaded, Vec<ConfigProblem>> {
    load_str(DEFAULT_NAME, DEFAULT_TOML, Path::new("."))
}

pub(crate) fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

/// Semantic checks serde cannot express. Every problem is returned with the path of the offending key.
pub fn validate(c: &Config, base_dir: &Path) -> Vec<(Vec<PathSeg>, String)> {
    let mut out = Vec::new();
    let mut push = |path: Vec<PathSeg>, msg: String| out.push((path, msg));

    let mut seen = std::collections::HashSet::new();
    for (i, cam) in c.cameras.iter().enumerate() {
        let at = |k: &str| vec![key("cameras"), PathSeg::Index(i), key(k)];
        if cam.name.is_empty() {
            push(at("name"), "camera name must not be empty".into());
        } else if !seen.insert(cam.name.as_str()) {
            push(at("name"), format!("duplicate camera name `{}`", cam.name));
        }
        if !(cam.fps > 0.0 && cam.fps <= 120.0) {
            push(at("fps"), format!("fps must be in (0, 120], got {}", cam.fps));
        }
        if let Some(m) = cam.min_fps
            && !(m > 0.0 && m <= cam.fps)
        {
            push(at("min_fps"), format!("min_fps must be in (0, fps = {}], got {m}", cam.fps));
        }
        if !(16..=4096).contains(&cam.max_width) {
            push(at("max_width"), format!("max_width must be 16..=4096, got {}", cam.max_width));
        }
        if !(16..=4096).contains(&cam.max_height) {
            push(at("max_height"), format!("max_height must be 16..=4096, got {}", cam.max_height));
        }
        validate_camera_source(cam, base_dir, &at, &mut push);
        if let Some([w, h]) = cam.replay_size
            && !(16..=cam.max_width).contains(&w) | !(16..=cam.max_height).contains(&h)
        {
            push(
                at("replay_size"),
                format!("replay_size {w}x{h} must be at least 16x16 and fit max_width x max_height"),
            );
        }
        if cam.source == CameraSource::V4l2 {
            if !cfg!(feature = "v4l2") {
                push(
                    at("source"),
                    "source \"v4l2\" is not available: this binary was built without the `v4l2` cargo feature \
                     (build with `--features v4l2`, as the board packages are)"
                        .into(),
                );
            }
            if cam.device.is_empty() {
                push(at("device"), "device must name a V4L2 node such as /dev/video0".into());
            }
            if !(16..=cam.max_width).contains(&cam.width) {
                push(at("width"), format!("width must be 16..=max_width ({}), got {}", cam.max_width, cam.width));
            }
            if !(16..=cam.max_height).contains(&cam.height) {
                push(at("height"), format!("height must be 16..=max_height ({}), got {}", cam.max_height, cam.height));
            }
        }
        for (j, m) in cam.mask.iter().enumerate() {
            let [x0, y0, x1, y1] = *m;
            let inside = m.iter().all(|v| (0.0..=1.0).contains(v));
            if !inside || x0 >= x1 || y0 >= y1 {
                push(
                    vec![key("cameras"), PathSeg::Index(i), key("mask"), PathSeg::Index(j)],
                    format!("mask must be [x0, y0, x1, y1] within 0..=1 with x0 < x1 and y0 < y1, got {m:?}"),
                );
            }
        }
    }

    crate::live::validate_config(&c.telemetry, &mut push);
    sensors::validate(&c.sensors, !c.simulator.is_empty(), &mut push);
    model::validate(&c.model, &mut push);
    for (i, s) in c.simulator.iter().enumerate() {
        let at = |k: &str| vec![key("simulator"), PathSeg::Index(i), key(k)];
        if !(s.interval_secs >= 0.05 && s.interval_secs <= 3600.0) {
            push(at("interval_secs"), format!("interval_secs must be 0.05..=3600, got {}", s.interval_secs));
        }
        if s.loc_id.is_empty() || s.loc_id.contains([':', '!', '\n', '\r']) {
            push(at("loc_id"), "loc_id must be non-empty and free of `:`, `!` and line breaks".into());
        }
    }

    let mut seen = std::collections::HashSet::new();
    for (i, z) in c.zones.iter().enumerate() {
        let at = |k: &str| vec![key("zones"), PathSeg::Index(i), key(k)];
        if z.name.is_empty() || z.name.len() > crate::uplink::wire::MAX_ZONE_NAME {
            push(at("name"), format!("zone name must be 1..={} bytes", crate::uplink::wire::MAX_ZONE_NAME));
        } else if !seen.insert(z.name.as_str()) {
            push(at("name"), format!("duplicate zone name `{}`", z.name));
        }
        if z.cameras.is_empty() && z.devices.is_empty() {
            push(at("name"), format!("zone `{}` has no cameras and no devices", z.name));
        }
        for (j, cam) in z.cameras.iter().enumerate() {
            if !c.cameras.iter().any(|k| &k.name == cam) {
                push(
                    vec![key("zones"), PathSeg::Index(i), key("cameras"), PathSeg::Index(j)],
                    format!("zone `{}` names camera `{cam}`, which is not defined", z.name),
                );
            }
        }
        for (j, dev) in z.devices.iter().enumerate() {
            if !c.sensors.devices.iter().any(|k| &k.name == dev) {
                push(
                    vec![key("zones"), PathSeg::Index(i), key("devices"), PathSeg::Index(j)],
                    format!("zone `{}` names device `{dev}`, which is not defined in [[sensors.devices]]", z.name),
                );
            }
        }
        if !(0.0..=1.0).contains(&z.vision_threshold) {
            push(at("vision_threshold"), format!("vision_threshold must be 0..=1, got {}", z.vision_threshold));
        }
        if z.thermal_critical_c < z.thermal_alarm_c {
            push(at("thermal_critical_c"), "thermal_critical_c must be at least thermal_alarm_c".into());
        }
        if z.rise_alarm_c_per_min < 0.0 {
            push(at("rise_alarm_c_per_min"), "rise_alarm_c_per_min must not be negative".into());
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
    }

    if c.uplink.enabled {
        match &c.uplink.server {
            None if c.uplink.transport == UplinkTransport::Mqtt => push(
                vec![key("uplink"), key("enabled")],
                "uplink transport mqtt needs `server` (the broker's host:port)".into(),
            ),
            None if !c.collector.enabled => push(
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
    if c.uplink.reconnect_min_ms == 0 || c.uplink.reconnect_min_ms > c.uplink.reconnect_max_ms {
        push(
            vec![key("uplink"), key("reconnect_min_ms")],
            "reconnect_min_ms must be at least 1 and at most reconnect_max_ms".into(),
        );
    }
    if c.uplink.topic_prefix.is_empty() || c.uplink.topic_prefix.contains(['#', '+']) {
        push(
            vec![key("uplink"), key("topic_prefix")],
            "topic_prefix must be non-empty and free of MQTT wildcards".into(),
        );
    }
    if !(4096..=(1u64 << 34)).contains(&c.uplink.spool_max_bytes) {
        push(vec![key("uplink"), key("spool_max_bytes")], "spool_max_bytes must be 4096..=16 GiB".into());
    }
    if let Some(k) = &c.uplink.key_file
        && !base_dir.join(k).is_file()
    {
        push(vec![key("uplink"), key("key_file")], format!("key file `{}` does not exist", base_dir.join(k).display()));
    }
    if let Some(b) = &c.site.board {
        if let Err(problems) = crate::board::load_file(&base_dir.join(b)) {
            for p in problems {
                push(vec![key("site"), key("board")], format!("board profile: {p}"));
            }
        }
    } else if c.alarm.backend != AlarmBackend::Log {
        push(vec![key("alarm"), key("backend")], "GPIO backends need [site] board (a board profile)".into());
    }
    if c.collector.enabled && c.collector.listen.is_none() {
        push(vec![key("collector"), key("enabled")], "collector is enabled but `listen` is not set".into());
    }
    for (name, cap) in [("observation_queue", c.runtime.observation_queue), ("uplink_queue", c.runtime.uplink_queue)] {
        if !(1..=1_000_000).contains(&cap) {
            push(vec![key("runtime"), key(name)], format!("{name} must be 1..=1000000, got {cap}"));
        }
    }
    if !(1..=64).contains(&c.runtime.frames_per_camera) {
        push(vec![key("runtime"), key("frames_per_camera")], "frames_per_camera must be 1..=64".into());
    }
    out
}

/// Each source's own fields: required where the source needs them, refused where it would ignore them.
fn validate_camera_source(
    cam: &Camera,
    base_dir: &Path,
    at: &dyn Fn(&str) -> Vec<PathSeg>,
    push: &mut dyn FnMut(Vec<PathSeg>, String),
) {
    match cam.source {
        CameraSource::Replay => {
            if cam.url.is_some() {
                push(at("url"), "`url` is only for source = \"mjpeg\"; replay reads `path`".into());
            }
            match cam.path.as_deref() {
                None => push(
                    at("source"),
                    "source = \"replay\" needs `path` (a folder, an .mjpeg file or builtin:demo)".into(),
                ),
                Some("builtin:demo") => {}
                Some(path) => {
                    let p = base_dir.join(path);
                    if crate::camera::replay::is_mjpeg_file(&p) {
                        if !p.is_file() {
                            push(at("path"), format!("replay file `{}` does not exist", p.display()));
                        }
                    } else if !p.is_dir() {
                        push(at("path"), format!("replay folder `{}` does not exist", p.display()));
                    }
                }
            }
        }
        CameraSource::Mjpeg => {
            if cam.path.is_some() {
                push(at("path"), "`path` is only for source = \"replay\"; an MJPEG camera reads `url`".into());
            }
            match cam.url.as_deref() {
                None => push(at("source"), "source = \"mjpeg\" needs `url` (http://host[:port]/path)".into()),
                Some(u) => {
                    if let Err(e) = crate::camera::http::HttpUrl::parse(u) {
                        push(at("url"), format!("invalid url: {e}"));
                    }
                }
            }
        }
        CameraSource::V4l2 => {
            if cam.path.is_some() || cam.url.is_some() {
                push(at("source"), "a v4l2 camera reads `device`; `path` and `url` are for replay and mjpeg".into());
            }
        }
    }
    if !(4096..=(64 << 20)).contains(&cam.max_jpeg_bytes) {
        push(at("max_jpeg_bytes"), format!("max_jpeg_bytes must be 4096..=64 MiB, got {}", cam.max_jpeg_bytes));
    }
    for (k, v) in [("stall_timeout_ms", cam.stall_timeout_ms), ("connect_timeout_ms", cam.connect_timeout_ms)] {
        if !(50..=600_000).contains(&v) {
            push(at(k), format!("{k} must be 50..=600000, got {v}"));
        }
    }
    if cam.reconnect_min_ms == 0 || cam.reconnect_min_ms > cam.reconnect_max_ms || cam.reconnect_max_ms > 3_600_000 {
        push(at("reconnect_min_ms"), "reconnect_min_ms must be at least 1 and at most reconnect_max_ms (≤ 1 h)".into());
    }
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
