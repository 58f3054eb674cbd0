//! Adaptive frame rate: the decision that slows a camera down when its detector cannot keep up and speeds it
//! back up when there is headroom. EmberEye's rule (−25 % at the high watermark, +1 fps per second when idle,
//! one change per second at most), fed with what ember-edge can measure without a queue: how many frames the
//! newest-wins mailbox had to drop and how much of the wall time the detector was busy.

use std::time::Duration;
use tokio::time::Instant;

/// Limits and thresholds, from the camera's config.
#[derive(Debug, Clone, Copy)]
pub struct AdaptConfig {
    pub min_fps: f64,
    pub max_fps: f64,
    /// Dropped frames per offered frame at or above which the rate is cut (EmberEye: backlog ≥ 8 of 8).
    pub high_drop_ratio: f64,
    /// Detector busy fraction of wall time at or above which the rate is cut.
    pub high_busy: f64,
    /// Busy fraction at or below which (with no drops) the rate may grow.
    pub low_busy: f64,
    pub cooldown: Duration,
}

impl AdaptConfig {
    pub fn new(min_fps: f64, max_fps: f64) -> Self {
        AdaptConfig {
            min_fps,
            max_fps,
            high_drop_ratio: 0.25,
            high_busy: 0.9,
            low_busy: 0.6,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// What happened since the last `update`: cumulative counters, so a missed call loses nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSample {
    /// Frames the source handed over (scored + dropped).
    pub offered: u64,
    /// Frames replaced in the mailbox before the detector read them.
    pub dropped: u64,
    /// Time the detector spent scoring.
    pub busy: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Down,
    Up,
}

/// The controller's state. Pure: time comes in as `now`.
#[derive(Debug)]
pub struct RateController {
    cfg: AdaptConfig,
    fps: f64,
    last_change: Option<Instant>,
    last: Option<(Instant, LoadSample)>,
}

impl RateController {
    pub fn new(cfg: AdaptConfig, start_fps: f64) -> Self {
        RateController { cfg, fps: start_fps.clamp(cfg.min_fps, cfg.max_fps), last_change: None, last: None }
    }

    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Feeds the cumulative counters; returns whether the rate changed.
    pub fn update(&mut self, now: Instant, total: LoadSample) -> Change {
        let Some((then, prev)) = self.last else {
            self.last = Some((now, total));
            return Change::None;
        };
        let elapsed = now.saturating_duration_since(then);
        if elapsed < self.cfg.cooldown
            || self.last_change.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.cooldown)
        {
            return Change::None;
        }
        self.last = Some((now, total));
        let offered = total.offered.saturating_sub(prev.offered);
        let dropped = total.dropped.saturating_sub(prev.dropped);
        let busy = total.busy.saturating_sub(prev.busy).as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
        let drop_ratio = if offered == 0 { 0.0 } else { dropped as f64 / offered as f64 };
        let change = if drop_ratio >= self.cfg.high_drop_ratio || busy >= self.cfg.high_busy {
            // EmberEye truncates to whole fps; fractional rates are fine here and avoid sticking above the floor.
            let next = (self.fps * 0.75).max(self.cfg.min_fps);
            if next < self.fps { Some((next, Change::Down)) } else { None }
        } else if dropped == 0 && busy <= self.cfg.low_busy && self.fps < self.cfg.max_fps {
            Some(((self.fps + elapsed.as_secs_f64().min(1.0)).min(self.cfg.max_fps), Change::Up))
        } else {
            None
        };
        match change {
            Some((fps, c)) => {
                self.fps = fps;
                self.last_change = Some(now);
                c
            }
            None => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offered: u64, dropped: u64, busy_ms: u64) -> LoadSample {
        LoadSample { offered, dropped, busy: Duration::from_millis(busy_ms) }
    }

    #[test]
    fn sustained_overload_steps_down_to_the_floor_then_recovers_one_fps_per_second() {
        let t0 = Instant::now();
        let mut c = RateController::new(AdaptConfig::new(5.0, 25.0), 25.0);
        let (mut offered, mut dropped, mut busy) = (0, 0, 0);
        c.update(t0, sample(0, 0, 0));
        let mut seen = vec![c.fps()];
        for s in 1..=10 {
            offered += 25;
            dropped += 15;
            busy += 1000;
            c.update(t0 + Duration::from_secs(s), sample(offered, dropped, busy));
            seen.push(c.fps());
        }
        assert!(seen.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(c.fps(), 5.0, "{seen:?}");
        assert!((seen[1] - 18.75).abs() < 1e-9);
        for s in 11..=30 {
            offered += 5;
            busy += 100;
            c.update(t0 + Duration::from_secs(s), sample(offered, dropped, busy));
        }
        assert_eq!(c.fps(), 25.0);
    }

    #[test]
    fn at_most_one_change_per_cooldown_and_middle_load_holds() {
        let t0 = Instant::now();
        let mut c = RateController::new(AdaptConfig::new(2.0, 10.0), 10.0);
        c.update(t0, sample(0, 0, 0));
        assert_eq!(c.update(t0 + Duration::from_millis(300), sample(10, 10, 300)), Change::None);
        assert_eq!(c.update(t0 + Duration::from_millis(1000), sample(10, 10, 1000)), Change::Down);
        assert_eq!(c.update(t0 + Duration::from_millis(1500), sample(20, 12, 1500)), Change::None);
        // 70 % busy, no drops: neither overloaded nor idle.
        let f = c.fps();
        assert_eq!(c.update(t0 + Duration::from_millis(2600), sample(27, 10, 2270)), Change::None);
        assert_eq!(c.fps(), f);
    }

    #[test]
    fn busy_detector_alone_cuts_the_rate_and_start_is_clamped() {
        let t0 = Instant::now();
        let mut c = RateController::new(AdaptConfig::new(1.0, 8.0), 30.0);
        assert_eq!(c.fps(), 8.0);
        c.update(t0, LoadSample::default());
        assert_eq!(c.update(t0 + Duration::from_secs(1), sample(8, 0, 950)), Change::Down);
        assert_eq!(c.fps(), 6.0);
    }
}
