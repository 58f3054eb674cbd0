//! The cell pass and the verdict: 2×2 samples per cell give each cell its flags and packed stats, the blobs of
//! candidate cells become regions, and the frame's features go through the learned scorer.

use super::*;

/// One sample's contribution to a cell's packed counters (see [`cell_row`]): arithmetic rather than a table
/// lookup, so the cell pass has no gather.
#[inline(always)]
fn cell_counts(c: u8) -> u32 {
    let c = u32::from(c);
    let any = |m: u8| u32::from(c & u32::from(m) != 0);
    any(FIRE | PINK)
        | (any(FIRE | PINK | CORE) << 4)
        | (any(SMOKE) << 8)
        | (any(CORE) << 12)
        | (any(CORE | BRIGHT) << 16)
        | (any(SATFIRE) << 20)
}

/// Sums over one row of cells.
#[derive(Default)]
struct RowSums {
    sum_y: u32,
    sum_yy: u32,
    texture: u32,
    fire_samples: u32,
    smoke_samples: u32,
}

/// One row of cells from its two sample rows: each cell's flags (fire, smoke, bright core) and packed stats, and
/// the row's sums. Straight-line arithmetic over fixed-size arrays, no table and no branch, so the compiler can
/// vectorise it: as one per-cell loop with histogram updates and branches this was the detector's hottest
/// code. Per-row sums fit u32 (at most 320 samples of 255²).
#[inline(always)]
fn cell_row(
    class: [&[u8; SW]; 2],
    luma: [&[u8; SW]; 2],
    kept: &[u8; CW],
    cells: &mut [u8; CW],
    stats: &mut [u32; CW],
) -> RowSums {
    let [c0, c1] = class;
    let [l0, l1] = luma;
    let mut packed = [0u32; CW];
    for (cx, p) in packed.iter_mut().enumerate() {
        let x = 2 * cx;
        // Six 4-bit counters in one word: flame-like, flame-or-core, smoke, core, core-or-bright, saturated flame.
        *p = cell_counts(c0[x]) + cell_counts(c0[x + 1]) + cell_counts(c1[x]) + cell_counts(c1[x + 1]);
    }
    let mut s = RowSums::default();
    for cx in 0..CW {
        let x = 2 * cx;
        let p = packed[cx];
        let (a, b, c, d) = (u32::from(l0[x]), u32::from(l0[x + 1]), u32::from(l1[x]), u32::from(l1[x + 1]));
        // Masked samples have luma 0, so this sums the kept ones.
        let luma_sum = a + b + c + d;
        let tex = a.abs_diff(b) + c.abs_diff(d) + a.abs_diff(c) + b.abs_diff(d);
        s.sum_y += luma_sum;
        s.sum_yy += a * a + b * b + c * c + d * d;
        s.texture += tex;
        let (firelike, warm_or_core, smoke, core) = (p & 0xF, (p >> 4) & 0xF, (p >> 8) & 0xF, (p >> 12) & 0xF);
        s.fire_samples += firelike;
        s.smoke_samples += smoke;
        stats[cx] =
            ((p >> 16) & 0xF) | (((p >> 20) & 0xF) << 4) | (u32::from(kept[cx]) << 8) | (luma_sum << 11) | (tex << 21);
        let fire = firelike >= 1 && warm_or_core >= 2;
        let smoky = !fire && smoke >= 3;
        // Cores are marked for the halo pass.
        cells[cx] = (u8::from(fire) * CELL_FIRE) | (u8::from(smoky) * CELL_SMOKE) | (u8::from(core >= 2) * CELL_CORE);
    }
    s
}

impl GridDetector {
    /// Cells, blobs, features and the score, from the filled sample grids.
    #[inline(always)]
    pub(super) fn finish(&mut self, width: usize, height: usize) -> GridResult {
        let mut out = GridResult::default();
        // Masked samples have class 0 and luma 0, so they add nothing below; only the divisors exclude them.
        // Class-byte histograms, one per sample position in a group of four so consecutive increments are
        // independent; the per-bit counts come out of them at the end.
        let hist = &mut *self.hist;
        for h in hist.iter_mut() {
            h.fill(0);
        }
        for q in self.class.chunks_exact(4) {
            for (h, &c) in hist.iter_mut().zip(q) {
                h[usize::from(c)] += 1;
            }
        }
        let (mut sum_y, mut sum_yy) = (0u64, 0u64);
        let mut tex_all = 0u64;
        let (mut fire_samples, mut smoke_samples) = (0u32, 0u32);
        let mut halo = 0u32;
        let mut any_core = 0u8;
        let (class_rows, _) = self.class.as_chunks::<SW>();
        let (luma_rows, _) = self.luma.as_chunks::<SW>();
        let (kept_rows, _) = self.kept_in_cell.as_chunks::<CW>();
        let (mut cells, mut stats) = ([0u8; CW], [0u32; CW]);
        for cy in 0..CH {
            let sums = cell_row(
                [&class_rows[2 * cy], &class_rows[2 * cy + 1]],
                [&luma_rows[2 * cy], &luma_rows[2 * cy + 1]],
                &kept_rows[cy],
                &mut cells,
                &mut stats,
            );
            sum_y += u64::from(sums.sum_y);
            sum_yy += u64::from(sums.sum_yy);
            tex_all += u64::from(sums.texture);
            fire_samples += sums.fire_samples;
            smoke_samples += sums.smoke_samples;
            any_core |= cells.iter().fold(0, |a, &c| a | c);
            let prow = (cy + 1) * PW + 1;
            self.cell[prow..prow + CW].copy_from_slice(&cells);
            self.cellstat[prow..prow + CW].copy_from_slice(&stats);
        }
        let any_core = any_core & CELL_CORE != 0;
        let mut counts = [0u32; 8];
        let [h0, h1, h2, h3] = &*hist;
        for (c, (((a, b), d), e)) in h0.iter().zip(h1).zip(h2).zip(h3).enumerate() {
            let n = a + b + d + e;
            for (b, k) in counts.iter_mut().enumerate() {
                *k += n * ((c as u32 >> b) & 1);
            }
        }
        // Bright cores that touch a fire cell: flames blow out to white inside an orange/red rim.
        if any_core {
            for k in PW + 1..NP - PW - 1 {
                if self.cell[k] & CELL_CORE != 0 {
                    let near = |o: usize| (self.cell[o - 1] | self.cell[o] | self.cell[o + 1]) & CELL_FIRE != 0;
                    if near(k - PW) || near(k) || near(k + PW) {
                        halo += 1;
                    }
                }
            }
        }

        let mut best_fire = Blob::default();
        let mut best_smoke = Blob::default();
        let (mut n_blobs, mut fire_cells, mut smoke_cells) = (0u32, 0u32, 0u32);
        let (mut fire_luma_sum, mut fire_luma_n) = (0u64, 0u64);
        let mut candidates = [0; CELL_WORDS];
        self.labeller.label(&self.cell, &self.cellstat, &mut candidates, |kind, blob| {
            if kind == CELL_FIRE {
                fire_cells += blob.area;
                fire_luma_sum += u64::from(blob.luma);
                fire_luma_n += u64::from(blob.samples);
                if blob.area >= 2 {
                    n_blobs += 1;
                }
                if blob.area > best_fire.area {
                    best_fire = *blob;
                }
                insert_region(&mut out, RegionKind::Fire, blob);
            } else {
                smoke_cells += blob.area;
                if blob.area > best_smoke.area {
                    best_smoke = *blob;
                }
                insert_region(&mut out, RegionKind::Smoke, blob);
            }
        });
        out.candidates = candidates;

        let ns = self.kept_samples.max(1) as f32;
        let nc = self.kept_cells.max(1) as f32;
        let frac = |n: u32| (n as f32 / ns).sqrt();
        let mean_y = sum_y as f32 / ns;
        let var_y = (sum_yy as f32 / ns - mean_y * mean_y).max(0.0);
        let f = &mut out.features;
        f[0] = frac(counts[0]);
        f[1] = frac(counts[1]);
        f[2] = frac(counts[2]);
        f[3] = frac(counts[3]);
        f[4] = frac(counts[4]);
        f[5] = frac(counts[5]);
        f[6] = frac(counts[6]);
        f[7] = frac(counts[7]);
        f[8] = mean_y / 255.0;
        f[9] = var_y.sqrt() / 128.0;
        let blob_feats = |b: &Blob| {
            if b.area == 0 {
                return [0.0f32; 7];
            }
            let area = b.area as f32;
            let bbox = ((b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1)) as f32;
            let samples = b.samples.max(1) as f32;
            [
                (area / nc).sqrt(),
                area / bbox,
                b.perimeter as f32 / (4.0 * area.sqrt()),
                b.core as f32 / samples,
                b.sat as f32 / samples,
                b.texture as f32 / (area * 4.0 * 64.0),
                (b.sum_y as f32 / area + 0.5) / CH as f32,
            ]
        };
        let bf = blob_feats(&best_fire);
        f[10..17].copy_from_slice(&bf);
        f[17] = (n_blobs as f32 / 8.0).min(1.0);
        f[18] = (halo as f32 / nc).sqrt();
        let sf = blob_feats(&best_smoke);
        f[19] = sf[0];
        f[20] = sf[5];
        f[21] = sf[6];
        f[22] = if best_fire.samples > 0 { best_fire.luma as f32 / best_fire.samples as f32 / 255.0 } else { 0.0 };
        f[23] = (fire_cells as f32 / nc).sqrt();
        f[24] = tex_all as f32 / (nc * 4.0 * 64.0);

        out.score = model_score(&out.features);
        let px_per_sample = (width * height) as f32 / NS as f32;
        out.fire_pixels = (fire_samples as f32 * px_per_sample) as u32;
        out.smoke_pixels = (smoke_samples as f32 * px_per_sample) as u32;
        out.fire_cells = fire_cells;
        out.smoke_cells = smoke_cells;
        out.fire_luma = if fire_luma_n > 0 { fire_luma_sum as f32 / fire_luma_n as f32 } else { 0.0 };
        out
    }
}

/// Keeps the `MAX_REGIONS` largest regions, largest first.
pub(super) fn insert_region(out: &mut GridResult, kind: RegionKind, b: &Blob) {
    let r = Region {
        kind,
        x0: b.x0 as f32 / CW as f32,
        y0: b.y0 as f32 / CH as f32,
        x1: (b.x1 + 1) as f32 / CW as f32,
        y1: (b.y1 + 1) as f32 / CH as f32,
        cells: b.area,
    };
    let n = out.n_regions;
    let mut pos = n;
    while pos > 0 && out.regions[pos - 1].cells < r.cells {
        pos -= 1;
    }
    if pos >= MAX_REGIONS {
        return;
    }
    let end = n.min(MAX_REGIONS - 1);
    out.regions.copy_within(pos..end, pos + 1);
    out.regions[pos] = r;
    out.n_regions = (n + 1).min(MAX_REGIONS);
}
