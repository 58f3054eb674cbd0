//! Temporal confirmation for the grid detector: a candidate counts only when it persists over several
//! recent frames AND moves like fire or smoke (its cells flicker, its area grows, or its brightness flickers).
//! A warm lamp, a sunset or an orange object is persistent but static, so it stays unconfirmed.
//!
//! Pure: takes each frame's [`GridResult`] and `now`; all state is a fixed ring of the last [`RING`] frames.

use std::time::Duration;
use tokio::time::Instant;

use super::grid::{CellBits, GridResult};

/// Frames remembered.
pub const RING: usize = 12;

#[derive(Debug, Clone, Copy)]
pub struct TemporalConfig {
    /// Per-frame score at or above this makes the frame a hit.
    pub threshold: f32,
    /// Hits needed among the remembered frames younger than `max_age`.
    pub min_hits: usize,
    /// Older frames are ignored (a camera that stalls does not confirm on stale frames).
    pub max_age: Duration,
    /// Mean changed-cell fraction between consecutive hit frames that counts as flicker.
    pub flicker: f32,
    /// Area ratio (newest / smallest hit) that counts as growth.
    pub growth: f32,
    /// Coefficient of variation of the candidate's mean brightness that counts as flicker.
    pub luma_cv: f32,
}

impl Default for TemporalConfig {
    fn default() -> Self {
        TemporalConfig {
            threshold: super::grid_weights::THRESHOLD,
            min_hits: 3,
            max_age: Duration::from_secs(10),
            flicker: 0.12,
            growth: 1.3,
            luma_cv: 0.04,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Option<Instant>,
    score: f32,
    area: u32,
    luma: f32,
    bits: CellBits,
}

const EMPTY: Entry = Entry { at: None, score: 0.0, area: 0, luma: 0.0, bits: [0; super::grid::CELL_WORDS] };

/// The confirmed view of the newest frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Verdict {
    /// 0..1. At or above the threshold only when confirmed; otherwise the frame score damped to at most half
    /// the threshold, so fusion does not count an unconfirmed frame.
    pub score: f32,
    pub confirmed: bool,
    pub hits: usize,
    /// Mean changed-cell fraction between consecutive hit frames.
    pub flicker: f32,
    /// Newest hit area over the smallest hit area.
    pub growth: f32,
    pub luma_cv: f32,
}

/// Per-camera temporal state.
pub struct Temporal {
    cfg: TemporalConfig,
    ring: [Entry; RING],
    head: usize,
}

impl Default for Temporal {
    fn default() -> Self {
        Temporal::new(TemporalConfig::default())
    }
}

impl Temporal {
    pub fn new(cfg: TemporalConfig) -> Self {
        Temporal { cfg, ring: [EMPTY; RING], head: 0 }
    }

    /// Forgets every remembered frame: confirmation starts over (after frames whose colour evidence was
    /// withheld, e.g. a camera's night mode).
    pub fn reset(&mut self) {
        self.ring = [EMPTY; RING];
        self.head = 0;
    }

    pub fn update(&mut self, r: &GridResult, now: Instant) -> Verdict {
        self.ring[self.head] = Entry {
            at: Some(now),
            score: r.score,
            area: r.fire_cells + r.smoke_cells,
            luma: r.fire_luma,
            bits: r.candidates,
        };
        self.head = (self.head + 1) % RING;

        let (mut hits, mut sum_score) = (0usize, 0f32);
        let (mut min_area, mut newest_area) = (u32::MAX, 0u32);
        let (mut flick_sum, mut flick_n) = (0f32, 0u32);
        let (mut l_sum, mut l_sq) = (0f32, 0f32);
        let mut prev: Option<&Entry> = None;
        // Oldest to newest.
        for k in 0..RING {
            let e = &self.ring[(self.head + k) % RING];
            let fresh = e.at.is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.max_age);
            if !fresh || e.score < self.cfg.threshold {
                continue;
            }
            hits += 1;
            sum_score += e.score;
            min_area = min_area.min(e.area);
            newest_area = e.area;
            l_sum += e.luma;
            l_sq += e.luma * e.luma;
            if let Some(p) = prev {
                let (mut x, mut u) = (0u32, 0u32);
                for (a, b) in p.bits.iter().zip(e.bits.iter()) {
                    x += (a ^ b).count_ones();
                    u += (a | b).count_ones();
                }
                if u > 0 {
                    flick_sum += x as f32 / u as f32;
                    flick_n += 1;
                }
            }
            prev = Some(e);
        }
        let flicker = if flick_n > 0 { flick_sum / flick_n as f32 } else { 0.0 };
        let growth = if hits > 0 && min_area > 0 { newest_area as f32 / min_area as f32 } else { 1.0 };
        let luma_cv = if hits > 1 && l_sum > 0.0 {
            let m = l_sum / hits as f32;
            ((l_sq / hits as f32 - m * m).max(0.0)).sqrt() / m
        } else {
            0.0
        };
        let moving = flicker >= self.cfg.flicker || growth >= self.cfg.growth || luma_cv >= self.cfg.luma_cv;
        let confirmed = hits >= self.cfg.min_hits && moving;
        let score = if confirmed {
            (sum_score / hits as f32).max(self.cfg.threshold)
        } else {
            r.score.min(self.cfg.threshold) * 0.5
        };
        Verdict { score, confirmed, hits, flicker, growth, luma_cv }
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::{CW, GridDetector};
    use super::*;

    fn result(score: f32, cells: &[(usize, usize)], luma: f32) -> GridResult {
        let mut r = GridResult { score, fire_cells: cells.len() as u32, fire_luma: luma, ..GridResult::default() };
        for &(x, y) in cells {
            let k = y * CW + x;
            r.candidates[k / 64] |= 1 << (k % 64);
        }
        r
    }

    fn square(x0: usize, y0: usize, w: usize, h: usize) -> Vec<(usize, usize)> {
        (y0..y0 + h).flat_map(|y| (x0..x0 + w).map(move |x| (x, y))).collect()
    }

    #[test]
    fn flickering_growing_blob_confirms() {
        let mut t = Temporal::new(TemporalConfig { threshold: 0.5, ..TemporalConfig::default() });
        let t0 = Instant::now();
        let mut last = Verdict::default();
        for i in 0..6usize {
            // Grows by a row each frame, and the top edge jumps around like flame tongues.
            let mut cells = square(30, 40 - i, 10, 5 + i);
            cells.extend((0..10).filter(|x| (x + i) % 3 == 0).map(|x| (30 + x, 39 - i)));
            let v = t.update(
                &result(0.8, &cells, 180.0 + 20.0 * (i % 2) as f32),
                t0 + Duration::from_millis(200) * i as u32,
            );
            if i < 2 {
                assert!(!v.confirmed, "needs {} hits first", 3);
            }
            last = v;
        }
        assert!(last.confirmed, "{last:?}");
        assert!(last.score >= 0.5);
        assert!(last.growth > 1.3 && last.flicker > 0.12, "{last:?}");
    }

    #[test]
    fn static_warm_lamp_does_not_confirm() {
        let mut t = Temporal::new(TemporalConfig { threshold: 0.5, ..TemporalConfig::default() });
        let t0 = Instant::now();
        let lamp = square(10, 5, 6, 6);
        for i in 0..30u32 {
            let v = t.update(&result(0.9, &lamp, 230.0), t0 + Duration::from_millis(200) * i);
            assert!(!v.confirmed, "frame {i}: {v:?}");
            assert!(v.score < 0.5, "unconfirmed frames stay below the threshold: {v:?}");
        }
    }

    #[test]
    fn stale_hits_do_not_confirm() {
        let mut t = Temporal::new(TemporalConfig { threshold: 0.5, ..TemporalConfig::default() });
        let t0 = Instant::now();
        for i in 0..3usize {
            let cells = square(10, 10, 3 + 2 * i, 3 + 2 * i);
            // 20 s apart: each older hit has expired when the next arrives.
            let v = t.update(&result(0.9, &cells, 200.0), t0 + Duration::from_secs(20) * i as u32);
            assert!(!v.confirmed);
        }
    }

    #[test]
    fn detector_frames_drive_confirmation_without_allocating() {
        // Synthetic RGB frames: a flame-coloured blob with a white core that grows and changes shape.
        let (w, h) = (320usize, 240usize);
        let mut det = GridDetector::new(&[]);
        let mut t = Temporal::new(TemporalConfig { threshold: 0.0, ..TemporalConfig::default() });
        let frames: Vec<Vec<u8>> = (0..6).map(|i| flame_frame(w, h, i)).collect();
        let t0 = Instant::now();
        let before = crate::alloc_count::allocations();
        let mut v = Verdict::default();
        for (i, f) in frames.iter().enumerate() {
            let r = det.score_rgb(f, w, h);
            assert!(r.fire_cells > 0, "frame {i} has a fire region");
            v = t.update(&r, t0 + Duration::from_millis(250) * i as u32);
        }
        assert_eq!(crate::alloc_count::allocations(), before);
        assert!(v.confirmed && v.growth > 1.3, "{v:?}");
    }

    pub(crate) fn flame_frame(w: usize, h: usize, i: usize) -> Vec<u8> {
        let mut f = vec![40u8; w * h * 3];
        let (cx, base) = (w / 2, h * 3 / 4);
        let height = h / 8 + i * h / 24;
        for y in base.saturating_sub(height)..base {
            let t = (base - y) as f32 / height as f32;
            let half = ((1.0 - t) * (w as f32 / 10.0) * (1.0 + 0.3 * ((y + 7 * i) as f32 * 0.3).sin())) as usize;
            for x in cx.saturating_sub(half)..(cx + half).min(w) {
                let core = (x as i32 - cx as i32).unsigned_abs() < (half as u32) / 3 && t < 0.6;
                let px = if core { [255, 250, 220] } else { [255, 140 + (t * 60.0) as u8, 30] };
                f[(y * w + x) * 3..][..3].copy_from_slice(&px);
            }
        }
        f
    }
}
