//! Issue 18 defects 1 and 2 on the real appliance (`ember-edge run`) and collector (`ember-tools collect`): a
//! spool that cannot be opened at start (a file where its folder should be) or that the disk stops taking
//! (a file-size limit, which fails writes as a full disk does, also for root) never stops an alert. The
//! appliance starts, raises TROUBLE (`/health` 503, `ember_uplink_spool_trouble`, heartbeats), sends every
//! alert from memory, and moves what it holds into the spool once the disk takes it again; a spool folder
//! deleted at run time is written again from the open segments.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, http_get, http_post, metric, spawn_collector};
use ember_edge::telemetry::clock;

const BIN: &str = env!("CARGO_BIN_EXE_ember-edge");
const STATE: &str = "ember_zone_state{zone=\"room\"}";
const TROUBLE: &str = "ember_uplink_spool_trouble";

struct Site {
    dir: PathBuf,
    config: PathBuf,
    out: PathBuf,
    telemetry: SocketAddr,
    sensor_port: u16,
    collector_port: u16,
}

fn site(name: &str) -> Site {
    let dir = std::env::temp_dir().join(format!("ember-spool-trouble-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (collector_port, sensor_port, tport) = (free_port(), free_port(), free_port());
    let telemetry: SocketAddr = format!("127.0.0.1:{tport}").parse().unwrap();
    let config = dir.join("site.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[site]
device_id = 7
name = "spool-trouble"
[telemetry]
listen = "127.0.0.1:{tport}"
[sensors]
listen = ["127.0.0.1:{sensor_port}"]
[[sensors.devices]]
name = "dev"
ip = "127.0.0.1"
[[zones]]
name = "room"
devices = ["dev"]
smoke_readings = 1
smoke_alone_alarms = true
[uplink]
enabled = true
server = "127.0.0.1:{collector_port}"
reconnect_min_ms = 20
heartbeat_secs = 1
spool_dir = "spool"
fsync = "always"
"#
        ),
    )
    .unwrap();
    let out = dir.join("alerts.jsonl");
    Site { dir, config, out, telemetry, sensor_port, collector_port }
}

fn collect(s: &Site) -> Proc {
    spawn_collector(s.collector_port, &s.out)
}

/// Starts the appliance and waits until it serves `/health` with anything but "starting".
fn run(s: &Site, mut cmd: Command) -> Proc {
    let mut c = Proc(cmd.arg("run").arg("--config").arg(&s.config).stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + common::scaled(Duration::from_secs(20));
    loop {
        if TcpStream::connect(s.telemetry).is_ok() && !http_get(s.telemetry, "/health").1.starts_with("starting") {
            return c;
        }
        if let Ok(Some(status)) = c.0.try_wait() {
            panic!("the appliance did not start: {status}");
        }
        assert!(Instant::now() < deadline, "the appliance did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(15));
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One alarm and its reset: two alerts (NORMAL → ALARM, ALARM → NORMAL).
fn alarm_cycle(s: &Site, dev: &mut TcpStream) {
    dev.write_all(b"#Sensor:ADC1=3500,ADC2=1300!\n").unwrap();
    wait_for("alarm", || metric(s.telemetry, STATE) == 3.0);
    dev.write_all(b"#Sensor:ADC1=280,ADC2=1300!\n").unwrap();
    assert!((200..300).contains(&http_post(s.telemetry, "/api/zones/room/reset").0));
    wait_for("normal", || metric(s.telemetry, STATE) == 0.0);
}

/// (epoch, seq) of every alert line the collector wrote, with how often; and its heartbeat lines.
fn output(out: &Path) -> (BTreeMap<(u64, u64), u32>, Vec<serde_json::Value>) {
    let (mut alerts, mut heartbeats) = (BTreeMap::new(), Vec::new());
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["type"] == "alert" {
            *alerts.entry((v["epoch"].as_u64().unwrap(), v["seq"].as_u64().unwrap())).or_insert(0) += 1;
        } else if v["type"] == "heartbeat" {
            heartbeats.push(v);
        }
    }
    (alerts, heartbeats)
}

/// Defect 1: `cannot start: cannot open the alert spool`, exit 1, no detection and no outputs at all.
#[test]
fn the_appliance_starts_without_its_spool_sends_from_memory_and_spools_once_it_can() {
    let s = site("start");
    let spool = s.dir.join("spool");
    std::fs::write(&spool, b"a file where the spool folder should be").unwrap();
    let _collector = collect(&s);
    let quiet = || {
        let mut c = Command::new(BIN);
        c.stderr(Stdio::null());
        c
    };
    let app = run(&s, quiet());
    // The first answer once the listeners are up already shows it: the uplink's health part is set before the
    // appliance reports ready, not when its task first runs (under qemu-arm /health once answered 200 between).
    let (status, body) = http_get(s.telemetry, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("trouble: alert spool"), "{body}");
    assert_eq!(metric(s.telemetry, TROUBLE), 1.0);
    let status = http_get(s.telemetry, "/api/status").1;
    assert!(status.contains("alert spool"), "the status page names the trouble: {status}");

    let mut dev = TcpStream::connect(("127.0.0.1", s.sensor_port)).unwrap();
    alarm_cycle(&s, &mut dev);
    wait_for("delivery from memory", || output(&s.out).0.len() == 2);
    // The collector writes an alert before its acknowledgement reaches the appliance: wait for that too.
    wait_for("the acknowledgements", || metric(s.telemetry, "ember_uplink_pending") == 0.0);
    let (alerts, heartbeats) = output(&s.out);
    assert!(alerts.keys().all(|(epoch, _)| *epoch >= 1 << 31), "sent under the memory epoch: {alerts:?}");
    // Bit 0 is SPOOL; the site bits beside it (a sensor not yet connected sets STALE) are other tests' business.
    let spool_bit = |h: &serde_json::Value| h["health"].as_u64().is_some_and(|b| b & 1 == 1);
    assert!(heartbeats.iter().any(|h| h["spool_trouble"] == true && spool_bit(h)), "{heartbeats:?}");
    // The site's own bits ride along: once its one device delivers, heartbeats say no source is stale, and the
    // clock bit says what the kernel says of this machine's clock.
    wait_for("a heartbeat with the device online", || output(&s.out).1.iter().any(|h| h["sources_stale"] == false));
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let synced = clock::judge(clock::kernel_synchronised(), secs);
    assert!(output(&s.out).1.iter().all(|h| h["clock_unsynced"] == !synced), "clock synchronised: {synced}");

    // With the collector gone, the next alerts wait in memory; once the disk is fixed they move to the spool.
    drop(_collector);
    alarm_cycle(&s, &mut dev);
    wait_for("alerts held in memory", || metric(s.telemetry, "ember_uplink_memory_alerts") == 2.0);
    std::fs::remove_file(&spool).unwrap();
    wait_for("the spool to open", || metric(s.telemetry, TROUBLE) == 0.0);
    assert_eq!(metric(s.telemetry, "ember_uplink_memory_alerts"), 0.0);
    assert_eq!(metric(s.telemetry, "ember_uplink_pending"), 2.0);
    assert_eq!(http_get(s.telemetry, "/health").0, 200);
    assert!(std::fs::read_dir(&spool).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "seg")));
    // Held alerts survive a restart now that they are on disk.
    drop(app);
    let app = run(&s, quiet());
    assert_eq!(http_get(s.telemetry, "/health").0, 200);
    let _collector = collect(&s);
    alarm_cycle(&s, &mut TcpStream::connect(("127.0.0.1", s.sensor_port)).unwrap());
    wait_for("everything delivered", || output(&s.out).0.len() == 6);
    wait_for("the spool to drain", || metric(s.telemetry, "ember_uplink_pending") == 0.0);
    let (alerts, _) = output(&s.out);
    assert!(alerts.values().all(|n| *n == 1), "duplicates: {alerts:?}");
    assert_eq!(alerts.keys().filter(|(e, _)| *e >= 1 << 31).count(), 4, "{alerts:?}");
    assert_eq!(metric(s.telemetry, "ember_uplink_lost_total"), 0.0);
    drop(app);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Defect 2: on a full disk, 398 of 700 alerts were lost with the collector connected, `ember_uplink_dropped`
/// at 0 and `/health` 200. A file-size limit on the appliance fails its spool writes part-way, as ENOSPC does.
#[test]
fn alerts_a_full_disk_cannot_take_still_reach_the_collector_and_raise_trouble() {
    let s = site("full");
    let _collector = collect(&s);
    let mut cmd = Command::new(BIN);
    // SAFETY: only async-signal-safe libc calls between fork and exec, on the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            // Past the limit the kernel also sends SIGXFSZ, whose default action would kill the appliance;
            // an ignored signal stays ignored across exec.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 1500;
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stderr(Stdio::null());
    let app = run(&s, cmd);
    assert_eq!(http_get(s.telemetry, "/health").0, 200);
    let mut dev = TcpStream::connect(("127.0.0.1", s.sensor_port)).unwrap();
    let cycles = 30;
    for _ in 0..cycles {
        alarm_cycle(&s, &mut dev);
    }
    wait_for("every alert delivered", || output(&s.out).0.len() == 2 * cycles);
    let (alerts, _) = output(&s.out);
    assert!(alerts.values().all(|n| *n == 1), "duplicates: {alerts:?}");
    let seqs: Vec<u64> = alerts.keys().map(|k| k.1).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(seqs, (1..=2 * cycles as u64).collect::<Vec<_>>(), "one numbering across spool and memory");
    let held = alerts.keys().filter(|(e, _)| *e >= 1 << 31).count();
    assert!(held > 0 && held < 2 * cycles, "{held} of {} sent from memory", 2 * cycles);
    assert_eq!(metric(s.telemetry, TROUBLE), 1.0);
    let (status, body) = http_get(s.telemetry, "/health");
    assert!(status == 503 && body.contains("trouble: alert spool"), "{status} {body}");
    wait_for("a heartbeat reporting the trouble", || output(&s.out).1.iter().any(|h| h["spool_trouble"] == true));
    wait_for("the acks", || metric(s.telemetry, "ember_uplink_pending") == 0.0);
    assert_eq!(metric(s.telemetry, "ember_uplink_lost_total"), 0.0);
    // With everything acknowledged nothing waits to be written, and the disk is still full: the trouble stays
    // (it used to clear at the next retry and come back with the next alert), in every heartbeat from the first.
    let beats = || output(&s.out).1.into_iter().skip_while(|h| h["spool_trouble"] != true).collect::<Vec<_>>();
    let first = beats().len();
    wait_for("three more heartbeats", || beats().len() >= first + 3);
    assert!(beats().iter().all(|h| h["spool_trouble"] == true), "{:?}", beats());
    assert_eq!(metric(s.telemetry, TROUBLE), 1.0);
    assert_eq!(http_get(s.telemetry, "/health").0, 503);
    drop(app);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Defect 2: a spool folder deleted under the running appliance took the alerts waiting in it along at the
/// next restart (a new epoch, nothing to resend). They are still readable through the open segments: the
/// appliance notices within seconds and writes them into a new folder, so a restart still delivers them.
#[test]
fn alerts_waiting_in_a_deleted_spool_folder_survive_a_restart() {
    let s = site("deleted");
    let quiet = || {
        let mut c = Command::new(BIN);
        c.stderr(Stdio::null());
        c
    };
    let app = run(&s, quiet());
    let mut dev = TcpStream::connect(("127.0.0.1", s.sensor_port)).unwrap();
    alarm_cycle(&s, &mut dev);
    wait_for("two alerts spooled", || metric(s.telemetry, "ember_uplink_pending") == 2.0);
    let spool = s.dir.join("spool");
    std::fs::remove_dir_all(&spool).unwrap();
    wait_for("the spool written again", || {
        std::fs::read_dir(&spool)
            .is_ok_and(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(".seg")))
            && metric(s.telemetry, "ember_uplink_memory_alerts") == 0.0
    });
    drop(app);
    let app = run(&s, quiet());
    let _collector = collect(&s);
    wait_for("both delivered after the restart", || output(&s.out).0.len() == 2);
    wait_for("the acks", || metric(s.telemetry, "ember_uplink_pending") == 0.0);
    let (alerts, _) = output(&s.out);
    assert_eq!(alerts.keys().map(|k| k.1).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(metric(s.telemetry, "ember_uplink_lost_total"), 0.0);
    drop(app);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// The same start in-process, checked before the scheduler has run any task: the spool's trouble is on the
/// health report the moment the appliance says it is ready (a single-threaded runtime, so nothing else ran).
#[tokio::test(flavor = "current_thread")]
async fn the_spool_trouble_is_on_health_from_the_moment_the_appliance_is_ready() {
    let s = site("ready");
    let spool = s.dir.join("spool");
    std::fs::write(&spool, b"a file where the spool folder should be").unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap().replace("\"spool\"", &format!("{:?}", spool));
    let app = ember_edge::app::App::start(&common::load(&text), Default::default()).await.unwrap();
    assert!(app.health.is_ready());
    let failing = app.health.failing(tokio::time::Instant::now());
    assert!(failing.iter().any(|f| f.contains("trouble: alert spool")), "{failing:?}");
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&s.dir);
}
