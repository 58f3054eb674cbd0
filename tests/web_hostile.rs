//! The appliance's web listener under hostile input (issue 18, defects 5, 10 and 11), over real loopback
//! sockets: connections trickling their request heads cannot lock out `/health` or an authenticated operator,
//! and a head must arrive whole within its deadline; a cross-site command or a foreign `Host` name is
//! refused while curl-style commands keep working; a non-UTF-8 header byte affects only that header, and
//! paths are percent-decoded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{SharedBuf, load, scaled};
use ember_edge::app::{App, Overrides};

fn config(telemetry_extra: &str) -> String {
    format!(
        "[telemetry]\nlisten = \"127.0.0.1:0\"\n{telemetry_extra}\n[sensors]\nlisten = [\"127.0.0.1:0\"]\n\
         [[sensors.devices]]\nname = \"dev\"\nloc_id = \"1234\"\n[[zones]]\nname = \"boiler-room\"\ndevices = [\"dev\"]\n"
    )
}

async fn start(text: &str) -> App {
    let ov = Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() };
    App::start(&load(text), ov).await.unwrap()
}

/// Sends `req` as it is and reads the whole response: (status, body); status 0 when the connection was
/// closed or timed out without an answer.
fn raw(addr: SocketAddr, req: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else { return (0, String::new()) };
    s.set_read_timeout(Some(scaled(Duration::from_secs(3)))).unwrap();
    if s.write_all(req).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    raw(addr, format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n").as_bytes())
}

fn metric(addr: SocketAddr, series: &str, auth: &str) -> f64 {
    let (_, body) = request(addr, "GET", "/metrics", auth);
    common::prom::value(&body, series).unwrap_or(0.0)
}

const TOKEN: &str = "Authorization: Bearer s3cret-token\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_heads_do_not_lock_out_health_or_the_operator() {
    let app = start(&config("token = \"s3cret-token\"")).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        // More tricklers than the listener has slots (64 + 16 viewers), each sending a byte every 300 ms (well
        // inside any per-read timeout) and reconnecting at once when closed, as a slowloris client does.
        let stop = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        let attacker = {
            let (stop, reconnects) = (Arc::clone(&stop), Arc::clone(&reconnects));
            std::thread::spawn(move || {
                let open = || {
                    let s = TcpStream::connect(addr).ok()?;
                    (&s).write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").ok()?;
                    Some(s)
                };
                let mut socks: Vec<Option<TcpStream>> = (0..100).map(|_| open()).collect();
                while !stop.load(Ordering::Relaxed) {
                    for s in socks.iter_mut() {
                        if s.as_ref().is_none_or(|c| (&*c).write_all(b"a").is_err()) {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            *s = open();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        for _ in 0..3 {
            let t = Instant::now();
            assert_eq!(request(addr, "GET", "/health", ""), (200, "ok\n".into()), "/health under slowloris");
            assert!(t.elapsed() < scaled(Duration::from_secs(2)), "/health took {:?}", t.elapsed());
            let t = Instant::now();
            let (status, body) = request(addr, "POST", "/api/zones/boiler-room/silence", TOKEN);
            assert_eq!(status, 202, "operator command under slowloris: {body}");
            assert!(t.elapsed() < scaled(Duration::from_secs(2)), "the command took {:?}", t.elapsed());
            std::thread::sleep(Duration::from_millis(400));
        }
        assert!(started.elapsed() < scaled(Duration::from_secs(8)));
        let evicted = metric(addr, "ember_http_evicted_total", TOKEN);
        stop.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
        assert!(evicted >= 20.0, "the tricklers beyond the slots made room by closing older ones: {evicted}");
        assert!(reconnects.load(Ordering::Relaxed) > 0);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_must_arrive_whole_within_its_deadline() {
    let app = start(&config("")).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let opened = Instant::now();
        s.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // One byte a second: every read is quick, but the head as a whole is not.
        let mut last_byte = Instant::now();
        let closed_after = loop {
            assert!(opened.elapsed() < scaled(Duration::from_secs(9)), "a head trickled for 9 s was not closed");
            if last_byte.elapsed() >= Duration::from_secs(1) {
                last_byte = Instant::now();
                if s.write_all(b"a").is_err() {
                    break opened.elapsed();
                }
            }
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(0) => break opened.elapsed(),
                Ok(_) => panic!("a response to a head that never ended"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break opened.elapsed(),
            }
        };
        assert!(closed_after >= Duration::from_millis(4500), "closed before the 5 s deadline: {closed_after:?}");
        assert_eq!(common::metric(addr, "ember_http_refused_total"), 1.0);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_commands_and_foreign_hosts_are_refused() {
    // The default: loopback, no credentials.
    let app = start(&config("")).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let silence = "/api/zones/all/silence";
        let form = "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n";
        // What a form on another site submits.
        assert_eq!(request(addr, "POST", silence, &format!("Origin: http://evil.example\r\n{form}")).0, 403);
        assert_eq!(request(addr, "POST", silence, "Origin: http://evil.example\r\n").0, 403);
        assert_eq!(request(addr, "POST", silence, "Origin: null\r\n").0, 403);
        assert_eq!(request(addr, "POST", silence, "Referer: http://evil.example/page.html\r\n").0, 403);
        let other_port = format!("Origin: http://127.0.0.1:{}\r\n", addr.port().wrapping_add(1));
        assert_eq!(request(addr, "POST", silence, &other_port).0, 403);
        // A form body type needs no preflight, so even without Origin (old browsers, stripped headers) it is out.
        assert_eq!(request(addr, "POST", silence, form).0, 415);
        assert_eq!(request(addr, "POST", silence, "Content-Type: text/plain;charset=UTF-8\r\n").0, 415);
        assert_eq!(request(addr, "POST", silence, &format!("Origin: http://{addr}\r\n{form}")).0, 415);
        assert_eq!(common::metric(addr, "ember_operator_commands_total"), 0.0, "nothing refused was queued");
        // DNS rebinding: a page whose own name now points at the appliance.
        for path in ["/health", "/metrics", "/api/status", "/"] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: evil.example:{}\r\n\r\n", addr.port());
            assert_eq!(raw(addr, req.as_bytes()).0, 421, "{path}");
        }
        let req = format!("POST {silence} HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n\r\n");
        assert_eq!(raw(addr, req.as_bytes()).0, 421);
        assert_eq!(common::metric(addr, "ember_http_forbidden_total"), 13.0);
        // What keeps working: curl (no Origin, no body type), the page's own same-origin requests, localhost.
        assert_eq!(common::http_post(addr, silence).0, 202);
        assert_eq!(request(addr, "POST", silence, &format!("Origin: http://{addr}\r\n")).0, 202);
        let referer = format!("Referer: http://{addr}/index.html\r\nContent-Type: application/json\r\n");
        assert_eq!(request(addr, "POST", silence, &referer).0, 202);
        assert_eq!(request(addr, "GET", "/api/status", &format!("Origin: http://{addr}\r\n")).0, 200);
        let req = format!("GET /health HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", addr.port());
        assert_eq!(raw(addr, req.as_bytes()), (200, "ok\n".into()));
        assert_eq!(raw(addr, b"GET /health HTTP/1.0\r\n\r\n"), (200, "ok\n".into()), "no Host: not a browser");
        assert_eq!(common::metric(addr, "ember_operator_commands_total"), 3.0);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_credentials_do_not_make_a_cross_site_command() {
    // A browser that has the basic credentials sends them with a cross-site form too.
    let app = start(&config("basic_auth = \"op:password1\"\nallowed_hosts = [\"ember.site.example\"]")).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let basic = "Authorization: Basic b3A6cGFzc3dvcmQx\r\n";
        let silence = "/api/zones/all/silence";
        let evil = format!("{basic}Origin: http://evil.example\r\nContent-Type: multipart/form-data; boundary=x\r\n");
        assert_eq!(request(addr, "POST", silence, &evil).0, 403);
        assert_eq!(request(addr, "POST", silence, &format!("{basic}Content-Type: text/plain\r\n")).0, 415);
        assert_eq!(request(addr, "POST", silence, basic).0, 202);
        // A configured name is one the listener answers to, with its own origin.
        let req = format!(
            "POST {silence} HTTP/1.1\r\nHost: ember.site.example:{p}\r\n{basic}Origin: http://ember.site.example:{p}\r\n\r\n",
            p = addr.port()
        );
        assert_eq!(raw(addr, req.as_bytes()).0, 202);
    })
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_header_affects_only_itself_and_paths_are_decoded() {
    let app = start(&config("token = \"s3cret-token\"")).await;
    let addr = app.telemetry_addr;
    tokio::task::spawn_blocking(move || {
        let with_junk = |method: &str, path: &str, extra: &str| {
            let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
            req.extend_from_slice(b"X-Junk: caf\xe9\r\nCookie: \xff\xfe\r\n");
            req.extend_from_slice(format!("{extra}Connection: close\r\n\r\n").as_bytes());
            raw(addr, &req)
        };
        assert_eq!(with_junk("GET", "/health", ""), (200, "ok\n".into()));
        assert_eq!(with_junk("GET", "/metrics", TOKEN).0, 200);
        assert_eq!(with_junk("GET", "/metrics", "").0, 401);
        assert_eq!(with_junk("POST", "/api/zones/all/silence", TOKEN).0, 202);
        // A header the request needs that is not UTF-8 is a clear 400, not a wrong answer.
        let mut req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
        req.extend_from_slice(b"Authorization: Bearer s3cr\xe9t\r\n\r\n");
        let (status, body) = raw(addr, &req);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("Authorization"), "{body}");
        let mut req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\xff\r\n\r\n".to_vec();
        assert_eq!(raw(addr, &req).0, 400);
        req.clear();
        // Paths are percent-decoded, segment by segment.
        let (status, body) = request(addr, "POST", "/api/zones/boiler%2Droom/silence", TOKEN);
        assert_eq!((status, body.as_str()), (202, "Silence queued for boiler-room\n"));
        assert_eq!(request(addr, "GET", "/he%61lth", "").0, 200);
        assert_eq!(request(addr, "POST", "/api/zones/boiler%2Froom/silence", TOKEN).0, 404);
        assert_eq!(request(addr, "GET", "/health%", "").0, 400);
    })
    .await
    .unwrap();
    app.shutdown().await;
}
