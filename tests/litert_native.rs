//! The CNN natively on this machine with the runtime library required (`EMBER_TFLITE_LIB`, the
//! `ai-edge-litert` wheel's libLiteRtRuntimeCApi.so): every test of tests/tflite.rs (outputs against
//! TensorFlow's, bad files, the grid fallback, the CNN on candidate regions, no allocation per frame), plus which
//! C API serves it and `ember-edge model check`. `test = false`: scripts/litert-native-test.sh (a `.ci/run`
//! step) installs the wheel into a venv under target/ and runs it.
#![cfg(feature = "tflite")]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "tflite.rs"]
mod tflite;

fn required_library() -> PathBuf {
    let lib = std::env::var_os("EMBER_TFLITE_LIB")
        .map(PathBuf::from)
        .expect("EMBER_TFLITE_LIB must point at libLiteRtRuntimeCApi.so (scripts/litert-native-test.sh sets it)");
    assert!(lib.is_file(), "{} is not a file", lib.display());
    lib
}

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)
}

/// On x86-64 the wheel's library has no `TfLite*` symbols, so the LiteRT CompiledModel API must serve it; where
/// both exist (aarch64) the classic API does.
#[test]
fn the_library_loads_through_the_api_it_exports() {
    let lib = required_library();
    let m =
        ember_edge::detect::tflite::Model::load(&lib, &model("fire-int8.tflite"), 1).unwrap_or_else(|e| panic!("{e}"));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(m.version(), "LiteRT CompiledModel API");
    }
    assert_eq!(m.input().dims, [1, 64, 64, 3]);
    assert_eq!(m.output().dims, [1, 2]);
}

#[test]
fn model_check_runs_natively() {
    let lib = required_library();
    for name in ["fire-f32.tflite", "fire-int8.tflite"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
            .args(["model", "check", "--library"])
            .arg(&lib)
            .arg("--model")
            .arg(model(name))
            .output()
            .expect("run ember-edge");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        for line in ["input: ", "output: ", "gradient: fire ", "orange_disc: fire ", "gray128: fire "] {
            assert!(text.contains(line), "{name}: no `{line}` in\n{text}");
        }
    }
}
