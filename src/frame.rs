//! Video frames backed by a fixed pool of buffers allocated once at start-up. A frame returns its buffer to
//! the pool when dropped, so the capture → detect path allocates nothing per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Pixel layout of a frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 3 bytes per pixel, R first.
    Rgb24,
    /// 4 bytes per 2 pixels (Y0 U Y1 V), as V4L2 cameras deliver it.
    Yuyv,
}

impl PixelFormat {
    pub fn frame_len(self, width: usize, height: usize) -> usize {
        match self {
            PixelFormat::Rgb24 => width * height * 3,
            PixelFormat::Yuyv => width * height * 2,
        }
    }
}

#[derive(Debug, Default)]
pub struct PoolStats {
    pub taken: AtomicU64,
    pub exhausted: AtomicU64,
}

struct PoolInner {
    free: Mutex<Vec<Box<[u8]>>>,
    buffer_len: usize,
    stats: PoolStats,
}

/// A fixed set of equally sized buffers. Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct FramePool {
    inner: Arc<PoolInner>,
}

impl FramePool {
    /// Allocates `count` buffers of `buffer_len` bytes now; nothing is allocated later.
    pub fn new(count: usize, buffer_len: usize) -> Self {
        let mut free = Vec::with_capacity(count);
        for _ in 0..count {
            free.push(vec![0u8; buffer_len].into_boxed_slice());
        }
        FramePool { inner: Arc::new(PoolInner { free: Mutex::new(free), buffer_len, stats: PoolStats::default() }) }
    }

    pub fn buffer_len(&self) -> usize {
        self.inner.buffer_len
    }

    pub fn available(&self) -> usize {
        self.inner.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// A free buffer, or None when every buffer is in flight (counted; the caller skips the frame).
    pub fn take(&self) -> Option<Frame> {
        let buf = self.inner.free.lock().ok().and_then(|mut f| f.pop());
        match buf {
            Some(buf) => {
                self.inner.stats.taken.fetch_add(1, Ordering::Relaxed);
                Some(Frame { buf: Some(buf), pool: Arc::clone(&self.inner), meta: FrameMeta::default() })
            }
            None => {
                self.inner.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Where a frame came from and how to read its bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    pub camera: usize,
    pub seq: u64,
    /// The pixels' size in the buffer.
    pub width: usize,
    pub height: usize,
    /// The size the camera sent: a JPEG frame is decoded at its analysis scale (`camera::jpeg`), so its pixels
    /// are 1/2, 1/4 or 1/8 of this; equal to width×height otherwise.
    pub source_width: usize,
    pub source_height: usize,
    /// The pixels were decoded from the camera's JPEG (whose bytes the live view passes through).
    pub from_jpeg: bool,
    pub format: PixelFormat,
    pub captured: tokio::time::Instant,
}

impl FrameMeta {
    /// Camera pixels per buffer pixel (1 unless decoded at reduced scale), for pixel counts in camera terms.
    pub fn pixel_area(&self) -> f32 {
        let own = (self.width * self.height).max(1) as f32;
        ((self.source_width * self.source_height) as f32 / own).max(1.0)
    }
}

impl Default for FrameMeta {
    fn default() -> Self {
        FrameMeta {
            camera: 0,
            seq: 0,
            width: 0,
            height: 0,
            source_width: 0,
            source_height: 0,
            from_jpeg: false,
            format: PixelFormat::Rgb24,
            captured: tokio::time::Instant::now(),
        }
    }
}

/// A pooled buffer plus metadata. Dropping it gives the buffer back.
pub struct Frame {
    buf: Option<Box<[u8]>>,
    pool: Arc<PoolInner>,
    pub meta: FrameMeta,
}

impl Frame {
    /// The whole buffer, for a producer to fill.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }

    /// The valid pixel bytes according to the metadata.
    pub fn pixels(&self) -> &[u8] {
        let len = self.meta.format.frame_len(self.meta.width, self.meta.height);
        let buf = self.buf.as_deref().unwrap_or(&[]);
        &buf[..len.min(buf.len())]
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // The free list was allocated with room for every buffer, so this push never reallocates.
        if let Some(buf) = self.buf.take()
            && let Ok(mut free) = self.pool.free.lock()
        {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_to_pool_and_exhaustion_is_counted() {
        let pool = FramePool::new(2, 16);
        let a = pool.take();
        let b = pool.take();
        assert!(a.is_some() && b.is_some());
        assert!(pool.take().is_none());
        assert_eq!(pool.stats().exhausted.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(pool.available(), 1);
        let c = pool.take();
        assert!(c.is_some());
    }

    #[test]
    fn buffers_are_reused_not_reallocated() {
        let pool = FramePool::new(1, 8);
        let p1 = {
            let mut f = pool.take().unwrap();
            f.buffer_mut().as_ptr()
        };
        let mut f = pool.take().unwrap();
        assert_eq!(p1, f.buffer_mut().as_ptr());
    }
}
