//! Detection: a pure per-frame stage that turns a frame into a `VisionScore`, with no allocation per frame.
//! The task around it takes the newest frame of one camera, scores it and hands the score to fusion.

pub mod embereye;

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::camera::Latest;
use crate::camera::watch::CameraWatch;
use crate::event::{Observation, VisionScore};
use crate::frame::{Frame, PixelFormat};
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle};

/// A configured detector, built once per camera.
pub enum Detector {
    EmberEye(embereye::EmberEyeHsv),
}

impl Detector {
    pub fn new(kind: crate::config::DetectorKind) -> Self {
        match kind {
            crate::config::DetectorKind::Embereye => Detector::EmberEye(embereye::EmberEyeHsv::new()),
        }
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
    /// Adapts the camera's rate and reports its health.
    pub watch: CameraWatch,
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
            let Some((score, fire, smoke)) = self.detector.score(&frame) else {
                self.counters.unsupported.inc();
                continue;
            };
            let busy = started.elapsed();
            self.counters.nanos.add(busy.as_nanos() as u64);
            self.watch.frame(tokio::time::Instant::now(), &frame, busy);
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
