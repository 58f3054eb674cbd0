//! `ember-edge thermal decode`: prints what `sensor::session` decodes from a recorded device session, as
//! JSON lines (one per complete frame, then a summary with the rejections by reason) or as a short table.

use std::io::Write;
use std::path::Path;

use ember_edge::sensor::proto::PIXELS;
use ember_edge::sensor::session::{self, Mode};

/// `--json`: one JSON line per frame on stdout, then the summary line.
pub fn json_lines(file: &Path, mode: Mode, emissivity: f32) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let round2 = |v: f32| (v as f64 * 100.0).round() / 100.0;
    let summary = session::decode(file, mode, emissivity, |k, temps, ta| {
        let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
        for &t in temps.iter() {
            min = min.min(t);
            max = max.max(t);
            sum += t as f64;
        }
        let pixels: Vec<f64> = temps.iter().map(|&t| round2(t)).collect();
        let line = serde_json::json!({
            "frame": k,
            "min_c": round2(min),
            "max_c": round2(max),
            "mean_c": ((sum / PIXELS as f64) * 10_000.0).round() / 10_000.0,
            "ta_c": ta.map(round2),
            "pixels_c": pixels,
        });
        writeln!(out, "{line}")?;
        Ok(())
    })?;
    writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    out.flush()?;
    Ok(())
}

/// The default output: min/max/mean and the die temperature per frame, then a summary line.
pub fn table(file: &Path, mode: Mode, emissivity: f32) -> anyhow::Result<()> {
    println!("{:>6} {:>8} {:>8} {:>8} {:>8}", "frame", "min_c", "max_c", "mean_c", "ta_c");
    let summary = session::decode(file, mode, emissivity, |k, t, ta| {
        let min = t.iter().copied().fold(f32::INFINITY, f32::min);
        let max = t.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64;
        let ta = ta.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!("{k:>6} {min:>8.2} {max:>8.2} {mean:>8.2} {ta:>8}");
        Ok(())
    })?;
    println!(
        "{} frames, {} sensor packets, {} EEPROM replies, rejected {:?}",
        summary.frames, summary.sensors, summary.eeproms, summary.rejected
    );
    Ok(())
}
