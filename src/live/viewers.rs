//! Who may watch: viewer limits per camera and in total (a guard gives the place back when the viewer leaves),
//! and the lag rule that disconnects a viewer that cannot keep up. Pure: no IO, time passed in.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Why a viewer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    CameraFull,
    AllFull,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::CameraFull => "too many viewers for this camera, try again later\n",
            Refused::AllFull => "too many viewers, try again later\n",
        }
    }
}

struct Counts {
    per_camera: Vec<usize>,
    total: usize,
}

/// Places for viewers: at most `per_camera` on one camera and `total` over all.
pub struct ViewerLimits {
    per_camera: usize,
    total: usize,
    counts: Mutex<Counts>,
}

impl ViewerLimits {
    pub fn new(cameras: usize, per_camera: usize, total: usize) -> Self {
        ViewerLimits { per_camera, total, counts: Mutex::new(Counts { per_camera: vec![0; cameras], total: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one viewer of `camera`, held until the guard is dropped.
    pub fn join(&self, camera: usize) -> Result<ViewerGuard<'_>, Refused> {
        let mut c = self.lock();
        if c.total >= self.total {
            return Err(Refused::AllFull);
        }
        let Some(n) = c.per_camera.get_mut(camera) else { return Err(Refused::CameraFull) };
        if *n >= self.per_camera {
            return Err(Refused::CameraFull);
        }
        *n += 1;
        c.total += 1;
        Ok(ViewerGuard { limits: self, camera })
    }

    pub fn viewers(&self, camera: usize) -> usize {
        self.lock().per_camera.get(camera).copied().unwrap_or(0)
    }

    pub fn max_total(&self) -> usize {
        self.total
    }

    pub fn total(&self) -> usize {
        self.lock().total
    }
}

pub struct ViewerGuard<'a> {
    limits: &'a ViewerLimits,
    camera: usize,
}

impl Drop for ViewerGuard<'_> {
    fn drop(&mut self) {
        let mut c = self.limits.lock();
        if let Some(n) = c.per_camera.get_mut(self.camera) {
            *n = n.saturating_sub(1);
        }
        c.total = c.total.saturating_sub(1);
    }
}

/// The lag rule for one viewer. A viewer only ever gets the newest frame, so a slow reader first skips frames
/// (counted); it is disconnected once a frame it was given has not gone out within `max_lag` of being ready.
#[derive(Debug, Clone)]
pub struct Lag {
    max_lag: Duration,
    last_seq: Option<u64>,
    pub sent: u64,
    pub skipped: u64,
}

impl Lag {
    pub fn new(max_lag: Duration) -> Self {
        Lag { max_lag, last_seq: None, sent: 0, skipped: 0 }
    }

    /// The viewer is about to send frame `seq`, ready since `ready_at`: the time by which it must be out.
    pub fn start(&mut self, seq: u64, ready_at: Instant) -> Instant {
        if let Some(last) = self.last_seq {
            self.skipped += seq.saturating_sub(last).saturating_sub(1);
        }
        self.last_seq = Some(seq);
        ready_at + self.max_lag
    }

    pub fn done(&mut self) {
        self.sent += 1;
    }

    /// Whether a send that has not finished by `now` breaks the rule.
    pub fn expired(&self, ready_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(ready_at) > self.max_lag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_camera_and_total_and_guards_give_places_back() {
        let l = ViewerLimits::new(2, 2, 3);
        let a = l.join(0).unwrap();
        let _b = l.join(0).unwrap();
        assert_eq!(l.join(0).err(), Some(Refused::CameraFull));
        let _c = l.join(1).unwrap();
        assert_eq!(l.join(1).err(), Some(Refused::AllFull));
        assert_eq!((l.viewers(0), l.viewers(1), l.total()), (2, 1, 3));
        drop(a);
        assert_eq!((l.viewers(0), l.total()), (1, 2));
        assert!(l.join(1).is_ok());
        assert_eq!(l.join(7).err(), Some(Refused::CameraFull), "unknown camera");
    }

    #[test]
    fn lag_counts_skipped_frames_and_sets_the_deadline_from_readiness() {
        let t0 = Instant::now();
        let mut lag = Lag::new(Duration::from_millis(500));
        assert_eq!(lag.start(10, t0), t0 + Duration::from_millis(500));
        lag.done();
        lag.start(11, t0);
        lag.done();
        // A slow viewer that missed 12..=14 gets 15 next.
        lag.start(15, t0);
        assert_eq!(lag.skipped, 3);
        assert_eq!(lag.sent, 2);
        assert!(!lag.expired(t0, t0 + Duration::from_millis(500)));
        assert!(lag.expired(t0, t0 + Duration::from_millis(501)));
    }
}
