//! Decisions shared by live capture sources (V4L2, and any other device that delivers frames at its own
//! pace): which delivered frames to keep at the camera's current adaptive rate, and copying a YUYV image out
//! of a driver buffer into a pooled frame. Pure and clock-free: callers pass `now`. How long to wait before
//! reopening a failed device is `crate::retry`'s.

use std::time::{Duration, Instant};

/// Keeps frames at `rate` out of a camera that delivers them faster. A frame is kept when at least one
/// period has passed since the last kept one, minus half a camera interval of slack: a 30 fps camera paced to
/// 15 fps then keeps every other frame even though delivery times jitter.
#[derive(Debug, Default)]
pub struct Pacer {
    last_kept: Option<Instant>,
}

impl Pacer {
    pub fn new() -> Self {
        Pacer { last_kept: None }
    }

    /// True if the frame delivered at `now` is kept. `period` is 1 / the wanted rate, `camera_interval`
    /// 1 / the rate the driver granted (zero if unknown).
    pub fn admit(&mut self, now: Instant, period: Duration, camera_interval: Duration) -> bool {
        let keep = match self.last_kept {
            None => true,
            Some(last) => now.saturating_duration_since(last) + camera_interval / 2 >= period,
        };
        if keep {
            self.last_kept = Some(now);
        }
        keep
    }

    /// Forget the last kept frame (a new stream starts).
    pub fn reset(&mut self) {
        self.last_kept = None;
    }
}

/// Why a driver buffer could not become a frame.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("short frame: {got} bytes, a {width}x{height} YUYV image with stride {stride} needs {need}")]
    Short { got: usize, need: usize, width: usize, height: usize, stride: usize },
    #[error("{width}x{height} YUYV needs {need} bytes, the pooled buffer holds {have}")]
    TooLarge { width: usize, height: usize, need: usize, have: usize },
    #[error("stride {stride} is smaller than a {width}-pixel YUYV row")]
    BadStride { stride: usize, width: usize },
}

/// Copies a `width` x `height` YUYV image whose rows are `stride` bytes apart (drivers may pad rows) into
/// `dst`, packed (2 bytes per pixel). A buffer shorter than the image is refused, never half-copied: the
/// detector would score stale bytes.
pub fn copy_yuyv(src: &[u8], width: usize, height: usize, stride: usize, dst: &mut [u8]) -> Result<usize, CopyError> {
    let row = width * 2;
    if stride < row {
        return Err(CopyError::BadStride { stride, width });
    }
    let need_dst = row * height;
    if dst.len() < need_dst {
        return Err(CopyError::TooLarge { width, height, need: need_dst, have: dst.len() });
    }
    // The last row need not carry its padding.
    let need_src = if height == 0 { 0 } else { stride * (height - 1) + row };
    if src.len() < need_src {
        return Err(CopyError::Short { got: src.len(), need: need_src, width, height, stride });
    }
    if stride == row {
        dst[..need_dst].copy_from_slice(&src[..need_dst]);
    } else {
        for (y, out) in dst[..need_dst].chunks_exact_mut(row).enumerate() {
            out.copy_from_slice(&src[y * stride..y * stride + row]);
        }
    }
    Ok(need_dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_keeps_every_other_frame_of_a_jittery_30fps_camera_at_15fps() {
        let t0 = Instant::now();
        let cam = Duration::from_micros(33_333);
        let period = Duration::from_secs_f64(1.0 / 15.0);
        let mut p = Pacer::new();
        let mut kept = 0;
        for i in 0..300u64 {
            // ±3 ms of delivery jitter, alternating.
            let jitter = if i % 2 == 0 { 3_000 } else { 0 };
            let now = t0 + Duration::from_micros(i * 33_333 + jitter);
            if p.admit(now, period, cam) {
                kept += 1;
            }
        }
        assert_eq!(kept, 150);
    }

    #[test]
    fn pacer_keeps_everything_when_the_rate_exceeds_the_camera_and_few_at_a_low_rate() {
        let t0 = Instant::now();
        let cam = Duration::from_millis(100);
        let mut p = Pacer::new();
        assert!((0..20).all(|i| p.admit(t0 + cam * i, Duration::from_millis(40), cam)));
        let mut p = Pacer::new();
        let kept = (0..100).filter(|&i| p.admit(t0 + cam * i, Duration::from_secs(1), cam)).count();
        assert_eq!(kept, 10);
        p.reset();
        assert!(p.admit(t0 + cam * 100, Duration::from_secs(1), cam), "a new stream keeps its first frame");
    }

    #[test]
    fn yuyv_copy_packs_padded_rows_and_refuses_short_or_oversized_frames() {
        // 2x2 pixels, rows padded to 6 bytes: row bytes 0..4 are pixels, 4..6 padding (0xEE).
        let src = [1, 2, 3, 4, 0xEE, 0xEE, 5, 6, 7, 8];
        let mut dst = [0u8; 8];
        assert_eq!(copy_yuyv(&src, 2, 2, 6, &mut dst), Ok(8));
        assert_eq!(dst, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(copy_yuyv(&src[..9], 2, 2, 6, &mut dst), Err(CopyError::Short { need: 10, .. })));
        assert!(matches!(copy_yuyv(&src, 2, 2, 6, &mut [0u8; 7]), Err(CopyError::TooLarge { .. })));
        assert!(matches!(copy_yuyv(&src, 2, 2, 3, &mut dst), Err(CopyError::BadStride { .. })));
        let packed: Vec<u8> = (0..16).collect();
        let mut out = [0u8; 16];
        assert_eq!(copy_yuyv(&packed, 4, 2, 8, &mut out), Ok(16));
        assert_eq!(&out[..], &packed[..]);
    }
}
