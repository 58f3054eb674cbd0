//! Delivery under faults, with real processes: every test checks, from the collector's own output, that each
//! alert arrived exactly once — nothing lost, nothing duplicated. The producer is `ember-tools loadtest uplink`
//! (the appliance's uplink task and spool driven by synthetic transitions), the receiver `ember-tools collect`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{exactly_once, free_port, metric, written};
use ember_edge::uplink::wire::{self, Alert, MAX_FRAME, Up};

const TOOLS: &str = env!("CARGO_BIN_EXE_ember-tools");

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn collector(port: u16, out: &Path, extra: &[&str]) -> Child {
    let c = Command::new(TOOLS)
        .args(["collect", "--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready when it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "collector did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

fn producer(port: u16, spool: &Path, alerts: u32, extra: &[&str]) -> Command {
    let mut c = Command::new(TOOLS);
    c.args([
        "loadtest",
        "uplink",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--alerts",
        &alerts.to_string(),
        "--spool",
    ])
    .arg(spool)
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    c
}

/// Alert sequence numbers written by the collector, with how often each was written.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn kill(c: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
}

#[test]
fn collector_down_while_ten_thousand_alerts_are_produced_then_back_and_restarted() {
    let d = temp("down");
    let (spool, out) = (d.join("spool"), d.join("alerts.jsonl"));
    let port = free_port();
    let mut prod = producer(port, &spool, 10_000, &["--fsync", "never", "--wait-secs", "120"]).spawn().unwrap();
    // All 10,000 go into the spool while nobody listens.
    let deadline = Instant::now() + Duration::from_secs(60);
    while spool_bytes(&spool) < 10_000 * 50 {
        assert!(Instant::now() < deadline, "spool did not fill: {} bytes", spool_bytes(&spool));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c1 = collector(port, &out, &[]);
    // Kill the collector in the middle of the backlog, then bring it back on the same output file.
    let deadline = Instant::now() + Duration::from_secs(60);
    while written(&out).len() < 3000 {
        assert!(Instant::now() < deadline, "collector made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(&mut c1);
    let mut c2 = collector(port, &out, &[]);
    let status = prod.wait().unwrap();
    let mut report = String::new();
    prod.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    assert!(status.success(), "producer: {report}");
    kill(&mut c2);
    exactly_once(&written(&out), 1..=10_000);
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r["produced_now"], 10_000);
    assert!(r["reconnects"].as_f64().unwrap() >= 1.0);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn producer_killed_fifty_times_while_writing_the_spool_loses_and_duplicates_nothing() {
    let d = temp("sigkill");
    let (spool, out) = (d.join("spool"), d.join("alerts.jsonl"));
    let port = free_port();
    let mut c = collector(port, &out, &[]);
    let mut x = ember_edge::prng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
    let mut recovered_torn = 0u64;
    for _ in 0..50 {
        let mut p = producer(port, &spool, 2000, &["--fsync", "always", "--rate", "500"]).spawn().unwrap();
        // Scaled: under qemu-user a producer needs most of a second just to start.
        std::thread::sleep(common::scaled(Duration::from_millis(40 + x.next() % 300)));
        kill(&mut p);
    }
    let out_final = producer(port, &spool, 2000, &["--fsync", "always", "--wait-secs", "120"]).output().unwrap();
    assert!(out_final.status.success(), "{}", String::from_utf8_lossy(&out_final.stdout));
    let r: serde_json::Value = serde_json::from_slice(&out_final.stdout).unwrap();
    recovered_torn += r["torn_bytes"].as_u64().unwrap_or(0);
    kill(&mut c);
    exactly_once(&written(&out), 1..=2000);
    assert!(r["produced_before"].as_u64().unwrap() > 0, "the killed runs made progress: {r}");
    let _ = recovered_torn;
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_full_spool_drops_the_oldest_counts_them_and_reports_them_upstream() {
    let d = temp("full");
    let (spool, out) = (d.join("spool"), d.join("alerts.jsonl"));
    let port = free_port();
    let mut prod =
        producer(port, &spool, 3000, &["--fsync", "never", "--spool-max-bytes", "16384", "--heartbeat-secs", "0.2"])
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
    // The collector comes up only once all 3000 are in (and the oldest out of) the spool: an alert sent before the
    // drop would be both delivered and counted as dropped, and the count below would not add up.
    let stderr = prod.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("loadtest uplink: produced") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(common::scaled(Duration::from_secs(30))).expect("the producer reports the end of production");
    let mut c = collector(port, &out, &[]);
    let status = prod.wait().unwrap();
    let mut report = String::new();
    prod.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    assert!(status.success(), "{report}");
    std::thread::sleep(Duration::from_millis(500));
    kill(&mut c);
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    let dropped = r["dropped_by_full_spool"].as_f64().unwrap() as u64;
    let seen = written(&out);
    assert!(dropped > 0, "{r}");
    assert_eq!(seen.len() as u64 + dropped, 3000, "every alert is either delivered or counted as dropped");
    // What survived is the newest, contiguous up to the last one.
    exactly_once(&seen, (3000 - seen.len() as u64 + 1)..=3000);
    let text = std::fs::read_to_string(&out).unwrap();
    let reported = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "heartbeat")
        .filter_map(|v| v["spool_dropped"].as_u64())
        .max();
    assert_eq!(reported, Some(dropped), "heartbeats report the drops upstream");
    let _ = std::fs::remove_dir_all(&d);
}

fn frame(up: &Up<'_>, key: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME];
    let n = wire::encode(up, key, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn collect_rejects_and_counts_bad_frames_and_keeps_running() {
    let d = temp("reject");
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    // Stored as hex (what `openssl rand -hex 32` produces); both sides use the decoded bytes.
    let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(keys.join("7.key"), format!("{hex}\n")).unwrap();
    let key = &key[..];
    let out = d.join("alerts.jsonl");
    let (port, mport) = (free_port(), free_port());
    let mut c =
        collector(port, &out, &["--keys", keys.to_str().unwrap(), "--metrics-listen", &format!("127.0.0.1:{mport}")]);
    let alert = |seq| Alert {
        device_id: 7,
        epoch: 99,
        seq,
        ts_ms: 1,
        zone: "z",
        from: 0,
        to: 3,
        sources: 3,
        vision_milli: 900,
        max_deci_c: 700,
        rise_deci_c_min: 300,
        smoke_deci_pct: 200,
        flags: 0,
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let good1 = frame(&Up::Alert(alert(1)), key);
    s.write_all(&frame(&Up::Alert(alert(5)), b"wrong key")).unwrap();
    s.write_all(&good1).unwrap();
    s.write_all(&good1).unwrap(); // replayed
    s.write_all(&good1[..good1.len() / 2]).unwrap();
    s.write_all(&[0]).unwrap(); // ends the truncated frame
    s.write_all(&[0x13, 0x37, 0xC0, 0xFF, 0xEE, 0x42, 0x99, 0x00]).unwrap(); // random bytes
    s.write_all(&frame(&Up::Alert(alert(2)), key)).unwrap(); // still running
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(maddr, "ember_collector_alerts_total") < 2.0 {
        assert!(Instant::now() < deadline, "collector stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(maddr, "ember_collector_rejected_total{reason=\"bad_tag\"}"), 1.0);
    assert_eq!(metric(maddr, "ember_collector_rejected_total{reason=\"replayed\"}"), 1.0);
    let malformed: f64 = ["truncated", "framing", "body", "version"]
        .iter()
        .map(|r| metric(maddr, &format!("ember_collector_rejected_total{{reason=\"{r}\"}}")))
        .sum();
    assert_eq!(malformed, 2.0, "the truncated frame and the random bytes");
    kill(&mut c);
    exactly_once(&written(&out), 1..=2);
    let _ = std::fs::remove_dir_all(&d);
}
