//! ember-edge: a fire-detection appliance for Raspberry Pi and Jetson boards.
//!
//! Data flow (each arrow a bounded queue or a one-slot "newest wins" mailbox):
//!
//! ```text
//!  camera (replay) ──frame──▶ detect ──VisionScore──┐
//!  devices ──TCP──▶ sensor server ──Thermal/Adc─────┼──▶ fusion ──▶ alarm outputs (local, no network)
//!  simulated device ──TCP──┘                         │          └─▶ uplink ──TCP──▶ collector
//!                                                    └── telemetry: /metrics, /health, systemd notify
//! ```
//!
//! Decisions (decoders, heuristic, fusion, wire format) are pure and take `now`; the IO tasks around them are
//! thin. `app` wires everything from a `config::Loaded` and owns start-up and shutdown.

pub mod alarm;
pub mod app;
pub mod board;
pub mod camera;
pub mod cli;
pub mod config;
pub mod detect;
pub mod event;
pub mod frame;
pub mod fusion;
pub mod queue;
pub mod sensor;
#[cfg(test)]
mod shared_fixtures;
pub mod telemetry;
pub mod uplink;
