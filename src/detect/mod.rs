//! Detection: a pure per-frame stage that turns a frame into a `VisionScore`, with no allocation per frame.
//! The task around it takes the newest frame of one camera, scores it, hands the score to fusion and publishes
//! the frame's `Detections` to a `DetectionSink` (the live view's overlay, which detection knows only as that
//! trait, so the arrow between them points one way).

pub mod cnn;
pub mod embereye;
pub mod grid;
pub mod grid_weights;
#[cfg(feature = "tflite")]
mod litert;
pub mod model_input;
pub mod night;
pub mod temporal;
#[cfg(feature = "tflite")]
pub mod tflite;
// Pure Rust, so its tests run in every build; only the LiteRT path (feature `tflite`) calls it.
#[cfg_attr(not(feature = "tflite"), allow(dead_code))]
mod tflite_verify;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::camera::Latest;
use crate::camera::watch::CameraWatch;
use crate::config::{Camera, DetectorKind, ModelSection};
use crate::event::{Observation, VisionScore};
use crate::frame::{Frame, PixelFormat};
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};

/// A configured detector, built once per camera.
pub enum Detector {
    EmberEye(Box<embereye::EmberEyeHsv>),
    /// The grid detector with its temporal confirmation (one camera's state).
    Grid(Box<grid::GridDetector>, Box<temporal::Temporal>),
    /// The CNN on the grid detector's candidate regions (the grid alone when the model cannot be loaded), with
    /// the same temporal confirmation as `Grid`.
    Model(Box<cnn::ModelDetector>, Box<temporal::Temporal>),
}

/// One frame's verdict, as fusion sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub fire_pixels: u32,
    pub smoke_pixels: u32,
    /// Raw single-frame score before temporal confirmation (equal to `score` for EmberEye).
    pub frame_score: f32,
    /// Candidate regions, largest first (the grid detector; empty for a pixel-ratio detector).
    pub regions: [grid::Region; grid::MAX_REGIONS],
    pub n_regions: usize,
}

impl Scored {
    fn ratio(score: f32, fire_pixels: u32, smoke_pixels: u32) -> Self {
        Scored {
            score,
            fire_pixels,
            smoke_pixels,
            frame_score: score,
            regions: [grid::Region::default(); grid::MAX_REGIONS],
            n_regions: 0,
        }
    }

    /// A single-frame grid result passed through the camera's temporal confirmation.
    fn confirmed(r: &grid::GridResult, t: &mut temporal::Temporal, now: tokio::time::Instant) -> Self {
        let v = t.update(r, now);
        Scored {
            score: v.score,
            fire_pixels: r.fire_pixels,
            smoke_pixels: r.smoke_pixels,
            frame_score: r.score,
            regions: r.regions,
            n_regions: r.n_regions,
        }
    }

    pub fn regions(&self) -> &[grid::Region] {
        &self.regions[..self.n_regions.min(grid::MAX_REGIONS)]
    }

    /// What this verdict publishes for frame number `frame`.
    pub fn detections(&self, frame: u64) -> Detections {
        Detections {
            frame,
            score: self.score,
            frame_score: self.frame_score,
            regions: self.regions,
            n_regions: self.n_regions,
            night: false,
        }
    }
}

/// One scored frame as detection publishes it for display: plain values, copied, no allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detections {
    /// The frame's number (`FrameMeta::seq`).
    pub frame: u64,
    /// The confirmed score fusion sees.
    pub score: f32,
    /// The single-frame score, which the regions share (they carry no score of their own).
    pub frame_score: f32,
    regions: [grid::Region; grid::MAX_REGIONS],
    n_regions: usize,
    /// The camera is in night mode (grey/IR pictures): the score is 0 whatever the picture shows.
    pub night: bool,
}

impl Detections {
    /// Candidate regions, largest first.
    pub fn regions(&self) -> &[grid::Region] {
        &self.regions[..self.n_regions.min(grid::MAX_REGIONS)]
    }
}

/// Where a camera's detections are shown. Called on the detect task for every scored frame: must be quick and
/// must not block.
pub trait DetectionSink: Send + Sync {
    fn offer(&self, d: &Detections);

    /// `offer`, with the analysed frame the detections belong to (the live view keeps the last few for the
    /// alarm snapshot). Called before fusion hears the frame's score.
    fn offer_frame(&self, _frame: &Frame, d: &Detections) {
        self.offer(d);
    }
}

impl Detector {
    /// `masks`: ignore rectangles `[x0, y0, x1, y1]` (relative), used by the grid detector.
    pub fn new(kind: DetectorKind, masks: &[[f32; 4]]) -> Self {
        match kind {
            DetectorKind::Embereye => Detector::EmberEye(Box::default()),
            // Without a model spec there is nothing to load: the grid detector (see `Detector::model`).
            DetectorKind::Grid | DetectorKind::Model => {
                Detector::Grid(Box::new(grid::GridDetector::new(&rel_rects(masks))), Box::default())
            }
        }
    }

    /// The detector a camera's config names; the `model` kind loads `[model]` (paths relative to `base_dir`)
    /// and registers the model's counters for this camera.
    pub fn from_config(cam: &Camera, model: &ModelSection, base_dir: &Path, registry: &Registry) -> Self {
        match cam.detector {
            DetectorKind::Model => Detector::model(
                &cnn::spec_from_config(model, base_dir),
                &cam.mask,
                cnn::ModelCounters::register(registry, &[("camera", cam.name.as_str())]),
            ),
            kind => Detector::new(kind, &cam.mask),
        }
    }

    /// The `model` kind: loads the CNN once (or falls back to the grid detector, logged and counted).
    pub fn model(spec: &cnn::ModelSpec, masks: &[[f32; 4]], counters: cnn::ModelCounters) -> Self {
        Detector::Model(Box::new(cnn::ModelDetector::load(spec, &rel_rects(masks), counters)), Box::default())
    }

    /// Whether this detector can score frames of `format` (config refuses a camera whose frames it cannot).
    pub fn reads(&self, format: PixelFormat) -> bool {
        !matches!(self, Detector::EmberEye(_)) || format == PixelFormat::Rgb24
    }

    /// Forgets the confirmation over frames (a pixel-ratio detector has none).
    pub fn reset_confirmation(&mut self) {
        match self {
            Detector::EmberEye(_) => {}
            Detector::Grid(_, t) | Detector::Model(_, t) => t.reset(),
        }
    }

    /// Scores one frame of a live camera at `now`; None for a pixel format this detector cannot read.
    pub fn score(&mut self, frame: &Frame, now: tokio::time::Instant) -> Option<Scored> {
        let (w, h) = (frame.meta.width, frame.meta.height);
        match self {
            Detector::EmberEye(d) => {
                if frame.meta.format != PixelFormat::Rgb24 {
                    return None;
                }
                let s = d.score_rgb(frame.pixels(), w, h);
                let area = frame.meta.pixel_area();
                Some(Scored::ratio(s.score, camera_pixels(s.fire_pixels, area), camera_pixels(s.smoke_pixels, area)))
            }
            Detector::Grid(d, t) => {
                let r = match frame.meta.format {
                    PixelFormat::Rgb24 => d.score_rgb(frame.pixels(), w, h),
                    PixelFormat::Yuyv => d.score_yuyv(frame.pixels(), w, h),
                };
                Some(Scored::confirmed(&in_camera_pixels(r, frame.meta.pixel_area()), t, now))
            }
            Detector::Model(m, t) => {
                let r = m.score(frame.pixels(), w, h, frame.meta.format);
                Some(Scored::confirmed(&in_camera_pixels(r, frame.meta.pixel_area()), t, now))
            }
        }
    }
}

/// A camera's vision stage: its detector behind the day/night gate. Colour evidence is withheld (score 0, the
/// detector not even run) on a grey frame and while the camera is in night mode; the zone then relies on its
/// thermal and smoke sources. The appliance's detect task and `ember-tools eval clips` both go through this.
pub struct Vision {
    pub detector: Detector,
    pub day_night: night::DayNight,
}

impl From<Detector> for Vision {
    fn from(detector: Detector) -> Self {
        Vision { detector, day_night: night::DayNight::default() }
    }
}

/// One frame through [`Vision`].
#[derive(Debug, Clone, Copy)]
pub struct Analysed {
    pub scored: Scored,
    /// This frame was grey.
    pub grey: bool,
    /// The camera's mode after this frame, and whether this frame changed it.
    pub mode: night::Mode,
    pub changed: bool,
}

impl Analysed {
    /// What this frame publishes for display.
    pub fn detections(&self, frame: u64) -> Detections {
        Detections { night: self.mode == night::Mode::Night, ..self.scored.detections(frame) }
    }
}

impl Vision {
    /// One frame at `now`; None for a pixel format the detector cannot read.
    pub fn analyse(&mut self, frame: &Frame, now: tokio::time::Instant) -> Option<Analysed> {
        let m = &frame.meta;
        if !self.detector.reads(m.format) {
            return None;
        }
        let grey = night::is_grey(frame.pixels(), m.width, m.height, m.format);
        let changed = self.day_night.update(grey).is_some();
        let mode = self.day_night.mode();
        let scored = if self.day_night.withholds(grey) {
            self.detector.reset_confirmation();
            Scored::ratio(0.0, 0, 0)
        } else {
            self.detector.score(frame, now)?
        };
        Some(Analysed { scored, grey, mode, changed })
    }
}

/// A pixel count of a frame decoded at reduced scale, in the camera's own pixels (what alerts and metrics report).
fn camera_pixels(n: u32, area: f32) -> u32 {
    (n as f32 * area).round() as u32
}

fn in_camera_pixels(mut r: grid::GridResult, area: f32) -> grid::GridResult {
    r.fire_pixels = camera_pixels(r.fire_pixels, area);
    r.smoke_pixels = camera_pixels(r.smoke_pixels, area);
    r
}

fn rel_rects(masks: &[[f32; 4]]) -> Vec<grid::RelRect> {
    masks.iter().map(|&[x0, y0, x1, y1]| grid::RelRect { x0, y0, x1, y1 }).collect()
}

pub struct DetectCounters {
    pub frames: Counter,
    pub nanos: Counter,
    pub unsupported: Counter,
    pub score: Gauge,
    pub mode: Gauge,
}

impl DetectCounters {
    /// Registers the detection metrics of one camera.
    pub fn register(reg: &Registry, camera: &str) -> Self {
        let l = [("camera", camera)];
        DetectCounters {
            frames: reg.counter("ember_detect_frames_total", "Frames scored by the detector.", &l),
            nanos: reg.counter("ember_detect_nanoseconds_total", "Time spent scoring frames.", &l),
            unsupported: reg.counter(
                "ember_detect_unsupported_total",
                "Frames in a pixel format the detector cannot read.",
                &l,
            ),
            score: reg.gauge("ember_vision_score", "Last detector score (0..1).", &l),
            mode: reg.gauge(
                "ember_camera_mode",
                "Camera picture mode: 0 day (colour), 1 night (grey/IR pictures: vision gives no fire evidence).",
                &l,
            ),
        }
    }
}

pub struct DetectTask {
    pub camera: usize,
    /// The camera's detector behind its day/night gate.
    pub detector: Vision,
    /// The camera's name, for the log.
    pub name: String,
    pub input: Arc<Latest<Frame>>,
    pub output: Queue<Observation>,
    pub counters: DetectCounters,
    /// Adapts the camera's rate and reports its health.
    pub watch: CameraWatch,
    /// Where this camera's detections are shown (the live view's overlay).
    pub sink: Option<Arc<dyn DetectionSink>>,
}

impl DetectTask {
    pub async fn run(mut self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        // Health needs a clock even when no frame comes: that is exactly the "no frames" trouble.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    part.beat();
                    self.watch.tick(tokio::time::Instant::now());
                    continue;
                }
                f = self.input.take() => f,
            };
            part.beat();
            let started = std::time::Instant::now();
            let Some(a) = self.detector.analyse(&frame, frame.meta.captured) else {
                self.counters.unsupported.inc();
                continue;
            };
            if a.changed {
                self.counters.mode.set(a.mode as u8 as f64);
                // Information, not trouble: the camera works, its pictures just carry no colour.
                match a.mode {
                    night::Mode::Night => log::info!(
                        "camera {}: night mode (grey pictures): vision gives no fire evidence; its zones rely on \
                         their thermal and smoke sources",
                        self.name
                    ),
                    night::Mode::Day => log::info!("camera {}: day mode (colour pictures)", self.name),
                }
            }
            let score = a.scored.score;
            let busy = started.elapsed();
            self.counters.nanos.add(busy.as_nanos() as u64);
            self.watch.frame(tokio::time::Instant::now(), &frame, busy);
            self.counters.frames.inc();
            self.counters.score.set(score as f64);
            if let Some(sink) = &self.sink {
                sink.offer_frame(&frame, &a.detections(frame.meta.seq));
            }
            self.output.push(Observation::Vision(VisionScore {
                camera: self.camera,
                frame: frame.meta.seq,
                at: frame.meta.captured,
                score,
            }));
        }
    }
}
