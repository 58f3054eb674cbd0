//! The MQTT transport against a real broker (Debian's mosquitto, which `.ci/run` installs; this test starts
//! its own on a free port): an appliance's uplink publishes 3,000 alerts at QoS 1 while the broker restarts in
//! the middle, and the collector, consuming over MQTT with a persistent session, writes each exactly once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{exactly_once, free_port, written};

const TOOLS: &str = env!("CARGO_BIN_EXE_ember-tools");

fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].iter().map(PathBuf::from).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("this test needs the mosquitto broker (apt-get install mosquitto; .ci/run installs it)")
    })
}

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

fn signal(c: &mut Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, sig) };
    let _ = c.wait();
}

#[test]
fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let d = std::env::temp_dir().join(format!("ember-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("db")).unwrap();
    let port = free_port();
    let conf = d.join("mosquitto.conf");
    // mosquitto keeps at most 1,000 QoS 1 messages (max_queued_messages) for a subscriber that is away and drops
    // the rest after acknowledging them to the publisher: a collector reconnecting later than the appliance after
    // a broker restart then misses alerts (246 under qemu-aarch64). A site's broker needs this too (docs/guide.md).
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nautosave_interval 1\n\
             max_queued_messages 0\n",
            d.join("db").display()
        ),
    )
    .unwrap();
    let mut b = broker(&conf, port);
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

    let mut producer = Command::new(TOOLS)
        .args([
            "loadtest",
            "uplink",
            "--transport",
            "mqtt",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--alerts",
            "3000",
        ])
        .args(["--rate", "300", "--fsync", "never", "--heartbeat-secs", "0.5", "--wait-secs", "120", "--spool"])
        .arg(d.join("spool"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before_restart = written(&out).len();
    assert!(before_restart > 100, "alerts flowed before the restart: {before_restart}");
    // A graceful restart, as systemd or an operator does it: the broker saves its sessions and queues.
    signal(&mut b, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1500));
    let mut b2 = broker(&conf, port);
    let status = producer.wait().unwrap();
    let mut report = String::new();
    std::io::Read::read_to_string(&mut producer.stdout.take().unwrap(), &mut report).unwrap();
    assert!(status.success(), "producer: {report}");
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert!(r["reconnects"].as_f64().unwrap() >= 1.0, "the producer saw the broker go: {r}");

    let deadline = Instant::now() + Duration::from_secs(60);
    while written(&out).len() < 3000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&mut collector, libc::SIGTERM);
    signal(&mut b2, libc::SIGTERM);
    exactly_once(&written(&out), 1..=3000);
    let _ = std::fs::remove_dir_all(&d);
}
