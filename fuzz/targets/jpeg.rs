//! The camera JPEG path (`camera::jpeg` and its DCT-domain scaler `camera::scaled`): the missing-DHT repair, the
//! EOI check, the size checks and the panic guard around zune-jpeg, through the three calls the cameras make.
//! Uses `fuzz_nohook!`: a panic that the JPEG path catches by design (zune-jpeg's internal unwraps, reported
//! as a corrupt frame) must not count as a crash; a panic that escapes it still aborts and is one.

use ember_edge::camera::jpeg::{JpegDecoder, analysis_len};

/// The default camera limits (configs/default.toml: max_width/max_height).
const MAX_W: usize = 640;
const MAX_H: usize = 480;

fn main() {
    let mut full = vec![0u8; MAX_W * MAX_H * 3];
    let mut analysis = vec![0u8; analysis_len(MAX_W, MAX_H, 8)];
    let mut crops = vec![0u8; analysis_len(MAX_W, MAX_H, 2)];
    afl::fuzz_nohook!(|data: &[u8]| {
        let mut d = JpegDecoder::new();
        if let Ok((w, h)) = d.decode_rgb(data, &mut full, MAX_W, MAX_H) {
            assert!(w <= MAX_W && h <= MAX_H && w * h > 0);
        }
        let _ = d.dimensions(data);
        if let Ok(r) = d.decode_analysis(data, &mut analysis, MAX_W, MAX_H) {
            assert!(r.width * r.height * 3 <= analysis.len(), "{r:?}");
            assert!(r.source_width <= MAX_W && r.source_height <= MAX_H);
        }
        let mut d = JpegDecoder::with_max_denom(2);
        if let Ok(r) = d.decode_analysis(data, &mut crops, MAX_W, MAX_H) {
            assert!(r.width * r.height * 3 <= crops.len() && r.denom <= 2, "{r:?}");
        }
    });
}
