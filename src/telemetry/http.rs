//! The telemetry HTTP listener: `GET /metrics` (Prometheus text), `GET /health` (200 `ok`, or 503 naming the
//! failing parts) and the operator's commands `POST /api/zones/{name|all}/{acknowledge|silence|reset|
//! test-start|test-end}`. A deliberately small HTTP/1.1 server: bounded request size, read timeout,
//! connection cap. It listens on loopback by default: commands are for the local operator. The live view
//! (`crate::live`: status page, /api/status, camera streams) is served here too, and so is access control:
//! with a token or basic credentials configured, every request but /health must carry them.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Counter, Health, Registry};

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

/// Where operator commands go, and the zone names they may name.
pub struct OperatorPort {
    pub queue: crate::queue::Queue<crate::event::Observation>,
    pub zones: Arc<Vec<String>>,
}

pub struct HttpState {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub operator: Option<OperatorPort>,
    pub live: Option<Arc<crate::live::Live>>,
    requests: Counter,
    refused: Counter,
    commands: Counter,
}

impl HttpState {
    pub fn new(registry: Arc<Registry>, health: Arc<Health>) -> Arc<Self> {
        Self::build(registry, health, None)
    }

    pub fn with_operator(registry: Arc<Registry>, health: Arc<Health>, operator: OperatorPort) -> Arc<Self> {
        Self::build(registry, health, Some(operator))
    }

    /// The appliance's listener: operator commands plus the live view (which also carries the access rules).
    pub fn with_live(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: OperatorPort,
        live: Arc<crate::live::Live>,
    ) -> Arc<Self> {
        let mut s = Self::build(registry, health, Some(operator));
        if let Some(st) = Arc::get_mut(&mut s) {
            st.live = Some(live);
        }
        s
    }

    fn build(registry: Arc<Registry>, health: Arc<Health>, operator: Option<OperatorPort>) -> Arc<Self> {
        let requests = registry.counter("ember_http_requests_total", "Requests served by the telemetry listener.", &[]);
        let refused = registry.counter(
            "ember_http_refused_total",
            "Telemetry connections refused or dropped (over the connection cap, bad or slow requests).",
            &[],
        );
        let commands = registry.counter("ember_operator_commands_total", "Operator commands accepted over HTTP.", &[]);
        Arc::new(HttpState { registry, health, operator, live: None, requests, refused, commands })
    }

    /// `POST /api/zones/{zone}/{command}`: queues the command for fusion.
    fn operator_command(&self, path: &str) -> (u16, String) {
        use crate::event::{Observation, OperatorCmd};
        let Some(op) = &self.operator else { return (404, "no zones\n".into()) };
        let mut parts = path.trim_start_matches("/api/zones/").split('/');
        let (Some(zone), Some(cmd), None) = (parts.next(), parts.next(), parts.next()) else {
            return (404, "use /api/zones/{name|all}/{acknowledge|silence|reset|test-start|test-end}\n".into());
        };
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
            match op.zones.iter().position(|z| z == zone) {
                Some(i) => Some(i),
                None => return (404, format!("unknown zone `{zone}`\n")),
            }
        };
        let at = tokio::time::Instant::now();
        if op.queue.push(Observation::Operator { zone: zone_index, cmd, at }) == crate::queue::Pushed::Refused {
            return (503, "busy, try again\n".into());
        }
        self.commands.inc();
        log::info!("operator: {cmd:?} for zone {zone}");
        (202, format!("{cmd:?} queued for {zone}\n"))
    }
}

pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) -> std::io::Result<()> {
    // Live-view viewers hold their connection for as long as they watch: they get places of their own.
    let viewers = state.live.as_ref().map(|l| l.limits.max_total()).unwrap_or(0);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS + viewers));
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Accept errors (EMFILE, ECONNABORTED) are transient; back off instead of spinning.
                    log::warn!("telemetry accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            state.refused.inc();
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            if handle(stream, &state).await.is_err() {
                state.refused.inc();
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: &Arc<HttpState>) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_HEAD];
    let mut len = 0;
    let head_end = loop {
        if len == buf.len() {
            return respond(&mut stream, 431, "text/plain", b"request header too large\n").await;
        }
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf[len..]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(p) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap_or("");
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    state.requests.inc();
    if let Some(live) = &state.live
        && path != "/health"
    {
        let authorization = head.lines().skip(1).find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim())
        });
        if let crate::live::auth::Verdict::Denied { basic } = live.auth.check(authorization, query) {
            let challenge = if basic { "WWW-Authenticate: Basic realm=\"ember-edge\"\r\n" } else { "" };
            let msg = "authentication required\n";
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{msg}",
                msg.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            return stream.shutdown().await;
        }
        if (method == "GET" || method == "HEAD") && crate::live::http::handles(path) {
            let live = Arc::clone(live);
            return crate::live::http::serve(stream, path, query, method == "HEAD", &live).await;
        }
    }
    if method == "POST" && path.starts_with("/api/zones/") {
        let (status, body) = state.operator_command(path);
        return respond(&mut stream, status, "text/plain", body.as_bytes()).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", b"method not allowed\n").await;
    }
    let head_only = method == "HEAD";
    let (status, ctype, body) = match path {
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
    };
    respond(&mut stream, status, ctype, if head_only { &[] } else { &body }).await
}

async fn respond(stream: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
