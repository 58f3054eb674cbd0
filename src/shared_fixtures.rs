//! Test-only access to `../shared` (the team's fixtures beside the checkout). Tests that read it fail with
//! this message instead of skipping, because CI always has it and a silent skip would hide a regression.

use std::path::{Path, PathBuf};

/// The `shared` folder: the first ancestor of the crate that has `shared/fixtures` beside it.
pub fn shared() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        let candidate = dir.join("shared");
        if candidate.join("fixtures").is_dir() {
            return candidate;
        }
    }
    panic!(
        "this test needs ../shared/fixtures beside the checkout (looked above {}); CI provides it",
        manifest.display()
    )
}
