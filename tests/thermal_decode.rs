//! `ember-edge thermal decode` on the real MLX90640 device session (tests/fixtures/thermal): the packet
//! counts across the original chunk boundaries, and calibrated temperatures against the golden values
//! computed by an independent Melexis implementation (scripts/melexis_golden.py).

mod common;

use std::process::Command;

use common::fixtures;

fn decode(mode: &str) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["thermal", "decode", "--session"])
        .arg(fixtures::repo(fixtures::THERMAL_SESSION))
        .args(["--mode", mode, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn session_counts_match_the_capture() {
    for mode in ["compat", "calibrated"] {
        let lines = decode(mode);
        let summary = lines.last().unwrap();
        assert_eq!(summary["frames"], 188, "{mode}: {summary}");
        assert_eq!(summary["sensors"], 192, "{mode}: {summary}");
        assert_eq!(summary["eeproms"], 15, "{mode}: {summary}");
        assert_eq!(summary["rejected"], serde_json::json!({"frame_length": 4}), "{mode}: {summary}");
        assert_eq!(lines.len(), 189);
        for (k, l) in lines[..188].iter().enumerate() {
            assert_eq!(l["frame"], k as u64);
            assert_eq!(l["pixels_c"].as_array().unwrap().len(), 768);
        }
    }
}

#[test]
fn compat_mode_reproduces_embereye_numbers() {
    let lines = decode("compat");
    // ../shared/docs/embereye-protocol.md §2.3 Example A: the first frame of this capture.
    let f0 = &lines[0];
    let px: Vec<f64> = f0["pixels_c"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(&px[..4], &[26.2, 26.14, 26.19, 26.05]);
    assert_eq!((f0["min_c"].as_f64(), f0["max_c"].as_f64()), (Some(25.51), Some(26.36)));
    assert!((f0["mean_c"].as_f64().unwrap() - 25.8484).abs() < 0.001);
    assert!(f0["ta_c"].is_null(), "compat mode has no die temperature");
}

#[test]
fn calibrated_mode_matches_the_independent_melexis_implementation() {
    let lines = decode("calibrated");
    let golden = fixtures::read("thermal/mlx90640_golden_centi.bin");
    let gold: Vec<i16> = golden.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    assert_eq!(gold.len(), 188 * 770);
    let mut worst = 0f64;
    for (k, l) in lines[..188].iter().enumerate() {
        let g = &gold[k * 770..(k + 1) * 770];
        let ta = l["ta_c"].as_f64().unwrap();
        assert!((ta - g[1] as f64 / 100.0).abs() <= 0.05, "frame {k} Ta {ta}");
        for (i, v) in l["pixels_c"].as_array().unwrap().iter().enumerate() {
            let d = (v.as_f64().unwrap() - g[2 + i] as f64 / 100.0).abs();
            worst = worst.max(d);
            assert!(d <= 0.05, "frame {k} pixel {i}: {v} vs {}", g[2 + i] as f64 / 100.0);
        }
    }
    // Both sides are rounded to 0.01 °C.
    assert!(worst <= 0.011, "worst {worst}");
    let f0 = &lines[0];
    assert!((f0["ta_c"].as_f64().unwrap() - 32.08).abs() < 0.01);
    assert!(f0["min_c"].as_f64().unwrap() > 25.0 && f0["max_c"].as_f64().unwrap() < 30.0, "a room near 27 °C: {f0}");
}

#[test]
fn a_missing_or_bad_session_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["thermal", "decode", "--session", "/nonexistent/session.jsonl", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: /nonexistent/session.jsonl:") && !err.contains("panicked"), "{err}");
}
