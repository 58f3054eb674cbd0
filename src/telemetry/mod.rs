//! Telemetry: the Prometheus registry, part health, the HTTP listener that serves both, and systemd notify.

pub mod health;
pub mod http;
pub mod log_limit;
pub mod metrics;
pub mod proc_stat;
pub mod sdnotify;

pub use health::{Health, PartHandle, PartState};
pub use metrics::{Counter, Gauge, Registry};
