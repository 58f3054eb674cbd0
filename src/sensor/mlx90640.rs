//! MLX90640 calibration and object-temperature calculation (port of Melexis `MLX90640_API.c`).
//!
//! This module owns turning the sensor's 832-word EEPROM into calibration [`Params`]
//! (`MLX90640_ExtractParameters`: VDD, PTAT, gain, Tgc, resolution, KsTa, KsTo ranges/CT, CP,
//! alpha, offset, kta, kv, CILC, deviating pixels) and turning one 834-word frame into 768
//! object temperatures ([`compute`] = `GetVdd` + `GetTa` + `CalculateTo`). It does no I/O and
//! never allocates per frame; all calibration lives in fixed-size arrays.
//!
//! # Frame layout and what differs from the Melexis driver
//! Frame words 0..768 are pixel RAM (0x0400..), 768..832 the aux RAM (0x0700..: Ta_Vbe 768,
//! CP subpage 0 at 776, gain 778, Ta_PTAT 800, CP subpage 1 at 808, VDD 810), then 832 = control
//! register and 833 = subpage in the Melexis driver. The EmberEye firmware sends `0001 0001`
//! there, which is not a usable control register, so both words are **ignored**: the control
//! register comes from [`Conditions::control_register`] (default 0x1901 = 18-bit, chess mode).
//!
//! **Every pixel is computed, each with its own subpage's values.** Melexis `CalculateTo` only
//! writes pixels whose `pattern` equals `frameData[833]`, where `pattern` is
//! `chessPattern = ilPattern ^ (pixel % 2) = (row + col) % 2` when the control register's
//! reading-pattern bit (0x1000) is set, else `ilPattern = row % 2`; and it subtracts
//! `tgc * irDataCP[subPage]` with `subPage = frameData[833]`. Nothing else in it depends on the
//! subpage (VDD, Ta, gain and both CP words come from the same aux RAM). The firmware evidently
//! delivers complete frames (protocol doc §2.5), so we do exactly what running `CalculateTo`
//! twice — with word 833 = 0 and then 1 — into the same output would do: pixel `i` uses
//! `irDataCP[pattern(i)]` (CP word 776 for pattern 0, 808 for pattern 1). The golden tests check
//! this against the Adafruit Python port run in exactly that two-pass way. Note that the captured
//! device has Tgc = 0, so on its real calibration the CP words (hence the subpage choice) do not
//! change To at all; golden variants with Tgc forced to 1 (chess and interleaved control) are
//! what pin the rule down (a wrong CP choice there is off by up to ~1.6 °C).
//!
//! Deviating (broken/outlier) pixels: Melexis computes them like any other and leaves repair to
//! `MLX90640_BadPixelsCorrection`; the Adafruit port writes −273.15. We replace each with the
//! mean of its finite 4-neighbours (never themselves deviating: adjacent deviating pixels are a
//! calibration error, as in Melexis), NaN if none — a sentinel temperature would look like a
//! cold spot to the fire logic.
//!
//! Arithmetic is f64 (like the Python port; the C driver uses f32), results are stored as f32.
//! Frame words come from the network: nothing here panics on them. A frame that cannot be
//! converted (gain word 0, PTAT denominator 0, bad emissivity) yields an all-NaN grid, which
//! `analysis::Health` reports as a dead sensor.

use thiserror::Error;

pub const EEPROM_WORDS: usize = 832;
pub const FRAME_WORDS: usize = 834;
pub const PIXELS: usize = 768;
pub const ROWS: usize = 24;
pub const COLS: usize = 32;

const SCALEALPHA: f64 = 0.000001;
const MAX_DEVIATING: usize = 4;
// Aux RAM word indices inside the 834-word frame.
const W_TA_VBE: usize = 768;
const W_CP_SP0: usize = 776;
const W_GAIN: usize = 778;
const W_TA_PTAT: usize = 800;
const W_CP_SP1: usize = 808;
const W_VDD: usize = 810;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CalibError {
    #[error("invalid MLX90640 EEPROM: {0}")]
    BadEeprom(&'static str),
    #[error("more than 4 broken pixels")]
    TooManyBrokenPixels,
    #[error("more than 4 outlier pixels")]
    TooManyOutlierPixels,
    #[error("more than 4 broken and outlier pixels together")]
    TooManyDeviatingPixels,
    #[error("adjacent deviating pixels {0} and {1}")]
    AdjacentDeviatingPixels(u16, u16),
    #[error("bad hex payload: {0}")]
    BadPayload(&'static str),
}

/// Calibration extracted from the EEPROM (field names follow Melexis `paramsMLX90640`).
#[derive(Debug, Clone)]
pub struct Params {
    pub k_vdd: i32,
    pub vdd25: i32,
    pub kv_ptat: f64,
    pub kt_ptat: f64,
    pub v_ptat25: f64,
    pub alpha_ptat: f64,
    pub gain_ee: i32,
    pub tgc: f64,
    pub resolution_ee: u8,
    pub ks_ta: f64,
    pub ks_to: [f64; 5],
    pub ct: [f64; 5],
    pub cp_alpha: [f64; 2],
    pub cp_offset: [i32; 2],
    pub cp_kta: f64,
    pub cp_kv: f64,
    /// Per-pixel sensitivity, scaled by 2^alpha_scale (u32: the Melexis u16 can overflow at 65536).
    pub alpha: [u32; PIXELS],
    pub alpha_scale: u8,
    pub offset: [i32; PIXELS],
    pub kta: [i16; PIXELS],
    pub kta_scale: u8,
    pub kv: [i16; PIXELS],
    pub kv_scale: u8,
    /// 0x80 or 0x00, compared with `(control & 0x1000) >> 5` as in Melexis.
    pub calibration_mode_ee: u16,
    pub il_chess_c: [f64; 3],
    deviating: [u16; MAX_DEVIATING],
    deviating_count: u8,
}

/// Per-device viewing conditions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conditions {
    pub emissivity: f32,
    /// Reflected temperature Tr = Ta + this (Melexis: −8 °C for a sensor in open air).
    pub reflected_offset_c: f32,
    /// Control register used instead of frame word 832 (see module docs).
    pub control_register: u16,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions { emissivity: 0.95, reflected_offset_c: -8.0, control_register: 0x1901 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTemps {
    pub vdd: f32,
    pub ta_c: f32,
}

/// Decodes big-endian hex words (4 chars each, no separators) into `out`; the payload must be
/// exactly `4 * out.len()` chars, which is also how truncated link frames are rejected.
pub fn decode_hex_words(hex: &[u8], out: &mut [u16]) -> Result<(), CalibError> {
    if hex.len() != out.len() * 4 {
        return Err(CalibError::BadPayload("wrong payload length"));
    }
    for (w, chunk) in out.iter_mut().zip(hex.chunks_exact(4)) {
        let mut v = 0u16;
        for &c in chunk {
            let d = (c as char).to_digit(16).ok_or(CalibError::BadPayload("non-hex character"))?;
            v = (v << 4) | d as u16;
        }
        *w = v;
    }
    Ok(())
}

/// Two's complement of the low `bits` bits of `v`.
fn signed(v: u16, bits: u32) -> i32 {
    let m = 1i32 << bits;
    let v = i32::from(v) & (m - 1);
    if v >= m / 2 { v - m } else { v }
}

fn pow2(n: i32) -> f64 {
    2f64.powi(n)
}

/// Melexis rescaling: number of doublings until `max` reaches `limit`. None where the C loop
/// would never end (max 0) or produce absurd scales (non-finite / negative / tiny).
fn doublings(max: f64, limit: f64) -> Option<u8> {
    if !(max.is_finite() && max > 0.0) {
        return None;
    }
    let (mut t, mut s) = (max, 0u8);
    while t < limit {
        t *= 2.0;
        s += 1;
        if s > 60 {
            return None;
        }
    }
    Some(s)
}

/// Melexis rounding `(int)(x ± 0.5)` (kept literally so results match the reference bit-for-bit).
fn round_melexis(x: f64) -> f64 {
    if x < 0.0 { (x - 0.5).trunc() } else { (x + 0.5).trunc() }
}

/// Four signed 4-bit values packed in words `ee[first..first+n]`, low nibble first.
fn nibbles<const N: usize>(ee: &[u16; EEPROM_WORDS], first: usize) -> [i32; N] {
    let mut out = [0i32; N];
    for (i, o) in out.iter_mut().enumerate() {
        let w = ee[first + i / 4];
        *o = signed((w >> (4 * (i % 4))) & 0xF, 4);
    }
    out
}

impl Params {
    pub fn from_eeprom(ee: &[u16; EEPROM_WORDS]) -> Result<Params, CalibError> {
        if ee.iter().all(|&w| w == 0) {
            return Err(CalibError::BadEeprom("all words are 0x0000"));
        }
        if ee.iter().all(|&w| w == 0xFFFF) {
            return Err(CalibError::BadEeprom("all words are 0xFFFF"));
        }
        // VDD
        let k_vdd = signed(ee[51] >> 8, 8) * 32;
        let vdd25 = ((i32::from(ee[51] & 0xFF) - 256) << 5) - 8192;
        // PTAT
        let kv_ptat = f64::from(signed(ee[50] >> 10, 6)) / 4096.0;
        let kt_ptat = f64::from(signed(ee[50] & 0x03FF, 10)) / 8.0;
        let v_ptat25 = f64::from(ee[49]);
        let alpha_ptat = f64::from(ee[16] & 0xF000) / pow2(14) + 8.0;
        // Gain, Tgc, resolution, KsTa
        let gain_ee = i32::from(ee[48] as i16);
        let tgc = f64::from(signed(ee[60] & 0xFF, 8)) / 32.0;
        let resolution_ee = ((ee[56] & 0x3000) >> 12) as u8;
        let ks_ta = f64::from(signed(ee[60] >> 8, 8)) / 8192.0;
        // The values every frame divides by: zero would turn each frame into inf/NaN.
        if k_vdd == 0 {
            return Err(CalibError::BadEeprom("kVdd is zero"));
        }
        if kt_ptat == 0.0 {
            return Err(CalibError::BadEeprom("KtPTAT is zero"));
        }
        if gain_ee == 0 {
            return Err(CalibError::BadEeprom("gain is zero"));
        }
        if ee[49] == 0 {
            return Err(CalibError::BadEeprom("VPTAT25 is zero"));
        }
        // KsTo ranges and corner temperatures
        let step = f64::from((ee[63] & 0x3000) >> 12) * 10.0;
        let ct2 = f64::from((ee[63] & 0x00F0) >> 4) * step;
        let ct3 = ct2 + f64::from((ee[63] & 0x0F00) >> 8) * step;
        let ct = [-40.0, 0.0, ct2, ct3, 0.0];
        let ks_to_scale = pow2(i32::from(ee[63] & 0x000F) + 8);
        let ks_to = [
            f64::from(signed(ee[61] & 0xFF, 8)) / ks_to_scale,
            f64::from(signed(ee[61] >> 8, 8)) / ks_to_scale,
            f64::from(signed(ee[62] & 0xFF, 8)) / ks_to_scale,
            f64::from(signed(ee[62] >> 8, 8)) / ks_to_scale,
            -0.0002,
        ];
        // Compensation pixels
        let cp_alpha_scale = i32::from(ee[32] >> 12) + 27;
        let off0 = signed(ee[58] & 0x03FF, 10);
        let cp_offset = [off0, signed(ee[58] >> 10, 6) + off0];
        let a0 = f64::from(signed(ee[57] & 0x03FF, 10)) / pow2(cp_alpha_scale);
        let cp_alpha = [a0, (1.0 + f64::from(signed(ee[57] >> 10, 6)) / 128.0) * a0];
        let kta_scale1 = i32::from((ee[56] & 0x00F0) >> 4) + 8;
        let kv_scale_ee = i32::from((ee[56] & 0x0F00) >> 8);
        let cp_kta = f64::from(signed(ee[59] & 0xFF, 8)) / pow2(kta_scale1);
        let cp_kv = f64::from(signed(ee[59] >> 8, 8)) / pow2(kv_scale_ee);

        let mut p = Params {
            k_vdd,
            vdd25,
            kv_ptat,
            kt_ptat,
            v_ptat25,
            alpha_ptat,
            gain_ee,
            tgc,
            resolution_ee,
            ks_ta,
            ks_to,
            ct,
            cp_alpha,
            cp_offset,
            cp_kta,
            cp_kv,
            alpha: [0; PIXELS],
            alpha_scale: 0,
            offset: [0; PIXELS],
            kta: [0; PIXELS],
            kta_scale: 0,
            kv: [0; PIXELS],
            kv_scale: 0,
            calibration_mode_ee: (((ee[10] & 0x0800) >> 4) ^ 0x80),
            il_chess_c: [
                f64::from(signed(ee[53] & 0x003F, 6)) / 16.0,
                f64::from(signed((ee[53] & 0x07C0) >> 6, 5)) / 2.0,
                f64::from(signed((ee[53] & 0xF800) >> 11, 5)) / 8.0,
            ],
            deviating: [0; MAX_DEVIATING],
            deviating_count: 0,
        };
        p.extract_alpha(ee)?;
        p.extract_offset(ee);
        p.extract_kta_kv(ee, kta_scale1, kv_scale_ee);
        p.extract_deviating(ee)?;
        Ok(p)
    }

    fn extract_alpha(&mut self, ee: &[u16; EEPROM_WORDS]) -> Result<(), CalibError> {
        let rem_scale = u32::from(ee[32] & 0x000F);
        let col_scale = u32::from((ee[32] & 0x00F0) >> 4);
        let row_scale = u32::from((ee[32] & 0x0F00) >> 8);
        let scale = pow2(i32::from(ee[32] >> 12) + 30);
        let alpha_ref = i64::from(ee[33]);
        let acc_row: [i32; ROWS] = nibbles(ee, 34);
        let acc_col: [i32; COLS] = nibbles(ee, 40);
        let cp_term = self.tgc * (self.cp_alpha[0] + self.cp_alpha[1]) / 2.0;
        // Unscaled alphas (6 KiB on the stack): the final scale needs their maximum first.
        // This runs once per device, not per frame.
        let mut tmp = [0f64; PIXELS];
        for (px, t) in tmp.iter_mut().enumerate() {
            let (i, j) = (px / COLS, px % COLS);
            let mut a = i64::from(signed((ee[64 + px] & 0x03F0) >> 4, 6)) << rem_scale;
            a += alpha_ref + (i64::from(acc_row[i]) << row_scale) + (i64::from(acc_col[j]) << col_scale);
            let a = a as f64 / scale - cp_term;
            // A non-positive sensitivity has no physical meaning and would give NaN/inf To.
            if !(a.is_finite() && a > 0.0) {
                return Err(CalibError::BadEeprom("pixel sensitivity (alpha) not positive"));
            }
            *t = SCALEALPHA / a;
        }
        let max = tmp.iter().copied().fold(f64::MIN, f64::max);
        let s = doublings(max, 32768.0).ok_or(CalibError::BadEeprom("alpha out of range"))?;
        for (dst, &t) in self.alpha.iter_mut().zip(&tmp) {
            let v = (t * pow2(i32::from(s)) + 0.5).trunc();
            if !(v >= 1.0 && v <= f64::from(u32::MAX)) {
                return Err(CalibError::BadEeprom("alpha out of range"));
            }
            *dst = v as u32;
        }
        self.alpha_scale = s;
        Ok(())
    }

    fn extract_offset(&mut self, ee: &[u16; EEPROM_WORDS]) {
        let rem_scale = u32::from(ee[16] & 0x000F);
        let col_scale = u32::from((ee[16] & 0x00F0) >> 4);
        let row_scale = u32::from((ee[16] & 0x0F00) >> 8);
        let offset_ref = i32::from(ee[17] as i16);
        let occ_row: [i32; ROWS] = nibbles(ee, 18);
        let occ_col: [i32; COLS] = nibbles(ee, 24);
        for (px, o) in self.offset.iter_mut().enumerate() {
            let (i, j) = (px / COLS, px % COLS);
            // Shifts are at most 15 on values of at most 6 bits: fits i32 without overflow.
            *o = (signed(ee[64 + px] >> 10, 6) << rem_scale)
                + offset_ref
                + (occ_row[i] << row_scale)
                + (occ_col[j] << col_scale);
        }
    }

    fn extract_kta_kv(&mut self, ee: &[u16; EEPROM_WORDS], kta_scale1: i32, kv_scale_ee: i32) {
        // Index = 2 * (row odd) + (col odd): RoCo, RoCe, ReCo, ReCe as in Melexis.
        let kta_rc =
            [signed(ee[54] >> 8, 8), signed(ee[55] >> 8, 8), signed(ee[54] & 0xFF, 8), signed(ee[55] & 0xFF, 8)];
        let kv_t = [
            signed(ee[52] >> 12, 4),
            signed((ee[52] >> 4) & 0xF, 4),
            signed((ee[52] >> 8) & 0xF, 4),
            signed(ee[52] & 0xF, 4),
        ];
        let kta_scale2 = u32::from(ee[56] & 0x000F);
        let mut kta_tmp = [0f64; PIXELS];
        let mut kv_tmp = [0f64; PIXELS];
        for px in 0..PIXELS {
            let split = 2 * ((px / 32) % 2) + px % 2;
            let k = (signed((ee[64 + px] & 0x000E) >> 1, 3) << kta_scale2) + kta_rc[split];
            kta_tmp[px] = f64::from(k) / pow2(kta_scale1);
            kv_tmp[px] = f64::from(kv_t[split]) / pow2(kv_scale_ee);
        }
        // All-zero coefficients would hang the Melexis loop; they simply mean "no correction".
        self.kta_scale = rescale(&kta_tmp, &mut self.kta);
        self.kv_scale = rescale(&kv_tmp, &mut self.kv);
    }

    fn extract_deviating(&mut self, ee: &[u16; EEPROM_WORDS]) -> Result<(), CalibError> {
        let (mut broken, mut nb) = ([0u16; MAX_DEVIATING + 1], 0usize);
        let (mut outlier, mut no) = ([0u16; MAX_DEVIATING + 1], 0usize);
        for px in 0..PIXELS {
            if nb > MAX_DEVIATING || no > MAX_DEVIATING {
                break;
            }
            let w = ee[64 + px];
            if w == 0 {
                broken[nb] = px as u16;
                nb += 1;
            } else if w & 1 != 0 {
                outlier[no] = px as u16;
                no += 1;
            }
        }
        if nb > MAX_DEVIATING {
            return Err(CalibError::TooManyBrokenPixels);
        }
        if no > MAX_DEVIATING {
            return Err(CalibError::TooManyOutlierPixels);
        }
        if nb + no > MAX_DEVIATING {
            return Err(CalibError::TooManyDeviatingPixels);
        }
        let n = nb + no;
        self.deviating[..nb].copy_from_slice(&broken[..nb]);
        self.deviating[nb..n].copy_from_slice(&outlier[..no]);
        self.deviating_count = n as u8;
        for a in 0..n {
            for b in a + 1..n {
                let (x, y) = (self.deviating[a], self.deviating[b]);
                let d = i32::from(x) - i32::from(y);
                // Melexis adjacency test (neighbours in the row-major index, incl. diagonals).
                if (-34 < d && d < -30) || (-2 < d && d < 2) || (30 < d && d < 34) {
                    return Err(CalibError::AdjacentDeviatingPixels(x, y));
                }
            }
        }
        Ok(())
    }

    /// Broken (EEPROM word 0) and outlier pixels, repaired from neighbours by [`compute`].
    pub fn deviating_pixels(&self) -> &[u16] {
        &self.deviating[..usize::from(self.deviating_count)]
    }
}

/// Melexis per-pixel coefficient rescaling to the largest magnitude in [64, 128).
fn rescale(tmp: &[f64; PIXELS], out: &mut [i16; PIXELS]) -> u8 {
    let max = tmp.iter().fold(0f64, |m, v| m.max(v.abs()));
    let s = doublings(max, 64.0).unwrap_or(0);
    for (o, &t) in out.iter_mut().zip(tmp) {
        // |t * 2^s| < 128 by construction, so the cast cannot saturate.
        *o = round_melexis(t * pow2(i32::from(s))) as i16;
    }
    s
}

/// Supply voltage (Melexis `GetVdd`); `control` supplies the ADC resolution bits.
pub fn get_vdd(p: &Params, frame: &[u16; FRAME_WORDS], control: u16) -> f64 {
    let vdd = f64::from(frame[W_VDD] as i16);
    let resolution_ram = i32::from((control & 0x0C00) >> 10);
    let correction = pow2(i32::from(p.resolution_ee)) / pow2(resolution_ram);
    (correction * vdd - f64::from(p.vdd25)) / f64::from(p.k_vdd) + 3.3
}

/// Die (ambient) temperature in °C (Melexis `GetTa`).
pub fn get_ta(p: &Params, frame: &[u16; FRAME_WORDS], vdd: f64) -> f64 {
    let ptat = f64::from(frame[W_TA_PTAT] as i16);
    let vbe = f64::from(frame[W_TA_VBE] as i16);
    let ptat_art = ptat / (ptat * p.alpha_ptat + vbe) * pow2(18);
    (ptat_art / (1.0 + p.kv_ptat * (vdd - 3.3)) - p.v_ptat25) / p.kt_ptat + 25.0
}

/// Computes all 768 object temperatures for this frame into `out`.
pub fn compute(p: &Params, frame: &[u16; FRAME_WORDS], cond: &Conditions, out: &mut [f32; PIXELS]) -> FrameTemps {
    let control = cond.control_register;
    let vdd = get_vdd(p, frame, control);
    let ta = get_ta(p, frame, vdd);
    let temps = FrameTemps { vdd: vdd as f32, ta_c: ta as f32 };
    let emissivity = f64::from(cond.emissivity);
    let tr = ta + f64::from(cond.reflected_offset_c);
    let gain_word = frame[W_GAIN] as i16;
    if !(vdd.is_finite() && ta.is_finite() && tr.is_finite())
        || gain_word == 0
        || !(emissivity > 0.0 && emissivity <= 1.0)
    {
        out.fill(f32::NAN);
        return temps;
    }

    let ta4 = (ta + 273.15).powi(4);
    let tr4 = (tr + 273.15).powi(4);
    let ta_tr = tr4 - (tr4 - ta4) / emissivity;
    let kta_scale = pow2(i32::from(p.kta_scale));
    let kv_scale = pow2(i32::from(p.kv_scale));
    let alpha_scale = pow2(i32::from(p.alpha_scale));
    let ks_to = &p.ks_to;
    let ct = &p.ct;
    let alpha_corr_r2 = 1.0 + ks_to[1] * ct[2];
    let alpha_corr_r =
        [1.0 / (1.0 + ks_to[0] * 40.0), 1.0, alpha_corr_r2, alpha_corr_r2 * (1.0 + ks_to[2] * (ct[3] - ct[2]))];
    let gain = f64::from(p.gain_ee) / f64::from(gain_word);
    let mode = (control & 0x1000) >> 5;
    let dta = ta - 25.0;
    let dvdd = vdd - 3.3;
    let cp_corr = (1.0 + p.cp_kta * dta) * (1.0 + p.cp_kv * dvdd);
    let mut cp1_offset = f64::from(p.cp_offset[1]);
    if mode != p.calibration_mode_ee {
        cp1_offset += p.il_chess_c[0];
    }
    let ir_cp = [
        f64::from(frame[W_CP_SP0] as i16) * gain - f64::from(p.cp_offset[0]) * cp_corr,
        f64::from(frame[W_CP_SP1] as i16) * gain - cp1_offset * cp_corr,
    ];
    let alpha_ta = 1.0 + p.ks_ta * dta;

    for (px, o) in out.iter_mut().enumerate() {
        let il_pattern = (px / 32) % 2;
        let chess_pattern = il_pattern ^ (px % 2);
        // Which subpage measured this pixel; it selects the CP word (see module docs).
        let pattern = if mode == 0 { il_pattern } else { chess_pattern };
        let mut ir = f64::from(frame[px] as i16) * gain;
        let kta = f64::from(p.kta[px]) / kta_scale;
        let kv = f64::from(p.kv[px]) / kv_scale;
        ir -= f64::from(p.offset[px]) * (1.0 + kta * dta) * (1.0 + kv * dvdd);
        if mode != p.calibration_mode_ee {
            // Melexis conversionPattern, kept in its original form for auditability.
            #[allow(clippy::manual_div_ceil)]
            let conv = ((px + 2) / 4) as f64 - ((px + 3) / 4) as f64 + ((px + 1) / 4) as f64 - (px / 4) as f64;
            let conv = conv * (1.0 - 2.0 * il_pattern as f64);
            ir += p.il_chess_c[2] * (2.0 * il_pattern as f64 - 1.0) - p.il_chess_c[1] * conv;
        }
        ir -= p.tgc * ir_cp[pattern];
        ir /= emissivity;

        let alpha_c = SCALEALPHA * alpha_scale / f64::from(p.alpha[px]) * alpha_ta;
        let sx = (alpha_c * alpha_c * alpha_c * (ir + alpha_c * ta_tr)).sqrt().sqrt() * ks_to[1];
        let to = (ir / (alpha_c * (1.0 - ks_to[1] * 273.15) + sx) + ta_tr).sqrt().sqrt() - 273.15;
        let range = if to < ct[1] {
            0
        } else if to < ct[2] {
            1
        } else if to < ct[3] {
            2
        } else {
            3
        };
        let to = (ir / (alpha_c * alpha_corr_r[range] * (1.0 + ks_to[range] * (to - ct[range]))) + ta_tr).sqrt().sqrt()
            - 273.15;
        *o = to as f32;
    }

    for &bad in p.deviating_pixels() {
        out[usize::from(bad)] = neighbour_mean(out, usize::from(bad), p.deviating_pixels());
    }
    temps
}

/// Mean of the finite, non-deviating 4-neighbours of `px`; NaN if there are none.
fn neighbour_mean(out: &[f32; PIXELS], px: usize, deviating: &[u16]) -> f32 {
    let (r, c) = (px / COLS, px % COLS);
    let mut cand = [None; 4];
    if r > 0 {
        cand[0] = Some(px - COLS);
    }
    if r + 1 < ROWS {
        cand[1] = Some(px + COLS);
    }
    if c > 0 {
        cand[2] = Some(px - 1);
    }
    if c + 1 < COLS {
        cand[3] = Some(px + 1);
    }
    let (mut sum, mut n) = (0f32, 0u8);
    for q in cand.into_iter().flatten() {
        if out[q].is_finite() && !deviating.contains(&(q as u16)) {
            sum += out[q];
            n += 1;
        }
    }
    if n == 0 { f32::NAN } else { sum / f32::from(n) }
}

// Tests (incl. the golden comparison against the Melexis Python port) live in mlx90640/tests.rs.
#[cfg(test)]
mod tests;
