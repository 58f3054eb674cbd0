//! The listener's own routes: `GET /metrics` (Prometheus text), `GET /health` (200 `ok`, or 503 naming the
//! failing parts) and the operator's commands `POST /api/zones/{name|all}/{acknowledge|silence|reset|
//! test-start|test-end}`, which are queued for fusion as observations.

use std::sync::Arc;

use super::HttpState;
use crate::event::{Observation, OperatorCmd};
use crate::telemetry::Counter;

/// Where operator commands go, and the zone names they may name.
pub struct OperatorPort {
    pub queue: crate::queue::Queue<Observation>,
    pub zones: Arc<Vec<String>>,
}

/// `POST /api/zones/{zone}/{command}`: queues the command for fusion; the status and body to answer.
pub(super) fn operator_command(op: Option<&OperatorPort>, accepted: &Counter, path: &str) -> (u16, String) {
    let Some(op) = op else { return (404, "no zones\n".into()) };
    let mut parts = path.trim_start_matches("/api/zones/").split('/');
    let (Some(zone), Some(cmd), None) = (parts.next(), parts.next(), parts.next()) else {
        return (404, "use /api/zones/{name|all}/{acknowledge|silence|reset|test-start|test-end}\n".into());
    };
    let zone = super::head::segment(zone);
    let cmd = match cmd {
        "acknowledge" | "ack" => OperatorCmd::Acknowledge,
        "silence" => OperatorCmd::Silence,
        "reset" => OperatorCmd::Reset,
        "test-start" => OperatorCmd::TestStart,
        "test-end" => OperatorCmd::TestEnd,
        _ => return (404, format!("unknown command `{cmd}`\n")),
    };
    let zone_index = if zone == "all" {
        None
    } else {
        match op.zones.iter().position(|z| *z == zone) {
            Some(i) => Some(i),
            None => return (404, format!("unknown zone `{zone}`\n")),
        }
    };
    let at = tokio::time::Instant::now();
    if op.queue.push(Observation::Operator { zone: zone_index, cmd, at }) == crate::queue::Pushed::Refused {
        return (503, "busy, try again\n".into());
    }
    accepted.inc();
    log::info!("operator: {cmd:?} for zone {zone}");
    (202, format!("{cmd:?} queued for {zone}\n"))
}

/// `GET /metrics` and `GET /health` (404 for anything else): status, content type and body.
pub(super) fn telemetry(state: &HttpState, path: &str) -> (u16, &'static str, Vec<u8>) {
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", state.registry.render().into_bytes()),
        "/health" => {
            let failing = state.health.failing(tokio::time::Instant::now());
            if !state.health.is_ready() {
                (503, "text/plain", b"starting\n".to_vec())
            } else if failing.is_empty() {
                (200, "text/plain", b"ok\n".to_vec())
            } else {
                (503, "text/plain", format!("unhealthy: {}\n", failing.join(", ")).into_bytes())
            }
        }
        _ => (404, "text/plain", b"not found\n".to_vec()),
    }
}
