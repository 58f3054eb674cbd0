//! A camera's last few analysed frames, each with the detector's boxes for it, in a fixed ring: the slots are
//! reserved once at the camera's largest frame size and reused, so keeping frames costs no allocation per frame.
//! The detect task pushes each analysed frame before fusion hears its score, so the frame that decides an alarm is
//! always in the ring by the time the decision is made; the snapshot writer copies them out when it runs.

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

struct Slots {
    held: Vec<Held>,
    /// The slot the next frame overwrites (the oldest).
    next: usize,
    /// Slots holding a frame (the ring fills once, then stays full).
    filled: usize,
}

pub struct FrameRing {
    slots: Mutex<Slots>,
    /// Frames not kept: the writer was copying out at that moment, or the frame was larger than reserved.
    skipped: Counter,
}

impl FrameRing {
    pub fn new(max_len: usize, skipped: Counter) -> FrameRing {
        let held = (0..RING).map(|_| Held::with_capacity(max_len)).collect();
        FrameRing { slots: Mutex::new(Slots { held, next: 0, filled: 0 }), skipped }
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
