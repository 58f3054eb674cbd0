//! Camera sources. Each camera is a task that fills pooled frames and hands the newest one to its detector
//! through a one-slot mailbox: when detection falls behind, the older frame is dropped and counted, so memory
//! never grows. Sources: `replay` (a folder of JPEGs or an .mjpeg file), `mjpeg_http` (IP cameras) and `v4l2`
//! (local cameras, feature `v4l2`); `source` builds a camera of any of them from its config section.

pub mod adapt;
pub mod capture;
pub mod health;
pub mod http;
pub mod jpeg;
pub mod mjpeg_http;
pub mod multipart;
pub mod rate;
pub mod replay;
pub mod scaled;
pub mod source;
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod watch;

pub use source::{BuiltCamera, CameraCtx, SourceTask, build};

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

use crate::telemetry::Counter;

/// Sees every value put into a `Latest` before the reader does (the live view's preview copy). Must be quick
/// and must not block: it runs on the source's task.
pub trait Tap<T>: Send + Sync {
    fn offer(&self, v: &T);

    /// A value decoded from a camera JPEG, with those bytes: the live view hands them to viewers as they came.
    fn offer_jpeg(&self, v: &T, _jpeg: &[u8]) {
        self.offer(v);
    }
}

/// Holds at most one value; a newer value replaces an unread older one ("newest wins").
pub struct Latest<T> {
    slot: Mutex<Option<T>>,
    ready: Notify,
    replaced: Counter,
    tap: Option<Arc<dyn Tap<T>>>,
}

impl<T> Latest<T> {
    pub fn new(replaced: Counter) -> Self {
        Latest { slot: Mutex::new(None), ready: Notify::new(), replaced, tap: None }
    }

    /// Like `new`, with a tap that sees every value put.
    pub fn with_tap(replaced: Counter, tap: Arc<dyn Tap<T>>) -> Self {
        Latest { slot: Mutex::new(None), ready: Notify::new(), replaced, tap: Some(tap) }
    }

    pub fn put(&self, v: T) {
        if let Some(t) = &self.tap {
            t.offer(&v);
        }
        self.replace(v);
    }

    /// Like `put`, for a value decoded from the camera JPEG `jpeg` (which the tap may pass on).
    pub fn put_jpeg(&self, v: T, jpeg: &[u8]) {
        if let Some(t) = &self.tap {
            t.offer_jpeg(&v, jpeg);
        }
        self.replace(v);
    }

    fn replace(&self, v: T) {
        let old = self.slot.lock().unwrap_or_else(|p| p.into_inner()).replace(v);
        if old.is_some() {
            self.replaced.inc();
        }
        // Drop the evicted value (a pooled frame) outside the lock.
        drop(old);
        self.ready.notify_one();
    }

    /// The counter of values replaced unread, for whoever watches this mailbox's load.
    pub fn replaced_counter(&self) -> Counter {
        self.replaced.clone()
    }

    pub async fn take(&self) -> T {
        loop {
            let notified = self.ready.notified();
            if let Some(v) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return v;
            }
            notified.await;
        }
    }
}
