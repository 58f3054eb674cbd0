//! The `default` detector from config: masks are validated with positions, and a camera configured with it
//! runs through the app (frames scored, none unsupported).

mod common;

use std::path::Path;
use std::time::Duration;

use ember_edge::app::{App, Overrides};

fn site(detector_lines: &str) -> String {
    format!(
        r#"
[telemetry]
listen = "127.0.0.1:0"
[sensors]
listen = ["127.0.0.1:0"]
[[cameras]]
name = "cam"
source = "replay"
path = "builtin:demo"
fps = 4.0
{detector_lines}
[[zones]]
name = "room"
cameras = ["cam"]
"#
    )
}

#[test]
fn bad_masks_are_reported_with_positions() {
    let text =
        site("detector = \"default\"\nmask = [[0.0, 0.0, 0.5, 0.5], [0.6, 0.1, 0.2, 0.9], [0.0, 0.0, 1.5, 1.0]]");
    let err = ember_edge::config::load_str("m.toml", &text, Path::new(".")).unwrap_err();
    let lines: Vec<String> = err.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("m.toml:12:") && l.contains("mask must be")), "{lines:#?}");
}

#[tokio::test(start_paused = true)]
async fn default_detector_scores_replayed_frames() {
    let loaded = common::load(&site("detector = \"default\"\nmask = [[0.0, 0.0, 0.2, 0.1]]"));
    let app = App::start(&loaded, Overrides::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = app.registry.render();
    app.shutdown().await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in {metrics}"))
    };
    assert!(value("ember_detect_frames_total{camera=\"cam\"}") >= 5.0, "{metrics}");
    assert_eq!(value("ember_detect_unsupported_total{camera=\"cam\"}"), 0.0);
    let score = value("ember_vision_score{camera=\"cam\"}");
    assert!((0.0..=1.0).contains(&score), "{score}");
}
