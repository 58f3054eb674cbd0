//! A camera's last few analysed frames, each with the detector's boxes for it, in a fixed ring: the slots are
//! reserved once at the camera's largest frame size and reused, so keeping frames costs no allocation per frame.
//! The detect task pushes each analysed frame before fusion hears its score, so the frame that decides an alarm is
//! always in the ring by the time the decision is made; the snapshot writer copies them out when it runs.
//! A JPEG camera's frames are analysed at reduced scale, so its capture thread also leaves each frame's own JPEG
//! bytes here (`offer_jpeg`), and the newest kept frame holds it: the alarm snapshot shows the camera's
//! full picture of the deciding frame, not the detector's small one.

use std::sync::Mutex;

use crate::frame::{Frame, PixelFormat};
use crate::live::overlay::Boxes;
use crate::telemetry::Counter;

/// Frames kept per camera: the deciding one and the three before it.
pub const RING: usize = 4;

/// One kept frame: its pixels as analysed (RGB24 or YUYV), its number and the boxes the detector found in it.
pub struct Held {
    pub px: Vec<u8>,
    pub w: usize,
    pub h: usize,
    pub format: PixelFormat,
    pub seq: u64,
    pub boxes: Boxes,
    /// The camera's own JPEG of this frame (full size), or empty: a raw camera, or the JPEG was not kept.
    pub jpeg: Vec<u8>,
}

impl Held {
    /// An empty slot with room for `max_len` bytes (reserved, not touched: no resident memory until used).
    pub fn with_capacity(max_len: usize) -> Held {
        Held {
            px: Vec::with_capacity(max_len),
            w: 0,
            h: 0,
            format: PixelFormat::Rgb24,
            seq: 0,
            boxes: Boxes::default(),
            jpeg: Vec::new(),
        }
    }

    /// Copies `src` in without growing the buffer: false (nothing copied) if it does not fit.
    fn copy_from(&mut self, px: &[u8], w: usize, h: usize, format: PixelFormat, seq: u64, boxes: &Boxes) -> bool {
        if px.len() > self.px.capacity() {
            return false;
        }
        self.px.clear();
        self.px.extend_from_slice(px);
        (self.w, self.h, self.format, self.seq, self.boxes) = (w, h, format, seq, *boxes);
        true
    }
}

/// Camera JPEGs by frame number: the one waiting for its frame to be analysed, and the newest kept frame's (the
/// snapshot writer runs within milliseconds of the decision, the next frame comes 1/fps later; each JPEG held
/// is resident memory, several hundred KB at 1080p, so older frames keep only their analysed pixels). Two
/// buffers, grown to the camera's JPEG size once and then swapped: nothing allocated per frame once grown.
struct Jpegs {
    pending: (u64, Vec<u8>),
    kept: (u64, Vec<u8>),
}

struct Slots {
    held: Vec<Held>,
    /// The slot the next frame overwrites (the oldest).
    next: usize,
    /// Slots holding a frame (the ring fills once, then stays full).
    filled: usize,
}

pub struct FrameRing {
    slots: Mutex<Slots>,
    jpegs: Mutex<Jpegs>,
    /// Frames not kept: the writer was copying out at that moment, or the frame was larger than reserved.
    skipped: Counter,
}

impl FrameRing {
    pub fn new(max_len: usize, skipped: Counter) -> FrameRing {
        let held = (0..RING).map(|_| Held::with_capacity(max_len)).collect();
        let jpegs = Jpegs { pending: (0, Vec::new()), kept: (0, Vec::new()) };
        FrameRing { slots: Mutex::new(Slots { held, next: 0, filled: 0 }), jpegs: Mutex::new(jpegs), skipped }
    }

    /// Leaves frame `seq`'s own JPEG for [`FrameRing::push`] to keep. Runs on the capture thread, which hands
    /// the frame to detection right after: a frame's JPEG is replaced only by the next frame's, 1/fps later.
    pub fn offer_jpeg(&self, seq: u64, jpeg: &[u8]) {
        let mut j = self.jpegs.lock().unwrap_or_else(|p| p.into_inner());
        j.pending.1.clear();
        // Exactly the size: doubling would leave up to twice the JPEG resident in each buffer.
        j.pending.1.reserve_exact(jpeg.len());
        j.pending.1.extend_from_slice(jpeg);
        j.pending.0 = seq;
    }

    /// Frame `seq` was kept: its JPEG (if still pending) becomes the kept one, whose buffer waits for the next
    /// frame's. On the detect task, so it does not wait either: while the capture thread or the writer is copying,
    /// the frame keeps only its analysed pixels (the snapshot falls back on them).
    fn keep_jpeg(&self, seq: u64) {
        let Ok(mut j) = self.jpegs.try_lock() else { return };
        if seq == 0 || j.pending.0 != seq {
            return;
        }
        let Jpegs { pending, kept } = &mut *j;
        std::mem::swap(kept, pending);
        pending.0 = 0;
    }

    /// Frame `seq`'s JPEG into `out` (cleared when it is not held).
    fn copy_jpeg(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        let j = self.jpegs.lock().unwrap_or_else(|p| p.into_inner());
        if seq != 0 && j.kept.0 == seq {
            out.extend_from_slice(&j.kept.1);
        }
    }

    /// Keeps an analysed frame and its boxes over the oldest one. Runs on the detect task: it never waits (while
    /// the snapshot writer copies out, the frame is skipped and counted).
    pub fn push(&self, f: &Frame, boxes: &Boxes) {
        let Ok(mut s) = self.slots.try_lock() else {
            self.skipped.inc();
            return;
        };
        let i = s.next;
        let ok = s
            .held
            .get_mut(i)
            .is_some_and(|h| h.copy_from(f.pixels(), f.meta.width, f.meta.height, f.meta.format, f.meta.seq, boxes));
        if !ok {
            self.skipped.inc();
            return;
        }
        if f.meta.from_jpeg {
            self.keep_jpeg(f.meta.seq);
        }
        s.next = (i + 1) % RING;
        s.filled = (s.filled + 1).min(RING);
    }

    /// Copies the frame `seq` (if still held) and the frames before it into `out`, newest first; returns how many
    /// were copied and whether the first is `seq` itself. Frames newer than `seq` are left out.
    pub fn copy_out(&self, seq: u64, out: &mut [Held]) -> (usize, bool) {
        let s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        let mut exact = false;
        for k in 1..=s.filled {
            let i = (s.next + RING - k) % RING;
            let Some(h) = s.held.get(i) else { continue };
            if h.seq > seq {
                continue;
            }
            let Some(o) = out.get_mut(n) else { break };
            if o.copy_from(&h.px, h.w, h.h, h.format, h.seq, &h.boxes) {
                self.copy_jpeg(h.seq, &mut o.jpeg);
                exact |= n == 0 && h.seq == seq;
                n += 1;
            }
        }
        (n, exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameMeta, FramePool};

    fn frame(pool: &FramePool, seq: u64, v: u8) -> Frame {
        let Some(mut f) = pool.take() else { panic!("pool empty") };
        f.buffer_mut().fill(v);
        f.meta = FrameMeta { width: 4, height: 2, format: PixelFormat::Rgb24, seq, ..FrameMeta::default() };
        f
    }

    #[test]
    fn keeps_the_last_frames_and_copies_out_up_to_the_deciding_one() {
        let pool = FramePool::new(1, 4 * 2 * 3);
        let ring = FrameRing::new(4 * 2 * 3, Counter::default());
        for seq in 1..=6 {
            let f = frame(&pool, seq, seq as u8);
            ring.push(&f, &Boxes::default());
        }
        let mut out: Vec<Held> = (0..RING).map(|_| Held::with_capacity(24)).collect();
        let (n, exact) = ring.copy_out(5, &mut out);
        assert_eq!((n, exact), (3, true), "6 is newer than asked; 5, 4, 3 are held");
        assert_eq!([out[0].seq, out[1].seq, out[2].seq], [5, 4, 3]);
        assert_eq!(out[1].px[0], 4);
        let (n, exact) = ring.copy_out(1, &mut out);
        assert_eq!((n, exact), (0, false), "frame 1 was overwritten");
        let (n, exact) = ring.copy_out(99, &mut out);
        assert_eq!((n, exact, out[0].seq), (4, false, 6));
    }

    #[test]
    fn the_newest_kept_frame_holds_its_own_jpeg() {
        let pool = FramePool::new(1, 4 * 2 * 3);
        let ring = FrameRing::new(4 * 2 * 3, Counter::default());
        let mut out: Vec<Held> = (0..RING).map(|_| Held::with_capacity(24)).collect();
        for seq in 1..=3 {
            ring.offer_jpeg(seq, &[0xFF, 0xD8, seq as u8]);
            let mut f = frame(&pool, seq, 0);
            f.meta.from_jpeg = seq != 3;
            ring.push(&f, &Boxes::default());
        }
        assert_eq!(ring.copy_out(3, &mut out).0, 3);
        assert!(out[0].jpeg.is_empty(), "frame 3 came from a raw camera");
        assert_eq!(out[1].jpeg, [0xFF, 0xD8, 2], "the newest JPEG frame keeps its JPEG");
        assert!(out[2].jpeg.is_empty(), "frame 1's buffer went to frame 2");
        // A JPEG replaced by the next frame's before its own frame was kept is simply not there.
        ring.offer_jpeg(5, &[5]);
        ring.offer_jpeg(6, &[6]);
        let mut f = frame(&pool, 5, 0);
        f.meta.from_jpeg = true;
        ring.push(&f, &Boxes::default());
        assert_eq!(ring.copy_out(5, &mut out).0, 4);
        assert!(out[0].jpeg.is_empty());
        assert_eq!(out[2].jpeg, [0xFF, 0xD8, 2]);
    }

    #[test]
    fn a_frame_larger_than_reserved_is_skipped_and_counted() {
        let pool = FramePool::new(1, 4 * 2 * 3);
        let skipped = Counter::default();
        let ring = FrameRing::new(8, skipped.clone());
        ring.push(&frame(&pool, 1, 1), &Boxes::default());
        assert_eq!(skipped.get(), 1);
        let mut out: Vec<Held> = (0..RING).map(|_| Held::with_capacity(24)).collect();
        assert_eq!(ring.copy_out(1, &mut out).0, 0);
    }
}
