//! The end-to-end slice on paused time: replayed real frames and a simulated device in a fire scenario go
//! through detection, the sensor link and fusion; the uplink delivers the alerts to the collector, which
//! prints them as JSON lines, in order, exactly once.

mod common;

use std::time::Duration;

use common::{SharedBuf, load, site_toml};
use ember_edge::app::{App, Overrides};

#[tokio::test(start_paused = true)]
async fn fire_scenario_produces_pre_alarm_then_alarm_at_the_collector() {
    let loaded = load(&site_toml(""));
    let sink = SharedBuf::default();
    let app = App::start(&loaded, Overrides { collector_sink: Some(Box::new(sink.clone())), ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let metrics = app.registry.render();
    let names = app.registry.names();
    app.shutdown().await;

    let reference =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/metrics.md"))
            .unwrap();
    for name in &names {
        assert!(reference.contains(&format!("`{name}`")), "metric {name} is not in docs/reference/metrics.md");
    }

    let alerts = sink.alerts();
    let path: Vec<(&str, &str)> =
        alerts.iter().map(|a| (a["from"].as_str().unwrap(), a["to"].as_str().unwrap())).collect();
    assert_eq!(path, [("normal", "pre_alarm"), ("pre_alarm", "alarm")], "{alerts:#?}");
    let seqs: Vec<u64> = alerts.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(alerts.iter().all(|a| a["zone"] == "room" && a["device_id"] == 9));
    assert_eq!(alerts[0]["sources"], serde_json::json!(["vision"]));
    let alarm = &alerts[1];
    assert!(alarm["sources"].as_array().unwrap().len() >= 2, "ALARM needs two kinds of evidence: {alarm}");
    assert!(alarm["max_c"].as_f64().unwrap() >= 60.0 || alarm["smoke_pct"].as_f64().unwrap() >= 25.0, "{alarm}");
    assert!(metrics.contains("ember_zone_state{zone=\"room\"} 3"), "{metrics}");
    assert!(metrics.contains("ember_uplink_acked_total 2"), "{metrics}");
    assert!(metrics.contains("ember_sensor_packets_total{kind=\"frame\"}"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn idle_room_with_quiet_frames_raises_nothing() {
    // Only a quiet frame of the fixture set, and a room that never burns.
    let dir = std::env::temp_dir().join(format!("ember-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames/rf-indoorfire_image6_880670.jpg"),
        dir.join("quiet.jpg"),
    )
    .unwrap();
    let extra =
        format!("[[cameras]]\nname = \"quiet\"\nsource = \"replay\"\npath = \"{}\"\nfps = 4.0\n", dir.display());
    let text = site_toml(&extra)
        .replace("scenario = \"fire\"", "scenario = \"idle\"")
        .replace("cameras = [\"cam\"]", "cameras = [\"quiet\"]");
    let loaded = load(&text);
    let sink = SharedBuf::default();
    let app = App::start(&loaded, Overrides { collector_sink: Some(Box::new(sink.clone())), ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    app.shutdown().await;
    assert!(sink.alerts().is_empty(), "{:#?}", sink.alerts());
    assert!(sink.lines().iter().any(|l| l["type"] == "heartbeat"), "the link itself is up");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_frozen_camera_puts_its_zone_in_trouble_not_alarm() {
    // One file replayed over and over is exactly what a hung encoder looks like: identical frames.
    let dir = std::env::temp_dir().join(format!("ember-frozen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames/rf-indoorfire_image6_880670.jpg"),
        dir.join("still.jpg"),
    )
    .unwrap();
    let extra =
        format!("[[cameras]]\nname = \"still\"\nsource = \"replay\"\npath = \"{}\"\nfps = 4.0\n", dir.display());
    let text = site_toml(&extra)
        .replace("scenario = \"fire\"", "scenario = \"idle\"")
        .replace("cameras = [\"cam\"]", "cameras = [\"still\"]");
    let loaded = load(&text);
    let sink = SharedBuf::default();
    let app = App::start(&loaded, Overrides { collector_sink: Some(Box::new(sink.clone())), ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = app.registry.render();
    app.shutdown().await;
    let alerts = sink.alerts();
    let path: Vec<(&str, &str)> =
        alerts.iter().map(|a| (a["from"].as_str().unwrap(), a["to"].as_str().unwrap())).collect();
    assert_eq!(path, [("normal", "trouble")], "{alerts:#?}");
    assert!(metrics.contains("ember_camera_condition{camera=\"still\"} 2"), "{metrics}");
    assert!(metrics.contains("ember_camera_troubles_total{camera=\"still\"} 1"), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}
