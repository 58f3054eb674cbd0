//! The event log through the running appliance and its command line: an alarm, trouble-free operator commands
//! (who sent them) and outputs appear in `GET /api/events`, pages chain with `next` and lose nothing, the kind
//! filter holds, bad parameters are refused; a clean stop is the last event and the next start is not called
//! unclean; `ember-edge events` prints the same log from the folder.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{SharedBuf, http_get, http_post, load, site_toml};
use ember_edge::app::{App, Overrides};
use serde_json::Value;

fn get(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn events(v: &Value) -> Vec<Value> {
    v["events"].as_array().cloned().unwrap_or_default()
}

fn config(dir: &std::path::Path) -> String {
    site_toml("").replace("[uplink]\n", &format!("[uplink]\nevents_dir = {:?}\n", dir.display().to_string()))
}

async fn wait_for(addr: std::net::SocketAddr, path: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(20));
    loop {
        let p = path.to_owned();
        let v = tokio::task::spawn_blocking(move || get(addr, &p)).await.unwrap();
        let e = events(&v);
        if ok(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "{path} never satisfied; last: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_the_log_and_a_clean_stop_ends_it() {
    let dir = std::env::temp_dir().join(format!("ember-events-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = load(&config(&dir));
    let ov = || Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() };
    let app = App::start(&loaded, ov()).await.unwrap();
    let addr = app.telemetry_addr;

    let alarm =
        |e: &[Value]| e.iter().any(|e| e["kind"] == "zone" && e["detail"].as_str().unwrap().contains("→ alarm"));
    wait_for(addr, "/api/events?kind=zone", alarm).await;
    let (a, s) = tokio::task::spawn_blocking(move || {
        (http_post(addr, "/api/zones/room/acknowledge").0, http_post(addr, "/api/zones/all/silence").0)
    })
    .await
    .unwrap();
    assert_eq!((a, s), (202, 202));
    let ops = wait_for(addr, "/api/events?kind=operator", |e| e.len() >= 2).await;
    assert_eq!(ops[0]["detail"], "acknowledge");
    assert_eq!(ops[0]["zone"], "room");
    assert_eq!(ops[0]["by"], "api (open)");
    assert_eq!((&ops[1]["detail"], &ops[1]["zone"]), (&Value::from("silence"), &Value::from("all")));
    wait_for(addr, "/api/events?kind=zone", |e| {
        e.iter().any(|e| e["detail"].as_str().unwrap().starts_with("acknowledged → silenced"))
    })
    .await;

    let all = tokio::task::spawn_blocking(move || get(addr, "/api/events?limit=1000")).await.unwrap();
    let all = events(&all);
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], ["start", "config"], "{kinds:?}");
    assert!(all[1]["detail"].as_str().unwrap().contains("sha256 "), "{:?}", all[1]);
    assert!(kinds.contains(&"output"), "{kinds:?}");
    assert!(all.windows(2).all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64()));
    // Pages of two, chained with `next`, give the same events.
    let paged = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut since = 0;
        loop {
            let p = get(addr, &format!("/api/events?since={since}&limit=2"));
            let e = events(&p);
            assert!(e.len() <= 2);
            if e.is_empty() {
                assert_eq!(p["next"], since);
                return out;
            }
            since = p["next"].as_u64().unwrap();
            assert_eq!(Some(since), e.last().and_then(|l| l["id"].as_u64()));
            out.extend(e);
        }
    })
    .await
    .unwrap();
    assert_eq!(&paged[..all.len()], &all[..]);
    let newest = tokio::task::spawn_blocking(move || get(addr, "/api/events?limit=3&newest=1")).await.unwrap();
    assert_eq!(events(&newest).len(), 3);
    for bad in ["/api/events?limit=0", "/api/events?limit=5000", "/api/events?since=x", "/api/events?kind=fire"] {
        let status = tokio::task::spawn_blocking(move || http_get(addr, bad).0).await.unwrap();
        assert_eq!(status, 400, "{bad}");
    }
    app.shutdown().await;

    // The log on disk ends with the clean stop; the CLI reads it from the folder.
    let out =
        Command::new(env!("CARGO_BIN_EXE_ember-edge")).args(["events", "--json", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(&lines[..all.len()], &all[..]);
    assert_eq!(lines.last().unwrap()["kind"], "stop");
    let last_id = lines.last().unwrap()["id"].as_u64().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ember-edge"))
        .args(["events", "--kind", "operator", "--last", "1", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(table.contains("operator") && table.contains("silence") && table.contains("[by api (open)]"), "{table}");

    // A restart after a clean stop is not unclean, and ids go on.
    let app = App::start(&loaded, ov()).await.unwrap();
    let addr = app.telemetry_addr;
    let after = wait_for(addr, &format!("/api/events?since={last_id}"), |e| e.len() >= 2).await;
    assert_eq!(after[0]["kind"], "start");
    assert_eq!(after[0]["id"].as_u64(), Some(last_id + 1));
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
