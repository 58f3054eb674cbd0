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
