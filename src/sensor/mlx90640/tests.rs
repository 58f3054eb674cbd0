//! Tests for the MLX90640 port: golden comparison against the Adafruit/Melexis Python port on the
//! real capture (see melexis_golden.py), subpage merge rule, invalid input handling, no allocation.

use super::*;
use crate::fixtures;

const GOLDEN: &str = "thermal/mlx90640_golden_centi.bin";
const GOLDEN_VARIANTS: &str = "thermal/mlx90640_golden_variants_centi.bin";
const GOLDEN_FRAME_I16: usize = 2 + PIXELS;

struct Session {
    eeprom: Box<[u16; EEPROM_WORDS]>,
    eeprom_replies: usize,
    frames: Vec<[u16; FRAME_WORDS]>,
    rejected: usize,
}

/// Reassembles the device byte stream and splits it into `#name:payload!` packets (the last
/// EEPROM reply ends with `!` but no CRLF, so split on `!` and trim the CRLF in front).
fn load_session() -> Session {
    let text = fixtures::read_to_string(fixtures::THERMAL_SESSION);
    let mut stream = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value = serde_json::from_str(line).expect("session line is JSON");
        if rec["dir"] == "from_device" {
            stream.push_str(rec["data"].as_str().expect("data is a string"));
        }
    }
    let mut s = Session { eeprom: Box::new([0; EEPROM_WORDS]), eeprom_replies: 0, frames: Vec::new(), rejected: 0 };
    let mut first_eeprom: Option<&str> = None;
    for pkt in stream.split('!') {
        let Some((head, payload)) = pkt.trim_start_matches(['\r', '\n']).split_once(':') else {
            continue;
        };
        if head.starts_with("#frame") {
            let mut f = [0u16; FRAME_WORDS];
            match decode_hex_words(payload.as_bytes(), &mut f) {
                Ok(()) => s.frames.push(f),
                Err(_) => s.rejected += 1,
            }
        } else if head.starts_with("#EEPROM") {
            decode_hex_words(payload.as_bytes(), &mut s.eeprom[..]).expect("EEPROM reply decodes");
            assert_eq!(*first_eeprom.get_or_insert(payload), payload, "EEPROM replies differ");
            s.eeprom_replies += 1;
        }
    }
    s
}

fn golden(rel: &str) -> Vec<i16> {
    // Written by scripts/melexis_golden.py from the session.
    let bytes = fixtures::read(rel);
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// Compares `frames` against golden records; returns (max |dTo|, worst (frame, px), max |dVDD|,
/// max |dTa|) after asserting the tolerances (0.05 C per pixel and Ta, 0.01 V VDD).
fn compare(
    p: &Params,
    frames: &[[u16; FRAME_WORDS]],
    gold: &[i16],
    cond: &Conditions,
) -> (f64, (usize, usize), f64, f64) {
    assert_eq!(gold.len(), frames.len() * GOLDEN_FRAME_I16, "golden file size");
    let mut out = [0f32; PIXELS];
    let (mut max_to, mut max_vdd, mut max_ta, mut worst) = (0f64, 0f64, 0f64, (0, 0));
    for (k, (frame, gold)) in frames.iter().zip(gold.chunks_exact(GOLDEN_FRAME_I16)).enumerate() {
        let t = compute(p, frame, cond, &mut out);
        let dv = (f64::from(t.vdd) - f64::from(gold[0]) / 1000.0).abs();
        let dt = (f64::from(t.ta_c) - f64::from(gold[1]) / 100.0).abs();
        assert!(dv <= 0.01, "frame {k}: VDD {} vs {}", t.vdd, gold[0]);
        assert!(dt <= 0.05, "frame {k}: Ta {} vs {}", t.ta_c, gold[1]);
        (max_vdd, max_ta) = (max_vdd.max(dv), max_ta.max(dt));
        for (px, (&to, &gc)) in out.iter().zip(&gold[2..]).enumerate() {
            let d = (f64::from(to) - f64::from(gc) / 100.0).abs();
            assert!(d <= 0.05, "frame {k} pixel {px}: {to} vs golden {}", f64::from(gc) / 100.0);
            if d > max_to {
                (max_to, worst) = (d, (k, px));
            }
        }
    }
    (max_to, worst, max_vdd, max_ta)
}

#[test]
fn matches_melexis_reference_on_every_pixel_of_every_frame() {
    let s = load_session();
    assert_eq!((s.frames.len(), s.rejected, s.eeprom_replies), (188, 4, 15));
    let p = Params::from_eeprom(&s.eeprom).expect("captured EEPROM is valid");
    assert!(p.deviating_pixels().is_empty());
    let (max_to, worst, max_vdd, max_ta) = compare(&p, &s.frames, &golden(GOLDEN), &Conditions::default());
    eprintln!(
        "golden: {} frames x {PIXELS} px, max |dTo| {max_to:.5} C (frame {}, px {}), max |dVDD| {max_vdd:.5} V, \
         max |dTa| {max_ta:.5} C (golden is rounded to 0.01 C / 1 mV)",
        s.frames.len(),
        worst.0,
        worst.1
    );
}

/// Tgc = 1 variants (see melexis_golden.py): here the CP word, i.e. the subpage rule, and the
/// interleaved-mode CILC corrections change To by up to ~1.6 C, so this pins the merge rule.
#[test]
fn matches_melexis_reference_with_tgc_and_interleaved_mode() {
    let s = load_session();
    let mut ee = s.eeprom.clone();
    ee[60] = (ee[60] & 0xFF00) | 0x20;
    let p = Params::from_eeprom(&ee).expect("variant EEPROM is valid");
    assert_eq!(p.tgc, 1.0);
    let gold = golden(GOLDEN_VARIANTS);
    let (a, b) = gold.split_at(gold.len() / 2);
    for (control, g) in [(0x1901u16, a), (0x0901, b)] {
        let cond = Conditions { control_register: control, ..Conditions::default() };
        let (max_to, worst, _, _) = compare(&p, &s.frames[..8], g, &cond);
        eprintln!("variant tgc=1 control {control:#06x}: max |dTo| {max_to:.5} C at {worst:?}");
    }
}

#[test]
fn first_frame_is_a_plausible_room() {
    let s = load_session();
    let p = Params::from_eeprom(&s.eeprom).expect("valid EEPROM");
    let mut out = [0f32; PIXELS];
    let t = compute(&p, &s.frames[0], &Conditions::default(), &mut out);
    let min = out.iter().copied().fold(f32::INFINITY, f32::min);
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = out.iter().sum::<f32>() / PIXELS as f32;
    eprintln!("first frame: VDD {:.4} V, Ta {:.3} C, To min {min:.3} max {max:.3} mean {mean:.3}", t.vdd, t.ta_c);
    assert!((t.vdd - 3.278).abs() < 0.002 && (t.ta_c - 32.08).abs() < 0.02);
    assert!((25.7..25.9).contains(&min) && (29.3..29.5).contains(&max), "{min} {max}");
}

#[test]
fn each_pixel_uses_its_own_subpage_cp_word() {
    let s = load_session();
    let mut p = Params::from_eeprom(&s.eeprom).expect("valid EEPROM");
    p.tgc = 0.5; // this device's Tgc is 0, which would hide the CP word entirely
    let (mut a, mut b) = ([0f32; PIXELS], [0f32; PIXELS]);
    let mut frame = s.frames[0];
    for (control, interleaved) in [(0x1901u16, false), (0x0901, true)] {
        let cond = Conditions { control_register: control, ..Conditions::default() };
        compute(&p, &frame, &cond, &mut a);
        frame[W_CP_SP1] = frame[W_CP_SP1].wrapping_add(40); // perturb only subpage 1's CP
        compute(&p, &frame, &cond, &mut b);
        frame[W_CP_SP1] = frame[W_CP_SP1].wrapping_sub(40);
        for px in 0..PIXELS {
            let (r, c) = (px / COLS, px % COLS);
            let subpage1 = if interleaved { r % 2 == 1 } else { (r + c) % 2 == 1 };
            assert_eq!(a[px] != b[px], subpage1, "control {control:#06x} pixel {px} (row {r}, col {c})");
        }
    }
}

#[test]
fn compute_does_not_allocate() {
    let s = load_session();
    let p = Params::from_eeprom(&s.eeprom).expect("valid EEPROM");
    let mut out = [0f32; PIXELS];
    let cond = Conditions::default();
    let before = crate::alloc_count::allocations();
    for f in &s.frames {
        compute(&p, f, &cond, &mut out);
    }
    assert_eq!(crate::alloc_count::allocations(), before);
}

#[test]
fn obviously_invalid_eeproms_are_rejected() {
    let s = load_session();
    let bad = |f: &dyn Fn(&mut [u16; EEPROM_WORDS])| {
        let mut ee = s.eeprom.clone();
        f(&mut ee);
        Params::from_eeprom(&ee).err()
    };
    assert_eq!(bad(&|e| e.fill(0)), Some(CalibError::BadEeprom("all words are 0x0000")));
    assert_eq!(bad(&|e| e.fill(0xFFFF)), Some(CalibError::BadEeprom("all words are 0xFFFF")));
    assert_eq!(bad(&|e| e[48] = 0), Some(CalibError::BadEeprom("gain is zero")));
    assert_eq!(bad(&|e| e[51] &= 0x00FF), Some(CalibError::BadEeprom("kVdd is zero")));
    assert_eq!(bad(&|e| e[50] &= 0xFC00), Some(CalibError::BadEeprom("KtPTAT is zero")));
    assert_eq!(
        bad(&|e| {
            e[33] = 0;
            e[34..48].fill(0x8888);
        }),
        Some(CalibError::BadEeprom("pixel sensitivity (alpha) not positive"))
    );
    assert_eq!(
        bad(&|e| [100, 200, 300, 400, 500].iter().for_each(|&i| e[64 + i] = 0)),
        Some(CalibError::TooManyBrokenPixels)
    );
    assert_eq!(
        bad(&|e| [100, 200, 300, 400, 500].iter().for_each(|&i| e[64 + i] |= 1)),
        Some(CalibError::TooManyOutlierPixels)
    );
    assert_eq!(
        bad(&|e| [100, 200, 300]
            .iter()
            .chain(&[400, 500])
            .enumerate()
            .for_each(|(k, &i)| { e[64 + i] = if k < 3 { 0 } else { e[64 + i] | 1 } })),
        Some(CalibError::TooManyDeviatingPixels)
    );
    assert_eq!(
        bad(&|e| [100, 132].iter().for_each(|&i| e[64 + i] = 0)),
        Some(CalibError::AdjacentDeviatingPixels(100, 132))
    );
}

#[test]
fn a_broken_pixel_is_repaired_from_its_neighbours() {
    let s = load_session();
    let mut ee = s.eeprom.clone();
    ee[64 + 400] = 0;
    let p = Params::from_eeprom(&ee).expect("one broken pixel is allowed");
    assert_eq!(p.deviating_pixels(), &[400]);
    let mut out = [0f32; PIXELS];
    compute(&p, &s.frames[0], &Conditions::default(), &mut out);
    let expect = (out[400 - 32] + out[400 + 32] + out[399] + out[401]) / 4.0;
    assert_eq!(out[400], expect);
}

#[test]
fn unconvertible_frames_give_nan_not_panic() {
    let s = load_session();
    let p = Params::from_eeprom(&s.eeprom).expect("valid EEPROM");
    let mut out = [0f32; PIXELS];
    let mut f = s.frames[0];
    f[W_GAIN] = 0;
    compute(&p, &f, &Conditions::default(), &mut out);
    assert!(out.iter().all(|t| t.is_nan()));
    let cond = Conditions { emissivity: 0.0, ..Conditions::default() };
    compute(&p, &s.frames[0], &cond, &mut out);
    assert!(out.iter().all(|t| t.is_nan()));
    for fill in [0u16, 0xFFFF, 0x8000, 0x7FFF] {
        compute(&p, &[fill; FRAME_WORDS], &Conditions::default(), &mut out); // must not panic
    }
}

/// Random and mutated EEPROMs/frames: extraction and compute must never panic (debug builds also
/// check integer overflow), and a successfully extracted EEPROM must have usable scales.
#[test]
fn random_inputs_never_panic() {
    let s = load_session();
    let mut x = crate::prng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
    let mut rnd = move || x.next();
    let mut out = [0f32; PIXELS];
    for i in 0..300 {
        let mut ee = s.eeprom.clone();
        if i % 2 == 0 {
            ee.iter_mut().for_each(|w| *w = rnd() as u16);
            ee[64..].iter_mut().for_each(|w| *w &= !1); // avoid the trivial outlier rejection
        } else {
            for _ in 0..8 {
                ee[(rnd() % 64) as usize] = rnd() as u16;
            }
        }
        if let Ok(p) = Params::from_eeprom(&ee) {
            assert!(p.alpha.iter().all(|&a| a > 0));
            let mut frame = s.frames[i % s.frames.len()];
            frame.iter_mut().step_by(7).for_each(|w| *w = rnd() as u16);
            compute(&p, &frame, &Conditions::default(), &mut out);
        }
    }
}

#[test]
fn hex_decoding_rejects_truncated_and_garbage_payloads() {
    let mut w = [0u16; 2];
    assert_eq!(decode_hex_words(b"00B0999f", &mut w), Ok(()));
    assert_eq!(w, [0x00B0, 0x999F]);
    assert!(decode_hex_words(b"00B0999", &mut w).is_err());
    assert!(decode_hex_words(b"00B0999G", &mut w).is_err());
    assert!(decode_hex_words("00B099\u{e9}".as_bytes(), &mut w).is_err());
}

/// The whole pipeline on the real capture: healthy sensor, a plausible room, no hot cluster.
#[test]
fn real_capture_through_analysis_is_healthy() {
    use crate::sensor::analysis::{Health, Scratch, analyse};
    let s = load_session();
    let p = Params::from_eeprom(&s.eeprom).expect("valid EEPROM");
    let (mut out, mut scratch, mut health) = ([0f32; PIXELS], Scratch::new(), Health::default());
    for f in &s.frames {
        compute(&p, f, &Conditions::default(), &mut out);
        assert_eq!(health.check(&f[..PIXELS], &out), None);
        let st = analyse(&out, 40.0, &mut scratch);
        assert!(st.min_c > 20.0 && st.max_c < 35.0 && st.cluster_total == 0, "{st:?}");
    }
}
