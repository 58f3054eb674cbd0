//! Baseline JPEG decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, for the detector's sample grid.
//!
//! Why our own: the detector reads a 160×120 grid, so a full decode computes 16 pixels for every one it reads.
//! Here each 8×8 block's coefficients go straight into the averages of its 4×4, 2×2 or 1×1 output tiles: the
//! mean of an inverse DCT over a tile is a fixed linear function of the coefficients (even horizontal
//! frequencies cancel over a half block, and so on), so each decoded coefficient is multiplied into a small
//! weight row (dequantisation folded in) and no inverse DCT, upsampling or full-size buffer exists. The result
//! is the exact box average of what a full decode gives (before rounding), the same "block average" a YUYV
//! frame's samples are. Chroma blocks of subsampled components get proportionally more outputs per block, so
//! every plane is at the output size and nothing is upsampled.
//!
//! Scope: 8-bit baseline and extended Huffman sequential frames (SOF0/SOF1) with one interleaved scan, one or
//! three components, sampling factors dividing the largest one, restart intervals. That is what MJPEG webcams,
//! IP cameras and libjpeg's defaults produce. Anything else (progressive, arithmetic, 12-bit, CMYK,
//! non-interleaved scans) returns [`Unsupported`](ScaledError::Unsupported) and the caller decodes it at full
//! size with zune-jpeg instead. No `unsafe`; every index is checked or masked, and the caller still runs this
//! under the panic guard. The entropy data must end with real bits: a scan that needs the zero fill after its
//! end (a truncated frame) is an error, never a partly grey frame.

use super::jpeg::JpegError;

/// Why the scaled path could not decode a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ScaledError {
    /// A valid JPEG this path does not handle; decode at full size instead.
    Unsupported(&'static str),
    Corrupt(&'static str),
}

/// Natural (row-major) index of each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

const LOOKUP_BITS: u32 = 9;

/// A Huffman table: a 9-bit lookup (length << 8 | symbol, 0 = longer code) and the canonical tables for the rest.
#[derive(Clone)]
struct Huffman {
    lookup: [u16; 1 << LOOKUP_BITS],
    /// AC symbols whose code and extra bits fit the 9 bits together: value << 16 | run << 8 | bits used; 0 = not.
    fast_ac: [u32; 1 << LOOKUP_BITS],
    maxcode: [i32; 18],
    valoffset: [i32; 17],
    vals: [u8; 256],
}

impl Huffman {
    fn new(bits: &[u8; 16], vals: &[u8]) -> Result<Self, ScaledError> {
        let mut h = Huffman {
            lookup: [0; 1 << LOOKUP_BITS],
            fast_ac: [0; 1 << LOOKUP_BITS],
            maxcode: [-1; 18],
            valoffset: [0; 17],
            vals: [0; 256],
        };
        let n = vals.len().min(256);
        h.vals[..n].copy_from_slice(&vals[..n]);
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16usize {
            let count = usize::from(bits[len - 1]);
            h.valoffset[len] = k as i32 - code;
            for _ in 0..count {
                if k >= n || code >= (1 << len) {
                    return Err(ScaledError::Corrupt("bad Huffman table"));
                }
                if len as u32 <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len as u32;
                    let first = (code as usize) << shift;
                    for e in &mut h.lookup[first..first + (1 << shift)] {
                        *e = ((len as u16) << 8) | u16::from(h.vals[k]);
                    }
                }
                code += 1;
                k += 1;
            }
            h.maxcode[len] = if count > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        h.maxcode[17] = i32::MAX;
        for (p, f) in h.fast_ac.iter_mut().enumerate() {
            let e = h.lookup[p];
            let (len, r, s) = (u32::from(e >> 8), u32::from((e >> 4) & 15), u32::from(e & 15));
            if len > 0 && s > 0 && len + s <= LOOKUP_BITS {
                let raw = ((p as u32) >> (LOOKUP_BITS - len - s)) & ((1 << s) - 1);
                let v = if raw < 1 << (s - 1) { raw as i32 - (1 << s) + 1 } else { raw as i32 };
                *f = (u32::from(v as i16 as u16) << 16) | (r << 8) | (len + s);
            }
        }
        Ok(h)
    }
}

/// Reads the entropy-coded bytes: unstuffs FF 00, stops at any other marker and then feeds zero bits, counting
/// them so a scan that needed them can be refused.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
    at_marker: bool,
    fill_bits: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0, buf: 0, n: 0, at_marker: false, fill_bits: 0 }
    }

    /// Makes at least 32 bits available (a symbol and its extra bits).
    #[inline(always)]
    fn refill(&mut self) {
        if self.n >= 32 {
            return;
        }
        // Fast path: the next 8 bytes hold no 0xFF (no stuffing, no marker), so whole bytes go in at once.
        if let Some(&chunk) = self.data.get(self.pos..).and_then(|d| d.first_chunk::<8>()) {
            let v = u64::from_be_bytes(chunk);
            let x = !v;
            if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 == 0 {
                let k = (63 - self.n) / 8;
                self.buf |= (v >> (64 - 8 * k)) << (64 - 8 * k - self.n);
                self.pos += k as usize;
                self.n += 8 * k;
                return;
            }
        }
        self.refill_slow();
    }

    #[cold]
    fn refill_slow(&mut self) {
        while self.n <= 56 {
            let mut byte = 0u8;
            if self.at_marker {
                self.fill_bits += 8;
            } else {
                match self.data.get(self.pos..self.pos + 2) {
                    Some(&[0xFF, 0x00]) => {
                        byte = 0xFF;
                        self.pos += 2;
                    }
                    Some(&[0xFF, _]) => {
                        self.at_marker = true;
                        self.fill_bits += 8;
                    }
                    _ => match self.data.get(self.pos) {
                        Some(&b) => {
                            byte = b;
                            self.pos += 1;
                        }
                        None => {
                            self.at_marker = true;
                            self.fill_bits += 8;
                        }
                    },
                }
            }
            self.buf |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
    }

    #[inline(always)]
    fn peek(&self, len: u32) -> u32 {
        (self.buf >> (64 - len)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, len: u32) {
        self.buf <<= len;
        self.n -= len;
    }

    /// One Huffman symbol; the caller has refilled (at least 32 bits buffered).
    #[inline(always)]
    fn symbol(&mut self, h: &Huffman) -> Result<u8, ScaledError> {
        let e = h.lookup[self.peek(LOOKUP_BITS) as usize & ((1 << LOOKUP_BITS) - 1)];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return Ok(e as u8);
        }
        for len in LOOKUP_BITS + 1..=16 {
            let code = self.peek(len) as i32;
            if code <= h.maxcode[len as usize] {
                self.consume(len);
                let i = (code + h.valoffset[len as usize]) as usize;
                return h.vals.get(i).copied().ok_or(ScaledError::Corrupt("bad Huffman code"));
            }
        }
        Err(ScaledError::Corrupt("bad Huffman code"))
    }

    /// The signed value of an `s`-bit magnitude category (T.81 F.2.2.1); `s` <= 16.
    #[inline(always)]
    fn extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.peek(s) as i32;
        self.consume(s);
        if v < 1 << (s - 1) { v - (1 << s) + 1 } else { v }
    }

    /// Whether the scan so far used only real bits (not the zero fill after its end).
    fn real(&self) -> bool {
        self.fill_bits <= self.n
    }

    /// At a restart interval's end: drop the partial byte (fewer than 8 real bits may be left: the reader never
    /// loads a marker, so everything else buffered is padding), step over the RSTn marker.
    fn restart(&mut self) -> Result<(), ScaledError> {
        if !self.real() || (!self.at_marker && self.n >= 8) {
            return Err(ScaledError::Corrupt("restart marker missing or misplaced"));
        }
        let mut p = self.pos;
        while self.data.get(p) == Some(&0xFF) && self.data.get(p + 1) == Some(&0xFF) {
            p += 1;
        }
        match self.data.get(p..p + 2) {
            Some(&[0xFF, m]) if (0xD0..=0xD7).contains(&m) => self.pos = p + 2,
            _ => return Err(ScaledError::Corrupt("missing restart marker")),
        }
        self.buf = 0;
        self.n = 0;
        self.at_marker = false;
        self.fill_bits = 0;
        Ok(())
    }
}

#[derive(Clone, Copy, Default)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    td: usize,
    ta: usize,
    /// Output tiles per block, across and down (1, 2, 4 or 8).
    nx: usize,
    ny: usize,
}

/// Reusable state of the scaled decoder: tables, the weight rows and the output planes (grown once).
pub struct ScaledDecoder {
    qt: [[u16; 64]; 4],
    dc: [Option<Box<Huffman>>; 4],
    ac: [Option<Box<Huffman>>; 4],
    comps: [Component; 3],
    ncomp: usize,
    width: usize,
    height: usize,
    restart: usize,
    /// Per component: 64 rows (zigzag order) of nx·ny weights, and whether each row is non-zero.
    weights: [Vec<f32>; 3],
    used: [[bool; 64]; 3],
    /// What each component's weights were built from (quantiser, nx, ny): most streams never change it.
    built: [([u16; 64], usize, usize); 3],
    /// Tile means of the IDCT basis (see [`tile_mean`]) for 1, 2, 4 and 8 tiles per block: [log2 n][tile][u].
    basis: Box<[[[f32; 8]; 8]; 4]>,
    planes: [Vec<u8>; 3],
    planes_width: usize,
}

impl Default for ScaledDecoder {
    fn default() -> Self {
        ScaledDecoder {
            qt: [[0; 64]; 4],
            dc: Default::default(),
            ac: Default::default(),
            comps: [Component::default(); 3],
            ncomp: 0,
            width: 0,
            height: 0,
            restart: 0,
            weights: Default::default(),
            used: [[false; 64]; 3],
            built: [([0; 64], 0, 0); 3],
            basis: Box::new(std::array::from_fn(|l| {
                std::array::from_fn(|o| std::array::from_fn(|u| if o < 1 << l { tile_mean(1 << l, o, u) } else { 0.0 }))
            })),
            planes: Default::default(),
            planes_width: 0,
        }
    }
}

fn be16(d: &[u8], at: usize) -> Result<usize, ScaledError> {
    d.get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(ScaledError::Corrupt("short segment"))
}

/// Mean over output tile `o` (of `n` per block) of the 1-D IDCT basis function `u`, with its C(u)/2 factor.
fn tile_mean(n: usize, o: usize, u: usize) -> f32 {
    let len = 8 / n;
    let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
    let sum: f64 =
        (o * len..(o + 1) * len).map(|x| ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()).sum();
    (c / 2.0 * sum / len as f64) as f32
}

impl ScaledDecoder {
    /// Decodes `jpeg` (with Huffman tables, see `JpegDecoder`) into RGB24 `out` at 1/denom of its size, where
    /// `pick` sees the full size first and returns the denominator (2, 4 or 8; 1 means full size, which this
    /// path leaves to zune-jpeg) or refuses the frame. `out` must hold ceil(w/denom)·ceil(h/denom)·3 bytes.
    /// Returns the output size and the denominator.
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        out: &mut [u8],
        pick: impl FnOnce(usize, usize) -> Result<usize, JpegError>,
    ) -> Result<Result<(usize, usize, usize), ScaledError>, JpegError> {
        let scan = match self.headers(jpeg) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let denom = pick(self.width, self.height)?;
        if ![2, 4, 8].contains(&denom) {
            return Ok(Err(ScaledError::Unsupported("full size")));
        }
        let (ow, oh) = (self.width.div_ceil(denom), self.height.div_ceil(denom));
        let need = ow * oh * 3;
        if out.len() < need {
            return Err(JpegError::BufferTooSmall { need, have: out.len() });
        }
        Ok(self.scan(jpeg.get(scan..).unwrap_or_default(), denom).map(|()| {
            self.convert(&mut out[..need], ow, oh);
            (ow, oh, denom)
        }))
    }

    /// Reads the segments up to the first SOS; returns the offset of the entropy-coded data.
    fn headers(&mut self, d: &[u8]) -> Result<usize, ScaledError> {
        self.ncomp = 0;
        self.restart = 0;
        self.dc = Default::default();
        self.ac = Default::default();
        if d.get(..2) != Some(&[0xFF, 0xD8]) {
            return Err(ScaledError::Corrupt("no SOI"));
        }
        let mut pos = 2;
        loop {
            while d.get(pos) == Some(&0xFF) && d.get(pos + 1) == Some(&0xFF) {
                pos += 1;
            }
            if d.get(pos) != Some(&0xFF) {
                return Err(ScaledError::Corrupt("marker expected"));
            }
            let code = *d.get(pos + 1).ok_or(ScaledError::Corrupt("short"))?;
            pos += 2;
            if matches!(code, 0x01 | 0xD0..=0xD7) {
                continue;
            }
            let len = be16(d, pos)?;
            let seg = d.get(pos + 2..pos + len).filter(|_| len >= 2).ok_or(ScaledError::Corrupt("short segment"))?;
            match code {
                0xC0 | 0xC1 => self.frame(seg)?,
                0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return Err(ScaledError::Unsupported("not a baseline Huffman frame"));
                }
                0xC4 => self.tables(seg)?,
                0xDB => self.quant(seg)?,
                0xDD => self.restart = be16(seg, 0)?,
                0xDA => {
                    self.scan_header(seg)?;
                    return Ok(pos + len);
                }
                0xD8 | 0xD9 => return Err(ScaledError::Corrupt("no scan")),
                _ => {}
            }
            pos += len;
        }
    }

    fn frame(&mut self, s: &[u8]) -> Result<(), ScaledError> {
        if s.first() != Some(&8) {
            return Err(ScaledError::Unsupported("not 8-bit"));
        }
        self.height = be16(s, 1)?;
        self.width = be16(s, 3)?;
        let n = usize::from(*s.get(5).ok_or(ScaledError::Corrupt("short SOF"))?);
        if n != 1 && n != 3 {
            return Err(ScaledError::Unsupported("component count"));
        }
        if self.width == 0 || self.height == 0 {
            return Err(ScaledError::Unsupported("height defined by DNL"));
        }
        for i in 0..n {
            let c = s.get(6 + 3 * i..9 + 3 * i).ok_or(ScaledError::Corrupt("short SOF"))?;
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return Err(ScaledError::Corrupt("bad component"));
            }
            self.comps[i] = Component { id: c[0], h, v, tq: usize::from(c[2]), ..Component::default() };
        }
        self.ncomp = n;
        Ok(())
    }

    fn tables(&mut self, mut s: &[u8]) -> Result<(), ScaledError> {
        while let Some(&tc_th) = s.first() {
            let bits: &[u8; 16] =
                s.get(1..17).and_then(|b| b.try_into().ok()).ok_or(ScaledError::Corrupt("short DHT"))?;
            let count: usize = bits.iter().map(|&b| usize::from(b)).sum();
            let vals = s.get(17..17 + count).ok_or(ScaledError::Corrupt("short DHT"))?;
            let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
            if class > 1 || id > 3 || count > 256 {
                return Err(ScaledError::Corrupt("bad DHT"));
            }
            let t = Some(Box::new(Huffman::new(bits, vals)?));
            if class == 0 {
                self.dc[id] = t
            } else {
                self.ac[id] = t
            }
            s = &s[17 + count..];
        }
        Ok(())
    }

    fn quant(&mut self, mut s: &[u8]) -> Result<(), ScaledError> {
        while let Some(&pq_tq) = s.first() {
            let (wide, id) = (pq_tq >> 4 != 0, usize::from(pq_tq & 15));
            let n = if wide { 128 } else { 64 };
            let body = s.get(1..1 + n).ok_or(ScaledError::Corrupt("short DQT"))?;
            let t = self.qt.get_mut(id).ok_or(ScaledError::Corrupt("bad DQT"))?;
            for (k, q) in t.iter_mut().enumerate() {
                *q = if wide { u16::from_be_bytes([body[2 * k], body[2 * k + 1]]) } else { u16::from(body[k]) };
            }
            s = &s[1 + n..];
        }
        Ok(())
    }

    fn scan_header(&mut self, s: &[u8]) -> Result<(), ScaledError> {
        let n = usize::from(*s.first().ok_or(ScaledError::Corrupt("short SOS"))?);
        if self.ncomp == 0 {
            return Err(ScaledError::Corrupt("scan before frame"));
        }
        if n != self.ncomp {
            return Err(ScaledError::Unsupported("non-interleaved scans"));
        }
        for i in 0..n {
            let c = s.get(1 + 2 * i..3 + 2 * i).ok_or(ScaledError::Corrupt("short SOS"))?;
            let comp = self.comps[..self.ncomp].iter_mut().find(|k| k.id == c[0]);
            let comp = comp.ok_or(ScaledError::Corrupt("unknown scan component"))?;
            (comp.td, comp.ta) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if comp.td > 3 || comp.ta > 3 {
                return Err(ScaledError::Corrupt("bad table selector"));
            }
        }
        let tail = s.get(1 + 2 * n..4 + 2 * n).ok_or(ScaledError::Corrupt("short SOS"))?;
        if tail != [0, 63, 0] {
            return Err(ScaledError::Unsupported("spectral selection"));
        }
        Ok(())
    }

    /// Decodes every MCU into the planes at 1/`denom`.
    fn scan(&mut self, data: &[u8], denom: usize) -> Result<(), ScaledError> {
        let n = 8 / denom;
        let comps = &mut self.comps[..self.ncomp];
        let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
        let (mcux, mcuy) = (self.width.div_ceil(8 * hmax), self.height.div_ceil(8 * vmax));
        let single = comps.len() == 1;
        let pw = if single { self.width.div_ceil(8) * n } else { mcux * hmax * n };
        let ph = if single { self.height.div_ceil(8) * n } else { mcuy * vmax * n };
        for (ci, c) in comps.iter_mut().enumerate() {
            if hmax % c.h != 0 || vmax % c.v != 0 || n * hmax / c.h > 8 || n * vmax / c.v > 8 {
                return Err(ScaledError::Unsupported("sampling factors"));
            }
            (c.nx, c.ny) = if single { (n, n) } else { (n * hmax / c.h, n * vmax / c.v) };
            if self.dc[c.td].is_none() || self.ac[c.ta].is_none() {
                return Err(ScaledError::Corrupt("missing Huffman table"));
            }
            let q = &self.qt[c.tq];
            if self.built[ci] != (*q, c.nx, c.ny) || self.weights[ci].len() != 64 * c.nx * c.ny {
                self.built[ci] = (*q, c.nx, c.ny);
                let (bx, by) =
                    (&self.basis[c.nx.trailing_zeros() as usize], &self.basis[c.ny.trailing_zeros() as usize]);
                let w = &mut self.weights[ci];
                w.clear();
                w.resize(64 * c.nx * c.ny, 0.0);
                for k in 0..64 {
                    let nat = usize::from(ZIGZAG[k]);
                    let (v, u) = (nat / 8, nat % 8);
                    let row = &mut w[k * c.nx * c.ny..(k + 1) * c.nx * c.ny];
                    for oy in 0..c.ny {
                        for ox in 0..c.nx {
                            row[oy * c.nx + ox] = f32::from(q[k]) * by[oy][v] * bx[ox][u];
                        }
                    }
                    self.used[ci][k] = row.iter().any(|x| x.abs() > 1e-6);
                }
            }
            let plane = &mut self.planes[ci];
            plane.clear();
            plane.resize(pw * ph, 0);
        }
        let comps = self.comps;
        let mut bits = Bits::new(data);
        let mut pred = [0i32; 3];
        let mut acc = [0f32; 64];
        // A single-component scan is not interleaved: its MCU is one block (T.81 A.2.2).
        let (mx, my) = if single { (self.width.div_ceil(8), self.height.div_ceil(8)) } else { (mcux, mcuy) };
        let total = mx * my;
        for m in 0..total {
            if self.restart > 0 && m > 0 && m % self.restart == 0 {
                bits.restart()?;
                pred = [0; 3];
            }
            let (mcx, mcy) = (m % mx, m / mx);
            for (ci, c) in comps[..self.ncomp].iter().enumerate() {
                let (bh, bv) = if single { (1, 1) } else { (c.h, c.v) };
                let (dc, ac) = match (&self.dc[c.td], &self.ac[c.ta]) {
                    (Some(dc), Some(ac)) => (dc, ac),
                    _ => return Err(ScaledError::Corrupt("missing Huffman table")),
                };
                let nn = c.nx * c.ny;
                let w = &self.weights[ci];
                let used = &self.used[ci];
                for by in 0..bv {
                    for bx in 0..bh {
                        acc[..nn].fill(128.0);
                        bits.refill();
                        let s = u32::from(bits.symbol(dc)?);
                        if s > 16 {
                            return Err(ScaledError::Corrupt("bad DC size"));
                        }
                        pred[ci] = pred[ci].wrapping_add(bits.extend(s));
                        let dcv = pred[ci] as f32;
                        for (a, &x) in acc[..nn].iter_mut().zip(&w[..nn]) {
                            *a += dcv * x;
                        }
                        let mut k = 1;
                        while k < 64 {
                            bits.refill();
                            let fast = ac.fast_ac[bits.peek(LOOKUP_BITS) as usize & ((1 << LOOKUP_BITS) - 1)];
                            if fast != 0 {
                                bits.consume(fast & 0xFF);
                                k += ((fast >> 8) & 0xFF) as usize;
                                if k > 63 {
                                    return Err(ScaledError::Corrupt("coefficient past the block"));
                                }
                                if used[k] {
                                    let v = f32::from((fast >> 16) as u16 as i16);
                                    for (a, &x) in acc[..nn].iter_mut().zip(&w[k * nn..(k + 1) * nn]) {
                                        *a += v * x;
                                    }
                                }
                                k += 1;
                                continue;
                            }
                            let rs = bits.symbol(ac)?;
                            let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
                            if s == 0 {
                                if r != 15 {
                                    break;
                                }
                                k += 16;
                                continue;
                            }
                            k += r;
                            if k > 63 {
                                return Err(ScaledError::Corrupt("coefficient past the block"));
                            }
                            let v = bits.extend(s);
                            if used[k] {
                                let v = v as f32;
                                for (a, &x) in acc[..nn].iter_mut().zip(&w[k * nn..(k + 1) * nn]) {
                                    *a += v * x;
                                }
                            }
                            k += 1;
                        }
                        let (x0, y0) = ((mcx * bh + bx) * c.nx, (mcy * bv + by) * c.ny);
                        let plane = &mut self.planes[ci];
                        for oy in 0..c.ny {
                            let at = (y0 + oy) * pw + x0;
                            if let Some(dst) = plane.get_mut(at..at + c.nx) {
                                for (d, &a) in dst.iter_mut().zip(&acc[oy * c.nx..(oy + 1) * c.nx]) {
                                    *d = (a + 0.5).clamp(0.0, 255.0) as u8;
                                }
                            }
                        }
                    }
                }
            }
        }
        if !bits.real() {
            return Err(ScaledError::Corrupt("truncated scan"));
        }
        self.planes_width = pw;
        Ok(())
    }

    /// Planes → RGB24 (JFIF full-range YCbCr; grey frames copy Y).
    fn convert(&self, out: &mut [u8], ow: usize, oh: usize) {
        let pw = self.planes_width;
        for y in 0..oh {
            let row = &mut out[y * ow * 3..(y + 1) * ow * 3];
            let at = y * pw;
            let yy = self.planes[0].get(at..at + ow).unwrap_or_default();
            if self.ncomp == 1 {
                for (px, &l) in row.chunks_exact_mut(3).zip(yy) {
                    px.fill(l);
                }
                continue;
            }
            let cb = self.planes[1].get(at..at + ow).unwrap_or_default();
            let cr = self.planes[2].get(at..at + ow).unwrap_or_default();
            for (((px, &l), &b), &r) in row.chunks_exact_mut(3).zip(yy).zip(cb).zip(cr) {
                let (l, b, r) = (i32::from(l) << 16, i32::from(b) - 128, i32::from(r) - 128);
                let clip = |x: i32| ((x + 32768) >> 16).clamp(0, 255) as u8;
                px[0] = clip(l + 91_881 * r);
                px[1] = clip(l - 22_554 * b - 46_802 * r);
                px[2] = clip(l + 116_130 * b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::camera::jpeg::{JpegDecoder, analysis_denom};
    use crate::fixtures;
    use crate::pixels::{box_average, load_rgb};

    /// Mean and largest absolute difference per channel value between two images.
    fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
        let sum: u64 = a.iter().zip(b).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
        (sum as f64 / a.len() as f64, a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap_or(0))
    }

    /// Every repo fixture at every scale: the DCT-domain tiles are the box averages of the full decode (up to
    /// rounding and zune-jpeg's chroma upsampling filter, which the tiles do not apply).
    #[test]
    fn scaled_tiles_are_box_averages_of_the_full_decode() {
        let dir = fixtures::repo(fixtures::FRAMES);
        let mut d = JpegDecoder::new();
        let mut s = super::ScaledDecoder::default();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "jpg") {
                continue;
            }
            let j = std::fs::read(&p).unwrap();
            let mut full = Vec::new();
            let (w, h) = load_rgb(&mut d, &j, &mut full).unwrap();
            for denom in [2, 4, 8] {
                let (ow, oh) = (w.div_ceil(denom), h.div_ceil(denom));
                let mut want = vec![0u8; ow * oh * 3];
                box_average(&full, w, h, denom, &mut want);
                let mut got = vec![0u8; ow * oh * 3];
                let r = s.decode(&j, &mut got, |_, _| Ok(denom)).unwrap().unwrap();
                assert_eq!(r, (ow, oh, denom));
                let (mean, max) = diff(&got, &want);
                println!("{} 1/{denom}: mean {mean:.3} max {max}", p.display());
                assert!(mean < 0.6, "{p:?} 1/{denom}: mean difference {mean}");
                assert!(max < 32, "{p:?} 1/{denom}: largest difference {max}");
            }
            n += 1;
        }
        assert!(n >= 8);
        assert_eq!(analysis_denom(640, 480), 4);
        assert_eq!(analysis_denom(1920, 1080), 8);
        assert_eq!(analysis_denom(1280, 720), 4);
        assert_eq!(analysis_denom(416, 416), 2);
        assert_eq!(analysis_denom(300, 200), 1);
    }
}
