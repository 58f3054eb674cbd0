//! The appliance's web server: one deliberately small HTTP/1.1 listener (bounded request head that must arrive
//! within a deadline, connection slots that head readers cannot hog: `slots`) that serves `GET /metrics` and
//! `GET /health` (`api`), the operator's commands (`api`) and the live view's routes (`live`), behind the
//! access rules of `auth` and `origin`. It listens on loopback by default: commands are for the local
//! operator. With a token or basic credentials configured, every request but /health must carry them.

pub mod api;
pub mod auth;
pub mod head;
pub mod live;
mod origin;
mod slots;

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{Counter, Health, Registry};
pub use api::OperatorPort;
use slots::{Slot, Slots};

const MAX_HEAD: usize = 8192;
/// The whole request head must be in within this time of the accept (not per read: a client trickling a byte
/// every few seconds would otherwise hold its connection for ever).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// A response must be taken within this time: a client that never reads would otherwise keep its slot (a
/// served one, which nothing evicts) for ever. Streams have their own rule (the viewer lag).
const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;

pub struct HttpState {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub operator: Option<OperatorPort>,
    pub live: Option<Arc<crate::live::Live>>,
    /// Who may use the listener; None (a bare metrics endpoint) leaves it open.
    auth: Option<auth::Auth>,
    /// The Host names the listener answers to; None (a bare metrics endpoint, scraped by whatever name the
    /// monitoring uses) takes any.
    hosts: Option<origin::HostRule>,
    requests: Counter,
    refused: Counter,
    commands: Counter,
    evicted: Counter,
    forbidden: Counter,
}

impl HttpState {
    /// A bare metrics and health endpoint (the collector's).
    pub fn new(registry: Arc<Registry>, health: Arc<Health>) -> Arc<Self> {
        Self::build(registry, health, None, None, None)
    }

    /// Metrics, health and operator commands, with the access rules of `[telemetry]`.
    pub fn with_operator(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: OperatorPort,
        telemetry: &crate::config::Telemetry,
    ) -> Arc<Self> {
        Self::build(registry, health, Some(operator), None, Some(telemetry))
    }

    /// The appliance's listener: operator commands plus the live view, with the access rules of `[telemetry]`.
    pub fn with_live(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: OperatorPort,
        live: Arc<crate::live::Live>,
        telemetry: &crate::config::Telemetry,
    ) -> Arc<Self> {
        Self::build(registry, health, Some(operator), Some(live), Some(telemetry))
    }

    fn build(
        registry: Arc<Registry>,
        health: Arc<Health>,
        operator: Option<OperatorPort>,
        live: Option<Arc<crate::live::Live>>,
        telemetry: Option<&crate::config::Telemetry>,
    ) -> Arc<Self> {
        let requests = registry.counter("ember_http_requests_total", "Requests served by the telemetry listener.", &[]);
        let refused = registry.counter(
            "ember_http_refused_total",
            "Telemetry connections refused or dropped (over the connection cap, bad or slow requests).",
            &[],
        );
        let commands = registry.counter("ember_operator_commands_total", "Operator commands accepted over HTTP.", &[]);
        let evicted = registry.counter(
            "ember_http_evicted_total",
            "Telemetry connections closed while still sending their request head, to make room for a new one \
             when every connection slot was taken.",
            &[],
        );
        let forbidden = registry.counter(
            "ember_http_forbidden_total",
            "Telemetry requests refused for where they come from: a Host this listener does not answer to (421), \
             or a command with another origin (403) or a form content type (415).",
            &[],
        );
        let auth = telemetry.map(|t| auth::Auth::new(t.token.as_deref(), t.basic_auth.as_deref()));
        let hosts = telemetry.map(|t| origin::HostRule::new(&t.allowed_hosts));
        Arc::new(HttpState {
            registry,
            health,
            operator,
            live,
            auth,
            hosts,
            requests,
            refused,
            commands,
            evicted,
            forbidden,
        })
    }
}

pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) -> std::io::Result<()> {
    // Live-view viewers hold their connection for as long as they watch: they get places of their own.
    let viewers = state.live.as_ref().map(|l| l.limits.max_total()).unwrap_or(0);
    let slots = Slots::new(MAX_CONNECTIONS + viewers, state.evicted.clone());
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
        let accepted = Instant::now();
        let Some(slot) = slots.admit() else {
            state.refused.inc();
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if handle(stream, slot, accepted, &state).await.is_err() {
                state.refused.inc();
            }
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    mut slot: Slot,
    accepted: Instant,
    state: &Arc<HttpState>,
) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_HEAD];
    let mut len = 0;
    let head_end = loop {
        if len == buf.len() {
            return respond(&mut stream, 431, "text/plain", "", b"request header too large\n", false).await;
        }
        let read = tokio::select! {
            // Closed to make room for a newer connection (counted as evicted, not refused).
            _ = slot.evicted().cancelled() => return Ok(()),
            r = tokio::time::timeout_at(accepted + HEAD_DEADLINE, stream.read(&mut buf[len..])) => r,
        };
        let n = read.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(p) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    if !slot.serving() {
        return Ok(());
    }
    state.requests.inc();
    let head = match head::parse(&buf[..head_end]) {
        Ok(h) => h,
        Err(bad) => return bad_request(&mut stream, &bad).await,
    };
    if let Some((status, msg)) = refusal(state, &head) {
        return respond(&mut stream, status, "text/plain", "", msg.as_bytes(), false).await;
    }
    let (method, path, query) = (head.method, head.path.as_str(), head.query);
    if let Some(auth) = &state.auth
        && path != "/health"
    {
        let authorization = match head.header("Authorization") {
            Ok(a) => a,
            Err(bad) => return bad_request(&mut stream, &bad).await,
        };
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
        let by = who(state, &head);
        let (status, body) = api::operator_command(state.operator.as_ref(), &state.commands, path, &by);
        return respond(&mut stream, status, "text/plain", "", body.as_bytes(), false).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "", b"method not allowed\n", false).await;
    }
    let mut headers = "";
    let (status, ctype, body) = if path == "/api/events" {
        api::events(state.operator.as_ref(), query)
    } else if let Some(rest) = path.strip_prefix("/api/events/") {
        let (status, ctype, body) = api::snapshot(state.operator.as_ref(), rest);
        // A snapshot never changes once written: the page's images load once (a 404 may change: not cached).
        if status == 200 {
            headers = "Cache-Control: private, max-age=86400\r\n";
        }
        (status, ctype, body)
    } else {
        api::telemetry(state, path)
    };
    // HEAD here announces an empty body (Content-Length 0), as this listener always has.
    respond(&mut stream, status, ctype, headers, if method == "HEAD" { &[] } else { &body }, false).await
}

/// Who sent a command, for the event log: `page` (the status page's buttons mark their requests) or `api`, with
/// the credential that let it in (`token`, the basic-auth user) or `open` on an open loopback listener.
fn who(state: &HttpState, head: &head::Head<'_>) -> String {
    let via =
        if head.header("X-Ember-Via").ok().flatten().is_some_and(|v| v.trim() == "page") { "page" } else { "api" };
    let auth = head.header("Authorization").ok().flatten().map(str::trim).unwrap_or("");
    let cred = match &state.auth {
        Some(a) if !a.is_open() => match auth.strip_prefix("Basic ").and_then(|b| a.basic_user(b.trim())) {
            Some(u) => format!("user {u}"),
            None => "token".to_owned(),
        },
        _ => "open".to_owned(),
    };
    format!("{via} ({cred})")
}

/// Whether the request is refused before any route or credential check: a malformed header it needs (400),
/// a `Host` this listener does not answer to (421), or a command a browser sent from another site (403, 415).
fn refusal(state: &HttpState, head: &head::Head<'_>) -> Option<(u16, String)> {
    let verdict = (|| {
        let host = head.single("Host")?;
        // A request without Host (HTTP/1.0 tools) is not from a browser, which always sends one.
        if let (Some(rule), Some(h)) = (&state.hosts, host)
            && !rule.allows(h)
        {
            // 421, not 403: no credentials would help; the request names a server this is not.
            return Ok(Some((421, "this listener does not answer to that Host (see [telemetry] allowed_hosts)\n")));
        }
        if head.method == "GET" || head.method == "HEAD" {
            return Ok(None);
        }
        cross_site(head, host)
    })();
    match verdict {
        Ok(None) => None,
        Ok(Some((status, msg))) => {
            state.forbidden.inc();
            Some((status, msg.to_owned()))
        }
        Err(bad) => Some((400, format!("{bad}\n"))),
    }
}

/// A command (any method but GET and HEAD) a browser could have sent from another site: an `Origin` (or,
/// without one, a `Referer`) other than this listener (403), or a body type that a cross-site form or simple
/// `fetch` can send without a CORS preflight (415). A client that sends neither header nor a body type
/// (curl -X POST) is not affected.
fn cross_site(head: &head::Head<'_>, host: Option<&str>) -> Result<Option<(u16, &'static str)>, head::Bad> {
    let from = match head.header("Origin")? {
        Some(o) => Some(o),
        None => head.header("Referer")?,
    };
    if let Some(from) = from
        && !host.is_some_and(|h| origin::same_origin(from, h))
    {
        return Ok(Some((403, "cross-origin commands are refused\n")));
    }
    if head.header("Content-Type")?.is_some_and(origin::is_form) {
        return Ok(Some((415, "commands take no form body: send none (curl -X POST)\n")));
    }
    Ok(None)
}

async fn bad_request(stream: &mut TcpStream, bad: &head::Bad) -> std::io::Result<()> {
    respond(stream, 400, "text/plain", "", format!("{bad}\n").as_bytes(), false).await
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
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(body).await?;
        }
        stream.shutdown().await
    };
    tokio::time::timeout(RESPONSE_DEADLINE, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response not taken"))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_gives_its_slot_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The client connects and never reads: the kernel buffers fill and the write would wait for ever.
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let body = vec![b'x'; 64 << 20];
        let started = Instant::now();
        let err = respond(&mut server, 200, "text/plain", "", &body, false).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), RESPONSE_DEADLINE);
    }
}
