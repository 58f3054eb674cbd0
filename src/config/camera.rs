//! `[[cameras]]`: where each camera's frames come from, how large they may be, at what rate they are analysed
//! and which detector scores them; with the checks each source's own fields need.

use serde::Deserialize;
use std::path::Path;

use super::{HttpUrl, PathSeg, key};

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

/// How a replay camera hands its frames to detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFormat {
    /// Decoded RGB, as every JPEG source delivers.
    Rgb,
    /// Converted to YUYV as a V4L2 webcam in YUYV delivers it: a webcam's path (detector, live view, night
    /// mode) without a webcam.
    Yuyv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// EmberEye's HSV colour heuristic, bit-exact, for comparison with existing installs; an opt-in
    /// compatibility mode that reads RGB frames only (a YUYV camera with it is a config error).
    Embereye,
    /// Colour classes, fire/smoke regions and a small learned scorer on a fixed sample grid, confirmed over
    /// frames (persistence plus flicker or growth); reads every pixel format the sources deliver (RGB and YUYV),
    /// so it is the default. See docs/DETECTOR.md. Also accepted under its old name "default" (deprecated).
    #[serde(alias = "default")]
    Grid,
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
    /// Largest frame width accepted; sizes the frame pool. Default: 1920 for a camera that delivers JPEGs
    /// (`mjpeg`, `replay`, `v4l2` with `format = "mjpeg"`), whose frames are pooled at analysis scale, so the room
    /// costs little; `width` for a raw YUYV camera, whose frames are pooled whole; 640 for a replay in YUYV.
    #[serde(default)]
    pub max_width: Option<usize>,
    /// Largest frame height accepted. Default: 1080, `height` or 480, as for `max_width`.
    #[serde(default)]
    pub max_height: Option<usize>,
    /// Which detector scores this camera's frames: "grid", "model" or "embereye". Default "grid", which reads
    /// every pixel format; "embereye" reads RGB only.
    #[serde(default = "default_detector")]
    pub detector: DetectorKind,
    /// Replay only: scale every frame to this [width, height] (nearest neighbour), to stand in for a camera of
    /// that resolution; must fit max_width x max_height. Unset: frames keep their own size.
    #[serde(default)]
    pub replay_size: Option<[usize; 2]>,
    /// Replay only: "rgb" or "yuyv" (frames converted to YUYV, as a V4L2 webcam delivers them). Default "rgb".
    #[serde(default = "default_replay_format")]
    pub replay_format: ReplayFormat,
    /// Areas the grid detector ignores (e.g. a lamp, a window at sunset), each `[x0, y0, x1, y1]` in
    /// relative frame coordinates 0..1 with x0 < x1 and y0 < y1. Default none.
    #[serde(default)]
    pub mask: Vec<[f32; 4]>,
}

impl Camera {
    /// The largest frame accepted, `[max_width, max_height]` or their defaults for this source.
    pub fn max_size(&self) -> [usize; 2] {
        let default = match delivered_format(self) {
            DeliveredFormat::Yuyv if self.source == CameraSource::V4l2 => [self.width, self.height],
            DeliveredFormat::Yuyv => self.replay_size.unwrap_or([default_width(), default_height()]),
            DeliveredFormat::Rgb if self.source == CameraSource::V4l2 => {
                [self.width.max(JPEG_MAX[0]), self.height.max(JPEG_MAX[1])]
            }
            DeliveredFormat::Rgb => JPEG_MAX,
        };
        [self.max_width.unwrap_or(default[0]), self.max_height.unwrap_or(default[1])]
    }

    /// The largest frame width accepted (see [`Camera::max_size`]).
    pub fn max_width(&self) -> usize {
        self.max_size()[0]
    }

    /// The largest frame height accepted (see [`Camera::max_size`]).
    pub fn max_height(&self) -> usize {
        self.max_size()[1]
    }

    /// The floor of the adaptive rate.
    pub fn min_fps(&self) -> f64 {
        self.min_fps.unwrap_or((self.fps / 5.0).max(0.2)).min(self.fps)
    }
}

/// The pixel layout a camera's frames reach the detector in, once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveredFormat {
    Rgb,
    Yuyv,
}

impl DeliveredFormat {
    fn describe(self) -> &'static str {
        match self {
            DeliveredFormat::Rgb => "RGB frames",
            DeliveredFormat::Yuyv => {
                "YUYV frames (a v4l2 camera in format = \"yuyv\", its default, or a replay with replay_format = \"yuyv\")"
            }
        }
    }
}

/// What the camera's source hands detection: JPEG sources are decoded to RGB, a V4L2 camera in YUYV passes
/// its frames through as YUYV.
pub fn delivered_format(cam: &Camera) -> DeliveredFormat {
    match (cam.source, cam.format) {
        (CameraSource::V4l2, CaptureFormat::Yuyv) => DeliveredFormat::Yuyv,
        (CameraSource::Replay, _) if cam.replay_format == ReplayFormat::Yuyv => DeliveredFormat::Yuyv,
        _ => DeliveredFormat::Rgb,
    }
}

/// Whether `kind` can score frames of `format` (the frames `ember_detect_unsupported_total` would count).
pub fn detector_reads(kind: DetectorKind, format: DeliveredFormat) -> bool {
    match kind {
        DetectorKind::Embereye => format == DeliveredFormat::Rgb,
        DetectorKind::Grid | DetectorKind::Model => true,
    }
}

/// Whether a replay path names an MJPEG file rather than a folder (by its extension).
pub fn is_mjpeg_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mjpeg") || e.eq_ignore_ascii_case("mjpg"))
}

fn default_fps() -> f64 {
    5.0
}
/// The default largest frame of a JPEG camera: 1080p, what most IP cameras send.
const JPEG_MAX: [usize; 2] = [1920, 1080];

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
fn default_replay_format() -> ReplayFormat {
    ReplayFormat::Rgb
}
fn default_detector() -> DetectorKind {
    DetectorKind::Grid
}

/// Deprecated spellings that still load (each reported as a warning): `detector = "grid"`. Read from the raw
/// TOML because serde's alias leaves no trace in the parsed config.
pub(super) fn deprecations(text: &str) -> Vec<(Vec<PathSeg>, String)> {
    let Ok(raw) = toml::from_str::<toml::Table>(text) else { return Vec::new() };
    let Some(cameras) = raw.get("cameras").and_then(|c| c.as_array()) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, cam) in cameras.iter().enumerate() {
        if cam.get("detector").and_then(|d| d.as_str()) == Some("default") {
            out.push((
                vec![key("cameras"), PathSeg::Index(i), key("detector")],
                "detector \"default\" is deprecated: it is the old name of the grid detector (which is also \
                 what a camera gets without `detector`); write detector = \"grid\" or leave the key out"
                    .into(),
            ));
        }
    }
    out
}

/// Semantic checks of the camera list.
pub(super) fn validate(cameras: &[Camera], base_dir: &Path, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    let mut seen = std::collections::HashSet::new();
    for (i, cam) in cameras.iter().enumerate() {
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
        let [max_width, max_height] = cam.max_size();
        if !(16..=4096).contains(&max_width) {
            push(at("max_width"), format!("max_width must be 16..=4096, got {max_width}"));
        }
        if !(16..=4096).contains(&max_height) {
            push(at("max_height"), format!("max_height must be 16..=4096, got {max_height}"));
        }
        validate_camera_source(cam, base_dir, &at, push);
        if cam.replay_format != ReplayFormat::Rgb && cam.source != CameraSource::Replay {
            push(
                at("replay_format"),
                "`replay_format` is only for source = \"replay\" (a v4l2 camera has `format`)".into(),
            );
        }
        if let Some([w, h]) = cam.replay_size
            && !(16..=max_width).contains(&w) | !(16..=max_height).contains(&h)
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
            if !(16..=max_width).contains(&cam.width) {
                push(at("width"), format!("width must be 16..=max_width ({max_width}), got {}", cam.width));
            }
            if !(16..=max_height).contains(&cam.height) {
                push(at("height"), format!("height must be 16..=max_height ({max_height}), got {}", cam.height));
            }
        }
        let format = delivered_format(cam);
        if !detector_reads(cam.detector, format) {
            push(
                at("detector"),
                format!(
                    "detector \"embereye\" reads RGB frames only and this camera delivers {}: it would never score \
                     a frame; use detector = \"grid\" (the default, reads every format) or RGB frames (format = \
                     \"mjpeg\")",
                    format.describe()
                ),
            );
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
                    if is_mjpeg_file(&p) {
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
                    if let Err(e) = HttpUrl::parse(u) {
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
