//! The optional detection overlay, drawn into an RGB24 copy of the frame before it is encoded: the detector's
//! boxes (fixed-capacity list, so any detector can fill it without allocating), its score as a bar and digits,
//! and a thermal inset (32×24, one cell per sensor pixel, hot cells marked) for each device in the camera's
//! zones. The inset is a separate picture, not laid over the scene: the arrays are not registered to cameras.

use crate::sensor::proto::{GRID_H, GRID_W, PIXELS};

pub const MAX_BOXES: usize = 16;

/// One detected region, in frame fractions (0..1), with its score and a class (0 fire, 1 smoke, other).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    pub class: u8,
}

impl DetBox {
    /// A detector's candidate region, labelled with the frame's single-frame score (regions carry no own score).
    pub fn from_region(r: &crate::detect::grid::Region, score: f32) -> Self {
        let class = match r.kind {
            crate::detect::grid::RegionKind::Fire => 0,
            crate::detect::grid::RegionKind::Smoke => 1,
        };
        DetBox { x0: r.x0, y0: r.y0, x1: r.x1, y1: r.y1, score, class }
    }
}

/// The latest detection result of a camera, as the overlay draws it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Boxes {
    pub score: f32,
    /// The frame the result belongs to (`FrameMeta::seq`).
    pub frame: u64,
    boxes: [DetBox; MAX_BOXES],
    count: usize,
}

impl Boxes {
    /// A detector's published result: its regions become boxes labelled with the single-frame score.
    pub fn from_detections(d: &crate::detect::Detections) -> Self {
        let mut boxes = [DetBox::default(); MAX_BOXES];
        let mut n = 0;
        for (b, r) in boxes.iter_mut().zip(d.regions()) {
            *b = DetBox::from_region(r, d.frame_score);
            n += 1;
        }
        let mut out = Boxes::default();
        out.set(d.frame, d.score, &boxes[..n]);
        out
    }

    /// Sets the score and replaces the boxes (beyond `MAX_BOXES` are ignored).
    pub fn set(&mut self, frame: u64, score: f32, boxes: &[DetBox]) {
        self.frame = frame;
        self.score = score;
        self.count = boxes.len().min(MAX_BOXES);
        self.boxes[..self.count].copy_from_slice(&boxes[..self.count]);
    }

    pub fn boxes(&self) -> &[DetBox] {
        &self.boxes[..self.count]
    }
}

/// An RGB24 image being drawn on.
pub struct Canvas<'a> {
    pub px: &'a mut [u8],
    pub w: usize,
    pub h: usize,
}

const RED: [u8; 3] = [255, 40, 20];
const YELLOW: [u8; 3] = [255, 220, 0];
const GREY: [u8; 3] = [200, 200, 200];
const BLACK: [u8; 3] = [0, 0, 0];

impl Canvas<'_> {
    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            let i = (y * self.w + x) * 3;
            if let Some(p) = self.px.get_mut(i..i + 3) {
                p.copy_from_slice(&c);
            }
        }
    }

    pub fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1.min(self.h) {
            for x in x0..x1.min(self.w) {
                self.put(x, y, c);
            }
        }
    }

    /// A rectangle outline `t` pixels thick.
    pub fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, t: usize, c: [u8; 3]) {
        self.fill(x0, y0, x1, y0 + t, c);
        self.fill(x0, y1.saturating_sub(t), x1, y1, c);
        self.fill(x0, y0, x0 + t, y1, c);
        self.fill(x1.saturating_sub(t), y0, x1, y1, c);
    }

    /// Digits and '.' in a 3×5 font scaled by `s`; returns the x after the text.
    pub fn text(&mut self, mut x: usize, y: usize, s: usize, text: &str, c: [u8; 3]) -> usize {
        for ch in text.bytes() {
            let glyph = match ch {
                b'0'..=b'9' => DIGITS[(ch - b'0') as usize],
                b'.' => [0, 0, 0, 0, 2],
                _ => [0; 5],
            };
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.fill(x + col * s, y + row * s, x + (col + 1) * s, y + (row + 1) * s, c);
                    }
                }
            }
            x += 4 * s;
        }
        x
    }
}

// Rows of 3 bits, left bit = 4.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Draws boxes and the score (bar plus digits) of `det`.
pub fn draw_detections(cv: &mut Canvas<'_>, det: &Boxes) {
    let (w, h) = (cv.w as f32, cv.h as f32);
    let t = (cv.w / 320).max(1) * 2;
    for b in det.boxes() {
        let px = |v: f32, max: f32| (v.clamp(0.0, 1.0) * max) as usize;
        let c = if b.class == 1 { GREY } else { RED };
        cv.rect(px(b.x0, w), px(b.y0, h), px(b.x1, w), px(b.y1, h), t, c);
        let label = fmt2(b.score);
        cv.text(px(b.x0, w) + t + 1, px(b.y0, h) + t + 1, 2, label.as_str(), c);
    }
    // Score bar along the top edge, digits below it.
    let bar = (det.score.clamp(0.0, 1.0) * w) as usize;
    cv.fill(0, 0, cv.w, 6, BLACK);
    cv.fill(0, 0, bar, 6, if det.score >= 0.35 { RED } else { YELLOW });
    cv.fill(0, 6, 4 * 3 * 4 + 4, 6 + 5 * 3 + 4, BLACK);
    cv.text(2, 8, 3, fmt2(det.score).as_str(), YELLOW);
}

/// Draws a device's thermal grid (one cell per sensor pixel, `cell` px square) at (x, y); cells at or above
/// `hot_c` are outlined in red. `span` is the (min, max) used for the colour scale.
pub fn draw_thermal(cv: &mut Canvas<'_>, x: usize, y: usize, cell: usize, grid: &[f32; PIXELS], hot_c: f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &t in grid.iter() {
        lo = lo.min(t);
        hi = hi.max(t);
    }
    let span = (hi - lo).max(10.0);
    for r in 0..GRID_H {
        for c in 0..GRID_W {
            let t = grid[r * GRID_W + c];
            let col = heat((t - lo) / span);
            let (cx, cy) = (x + c * cell, y + r * cell);
            cv.fill(cx, cy, cx + cell, cy + cell, col);
            if t >= hot_c {
                cv.rect(cx, cy, cx + cell, cy + cell, 1, RED);
            }
        }
    }
}

/// A black → red → yellow → white colour ramp for v in 0..1.
pub fn heat(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0) * 3.0;
    let ch = |x: f32| (x.clamp(0.0, 1.0) * 255.0) as u8;
    [ch(v), ch(v - 1.0), ch(v - 2.0)]
}

/// "0.42" without allocating.
pub struct Fixed2([u8; 4]);

impl Fixed2 {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

pub fn fmt2(v: f32) -> Fixed2 {
    let n = (v.clamp(0.0, 0.99) * 100.0).round() as u8;
    Fixed2([b'0', b'.', b'0' + n / 10, b'0' + n % 10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_score_are_drawn_where_the_detector_put_them() {
        let (w, h) = (100, 80);
        let mut px = vec![0u8; w * h * 3];
        let mut det = Boxes::default();
        det.set(1, 0.5, &[DetBox { x0: 0.5, y0: 0.5, x1: 0.9, y1: 0.9, score: 0.8, class: 0 }]);
        draw_detections(&mut Canvas { px: &mut px, w, h }, &det);
        let at = |x: usize, y: usize| [px[(y * w + x) * 3], px[(y * w + x) * 3 + 1], px[(y * w + x) * 3 + 2]];
        assert_eq!(at(50, 60), RED, "left edge of the box");
        assert_eq!(at(70, 60), BLACK, "inside the box stays untouched");
        assert_eq!(at(49, 2), RED, "score bar: half the width at 0.5");
        assert_eq!(at(51, 2), BLACK);
        assert_eq!(fmt2(0.427).as_str(), "0.43");
        assert_eq!(fmt2(7.0).as_str(), "0.99");
        assert_eq!(det.boxes().len(), 1);
        det.set(2, 0.0, &[DetBox::default(); 40]);
        assert_eq!(det.boxes().len(), MAX_BOXES);
    }

    #[test]
    fn thermal_inset_marks_hot_cells() {
        let (w, h) = (GRID_W * 2, GRID_H * 2);
        let mut px = vec![0u8; w * h * 3];
        let mut grid = [20.0f32; PIXELS];
        grid[0] = 80.0;
        draw_thermal(&mut Canvas { px: &mut px, w, h }, 0, 0, 2, &grid, 50.0);
        assert_eq!(&px[0..3], &RED, "hot cell outlined");
        assert_eq!(&px[(w * 2 + 2) * 3..(w * 2 + 2) * 3 + 3], &heat(0.0), "cold cell in the ramp's coldest colour");
        assert_eq!(heat(1.0), [255, 255, 255]);
    }

    fn rgb_frame(w: usize, h: usize, fill: impl Fn(usize, usize) -> [u8; 3]) -> crate::frame::Frame {
        use crate::frame::{FrameMeta, FramePool, PixelFormat};
        let pool = FramePool::new(1, w * h * 3);
        let Some(mut f) = pool.take() else { panic!("a fresh pool has a buffer") };
        for (i, px) in f.buffer_mut().chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&fill(i % w, i / w));
        }
        f.meta = FrameMeta { width: w, height: h, format: PixelFormat::Rgb24, ..FrameMeta::default() };
        f
    }

    #[test]
    fn default_detector_passes_its_regions_to_the_overlay_and_embereye_has_none() {
        use crate::config::DetectorKind;
        use crate::detect::Detector;
        let (w, h) = (640, 480);
        // A flame-coloured block at relative (0.5..0.75, 0.5..0.8) on a dark scene.
        let frame = rgb_frame(w, h, |x, y| {
            if (w / 2..w * 3 / 4).contains(&x) && (h / 2..h * 4 / 5).contains(&y) {
                [250, 120 + ((x + y) % 40) as u8, 20]
            } else {
                [30, 30, 30]
            }
        });
        let now = tokio::time::Instant::now();
        let s = Detector::new(DetectorKind::Grid, &[]).score(&frame, now).unwrap_or_else(|| panic!("rgb"));
        assert!(!s.regions().is_empty(), "no region: {s:?}");
        // The regions reach the overlay through what detection publishes, largest first.
        let shown = Boxes::from_detections(&s.detections(7));
        let b = shown.boxes().first().copied().unwrap_or_else(|| panic!("no box: {s:?}"));
        assert_eq!(b.class, 0, "fire");
        assert!((b.x0 - 0.5).abs() < 0.03 && (b.x1 - 0.75).abs() < 0.03, "{b:?}");
        assert!((b.y0 - 0.5).abs() < 0.03 && (b.y1 - 0.8).abs() < 0.03, "{b:?}");
        assert_eq!(b.score, s.frame_score);
        assert_eq!((shown.frame, shown.score, shown.boxes().len()), (7, s.score, s.regions().len()));

        let e = Detector::new(DetectorKind::Embereye, &[]).score(&frame, now).unwrap_or_else(|| panic!("rgb"));
        assert!(e.regions().is_empty() && e.score > 0.0, "{e:?}");
        assert!(Boxes::from_detections(&e.detections(8)).boxes().is_empty());
    }
}
