//! The appliance's web server: one deliberately small HTTP/1.1 listener (bounded request size, read timeout,
//! connection cap) that serves `GET /metrics` and `GET /health` (`api`), the operator's commands (`api`) and
//! the live view's routes (`live`), behind the access rules of `auth`. It listens on loopback by default:
//! commands are for the local operator. With a token or basic credentials configured, every request but
//! /health must carry them.

pub mod api;
pub mod auth;
pub mod live;

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Counter, Health, Registry};
pub use api::OperatorPort;

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

pub struct HttpState {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub operator: Option<OperatorPort>,
    pub live: Option<Arc<crate::live::Live>>,
    /// Who may use the listener; None (no live view) leaves it open, as a bare metrics endpoint is.
    auth: Option<auth::Auth>,
    requests: Counter,
    refused: Counter,
    commands: Counter,
}

impl HttpState {
    pub fn new(registry: Arc<Registry>, health: Arc<Health>) -> Arc<Self> {
        Self::build(registry, health, None, None)
    }

    pub fn with_operator(registry: Arc<Registry>, health: Arc<Health>, operator: OperatorPort) -> Arc<Self> {
        Self::build(registry, health, Some(operator), None)
    }

    /// The appliance's listener: operator commands plus the live view, behind `auth`.
    pub fn with_live(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: OperatorPort,
        live: Arc<crate::live::Live>,
        auth: auth::Auth,
    ) -> Arc<Self> {
        Self::build(registry, health, Some(operator), Some((live, auth)))
    }

    fn build(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: Option<OperatorPort>,
        live: Option<(Arc<crate::live::Live>, auth::Auth)>,
    ) -> Arc<Self> {
        let requests = registry.counter("ember_http_requests_total", "Requests served by the telemetry listener.", &[]);
        let refused = registry.counter(
            "ember_http_refused_total",
            "Telemetry connections refused or dropped (over the connection cap, bad or slow requests).",
            &[],
        );
        let commands = registry.counter("ember_operator_commands_total", "Operator commands accepted over HTTP.", &[]);
        let (live, auth) = live.map_or((None, None), |(l, a)| (Some(l), Some(a)));
        Arc::new(HttpState { registry, health, operator, live, auth, requests, refused, commands })
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
            return respond(&mut stream, 431, "text/plain", "", b"request header too large\n", false).await;
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
    if let Some(auth) = &state.auth
        && path != "/health"
    {
        let authorization = head.lines().skip(1).find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim())
        });
        if let auth::Verdict::Denied { basic } = auth.check(authorization, query) {
            return deny(&mut stream, basic).await;
        }
    }
    if let Some(live) = &state.live
        && (method == "GET" || method == "HEAD")
        && live::handles(path)
    {
        let live = Arc::clone(live);
        return live::serve(stream, path, query, method == "HEAD", &live).await;
    }
    if method == "POST" && path.starts_with("/api/zones/") {
        let (status, body) = api::operator_command(state.operator.as_ref(), &state.commands, path);
        return respond(&mut stream, status, "text/plain", "", body.as_bytes(), false).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "", b"method not allowed\n", false).await;
    }
    let (status, ctype, body) = api::telemetry(state, path);
    // HEAD here announces an empty body (Content-Length 0), as this listener always has.
    respond(&mut stream, status, ctype, "", if method == "HEAD" { &[] } else { &body }, false).await
}

/// Writes one whole response and closes the connection. `headers` are extra header lines (each ending in
/// CRLF) after Content-Length; `head_only` leaves the body out but still announces its length.
async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    headers: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// 401, with a basic-auth challenge when basic credentials would be accepted (so a browser asks for them).
async fn deny(stream: &mut TcpStream, basic: bool) -> std::io::Result<()> {
    let challenge = if basic { "WWW-Authenticate: Basic realm=\"ember-edge\"\r\n" } else { "" };
    let msg = "authentication required\n";
    let resp = format!(
        "HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{msg}",
        msg.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
