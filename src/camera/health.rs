//! Camera health: the trouble conditions a fire panel must report for a camera instead of silently watching
//! nothing: no frames, frozen frames (identical content), covered or black, and defocused or fogged (lost
//! detail against the camera's own learned baseline). Pure: frames are summarised by `FrameStats::measure`
//! (a sampled grid, no allocation) and time comes in as `now`.

use std::time::Duration;
use tokio::time::Instant;

use crate::frame::PixelFormat;

/// Sampling step in pixels: 80×60 samples on a 640×480 frame are plenty for these global measures.
const STEP: usize = 8;

/// A frame reduced to what health needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    pub mean_luma: f32,
    pub std_luma: f32,
    /// Mean absolute luma difference between neighbouring samples: falls when the image blurs or fogs.
    pub detail: f32,
    /// Hash of the sampled luma; equal hashes over many frames mean a frozen source.
    pub fingerprint: u64,
}

impl FrameStats {
    pub fn measure(pixels: &[u8], width: usize, height: usize, format: PixelFormat) -> Option<Self> {
        if width < STEP * 2 || height < STEP * 2 || pixels.len() < format.frame_len(width, height) {
            return None;
        }
        let luma = |x: usize, y: usize| -> u32 {
            match format {
                PixelFormat::Rgb24 => {
                    let i = (y * width + x) * 3;
                    (77 * pixels[i] as u32 + 150 * pixels[i + 1] as u32 + 29 * pixels[i + 2] as u32) >> 8
                }
                // Y0 and Y1 sit at even byte offsets of each 4-byte macropixel.
                PixelFormat::Yuyv => pixels[(y * width + x) * 2] as u32,
            }
        };
        let (mut n, mut sum, mut sum2, mut detail, mut pairs) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for y in (0..height).step_by(STEP) {
            let mut prev: Option<u32> = None;
            for x in (0..width).step_by(STEP) {
                let l = luma(x, y);
                n += 1;
                sum += l as u64;
                sum2 += (l * l) as u64;
                hash = (hash ^ l as u64).wrapping_mul(0x100_0000_01b3);
                if let Some(p) = prev {
                    detail += p.abs_diff(l) as u64;
                    pairs += 1;
                }
                if y >= STEP {
                    detail += luma(x, y - STEP).abs_diff(l) as u64;
                    pairs += 1;
                }
                prev = Some(l);
            }
        }
        let mean = sum as f64 / n as f64;
        let var = (sum2 as f64 / n as f64 - mean * mean).max(0.0);
        Some(FrameStats {
            mean_luma: mean as f32,
            std_luma: var.sqrt() as f32,
            detail: (detail as f64 / pairs.max(1) as f64) as f32,
            fingerprint: hash,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Ok = 0,
    NoFrames = 1,
    Frozen = 2,
    Covered = 3,
    Defocused = 4,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Ok => "ok",
            Condition::NoFrames => "no frames",
            Condition::Frozen => "frozen",
            Condition::Covered => "covered or black",
            Condition::Defocused => "defocused or fogged",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// No frame for this long: trouble.
    pub no_frames_after: Duration,
    /// How long a condition must hold before it is reported (one bad frame is not trouble).
    pub hold: Duration,
    /// Time of healthy frames before the detail baseline is trusted.
    pub learn: Duration,
    /// Detail below this fraction of the baseline is "defocused"; it must climb above `recover_ratio` to clear.
    pub defocus_ratio: f32,
    pub recover_ratio: f32,
}

impl HealthConfig {
    pub fn for_fps(fps: f64) -> Self {
        HealthConfig {
            no_frames_after: Duration::from_secs_f64((10.0 / fps.max(0.01)).max(5.0)),
            hold: Duration::from_secs(10),
            learn: Duration::from_secs(30),
            defocus_ratio: 0.35,
            recover_ratio: 0.5,
        }
    }
}

/// Per-camera health state machine.
#[derive(Debug)]
pub struct CameraHealth {
    cfg: HealthConfig,
    started: Instant,
    last_frame: Option<Instant>,
    last_fingerprint: u64,
    same_since: Option<Instant>,
    dark_since: Option<Instant>,
    blur_since: Option<Instant>,
    /// Slow average of `detail` over healthy frames, and how long it has been learning.
    baseline: f32,
    learned_for: Duration,
    last_learn: Option<Instant>,
    condition: Condition,
}

impl CameraHealth {
    pub fn new(cfg: HealthConfig, now: Instant) -> Self {
        CameraHealth {
            cfg,
            started: now,
            last_frame: None,
            last_fingerprint: 0,
            same_since: None,
            dark_since: None,
            blur_since: None,
            baseline: 0.0,
            learned_for: Duration::ZERO,
            last_learn: None,
            condition: Condition::Ok,
        }
    }

    pub fn condition(&self) -> Condition {
        self.condition
    }

    /// A frame arrived. Returns the new condition if it changed.
    pub fn observe(&mut self, now: Instant, s: FrameStats) -> Option<Condition> {
        self.last_frame = Some(now);
        if s.fingerprint == self.last_fingerprint {
            self.same_since.get_or_insert(now);
        } else {
            self.same_since = None;
            self.last_fingerprint = s.fingerprint;
        }
        // Lens cap, tape, a dead sensor or a blown-out white image: almost no variation at all.
        let flat = s.std_luma < 6.0 && (s.mean_luma < 24.0 || s.mean_luma > 235.0);
        if flat {
            self.dark_since.get_or_insert(now);
        } else {
            self.dark_since = None;
        }
        let learned = self.learned_for >= self.cfg.learn && self.baseline > 0.5;
        let blurred = learned
            && if self.condition == Condition::Defocused {
                s.detail < self.baseline * self.cfg.recover_ratio
            } else {
                s.detail < self.baseline * self.cfg.defocus_ratio
            };
        if blurred && !flat {
            self.blur_since.get_or_insert(now);
        } else {
            self.blur_since = None;
        }
        let held = |since: Option<Instant>| since.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.hold);
        let next = if held(self.dark_since) {
            Condition::Covered
        } else if held(self.same_since) {
            Condition::Frozen
        } else if held(self.blur_since) || (self.condition == Condition::Defocused && blurred) {
            Condition::Defocused
        } else {
            Condition::Ok
        };
        // The baseline learns only from frames that look healthy, so a slowly fogging lens cannot drag it down.
        if next == Condition::Ok && !flat && self.blur_since.is_none() {
            let dt = self.last_learn.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.learned_for += dt.min(Duration::from_secs(5));
            // A time constant of about five minutes once learned, faster while learning.
            let alpha = if self.learned_for < self.cfg.learn { 0.2 } else { (dt.as_secs_f32() / 300.0).min(0.05) };
            self.baseline =
                if self.baseline == 0.0 { s.detail } else { self.baseline + alpha * (s.detail - self.baseline) };
        }
        self.last_learn = Some(now);
        self.set(next)
    }

    /// Time passed without a frame. Returns the new condition if it changed.
    pub fn poll(&mut self, now: Instant) -> Option<Condition> {
        let since = self.last_frame.unwrap_or(self.started);
        if now.saturating_duration_since(since) >= self.cfg.no_frames_after {
            self.same_since = None;
            return self.set(Condition::NoFrames);
        }
        None
    }

    fn set(&mut self, next: Condition) -> Option<Condition> {
        if next == self.condition {
            return None;
        }
        self.condition = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 160;
    const H: usize = 120;

    fn textured(seed: u32, blur: bool) -> Vec<u8> {
        let mut v = vec![0u8; W * H * 3];
        for y in 0..H {
            for x in 0..W {
                // A checkerboard of 8-px squares with noise; "blurred" keeps only a gentle gradient.
                let noise =
                    (seed.wrapping_mul(2_654_435_761) ^ (x * 31 + y * 17) as u32).wrapping_mul(2_246_822_519) >> 28;
                let l = if blur {
                    100 + (x / 20) as u32 + noise / 4
                } else if ((x / 8) + (y / 8)) % 2 == 0 {
                    60 + noise
                } else {
                    190 + noise
                };
                v[(y * W + x) * 3..][..3].fill(l as u8);
            }
        }
        v
    }

    fn stats(p: &[u8]) -> FrameStats {
        FrameStats::measure(p, W, H, PixelFormat::Rgb24).unwrap()
    }

    fn run(
        h: &mut CameraHealth,
        t0: Instant,
        from_s: u64,
        to_s: u64,
        frame: impl Fn(u64) -> Vec<u8>,
    ) -> Vec<Condition> {
        let mut out = Vec::new();
        for s in from_s..to_s {
            if let Some(c) = h.observe(t0 + Duration::from_secs(s), stats(&frame(s))) {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn live_textured_camera_stays_ok() {
        let t0 = Instant::now();
        let mut h = CameraHealth::new(HealthConfig::for_fps(1.0), t0);
        assert!(run(&mut h, t0, 0, 200, |s| textured(s as u32, false)).is_empty());
    }

    #[test]
    fn frozen_covered_and_defocused_are_reported_after_the_hold_and_clear() {
        let t0 = Instant::now();
        let mut h = CameraHealth::new(HealthConfig::for_fps(1.0), t0);
        run(&mut h, t0, 0, 60, |s| textured(s as u32, false));
        assert_eq!(run(&mut h, t0, 60, 80, |_| textured(7, false)), [Condition::Frozen]);
        assert_eq!(run(&mut h, t0, 80, 85, |s| textured(s as u32, false)), [Condition::Ok]);
        assert_eq!(run(&mut h, t0, 85, 100, |_| vec![3u8; W * H * 3]), [Condition::Covered]);
        assert_eq!(run(&mut h, t0, 100, 102, |s| textured(s as u32, false)), [Condition::Ok]);
        let blurred = run(&mut h, t0, 102, 130, |s| textured(s as u32, true));
        assert_eq!(blurred, [Condition::Defocused]);
        assert_eq!(run(&mut h, t0, 130, 132, |s| textured(s as u32, false)), [Condition::Ok]);
    }

    #[test]
    fn no_frames_is_reported_by_poll_and_a_frame_clears_it() {
        let t0 = Instant::now();
        let mut h = CameraHealth::new(HealthConfig::for_fps(5.0), t0);
        assert_eq!(h.poll(t0 + Duration::from_secs(4)), None);
        assert_eq!(h.poll(t0 + Duration::from_secs(5)), Some(Condition::NoFrames));
        assert_eq!(h.poll(t0 + Duration::from_secs(6)), None);
        assert_eq!(h.observe(t0 + Duration::from_secs(7), stats(&textured(1, false))), Some(Condition::Ok));
    }

    #[test]
    fn yuyv_and_rgb_agree_on_grey_content() {
        let rgb = textured(3, false);
        let mut yuyv = vec![128u8; W * H * 2];
        for i in 0..W * H {
            yuyv[i * 2] = rgb[i * 3];
        }
        let a = FrameStats::measure(&rgb, W, H, PixelFormat::Rgb24).unwrap();
        let b = FrameStats::measure(&yuyv, W, H, PixelFormat::Yuyv).unwrap();
        assert!((a.mean_luma - b.mean_luma).abs() < 1.5 && (a.detail - b.detail).abs() < 1.5, "{a:?} {b:?}");
        assert!(FrameStats::measure(&rgb[..10], W, H, PixelFormat::Rgb24).is_none());
    }
}
