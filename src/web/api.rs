//! The listener's own routes: `GET /metrics` (Prometheus text), `GET /health` (200 `ok`, or 503 naming the
//! failing parts) and the operator's commands `POST /api/zones/{name|all}/{acknowledge|silence|reset|
//! test-start|test-end}`, which are queued for fusion as observations and recorded in the event log with who
//! sent them, and `GET /api/events` (the event log, paged).

use std::sync::Arc;

use super::HttpState;
use crate::event::{Observation, OperatorCmd};
use crate::events::{Event, EventLog, Kind, Query};
use crate::telemetry::Counter;

/// Where operator commands go, and the zone names they may name.
pub struct OperatorPort {
    pub queue: crate::queue::Queue<Observation>,
    pub zones: Arc<Vec<String>>,
    /// Records each accepted command with who sent it, and serves `GET /api/events`.
    pub events: Option<EventLog>,
}

/// `POST /api/zones/{zone}/{command}`: queues the command for fusion; the status and body to answer. `by` is
/// who sent it (for the event log).
pub(super) fn operator_command(op: Option<&OperatorPort>, accepted: &Counter, path: &str, by: &str) -> (u16, String) {
    let Some(op) = op else { return (404, "no zones\n".into()) };
    let mut parts = path.trim_start_matches("/api/zones/").split('/');
    let (Some(zone), Some(cmd), None) = (parts.next(), parts.next(), parts.next()) else {
        return (404, "use /api/zones/{name|all}/{acknowledge|silence|reset|test-start|test-end|cut-delay}\n".into());
    };
    let zone = super::head::segment(zone);
    let cmd = match cmd {
        "acknowledge" | "ack" => OperatorCmd::Acknowledge,
        "silence" => OperatorCmd::Silence,
        "reset" => OperatorCmd::Reset,
        "test-start" => OperatorCmd::TestStart,
        "test-end" => OperatorCmd::TestEnd,
        "cut-delay" => OperatorCmd::CutDelay,
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
    log::info!("operator: {cmd:?} for zone {zone} by {by}");
    if let Some(log) = &op.events {
        let name = match cmd {
            OperatorCmd::TestStart => "test-start".to_owned(),
            OperatorCmd::TestEnd => "test-end".to_owned(),
            OperatorCmd::CutDelay => "cut-delay".to_owned(),
            c => format!("{c:?}").to_lowercase(),
        };
        let mut ev = Event::now(Kind::Operator, name);
        ev.zone = Some(zone.clone());
        ev.by = Some(by.to_owned());
        log.record(ev);
    }
    (202, format!("{cmd:?} queued for {zone}\n"))
}

/// Largest page `GET /api/events` gives.
const MAX_PAGE: usize = 1000;

/// `GET /api/events?since=ID&limit=N&kind=K&newest=1`: a page of the event log as JSON (`events`, `next` to pass
/// as `since` for the following page, `first` still held, `dropped`, `lost`, `trouble`).
pub(super) fn events(op: Option<&OperatorPort>, query: &str) -> (u16, &'static str, Vec<u8>) {
    let Some(log) = op.and_then(|o| o.events.as_ref()) else {
        return (404, "text/plain", b"no event log\n".to_vec());
    };
    let num = |name: &str| super::auth::query_param(query, name).map(|v| v.parse::<u64>());
    let since = match num("since") {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return (400, "text/plain", b"since must be an event id\n".to_vec()),
    };
    let limit = match num("limit") {
        None => 100,
        Some(Ok(v)) if (1..=MAX_PAGE as u64).contains(&v) => v as usize,
        Some(_) => return (400, "text/plain", format!("limit must be 1..={MAX_PAGE}\n").into_bytes()),
    };
    let kind = match super::auth::query_param(query, "kind").filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => match Kind::parse(k) {
            Some(k) => Some(k),
            None => {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
                return (400, "text/plain", format!("kind must be one of {}\n", known.join(", ")).into_bytes());
            }
        },
    };
    let newest = super::auth::query_param(query, "newest").is_some_and(|v| v != "0");
    let page = log.query(&Query { since, limit, kind, newest });
    match serde_json::to_vec(&page) {
        Ok(body) => (200, "application/json", body),
        Err(_) => (500, "text/plain", b"cannot encode events\n".to_vec()),
    }
}

/// `GET /api/events/{id}/snapshot.jpg` (the deciding frame with the boxes), `.../frames/{n}.jpg` (0 the same frame
/// without boxes, then the frames before it), `.../thermal.jpg` and `.../snapshot.json` (what was kept, with
/// the thermal grid): `rest` is the path after `/api/events/`. 404 when the event has no such file.
pub(super) fn snapshot(op: Option<&OperatorPort>, rest: &str) -> (u16, &'static str, Vec<u8>) {
    let Some(snaps) = op.and_then(|o| o.events.as_ref()).and_then(|l| l.snapshots()) else {
        return (404, "text/plain", b"no snapshot store\n".to_vec());
    };
    let Some((id, name)) = rest.split_once('/') else {
        return (404, "text/plain", b"not found\n".to_vec());
    };
    let Ok(id) = id.parse::<u64>() else {
        return (400, "text/plain", b"the event id must be a number\n".to_vec());
    };
    // `file` knows only its own names: nothing else of the disk can be asked for.
    match snaps.file(id, name) {
        Some((ctype, body)) => (200, ctype, body),
        None => (404, "text/plain", b"no such snapshot\n".to_vec()),
    }
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
