//! The MQTT transport against a real broker (Debian's mosquitto, which `.ci/run` installs; each test starts
//! its own on free ports): an appliance's uplink publishes 3,000 alerts at QoS 1 while the broker restarts in
//! the middle, and the collector, consuming over MQTT with a persistent session, writes each exactly once; the
//! same over TLS (a test CA made with the `openssl` CLI), and 10,000 alerts spooled over TLS while the broker is
//! down, delivered once it is back; a wrong CA and an expired broker certificate are refused, counted, and the spool keeps every alert until a good connection. Home Assistant discovery is
//! in mqtt/ha.rs (included here: one `test = false` target for everything that needs mosquitto).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{exactly_once, free_port, scaled, written};

const TOOLS: &str = env!("CARGO_BIN_EXE_ember-tools");

fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].iter().map(PathBuf::from).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("this test needs the mosquitto broker (apt-get install mosquitto; .ci/run installs it)")
    })
}

#[path = "mqtt/ha.rs"]
mod ha;
#[path = "mqtt/pki.rs"]
mod pki;

fn broker(conf: &Path, port: u16) -> Child {
    let c =
        Command::new(mosquitto_bin()).arg("-c").arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not open port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(c: &mut Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, sig) };
    let _ = c.wait();
}

/// What happens to the broker while the alerts flow.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// A graceful restart in the middle of 3,000 alerts.
    Restart,
    /// Down before the first of 10,000 alerts and until all are spooled, then back.
    Outage,
}

#[test]
fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    broker_fault(false, Fault::Restart);
}

#[test]
fn broker_restart_mid_stream_over_tls_loses_and_duplicates_nothing() {
    broker_fault(true, Fault::Restart);
}

#[test]
fn ten_thousand_alerts_through_a_broker_outage_over_tls_lose_and_duplicate_nothing() {
    broker_fault(true, Fault::Outage);
}

fn spool_bytes(dir: &Path) -> u64 {
    let seg = |e: &std::fs::DirEntry| e.path().extension().is_some_and(|x| x == "seg");
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    files.filter(seg).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// The appliance's uplink over TLS when `tls`; the collector always on the plain listener of the same broker.
fn broker_fault(tls: bool, fault: Fault) {
    let alerts: usize = if fault == Fault::Outage { 10_000 } else { 3000 };
    let d = std::env::temp_dir().join(format!("ember-mqtt-{}-{tls}-{alerts}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("db")).unwrap();
    let port = free_port();
    let tls_port = free_port();
    let pki = tls.then(|| pki::Pki::new(&d.join("pki")));
    let conf = d.join("mosquitto.conf");
    // mosquitto keeps at most 1,000 QoS 1 messages (max_queued_messages) for a subscriber that is away and drops
    // the rest after acknowledging them to the publisher: a collector reconnecting later than the appliance after
    // a broker restart then misses alerts (246 under qemu-aarch64). A site's broker needs this too (docs/guide.md).
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nautosave_interval 1\n\
             max_queued_messages 0\n{}",
            d.join("db").display(),
            pki.as_ref().map(|p| p.listener(tls_port, &p.server_cert)).unwrap_or_default()
        ),
    )
    .unwrap();
    // Taken out when it is stopped (the first one goes down before or in the middle of the flow).
    let mut b = Some(broker(&conf, port));
    if tls {
        wait_port(tls_port);
    }
    let out = d.join("alerts.jsonl");
    let mut collector = Command::new(TOOLS)
        .args(["collect", "--mqtt", &format!("127.0.0.1:{port}"), "--out"])
        .arg(&out)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the subscription, so the broker keeps the collector's session from here on.
    let mut log = BufReader::new(collector.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("subscribing") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "collector exited");
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while log.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    if fault == Fault::Outage {
        // The broker saves the collector's session and goes; it comes back once every alert is on disk.
        b.take().into_iter().for_each(|mut c| signal(&mut c, libc::SIGTERM));
    }

    let uplink_port = if tls { tls_port } else { port };
    let mut producer = Command::new(TOOLS)
        .args([
            "loadtest",
            "uplink",
            "--transport",
            "mqtt",
            "--server",
            &format!("127.0.0.1:{uplink_port}"),
            "--alerts",
            &alerts.to_string(),
        ])
        .args([
            "--rate",
            if fault == Fault::Outage { "2000" } else { "300" },
            "--fsync",
            "never",
            "--heartbeat-secs",
            "0.5",
            "--wait-secs",
            &scaled(Duration::from_secs(120)).as_secs().to_string(),
            "--spool",
        ])
        .arg(d.join("spool"))
        .args(pki.iter().flat_map(|p| [std::ffi::OsString::from("--ca-file"), p.ca.clone().into()]))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("producer.log")).unwrap())
        .spawn()
        .unwrap();
    let mut b2 = if fault == Fault::Outage {
        let deadline = Instant::now() + scaled(Duration::from_secs(60));
        while spool_bytes(&d.join("spool")) < alerts as u64 * 50 {
            assert!(Instant::now() < deadline, "spool did not fill: {} bytes", spool_bytes(&d.join("spool")));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(written(&out).is_empty(), "nothing can arrive while the broker is down");
        broker(&conf, port)
    } else {
        std::thread::sleep(Duration::from_secs(3));
        let before_restart = written(&out).len();
        assert!(before_restart > 100, "alerts flowed before the restart: {before_restart}");
        // A graceful restart, as systemd or an operator does it: the broker saves its sessions and queues.
        b.take().into_iter().for_each(|mut c| signal(&mut c, libc::SIGTERM));
        std::thread::sleep(Duration::from_millis(1500));
        broker(&conf, port)
    };
    if tls {
        wait_port(tls_port);
    }
    let status = producer.wait().unwrap();
    let mut report = String::new();
    std::io::Read::read_to_string(&mut producer.stdout.take().unwrap(), &mut report).unwrap();
    assert!(status.success(), "producer: {report}");
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    if fault == Fault::Restart {
        assert!(r["reconnects"].as_f64().unwrap() >= 1.0, "the producer saw the broker go: {r}");
    }

    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    while written(&out).len() < alerts && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&mut collector, libc::SIGTERM);
    signal(&mut b2, libc::SIGTERM);
    exactly_once(&written(&out), 1..=alerts as u64);
    let _ = std::fs::remove_dir_all(&d);
}

/// One `loadtest uplink` run of 200 alerts against `port` with `ca`, giving up after `wait` seconds: success,
/// the JSON report (from stdout, or from the error on stderr) and stderr.
fn tls_run(d: &Path, port: u16, ca: &Path, wait: &str) -> (bool, serde_json::Value, String) {
    let out = Command::new(TOOLS)
        .args(["loadtest", "uplink", "--transport", "mqtt", "--server", &format!("127.0.0.1:{port}")])
        .args(["--alerts", "200", "--fsync", "never", "--wait-secs", wait, "--ca-file"])
        .arg(ca)
        .arg("--spool")
        .arg(d.join("spool"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr).into_owned());
    let json = if out.status.success() {
        stdout.trim().to_owned()
    } else {
        let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error: {stderr}"));
        line[line.find('{').unwrap_or_else(|| panic!("no report: {line}"))..].to_owned()
    };
    (out.status.success(), serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}")), stderr)
}

#[test]
fn wrong_ca_and_expired_certificate_are_refused_and_the_spool_keeps_everything() {
    let d = std::env::temp_dir().join(format!("ember-mqtt-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let pki = pki::Pki::new(&d.join("pki"));
    let (port, good, expired) = (free_port(), free_port(), free_port());
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\n{}{}",
            pki.listener(good, &pki.server_cert),
            pki.listener(expired, &pki.expired_cert)
        ),
    )
    .unwrap();
    let mut b = broker(&conf, port);
    wait_port(good);
    wait_port(expired);
    let out = d.join("alerts.jsonl");
    let mut collector = Command::new(TOOLS)
        .args(["collect", "--mqtt", &format!("127.0.0.1:{port}"), "--out"])
        .arg(&out)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(collector.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("subscribing") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "collector exited");
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while log.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });

    for (port, ca, says) in [
        (good, &pki.other_ca, "not signed by a CA in [uplink.mqtt] ca_file"),
        (expired, &pki.ca, "certificate has expired"),
    ] {
        // Long enough for the 200 alerts to reach the spool and a few attempts to be refused, also under qemu.
        let wait = common::scaled(Duration::from_secs(4)).as_secs().to_string();
        let (ok, r, stderr) = tls_run(&d, port, ca, &wait);
        assert!(!ok, "refused, so never complete: {r}");
        assert!(stderr.contains(says), "a clear error ({says}):\n{stderr}");
        assert!(r["tls_refused"].as_u64().unwrap() >= 1, "counted: {r}");
        assert_eq!(r["acked"], 0, "nothing delivered: {r}");
        assert_eq!(r["pending"], 200.0, "the spool keeps every alert: {r}");
    }
    assert!(written(&out).is_empty(), "nothing reached the collector");
    let (ok, r, stderr) = tls_run(&d, good, &pki.ca, "60");
    assert!(ok, "the right CA and a valid certificate: {r} {stderr}");
    assert_eq!(r["tls_refused"], 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while written(&out).len() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&mut collector, libc::SIGTERM);
    signal(&mut b, libc::SIGTERM);
    exactly_once(&written(&out), 1..=200);
    let _ = std::fs::remove_dir_all(&d);
}
