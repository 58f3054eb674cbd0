//! The `model` detector kind: the grid detector proposes candidate regions, and the optional TFLite CNN
//! scores crops around the largest of them (a frame without candidates costs no inference). If the library or
//! the model cannot be loaded (or the binary was built without the `tflite` feature), one WARN is logged, the
//! failure is counted, and the camera keeps working on the grid detector alone. If the model is required by the
//! config, the same message is an ERROR (the operator must act) and the grid detector still runs.

use std::path::{Path, PathBuf};

use super::grid::{GridDetector, GridResult, RelRect};
use super::model_input;
use crate::frame::PixelFormat;
use crate::telemetry::{Counter, Registry};

/// How many candidate regions the CNN scores per frame, largest first: bounds the inference cost per frame.
pub const MAX_CROPS: usize = 3;
/// Each side of a region's box is widened by this factor around its centre: the middle of the 1.1–2.2 margins
/// the training crops used (scripts/train-model.py), so the model sees the flame with some surroundings.
const CROP_MARGIN: f32 = 1.6;
/// Smallest crop side in pixels (the training crops' minimum box side was 16 px before the margin).
const MIN_CROP: f32 = 32.0;

/// Where the model comes from; resolved paths.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub library: PathBuf,
    pub path: PathBuf,
    pub threads: u32,
    pub required: bool,
}

/// What `ModelDetector::score` needs to count.
#[derive(Clone)]
pub struct ModelCounters {
    /// 1 per failed load (the camera then runs on the grid detector only).
    pub unavailable: Counter,
    /// Frames the model could not score (the grid detector's score was used for them).
    pub errors: Counter,
    /// CNN inferences run (one per candidate crop).
    pub inferences: Counter,
}

impl ModelCounters {
    /// The three counters, registered with `labels` (the camera).
    pub fn register(registry: &Registry, labels: &[(&str, &str)]) -> Self {
        ModelCounters {
            unavailable: registry.counter(
                "ember_model_unavailable_total",
                "Model loads that failed (the camera runs on the grid detector only).",
                labels,
            ),
            errors: registry.counter(
                "ember_model_errors_total",
                "Frames the model could not score (the grid detector scored them).",
                labels,
            ),
            inferences: registry.counter(
                "ember_model_inferences_total",
                "CNN runs, one per candidate region scored.",
                labels,
            ),
        }
    }
}

pub struct ModelDetector {
    // Boxed: keeps `Detector`'s variants of similar size.
    #[cfg(feature = "tflite")]
    model: Option<Box<super::tflite::Model>>,
    grid: GridDetector,
    counters: ModelCounters,
}

impl ModelDetector {
    /// Loads the model once; never fails: on any problem it logs, counts and runs grid-only.
    /// `masks`: the camera's ignore rectangles, applied by the grid detector (so no crop comes from them).
    pub fn load(spec: &ModelSpec, masks: &[RelRect], counters: ModelCounters) -> Self {
        let mut me = ModelDetector {
            #[cfg(feature = "tflite")]
            model: None,
            grid: GridDetector::new(masks),
            counters,
        };
        match me.try_load(spec) {
            Ok(version) => log::info!("model {} loaded (TFLite {version})", spec.path.display()),
            Err(e) => {
                me.counters.unavailable.inc();
                if spec.required {
                    log::error!("{e}; the model is required but the camera runs on the grid detector only");
                } else {
                    log::warn!("{e}; grid-detector-only mode");
                }
            }
        }
        me
    }

    /// With a model the caller has already loaded (and so could report its error): `eval frames`, which must
    /// fail rather than fall back.
    #[cfg(feature = "tflite")]
    pub fn with_model(model: super::tflite::Model, masks: &[RelRect], counters: ModelCounters) -> Self {
        ModelDetector { model: Some(Box::new(model)), grid: GridDetector::new(masks), counters }
    }

    #[cfg(feature = "tflite")]
    fn try_load(&mut self, spec: &ModelSpec) -> Result<String, String> {
        let m = super::tflite::Model::load(&spec.library, &spec.path, spec.threads)
            .map_err(|e| format!("TFLite unavailable ({e})"))?;
        let v = m.version().to_owned();
        self.model = Some(Box::new(m));
        Ok(v)
    }

    #[cfg(not(feature = "tflite"))]
    fn try_load(&mut self, _spec: &ModelSpec) -> Result<String, String> {
        Err("TFLite unavailable (this binary was built without the `tflite` feature)".into())
    }

    /// True when the CNN is loaded (false = grid detector only).
    pub fn has_model(&self) -> bool {
        #[cfg(feature = "tflite")]
        {
            self.model.is_some()
        }
        #[cfg(not(feature = "tflite"))]
        {
            false
        }
    }

    /// Scores one frame. The grid detector runs first; with the model loaded, the result's `score` is replaced
    /// by the CNN's max(fire, smoke) over crops around the largest `MAX_CROPS` candidate regions (0 when there is
    /// no candidate). Regions, pixel counts and the candidate bitmap stay the grid detector's, so temporal
    /// confirmation and the live overlay work the same for both kinds.
    pub fn score(&mut self, px: &[u8], width: usize, height: usize, format: PixelFormat) -> GridResult {
        let r = match format {
            PixelFormat::Rgb24 => self.grid.score_rgb(px, width, height),
            PixelFormat::Yuyv => self.grid.score_yuyv(px, width, height),
        };
        #[cfg(feature = "tflite")]
        if let Some(score) = self.cnn_score(px, width, height, format, &r) {
            return GridResult { score, ..r };
        }
        r
    }

    /// The CNN's max(fire, smoke) over the candidate crops; None without a model or when an inference failed
    /// (counted; the grid's own score then stands for the frame).
    #[cfg(feature = "tflite")]
    fn cnn_score(
        &mut self,
        px: &[u8],
        width: usize,
        height: usize,
        format: PixelFormat,
        r: &GridResult,
    ) -> Option<f32> {
        let model = self.model.as_mut()?;
        let mut best = 0f32;
        for region in r.regions().iter().take(MAX_CROPS) {
            let crop = crop_box(region, width, height);
            self.counters.inferences.inc();
            let out = match format {
                PixelFormat::Rgb24 => model.classify_rgb(px, width, height, Some(crop)),
                PixelFormat::Yuyv => model.classify_yuyv(px, width, height, Some(crop)),
            };
            match out {
                Ok((fire, smoke)) => best = best.max(fire.max(smoke)),
                Err(e) => {
                    self.counters.errors.inc();
                    log::debug!("model could not score a frame: {e}");
                    return None;
                }
            }
        }
        Some(best)
    }
}

/// The pixel box the CNN sees for a candidate region: the region widened by `CROP_MARGIN` (at least `MIN_CROP`
/// pixels a side), clamped to the frame; x bounds even (YUYV pairs). Never empty for a frame of at least 2×1.
pub fn crop_box(r: &super::grid::Region, width: usize, height: usize) -> model_input::Region {
    let (fw, fh) = (width as f32, height as f32);
    let (cx, cy) = ((r.x0 + r.x1) * 0.5 * fw, (r.y0 + r.y1) * 0.5 * fh);
    let half_w = ((r.x1 - r.x0) * fw * CROP_MARGIN).max(MIN_CROP) * 0.5;
    let half_h = ((r.y1 - r.y0) * fh * CROP_MARGIN).max(MIN_CROP) * 0.5;
    let even_w = width & !1;
    let at = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
    let mut x0 = at((cx - half_w).floor(), even_w) & !1;
    let x1 = ((at((cx + half_w).ceil(), even_w) + 1) & !1).min(even_w);
    if x1 <= x0 {
        x0 = x1.saturating_sub(2);
    }
    let mut y0 = at((cy - half_h).floor(), height);
    let y1 = at((cy + half_h).ceil(), height);
    if y1 <= y0 {
        y0 = y1.saturating_sub(1);
    }
    model_input::Region { x0, y0, x1, y1 }
}

/// Resolves the config's model paths against the config's folder.
pub fn spec_from_config(c: &crate::config::ModelSection, base_dir: &Path) -> ModelSpec {
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
    };
    ModelSpec { library: resolve(&c.library), path: resolve(&c.path), threads: c.threads, required: c.required }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::grid::{Region, RegionKind};

    fn counters(reg: &Registry) -> ModelCounters {
        ModelCounters::register(reg, &[])
    }

    /// 160×120 dark frame with a bright orange blob: the grid detector proposes a fire region there.
    fn blob_frame() -> Vec<u8> {
        let (w, h) = (160, 120);
        let mut px = vec![20u8; w * h * 3];
        for y in 40..80 {
            for x in 60..100 {
                let v = 200 + ((x * 7 + y * 13) % 50) as u8;
                px[(y * w + x) * 3..][..3].copy_from_slice(&[255, v / 2 + 40, 10]);
            }
        }
        px
    }

    #[test]
    fn missing_library_falls_back_to_the_grid_detector_and_counts_it() {
        let reg = Registry::new();
        let c = counters(&reg);
        let spec = ModelSpec {
            library: PathBuf::from("/nonexistent/libLiteRtRuntimeCApi.so"),
            path: PathBuf::from("/nonexistent/fire-int8.tflite"),
            threads: 1,
            required: false,
        };
        let mut d = ModelDetector::load(&spec, &[], c.clone());
        assert!(!d.has_model());
        assert_eq!(c.unavailable.get(), 1);

        let px = blob_frame();
        let got = d.score(&px, 160, 120, PixelFormat::Rgb24);
        let want = GridDetector::new(&[]).score_rgb(&px, 160, 120);
        assert!(want.n_regions > 0, "the test frame must give a candidate region");
        assert_eq!((got.score, got.fire_pixels, got.n_regions), (want.score, want.fire_pixels, want.n_regions));
        // YUYV works too (the grid reads it directly), and no inference ran.
        let mut yuyv = Vec::new();
        crate::pixels::rgb_to_yuyv(&px, 160, 160, 120, &mut yuyv);
        let got = d.score(&yuyv, 160, 120, PixelFormat::Yuyv);
        assert_eq!(got.score, GridDetector::new(&[]).score_yuyv(&yuyv, 160, 120).score);
        assert_eq!((c.errors.get(), c.inferences.get()), (0, 0));
    }

    #[test]
    fn crops_widen_the_region_and_stay_inside_the_frame() {
        let r = |x0, y0, x1, y1| Region { kind: RegionKind::Fire, x0, y0, x1, y1, cells: 1 };
        // A centred 64×48 region of 640×480 becomes ~102×77 around the same centre, even x bounds.
        let c = crop_box(&r(0.45, 0.45, 0.55, 0.55), 640, 480);
        assert_eq!((c.x0 % 2, c.x1 % 2), (0, 0));
        assert!((100..=106).contains(&(c.x1 - c.x0)) && (75..=80).contains(&(c.y1 - c.y0)), "{c:?}");
        assert!((c.x0 + c.x1) / 2 == 320 && (c.y0 + c.y1) / 2 == 240, "{c:?}");
        // A tiny region gets the minimum size; one at a corner is clamped, never empty or outside.
        let c = crop_box(&r(0.5, 0.5, 0.5, 0.5), 640, 480);
        assert!(c.x1 - c.x0 >= 32 && c.y1 - c.y0 >= 32, "{c:?}");
        for (w, h) in [(640, 480), (641, 479), (2, 1), (33, 17)] {
            for reg in [r(0.0, 0.0, 0.0, 0.0), r(1.0, 1.0, 1.0, 1.0), r(0.0, 0.0, 1.0, 1.0), r(0.9, 0.0, 1.0, 0.05)] {
                let c = crop_box(&reg, w, h);
                assert!(c.x0 < c.x1 && c.x1 <= w && c.y0 < c.y1 && c.y1 <= h, "{reg:?} in {w}×{h}: {c:?}");
                assert_eq!((c.x0 % 2, c.x1 % 2), (0, 0));
            }
        }
        // A whole-frame region is the whole (even-width) frame.
        assert_eq!(crop_box(&r(0.0, 0.0, 1.0, 1.0), 641, 479), model_input::Region { x0: 0, y0: 0, x1: 640, y1: 479 });
    }
}
