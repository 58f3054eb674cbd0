//! Day and night: an IR/night camera delivers grey pictures, where colour rules mean nothing (a bright IR
//! reflection is as "warm" as a flame, and a grey picture is "smoke-grey" everywhere). Each frame's chroma is
//! measured on a fixed sample grid; a frame is grey when its mean chroma is near zero AND (almost) no sample
//! is coloured. The bar is set low on purpose: a camera wrongly in night mode would withhold real evidence,
//! so a desaturated day scene (grey asphalt seen from above, mean chroma about 2) stays day, while the grey
//! pictures of an IR camera in black-and-white mode (chroma 0 up to JPEG rounding) are grey. The camera's mode follows with hysteresis, so a scene on the edge
//! does not flap: [`ENTER_NIGHT`] grey frames in a row make it night, [`LEAVE_NIGHT`] colour frames in a row
//! make it day again. Vision gives no fire evidence on a grey frame or while the camera is in night mode.
//!
//! Pure and allocation-free: `is_grey` reads the frame in place; `DayNight` takes one bool per frame.

use crate::frame::PixelFormat;
use crate::pixels::yuv_to_rgb;

/// Samples across and down the frame (fewer on frames smaller than this).
pub const GRID_W: usize = 40;
pub const GRID_H: usize = 30;
/// A sample's chroma is max(R,G,B) − min(R,G,B); it is coloured above this. A candle flame, a lit orange wall
/// or a red car is far above.
pub const COLOUR_CHROMA: u8 = 24;
/// A grey frame's mean chroma is below this. Measured: grey pictures through a JPEG round trip (one channel
/// or three equal ones) 0.0; the least colourful real day clip (a car park from above) 1.7 and more; the
/// least colourful development frame 1.4.
pub const GREY_MEAN_CHROMA: f32 = 1.0;
/// A frame is grey when at most this many per mille of its samples are coloured (a tiny coloured overlay
/// such as an OSD clock leaves an IR picture grey; a small flame in a dark colour scene does not).
pub const GREY_PER_MILLE: usize = 3;
/// Grey frames in a row that switch a camera to night.
pub const ENTER_NIGHT: u32 = 5;
/// Colour frames in a row that switch it back to day.
pub const LEAVE_NIGHT: u32 = 5;

/// A camera's picture mode; the value is `ember_camera_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Day = 0,
    Night = 1,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Day => "day",
            Mode::Night => "night",
        }
    }
}

/// Chroma of the sample grid: how many samples were read and how many of them are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chroma {
    pub samples: usize,
    pub coloured: usize,
    /// Sum of the samples' chroma.
    pub sum: u64,
}

impl Chroma {
    /// Measures a frame of `format` in place; None when `px` is shorter than the frame it claims to be.
    pub fn measure(px: &[u8], w: usize, h: usize, format: PixelFormat) -> Option<Self> {
        if w < 2 || h == 0 || px.len() < format.frame_len(w, h) {
            return None;
        }
        let (sx, sy) = ((w / GRID_W).max(1), (h / GRID_H).max(1));
        let (mut samples, mut coloured, mut sum) = (0usize, 0usize, 0u64);
        // Offset by half a step so the grid sits inside the picture, not on its top-left border.
        let mut y = sy / 2;
        while y < h {
            let mut x = sx / 2;
            while x < w {
                let [r, g, b] = match format {
                    PixelFormat::Rgb24 => {
                        let p = &px[(y * w + x) * 3..][..3];
                        [p[0], p[1], p[2]]
                    }
                    PixelFormat::Yuyv => {
                        // The pair's shared chroma with this pixel's luma.
                        let pair = &px[(y * w + (x & !1)) * 2..][..4];
                        let luma = if x & 1 == 0 { pair[0] } else { pair[2] };
                        yuv_to_rgb(luma, pair[1], pair[3])
                    }
                };
                let chroma = r.max(g).max(b) - r.min(g).min(b);
                samples += 1;
                coloured += usize::from(chroma > COLOUR_CHROMA);
                sum += u64::from(chroma);
                x += sx;
            }
            y += sy;
        }
        Some(Chroma { samples, coloured, sum })
    }

    pub fn mean(&self) -> f32 {
        if self.samples == 0 { 0.0 } else { self.sum as f32 / self.samples as f32 }
    }

    pub fn is_grey(&self) -> bool {
        self.mean() < GREY_MEAN_CHROMA && self.coloured * 1000 <= self.samples * GREY_PER_MILLE
    }
}

/// Whether a frame is grey (see [`Chroma`]); a frame too short to measure is not.
pub fn is_grey(px: &[u8], w: usize, h: usize, format: PixelFormat) -> bool {
    Chroma::measure(px, w, h, format).is_some_and(|c| c.is_grey())
}

/// One camera's mode with hysteresis.
#[derive(Debug, Clone, Copy, Default)]
pub struct DayNight {
    mode: Mode,
    /// Frames in a row that disagree with the current mode.
    run: u32,
}

impl DayNight {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes one frame's verdict; returns the new mode when it changed.
    pub fn update(&mut self, grey: bool) -> Option<Mode> {
        let (disagrees, needed, other) = match self.mode {
            Mode::Day => (grey, ENTER_NIGHT, Mode::Night),
            Mode::Night => (!grey, LEAVE_NIGHT, Mode::Day),
        };
        if !disagrees {
            self.run = 0;
            return None;
        }
        self.run += 1;
        if self.run < needed {
            return None;
        }
        self.run = 0;
        self.mode = other;
        Some(other)
    }

    /// Whether colour evidence must be withheld for a frame that was (or was not) grey: always on a grey frame,
    /// and on every frame while the camera is in night mode.
    pub fn withholds(&self, grey: bool) -> bool {
        grey || self.mode == Mode::Night
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::rgb_to_yuyv;

    fn frame(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                px.extend_from_slice(&f(x, y));
            }
        }
        px
    }

    #[test]
    fn grey_and_colour_are_told_apart_in_rgb_and_yuyv_alike() {
        let (w, h) = (320, 240);
        let grey = frame(w, h, |x, y| [((x + y) % 256) as u8; 3]);
        // A grey picture with a little chroma noise (one unit on a sample in four) stays grey.
        let noisy = frame(w, h, |x, y| {
            let v = ((x * 3 + y) % 200) as u8 + 20;
            [v, v + u8::from((x / 8 + y / 8) % 4 == 0), v]
        });
        // A desaturated day scene (chroma about 3 everywhere, no sample coloured) is not grey.
        let pale = frame(w, h, |x, y| {
            let v = ((x + 2 * y) % 150) as u8 + 40;
            [v + 3, v + 1, v]
        });
        // A grey picture with a small flame (about 2 % of it) is colour.
        let flame = frame(w, h, |x, y| {
            if (150..190).contains(&x) && (100..140).contains(&y) { [250, 140, 30] } else { [((x + y) % 256) as u8; 3] }
        });
        let mut yuyv = Vec::new();
        for (name, px, want) in
            [("grey", &grey, true), ("noisy", &noisy, true), ("pale", &pale, false), ("flame", &flame, false)]
        {
            let c = Chroma::measure(px, w, h, PixelFormat::Rgb24);
            assert_eq!(is_grey(px, w, h, PixelFormat::Rgb24), want, "{name}: {c:?}");
            rgb_to_yuyv(px, w, w, h, &mut yuyv);
            let c = Chroma::measure(&yuyv, w, h, PixelFormat::Yuyv);
            assert_eq!(is_grey(&yuyv, w, h, PixelFormat::Yuyv), want, "{name} in YUYV: {c:?}");
        }
        let c = Chroma::measure(&grey, w, h, PixelFormat::Rgb24).unwrap();
        assert_eq!(c.samples, GRID_W * GRID_H);
        assert!(!is_grey(&grey[..100], w, h, PixelFormat::Rgb24), "a short buffer is not measured");
    }

    #[test]
    fn the_mode_switches_only_after_a_run_of_frames() {
        let mut dn = DayNight::default();
        assert_eq!(dn.mode(), Mode::Day);
        // Grey frames interrupted by a colour one never make night.
        for _ in 0..3 {
            for _ in 0..ENTER_NIGHT - 1 {
                assert_eq!(dn.update(true), None);
            }
            assert_eq!(dn.update(false), None);
        }
        assert_eq!(dn.mode(), Mode::Day);
        for _ in 0..ENTER_NIGHT - 1 {
            assert_eq!(dn.update(true), None);
        }
        assert_eq!(dn.update(true), Some(Mode::Night));
        // A grey frame is withheld in any mode; in night mode a colour frame is too, until day returns.
        assert!(dn.withholds(true) && dn.withholds(false));
        for _ in 0..LEAVE_NIGHT - 1 {
            assert_eq!(dn.update(false), None);
        }
        assert_eq!(dn.update(true), None, "one grey frame restarts the count");
        for _ in 0..LEAVE_NIGHT - 1 {
            assert_eq!(dn.update(false), None);
        }
        assert_eq!(dn.update(false), Some(Mode::Day));
        assert!(dn.withholds(true) && !dn.withholds(false));
    }
}
