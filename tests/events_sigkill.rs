//! The event log killed with SIGKILL 50 times while it writes, at random moments: every event the writer
//! reported as written (after its fsync) is there afterwards, nothing corrupt is ever returned, ids only rise,
//! and each restart after a kill logs itself as unclean. The writer is `ember-edge events --write-test`, the
//! log's own append path in a separate process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_edge::events::{Kind, Query, Store};
use ember_edge::prng::XorShift64;

fn detail(id: u64) -> String {
    format!("event {id} {}", "x".repeat((id % 97) as usize))
}

fn time_scale() -> f64 {
    std::env::var("EMBER_TEST_TIME_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0_f64).max(1.0)
}

/// How long the writer takes from spawn to its first report, in a folder of its own.
fn startup_time(dir: &std::path::Path) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let t0 = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["events", "--write-test", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let took = t0.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    assert!(first.starts_with("written "), "the writer did not start: {first:?}");
    took
}

#[test]
fn fifty_sigkills_lose_no_acknowledged_event_and_return_no_corrupt_one() {
    let dir = std::env::temp_dir().join(format!("ember-events-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = XorShift64::from_clock(16);
    let startup = startup_time(&dir.with_extension("startup"));
    let mut acked_total = 0;
    let mut runs_that_wrote = 0;
    // Highest id on disk after the previous round (None: the log was empty) and the restarts checked.
    let mut last_max: Option<u64> = None;
    let mut restarts_checked = 0;
    for round in 0..50 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
            .args(["events", "--write-test", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let seen = Arc::clone(&acked);
        let reader = std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                // Only whole lines: a line cut by the kill was not a report.
                if let Some(id) = line.strip_prefix("written ").and_then(|i| i.parse().ok()) {
                    seen.lock().unwrap().push(id);
                }
            }
        });
        // Most kills land while it writes: after about its start-up time (measured, so emulated runs, many times
        // slower to start, keep the same mix), within a random spread; some still land during start-up.
        let spread = Duration::from_millis(5 + rng.below(120) as u64).mul_f64(time_scale());
        std::thread::sleep(startup.mul_f64(0.8) + spread);
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = acked.lock().unwrap().clone();
        acked_total += acked.len();
        runs_that_wrote += usize::from(!acked.is_empty());

        if !dir.exists() {
            // Killed before it created the folder: it cannot have reported anything written.
            assert!(acked.is_empty(), "round {round}: events reported written but no folder");
            continue;
        }
        let store = Store::open_read_only(&dir).unwrap();
        let all = store.query(&Query { since: 0, limit: usize::MAX, kind: None, newest: false });
        assert!(all.windows(2).all(|w| w[0].id < w[1].id), "round {round}: ids out of order");
        for e in &all {
            assert_eq!(e.detail, detail(e.id), "round {round}: corrupt event {e:?}");
            assert!(matches!(e.kind, Kind::Zone | Kind::UncleanRestart), "round {round}: {e:?}");
        }
        let held: std::collections::BTreeSet<u64> = all.iter().map(|e| e.id).collect();
        for id in &acked {
            assert!(held.contains(id), "round {round}: event {id} was reported written and is gone");
        }
        // A run that wrote anything had opened a log whose tail was no clean stop (the previous run was killed), so it
        // logged its unclean restart first. Checked per round: the log is bounded and drops its oldest segments, so a
        // count over the whole run would miss restarts that rolled out.
        if let (Some(prev), false) = (last_max, acked.is_empty()) {
            assert!(
                all.iter().any(|e| e.kind == Kind::UncleanRestart && e.id > prev),
                "round {round}: the restart after a kill is not logged as unclean"
            );
            restarts_checked += 1;
        }
        last_max = all.last().map(|e| e.id).or(last_max);
    }
    assert!(
        acked_total > 500 && runs_that_wrote >= 40,
        "the writer barely ran: {acked_total} events in {runs_that_wrote} runs"
    );
    assert!(restarts_checked >= 30, "only {restarts_checked} restarts could be checked");
    let _ = std::fs::remove_dir_all(&dir);
}
