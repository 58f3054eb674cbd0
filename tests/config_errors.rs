//! Config loading: every shipped config is valid, and a file with several mistakes reports all of them with
//! file, line and column, through the library and through `ember-edge check-config`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_site_config_is_valid() {
    let files = toml_files("configs");
    assert!(files.len() >= 2, "configs/ should hold default.toml and dev.toml");
    for f in files {
        if let Err(p) = ember_edge::config::load_file(&f) {
            panic!("{} does not load: {p:#?}", f.display());
        }
    }
}

#[test]
fn every_board_profile_is_valid() {
    let files = toml_files("board");
    assert!(files.len() >= 3, "board/ should hold the board profiles");
    for f in files {
        if let Err(p) = ember_edge::board::load_file(&f) {
            panic!("{} does not load: {p:#?}", f.display());
        }
    }
}

#[test]
fn embedded_default_equals_the_file_and_loads() {
    let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml")).unwrap();
    assert_eq!(file, ember_edge::config::DEFAULT_TOML);
    assert!(ember_edge::config::load_default().is_ok());
}

const THREE_MISTAKES: &str = r#"[telemetry]
listen = "127.0.0.1:9090"
colour = "blue"

[[cameras]]
name = "a"
source = "replay"
path = "builtin:demo"
fps = "fast"

[sensors]
listen = ["127.0.0.1:70000"]
"#;

#[test]
fn three_mistakes_are_all_reported_with_positions() {
    let err = ember_edge::config::load_str("bad.toml", THREE_MISTAKES, Path::new(".")).unwrap_err();
    let lines: Vec<String> = err.iter().map(|p| p.to_string()).collect();
    assert_eq!(err.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("bad.toml:3:1: unknown field `colour`"), "{lines:#?}");
    assert!(lines[1].starts_with("bad.toml:9:7:") && lines[1].contains("invalid type"), "{lines:#?}");
    assert!(lines[2].starts_with("bad.toml:12:") && lines[2].contains("socket address"), "{lines:#?}");
}

#[test]
fn semantic_mistakes_are_all_reported_with_positions() {
    let text = r#"
[[cameras]]
name = "a"
source = "replay"
path = "builtin:demo"

[[cameras]]
name = "a"
source = "replay"
path = "builtin:demo"
fps = 0.0

[[zones]]
name = "z"
cameras = ["a", "ghost"]

[[zones]]
name = "z"
devices = ["nobody"]
"#;
    let err = ember_edge::config::load_str("sem.toml", text, Path::new(".")).unwrap_err();
    let all: Vec<String> = err.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str, line: usize| {
        all.iter().any(|l| l.contains(needle) && l.starts_with(&format!("sem.toml:{line}:")))
    };
    assert!(has("duplicate camera name `a`", 8), "{all:#?}");
    assert!(has("fps must be", 11), "{all:#?}");
    assert!(has("camera `ghost`", 15), "{all:#?}");
    assert!(has("duplicate zone name `z`", 18), "{all:#?}");
    assert!(has("device `nobody`", 19), "{all:#?}");
}

#[test]
fn check_config_cli_prints_every_problem_and_fails_cleanly() {
    let dir = std::env::temp_dir().join(format!("ember-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, THREE_MISTAKES).unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["check-config"])
        .arg(&good)
        .arg(&bad)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let located: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&format!("{}:", bad.display()))).collect();
    assert_eq!(located.len(), 4, "3 problems + summary: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("default.toml: ok"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A V4L2 camera in a binary built without the `v4l2` feature is a config error that says so, at the line.
#[cfg(not(feature = "v4l2"))]
#[test]
fn a_v4l2_camera_without_the_feature_names_the_missing_feature() {
    let text = "[[cameras]]\nname = \"c\"\nsource = \"v4l2\"\ndevice = \"/dev/video0\"\n\n[[zones]]\nname = \"z\"\ncameras = [\"c\"]\n";
    let p = ember_edge::config::load_str("site.toml", text, Path::new(".")).unwrap_err();
    assert_eq!(p.len(), 1, "{p:#?}");
    let msg = p[0].to_string();
    assert!(msg.starts_with("site.toml:3:"), "{msg}");
    assert!(msg.contains("built without the `v4l2` cargo feature"), "{msg}");
}

/// With the feature, a V4L2 camera must ask for a size its frame pool can hold.
#[cfg(feature = "v4l2")]
#[test]
fn a_v4l2_camera_asking_for_more_than_max_size_is_refused() {
    let text = "[[cameras]]\nname = \"c\"\nsource = \"v4l2\"\nwidth = 1280\nmax_width = 640\n\n[[zones]]\nname = \"z\"\n\
                cameras = [\"c\"]\n";
    let p = ember_edge::config::load_str("site.toml", text, Path::new(".")).unwrap_err();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].to_string().contains("width must be 16..=max_width (640), got 1280"), "{p:#?}");
}

/// Without `max_width`/`max_height`, a raw camera's pool fits the size it asks for, and a JPEG camera takes 1080p.
#[cfg(feature = "v4l2")]
#[test]
fn the_largest_frame_defaults_to_what_the_camera_can_send() {
    let text = "[[cameras]]\nname = \"raw\"\nsource = \"v4l2\"\nwidth = 1280\nheight = 720\n\n[[cameras]]\n\
                name = \"jpeg\"\nsource = \"v4l2\"\nformat = \"mjpeg\"\n\n[[zones]]\nname = \"z\"\n\
                cameras = [\"raw\", \"jpeg\"]\n";
    let c = ember_edge::config::load_str("site.toml", text, Path::new(".")).unwrap().config;
    assert_eq!(c.cameras[0].max_size(), [1280, 720]);
    assert_eq!(c.cameras[1].max_size(), [1920, 1080]);
}

/// An IP camera at its defaults takes 1080p frames; an explicit size still rules.
#[test]
fn an_mjpeg_camera_takes_1080p_by_default() {
    let text = "[[cameras]]\nname = \"ip\"\nsource = \"mjpeg\"\nurl = \"http://127.0.0.1:1/video\"\n\n[[cameras]]\n\
                name = \"small\"\nsource = \"mjpeg\"\nurl = \"http://127.0.0.1:1/video\"\nmax_height = 720\n\n\
                [[zones]]\nname = \"z\"\ncameras = [\"ip\", \"small\"]\n";
    let c = ember_edge::config::load_str("site.toml", text, Path::new(".")).unwrap().config;
    assert_eq!(c.cameras[0].max_size(), [1920, 1080]);
    assert_eq!(c.cameras[1].max_size(), [1920, 720]);
}

/// Problems of a config text, as `FILE:LINE:COL: message` lines; empty when it loads.
fn problems(text: &str) -> Vec<String> {
    match ember_edge::config::load_str("t.toml", text, Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(|x| x.to_string()).collect(),
    }
}

const ONE_ZONE: &str =
    "[[sensors.devices]]\nname = \"d\"\nloc_id = \"1\"\n[[zones]]\nname = \"z\"\ndevices = [\"d\"]\n";

#[test]
fn absurd_durations_and_counts_are_config_errors_not_panics_at_run_time() {
    assert!(problems(ONE_ZONE).is_empty(), "{:?}", problems(ONE_ZONE));
    // i64::MAX seconds passed check-config, and every sensor connection then panicked adding it to an Instant.
    for (section, key, value) in [
        ("sensors", "offline_after_secs", "9223372036854775807"),
        ("sensors", "offline_after_secs", "0"),
        ("sensors", "identify_secs", "9223372036854775807"),
        ("sensors", "max_connections_per_ip", "0"),
        ("uplink", "heartbeat_secs", "9223372036854775807"),
        ("uplink", "reconnect_min_ms", "0"),
        ("runtime", "shutdown_timeout_ms", "18446744073709551615"),
    ] {
        let text = format!("[{section}]\n{key} = {value}\n{ONE_ZONE}");
        let p = problems(&text);
        assert!(p.iter().any(|m| m.starts_with("t.toml:2:") && m.contains(key)), "{section}.{key} = {value}: {p:?}");
    }
    let p = problems(&format!("[uplink]\nreconnect_max_ms = 18446744073709551615\n{ONE_ZONE}"));
    assert!(p.iter().any(|m| m.contains("≤ 1 h")), "{p:?}");
    let text = format!("{ONE_ZONE}vision_frames = 0\nsmoke_readings = 4294967295\nthermal_alarm_c = 1e30\n");
    let p = problems(&text);
    for key in ["vision_frames", "smoke_readings", "thermal_alarm_c"] {
        assert!(p.iter().any(|m| m.contains(key)), "{key}: {p:?}");
    }
}

#[test]
fn zone_names_the_api_cannot_address_are_refused() {
    for bad in ["boiler room", "a/b", "all", ".hidden", "heizraum-ü"] {
        let text = ONE_ZONE.replace("name = \"z\"", &format!("name = \"{bad}\""));
        let p = problems(&text);
        assert!(p.iter().any(|m| m.starts_with("t.toml:5:") && m.contains("zone name")), "{bad}: {p:?}");
    }
    for good in ["boiler-room", "zone_2", "b1.north"] {
        let text = ONE_ZONE.replace("name = \"z\"", &format!("name = \"{good}\""));
        assert!(problems(&text).is_empty(), "{good}: {:?}", problems(&text));
    }
}

#[test]
fn an_empty_config_and_an_anonymous_uplink_are_refused() {
    let p = problems("");
    assert!(p.iter().any(|m| m.contains("no [[zones]]")), "{p:?}");
    // The control room tells appliances apart by device_id: no silent default of 1 when alerts go upstream.
    let uplink = format!("{ONE_ZONE}[uplink]\nenabled = true\nserver = \"127.0.0.1:7700\"\n");
    let p = problems(&uplink);
    assert!(p.iter().any(|m| m.contains("device_id")), "{p:?}");
    assert!(problems(&format!("[site]\ndevice_id = 12\n{uplink}")).is_empty());
    let p = problems(&format!("[site]\ndevice_id = 0\n{ONE_ZONE}"));
    assert!(p.iter().any(|m| m.starts_with("t.toml:2:") && m.contains("device_id")), "{p:?}");
}

/// Alarm verification and output delay are refused outside the limits of the standards they follow (UL 864:
/// retard ≤ 60 s, confirmation ≥ 60 s; EN 54-2 §7.11: delay ≤ 10 min), at the key's line.
#[test]
fn verification_and_delay_outside_their_limits_are_refused_at_the_line() {
    let ok = format!(
        "{ONE_ZONE}verification = true\nverification_retard_secs = 60\nverification_confirm_secs = 60\noutput_delay_secs = 600\n"
    );
    assert!(problems(&ok).is_empty(), "the limits themselves are allowed: {:?}", problems(&ok));
    for (key, value) in [
        ("verification_retard_secs", "61"),
        ("verification_retard_secs", "-1"),
        ("verification_confirm_secs", "59.5"),
        ("output_delay_secs", "601"),
        ("output_delay_secs", "-5"),
    ] {
        let p = problems(&format!("{ONE_ZONE}{key} = {value}\n"));
        assert_eq!(p.len(), 1, "{key} = {value}: {p:?}");
        assert!(p[0].starts_with("t.toml:7:1: ") && p[0].contains(key), "{key} = {value}: {p:?}");
    }
    let p = problems(&format!("[alarm]\nlong_press_secs = 0.1\n{ONE_ZONE}"));
    assert!(p.iter().any(|m| m.starts_with("t.toml:2:") && m.contains("long_press_secs")), "{p:?}");
}
