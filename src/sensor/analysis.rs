//! Per-frame analysis of a 24×32 thermal grid with fixed buffers: min/max/mean, hot clusters (4-connected
//! components above a threshold, largest first), the rate of rise of the hottest spot over a time window
//! (least squares, °C/min), and sensor-fault detection (frozen frames, dead or impossible readings).

use super::proto::{GRID_H, GRID_W, PIXELS};

pub const MAX_CLUSTERS: usize = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cluster {
    pub pixels: u16,
    pub max_c: f32,
    pub mean_c: f32,
    /// (row, col) of the temperature-weighted centre.
    pub centroid: (f32, f32),
    /// (row0, col0, row1, col1), inclusive.
    pub bbox: (u8, u8, u8, u8),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FrameStats {
    pub min_c: f32,
    pub max_c: f32,
    pub mean_c: f32,
    clusters: [Cluster; MAX_CLUSTERS],
    count: usize,
    /// Clusters found in all, including those beyond the `MAX_CLUSTERS` kept.
    pub cluster_total: u16,
}

impl FrameStats {
    /// The largest clusters, largest first.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters[..self.count]
    }
}

/// Work buffers for `analyse`, allocated once per device.
pub struct Scratch {
    seen: Box<[bool; PIXELS]>,
    stack: Box<[u16; PIXELS]>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { seen: Box::new([false; PIXELS]), stack: Box::new([0; PIXELS]) }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

pub fn analyse(grid: &[f32; PIXELS], hot_c: f32, s: &mut Scratch) -> FrameStats {
    let mut st = FrameStats { min_c: f32::INFINITY, max_c: f32::NEG_INFINITY, ..Default::default() };
    let mut sum = 0f64;
    for &t in grid.iter() {
        st.min_c = st.min_c.min(t);
        st.max_c = st.max_c.max(t);
        sum += t as f64;
    }
    st.mean_c = (sum / PIXELS as f64) as f32;
    s.seen.fill(false);
    for start in 0..PIXELS {
        if s.seen[start] || grid[start] < hot_c {
            continue;
        }
        // Iterative flood fill: no recursion, no allocation.
        let mut top = 0;
        s.stack[top] = start as u16;
        top += 1;
        s.seen[start] = true;
        let mut c = Cluster { max_c: f32::NEG_INFINITY, bbox: (u8::MAX, u8::MAX, 0, 0), ..Default::default() };
        let (mut wsum, mut rsum, mut csum, mut tsum) = (0f64, 0f64, 0f64, 0f64);
        while top > 0 {
            top -= 1;
            let i = s.stack[top] as usize;
            let (r, col) = (i / GRID_W, i % GRID_W);
            let t = grid[i];
            c.pixels += 1;
            c.max_c = c.max_c.max(t);
            tsum += t as f64;
            let w = (t - hot_c + 1.0).max(1.0) as f64;
            wsum += w;
            rsum += w * r as f64;
            csum += w * col as f64;
            c.bbox = (c.bbox.0.min(r as u8), c.bbox.1.min(col as u8), c.bbox.2.max(r as u8), c.bbox.3.max(col as u8));
            let neighbours = [
                (r > 0).then(|| i - GRID_W),
                (r + 1 < GRID_H).then(|| i + GRID_W),
                (col > 0).then(|| i - 1),
                (col + 1 < GRID_W).then(|| i + 1),
            ];
            for n in neighbours.into_iter().flatten() {
                if !s.seen[n] && grid[n] >= hot_c {
                    s.seen[n] = true;
                    s.stack[top] = n as u16;
                    top += 1;
                }
            }
        }
        c.mean_c = (tsum / c.pixels as f64) as f32;
        c.centroid = ((rsum / wsum) as f32, (csum / wsum) as f32);
        st.cluster_total += 1;
        insert_cluster(&mut st, c);
    }
    st
}

fn insert_cluster(st: &mut FrameStats, c: Cluster) {
    let pos = st.clusters[..st.count].iter().position(|x| x.pixels < c.pixels).unwrap_or(st.count);
    if pos >= MAX_CLUSTERS {
        return;
    }
    let end = st.count.min(MAX_CLUSTERS - 1);
    st.clusters.copy_within(pos..end, pos + 1);
    st.clusters[pos] = c;
    st.count = (st.count + 1).min(MAX_CLUSTERS);
}

const RISE_SAMPLES: usize = 256;

/// Rate of rise over a sliding time window, from a fixed ring of samples.
pub struct RiseTracker {
    window: f64,
    t: Box<[f64; RISE_SAMPLES]>,
    v: Box<[f32; RISE_SAMPLES]>,
    head: usize,
    len: usize,
}

impl RiseTracker {
    pub fn new(window_secs: f32) -> Self {
        RiseTracker {
            window: window_secs.max(1.0) as f64,
            t: Box::new([0.0; RISE_SAMPLES]),
            v: Box::new([0.0; RISE_SAMPLES]),
            head: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, t_secs: f64, value_c: f32) {
        if !value_c.is_finite() {
            return;
        }
        let i = (self.head + self.len) % RISE_SAMPLES;
        self.t[i] = t_secs;
        self.v[i] = value_c;
        if self.len < RISE_SAMPLES {
            self.len += 1;
        } else {
            self.head = (self.head + 1) % RISE_SAMPLES;
        }
        while self.len > 0 && t_secs - self.t[self.head] > self.window {
            self.head = (self.head + 1) % RISE_SAMPLES;
            self.len -= 1;
        }
    }

    /// Least-squares slope in °C/min; None until at least 3 samples span a fifth of the window.
    pub fn rate_c_per_min(&self) -> Option<f32> {
        if self.len < 3 {
            return None;
        }
        let at = |k: usize| (self.head + k) % RISE_SAMPLES;
        let span = self.t[at(self.len - 1)] - self.t[self.head];
        if span < self.window / 5.0 {
            return None;
        }
        let n = self.len as f64;
        let (mut st, mut sv) = (0.0, 0.0);
        for k in 0..self.len {
            st += self.t[at(k)];
            sv += self.v[at(k)] as f64;
        }
        let (mt, mv) = (st / n, sv / n);
        let (mut num, mut den) = (0.0, 0.0);
        for k in 0..self.len {
            let dt = self.t[at(k)] - mt;
            num += dt * (self.v[at(k)] as f64 - mv);
            den += dt * dt;
        }
        (den > 0.0).then(|| (num / den * 60.0) as f32)
    }
}

/// FNV-1a over 16-bit words: enough to notice that a frame or an EEPROM image repeats or changed.
pub fn fnv1a(words: &[u16]) -> u64 {
    words.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The same pixel words this many frames in a row: the sensor or its bridge is stuck.
    Frozen { frames: u32 },
    /// Readings no working sensor produces.
    Dead(&'static str),
}

/// Frames in a row with identical pixel words before the sensor counts as frozen. A real MLX90640 has
/// noise of a few counts on every pixel, so even two identical frames are suspicious; five is certain.
pub const FROZEN_FRAMES: u32 = 5;

#[derive(Debug, Default)]
pub struct Health {
    last_hash: Option<u64>,
    repeats: u32,
}

impl Health {
    pub fn check(&mut self, raw_pixels: &[u16], temps: &[f32; PIXELS]) -> Option<Fault> {
        let h = fnv1a(raw_pixels);
        if self.last_hash == Some(h) {
            self.repeats += 1;
        } else {
            self.repeats = 0;
            self.last_hash = Some(h);
        }
        if self.repeats + 1 >= FROZEN_FRAMES {
            return Some(Fault::Frozen { frames: self.repeats + 1 });
        }
        if temps.iter().any(|t| !t.is_finite()) {
            return Some(Fault::Dead("non-finite temperature"));
        }
        let impossible = temps.iter().filter(|&&t| !(-40.0..=400.0).contains(&t)).count();
        if impossible > PIXELS / 10 {
            return Some(Fault::Dead("readings outside -40..400 °C"));
        }
        let first = raw_pixels.first().copied();
        if raw_pixels.iter().all(|&w| Some(w) == first) {
            return Some(Fault::Dead("every pixel identical"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_with(spots: &[(usize, usize, usize, f32)]) -> [f32; PIXELS] {
        let mut g = [22.0f32; PIXELS];
        for &(r0, c0, size, t) in spots {
            for r in r0..r0 + size {
                for c in c0..c0 + size {
                    g[r * GRID_W + c] = t;
                }
            }
        }
        g
    }

    #[test]
    fn two_blobs_are_two_clusters_largest_first() {
        let g = grid_with(&[(2, 2, 2, 80.0), (10, 20, 3, 120.0)]);
        let st = analyse(&g, 50.0, &mut Scratch::new());
        assert_eq!(st.clusters().len(), 2);
        assert_eq!(st.clusters()[0].pixels, 9);
        assert_eq!(st.clusters()[0].max_c, 120.0);
        assert_eq!(st.clusters()[0].bbox, (10, 20, 12, 22));
        assert_eq!(st.clusters()[1].pixels, 4);
        assert!((st.clusters()[0].centroid.0 - 11.0).abs() < 0.01);
        assert_eq!(st.max_c, 120.0);
        assert_eq!(st.min_c, 22.0);
    }

    #[test]
    fn more_than_eight_clusters_keeps_the_largest() {
        let mut spots = Vec::new();
        for k in 0..10 {
            spots.push((2 * (k % 5) * 2, 16 * (k / 5), 1 + (k % 3), 70.0));
        }
        let st = analyse(&grid_with(&spots), 50.0, &mut Scratch::new());
        assert_eq!(st.cluster_total, 10);
        assert_eq!(st.clusters().len(), MAX_CLUSTERS);
        assert!(st.clusters().windows(2).all(|w| w[0].pixels >= w[1].pixels));
    }

    #[test]
    fn rate_of_rise_of_a_ramp() {
        let mut r = RiseTracker::new(60.0);
        assert_eq!(r.rate_c_per_min(), None);
        for k in 0..120 {
            let t = k as f64 * 0.5;
            r.push(t, 20.0 + 0.5 * t as f32); // 30 °C/min
        }
        let rate = r.rate_c_per_min().unwrap();
        assert!((rate - 30.0).abs() < 1.0, "{rate}");
        // Old samples leave the window: a plateau brings the rate back to zero.
        for k in 120..400 {
            r.push(k as f64 * 0.5, 80.0);
        }
        assert!(r.rate_c_per_min().unwrap().abs() < 0.5);
    }

    #[test]
    fn frozen_and_dead_sensors_are_faults() {
        let mut h = Health::default();
        let temps = [25.0f32; PIXELS];
        let mut raw = [0u16; PIXELS];
        for (i, w) in raw.iter_mut().enumerate() {
            *w = 0xFF00 + (i % 50) as u16;
        }
        for k in 0..FROZEN_FRAMES - 1 {
            assert_eq!(h.check(&raw, &temps), None, "frame {k}");
        }
        assert_eq!(h.check(&raw, &temps), Some(Fault::Frozen { frames: FROZEN_FRAMES }));
        raw[0] ^= 1;
        assert_eq!(h.check(&raw, &temps), None, "a changing frame clears it");
        let mut nan = temps;
        nan[5] = f32::NAN;
        raw[1] ^= 1;
        assert!(matches!(h.check(&raw, &nan), Some(Fault::Dead(_))));
        assert!(matches!(h.check(&[7u16; PIXELS], &temps), Some(Fault::Dead(_))));
    }
}
