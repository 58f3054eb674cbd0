//! `ember-tools loadtest vision` speaks EmberEye's camera_stream_load_test.py: same flags, same JSON keys, and on
//! uniform random frames the EmberEye detector scores what EmberEye's own run reported (avg_vision_score 0.600).

use std::process::Command;

#[test]
fn random_frames_reproduce_embereyes_score_and_the_report_has_its_keys() {
    let stats = std::env::temp_dir().join(format!("ember-lv-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ember-tools"))
        .args(["loadtest", "vision", "--streams", "2", "--frames", "12", "--fps", "200", "--width", "320"])
        .args(["--height", "240", "--report-interval", "0", "--stats-file"])
        .arg(&stats)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(r, file);
    assert_eq!(r["mode"], "direct");
    assert_eq!(r["streams"], 2);
    assert_eq!(r["frame_spec"]["width"], 320);
    assert_eq!(r["per_stream"].as_array().unwrap().len(), 2);
    for s in r["per_stream"].as_array().unwrap() {
        assert_eq!(s["frames"], 12);
        for k in ["duration_sec", "fps", "latency_avg_ms", "latency_p95_ms", "latency_max_ms", "vision_score_avg"] {
            assert!(s[k].is_number(), "{k} missing in {s}");
        }
    }
    let agg = &r["aggregate"];
    assert_eq!(agg["total_frames"], 24);
    let score = agg["avg_vision_score"].as_f64().unwrap();
    assert!((score - 0.600).abs() < 0.005, "score {score}");
    assert!(r["system_metrics"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_file(&stats);
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ember-tools"))
        .args(["loadtest", "vision", "--streams", "0", "--frames", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--streams"));
}
