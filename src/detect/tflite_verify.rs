//! A bounds check of a `.tflite` flatbuffer before the LiteRT CompiledModel API sees it. The classic TfLite C
//! API verifies a model file itself (a corrupt file is a null model); LiteRT 1.x's `LiteRtCreateModelFromFile`
//! does not, and a truncated or noisy file crashes the process (a segfault, or a C++ exception Rust cannot
//! catch). So the LiteRT path checks what its loader walks: every table, vtable, vector and string of the model,
//! its subgraphs, tensors (with quantisation), operators, operator codes, buffers and signatures lies inside the
//! file, and every index between them (tensor, buffer, operator code, subgraph) is in range. Builtin-option
//! tables of operators are checked to their own extent only (their layouts differ per operator); the models
//! this project ships and trains are verified here in the tests.

/// Why a model file was refused.
pub type Refusal = String;

struct Buf<'a> {
    b: &'a [u8],
    /// Tables visited; bounds the work on a crafted file.
    budget: usize,
}

fn rd<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl Buf<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        rd::<2>(self.b, at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: usize) -> Option<u32> {
        rd::<4>(self.b, at).map(u32::from_le_bytes)
    }
    fn i32(&self, at: usize) -> Option<i32> {
        rd::<4>(self.b, at).map(i32::from_le_bytes)
    }
    fn u64(&self, at: usize) -> Option<u64> {
        rd::<8>(self.b, at).map(u64::from_le_bytes)
    }

    /// The position an offset field at `at` points to (forward, 4-aligned, inside the file).
    fn follow(&self, at: usize) -> Result<usize, Refusal> {
        let off = self.u32(at).ok_or("offset outside the file")? as usize;
        let to = at.checked_add(off).filter(|&p| off > 0 && p < self.b.len()).ok_or("offset outside the file")?;
        Ok(to)
    }

    /// A table at `t`: its vtable and extent are inside the file.
    fn table(&mut self, t: usize) -> Result<Table, Refusal> {
        self.budget = self.budget.checked_sub(1).ok_or("too many tables")?;
        let so = self.i32(t).ok_or("table outside the file")?;
        let vt = (t as i64) - i64::from(so);
        let vt = usize::try_from(vt).map_err(|_| "vtable outside the file")?;
        let vsize = self.u16(vt).ok_or("vtable outside the file")? as usize;
        let tsize = self.u16(vt + 2).ok_or("vtable outside the file")? as usize;
        if vsize < 4 || !vsize.is_multiple_of(2) || vt + vsize > self.b.len() || tsize < 4 || t + tsize > self.b.len() {
            return Err("bad vtable".into());
        }
        let mut fields = [0u16; 16];
        for (i, f) in fields.iter_mut().enumerate() {
            if 4 + 2 * i + 2 <= vsize {
                *f = self.u16(vt + 4 + 2 * i).unwrap_or(0);
                if usize::from(*f) >= tsize && *f != 0 {
                    return Err("field outside its table".into());
                }
            }
        }
        Ok(Table { t, tsize, fields })
    }

    /// Position of field `i` if present, checked to hold `size` bytes inside the table.
    fn field(&self, tb: &Table, i: usize, size: usize) -> Result<Option<usize>, Refusal> {
        let off = usize::from(*tb.fields.get(i).unwrap_or(&0));
        if off == 0 {
            return Ok(None);
        }
        if off + size > tb.tsize {
            return Err("field outside its table".into());
        }
        Ok(Some(tb.t + off))
    }

    /// A vector field: (first element position, length), elements of `elem` bytes inside the file.
    fn vector(&self, tb: &Table, i: usize, elem: usize) -> Result<Option<(usize, usize)>, Refusal> {
        let Some(at) = self.field(tb, i, 4)? else { return Ok(None) };
        let v = self.follow(at)?;
        let n = self.u32(v).ok_or("vector outside the file")? as usize;
        let end = n.checked_mul(elem).and_then(|s| s.checked_add(v + 4)).ok_or("vector too long")?;
        if end > self.b.len() {
            return Err("vector outside the file".into());
        }
        Ok(Some((v + 4, n)))
    }

    fn string(&self, tb: &Table, i: usize) -> Result<(), Refusal> {
        if let Some((p, n)) = self.vector(tb, i, 1)?
            && self.b.get(p + n) != Some(&0)
        {
            return Err("string not terminated".into());
        }
        Ok(())
    }

    /// The tables of a vector-of-tables field.
    fn tables(&mut self, tb: &Table, i: usize) -> Result<Vec<Table>, Refusal> {
        let Some((p, n)) = self.vector(tb, i, 4)? else { return Ok(Vec::new()) };
        (0..n).map(|k| self.follow(p + 4 * k).and_then(|t| self.table(t))).collect()
    }

    fn sub_table(&mut self, tb: &Table, i: usize) -> Result<Option<Table>, Refusal> {
        match self.field(tb, i, 4)? {
            Some(at) => Ok(Some(self.table(self.follow(at)?)?)),
            None => Ok(None),
        }
    }

    /// Every element of an int vector field in -1..n (-1: an optional operand).
    fn indices(&self, tb: &Table, i: usize, n: usize, what: &str) -> Result<(), Refusal> {
        if let Some((p, len)) = self.vector(tb, i, 4)? {
            for k in 0..len {
                let v = self.i32(p + 4 * k).unwrap_or(i32::MIN);
                if v < -1 || v >= n as i32 {
                    return Err(format!("{what} index {v} out of range (0..{n})"));
                }
            }
        }
        Ok(())
    }

    fn scalar_u32(&self, tb: &Table, i: usize) -> Result<u32, Refusal> {
        Ok(self.field(tb, i, 4)?.and_then(|at| self.u32(at)).unwrap_or(0))
    }
}

struct Table {
    t: usize,
    tsize: usize,
    fields: [u16; 16],
}

/// Checks a whole `.tflite` file (schema field numbers from tensorflow/lite/schema/schema.fbs).
pub fn verify(b: &[u8]) -> Result<(), Refusal> {
    if b.len() < 8 || &b[4..8] != b"TFL3" {
        return Err("not a TFLite flatbuffer (no TFL3 identifier)".into());
    }
    let mut f = Buf { b, budget: 1 << 20 };
    let root = f.follow(0)?;
    let model = f.table(root)?;
    let codes = f.tables(&model, 1)?;
    for c in &codes {
        f.string(c, 1)?;
    }
    let buffers = f.tables(&model, 4)?;
    for bf in &buffers {
        f.vector(bf, 0, 1)?;
        // Data stored after the flatbuffer (models over 2 GB): offset and size inside the file.
        let off = f.field(bf, 1, 8)?.and_then(|at| f.u64(at)).unwrap_or(0);
        let size = f.field(bf, 2, 8)?.and_then(|at| f.u64(at)).unwrap_or(0);
        if off > 1 && off.checked_add(size).is_none_or(|end| end > b.len() as u64) {
            return Err("buffer data outside the file".into());
        }
    }
    let subgraphs = f.tables(&model, 2)?;
    if subgraphs.is_empty() {
        return Err("no subgraph".into());
    }
    let mut tensor_counts = Vec::with_capacity(subgraphs.len());
    for sg in &subgraphs {
        let tensors = f.tables(sg, 0)?;
        let nt = tensors.len();
        for t in &tensors {
            f.vector(t, 0, 4)?;
            f.vector(t, 7, 4)?;
            f.string(t, 3)?;
            let ty = f.field(t, 1, 1)?.map_or(0, |at| b[at]);
            if ty > 30 {
                return Err(format!("tensor type {ty}"));
            }
            if f.scalar_u32(t, 2)? as usize >= buffers.len().max(1) {
                return Err("tensor buffer index out of range".into());
            }
            if let Some(q) = f.sub_table(t, 4)? {
                for (i, size) in [(0, 4), (1, 4), (2, 4), (3, 8)] {
                    f.vector(&q, i, size)?;
                }
                if let Some(at) = f.field(&q, 5, 4)? {
                    let d = f.follow(at)?;
                    f.table(d)?;
                }
            }
        }
        f.indices(sg, 1, nt, "subgraph input")?;
        f.indices(sg, 2, nt, "subgraph output")?;
        f.string(sg, 4)?;
        for op in f.tables(sg, 3)? {
            if f.scalar_u32(&op, 0)? as usize >= codes.len() {
                return Err("operator code index out of range".into());
            }
            f.indices(&op, 1, nt, "operator input")?;
            f.indices(&op, 2, nt, "operator output")?;
            f.indices(&op, 8, nt, "operator intermediate")?;
            f.vector(&op, 5, 1)?;
            f.vector(&op, 7, 1)?;
            f.sub_table(&op, 4)?;
            f.sub_table(&op, 12)?;
        }
        tensor_counts.push(nt);
    }
    f.string(&model, 3)?;
    f.vector(&model, 5, 4)?;
    for m in f.tables(&model, 6)? {
        f.string(&m, 0)?;
    }
    for sig in f.tables(&model, 7)? {
        f.string(&sig, 2)?;
        let sgi = f.scalar_u32(&sig, 4)? as usize;
        let nt = *tensor_counts.get(sgi).ok_or("signature subgraph index out of range")?;
        for i in [0, 1] {
            for tm in f.tables(&sig, i)? {
                f.string(&tm, 0)?;
                if f.scalar_u32(&tm, 1)? as usize >= nt {
                    return Err("signature tensor index out of range".into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)).unwrap()
    }

    #[test]
    fn the_shipped_models_pass() {
        for name in ["fire-f32.tflite", "fire-int8.tflite"] {
            assert_eq!(verify(&shipped(name)), Ok(()), "{name}");
        }
    }

    #[test]
    fn damaged_models_are_refused() {
        let good = shipped("fire-int8.tflite");
        assert!(verify(&[]).is_err());
        assert!(verify(&good[..64]).is_err());
        for cut in [good.len() / 2, good.len() * 3 / 4, good.len() - 100] {
            assert!(verify(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut rng = crate::prng::XorShift64::new(0x2545_f491);
        let mut noise = good[..8].to_vec();
        let mut tail = vec![0u8; 4000];
        rng.fill(&mut tail);
        noise.extend(tail);
        assert!(verify(&noise).is_err());
        // Flipped bytes anywhere: refused or still a well-formed file, never a panic.
        for k in 0..2000 {
            let mut bad = good.clone();
            let at = (k * 7919) % bad.len();
            bad[at] ^= 0x5a;
            let _ = verify(&bad);
        }
    }
}
