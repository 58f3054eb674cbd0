//! Shared helpers for the integration tests: where the fixtures are (`fixtures`, also the unit tests'), a
//! simulated-site config on ephemeral ports, a tiny HTTP client, a byte sink the in-process collector can
//! write JSON lines into, and the binaries as child processes that never outlive a failed test.
#![allow(dead_code)]

pub mod fixtures;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

// The load tools' reader of the appliance's Prometheus text, compiled in here as well: tests read /metrics
// the way `ember-tools` does, and the binary's modules are not a library the tests could import.
#[path = "../../src/bin/ember-tools/prom.rs"]
pub mod prom;

/// The demo site on ephemeral loopback ports, with a fast fire; `extra` is appended (may override tables).
pub fn site_toml(extra: &str) -> String {
    format!(
        r#"
[site]
device_id = 9
name = "test-site"
[telemetry]
listen = "127.0.0.1:0"
[runtime]
shutdown_timeout_ms = 1500
[[cameras]]
name = "cam"
source = "replay"
path = "builtin:demo"
fps = 4.0
[sensors]
listen = ["127.0.0.1:0"]
[[sensors.devices]]
name = "dev"
loc_id = "1234"
[[simulator]]
loc_id = "1234"
scenario = "fire"
interval_secs = 0.5
fire_after_secs = 1.0
[[zones]]
name = "room"
cameras = ["cam"]
devices = ["dev"]
[uplink]
enabled = true
reconnect_min_ms = 50
[collector]
enabled = true
listen = "127.0.0.1:0"
{extra}
"#
    )
}

pub fn load(text: &str) -> ember_edge::config::Loaded {
    match ember_edge::config::load_str("test.toml", text, std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) {
        Ok(l) => l,
        Err(p) => panic!("test config invalid: {p:?}"),
    }
}

/// A `Write` whose bytes the test can read back.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.lines().into_iter().filter(|v| v["type"] == "alert").collect()
    }
}

/// Blocking HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// Blocking HTTP/1.1 POST with an empty body; returns (status, body).
pub fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "POST", path)
}

fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to telemetry");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Deadlines in tests are multiplied by `EMBER_TEST_TIME_SCALE` (board/qemu-test.sh sets it for emulated runs).
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    let k: f64 = std::env::var("EMBER_TEST_TIME_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    d.mul_f64(k.max(1.0))
}

/// The value of the series named exactly `series` (labels included) in the appliance's /metrics; 0 if absent.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    prom::value(&body, series).unwrap_or(0.0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Alert sequence numbers a collector wrote to its JSON-lines output, with how often each was written.
pub fn written(out: &std::path::Path) -> std::collections::BTreeMap<u64, u32> {
    let mut seen = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        // A line being written right now, or torn by a killed collector, is not an alert (yet).
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["type"] == "alert" {
            *seen.entry(v["seq"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

/// Every seq of `range` written exactly once, and nothing else.
pub fn exactly_once(seen: &std::collections::BTreeMap<u64, u32>, range: std::ops::RangeInclusive<u64>) {
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated: {:?}", &dups[..dups.len().min(10)]);
    let missing: Vec<u64> = range.clone().filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost {} alerts, first {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert_eq!(seen.len() as u64, range.end() - range.start() + 1, "unexpected extra seqs");
}

/// Removes every DHT segment before the first SOS, as many UVC and IP cameras send their frames.
pub fn strip_dht(j: &[u8]) -> Vec<u8> {
    let mut out = j[..2].to_vec();
    let mut pos = 2;
    loop {
        assert_eq!(j[pos], 0xFF);
        let code = j[pos + 1];
        if code == 0xDA {
            out.extend_from_slice(&j[pos..]);
            return out;
        }
        let len = usize::from(u16::from_be_bytes([j[pos + 2], j[pos + 3]])) + 2;
        if code != 0xC4 {
            out.extend_from_slice(&j[pos..pos + len]);
        }
        pos += len;
    }
}

/// `ember-tools eval frames DIR --detector D --json`: its one JSON report.
pub fn eval_frames(dir: &std::path::Path, detector: &str) -> serde_json::Value {
    eval_frames_with(dir, detector, &[])
}

/// [`eval_frames`] with more flags.
pub fn eval_frames_with(dir: &std::path::Path, detector: &str, extra: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ember-tools"))
        .args(["eval", "frames"])
        .arg(dir)
        .args(["--detector", detector, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "eval failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "exactly one JSON object: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A number field of a JSON report.
pub fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("missing {k} in {v}"))
}

/// A child process killed and reaped when dropped, so a failing assertion never leaves one running.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        sigkill(&mut self.0);
    }
}

/// SIGKILL and reap `c`, unless it is already reaped: its pid may belong to someone else by then.
pub fn sigkill(c: &mut std::process::Child) {
    if matches!(c.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// `ember-edge run --config CONFIG` (log level info), its log written to `log`.
pub fn spawn_run(config: &std::path::Path, log: &std::path::Path) -> Proc {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("log {}: {e}", log.display()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("ember-edge run: {e}"));
    Proc(child)
}

/// `ember-tools collect` on 127.0.0.1:`port`, writing what it receives to `out`.
pub fn spawn_collector(port: u16, out: &std::path::Path) -> Proc {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ember-tools"))
        .args(["collect", "--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("ember-tools collect: {e}"));
    Proc(child)
}
