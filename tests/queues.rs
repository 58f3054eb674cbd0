//! Bounded queues and the newest-frame mailbox count what their overflow policy drops, and the counts reach
//! /metrics under the queue's name.

use std::sync::atomic::Ordering;

use ember_edge::camera::Latest;
use ember_edge::queue::{Overflow, Pushed, Queue};
use ember_edge::telemetry::Registry;
use ember_edge::telemetry::metrics::register_queue;

#[test]
fn overflow_is_counted_and_exported() {
    let reg = Registry::new();
    let q = Queue::new("observations", 8, Overflow::DropOldest);
    register_queue(&reg, "observations", q.capacity(), q.stats());
    for i in 0..20 {
        q.push(i);
    }
    assert_eq!(q.len(), 8, "never grows past capacity");
    assert_eq!(q.try_pop(), Some(12), "the oldest were dropped");
    let text = reg.render();
    assert!(text.contains("ember_queue_dropped_total{queue=\"observations\"} 12\n"), "{text}");
    assert!(text.contains("ember_queue_capacity{queue=\"observations\"} 8\n"), "{text}");
    assert!(text.contains("ember_queue_high_water{queue=\"observations\"} 8\n"), "{text}");
}

#[test]
fn drop_newest_never_loses_what_was_accepted() {
    let q = Queue::new("uplink", 3, Overflow::DropNewest);
    let outcomes: Vec<Pushed> = (0..5).map(|i| q.push(i)).collect();
    assert_eq!(outcomes[3], Pushed::Refused);
    assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 2);
    assert_eq!((q.try_pop(), q.try_pop(), q.try_pop(), q.try_pop()), (Some(0), Some(1), Some(2), None));
}

#[tokio::test]
async fn newest_frame_wins_and_replacements_are_counted() {
    let reg = Registry::new();
    let dropped = reg.counter("ember_frames_dropped_total", "t", &[("camera", "c")]);
    let slot = Latest::new(dropped.clone());
    for i in 0..5 {
        slot.put(i);
    }
    assert_eq!(slot.take().await, 4);
    assert_eq!(dropped.get(), 4);
}
