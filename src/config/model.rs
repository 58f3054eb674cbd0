//! `[model]`: the optional TFLite CNN used by cameras with `detector = "model"`.

use serde::Deserialize;

use super::{PathSeg, key};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The TFLite C-API shared library (relative to this file or absolute). On aarch64 boards:
    /// `libLiteRtRuntimeCApi.so` from the `ai-edge-litert` wheel. Default
    /// "/usr/lib/ember-edge/libLiteRtRuntimeCApi.so".
    #[serde(default = "default_library")]
    pub library: String,
    /// The `.tflite` model: input [1, H, W, 3] RGB (float32, uint8 or int8), output [1, 2] (fire, smoke).
    /// Default "/usr/share/ember-edge/fire-int8.tflite".
    #[serde(default = "default_path")]
    pub path: String,
    /// Interpreter threads. Default 1 (the camera's detect task is one of several on a 4-core board).
    #[serde(default = "default_threads")]
    pub threads: u32,
    /// If the library or model cannot be loaded: false = WARN and run the grid detector (default); true = ERROR
    /// (the operator must act), and the grid detector still runs.
    #[serde(default)]
    pub required: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { library: default_library(), path: default_path(), threads: default_threads(), required: false }
    }
}

fn default_library() -> String {
    "/usr/lib/ember-edge/libLiteRtRuntimeCApi.so".into()
}
fn default_path() -> String {
    "/usr/share/ember-edge/fire-int8.tflite".into()
}
fn default_threads() -> u32 {
    1
}

/// Missing files are not config errors (the detector falls back at run time); nonsense values are.
pub(super) fn validate(m: &ModelSection, push: &mut impl FnMut(Vec<PathSeg>, String)) {
    if !(1..=16).contains(&m.threads) {
        push(vec![key("model"), key("threads")], format!("threads must be 1..=16, got {}", m.threads));
    }
    for (name, v) in [("library", &m.library), ("path", &m.path)] {
        if v.is_empty() {
            push(vec![key("model"), key(name)], format!("{name} must not be empty"));
        }
    }
}
