//! The running appliance: `run` serves /metrics and /health and stops within 2 s on SIGTERM with exit 0;
//! a killed task makes /health report 503 naming it; shutdown sets the alarm outputs safe, last.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SharedBuf, http_get, http_post, load, site_toml};
use ember_edge::alarm::{Outputs, RecordingOutput};
use ember_edge::app::{App, Overrides};

#[test]
fn run_serves_metrics_and_health_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ember-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("site.toml");
    std::fs::write(&cfg, site_toml("")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bound (ephemeral) telemetry address is in the start-up log line.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("telemetry http://").nth(1) {
            addr = rest.split('/').next().and_then(|a| a.parse().ok());
        }
        line.clear();
    }
    let addr = addr.expect("start-up line with the telemetry address");
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });

    let (status, body) = http_get(addr, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    std::thread::sleep(Duration::from_millis(1500));
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "ember_uptime_seconds",
        "ember_frames_captured_total{camera=\"cam\"}",
        "ember_queue_dropped_total{queue=\"observations\"}",
        "ember_process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert_eq!(http_get(addr, "/nope").0, 404);

    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(sent.elapsed() < common::scaled(Duration::from_secs(2)), "did not stop within 2 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains("stopping (SIGTERM)"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_makes_health_name_it() {
    let loaded = load(&site_toml(""));
    let app =
        App::start(&loaded, Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() })
            .await
            .unwrap();
    let addr = app.telemetry_addr;
    let get = move |p: &'static str| tokio::task::spawn_blocking(move || http_get(addr, p));
    assert_eq!(get("/health").await.unwrap().0, 200);
    assert!(app.kill_task("fusion"), "tasks: {:?}", app.task_names());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get("/health").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("fusion (aborted)"), "{body}");
    assert!(!body.contains("camera"), "only the killed task is named: {body}");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_sets_outputs_safe_last_after_an_alarm() {
    let loaded = load(&site_toml(""));
    let rec = RecordingOutput::default();
    let sink = SharedBuf::default();
    let app = App::start(
        &loaded,
        Overrides { alarm: Some(Box::new(rec.clone())), collector_sink: Some(Box::new(sink.clone())) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = rec.applied.lock().unwrap().clone();
    assert!(before.iter().any(|o| o.relay), "an alarm energised the relay: {before:?}");
    let report = app.shutdown().await;
    assert!(report.aborted.is_empty(), "every task stopped in time: {report:?}");
    let after = rec.applied.lock().unwrap().clone();
    assert_eq!(after.last(), Some(&Outputs::SAFE), "safe state is applied last: {after:?}");
    assert_eq!(after.len(), before.len() + 1, "nothing touched the outputs after the safe state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_acknowledges_silences_and_resets_over_http() {
    let loaded = load(&site_toml(""));
    let rec = RecordingOutput::default();
    let sink = SharedBuf::default();
    let app = App::start(
        &loaded,
        Overrides { alarm: Some(Box::new(rec.clone())), collector_sink: Some(Box::new(sink.clone())) },
    )
    .await
    .unwrap();
    let addr = app.telemetry_addr;
    let sink2 = sink.clone();
    tokio::task::spawn_blocking(move || {
        let state = || {
            let (_, m) = http_get(addr, "/metrics");
            m.lines()
                .find(|l| l.starts_with("ember_zone_state{zone=\"room\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let wait_state = |want: f64| {
            let deadline = Instant::now() + common::scaled(Duration::from_secs(20));
            while state() != Some(want) {
                assert!(Instant::now() < deadline, "zone never reached state {want}, now {:?}", state());
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_state(3.0);
        assert_eq!(http_post(addr, "/api/zones/nowhere/acknowledge").0, 404);
        assert_eq!(http_post(addr, "/api/zones/room/dance").0, 404);
        assert_eq!(http_post(addr, "/api/zones/room/acknowledge").0, 202);
        wait_state(4.0);
        assert_eq!(http_post(addr, "/api/zones/all/silence").0, 202);
        wait_state(5.0);
        assert_eq!(http_post(addr, "/api/zones/room/reset").0, 202);
        // The simulated fire is still burning: after the reset, fresh evidence raises the alarm again.
        wait_state(3.0);
        let deadline = Instant::now() + common::scaled(Duration::from_secs(5));
        loop {
            let reasons: Vec<String> =
                sink2.alerts().iter().map(|a| a["reason"].as_str().unwrap_or("").to_owned()).collect();
            if ["operator_acknowledge", "operator_silence", "operator_reset"]
                .iter()
                .all(|r| reasons.iter().any(|x| x == r))
            {
                break;
            }
            assert!(Instant::now() < deadline, "operator alerts missing: {reasons:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    app.shutdown().await;
    let applied = rec.applied.lock().unwrap().clone();
    use ember_edge::alarm::Siren;
    assert!(applied.iter().any(|o| o.relay && o.siren == Siren::Off), "silenced: relay on, siren off: {applied:?}");
    assert_eq!(applied.last(), Some(&Outputs::SAFE));
}
