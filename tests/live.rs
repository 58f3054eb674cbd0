//! The live view over real HTTP: a viewer that stops reading is dropped after the configured lag while another
//! keeps getting every frame; viewer limits answer 503; token and basic auth; a camera whose source dies shows
//! as failed in /cameras and /api/status; snapshots are real JPEGs; /api/status carries zones, devices with
//! their thermal grid, and recent alerts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{SharedBuf, http_get, load, metric, scaled};
use ember_edge::app::{App, Overrides};
use ember_edge::camera::multipart::MultipartParser;

fn config(telemetry_extra: &str, cameras: usize) -> String {
    let mut s = format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\nviewer_max_lag_ms = 500\nmax_viewers = 3\nmax_viewers_per_camera = 2\n\
         {telemetry_extra}\n[sensors]\nlisten = [\"127.0.0.1:0\"]\n[[sensors.devices]]\nname = \"dev\"\nloc_id = \"1234\"\n\
         [[simulator]]\nloc_id = \"1234\"\nscenario = \"fire\"\ninterval_secs = 0.3\nfire_after_secs = 0.5\n"
    );
    let mut names = Vec::new();
    for i in 0..cameras {
        s += &format!("[[cameras]]\nname = \"cam{i}\"\nsource = \"replay\"\npath = \"builtin:demo\"\nfps = 10.0\n");
        names.push(format!("\"cam{i}\""));
    }
    s += &format!("[[zones]]\nname = \"room\"\ncameras = [{}]\ndevices = [\"dev\"]\n", names.join(", "));
    s
}

async fn start(text: &str) -> App {
    let ov = Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() };
    App::start(&load(text), ov).await.unwrap()
}

/// Opens a stream and returns the socket after checking the response head.
fn open_stream(addr: SocketAddr, path: &str, extra_header: &str) -> (u16, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_header}\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, s, head)
}

/// Reads a stream on a thread, counting whole parts, until `stop`.
fn count_parts(mut s: TcpStream, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let parts = Arc::new(AtomicU64::new(0));
    let p2 = Arc::clone(&parts);
    let h = std::thread::spawn(move || {
        let mut parser = MultipartParser::new(1 << 22);
        parser.set_boundary(b"frame");
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        let (used, part) = parser.push(rest);
                        if part.is_some() {
                            p2.fetch_add(1, Ordering::Relaxed);
                        }
                        rest = &rest[used..];
                    }
                }
            }
        }
        // The stream is well-formed multipart: nothing oversized, malformed or between the parts.
        let st = parser.stats();
        assert_eq!((st.oversized, st.malformed, st.garbage_bytes, st.other_parts), (0, 0, 0, 0), "{st:?}");
    });
    (parts, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_is_dropped_after_the_lag_while_another_keeps_every_frame() {
    let app = start(&config("", 1)).await;
    let addr = app.telemetry_addr;
    // The overlay variant: a replay camera's plain viewers get its own JPEGs without an encode (see
    // `plain_viewers_of_a_jpeg_camera_get_its_own_bytes_without_an_encode`), the overlay is encoded.
    let result = tokio::task::spawn_blocking(move || {
        let (status, fast, head) = open_stream(addr, "/cameras/cam0/stream.mjpg?overlay=1", "");
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&head).contains("multipart/x-mixed-replace; boundary=frame"));
        let stop = Arc::new(AtomicBool::new(false));
        let (parts, reader) = count_parts(fast, Arc::clone(&stop));
        // The second viewer never reads a byte.
        let (status, stalled, _) = open_stream(addr, "/cameras/cam0/stream.mjpg?overlay=1", "");
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_secs(1));
        let (enc0, got0) = (metric(addr, "ember_live_encodes_total{camera=\"cam0\"}"), parts.load(Ordering::Relaxed));
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        while metric(addr, "ember_live_viewers_lagged_total") < 1.0 {
            assert!(Instant::now() < deadline, "the stalled viewer was never dropped");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        let (enc1, got1) = (metric(addr, "ember_live_encodes_total{camera=\"cam0\"}"), parts.load(Ordering::Relaxed));
        assert_eq!(metric(addr, "ember_live_viewers{camera=\"cam0\"}"), 1.0, "only the reading viewer is left");
        stop.store(true, Ordering::Relaxed);
        drop(stalled);
        let _ = reader.join();
        (enc1 - enc0, (got1 - got0) as f64)
    })
    .await
    .unwrap();
    let (encoded, received) = result;
    assert!(encoded >= 10.0, "the camera kept encoding for its reader ({encoded})");
    // Every frame encoded while the other viewer stalled reached the reading viewer (one in flight at each edge).
    assert!(received >= encoded - 2.0, "reader got {received} of {encoded} frames");
    app.shutdown().await;
}

/// Plain viewers of a replay (JPEG) camera receive the camera's own JPEG bytes, newest frame, with the same
/// slow-viewer rule, and nothing is decoded or encoded for them; the snapshot is the camera's bytes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_viewers_of_a_jpeg_camera_get_its_own_bytes_without_an_encode() {
    let app = start(&config("", 1)).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let demo: Vec<&[u8]> = ember_edge::camera::replay::DEMO_FRAMES.iter().map(|f| f.1).collect();
        let (status, mut fast, _) = open_stream(addr, "/cameras/cam0/stream.mjpg", "");
        assert_eq!(status, 200);
        let (_, stalled, _) = open_stream(addr, "/cameras/cam0/stream.mjpg", "");
        let mut parser = MultipartParser::new(1 << 22);
        parser.set_boundary(b"frame");
        let (mut buf, mut parts) = (vec![0u8; 65536], 0);
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        while parts < 25 || metric(addr, "ember_live_viewers_lagged_total") < 1.0 {
            assert!(Instant::now() < deadline, "{parts} parts; the stalled viewer was never dropped");
            let n = fast.read(&mut buf).unwrap();
            assert!(n > 0, "the reading viewer was cut off");
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, part) = parser.push(rest);
                if let Some(p) = part {
                    assert!(demo.contains(&p), "a part that is not one of the camera's JPEGs ({} bytes)", p.len());
                    parts += 1;
                }
                rest = &rest[used..];
            }
        }
        assert_eq!(metric(addr, "ember_live_encodes_total{camera=\"cam0\"}"), 0.0, "no encode for plain viewers");
        assert!(metric(addr, "ember_live_passthrough_total{camera=\"cam0\"}") >= 25.0);
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /cameras/cam0/snapshot.jpg HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut r = Vec::new();
        s.read_to_end(&mut r).unwrap();
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(demo.contains(&&r[at..]), "the snapshot is one of the camera's JPEGs");
        assert_eq!(metric(addr, "ember_live_encodes_total{camera=\"cam0\"}"), 0.0);
        drop(stalled);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

/// Overlay viewers of a JPEG camera get the decoded frame with the overlay drawn, one encode per frame, and
/// nothing else: the soak (scripts/soak.sh) found the JPEG's bytes also drawn on as if they were pixels and
/// encoded again, an encoder error and a WARN for every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_viewers_of_a_jpeg_camera_cost_one_encode_per_frame_and_no_error() {
    let app = start(&config("", 1)).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let (status, mut s, _) = open_stream(addr, "/cameras/cam0/stream.mjpg?overlay=1", "");
        assert_eq!(status, 200);
        let mut parser = MultipartParser::new(1 << 22);
        parser.set_boundary(b"frame");
        let (mut buf, mut parts) = (vec![0u8; 65536], 0);
        let mut px = vec![0u8; 640 * 640 * 3];
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        while parts < 10 {
            assert!(Instant::now() < deadline, "{parts} overlay parts");
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the overlay viewer was cut off");
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, part) = parser.push(rest);
                if let Some(p) = part {
                    ember_edge::camera::jpeg::JpegDecoder::new().decode_rgb(p, &mut px, 640, 640).unwrap();
                    parts += 1;
                }
                rest = &rest[used..];
            }
        }
        assert_eq!(metric(addr, "ember_live_encode_errors_total{camera=\"cam0\"}"), 0.0);
        assert!(metric(addr, "ember_live_encodes_total{camera=\"cam0\"}") >= 10.0);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limits_answer_503_per_camera_and_in_total() {
    let app = start(&config("", 2)).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let a1 = open_stream(addr, "/cameras/cam0/stream.mjpg", "");
        let a2 = open_stream(addr, "/cameras/cam0/stream.mjpg?overlay=1", "");
        assert_eq!((a1.0, a2.0), (200, 200));
        let (s, mut sock, _) = open_stream(addr, "/cameras/cam0/stream.mjpg", "");
        let mut body = String::new();
        let _ = sock.read_to_string(&mut body);
        assert_eq!(s, 503, "third viewer of cam0");
        assert!(body.contains("too many viewers for this camera"), "{body}");
        let b1 = open_stream(addr, "/cameras/cam1/stream.mjpg", "");
        assert_eq!(b1.0, 200);
        assert_eq!(http_get(addr, "/cameras/cam1/snapshot.jpg").0, 503, "total limit of 3 reached");
        assert_eq!(metric(addr, "ember_live_viewers_refused_total"), 2.0);
        // A viewer that leaves frees its place.
        drop(a1);
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
        loop {
            let (s, _, _) = open_stream(addr, "/cameras/cam1/snapshot.jpg", "");
            if s == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "place not given back");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(http_get(addr, "/cameras/nope/stream.mjpg").0, 404);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_basic_auth_guard_everything_but_health() {
    let app = start(&config("token = \"s3cret-token\"\nbasic_auth = \"op:password1\"", 1)).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let (s, mut sock, head) = open_stream(addr, "/api/status", "");
        let _ = sock.read_to_end(&mut Vec::new());
        assert_eq!(s, 401);
        assert!(String::from_utf8_lossy(&head).contains("WWW-Authenticate: Basic"));
        assert_eq!(http_get(addr, "/metrics").0, 401);
        assert_eq!(http_get(addr, "/health").0, 200, "probes need no secret");
        assert_eq!(http_get(addr, "/api/status?token=s3cret-token").0, 200);
        assert_eq!(http_get(addr, "/api/status?token=wrong").0, 401);
        assert_eq!(open_stream(addr, "/cameras", "Authorization: Bearer s3cret-token\r\n").0, 200);
        // op:password1
        assert_eq!(open_stream(addr, "/", "Authorization: Basic b3A6cGFzc3dvcmQx\r\n").0, 200);
        assert_eq!(open_stream(addr, "/", "Authorization: Basic b3A6cGFzc3dvcmQy\r\n").0, 401);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[test]
fn a_listener_off_loopback_needs_a_secret() {
    let text = "[telemetry]\nlisten = \"0.0.0.0:9090\"\n";
    let err = ember_edge::config::load_str("t.toml", text, std::path::Path::new(".")).unwrap_err();
    assert!(err.iter().any(|p| p.message.contains("not a loopback address")), "{err:?}");
    assert_eq!((err[0].line, err[0].col > 0), (2, true), "points at the key");
    let ok = "[telemetry]\nlisten = \"0.0.0.0:9090\"\ntoken = \"0123456789abcdef\"\n\
              [[sensors.devices]]\nname = \"d\"\nloc_id = \"1\"\n[[zones]]\nname = \"z\"\ndevices = [\"d\"]\n";
    assert!(ember_edge::config::load_str("t.toml", ok, std::path::Path::new(".")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_zones_devices_alerts_and_a_dead_camera() {
    let app = start(&config("", 1)).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        // Snapshots are real JPEGs at the camera's size, with and without the overlay.
        for q in ["", "?overlay=1"] {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /cameras/cam0/snapshot.jpg{q} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut r = Vec::new();
            s.read_to_end(&mut r).unwrap();
            let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert!(r.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&r[..at]));
            let mut px = vec![0u8; 640 * 640 * 3];
            let (w, h) = ember_edge::camera::jpeg::JpegDecoder::new().decode_rgb(&r[at..], &mut px, 640, 640).unwrap();
            assert!(w >= 416 && h >= 416, "{w}x{h}");
        }
        // The simulated fire raises the zone; the page's data says so, with the device's grid.
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        let status = loop {
            let (_, body) = http_get(addr, "/api/status");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["zones"][0]["state"] != "normal"
                && !v["alerts"].as_array().unwrap().is_empty()
                && v["devices"][0]["thermal"].is_object()
            {
                break v;
            }
            assert!(Instant::now() < deadline, "no zone change in /api/status: {v}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status["zones"][0]["name"], "room");
        assert_eq!(status["devices"][0]["thermal"]["celsius"].as_array().unwrap().len(), 768);
        assert_eq!(status["devices"][0]["online"], true);
        assert_eq!(status["cameras"][0]["state"], "live");
        assert_eq!(status["alerts"][0]["zone"], "room");
        let (s, page) = http_get(addr, "/");
        assert!(s == 200 && page.contains("<title>ember-edge</title>"));
    })
    .await
    .unwrap();
    // The camera's source dies: the page's data says so.
    assert!(app.kill_task("camera:cam0"));
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            let (_, body) = http_get(addr, "/api/status");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let trouble: Vec<String> =
                v["trouble"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
            if v["cameras"][0]["state"] == "failed" && trouble.iter().any(|t| t == "camera cam0: failed") {
                break;
            }
            assert!(Instant::now() < deadline, "dead camera not shown: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, cams) = http_get(addr, "/cameras");
        assert!(cams.contains("\"state\":\"failed\""), "{cams}");
    })
    .await
    .unwrap();
    app.shutdown().await;
}

/// A fixture fire photograph as an IR camera delivers it: grey (BT.601 luma), one JPEG channel.
fn grey_jpeg(name: &str) -> Vec<u8> {
    let bytes =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames").join(name))
            .unwrap();
    let mut rgb = Vec::new();
    let (w, h) =
        ember_edge::pixels::load_rgb(&mut ember_edge::camera::jpeg::JpegDecoder::new(), &bytes, &mut rgb).unwrap();
    let luma: Vec<u8> = rgb
        .chunks(3)
        .map(|p| ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) >> 8) as u8)
        .collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 85).encode(&luma, w as u16, h as u16, jpeg_encoder::ColorType::Luma).unwrap();
    jpeg
}

/// A snapshot decoded: (width, height, RGB).
fn snapshot(addr: SocketAddr, camera: &str) -> (usize, usize, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /cameras/{camera}/snapshot.jpg HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(r.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&r[..at]));
    let mut px = Vec::new();
    let (w, h) =
        ember_edge::pixels::load_rgb(&mut ember_edge::camera::jpeg::JpegDecoder::new(), &r[at..], &mut px).unwrap();
    (w, h, px)
}

/// A webcam's path without a webcam (`replay_format = "yuyv"`): a YUYV camera has a live view in colour
/// (converted, not dropped) and scores its frames; a YUYV camera whose pictures are grey (the fixture fire
/// photographs converted to grey, as an IR camera sees them) goes to night mode, shown in /cameras, in
/// /api/status as information (not trouble) and in ember_camera_mode, and its zone never leaves normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yuyv_camera_has_a_live_view_and_a_grey_one_is_in_night_mode_without_evidence() {
    let dir = std::env::temp_dir().join(format!("ember-live-ir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fire =
        ["rf-fire8_img_417_be4ce5.jpg", "rf-indoorfire_image415_68a572.jpg", "rf-indoorfire_image453_0b89e4.jpg"];
    for (i, name) in fire.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.jpg")), grey_jpeg(name)).unwrap();
    }
    let text = format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n[sensors]\nlisten = [\"127.0.0.1:0\"]\n\
         [[cameras]]\nname = \"webcam\"\nsource = \"replay\"\npath = \"builtin:demo\"\nfps = 10.0\nreplay_format = \"yuyv\"\n\
         [[cameras]]\nname = \"ir\"\nsource = \"replay\"\npath = \"{}\"\nfps = 10.0\nreplay_format = \"yuyv\"\n\
         [[zones]]\nname = \"room\"\ncameras = [\"webcam\"]\n\
         [[zones]]\nname = \"yard\"\ncameras = [\"ir\"]\nmin_sources = 1\nvision_alone_alarms = true\n",
        dir.display()
    );
    let app = start(&text).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let (w, h, px) = snapshot(addr, "webcam");
        assert!(w >= 416 && h >= 416 && w % 2 == 0, "{w}x{h}");
        let chroma =
            ember_edge::detect::night::Chroma::measure(&px, w, h, ember_edge::frame::PixelFormat::Rgb24).unwrap();
        assert!(!chroma.is_grey(), "the YUYV preview keeps its colour: {chroma:?}");
        let (w, h, px) = snapshot(addr, "ir");
        assert!(ember_edge::detect::night::is_grey(&px, w, h, ember_edge::frame::PixelFormat::Rgb24));

        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        let status = loop {
            let (_, body) = http_get(addr, "/api/status");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["zones"][1]["state"], "normal", "grey frames raised the zone: {v}");
            if v["cameras"][1]["mode"] == "night" && metric(addr, "ember_detect_frames_total{camera=\"ir\"}") >= 20.0 {
                break v;
            }
            assert!(Instant::now() < deadline, "the grey camera never went to night mode: {v}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status["cameras"][0]["mode"], "day", "{status}");
        let info: Vec<&str> = status["info"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(info.len(), 1, "{status}");
        assert!(info[0].starts_with("camera ir: night mode"), "{status}");
        let trouble = status["trouble"].to_string();
        assert!(!trouble.contains("ir"), "night mode is not trouble: {status}");
        assert!(status["alerts"].as_array().unwrap().iter().all(|a| a["zone"] != "yard"), "{status}");
        let (_, cams) = http_get(addr, "/cameras");
        assert!(cams.contains("\"mode\":\"night\"") && cams.contains("\"mode\":\"day\""), "{cams}");
        assert_eq!(metric(addr, "ember_camera_mode{camera=\"ir\"}"), 1.0);
        assert_eq!(metric(addr, "ember_camera_mode{camera=\"webcam\"}"), 0.0);
        assert_eq!(metric(addr, "ember_vision_score{camera=\"ir\"}"), 0.0);
        assert!(metric(addr, "ember_detect_frames_total{camera=\"webcam\"}") >= 1.0);
        assert_eq!(metric(addr, "ember_detect_unsupported_total{camera=\"webcam\"}"), 0.0);
        let (_, page) = http_get(addr, "/");
        assert!(page.contains("id=\"info\"") && page.contains("c.mode"), "the page shows mode and information");
    })
    .await
    .unwrap();
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
