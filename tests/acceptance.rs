//! Acceptance checks on the team's larger fixture sets, which are not in the repo: the detectors' numbers on
//! the development split (136 labelled real images) and the JPEG decoder on every one of those frames.
//!
//! Not part of plain `cargo test` (Cargo.toml: `test = false`), because a fresh clone does not have the sets.
//! `scripts/acceptance.sh` runs them with `EMBER_SHARED` naming the folder, as a step of `.ci/run`, and a
//! missing folder fails them: an acceptance check that skipped itself would let a regression through.

mod common;

use common::{eval_frames, eval_frames_with, fixtures, num};
use ember_edge::camera::jpeg::JpegDecoder;

/// The detectors on the development split.
#[test]
fn dev_split_acceptance() {
    let dir = fixtures::shared("fixtures/frames");
    assert!(dir.join("labels.csv").is_file(), "{} has no labels.csv", dir.display());
    let d = eval_frames(&dir, "grid");
    assert_eq!(d["images"], 136, "{d}");
    // Regression guards at the shipped operating point, a little below what the committed weights score on this
    // split (recall 0.827, fpr 0.246, hard_fpr 0.256; docs/DETECTOR.md). The weights are fitted on the training set
    // only, so these are honest numbers; the target (recall 0.85 at hard_fpr 0.25) is not met yet.
    assert!(num(&d, "recall") >= 0.81, "grid recall: {d}");
    assert!(num(&d, "hard_fpr") <= 0.27, "grid hard_fpr: {d}");
    assert!(num(&d, "fpr") <= 0.26, "grid fpr: {d}");
    // RGB and YUYV read the same picture the same way (cell means, `detect::grid::boxes`): on the full-size decode
    // both give recall 0.773, and fpr 0.246 (RGB) against 0.230 (YUYV, one frame apart). The gap to the row above
    // is the decode (a JPEG camera's DCT-scaled analysis frame against full-size pixels), not the format.
    let full = eval_frames_with(&dir, "grid", &["--decode", "full"]);
    let y = eval_frames_with(&dir, "grid", &["--yuyv"]);
    assert!((num(&y, "recall") - num(&full, "recall")).abs() <= 0.015, "grid YUYV {y} against RGB {full}");
    assert!((num(&y, "fpr") - num(&full, "fpr")).abs() <= 0.035, "grid YUYV {y} against RGB {full}");
    assert!(num(&y, "recall") >= 0.76, "grid YUYV recall: {y}");
    assert!(num(&y, "hard_fpr") <= 0.26, "grid YUYV hard_fpr: {y}");
    // EmberEye at its anomaly threshold 0.4: the 71 % recall at 84 % FPR.
    // That is EmberEye's own path (full-size frames): the port is checked there; the appliance's cameras
    // decode at analysis scale (camera::scaled).
    let e = eval_frames_with(&dir, "embereye", &["--decode", "full"]);
    assert!((num(&e, "recall") - 0.7067).abs() < 0.005, "embereye: {e}");
    assert!((num(&e, "fpr") - 0.8361).abs() < 0.005, "embereye: {e}");
}

/// Every frame of the development split, with and without its DHT, decodes to the same pixels (the unit tests
/// do this on the repo's eight frames).
#[test]
fn dev_split_frames_decode_with_and_without_dht() {
    let dir = fixtures::shared("fixtures/frames");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 136, "the development split has 136 images");
    let (mut d, mut d2) = (JpegDecoder::new(), JpegDecoder::new());
    let mut decode = |j: &[u8]| {
        let (w, h) = d.dimensions(j)?;
        let mut out = vec![0u8; w * h * 3];
        d.decode_rgb(j, &mut out, 4096, 4096).map(|_| out)
    };
    for p in &files {
        let j = std::fs::read(p).unwrap();
        let a = decode(&j).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let b = decode(&common::strip_dht(&j)).unwrap_or_else(|e| panic!("{} without DHT: {e}", p.display()));
        assert!(a == b, "{}: pixels differ after DHT repair", p.display());
        // The cameras' analysis-scale decode repairs the same way.
        let mut small = |j: &[u8]| {
            let mut out = Vec::new();
            ember_edge::pixels::load_analysis(&mut d2, j, &mut out).map(|_| out)
        };
        let a = small(&j).unwrap_or_else(|e| panic!("{} at analysis scale: {e}", p.display()));
        let b = small(&common::strip_dht(&j)).unwrap();
        assert!(a == b, "{}: analysis pixels differ after DHT repair", p.display());
    }
}
