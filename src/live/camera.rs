//! One camera's live view: the tap that copies the newest frame into a preview buffer (only while someone
//! watches, at most once per frame interval) and the encoder thread that turns it into JPEG once per variant
//! (plain, overlay) for every viewer. Detection and capture never wait for it: a busy encoder makes the tap
//! skip the frame (counted), and encoding happens on its own thread, off the async runtime. The detector's
//! latest result arrives as plain `detect::Detections` (this is its `DetectionSink`) and becomes overlay boxes here.
//!
//! A JPEG camera (MJPEG, replay) is not encoded for plain viewers: its own JPEG bytes are published as they came
//! (no decode, no encode; its detector's frames are at analysis scale anyway). Only the overlay variant decodes
//! that JPEG at full size, on the encoder thread, to draw on it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fanout::{Fanout, Shared};
use super::overlay::{self, Boxes, Canvas};
use crate::frame::{Frame, PixelFormat};
use crate::sensor::device::Devices;
use crate::sensor::proto::{GRID_H, GRID_W, PIXELS};
use crate::telemetry::{Counter, Registry};

/// Plain frames or frames with the detection overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain = 0,
    Overlay = 1,
}

struct RgbBuf {
    /// RGB24 pixels, or a camera's JPEG when `jpeg` (decoded by the encoder for the overlay).
    px: Vec<u8>,
    w: usize,
    h: usize,
    jpeg: bool,
}

#[derive(Default)]
struct InputState {
    /// A copied frame waiting for the encoder.
    ready: Option<usize>,
    /// The buffer the encoder is reading.
    encoding: Option<usize>,
}

pub struct LiveCounters {
    pub encodes: Counter,
    pub encode_nanos: Counter,
    pub skipped: Counter,
    pub exhausted: Counter,
    pub errors: Counter,
    pub passed: Counter,
    pub ring_skipped: Counter,
}

impl LiveCounters {
    pub fn new(reg: &Registry, camera: &str) -> Self {
        let l = [("camera", camera)];
        LiveCounters {
            encodes: reg.counter(
                "ember_live_encodes_total",
                "Live-view JPEG encodes (each shared by all viewers).",
                &l,
            ),
            encode_nanos: reg.counter(
                "ember_live_encode_nanoseconds_total",
                "Time spent encoding live-view JPEGs.",
                &l,
            ),
            skipped: reg.counter(
                "ember_live_frames_skipped_total",
                "Frames not taken for the live view because the encoder was still busy with an earlier one.",
                &l,
            ),
            exhausted: reg.counter(
                "ember_live_pool_exhausted_total",
                "Encodes skipped because viewers still held every shared JPEG buffer.",
                &l,
            ),
            errors: reg.counter("ember_live_encode_errors_total", "Frames the JPEG encoder rejected.", &l),
            passed: reg.counter(
                "ember_live_passthrough_total",
                "Camera JPEGs published to plain live viewers as the camera sent them (no decode or encode).",
                &l,
            ),
            ring_skipped: crate::snapshot::ring_counter(reg, camera),
        }
    }
}

pub struct CameraLive {
    pub index: usize,
    pub name: String,
    pub fps: f64,
    period_ns: u64,
    born: std::time::Instant,
    /// Viewers per variant; nothing is copied or encoded while both are zero.
    viewers: [AtomicUsize; 2],
    frames: AtomicU64,
    last_frame_ns: AtomicU64,
    last_copy_ns: AtomicU64,
    /// Mean time between frames (f64 bits), smoothed.
    interval_ns: AtomicU64,
    size: AtomicU64,
    state: Mutex<InputState>,
    wake: Condvar,
    bufs: [Mutex<RgbBuf>; 2],
    fan: [Mutex<Fanout>; 2],
    rx: [watch::Receiver<Option<Shared>>; 2],
    /// The detector's latest result, as the overlay draws it.
    boxes: Mutex<Boxes>,
    /// The camera is in night mode (grey pictures, no colour evidence), as detection last said.
    night: AtomicBool,
    /// Devices whose thermal grid the overlay shows (those sharing a zone with this camera).
    thermal: Vec<usize>,
    devices: Arc<Devices>,
    quality: u8,
    counters: LiveCounters,
    /// The last analysed frames with their boxes, for the alarm snapshot (`crate::snapshot`).
    pub ring: Arc<crate::snapshot::FrameRing>,
}

impl CameraLive {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        name: &str,
        fps: f64,
        max_frame_len: usize,
        slots: usize,
        quality: u8,
        thermal: Vec<usize>,
        devices: Arc<Devices>,
        counters: LiveCounters,
    ) -> Self {
        let (plain, over) = (Fanout::new(slots), Fanout::new(slots));
        let rx = [plain.subscribe(), over.subscribe()];
        // Preview buffers are reserved now (untouched pages cost no memory until a viewer comes).
        let buf = || Mutex::new(RgbBuf { px: Vec::with_capacity(max_frame_len), w: 0, h: 0, jpeg: false });
        CameraLive {
            index,
            name: name.to_owned(),
            fps,
            period_ns: (1e9 / fps.max(0.01)) as u64,
            born: std::time::Instant::now(),
            viewers: [AtomicUsize::new(0), AtomicUsize::new(0)],
            frames: AtomicU64::new(0),
            last_frame_ns: AtomicU64::new(0),
            last_copy_ns: AtomicU64::new(0),
            interval_ns: AtomicU64::new(0f64.to_bits()),
            size: AtomicU64::new(0),
            state: Mutex::new(InputState::default()),
            wake: Condvar::new(),
            bufs: [buf(), buf()],
            fan: [Mutex::new(plain), Mutex::new(over)],
            rx,
            boxes: Mutex::new(Boxes::default()),
            night: AtomicBool::new(false),
            thermal,
            devices,
            quality: quality.clamp(1, 100),
            ring: Arc::new(crate::snapshot::FrameRing::new(max_frame_len, counters.ring_skipped.clone())),
            counters,
        }
    }

    fn now_ns(&self) -> u64 {
        self.born.elapsed().as_nanos() as u64
    }

    /// A viewer of `v` arrives; the returned guard leaves when dropped. Encoding runs while any guard lives.
    pub fn watch(&self, v: Variant) -> WatchGuard<'_> {
        self.viewers[v as usize].fetch_add(1, Ordering::Relaxed);
        WatchGuard { cam: self, v }
    }

    pub fn receiver(&self, v: Variant) -> watch::Receiver<Option<Shared>> {
        self.rx[v as usize].clone()
    }

    pub fn viewers(&self) -> usize {
        self.viewers.iter().map(|v| v.load(Ordering::Relaxed)).sum()
    }

    /// Frames seen from the source so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Time since the last frame, None before the first.
    pub fn frame_age(&self) -> Option<Duration> {
        let last = self.last_frame_ns.load(Ordering::Relaxed);
        (self.frames() > 0).then(|| Duration::from_nanos(self.now_ns().saturating_sub(last)))
    }

    /// Measured frames per second (0 when frames stopped).
    pub fn measured_fps(&self) -> f64 {
        let iv = f64::from_bits(self.interval_ns.load(Ordering::Relaxed));
        match self.frame_age() {
            Some(age) if iv > 0.0 && (age.as_nanos() as f64) < 3.0 * iv.max(self.period_ns as f64) => 1e9 / iv,
            _ => 0.0,
        }
    }

    /// Width and height of the last frame.
    pub fn size(&self) -> (usize, usize) {
        let s = self.size.load(Ordering::Relaxed);
        ((s >> 32) as usize, (s & 0xffff_ffff) as usize)
    }

    pub fn detection_score(&self) -> f32 {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner()).score
    }

    /// The camera's picture mode as detection last reported it.
    pub fn mode(&self) -> crate::detect::night::Mode {
        if self.night.load(Ordering::Relaxed) {
            crate::detect::night::Mode::Night
        } else {
            crate::detect::night::Mode::Day
        }
    }

    /// Copies (RGB) or converts (YUYV, for the RGB encoder) a frame into a free preview buffer; with `jpeg`, `px`
    /// is the camera's JPEG, kept as it is for the overlay (decoded by the encoder).
    fn copy_in(&self, px: &[u8], w: usize, h: usize, format: PixelFormat, jpeg: bool) {
        let b = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // An older copy the encoder has not taken yet is overwritten: newest wins.
            let pending = st.ready.take();
            match st.encoding {
                Some(e) => 1 - e,
                None => pending.unwrap_or(0),
            }
        };
        {
            let mut buf = self.bufs[b].lock().unwrap_or_else(|p| p.into_inner());
            // Within the capacity reserved at start for the largest RGB frame: no allocation.
            match format {
                PixelFormat::Yuyv if !jpeg => crate::pixels::yuyv_to_rgb(px, w, h, &mut buf.px),
                _ => {
                    buf.px.clear();
                    buf.px.extend_from_slice(px);
                }
            }
            buf.w = w;
            buf.h = h;
            buf.jpeg = jpeg;
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner()).ready = Some(b);
        self.wake.notify_one();
    }

    /// The encoder loop; runs on its own thread until `stop`.
    pub fn run_encoder(&self, stop: CancellationToken) {
        let mut grid: Box<[f32; PIXELS]> = Box::new([0.0; PIXELS]);
        // For the overlay of a JPEG camera: its frame at full size, grown on the first overlay viewer.
        let (mut dec, mut full) = (crate::camera::jpeg::JpegDecoder::new(), Vec::new());
        loop {
            let b = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if stop.is_cancelled() {
                        return;
                    }
                    if let Some(b) = st.ready.take() {
                        st.encoding = Some(b);
                        break b;
                    }
                    // Woken by a new frame; the timeout only bounds how late a stop is noticed.
                    st = match self.wake.wait_timeout(st, Duration::from_millis(200)) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
            };
            {
                let mut buf = self.bufs[b].lock().unwrap_or_else(|p| p.into_inner());
                let (w, h) = (buf.w, buf.h);
                if buf.jpeg {
                    // Plain viewers already have these bytes (`offer_jpeg`); the overlay draws on the full frame.
                    if self.viewers[Variant::Overlay as usize].load(Ordering::Relaxed) > 0 {
                        full.resize(w * h * 3, 0);
                        match dec.decode_rgb(&buf.px, &mut full, w, h) {
                            Ok(_) => {
                                self.draw_overlay(&mut full, w, h, &mut grid);
                                self.encode(Variant::Overlay, &full, w, h);
                            }
                            Err(e) => {
                                self.counters.errors.inc();
                                log::warn!("camera {}: live overlay frame not decoded: {e}", self.name);
                            }
                        }
                    }
                } else {
                    if self.viewers[Variant::Plain as usize].load(Ordering::Relaxed) > 0 {
                        self.encode(Variant::Plain, &buf.px, w, h);
                    }
                    // Only here: for a JPEG camera `buf.px` holds the JPEG's bytes, not pixels (the soak found
                    // every overlay frame of an MJPEG camera drawn on those bytes and encoded a second time, which
                    // the encoder refused: an error counted and a WARN logged per frame).
                    if self.viewers[Variant::Overlay as usize].load(Ordering::Relaxed) > 0 {
                        self.draw_overlay(&mut buf.px, w, h, &mut grid);
                        self.encode(Variant::Overlay, &buf.px, w, h);
                    }
                }
            }
            self.state.lock().unwrap_or_else(|p| p.into_inner()).encoding = None;
        }
    }

    fn encode(&self, v: Variant, px: &[u8], w: usize, h: usize) {
        let started = std::time::Instant::now();
        let mut fan = self.fan[v as usize].lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = fan.free_buffer() else {
            self.counters.exhausted.inc();
            return;
        };
        let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
            self.counters.errors.inc();
            return;
        };
        match jpeg_encoder::Encoder::new(&mut *out, self.quality).encode(px, w16, h16, jpeg_encoder::ColorType::Rgb) {
            Ok(()) => {
                fan.publish(Instant::now());
                self.counters.encodes.inc();
                self.counters.encode_nanos.add(started.elapsed().as_nanos() as u64);
            }
            Err(e) => {
                self.counters.errors.inc();
                log::warn!("camera {}: live view frame not encoded: {e}", self.name);
            }
        }
    }

    fn draw_overlay(&self, px: &mut [u8], w: usize, h: usize, grid: &mut [f32; PIXELS]) {
        let boxes = *self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        let mut cv = Canvas { px, w, h };
        overlay::draw_detections(&mut cv, &boxes);
        let cell = (w / 160).max(2);
        let mut x = 4;
        for &d in &self.thermal {
            if let Some(view) = self.devices.thermal_grid(d, grid)
                && view.has_frame
                && x + GRID_W * cell <= w
                && GRID_H * cell + 4 <= h
            {
                overlay::draw_thermal(&mut cv, x, h - GRID_H * cell - 4, cell, grid, view.hot_c);
                x += GRID_W * cell + 4;
            }
        }
    }
}

impl CameraLive {
    /// Notes a frame's arrival; true when the live view should take it (someone watches, and at most once per frame
    /// interval, with slack for jitter, however fast the source delivers).
    fn take_frame(&self, f: &Frame) -> bool {
        let now = self.now_ns();
        let prev = self.last_frame_ns.swap(now, Ordering::Relaxed);
        if self.frames.fetch_add(1, Ordering::Relaxed) > 0 {
            let iv = f64::from_bits(self.interval_ns.load(Ordering::Relaxed));
            let dt = now.saturating_sub(prev) as f64;
            let next = if iv == 0.0 { dt } else { iv * 0.8 + dt * 0.2 };
            self.interval_ns.store(next.to_bits(), Ordering::Relaxed);
        }
        let (w, h) =
            if f.meta.from_jpeg { (f.meta.source_width, f.meta.source_height) } else { (f.meta.width, f.meta.height) };
        self.size.store(((w as u64) << 32) | h as u64, Ordering::Relaxed);
        if self.viewers() == 0 {
            return false;
        }
        let last = self.last_copy_ns.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period_ns * 3 / 4 {
            self.counters.skipped.inc();
            return false;
        }
        self.last_copy_ns.store(now, Ordering::Relaxed);
        true
    }

    /// Copies a frame in for the encoder; a previous copy it has not even started on is counted as skipped.
    fn hand_over(&self, px: &[u8], w: usize, h: usize, format: PixelFormat, jpeg: bool) {
        if self.state.lock().unwrap_or_else(|p| p.into_inner()).ready.is_some() {
            self.counters.skipped.inc();
        }
        self.copy_in(px, w, h, format, jpeg);
    }

    /// Publishes a camera's JPEG to the plain viewers as it is: one copy into a shared buffer, no encode.
    fn pass_through(&self, jpeg: &[u8]) {
        let mut fan = self.fan[Variant::Plain as usize].lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = fan.free_buffer() else {
            self.counters.exhausted.inc();
            return;
        };
        out.extend_from_slice(jpeg);
        fan.publish(Instant::now());
        self.counters.passed.inc();
    }
}

impl crate::camera::Tap<Frame> for CameraLive {
    fn offer(&self, f: &Frame) {
        // A frame decoded from a JPEG is at analysis scale: its viewers are served from the JPEG (`offer_jpeg`).
        if self.take_frame(f) && !f.meta.from_jpeg {
            self.hand_over(f.pixels(), f.meta.width, f.meta.height, f.meta.format, false);
        }
    }

    fn offer_jpeg(&self, f: &Frame, jpeg: &[u8]) {
        // Every frame's JPEG, viewers or not: the alarm snapshot shows the camera's own picture.
        self.ring.offer_jpeg(f.meta.seq, jpeg);
        if !self.take_frame(f) {
            return;
        }
        if self.viewers[Variant::Plain as usize].load(Ordering::Relaxed) > 0 {
            self.pass_through(jpeg);
        }
        if self.viewers[Variant::Overlay as usize].load(Ordering::Relaxed) > 0 {
            self.hand_over(jpeg, f.meta.source_width, f.meta.source_height, PixelFormat::Rgb24, true);
        }
    }
}

/// The detector's result for each scored frame, kept for the overlay in its own drawing terms.
impl crate::detect::DetectionSink for CameraLive {
    fn offer(&self, d: &crate::detect::Detections) {
        let boxes = Boxes::from_detections(d);
        *self.boxes.lock().unwrap_or_else(|p| p.into_inner()) = boxes;
        self.night.store(d.night, Ordering::Relaxed);
    }

    fn offer_frame(&self, frame: &Frame, d: &crate::detect::Detections) {
        let boxes = Boxes::from_detections(d);
        *self.boxes.lock().unwrap_or_else(|p| p.into_inner()) = boxes;
        self.night.store(d.night, Ordering::Relaxed);
        self.ring.push(frame, &boxes);
    }
}

pub struct WatchGuard<'a> {
    cam: &'a CameraLive,
    v: Variant,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.cam.viewers[self.v as usize].fetch_sub(1, Ordering::Relaxed);
    }
}
