//! Per-camera supervision run by the detection task: adapts the camera's rate to the detector's measured budget
//! and turns the camera's health into trouble for fusion. Owns the metrics and log lines of both, so the
//! detection task only reports "a frame took this long" and "time passed".

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::adapt::{AdaptConfig, Change, LoadSample, RateController};
use super::health::{CameraHealth, Condition, FrameStats, HealthConfig};
use super::rate::Rate;
use crate::event::{Observation, SourceRef};
use crate::frame::Frame;
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, Registry};

pub struct WatchMetrics {
    /// The camera's current target rate.
    pub fps: Gauge,
    /// Condition code (see `health::Condition`).
    pub condition: Gauge,
    /// Times the camera went into trouble.
    pub troubles: Counter,
    /// The mailbox's replaced-frame counter, read back to see drops.
    pub dropped: Counter,
}

impl WatchMetrics {
    /// Registers one camera's rate and health metrics; `dropped` is its mailbox's replaced-frame counter.
    pub fn register(reg: &Registry, camera: &str, dropped: Counter) -> Self {
        let l = [("camera", camera)];
        WatchMetrics {
            fps: reg.gauge("ember_camera_fps", "The camera's current adaptive frame rate.", &l),
            condition: reg.gauge(
                "ember_camera_condition",
                "Camera health: 0 ok, 1 no frames, 2 frozen, 3 covered or black, 4 defocused or fogged.",
                &l,
            ),
            troubles: reg.counter("ember_camera_troubles_total", "Times the camera went into a trouble condition.", &l),
            dropped,
        }
    }
}

pub struct CameraWatch {
    camera: usize,
    name: String,
    rate: Arc<Rate>,
    control: RateController,
    health: CameraHealth,
    metrics: WatchMetrics,
    out: Queue<Observation>,
    taken: u64,
    busy: Duration,
    /// What fusion was last told about this camera.
    reported_ok: bool,
}

impl CameraWatch {
    pub fn new(
        camera: usize,
        name: String,
        rate: Arc<Rate>,
        adapt: AdaptConfig,
        out: Queue<Observation>,
        metrics: WatchMetrics,
        now: Instant,
    ) -> Self {
        let control = RateController::new(adapt, rate.fps());
        rate.set(control.fps());
        metrics.fps.set(control.fps());
        let health = CameraHealth::new(HealthConfig::for_fps(adapt.min_fps), now);
        CameraWatch {
            camera,
            name,
            rate,
            control,
            health,
            metrics,
            out,
            taken: 0,
            busy: Duration::ZERO,
            reported_ok: true,
        }
    }

    pub fn rate(&self) -> &Arc<Rate> {
        &self.rate
    }

    /// A frame was scored in `busy`.
    pub fn frame(&mut self, now: Instant, frame: &Frame, busy: Duration) {
        self.taken += 1;
        self.busy += busy;
        let m = &frame.meta;
        if let Some(stats) = FrameStats::measure(frame.pixels(), m.width, m.height, m.format)
            && let Some(c) = self.health.observe(now, stats)
        {
            self.report(now, c);
        }
        self.adapt(now);
    }

    /// Called periodically, frames or not.
    pub fn tick(&mut self, now: Instant) {
        if let Some(c) = self.health.poll(now) {
            self.report(now, c);
        }
        self.adapt(now);
    }

    fn adapt(&mut self, now: Instant) {
        let dropped = self.metrics.dropped.get();
        let sample = LoadSample { offered: self.taken + dropped, dropped, busy: self.busy };
        let change = self.control.update(now, sample);
        if change != Change::None {
            let fps = self.control.fps();
            self.rate.set(fps);
            self.metrics.fps.set(fps);
            match change {
                Change::Down => log::warn!("camera {}: detection is behind; rate lowered to {fps:.1} fps", self.name),
                _ => log::debug!("camera {}: rate raised to {fps:.1} fps", self.name),
            }
        }
    }

    fn report(&mut self, now: Instant, c: Condition) {
        self.metrics.condition.set(c as u8 as f64);
        let ok = c == Condition::Ok;
        if ok {
            log::info!("camera {}: picture restored", self.name);
        } else {
            self.metrics.troubles.inc();
            log::error!("camera {}: trouble: {} (check the camera, its lens and its link)", self.name, c.as_str());
        }
        // Fusion counts a camera's trouble once however many conditions follow one another.
        if ok != self.reported_ok {
            self.reported_ok = ok;
            self.out.push(Observation::SourceHealth { source: SourceRef::Camera(self.camera), at: now, ok });
        }
    }
}
