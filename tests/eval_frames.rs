//! `ember-tools eval frames` end to end on the repo's 8 fixture frames. The acceptance numbers on the
//! development split (the shared sets) are checked by tests/acceptance.rs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{eval_frames, num};

#[test]
fn repo_fixture_frames_report_every_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    for det in ["grid", "default", "embereye"] {
        let r = eval_frames(&dir, det);
        assert_eq!(r["images"], 8, "{r}");
        assert_eq!(r["positives"], 5, "{r}");
        for k in ["recall", "fire_recall", "smoke_recall", "fpr", "hard_fpr", "threshold"] {
            let v = num(&r, k);
            assert!((0.0..=1.0).contains(&v), "{k} = {v}");
        }
    }
}

#[test]
fn model_detector_without_its_library_or_feature_fails_clearly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ember-tools"))
            .args(["eval", "frames"])
            .arg(&dir)
            .args(["--detector", "model", "--json"])
            .args(extra)
            .env_remove("EMBER_TFLITE_LIB")
            .output()
            .unwrap();
        assert!(!out.status.success(), "eval must not fall back silently to another detector");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let no_lib = run(&[]);
    let bad_lib = run(&["--model-library", "/nonexistent/libLiteRtRuntimeCApi.so"]);
    if cfg!(feature = "tflite") {
        assert!(no_lib.contains("needs --model-library or EMBER_TFLITE_LIB"), "{no_lib}");
        assert!(bad_lib.contains("/nonexistent/libLiteRtRuntimeCApi.so"), "{bad_lib}");
    } else {
        for err in [no_lib, bad_lib] {
            assert!(err.contains("built without the `tflite` feature"), "{err}");
        }
    }
}

/// `--dump-boxes` (for scripts/train-model.py --boxes): the regions the `model` detector would crop, at most
/// MAX_CROPS per image, relative coordinates in order, every row naming a listed image.
#[test]
fn dump_boxes_writes_the_regions_the_model_detector_crops() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let out = std::env::temp_dir().join(format!("ember-dump-boxes-{}.csv", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_ember-tools"))
        .args(["eval", "frames"])
        .arg(&dir)
        .arg("--dump-boxes")
        .arg(&out)
        .arg("--json")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let labels = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("file,kind,x0,y0,x1,y1"));
    let mut per_file = std::collections::BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert!(labels.lines().any(|l| l.starts_with(&format!("{},", f[0]))), "{line}");
        assert!(f[1] == "fire" || f[1] == "smoke", "{line}");
        let v: Vec<f64> = f[2..].iter().map(|x| x.parse().unwrap()).collect();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)) && v[0] < v[2] && v[1] < v[3], "{line}");
        *per_file.entry(f[0].to_owned()).or_insert(0) += 1;
    }
    assert!(!per_file.is_empty(), "the fixture fires give regions");
    assert!(per_file.values().all(|&n| n <= ember_edge::detect::cnn::MAX_CROPS), "{per_file:?}");
}
