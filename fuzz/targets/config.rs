//! The config loader (`config::load_str`): TOML parsing, the every-problem collector with its repair rounds,
//! validation, and the FILE:LINE:COL location of every problem. A rejected config always says why, at a line
//! and column inside the file.

fn main() {
    let base = std::env::temp_dir();
    afl::fuzz!(|data: &[u8]| {
        // The loader reads files as UTF-8 (anything else is refused before parsing).
        let Ok(text) = std::str::from_utf8(data) else { return };
        if let Err(problems) = ember_edge::config::load_str("fuzz.toml", text, &base) {
            assert!(!problems.is_empty(), "rejected without a problem");
            let lines = text.matches('\n').count() + 1;
            for p in &problems {
                assert!(!p.message.is_empty());
                assert!(p.line >= 1 && p.line <= lines && p.col >= 1, "{p} outside the file");
            }
        }
    });
}
