//! The site configuration: typed TOML with `deny_unknown_fields`, a default for every optional field, and a
//! semantic validation pass. Loading reports every problem at once as `FILE:LINE:COL: message`
//! (see `load`). The commented reference config, `configs/default.toml`, is embedded in the binary.
//!
//! Config is the bottom layer: it imports nothing else of the crate. Each section lives in its own file with
//! its checks; the rules a check needs (URL syntax, the zone-name limit, the board profile) are owned here.

pub mod board;
mod camera;
mod http_url;
mod load;
mod model;
mod sensors;
mod site;
mod telemetry;
mod uplink;
mod zone;

pub use board::Board;
pub use camera::*;
pub use http_url::HttpUrl;
pub use load::{ConfigProblem, PathSeg, locate, parse_all};
pub use model::ModelSection;
pub use sensors::*;
pub use site::*;
pub use telemetry::Telemetry;
pub use uplink::*;
pub use zone::*;

use serde::Deserialize;
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

/// A loaded, validated config and where it came from (relative paths resolve against `base_dir`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source_name: String,
    pub base_dir: PathBuf,
    /// The board profile named by `[site] board`, parsed and checked once at load.
    pub board: Option<Board>,
    /// Things that load but should be changed (deprecated spellings), located like problems.
    pub warnings: Vec<ConfigProblem>,
    /// SHA-256 of the config text, hex: the event log records which config a run loaded.
    pub sha256: String,
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
    let (problems, board) = check(&config, base_dir);
    let problems: Vec<ConfigProblem> =
        problems.into_iter().map(|(path, msg)| load::locate(name, text, &path, msg)).collect();
    if problems.is_empty() {
        let warnings =
            camera::deprecations(text).into_iter().map(|(path, msg)| load::locate(name, text, &path, msg)).collect();
        let sha256 = {
            use sha2::Digest;
            sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(Loaded { config, source_name: name.to_owned(), base_dir: base_dir.to_path_buf(), board, warnings, sha256 })
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
    check(c, base_dir).0
}

/// `validate`, also handing back the parsed board profile so nobody parses it again. The sections are checked
/// in the order their problems have always been reported.
fn check(c: &Config, base_dir: &Path) -> (Vec<(Vec<PathSeg>, String)>, Option<Board>) {
    let mut out = Vec::new();
    let mut push = |path: Vec<PathSeg>, msg: String| out.push((path, msg));
    camera::validate(&c.cameras, base_dir, &mut push);
    telemetry::validate(&c.telemetry, &mut push);
    sensors::validate(&c.sensors, !c.simulator.is_empty(), &mut push);
    model::validate(&c.model, &mut push);
    sensors::validate_simulators(&c.simulator, &mut push);
    if c.zones.is_empty() {
        push(vec![key("zones")], "no [[zones]]: an appliance without a zone raises no alarm".into());
    }
    zone::validate(&c.zones, &c.cameras, &c.sensors, &mut push);
    uplink::validate(&c.uplink, &c.collector, base_dir, &mut push);
    match c.site.device_id {
        None if c.uplink.enabled => push(
            vec![key("site"), key("device_id")],
            "the uplink is enabled: set [site] device_id, which every alert carries (the control room tells \
             appliances apart by it)"
                .into(),
        ),
        Some(0) => push(vec![key("site"), key("device_id")], "device_id must be at least 1".into()),
        _ => {}
    }
    let mut board = None;
    if let Some(b) = &c.site.board {
        match board::load_file(&base_dir.join(b)) {
            Ok(parsed) => board = Some(parsed),
            Err(problems) => {
                for p in problems {
                    push(vec![key("site"), key("board")], format!("board profile: {p}"));
                }
            }
        }
    } else if c.alarm.backend != AlarmBackend::Log {
        push(vec![key("alarm"), key("backend")], "GPIO backends need [site] board (a board profile)".into());
    }
    uplink::validate_collector(&c.collector, &mut push);
    site::validate_runtime(&c.runtime, &mut push);
    site::validate_alarm(&c.alarm, &mut push);
    (out, board)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMERA: &str = "[[zones]]\nname = \"z\"\ncameras = [\"a\"]\n[[cameras]]\nname = \"a\"\nsource = \"replay\"\npath = \"builtin:demo\"\n";

    #[test]
    fn grid_detector_is_named_grid_and_default_is_a_located_deprecated_alias() {
        let l = load_str("a.toml", &format!("{CAMERA}detector = \"grid\"\n"), Path::new("."))
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(l.config.cameras[0].detector, DetectorKind::Grid);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);

        let l = load_str("a.toml", &format!("{CAMERA}detector = \"default\"\n"), Path::new("."))
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(l.config.cameras[0].detector, DetectorKind::Grid);
        let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("a.toml:8:") && w[0].contains("deprecated"), "{w:?}");

        let l = load_str("a.toml", CAMERA, Path::new(".")).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(l.config.cameras[0].detector, DetectorKind::Grid, "a camera without `detector` is never blind");
        let l = load_str("a.toml", &format!("{CAMERA}detector = \"embereye\"\n"), Path::new("."))
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(l.config.cameras[0].detector, DetectorKind::Embereye, "the heuristic stays as an opt-in");
    }

    const V4L2: &str = "[[zones]]\nname = \"z\"\ncameras = [\"u\"]\n[[cameras]]\nname = \"u\"\nsource = \"v4l2\"\n";

    fn problems(text: &str) -> Vec<String> {
        match load_str("a.toml", text, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_detector_that_cannot_read_the_cameras_frames_is_a_located_error() {
        // The v4l2 default format is YUYV, which EmberEye's heuristic cannot read: the camera would be blind.
        let p = problems(&format!("{V4L2}detector = \"embereye\"\n"));
        let blind: Vec<&String> = p.iter().filter(|m| m.contains("never score")).collect();
        assert_eq!(blind.len(), 1, "{p:?}");
        assert!(blind[0].starts_with("a.toml:7:1: detector \"embereye\" reads RGB frames only"), "{p:?}");
        let p = problems(&format!("{V4L2}format = \"yuyv\"\ndetector = \"embereye\"\n"));
        assert!(p.iter().any(|m| m.starts_with("a.toml:8:1:") && m.contains("never score")), "{p:?}");

        // Every pair that can score loads without that error.
        for lines in
            ["", "detector = \"grid\"\n", "detector = \"model\"\n", "format = \"mjpeg\"\ndetector = \"embereye\"\n"]
        {
            let p = problems(&format!("{V4L2}{lines}"));
            assert!(!p.iter().any(|m| m.contains("never score")), "{lines}: {p:?}");
        }
        let p = problems(&format!("{CAMERA}detector = \"embereye\"\n"));
        assert!(p.is_empty(), "{p:?}");
    }
}
