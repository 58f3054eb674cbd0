//! Detection: a pure per-frame stage that turns a frame into a `VisionScore`, with no allocation per frame.
//! The task around it takes the newest frame of one camera, scores it and hands the score to fusion.

pub mod embereye;
pub mod model;
pub mod model_input;
#[cfg(feature = "tflite")]
pub mod tflite;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::camera::Latest;
use crate::event::{Observation, VisionScore};
use crate::frame::{Frame, PixelFormat};
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle};

/// A configured detector, built once per camera.
pub enum Detector {
    EmberEye(embereye::EmberEyeHsv),
    /// The CNN with the heuristic behind it (a lock only to score through `&self`; never contended).
    Model(std::sync::Mutex<model::ModelDetector>),
}

impl Detector {
    pub fn new(kind: crate::config::DetectorKind) -> Self {
        match kind {
            crate::config::DetectorKind::Embereye => Detector::EmberEye(embereye::EmberEyeHsv::new()),
            // Without a model spec there is nothing to load: the heuristic (see `Detector::model`).
            crate::config::DetectorKind::Model => Detector::EmberEye(embereye::EmberEyeHsv::new()),
        }
    }

    /// The `model` kind: loads the CNN once (or falls back to the heuristic, logged and counted).
    pub fn model(spec: &model::ModelSpec, counters: model::ModelCounters) -> Self {
        Detector::Model(std::sync::Mutex::new(model::ModelDetector::load(spec, counters)))
    }

    /// Scores one frame; None for a pixel format this detector cannot read.
    pub fn score(&self, frame: &Frame) -> Option<(f32, u32, u32)> {
        match self {
            Detector::EmberEye(d) => {
                if frame.meta.format != PixelFormat::Rgb24 {
                    return None;
                }
                let s = d.score_rgb(frame.pixels(), frame.meta.width, frame.meta.height);
                Some((s.score, s.fire_pixels, s.smoke_pixels))
            }
            Detector::Model(m) => m.lock().ok()?.score(frame),
        }
    }
}

pub struct DetectCounters {
    pub frames: Counter,
    pub nanos: Counter,
    pub unsupported: Counter,
    pub score: Gauge,
}

pub struct DetectTask {
    pub camera: usize,
    pub detector: Detector,
    pub input: Arc<Latest<Frame>>,
    pub output: Queue<Observation>,
    pub counters: DetectCounters,
}

impl DetectTask {
    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                f = self.input.take() => f,
            };
            part.beat();
            let started = std::time::Instant::now();
            let Some((score, fire, smoke)) = self.detector.score(&frame) else {
                self.counters.unsupported.inc();
                continue;
            };
            self.counters.nanos.add(started.elapsed().as_nanos() as u64);
            self.counters.frames.inc();
            self.counters.score.set(score as f64);
            self.output.push(Observation::Vision(VisionScore {
                camera: self.camera,
                seq: frame.meta.seq,
                at: frame.meta.captured,
                score,
                fire_pixels: fire,
                smoke_pixels: smoke,
            }));
        }
    }
}
