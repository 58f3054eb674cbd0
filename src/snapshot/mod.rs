//! The picture of the alarm moment. When a zone goes to PRE_ALARM or ALARM on vision evidence, the frame that
//! decided it (with the detector's boxes drawn) and the frames just before it are written as JPEGs next to the
//! event, in `<dir>/<event id>/`; when thermal evidence is among the causes, the device's 32×24 grid is kept too
//! (as numbers in `snapshot.json` and drawn in `thermal.jpg`). `GET /api/events/{id}/snapshot.jpg` serves them.
//!
//! Nothing here is on the alarm path: fusion hands the event to the event log as always, the log's writer gives
//! it its id and offers a request to this writer's bounded queue (overflow counted), and this writer thread copies
//! the frames out of the camera's ring (`ring`), converts, draws and encodes them. Its buffers are reserved once
//! at the largest frame size. The store is bounded in count and bytes; the oldest snapshot goes first (counted).
//! A snapshot is written in a `.<id>.tmp` folder and renamed into place, so a crash leaves none half-written.

pub mod ring;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::event::FrameRef;
use crate::frame::PixelFormat;
use crate::live::overlay::{self, Canvas};
use crate::sensor::device::Devices;
use crate::sensor::proto::{GRID_H, GRID_W, PIXELS};
use crate::telemetry::{Counter, Gauge, Registry};
pub use ring::{FrameRing, Held, RING};

/// Requests waiting for the writer; beyond this they are dropped and counted (alarms are rare: a full queue
/// means the disk is stuck).
const QUEUE: usize = 16;
const QUALITY: u8 = 85;
/// Pixels per thermal cell in `thermal.jpg` (256×192).
const THERMAL_CELL: usize = 8;

/// What to keep for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub event: u64,
    /// The frame that decided a vision-caused transition.
    pub frame: Option<FrameRef>,
    /// The device whose thermal evidence counted.
    pub device: Option<usize>,
}

/// One stored snapshot, as `GET /api/events` lists it beside the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    pub id: u64,
    /// `snapshot.jpg` exists: the deciding camera frame with the boxes drawn.
    pub camera: bool,
    /// `thermal.jpg` exists and `snapshot.json` holds the grid.
    pub thermal: bool,
    /// `frames/0.jpg` (the deciding frame without boxes) up to `frames/{frames-1}.jpg` (the oldest before it).
    pub frames: u8,
    #[serde(skip)]
    bytes: u64,
}

struct Counters {
    written: Counter,
    removed: Counter,
    overflow: Counter,
    errors: Counter,
    missed: Counter,
    bytes: Gauge,
}

/// A camera as the writer sees it.
pub struct Camera {
    pub name: String,
    pub ring: Arc<FrameRing>,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    max_count: usize,
    index: Mutex<VecDeque<Info>>,
    counters: Counters,
    cameras: Vec<Camera>,
    devices: Option<Arc<Devices>>,
    device_names: Vec<String>,
}

/// The handle fusion's log and the web use; cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    tx: SyncSender<Request>,
    shared: Arc<Shared>,
}

/// The ring's skip counter for a camera, registered under its name.
pub fn ring_counter(reg: &Registry, camera: &str) -> Counter {
    reg.counter(
        "ember_snapshot_ring_skipped_total",
        "Analysed frames not kept in the snapshot ring (the writer was copying out, or the frame was too large).",
        &[("camera", camera)],
    )
}

impl Snapshots {
    /// Opens (creating) the store in `dir`, removes half-written leftovers, trims it to its bounds and starts
    /// the writer thread. `max_len`: the largest camera frame in bytes (RGB), for the writer's buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        dir: PathBuf,
        max_bytes: u64,
        max_count: usize,
        cameras: Vec<Camera>,
        devices: Option<Arc<Devices>>,
        device_names: Vec<String>,
        max_len: usize,
        registry: &Registry,
    ) -> Snapshots {
        let counters = Counters {
            written: registry.counter("ember_snapshots_written_total", "Alarm snapshots written.", &[]),
            removed: registry.counter(
                "ember_snapshots_removed_total",
                "Oldest alarm snapshots removed to keep the store within its bounds.",
                &[],
            ),
            overflow: registry.counter(
                "ember_snapshots_overflow_total",
                "Alarm snapshots not written because the snapshot writer's queue was full.",
                &[],
            ),
            errors: registry.counter(
                "ember_snapshot_errors_total",
                "Alarm snapshots that could not be written (disk or encoder).",
                &[],
            ),
            missed: registry.counter(
                "ember_snapshot_frames_missed_total",
                "Vision snapshots whose deciding frame had already left the camera's ring (older frames kept).",
                &[],
            ),
            bytes: registry.gauge("ember_snapshots_bytes", "Bytes the alarm snapshot store holds.", &[]),
        };
        let max_count = max_count.max(1);
        let index = match scan(&dir) {
            Ok(i) => i,
            Err(e) => {
                log::error!("snapshot store {} cannot be opened ({e}): alarm pictures are not kept", dir.display());
                VecDeque::new()
            }
        };
        let shared = Arc::new(Shared {
            dir,
            max_bytes,
            max_count,
            index: Mutex::new(index),
            counters,
            cameras,
            devices,
            device_names,
        });
        shared.prune();
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("snapshots".into()).spawn(move || writer.run(rx, max_len));
        if let Err(e) = spawned {
            log::error!("snapshot writer cannot start ({e}): alarm pictures are not kept");
        }
        Snapshots { tx, shared }
    }

    /// Offers a request to the writer; never blocks (a full queue drops it, counted).
    pub fn request(&self, r: Request) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.shared.counters.overflow.inc(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The snapshots held for any of `ids`.
    pub fn infos(&self, ids: impl Iterator<Item = u64>) -> Vec<Info> {
        let index = self.shared.index.lock().unwrap_or_else(|p| p.into_inner());
        ids.filter_map(|id| index.binary_search_by_key(&id, |i| i.id).ok().and_then(|k| index.get(k).copied()))
            .collect()
    }

    /// The id of the newest snapshot with a camera picture (`snapshot.jpg`), if any.
    pub fn newest_picture(&self) -> Option<u64> {
        let index = self.shared.index.lock().unwrap_or_else(|p| p.into_inner());
        index.iter().rev().find(|i| i.camera).map(|i| i.id)
    }

    /// The bytes of one file of event `id`'s snapshot (`snapshot.jpg`, `snapshot.json`, `thermal.jpg`,
    /// `frames/N.jpg`) with its content type; None when there is no such file.
    pub fn file(&self, id: u64, name: &str) -> Option<(&'static str, Vec<u8>)> {
        let info = self.infos(std::iter::once(id)).into_iter().next()?;
        let ctype = match name {
            "snapshot.jpg" if info.camera => "image/jpeg",
            "thermal.jpg" if info.thermal => "image/jpeg",
            "snapshot.json" => "application/json",
            _ => {
                let n: u8 = name.strip_prefix("frames/")?.strip_suffix(".jpg")?.parse().ok()?;
                if n >= info.frames {
                    return None;
                }
                "image/jpeg"
            }
        };
        // A few tens of KiB from local storage, only on an operator's request.
        std::fs::read(self.shared.dir.join(id.to_string()).join(name)).ok().map(|b| (ctype, b))
    }
}

/// The writer's buffers, reserved once.
struct Work {
    held: Vec<Held>,
    rgb: Vec<u8>,
    jpeg: Vec<u8>,
    grid: Box<[f32; PIXELS]>,
    decoder: crate::camera::jpeg::JpegDecoder,
}

impl Shared {
    fn run(&self, rx: Receiver<Request>, max_len: usize) {
        let mut w = Work {
            held: (0..RING).map(|_| Held::with_capacity(max_len)).collect(),
            rgb: Vec::with_capacity(max_len.max(GRID_W * GRID_H * THERMAL_CELL * THERMAL_CELL * 3)),
            jpeg: Vec::with_capacity(64 * 1024),
            grid: Box::new([0.0; PIXELS]),
            decoder: crate::camera::jpeg::JpegDecoder::new(),
        };
        while let Ok(r) = rx.recv() {
            match self.write(&mut w, &r) {
                Ok(Some(info)) => {
                    self.counters.written.inc();
                    let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
                    // Ids rise, so the index stays sorted; an id written twice (a log restarted on an empty folder)
                    // replaces the older entry.
                    index.retain(|i| i.id != info.id);
                    index.push_back(info);
                    drop(index);
                    self.prune();
                }
                Ok(None) => {}
                Err(e) => {
                    self.counters.errors.inc();
                    log::warn!("snapshot for event {} not written: {e}", r.event);
                }
            }
        }
    }

    /// Writes one snapshot folder; None when there was nothing to keep (no frame held, no grid).
    fn write(&self, w: &mut Work, r: &Request) -> std::io::Result<Option<Info>> {
        let tmp = self.dir.join(format!(".{}.tmp", r.event));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("frames"))?;
        let mut info = Info { id: r.event, camera: false, thermal: false, frames: 0, bytes: 0 };
        let mut meta = serde_json::json!({ "event": r.event });
        if let Some(f) = r.frame
            && let Some(cam) = self.cameras.get(f.camera)
        {
            let (n, exact) = cam.ring.copy_out(f.frame, &mut w.held);
            if !exact {
                self.counters.missed.inc();
            }
            // Without the deciding frame, the frames kept are all "before": numbering starts at 1.
            let first = usize::from(!exact);
            let mut seqs = Vec::with_capacity(n);
            // Whether the deciding frame is the camera's own JPEG (see `ring`), or the detector's reduced frame.
            let mut camera_jpeg = false;
            for k in 0..n {
                let Some(h) = w.held.get(k) else { break };
                let path = tmp.join(format!("frames/{}.jpg", k + first));
                // A JPEG camera's frame is kept byte for byte, at its full size.
                if h.jpeg.is_empty() {
                    to_rgb(h, &mut w.rgb);
                    info.bytes += encode(&mut w.jpeg, &w.rgb, h.w, h.h, &path)?;
                } else {
                    std::fs::write(&path, &h.jpeg)?;
                    info.bytes += h.jpeg.len() as u64;
                    camera_jpeg |= k == 0;
                }
                seqs.push(h.seq);
                if k == 0 && exact {
                    // The boxes on the camera's picture at a view size (VGA or less), or on the analysed frame.
                    let (fw, fh) = match view_rgb(&mut w.decoder, &h.jpeg, &mut w.rgb) {
                        Some(wh) => wh,
                        None => {
                            to_rgb(h, &mut w.rgb);
                            (h.w, h.h)
                        }
                    };
                    // Boxes are in frame fractions: they land alike on a picture of any size.
                    overlay::draw_detections(&mut Canvas { px: &mut w.rgb, w: fw, h: fh }, &h.boxes);
                    info.bytes += encode(&mut w.jpeg, &w.rgb, fw, fh, &tmp.join("snapshot.jpg"))?;
                    info.camera = true;
                    let boxes: Vec<_> = h
                        .boxes
                        .boxes()
                        .iter()
                        .map(|b| serde_json::json!({"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "score": b.score, "class": b.class}))
                        .collect();
                    meta["boxes"] = boxes.into();
                    meta["score"] = h.boxes.score.into();
                }
            }
            info.frames = if n == 0 { 0 } else { (n + first) as u8 };
            meta["camera"] = cam.name.clone().into();
            meta["frame"] = f.frame.into();
            meta["frames"] = serde_json::json!(seqs);
            meta["first_frame"] = first.into();
            meta["camera_jpeg"] = camera_jpeg.into();
        }
        if let Some(d) = r.device
            && let Some(devices) = &self.devices
            && let Some(view) = devices.thermal_grid(d, &mut w.grid)
            && view.has_frame
        {
            let (gw, gh) = (GRID_W * THERMAL_CELL, GRID_H * THERMAL_CELL);
            w.rgb.clear();
            w.rgb.resize(gw * gh * 3, 0);
            overlay::draw_thermal(
                &mut Canvas { px: &mut w.rgb, w: gw, h: gh },
                0,
                0,
                THERMAL_CELL,
                &w.grid,
                view.hot_c,
            );
            info.bytes += encode(&mut w.jpeg, &w.rgb, gw, gh, &tmp.join("thermal.jpg"))?;
            info.thermal = true;
            let celsius: Vec<f32> = w.grid.iter().map(|t| (t * 10.0).round() / 10.0).collect();
            meta["thermal"] = serde_json::json!({
                "device": self.device_names.get(d).cloned().unwrap_or_default(),
                "width": GRID_W,
                "height": GRID_H,
                "hot_c": view.hot_c,
                "celsius": celsius,
            });
        }
        if !info.camera && !info.thermal && info.frames == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(None);
        }
        let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        std::fs::write(tmp.join("snapshot.json"), &json)?;
        info.bytes += json.len() as u64;
        let dest = self.dir.join(r.event.to_string());
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)?;
        Ok(Some(info))
    }

    /// Removes the oldest snapshots until the store is within its count and bytes (the newest always stays).
    fn prune(&self) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut total: u64 = index.iter().map(|i| i.bytes).sum();
        while index.len() > 1 && (index.len() > self.max_count || total > self.max_bytes) {
            let Some(old) = index.pop_front() else { break };
            total = total.saturating_sub(old.bytes);
            if let Err(e) = std::fs::remove_dir_all(self.dir.join(old.id.to_string()))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("snapshot {} not removed: {e}", old.id);
            }
            self.counters.removed.inc();
        }
        self.counters.bytes.set(total as f64);
    }
}

/// An analysed frame as RGB24 in `out` (YUYV converted).
fn to_rgb(h: &Held, out: &mut Vec<u8>) {
    match h.format {
        PixelFormat::Yuyv => crate::pixels::yuyv_to_rgb(&h.px, h.w, h.h, out),
        PixelFormat::Rgb24 => {
            out.clear();
            out.extend_from_slice(&h.px);
        }
    }
}

/// Pixels of the boxed snapshot at most: a VGA frame. The camera's JPEG is kept whole beside it, and decoding a
/// 1080p frame at full size only to draw boxes would take 6 MB of RGB plus the decoder's buffers.
const VIEW_PIXELS: usize = 640 * 480;

/// A camera JPEG decoded into `out` at the largest DCT scale (1, 1/2, 1/4, 1/8) of at most [`VIEW_PIXELS`]; its
/// size, or None when there is none or it does not decode (the caller draws on the analysed frame).
fn view_rgb(dec: &mut crate::camera::jpeg::JpegDecoder, jpeg: &[u8], out: &mut Vec<u8>) -> Option<(usize, usize)> {
    if jpeg.is_empty() {
        return None;
    }
    let (w, h) = dec.dimensions(jpeg).ok()?;
    let denom = [1, 2, 4, 8].into_iter().find(|&d| w.div_ceil(d) * h.div_ceil(d) <= VIEW_PIXELS).unwrap_or(8);
    dec.set_max_denom(denom);
    out.clear();
    out.resize(w.div_ceil(denom) * h.div_ceil(denom) * 3, 0);
    let d = dec.decode_analysis(jpeg, out, w, h).ok()?;
    out.truncate(d.width * d.height * 3);
    Some((d.width, d.height))
}

/// Encodes RGB pixels as a JPEG into `buf` and writes it to `path`; returns its size.
fn encode(buf: &mut Vec<u8>, rgb: &[u8], w: usize, h: usize, path: &Path) -> std::io::Result<u64> {
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(std::io::Error::other(format!("frame {w}x{h} too large for JPEG")));
    };
    buf.clear();
    jpeg_encoder::Encoder::new(&mut *buf, QUALITY)
        .encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(std::io::Error::other)?;
    std::fs::write(path, &buf[..])?;
    Ok(buf.len() as u64)
}

/// The snapshots already in `dir` (created if missing), oldest first; half-written `.tmp` folders are removed.
fn scan(dir: &Path) -> std::io::Result<VecDeque<Info>> {
    std::fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(e.path());
            continue;
        }
        let Ok(id) = name.parse::<u64>() else { continue };
        let p = e.path();
        let size = |q: &Path| std::fs::metadata(q).map(|m| m.len()).ok();
        let mut info = Info { id, camera: false, thermal: false, frames: 0, bytes: 0 };
        for f in ["snapshot.jpg", "thermal.jpg", "snapshot.json"] {
            if let Some(s) = size(&p.join(f)) {
                info.bytes += s;
                info.camera |= f == "snapshot.jpg";
                info.thermal |= f == "thermal.jpg";
            }
        }
        for n in 0..RING as u8 {
            if let Some(s) = size(&p.join(format!("frames/{n}.jpg"))) {
                info.bytes += s;
                info.frames = n + 1;
            }
        }
        found.push(info);
    }
    found.sort_unstable_by_key(|i| i.id);
    Ok(found.into())
}

#[cfg(test)]
mod tests;
