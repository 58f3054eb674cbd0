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

const LOOKUP_BITS: u32 = 10;

const SKIP_BITS: u32 = 12;
const SKIP_END: u32 = 1 << 15;

/// In a fast entry: the run may end the block (EOB, or ZRL past coefficient 63), and then it is not an error.
const MAY_END: u32 = 0x8000;

/// A Huffman table: a 10-bit lookup (length << 8 | symbol, 0 = longer code), the canonical tables for the rest,
/// and `fast`: for the symbols whose code and extra bits fit those bits together, the whole decode in one entry
/// (value << 16 | flags and run << 8 | bits used; 0 = not).
struct Huffman {
    lookup: [u16; 1 << LOOKUP_BITS],
    fast: [u32; 1 << LOOKUP_BITS],
    /// AC tables: what the next 12 bits hold as whole symbols, for blocks whose AC values are not needed (a
    /// block read as one tile): bits used | positions advanced << 4 | END (an EOB among them); 0 = none.
    skip: [u16; 1 << SKIP_BITS],
    maxcode: [i32; 18],
    valoffset: [i32; 17],
    vals: [u8; 256],
}

impl Huffman {
    /// `ac`: the table codes run/size symbols (class 1), else DC sizes (class 0).
    fn new(bits: &[u8; 16], vals: &[u8], ac: bool) -> Result<Self, ScaledError> {
        let mut h = Huffman {
            lookup: [0; 1 << LOOKUP_BITS],
            fast: [0; 1 << LOOKUP_BITS],
            skip: [0; 1 << SKIP_BITS],
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
        for (p, f) in h.fast.iter_mut().enumerate() {
            let e = h.lookup[p];
            let len = u32::from(e >> 8);
            let (r, s) = if ac { (u32::from((e >> 4) & 15), u32::from(e & 15)) } else { (0, u32::from(e & 0xFF)) };
            if len == 0 || len + s > LOOKUP_BITS {
                continue;
            }
            let raw = ((p as u32) >> (LOOKUP_BITS - len - s)) & ((1 << s) - 1);
            let v = extend(raw, s);
            // A run/size symbol of size 0 is EOB, except ZRL (15/0): sixteen zeros, as a run of 15 and a zero.
            let run = match (ac, r, s) {
                (true, 15, 0) => 15 | MAY_END >> 8,
                (true, _, 0) => 64 | MAY_END >> 8,
                _ => r,
            };
            *f = (u32::from(v as i16 as u16) << 16) | (run << 8) | (len + s);
        }
        if ac {
            h.build_skip();
        }
        Ok(h)
    }

    /// Each skip entry: the whole fast symbols in its 12 bits, in order, up to an EOB or a ZRL (either ends the
    /// entry, so a ZRL past the block's end is handled as the one-symbol path handles it).
    fn build_skip(&mut self) {
        for p in 0..1usize << SKIP_BITS {
            let (mut used, mut adv, mut end) = (0u32, 0u32, false);
            while used < SKIP_BITS {
                let rest = SKIP_BITS - used;
                let window = ((p as u32) << used) & ((1 << SKIP_BITS) - 1);
                let f = self.fast[(window >> (SKIP_BITS - LOOKUP_BITS)) as usize];
                if f == 0 || f & 0xFF > rest {
                    break;
                }
                used += f & 0xFF;
                let run = (f >> 8) & 0x7F;
                if f & MAY_END != 0 {
                    if run == 15 {
                        adv += 16;
                    } else {
                        end = true;
                    }
                    break;
                }
                adv += run + 1;
            }
            if used > 0 {
                self.skip[p] = (used | adv << 4 | if end { SKIP_END } else { 0 }) as u16;
            }
        }
    }

    /// A symbol from the top of `word`, for codes the fast entry does not cover: (code length, symbol).
    #[inline(always)]
    fn symbol(&self, word: u64) -> Result<(u32, u8), ScaledError> {
        let e = self.lookup[(word >> (64 - LOOKUP_BITS)) as usize];
        if e != 0 {
            return Ok((u32::from(e >> 8), e as u8));
        }
        for len in LOOKUP_BITS + 1..=16 {
            let code = (word >> (64 - len)) as i32;
            if code <= self.maxcode[len as usize] {
                let i = (code + self.valoffset[len as usize]) as usize;
                return self.vals.get(i).map(|&v| (len, v)).ok_or(ScaledError::Corrupt("bad Huffman code"));
            }
        }
        Err(ScaledError::Corrupt("bad Huffman code"))
    }
}

/// The signed value of an `s`-bit magnitude category (T.81 F.2.2.1) read as `raw`; `s` <= 16.
#[inline(always)]
fn extend(raw: u32, s: u32) -> i32 {
    if s == 0 {
        return 0;
    }
    let v = raw as i32;
    if v < 1 << (s - 1) { v - (1 << s) + 1 } else { v }
}

/// The `s` bits after the top `len` bits of `word`; `len + s` <= 57.
#[inline(always)]
fn extra(word: u64, len: u32, s: u32) -> u32 {
    if s == 0 { 0 } else { ((word << len) >> (64 - s)) as u32 }
}

/// The entropy-coded data with the byte stuffing (FF 00) taken out, one restart interval after the other, and
/// eight zero bytes after the end, so that [`Reader`] can load eight bytes anywhere in the real data without a
/// test for stuffing or markers. Reused from frame to frame (no allocation once it has grown).
#[derive(Default)]
struct Entropy {
    data: Vec<u8>,
    /// Per interval, where its bytes end in `data` and whether a restart marker followed it.
    ends: Vec<(usize, bool)>,
}

impl Entropy {
    /// Takes the scan's bytes up to the first marker that is not a restart marker (or the end).
    fn load(&mut self, d: &[u8]) {
        self.data.clear();
        self.ends.clear();
        let mut i = 0;
        loop {
            let start = i;
            // Eight bytes at a time while none is FF (the usual case), then byte by byte to the FF.
            while let Some(chunk) = d.get(i..).and_then(|r| r.first_chunk::<8>()) {
                let x = !u64::from_ne_bytes(*chunk);
                if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0 {
                    break;
                }
                i += 8;
            }
            while d.get(i).is_some_and(|&b| b != 0xFF) {
                i += 1;
            }
            self.data.extend_from_slice(&d[start..i.min(d.len())]);
            if i >= d.len() {
                self.ends.push((self.data.len(), false));
                break;
            }
            if d.get(i + 1) == Some(&0x00) {
                self.data.push(0xFF);
                i += 2;
                continue;
            }
            // A marker, maybe after fill bytes (FF FF ...).
            while d.get(i) == Some(&0xFF) && d.get(i + 1) == Some(&0xFF) {
                i += 1;
            }
            let rst = d.get(i + 1).is_some_and(|m| (0xD0..=0xD7).contains(m));
            self.ends.push((self.data.len(), rst));
            if !rst {
                break;
            }
            i += 2;
        }
        self.data.extend_from_slice(&[0; 8]);
    }
}

/// Reads the unstuffed entropy data: a bit buffer whose top `n` bits are the next ones, refilled without a
/// branch before every symbol (at least 56 bits after a refill; a symbol with its extra bits takes at most 32),
/// so the chain from one symbol to the next is a table lookup and a shift.
struct Reader<'a> {
    d: &'a [u8],
    /// The next byte to load.
    at: usize,
    buf: u64,
    n: u32,
}

impl<'a> Reader<'a> {
    /// Bits consumed so far.
    #[inline(always)]
    fn pos(&self) -> usize {
        self.at * 8 - self.n as usize
    }

    /// Starts over at byte `at` (a restart interval's first byte).
    fn seek(&mut self, at: usize) {
        (self.at, self.buf, self.n) = (at, 0, 0);
    }

    #[inline(always)]
    fn refill(&mut self) {
        // Past the padded end the zero fill; the scan is refused once its position passes the real bits.
        let v = match self.d.get(self.at..).and_then(|s| s.first_chunk::<8>()) {
            Some(c) => u64::from_be_bytes(*c),
            None => 0,
        };
        self.buf |= v >> self.n;
        self.at += ((63 - self.n) >> 3) as usize;
        self.n |= 56;
    }

    #[inline(always)]
    fn consume(&mut self, len: u32) {
        self.buf <<= len;
        self.n -= len;
    }
}

/// [`block`] with `NN` tiles, from a component's weight rows and the shared accumulator.
fn block_n<const NN: usize>(
    r: &mut Reader,
    tables: (&Huffman, &Huffman),
    pred: &mut i32,
    w: &[f32],
    acc: &mut [f32; 64],
) -> Result<(), ScaledError> {
    let rows: &[[f32; NN]; 64] = w.as_chunks::<NN>().0.try_into().map_err(|_| ScaledError::Corrupt("weights"))?;
    let acc: &mut [f32; NN] = (&mut acc[..NN]).try_into().map_err(|_| ScaledError::Corrupt("tiles"))?;
    block(r, tables, pred, rows, acc)
}

/// A block's DC difference.
#[inline(always)]
fn dc_diff(r: &mut Reader, dc: &Huffman) -> Result<i32, ScaledError> {
    r.refill();
    let wd = r.buf;
    let f = dc.fast[(wd >> (64 - LOOKUP_BITS)) as usize];
    Ok(if f != 0 {
        r.consume(f & 0xFF);
        i32::from((f >> 16) as u16 as i16)
    } else {
        let (len, s) = dc.symbol(wd)?;
        let s = u32::from(s);
        if s > 16 {
            return Err(ScaledError::Corrupt("bad DC size"));
        }
        r.consume(len + s);
        extend(extra(wd, len, s), s)
    })
}

/// The weight rows of a block read as one tile whose AC coefficients add nothing.
const NO_AC: [[f32; 1]; 64] = [[0.0]; 64];

/// [`block`] for a block read as one tile (1/8 scale) whose AC coefficients add nothing: the DC only, the AC
/// symbols passed over a skip-table entry (up to 12 bits of whole symbols) at a time.
#[inline(always)]
fn block_dc(r: &mut Reader, (dc, ac): (&Huffman, &Huffman), pred: &mut i32, w0: f32) -> Result<f32, ScaledError> {
    *pred = pred.wrapping_add(dc_diff(r, dc)?);
    let tile = 128.0 + *pred as f32 * w0;
    let mut k = 1usize;
    'block: while k < 64 {
        r.refill();
        // At most two entries (24 bits) taken before the one-symbol path, which needs 32 of the 56 refilled.
        for _ in 0..3 {
            let e = u32::from(ac.skip[(r.buf >> (64 - SKIP_BITS)) as usize]);
            let adv = ((e >> 4) & 0x7F) as usize;
            if e == 0 || k + adv >= 64 {
                if !ac_symbol(r, ac, &NO_AC, &mut k, &mut [0.0])? {
                    break 'block;
                }
                continue 'block;
            }
            r.consume(e & 15);
            k += adv;
            if e & SKIP_END != 0 {
                break 'block;
            }
        }
    }
    Ok(tile)
}

/// Decodes one block from `r` into the tile values `acc` (128 + the coefficients times their weight
/// rows `w`, 64 rows in zigzag order; rows that contribute nothing are zero). `NN` tiles per block is a constant
/// so the row arithmetic is straight-line vector code.
#[inline(always)]
fn block<const NN: usize>(
    r: &mut Reader,
    (dc, ac): (&Huffman, &Huffman),
    pred: &mut i32,
    w: &[[f32; NN]; 64],
    acc: &mut [f32; NN],
) -> Result<(), ScaledError> {
    *pred = pred.wrapping_add(dc_diff(r, dc)?);
    let dcv = *pred as f32;
    // A local accumulator stays in registers; through `acc` every coefficient would store and reload it.
    let mut sum = [0f32; NN];
    for (a, &x) in sum.iter_mut().zip(&w[0]) {
        *a = 128.0 + dcv * x;
    }
    let mut k = 1usize;
    while k < 64 {
        r.refill();
        if !ac_symbol(r, ac, w, &mut k, &mut sum)? {
            break;
        }
        // A refill leaves at least 56 bits and a symbol takes at most 32: when the first took at most 24, a
        // second one is decoded without refilling (almost always, so the test predicts well).
        if k < 64 && r.n >= 32 && !ac_symbol(r, ac, w, &mut k, &mut sum)? {
            break;
        }
    }
    *acc = sum;
    Ok(())
}

/// One AC symbol (at least 32 bits buffered) added into the tile sums; false at the end of the block.
#[inline(always)]
fn ac_symbol<const NN: usize>(
    r: &mut Reader,
    ac: &Huffman,
    w: &[[f32; NN]; 64],
    k: &mut usize,
    sum: &mut [f32; NN],
) -> Result<bool, ScaledError> {
    let wd = r.buf;
    let f = ac.fast[(wd >> (64 - LOOKUP_BITS)) as usize];
    let (run, v) = if f != 0 {
        r.consume(f & 0xFF);
        let run = ((f >> 8) & 0x7F) as usize;
        if *k + run > 63 {
            if f & MAY_END != 0 {
                return Ok(false);
            }
            return Err(ScaledError::Corrupt("coefficient past the block"));
        }
        (run, f32::from((f >> 16) as u16 as i16))
    } else {
        let (len, rs) = ac.symbol(wd)?;
        let (run, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s == 0 {
            r.consume(len);
            *k += 16;
            return Ok(run == 15);
        }
        if *k + run > 63 {
            return Err(ScaledError::Corrupt("coefficient past the block"));
        }
        r.consume(len + s);
        (run, extend(extra(wd, len, s), s) as f32)
    };
    *k += run;
    for (a, &x) in sum.iter_mut().zip(&w[*k & 63]) {
        *a += v * x;
    }
    *k += 1;
    Ok(true)
}

/// A Huffman table and the DHT bytes (bit counts, then symbols) it was built from: cameras send the same tables
/// in every frame, so they are built once, not per frame.
struct Slot {
    key: [u8; 16 + 256],
    key_len: usize,
    table: Huffman,
}

type Slots = [[Option<Box<Slot>>; 4]; 2];

/// This frame's Huffman table of `class` (0 DC, 1 AC) and `id`.
fn table<'a>(huff: &'a Slots, present: &[[bool; 4]; 2], class: usize, id: usize) -> Option<&'a Huffman> {
    let slot = huff.get(class)?.get(id)?.as_deref()?;
    present[class][id].then_some(&slot.table)
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
    /// Huffman tables by class (DC, AC) and id, kept from frame to frame; `present` says which this frame has.
    huff: Slots,
    present: [[bool; 4]; 2],
    comps: [Component; 3],
    ncomp: usize,
    width: usize,
    height: usize,
    restart: usize,
    /// Per component: 64 rows (zigzag order) of nx·ny weights; a row whose weights are all rounding noise is
    /// zero, so the coefficient adds nothing.
    weights: [Vec<f32>; 3],
    /// Per component: read as one tile per block with every AC row zero (1/8 scale), so AC values are skipped.
    dc_only: [bool; 3],
    /// Tests only: read every block through the general path, to hold the skip path to it.
    #[cfg(test)]
    no_skip: bool,
    /// What each component's weights were built from (quantiser, nx, ny): most streams never change it.
    built: [([u16; 64], usize, usize); 3],
    /// Tile means of the IDCT basis (see [`tile_mean`]) for 1, 2, 4 and 8 tiles per block: [log2 n][tile][u].
    basis: Box<[[[f32; 8]; 8]; 4]>,
    planes: [Vec<u8>; 3],
    planes_width: usize,
    entropy: Entropy,
}

impl Default for ScaledDecoder {
    fn default() -> Self {
        ScaledDecoder {
            qt: [[0; 64]; 4],
            huff: Default::default(),
            present: [[false; 4]; 2],
            comps: [Component::default(); 3],
            ncomp: 0,
            width: 0,
            height: 0,
            restart: 0,
            weights: Default::default(),
            dc_only: [false; 3],
            #[cfg(test)]
            no_skip: false,
            built: [([0; 64], 0, 0); 3],
            basis: Box::new(std::array::from_fn(|l| {
                std::array::from_fn(|o| std::array::from_fn(|u| if o < 1 << l { tile_mean(1 << l, o, u) } else { 0.0 }))
            })),
            planes: Default::default(),
            planes_width: 0,
            entropy: Entropy::default(),
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
        self.present = [[false; 4]; 2];
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
            let key = &s[1..17 + count];
            let slot = &mut self.huff[usize::from(class)][id];
            if slot.as_ref().is_none_or(|t| t.key.get(..t.key_len) != Some(key)) {
                let mut new = [0; 16 + 256];
                new[..key.len()].copy_from_slice(key);
                let built = Slot { key: new, key_len: key.len(), table: Huffman::new(bits, vals, class == 1)? };
                match slot {
                    Some(b) => **b = built,
                    None => *slot = Some(Box::new(built)),
                }
            }
            self.present[usize::from(class)][id] = true;
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
            if table(&self.huff, &self.present, 0, c.td).is_none()
                || table(&self.huff, &self.present, 1, c.ta).is_none()
            {
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
                    if row.iter().all(|x| x.abs() <= 1e-6) {
                        row.fill(0.0);
                    }
                }
                self.dc_only[ci] = c.nx * c.ny == 1 && w[1..].iter().all(|&x| x == 0.0);
            }
            #[cfg(test)]
            if self.no_skip {
                self.dc_only[ci] = false;
            }
            let plane = &mut self.planes[ci];
            plane.clear();
            plane.resize(pw * ph, 0);
        }
        let comps = self.comps;
        self.entropy.load(data);
        let (d, ends) = (&self.entropy.data[..], &self.entropy.ends[..]);
        let mut r = Reader { d, at: 0, buf: 0, n: 0 };
        // The current restart interval, and where its real bits end.
        let mut seg = 0usize;
        let mut end = ends.first().map_or(0, |e| e.0 * 8);
        let mut pred = [0i32; 3];
        let mut acc = [0f32; 64];
        // A single-component scan is not interleaved: its MCU is one block (T.81 A.2.2).
        let (mx, my) = if single { (self.width.div_ceil(8), self.height.div_ceil(8)) } else { (mcux, mcuy) };
        let total = mx * my;
        for m in 0..total {
            if self.restart > 0 && m > 0 && m % self.restart == 0 {
                // An interval ends inside its last byte (the encoder pads fewer than 8 bits), at a restart marker.
                let pos = r.pos();
                if pos > end || end - pos >= 8 || !ends.get(seg).is_some_and(|e| e.1) {
                    return Err(ScaledError::Corrupt("restart marker missing or misplaced"));
                }
                r.seek(end / 8);
                seg += 1;
                end = ends.get(seg).map_or(end, |e| e.0 * 8);
                pred = [0; 3];
            }
            let (mcx, mcy) = (m % mx, m / mx);
            for (ci, c) in comps[..self.ncomp].iter().enumerate() {
                let (bh, bv) = if single { (1, 1) } else { (c.h, c.v) };
                let tables =
                    match (table(&self.huff, &self.present, 0, c.td), table(&self.huff, &self.present, 1, c.ta)) {
                        (Some(dc), Some(ac)) => (dc, ac),
                        _ => return Err(ScaledError::Corrupt("missing Huffman table")),
                    };
                let nn = c.nx * c.ny;
                let w = &self.weights[ci];
                for by in 0..bv {
                    for bx in 0..bh {
                        let p = &mut pred[ci];
                        match nn {
                            1 if self.dc_only[ci] => acc[0] = block_dc(&mut r, tables, p, w[0])?,
                            1 => block_n::<1>(&mut r, tables, p, w, &mut acc)?,
                            2 => block_n::<2>(&mut r, tables, p, w, &mut acc)?,
                            4 => block_n::<4>(&mut r, tables, p, w, &mut acc)?,
                            8 => block_n::<8>(&mut r, tables, p, w, &mut acc)?,
                            16 => block_n::<16>(&mut r, tables, p, w, &mut acc)?,
                            32 => block_n::<32>(&mut r, tables, p, w, &mut acc)?,
                            64 => block_n::<64>(&mut r, tables, p, w, &mut acc)?,
                            _ => return Err(ScaledError::Unsupported("sampling factors")),
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
            // A scan that reads past its real bits is truncated: stop now rather than decode the zero fill.
            if r.pos() > end {
                return Err(ScaledError::Corrupt("truncated scan"));
            }
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

    /// The 1/8 path passes over AC symbols several at a time (`block_dc`); on every fixture and on thousands of
    /// mutated ones (flips, inserts, deletes: corrupt data included) it gives exactly what decoding each symbol
    /// gives: the same bytes, or the same error.
    #[test]
    fn skipping_ac_symbols_changes_nothing() {
        let dir = fixtures::repo(fixtures::FRAMES);
        let mut frames: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(frames.len() >= 8);
        let mut x = crate::prng::XorShift64::new(7);
        let mut rnd = move || x.next() as usize;
        for i in 0..2000 {
            let mut m = frames[i % 8].clone();
            for _ in 0..1 + rnd() % 6 {
                let at = 600 + rnd() % (m.len() - 600);
                match rnd() % 3 {
                    0 => m[at] ^= 1 << (rnd() % 8),
                    1 => m.insert(at, rnd() as u8),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            frames.push(m);
        }
        let (mut fast, mut each) = (super::ScaledDecoder::default(), super::ScaledDecoder::default());
        each.no_skip = true;
        let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut same_ok = 0;
        for f in &frames {
            let ra = fast.decode(f, &mut a, |_, _| Ok(8)).unwrap();
            let rb = each.decode(f, &mut b, |_, _| Ok(8)).unwrap();
            assert_eq!(ra, rb);
            if let Ok((w, h, _)) = ra {
                assert!(a[..w * h * 3] == b[..w * h * 3]);
                same_ok += 1;
            }
        }
        assert!(same_ok >= 8, "{same_ok}");
    }
}
