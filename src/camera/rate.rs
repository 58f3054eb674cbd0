//! A camera's current capture/processing rate, shared between the source that paces itself by it and the
//! controller that adapts it to the detection budget. Lock-free: the source reads it once per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Frames per second as an atomically replaceable f64.
#[derive(Debug)]
pub struct Rate(AtomicU64);

impl Rate {
    pub fn new(fps: f64) -> Self {
        Rate(AtomicU64::new(sanitize(fps).to_bits()))
    }

    pub fn fps(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, fps: f64) {
        self.0.store(sanitize(fps).to_bits(), Ordering::Relaxed);
    }

    /// Time between frames at the current rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps())
    }
}

// A rate of zero, negative or NaN would stall or busy-loop a source; 0.01 fps (one frame in 100 s) is the floor.
fn sanitize(fps: f64) -> f64 {
    if fps.is_finite() && fps >= 0.01 { fps } else { 0.01 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_follows_rate_and_bad_rates_are_floored() {
        let r = Rate::new(4.0);
        assert_eq!(r.period(), Duration::from_millis(250));
        r.set(0.0);
        assert_eq!(r.fps(), 0.01);
        r.set(f64::NAN);
        assert_eq!(r.fps(), 0.01);
        r.set(25.0);
        assert_eq!(r.period(), Duration::from_millis(40));
    }
}
