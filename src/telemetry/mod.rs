//! Telemetry: the Prometheus registry, part health, process stats, rate-limited warnings and systemd notify
//! (`crate::web` serves the registry and health over HTTP).

pub mod clock;
pub mod health;
pub mod hwwatchdog;
pub mod log_limit;
pub mod metrics;
pub mod proc_stat;
pub mod sdnotify;

pub use health::{Health, PartHandle, PartState};
pub use metrics::{Counter, Gauge, Registry};
