//! ember-edge: a fire-detection appliance for Raspberry Pi and Jetson boards.
//!
//! Data flow (each arrow a bounded queue or a one-slot "newest wins" mailbox):
//!
//! ```text
//!  cameras (replay, MJPEG/HTTP, V4L2) ──frame──▶ detect ──VisionScore───────┐
//!        └──frame──▶ live view ◀──Detections───────┘                        │
//!  devices ──TCP / serial──▶ sensor server ──Thermal/Adc────────────────────┼──▶ fusion ──▶ alarm outputs (local)
//!  simulated device ──TCP──┘                                                │      └─▶ uplink ─TCP/MQTT─▶ collector
//!  operator ──web: zone commands────────────────────────────────────────────┘      └─▶ event log (writer thread)
//!  web: /metrics, /health, operator commands, events, live view and status;  telemetry: metrics, health, sd_notify
//! ```
//!
//! Decisions (decoders, detectors, fusion, wire format) are pure and take `now`; the IO tasks around them are
//! thin. `config` is the bottom layer; `app` wires everything from a `config::Loaded` and owns start-up and
//! shutdown. The command lines live in the two binaries (`ember-edge`, the appliance; `ember-tools`,
//! development and control-room tools); the library prints nothing.

// Output belongs to the binaries: a library that prints cannot be embedded or tested quietly.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod alarm;
pub mod app;
/// The board profile, kept at `ember_edge::board` for callers; it is parsed with the config.
pub use config::board;
pub mod camera;
pub mod cmd;
pub mod config;
pub mod detect;
pub mod event;
pub mod events;
/// Test fixtures: the same file the integration tests use as `common::fixtures`.
#[cfg(test)]
#[path = "../tests/common/fixtures.rs"]
mod fixtures;
pub mod frame;
pub mod fusion;
pub mod live;
pub mod pixels;
pub mod prng;
pub mod queue;
pub mod retry;
pub mod sensor;
pub mod snapshot;

/// Test-only global allocator that counts allocations made by the current thread, so tests can
/// prove the per-frame paths do not allocate (tests run on parallel threads, hence per-thread).
#[cfg(test)]
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: forwards to the system allocator unchanged; only bumps a thread-local counter.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made so far by this thread.
    pub fn allocations() -> usize {
        COUNT.with(|c| c.get())
    }
}

pub mod telemetry;
pub mod uplink;
pub mod web;
