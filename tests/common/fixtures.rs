//! Where the tests' fixtures are, for the library's unit tests (`crate::fixtures`) and the integration tests
//! (`common::fixtures`) alike: one file, so there is one way to find them.
//!
//! The real captures that plain `cargo test` needs are in the repo (`tests/fixtures`, with their licences), so
//! the suite passes on a fresh clone. The team's larger sets (the development split, the training set) are read
//! only by the acceptance tests (`tests/acceptance.rs`, run by `scripts/acceptance.sh`), from the folder named
//! by `EMBER_SHARED`, else from `shared` beside the checkout. A missing set fails the test that asked for it:
//! a skipped acceptance check would let a regression through unseen.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The one variable that says where the shared sets are.
pub const SHARED_ENV: &str = "EMBER_SHARED";

/// The real MLX90640 device session (EmberEye, MIT: see tests/fixtures/thermal/ATTRIBUTION.md).
pub const THERMAL_SESSION: &str = "thermal/mlx90640_tcp_session.jsonl";

/// The eight CC BY 4.0 frames (see tests/fixtures/frames/ATTRIBUTION.md).
pub const FRAMES: &str = "frames";

/// A file or folder under the repo's `tests/fixtures`.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The bytes of a repo fixture. It ships with the checkout, so a missing one is a broken tree, not a skip.
pub fn read(rel: &str) -> Vec<u8> {
    let path = repo(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} not readable: {e}", path.display()))
}

/// A repo fixture as text.
pub fn read_to_string(rel: &str) -> String {
    let path = repo(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {} not readable: {e}", path.display()))
}

/// The shared sets' folder: `$EMBER_SHARED`, else the first `shared` folder holding `fixtures` beside the
/// checkout or beside one of its parents.
pub fn shared_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(SHARED_ENV) {
        let dir = PathBuf::from(dir);
        assert!(dir.join("fixtures").is_dir(), "{SHARED_ENV}={} has no fixtures folder", dir.display());
        return dir;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().map(|d| d.join("shared")).find(|d| d.join("fixtures").is_dir()).unwrap_or_else(|| {
        panic!(
            "this acceptance test needs the shared fixture sets: set {SHARED_ENV} to their folder \
             (no `shared/fixtures` beside {} or its parents)",
            manifest.display()
        )
    })
}

/// A file or folder of the shared sets, e.g. `fixtures/frames`; it must exist.
pub fn shared(rel: &str) -> PathBuf {
    let path = shared_root().join(rel);
    assert!(path.exists(), "{} is missing from the shared sets", path.display());
    path
}
