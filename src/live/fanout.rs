//! Encode once, fan out: a camera's encoded frames live in a small fixed set of shared buffers. The encoder
//! writes into a buffer no viewer holds and publishes it; every viewer gets the same bytes (an `Arc` clone, no
//! copy) and only ever the newest frame, so a slow viewer skips frames instead of holding anyone up.

use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// Room kept in front of the JPEG bytes for the multipart part header, so a viewer sends header, image and
/// trailing CRLF with one write.
pub const HEADER_ROOM: usize = 128;

/// One encoded frame: `data[part_start..HEADER_ROOM]` is the part header, then the JPEG, then CRLF.
#[derive(Debug)]
pub struct Jpeg {
    pub data: Vec<u8>,
    pub part_start: usize,
    pub seq: u64,
    /// When it was published: a viewer's lag is measured from here.
    pub ready_at: Instant,
}

impl Jpeg {
    /// The whole multipart part.
    pub fn part(&self) -> &[u8] {
        self.data.get(self.part_start..).unwrap_or(&[])
    }

    /// The JPEG file alone.
    pub fn jpeg(&self) -> &[u8] {
        self.data.get(HEADER_ROOM..self.data.len().saturating_sub(2)).unwrap_or(&[])
    }
}

pub type Shared = Arc<Jpeg>;

/// A fixed set of reusable JPEG buffers plus the "newest frame" channel viewers watch.
pub struct Fanout {
    slots: Vec<Shared>,
    tx: watch::Sender<Option<Shared>>,
    seq: u64,
}

impl Fanout {
    /// `slots` buffers; each grows to the largest frame once and is then reused. A viewer holds at most one
    /// buffer, while it writes it, so `slots` should exceed the viewers that may be stuck mid-write at once.
    pub fn new(slots: usize) -> Self {
        let slots = (0..slots.max(2))
            .map(|_| Arc::new(Jpeg { data: Vec::new(), part_start: 0, seq: 0, ready_at: Instant::now() }))
            .collect();
        Fanout { slots, tx: watch::Sender::new(None), seq: 0 }
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Shared>> {
        self.tx.subscribe()
    }

    /// A free buffer (held by nobody but this pool) for the next frame, holding `HEADER_ROOM` bytes to append
    /// the JPEG to; None if every one is in use.
    pub fn free_buffer(&mut self) -> Option<&mut Vec<u8>> {
        // The published frame stays reachable through the channel, so it is never handed out here.
        let i = self.slots.iter().position(|s| Arc::strong_count(s) == 1)?;
        let j = Arc::get_mut(&mut self.slots[i])?;
        j.data.clear();
        j.data.resize(HEADER_ROOM, 0);
        // Remember which slot the caller is filling by moving it to the end.
        let last = self.slots.len() - 1;
        self.slots.swap(i, last);
        Arc::get_mut(&mut self.slots[last]).map(|j| &mut j.data)
    }

    /// Publishes the buffer last returned by `free_buffer`, with the JPEG appended, as the newest frame: writes
    /// its part header in front and CRLF behind.
    pub fn publish(&mut self, now: Instant) -> u64 {
        self.seq += 1;
        let last = self.slots.len() - 1;
        if let Some(j) = Arc::get_mut(&mut self.slots[last]) {
            let len = j.data.len().saturating_sub(HEADER_ROOM);
            let mut head = [0u8; 128];
            let n = super::multipart::part_header(&mut head, len, self.seq);
            j.part_start = HEADER_ROOM - n;
            j.data[HEADER_ROOM - n..HEADER_ROOM].copy_from_slice(&head[..n]);
            j.data.extend_from_slice(b"\r\n");
            j.seq = self.seq;
            j.ready_at = now;
        }
        let frame = Arc::clone(&self.slots[last]);
        // The previous frame's buffer goes back to the pool once its viewers are done with it.
        self.tx.send_replace(Some(frame));
        self.seq
    }

    /// Buffers in the pool that no viewer or channel holds.
    pub fn free(&self) -> usize {
        self.slots.iter().filter(|s| Arc::strong_count(s) == 1).count()
    }

    pub fn newest(&self) -> Option<Shared> {
        self.tx.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(f: &mut Fanout, bytes: &[u8]) -> bool {
        match f.free_buffer() {
            Some(b) => {
                b.extend_from_slice(bytes);
                f.publish(Instant::now());
                true
            }
            None => false,
        }
    }

    #[test]
    fn every_viewer_gets_the_same_bytes_and_only_the_newest() {
        let mut f = Fanout::new(3);
        let mut a = f.subscribe();
        let mut b = f.subscribe();
        assert!(put(&mut f, b"one"));
        assert!(put(&mut f, b"two"));
        let fa = a.borrow_and_update().clone().unwrap();
        let fb = b.borrow_and_update().clone().unwrap();
        assert!(Arc::ptr_eq(&fa, &fb), "shared, not copied");
        assert_eq!((fa.jpeg(), fa.seq), (&b"two"[..], 2));
        assert!(
            fa.part().starts_with(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\nX-Frame: 2\r\n\r\ntwo")
        );
        assert!(fa.part().ends_with(b"two\r\n"));
        assert!(!a.has_changed().unwrap());
    }

    #[test]
    fn buffers_held_by_slow_viewers_are_skipped_and_reused_when_released() {
        let mut f = Fanout::new(3);
        let mut rx = f.subscribe();
        assert!(put(&mut f, b"1"));
        let held1 = rx.borrow_and_update().clone();
        assert!(put(&mut f, b"2"));
        let held2 = rx.borrow_and_update().clone();
        assert!(put(&mut f, b"3"));
        // 1 and 2 held by viewers, 3 published: nothing free, the encoder must skip (never overwrite).
        assert_eq!(f.free(), 0);
        assert!(f.free_buffer().is_none());
        assert_eq!(held1.as_ref().unwrap().jpeg(), b"1");
        drop(held1);
        drop(held2);
        assert_eq!(f.free(), 2);
        assert!(put(&mut f, b"4"));
        assert!(put(&mut f, b"5"));
        assert_eq!(f.newest().unwrap().jpeg(), b"5");
    }

    #[test]
    fn buffers_are_reused_without_reallocation() {
        let mut f = Fanout::new(2);
        let big = vec![7u8; 10_000];
        assert!(put(&mut f, &big));
        assert!(put(&mut f, &big));
        let before = crate::alloc_count::allocations();
        for _ in 0..10 {
            assert!(put(&mut f, &big));
        }
        assert_eq!(crate::alloc_count::allocations(), before, "steady state allocates nothing");
    }
}
