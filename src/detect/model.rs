//! The `model` detector kind: the optional TFLite CNN with the EmberEye heuristic always behind it. If the
//! library or the model cannot be loaded (or the binary was built without the `tflite` feature), one WARN is
//! logged, the failure is counted, and the camera keeps working on the heuristic alone. If the model is
//! required by the config, the same message is an ERROR (the operator must act) and the heuristic still runs.

use std::path::{Path, PathBuf};

use super::embereye::EmberEyeHsv;
use crate::frame::{Frame, PixelFormat};
use crate::telemetry::Counter;

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
    /// 1 per failed load (the camera then runs on the heuristic only).
    pub unavailable: Counter,
    /// Frames the model could not score (the heuristic's score was used for them).
    pub errors: Counter,
}

pub struct ModelDetector {
    // Boxed: keeps `Detector`'s variants of similar size.
    #[cfg(feature = "tflite")]
    model: Option<Box<super::tflite::Model>>,
    heuristic: EmberEyeHsv,
    counters: ModelCounters,
}

impl ModelDetector {
    /// Loads the model once; never fails: on any problem it logs, counts and runs heuristic-only.
    pub fn load(spec: &ModelSpec, counters: ModelCounters) -> Self {
        let mut me = ModelDetector {
            #[cfg(feature = "tflite")]
            model: None,
            heuristic: EmberEyeHsv::new(),
            counters,
        };
        match me.try_load(spec) {
            Ok(version) => log::info!("model {} loaded (TFLite {version})", spec.path.display()),
            Err(e) => {
                me.counters.unavailable.inc();
                if spec.required {
                    log::error!("{e}; the model is required but the camera runs on the heuristic only");
                } else {
                    log::warn!("{e}; heuristic-only mode");
                }
            }
        }
        me
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

    /// True when the CNN is loaded (false = heuristic only).
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

    /// (score, fire pixels, smoke pixels). With the model, the score is max(fire, smoke) of the CNN on the
    /// whole frame and the pixel counts come from the heuristic; without it, everything is the heuristic's.
    /// None for a frame neither can read (YUYV without the model).
    pub fn score(&mut self, frame: &Frame) -> Option<(f32, u32, u32)> {
        let m = &frame.meta;
        let heur =
            (m.format == PixelFormat::Rgb24).then(|| self.heuristic.score_rgb(frame.pixels(), m.width, m.height));
        #[cfg(feature = "tflite")]
        if let Some(model) = self.model.as_mut() {
            let r = match m.format {
                PixelFormat::Rgb24 => model.classify_rgb(frame.pixels(), m.width, m.height, None),
                PixelFormat::Yuyv => model.classify_yuyv(frame.pixels(), m.width, m.height, None),
            };
            match r {
                Ok((fire, smoke)) => {
                    let (f, s) = heur.map(|h| (h.fire_pixels, h.smoke_pixels)).unwrap_or((0, 0));
                    return Some((fire.max(smoke), f, s));
                }
                Err(e) => {
                    self.counters.errors.inc();
                    log::debug!("model could not score a frame: {e}");
                }
            }
        }
        heur.map(|h| (h.score, h.fire_pixels, h.smoke_pixels))
    }
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
    use crate::frame::FramePool;
    use crate::telemetry::Registry;

    fn counters(reg: &Registry) -> ModelCounters {
        ModelCounters {
            unavailable: reg.counter("ember_model_unavailable_total", "t", &[]),
            errors: reg.counter("ember_model_errors_total", "t", &[]),
        }
    }

    #[test]
    fn missing_library_falls_back_to_the_heuristic_and_counts_it() {
        let reg = Registry::new();
        let c = counters(&reg);
        let spec = ModelSpec {
            library: PathBuf::from("/nonexistent/libLiteRtRuntimeCApi.so"),
            path: PathBuf::from("/nonexistent/fire-int8.tflite"),
            threads: 1,
            required: false,
        };
        let mut d = ModelDetector::load(&spec, c.clone());
        assert!(!d.has_model());
        assert_eq!(c.unavailable.get(), 1);

        // An orange frame scores exactly as the heuristic scores it.
        let pool = FramePool::new(1, 8 * 8 * 3);
        let mut f = pool.take().unwrap();
        f.meta.width = 8;
        f.meta.height = 8;
        for p in f.buffer_mut().chunks_mut(3) {
            p.copy_from_slice(&[250, 120, 20]);
        }
        let want = EmberEyeHsv::new().score_rgb(f.pixels(), 8, 8);
        assert_eq!(d.score(&f), Some((want.score, want.fire_pixels, want.smoke_pixels)));
        // Without the model a YUYV frame cannot be scored.
        f.meta.format = PixelFormat::Yuyv;
        assert_eq!(d.score(&f), None);
        assert_eq!(c.errors.get(), 0);
    }
}
