//! The picture of the alarm moment through the running appliance: the demo camera's alarm has a snapshot whose
//! JPEG decodes and shows the detector's boxes (drawn where `snapshot.json` says, absent from the same frame in
//! `frames/0.jpg`), with the frames before it, and the alert for it names the event and the frame; a zone of a
//! thermal device only keeps the device's 32×24 grid.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{SharedBuf, load, site_toml};
use ember_edge::app::{App, Overrides};
use ember_edge::camera::jpeg::JpegDecoder;
use serde_json::Value;

/// Blocking GET with the body as bytes (a JPEG is not text).
fn get_bytes(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, resp.get(split + 4..).unwrap_or_default().to_vec())
}

fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = get_bytes(addr, path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Waits for an event whose snapshot satisfies `ok`; returns the snapshot's entry from `GET /api/events`.
async fn wait_snapshot(addr: SocketAddr, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(30));
    loop {
        let page = tokio::task::spawn_blocking(move || json(addr, "/api/events?kind=zone&limit=1000")).await.unwrap();
        if let Some(s) = page["snapshots"].as_array().and_then(|a| a.iter().find(|s| ok(s))) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "no snapshot came; last page: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn decode(jpeg: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut out = vec![0u8; 1024 * 1024 * 3];
    let (w, h) = JpegDecoder::new().decode_rgb(jpeg, &mut out, 1024, 1024).expect("the snapshot decodes");
    out.truncate(w * h * 3);
    (out, w, h)
}

fn start_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-snapshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn with_events_dir(toml: String, dir: &std::path::Path) -> String {
    toml.replace("[uplink]\n", &format!("[uplink]\nevents_dir = {:?}\n", dir.display().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_camera_alarm_has_a_snapshot_that_shows_the_boxes() {
    let dir = start_dir("camera");
    let loaded = load(&with_events_dir(site_toml(""), &dir));
    let sink = SharedBuf::default();
    let ov = Overrides { collector_sink: Some(Box::new(sink.clone())), ..Default::default() };
    let app = App::start(&loaded, ov).await.unwrap();
    let addr = app.telemetry_addr;
    let snap = wait_snapshot(addr, |s| s["camera"] == true).await;
    let id = snap["id"].as_u64().unwrap();
    assert!(snap["frames"].as_u64().unwrap() >= 2, "the frames before it are kept too: {snap}");
    let (meta, shot, plain, before) = tokio::task::spawn_blocking(move || {
        let meta = json(addr, &format!("/api/events/{id}/snapshot.json"));
        let shot = get_bytes(addr, &format!("/api/events/{id}/snapshot.jpg"));
        let plain = get_bytes(addr, &format!("/api/events/{id}/frames/0.jpg"));
        let before = get_bytes(addr, &format!("/api/events/{id}/frames/1.jpg"));
        (meta, shot, plain, before)
    })
    .await
    .unwrap();
    assert_eq!(shot.0, 200);
    assert!(shot.1.contains("image/jpeg"), "{}", shot.1);
    assert_eq!((plain.0, before.0), (200, 200));
    let (px, w, h) = decode(&shot.2);
    let (raw, w0, h0) = decode(&plain.2);
    decode(&before.2);
    assert_eq!((w, h), (w0, h0));
    let frames = meta["frames"].as_array().unwrap();
    assert_eq!(frames[0], meta["frame"], "{meta}");
    assert!(frames.windows(2).all(|f| f[0].as_u64() > f[1].as_u64()), "newest first: {meta}");
    let boxes = meta["boxes"].as_array().cloned().unwrap_or_default();
    assert!(!boxes.is_empty(), "the deciding frame had boxes: {meta}");
    // Each box's left edge, halfway down, is drawn in the box colour (red fire, grey smoke) on the snapshot
    // and is not on the plain frame.
    let mut drawn = 0;
    for b in &boxes {
        let f = |k: &str| b[k].as_f64().unwrap();
        let (x, y) = (((f("x0") * w as f64) as usize + 1).min(w - 1), ((f("y0") + f("y1")) / 2.0 * h as f64) as usize);
        let at = |p: &[u8]| [p[(y * w + x) * 3], p[(y * w + x) * 3 + 1], p[(y * w + x) * 3 + 2]];
        let (s, r) = (at(&px), at(&raw));
        let colour = if b["class"] == 1 { [200, 200, 200] } else { [255, 40, 20] };
        let near = |a: [u8; 3]| a.iter().zip(colour).all(|(&a, c)| (a as i32 - c).abs() < 60);
        if near(s) && s != r {
            drawn += 1;
        }
    }
    assert!(drawn > 0, "no box edge found drawn in the snapshot: {meta}");
    let missing = tokio::task::spawn_blocking(move || {
        [get_bytes(addr, &format!("/api/events/{id}/frames/9.jpg")).0, get_bytes(addr, "/api/events/x/snapshot.jpg").0]
    })
    .await
    .unwrap();
    assert_eq!(missing, [404, 400]);
    // The control room's alert for that transition names the event and the frame, to ask for the picture.
    let deadline = Instant::now() + common::scaled(Duration::from_secs(10));
    while !sink.alerts().iter().any(|a| a["event_id"] == id) {
        assert!(Instant::now() < deadline, "no alert with event_id {id}: {:?}", sink.alerts());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = sink.alerts().into_iter().find(|a| a["event_id"] == id).unwrap();
    assert_eq!((&alert["camera"], &alert["frame"]), (&Value::from(0), &meta["frame"]), "{alert}");
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thermal_alarm_keeps_its_grid() {
    let dir = start_dir("thermal");
    // The zone has the device only, and smoke alone does not alarm: its alarm is thermal and smoke, no camera.
    let toml = site_toml("").replace("cameras = [\"cam\"]\n", "cameras = []\nsmoke_alone_alarms = false\n");
    let loaded = load(&with_events_dir(toml, &dir));
    let ov = Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() };
    let app = App::start(&loaded, ov).await.unwrap();
    let addr = app.telemetry_addr;
    let snap = wait_snapshot(addr, |s| s["thermal"] == true).await;
    assert_eq!((&snap["camera"], &snap["frames"]), (&Value::from(false), &Value::from(0)), "{snap}");
    let id = snap["id"].as_u64().unwrap();
    let (meta, img) = tokio::task::spawn_blocking(move || {
        (
            json(addr, &format!("/api/events/{id}/snapshot.json")),
            get_bytes(addr, &format!("/api/events/{id}/thermal.jpg")),
        )
    })
    .await
    .unwrap();
    let t = &meta["thermal"];
    assert_eq!((&t["device"], &t["width"], &t["height"]), (&Value::from("dev"), &Value::from(32), &Value::from(24)));
    let cells: Vec<f64> = t["celsius"].as_array().unwrap().iter().map(|c| c.as_f64().unwrap()).collect();
    assert_eq!(cells.len(), 32 * 24);
    let hottest = cells.iter().cloned().fold(f64::MIN, f64::max);
    assert!(hottest >= t["hot_c"].as_f64().unwrap(), "the grid of a thermal alarm has hot cells: {hottest}");
    assert_eq!(img.0, 200);
    assert_eq!((decode(&img.2).1, decode(&img.2).2), (256, 192));
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
