use super::*;
use crate::frame::{FrameMeta, FramePool};
use crate::live::overlay::{Boxes, DetBox};

const W: usize = 64;
const H: usize = 48;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A ring holding frames 1..=n of a grey scene; frame `n` has one fire box at the lower right.
fn ring_with(n: u64) -> Arc<FrameRing> {
    let pool = FramePool::new(1, W * H * 3);
    let ring = Arc::new(FrameRing::new(W * H * 3, Counter::default()));
    for seq in 1..=n {
        let Some(mut f) = pool.take() else { panic!("pool empty") };
        f.buffer_mut().fill(90);
        f.meta = FrameMeta { width: W, height: H, format: PixelFormat::Rgb24, seq, ..FrameMeta::default() };
        let mut b = Boxes::default();
        if seq == n {
            b.set(seq, 0.8, &[DetBox { x0: 0.5, y0: 0.5, x1: 0.9, y1: 0.9, score: 0.8, class: 0 }]);
        }
        ring.push(&f, &b);
    }
    ring
}

fn start(dir: &Path, ring: Arc<FrameRing>, max_count: usize, reg: &Registry) -> Snapshots {
    let cams = vec![Camera { name: "cam".into(), ring }];
    Snapshots::start(dir.to_path_buf(), 1 << 20, max_count, cams, None, Vec::new(), W * H * 3, reg)
}

fn wait_for(s: &Snapshots, id: u64) -> Info {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(i) = s.infos(std::iter::once(id)).into_iter().next() {
            return i;
        }
        assert!(std::time::Instant::now() < deadline, "snapshot {id} never written");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn decode(jpeg: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; W * H * 3];
    let got = crate::camera::jpeg::JpegDecoder::new().decode_rgb(jpeg, &mut out, W, H);
    assert_eq!(got.ok(), Some((W, H)));
    out
}

#[test]
fn a_vision_snapshot_has_the_deciding_frame_with_its_boxes_and_the_frames_before() {
    let dir = temp("vision");
    let reg = Registry::new();
    let s = start(&dir, ring_with(6), 8, &reg);
    s.request(Request { event: 17, frame: Some(FrameRef { camera: 0, frame: 6 }), device: None });
    let info = wait_for(&s, 17);
    assert_eq!((info.camera, info.thermal, info.frames), (true, false, RING as u8));
    let Some(("image/jpeg", jpeg)) = s.file(17, "snapshot.jpg") else { panic!("no snapshot.jpg") };
    let px = decode(&jpeg);
    let at = |x: usize, y: usize| &px[(y * W + x) * 3..(y * W + x) * 3 + 3];
    // The box's left edge (x = 32) is red; the inside stays the grey scene (JPEG is lossy: loose bounds).
    let edge = at(32, 36);
    assert!(edge[0] > 180 && edge[1] < 120, "box edge {edge:?}");
    let inside = at(44, 36);
    assert!(inside.iter().all(|&c| (70..=110).contains(&c)), "inside {inside:?}");
    // frames/0 is the same frame without the boxes.
    let Some((_, plain)) = s.file(17, "frames/0.jpg") else { panic!("no frames/0.jpg") };
    let plain = decode(&plain);
    assert!(plain[(36 * W + 32) * 3..][..3].iter().all(|&c| (70..=110).contains(&c)));
    let Some((_, json)) = s.file(17, "snapshot.json") else { panic!("no json") };
    let meta: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    assert_eq!(meta["frame"], 6);
    assert_eq!(meta["frames"], serde_json::json!([6, 5, 4, 3]));
    assert_eq!(meta["boxes"].as_array().map(Vec::len), Some(1));
    assert!(
        s.file(17, "frames/4.jpg").is_none() && s.file(17, "../x").is_none() && s.file(18, "snapshot.jpg").is_none()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_store_keeps_its_bound_oldest_out_and_counts_and_reopens() {
    let dir = temp("bound");
    let reg = Registry::new();
    let s = start(&dir, ring_with(3), 2, &reg);
    for id in 1..=4 {
        s.request(Request { event: id, frame: Some(FrameRef { camera: 0, frame: 3 }), device: None });
        wait_for(&s, id);
    }
    assert!(s.infos(1..=4).iter().map(|i| i.id).eq([3, 4]));
    assert!(!dir.join("1").exists() && !dir.join("2").exists() && dir.join("4/snapshot.jpg").exists());
    assert!(reg.render().contains("ember_snapshots_removed_total 2"), "{}", reg.render());
    // A frame no longer held: the older ones are kept, numbered from 1, and the miss is counted.
    s.request(Request { event: 5, frame: Some(FrameRef { camera: 0, frame: 9 }), device: None });
    let five = wait_for(&s, 5);
    assert_eq!((five.camera, five.frames), (false, 4), "frames 3, 2, 1 as frames/1..=3");
    assert!(s.file(5, "frames/0.jpg").is_none() && s.file(5, "frames/3.jpg").is_some());
    assert!(reg.render().contains("ember_snapshot_frames_missed_total 1"));
    drop(s);
    // Reopened: what is on disk is found again; a half-written folder is removed.
    std::fs::create_dir_all(dir.join(".9.tmp")).unwrap_or_default();
    let s = start(&dir, ring_with(1), 2, &Registry::new());
    assert!(s.infos(1..=9).iter().map(|i| i.id).eq([4, 5]));
    assert!(!dir.join(".9.tmp").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_jpeg_cameras_snapshot_is_its_own_full_size_picture() {
    let dir = temp("jpeg");
    let (fw, fh) = (4 * W, 4 * H);
    let mut camera_jpeg = Vec::new();
    let grey = vec![90u8; fw * fh * 3];
    jpeg_encoder::Encoder::new(&mut camera_jpeg, 90)
        .encode(&grey, fw as u16, fh as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap_or_else(|e| panic!("encode: {e}"));
    // The analysed frame is the reduced one; the camera's JPEG of it waits in the ring until the frame is kept.
    let pool = FramePool::new(1, W * H * 3);
    let ring = Arc::new(FrameRing::new(W * H * 3, Counter::default()));
    for seq in 1..=2 {
        ring.offer_jpeg(seq, &camera_jpeg);
        let Some(mut f) = pool.take() else { panic!("pool empty") };
        f.buffer_mut().fill(90);
        f.meta =
            FrameMeta { width: W, height: H, format: PixelFormat::Rgb24, seq, from_jpeg: true, ..FrameMeta::default() };
        let mut b = Boxes::default();
        b.set(seq, 0.8, &[DetBox { x0: 0.5, y0: 0.5, x1: 0.9, y1: 0.9, score: 0.8, class: 0 }]);
        ring.push(&f, &b);
    }
    let reg = Registry::new();
    let cams = vec![Camera { name: "cam".into(), ring }];
    let s = Snapshots::start(dir.clone(), 1 << 20, 4, cams, None, Vec::new(), fw * fh * 3, &reg);
    s.request(Request { event: 3, frame: Some(FrameRef { camera: 0, frame: 2 }), device: None });
    let info = wait_for(&s, 3);
    assert_eq!((info.camera, info.frames), (true, 2));
    let Some((_, plain)) = s.file(3, "frames/0.jpg") else { panic!("no frames/0.jpg") };
    assert_eq!(plain, camera_jpeg, "the camera's bytes, untouched");
    let Some((_, boxed)) = s.file(3, "snapshot.jpg") else { panic!("no snapshot.jpg") };
    let mut px = vec![0u8; fw * fh * 3];
    let got = crate::camera::jpeg::JpegDecoder::new().decode_rgb(&boxed, &mut px, fw, fh);
    assert_eq!(got.ok(), Some((fw, fh)), "the boxes are drawn on the full-size picture");
    let at = |x: usize, y: usize| &px[(y * fw + x) * 3..(y * fw + x) * 3 + 3];
    let edge = at(fw / 2, fh * 3 / 4);
    assert!(edge[0] > 180 && edge[1] < 120, "box edge {edge:?}");
    assert!(at(fw * 3 / 4, fh * 3 / 4).iter().all(|&c| (70..=110).contains(&c)));
    let Some((_, json)) = s.file(3, "snapshot.json") else { panic!("no json") };
    let meta: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    assert_eq!(meta["camera_jpeg"], true);
    let _ = std::fs::remove_dir_all(&dir);
}
