//! Camera sources. Each camera is a task that fills pooled frames and hands the newest one to its detector
//! through a one-slot mailbox: when detection falls behind, the older frame is dropped and counted, so memory
//! never grows. Issue-4 sources (V4L2, MJPEG over HTTP) plug in beside `replay`.

pub mod capture;
pub mod jpeg;
pub mod rate;
pub mod replay;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::sync::Mutex;
use tokio::sync::Notify;

use crate::telemetry::Counter;

/// Holds at most one value; a newer value replaces an unread older one ("newest wins").
pub struct Latest<T> {
    slot: Mutex<Option<T>>,
    ready: Notify,
    replaced: Counter,
}

impl<T> Latest<T> {
    pub fn new(replaced: Counter) -> Self {
        Latest { slot: Mutex::new(None), ready: Notify::new(), replaced }
    }

    pub fn put(&self, v: T) {
        let old = self.slot.lock().unwrap_or_else(|p| p.into_inner()).replace(v);
        if old.is_some() {
            self.replaced.inc();
        }
        // Drop the evicted value (a pooled frame) outside the lock.
        drop(old);
        self.ready.notify_one();
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
