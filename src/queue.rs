//! Bounded queues between tasks. Every queue has a fixed capacity chosen at start-up, an explicit overflow
//! policy, and counters that the telemetry module exports; nothing here ever grows past its capacity.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// What `push` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Evict the oldest item to make room: for streams where the newest value matters most.
    DropOldest,
    /// Refuse the new item: for streams where what was already accepted must not be lost.
    DropNewest,
}

impl Overflow {
    pub fn label(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::DropNewest => "drop_newest",
        }
    }
}

/// Counters of one queue, shared with the metrics registry.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub pushed: AtomicU64,
    pub dropped: AtomicU64,
    pub depth: AtomicU64,
    pub high_water: AtomicU64,
}

struct Inner<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    policy: Overflow,
    readable: Notify,
    stats: Arc<QueueStats>,
    name: &'static str,
}

/// A multi-producer, multi-consumer bounded queue. Cloning gives another handle to the same queue.
pub struct Queue<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { inner: Arc::clone(&self.inner) }
    }
}

/// Result of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// Accepted, but the oldest item was evicted.
    Evicted,
    /// Refused because the queue is full (DropNewest).
    Refused,
}

impl<T> Queue<T> {
    pub fn new(name: &'static str, capacity: usize, policy: Overflow) -> Self {
        let capacity = capacity.max(1);
        Queue {
            inner: Arc::new(Inner {
                items: Mutex::new(VecDeque::with_capacity(capacity)),
                capacity,
                policy,
                readable: Notify::new(),
                stats: Arc::new(QueueStats::default()),
                name,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub fn policy(&self) -> Overflow {
        self.inner.policy
    }

    pub fn stats(&self) -> Arc<QueueStats> {
        Arc::clone(&self.inner.stats)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent, so a poisoned lock is still usable.
        self.inner.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Never blocks. Applies the overflow policy when full.
    pub fn push(&self, item: T) -> Pushed {
        let stats = &self.inner.stats;
        let (outcome, depth) = {
            let mut q = self.lock();
            let outcome = if q.len() < self.inner.capacity {
                q.push_back(item);
                Pushed::Accepted
            } else {
                match self.inner.policy {
                    Overflow::DropOldest => {
                        q.pop_front();
                        q.push_back(item);
                        Pushed::Evicted
                    }
                    Overflow::DropNewest => Pushed::Refused,
                }
            };
            (outcome, q.len() as u64)
        };
        match outcome {
            Pushed::Accepted => {
                stats.pushed.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Evicted => {
                stats.pushed.fetch_add(1, Ordering::Relaxed);
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Refused => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.depth.store(depth, Ordering::Relaxed);
        stats.high_water.fetch_max(depth, Ordering::Relaxed);
        if outcome != Pushed::Refused {
            self.inner.readable.notify_one();
        }
        outcome
    }

    pub fn try_pop(&self) -> Option<T> {
        let mut q = self.lock();
        let item = q.pop_front();
        self.inner.stats.depth.store(q.len() as u64, Ordering::Relaxed);
        item
    }

    /// Waits for the next item. Cancellation-safe: dropping the future loses nothing.
    pub async fn pop(&self) -> T {
        loop {
            let notified = self.inner.readable.notified();
            if let Some(item) = self.try_pop() {
                // Another consumer may be waiting for an item that arrived with ours.
                if !self.is_empty() {
                    self.inner.readable.notify_one();
                }
                return item;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_newest_and_counts() {
        let q = Queue::new("t", 3, Overflow::DropOldest);
        for i in 0..5 {
            q.push(i);
        }
        let s = q.stats();
        assert_eq!(s.pushed.load(Ordering::Relaxed), 5);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(s.high_water.load(Ordering::Relaxed), 3);
        assert_eq!((q.try_pop(), q.try_pop(), q.try_pop(), q.try_pop()), (Some(2), Some(3), Some(4), None));
    }

    #[test]
    fn drop_newest_keeps_accepted_items() {
        let q = Queue::new("t", 2, Overflow::DropNewest);
        assert_eq!(q.push(1), Pushed::Accepted);
        assert_eq!(q.push(2), Pushed::Accepted);
        assert_eq!(q.push(3), Pushed::Refused);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 1);
        assert_eq!((q.try_pop(), q.try_pop()), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn pop_wakes_on_push() {
        let q = Queue::new("t", 4, Overflow::DropNewest);
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        q.push(7u32);
        assert_eq!(h.await.ok(), Some(7));
    }
}
