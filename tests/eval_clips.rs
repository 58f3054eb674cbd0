//! `ember-tools eval clips` end to end on a tiny clip set built from the repo's fixture frames (CC BY 4.0, see
//! tests/fixtures/frames/ATTRIBUTION.md): a "fire" clip that is the five fire photographs in turn, as an
//! .mjpeg file (plain JPEG concatenation), and a negative clip that is one quiet picture held still, as a
//! folder of frames. The numbers on the real clip set are in docs/DETECTOR.md.

use std::path::{Path, PathBuf};
use std::process::Command;

const FIRE: [&str; 5] = [
    "rf-fire8_img_417_be4ce5.jpg",
    "rf-indoorfire_classk11_mp4-107_6e6650.jpg",
    "rf-indoorfire_image415_68a572.jpg",
    "rf-indoorfire_image453_0b89e4.jpg",
    "rf-indoorfire_image557_b666b1.jpg",
];
const QUIET: &str = "rf-indoorfire_image6_880670.jpg";
const FRAMES: usize = 20;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames").join(name)).unwrap()
}

/// The clip set in a fresh folder, with its clips.csv.
fn clip_set(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-clips-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("quiet")).unwrap();
    let mut mjpeg = Vec::new();
    for k in 0..FRAMES {
        mjpeg.extend_from_slice(&fixture(FIRE[k % FIRE.len()]));
        std::fs::write(dir.join("quiet").join(format!("{k:04}.jpg")), fixture(QUIET)).unwrap();
    }
    std::fs::write(dir.join("fire.mjpeg"), mjpeg).unwrap();
    std::fs::write(
        dir.join("clips.csv"),
        format!("file,label,fps,frames,onset_s,notes\nfire.mjpeg,fire,5,{FRAMES},0.0,\"synthetic, from fixtures\"\nquiet,negative,5,{FRAMES},,still\n"),
    )
    .unwrap();
    dir
}

fn eval(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ember-tools")).args(["eval", "clips"]).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_fire_clip_is_confirmed_a_still_negative_is_not_in_rgb_and_yuyv() {
    let dir = clip_set("json");
    for extra in [None, Some("--yuyv")] {
        let mut args = vec![dir.to_str().unwrap(), "--json"];
        args.extend(extra);
        let (ok, out, err) = eval(&args);
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let clips = r["clips"].as_array().unwrap();
        assert_eq!(clips.len(), 2, "{r}");
        let fire = &clips[0];
        assert_eq!((fire["clip"].as_str(), fire["label"].as_str()), (Some("fire.mjpeg"), Some("fire")), "{r}");
        assert_eq!(fire["frames"], FRAMES, "every JPEG of the .mjpeg file is a frame: {r}");
        assert!(fire["confirmations"].as_u64().unwrap() >= 1, "{extra:?}: {r}");
        let ttd = fire["ttd_s"].as_f64().unwrap();
        // Confirmation needs several frames (temporal hits, then the zone's frames in a row) at 5 fps.
        assert!((0.4..=FRAMES as f64 / 5.0).contains(&ttd), "{extra:?}: {r}");
        assert_eq!(fire["false_confirmations"], 0, "{r}");
        let quiet = &clips[1];
        assert_eq!((quiet["label"].as_str(), quiet["frames"].as_u64()), (Some("negative"), Some(FRAMES as u64)));
        assert_eq!(quiet["confirmations"], 0, "a still picture never moves like fire: {r}");
        assert_eq!(
            (r["fire_clips"].as_u64(), r["smoke_clips"].as_u64(), r["negative_clips"].as_u64()),
            (Some(1), Some(0), Some(1))
        );
        assert_eq!(r["event_recall"], 1.0, "{r}");
        assert_eq!(r["median_ttd_s"].as_f64(), Some(ttd));
        assert_eq!(r["false_confirmations_per_hour"], 0.0, "{r}");
        assert!((r["negative_hours"].as_f64().unwrap() - FRAMES as f64 / 5.0 / 3600.0).abs() < 1e-9, "{r}");
        assert_eq!(r["pixel_format"], if extra.is_some() { "yuyv" } else { "rgb" });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_fire_clip_played_as_a_negative_counts_false_confirmations_per_hour() {
    // The same fire clip labelled negative (given on the command line with its own labels): what would be
    // recall becomes false alarms, per hour of video.
    let dir = clip_set("neg");
    std::fs::write(
        dir.join("as-negative.csv"),
        format!("file,label,fps,frames,onset_s\nfire.mjpeg,negative,5,{FRAMES},\n"),
    )
    .unwrap();
    let labels = dir.join("as-negative.csv");
    let clip = dir.join("fire.mjpeg");
    let (ok, out, err) = eval(&[clip.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = r["clips"][0]["false_confirmations"].as_f64().unwrap();
    assert!(n >= 1.0, "{r}");
    let per_hour = r["false_confirmations_per_hour"].as_f64().unwrap();
    assert!((per_hour - n / (FRAMES as f64 / 5.0 / 3600.0)).abs() < 1e-6, "{r}");
    assert!(r["event_recall"].is_null(), "no positive clip, no recall: {r}");

    // The table names every clip and prints the summary.
    let (ok, table, err) = eval(&[dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(table.contains("fire.mjpeg") && table.contains("quiet") && table.contains("event recall 1.000"), "{table}");

    // A clip that is not there fails with its name.
    let (ok, _, err) = eval(&[dir.join("missing.mjpeg").to_str().unwrap()]);
    assert!(!ok && err.contains("missing.mjpeg"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
