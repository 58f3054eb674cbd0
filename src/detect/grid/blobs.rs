//! Candidate regions of the grid detector's cell grid: the 8-connected components of fire cells and of
//! smoke cells, with each one's sums, labelled by horizontal runs.
//!
//! Why runs: a cell-by-cell flood fill tests 8 neighbours per cell with a branch each, and those branches follow
//! the picture, so they mispredict; on smoky or fiery frames it was a third of the detector's time. A run is found
//! with one predictable scan, joins the previous row's runs it touches through a union-find over run numbers, and
//! its cells' sums are a straight loop. Blobs come out in raster order of their first cell, as the flood fill
//! found them, so the regions and features are the same.

use super::{CELL_FIRE, CELL_SMOKE, CH, CW, CellBits, NC, NP, PW};

/// Sums over one blob's cells, in cell coordinates.
#[derive(Default, Clone, Copy)]
pub(super) struct Blob {
    pub area: u32,
    pub x0: u16,
    pub y0: u16,
    pub x1: u16,
    pub y1: u16,
    /// 4-neighbour edges to cells of another kind or none (fire blobs only: only their shape is a feature).
    pub perimeter: u32,
    /// Sum of the cells' row numbers.
    pub sum_y: u32,
    pub core: u32,
    pub sat: u32,
    pub samples: u32,
    pub texture: u32,
    pub luma: u32,
}

/// Cells `x0..=x1` of cell row `y`, all of `kind`.
#[derive(Default, Clone, Copy)]
struct Run {
    x0: u8,
    x1: u8,
    y: u8,
    kind: u8,
}

/// Fixed scratch for [`Labeller::label`]: a row of `CW` cells holds at most `CW` runs, so `NC` runs bound a frame.
pub(super) struct Labeller {
    runs: Box<[Run; NC]>,
    /// Union-find over run numbers; a root is always the smallest run number of its component.
    parent: Box<[u16; NC]>,
    /// Indexed by root run number.
    blobs: Box<[Blob; NC]>,
}

impl Default for Labeller {
    fn default() -> Self {
        Labeller {
            runs: Box::new([Run::default(); NC]),
            parent: Box::new([0; NC]),
            blobs: Box::new([Blob::default(); NC]),
        }
    }
}

impl Labeller {
    /// Labels the padded cell grid (`PW×PH`, border 0; bit `CELL_FIRE` or `CELL_SMOKE` marks a candidate, other
    /// bits are ignored) and calls `each(kind, blob)` for every blob, in raster order of its first cell. `stat` is
    /// the detector's packed per-cell counters (see `GridDetector::cellstat`).
    #[inline(always)]
    pub(super) fn label(
        &mut self,
        cell: &[u8; NP],
        stat: &[u32; NP],
        candidates: &mut CellBits,
        mut each: impl FnMut(u8, &Blob),
    ) {
        let (runs, parent, blobs) = (&mut *self.runs, &mut *self.parent, &mut *self.blobs);
        let mut n = 0usize;
        let mut prev = 0..0;
        for y in 0..CH {
            let row = &cell[(y + 1) * PW + 1..][..CW];
            let start = n;
            // Runs of the previous row are in x order; `p` skips those that end left of the current run.
            let mut p = prev.start;
            // Bit masks of the row's fire and smoke cells, built without branches; runs are then read off the
            // masks, so the scan costs one step per run, not a data-dependent branch per cell.
            let (fire, smoke) = (row_mask(row, CELL_FIRE), row_mask(row, CELL_SMOKE));
            set_bits(candidates, y * CW, fire | smoke);
            let mut starts = (fire & !(fire << 1)) | (smoke & !(smoke << 1));
            while starts != 0 {
                let x0 = starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let (kind, mask) = if (fire >> x0) & 1 != 0 { (CELL_FIRE, fire) } else { (CELL_SMOKE, smoke) };
                let x1 = x0 + (!(mask >> x0)).trailing_zeros() as usize - 1;
                runs[n] = Run { x0: x0 as u8, x1: x1 as u8, y: y as u8, kind };
                parent[n] = n as u16;
                while p < prev.end && usize::from(runs[p].x1) + 1 < x0 {
                    p += 1;
                }
                // 8-connected: a run above touches this one if it reaches one column past either end.
                let mut q = p;
                while q < prev.end && usize::from(runs[q].x0) <= x1 + 1 {
                    if runs[q].kind == kind {
                        union(parent, q, n);
                    }
                    q += 1;
                }
                n += 1;
            }
            prev = start..n;
        }
        // Each run's parent is a smaller number, already pointing at its root: one pass in order flattens all.
        for i in 0..n {
            parent[i] = parent[usize::from(parent[i])];
        }
        for (i, r) in runs[..n].iter().enumerate() {
            let root = usize::from(parent[i]);
            let b = &mut blobs[root];
            if root == i {
                *b = Blob { x0: CW as u16, y0: CH as u16, ..Blob::default() };
            }
            let (x0, x1, y) = (usize::from(r.x0), usize::from(r.x1), usize::from(r.y));
            let len = (x1 - x0 + 1) as u32;
            b.area += len;
            b.x0 = b.x0.min(x0 as u16);
            b.x1 = b.x1.max(x1 as u16);
            b.y0 = b.y0.min(y as u16);
            b.y1 = b.y1.max(y as u16);
            b.sum_y += y as u32 * len;
            let k0 = (y + 1) * PW + 1 + x0;
            for &st in &stat[k0..=k0 + x1 - x0] {
                // Masked samples have class 0 and luma 0, so the cell sums count only kept samples.
                b.core += st & 0xF;
                b.sat += (st >> 4) & 0xF;
                b.samples += (st >> 8) & 0x7;
                b.luma += (st >> 11) & 0x3FF;
                b.texture += st >> 21;
            }
            if r.kind == CELL_FIRE {
                // The cells left and right of a run are not of its kind (or they would be in it).
                let mut edges = 2;
                for k in k0..=k0 + x1 - x0 {
                    edges += u32::from(cell[k - PW] & CELL_FIRE == 0) + u32::from(cell[k + PW] & CELL_FIRE == 0);
                }
                b.perimeter += edges;
            }
        }
        for (i, r) in runs[..n].iter().enumerate() {
            if usize::from(parent[i]) == i {
                each(r.kind, &blobs[i]);
            }
        }
    }
}

/// Bit `x` set when cell `x` of `row` has `flag`. Two 64-bit halves, because a variable u128 shift per cell costs
/// several instructions, and this form vectorises.
#[inline(always)]
fn row_mask(row: &[u8], flag: u8) -> u128 {
    let (head, tail) = row.split_at(64.min(row.len()));
    let half = |cells: &[u8]| {
        let mut m = 0u64;
        for (x, &c) in cells.iter().enumerate() {
            m |= u64::from(c & flag != 0) << x;
        }
        m
    };
    u128::from(half(head)) | (u128::from(half(tail)) << 64)
}

/// ORs the `CW` low bits of `m` into the bitmap at bit `at`.
#[inline(always)]
fn set_bits(bits: &mut CellBits, at: usize, m: u128) {
    let (w, sh) = (at / 64, at % 64);
    let spread = m << sh;
    for (i, part) in [spread as u64, (spread >> 64) as u64, if sh + CW > 128 { (m >> (128 - sh)) as u64 } else { 0 }]
        .into_iter()
        .enumerate()
    {
        if let Some(word) = bits.get_mut(w + i) {
            *word |= part;
        }
    }
}

/// Root of run `a`, halving the path on the way.
#[inline(always)]
fn find(parent: &mut [u16; NC], mut a: usize) -> usize {
    while usize::from(parent[a]) != a {
        let up = parent[usize::from(parent[a])];
        parent[a] = up;
        a = usize::from(up);
    }
    a
}

/// Joins the components of runs `a` and `b` under the smaller root, so a root stays its component's first run.
#[inline(always)]
fn union(parent: &mut [u16; NC], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb) as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::super::CELL_WORDS;
    use super::*;

    /// The straightforward labelling the run version replaced: a flood fill from each unseen cell in raster order.
    fn flood_fill(cell: &[u8; NP], stat: &[u32; NP]) -> Vec<(u8, [u32; 12])> {
        let mut seen = [false; NP];
        let mut out = Vec::new();
        for start in 0..NP {
            let kind = cell[start] & (CELL_FIRE | CELL_SMOKE);
            if kind == 0 || seen[start] {
                continue;
            }
            let mut b = Blob { x0: CW as u16, y0: CH as u16, ..Blob::default() };
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(k) = stack.pop() {
                let (x, y) = ((k % PW - 1) as u16, (k / PW - 1) as u16);
                b.area += 1;
                (b.x0, b.x1, b.y0, b.y1) = (b.x0.min(x), b.x1.max(x), b.y0.min(y), b.y1.max(y));
                b.sum_y += u32::from(y);
                let st = stat[k];
                b.core += st & 0xF;
                b.sat += (st >> 4) & 0xF;
                b.samples += (st >> 8) & 0x7;
                b.luma += (st >> 11) & 0x3FF;
                b.texture += st >> 21;
                if kind == CELL_FIRE {
                    for n in [k - 1, k + 1, k - PW, k + PW] {
                        b.perimeter += u32::from(cell[n] & kind == 0);
                    }
                }
                for n in [k - PW - 1, k - PW, k - PW + 1, k - 1, k + 1, k + PW - 1, k + PW, k + PW + 1] {
                    if cell[n] & (CELL_FIRE | CELL_SMOKE) == kind && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
            out.push((kind, fields(&b)));
        }
        out
    }

    fn fields(b: &Blob) -> [u32; 12] {
        [
            b.area,
            b.x0.into(),
            b.y0.into(),
            b.x1.into(),
            b.y1.into(),
            b.perimeter,
            b.sum_y,
            b.core,
            b.sat,
            b.samples,
            b.texture,
            b.luma,
        ]
    }

    /// Random grids from sparse specks to nearly full, with both kinds interleaved and stray other bits (the
    /// detector's core mark), must give the flood fill's blobs in the flood fill's order.
    #[test]
    fn runs_find_the_same_blobs_as_a_flood_fill() {
        let mut state = crate::prng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || state.next();
        let mut lab = Labeller::default();
        for round in 0..300 {
            let density = round % 10;
            let (mut cell, mut stat) = ([0u8; NP], [0u32; NP]);
            for y in 1..=CH {
                for x in 1..=CW {
                    let r = next();
                    let k = y * PW + x;
                    if (r % 10) < density {
                        cell[k] = if r & (1 << 20) == 0 { CELL_FIRE } else { CELL_SMOKE };
                    }
                    cell[k] |= ((r >> 30) as u8) & 0x80;
                    stat[k] = (r >> 32) as u32 & !(0x7 << 8) | (((r >> 8) as u32 % 5) << 8);
                }
            }
            let (mut got, mut bits) = (Vec::new(), [0; CELL_WORDS]);
            lab.label(&cell, &stat, &mut bits, |kind, b| got.push((kind, fields(b))));
            assert_eq!(got, flood_fill(&cell, &stat), "round {round}");
            for k in 0..NC {
                let want = cell[(k / CW + 1) * PW + k % CW + 1] & (CELL_FIRE | CELL_SMOKE) != 0;
                assert_eq!(bits[k / 64] >> (k % 64) & 1 != 0, want, "round {round} cell {k}");
            }
        }
    }

    #[test]
    fn a_full_grid_is_one_blob_and_an_empty_one_none() {
        let mut lab = Labeller::default();
        let (mut cell, stat) = ([0u8; NP], [0u32; NP]);
        let mut n = 0;
        lab.label(&cell, &stat, &mut [0; CELL_WORDS], |_, _| n += 1);
        assert_eq!(n, 0);
        for y in 1..=CH {
            cell[y * PW + 1..][..CW].fill(CELL_SMOKE);
        }
        let mut got = Vec::new();
        lab.label(&cell, &stat, &mut [0; CELL_WORDS], |kind, b| got.push((kind, b.area, b.x1, b.y1)));
        assert_eq!(got, [(CELL_SMOKE, NC as u32, CW as u16 - 1, CH as u16 - 1)]);
    }
}
