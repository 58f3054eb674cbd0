//! The discovery document against what Home Assistant's MQTT integration requires of a device-based discovery
//! message, the state payloads and the command refusals.

use super::*;
use crate::config::{Config, load_default};

fn config(buttons: &[HaButton]) -> Config {
    let mut c = load_default().unwrap().config;
    c.site.device_id = Some(7);
    c.uplink.mqtt.home_assistant = true;
    c.uplink.mqtt.buttons = buttons.to_vec();
    let mut heat = c.zones[0].clone();
    heat.name = "Boiler Room".into();
    heat.cameras.clear();
    // The shared device's smoke channel off: the camera-less zone is left with heat.
    c.sensors.devices[0].smoke_alarm_pct = 100.0;
    c.zones.push(heat);
    c
}

#[test]
fn every_component_has_a_platform_a_unique_id_and_the_device_identifiers() {
    let m = HaModel::from_config(&config(&[]));
    assert_eq!(m.discovery_topic(), "homeassistant/device/ember_edge_7/config");
    let d = m.discovery();
    assert_eq!(d["dev"]["ids"][0], "ember_edge_7");
    assert_eq!(d["o"]["name"], "ember-edge");
    assert_eq!(d["avty_t"], "ember/7/status");
    let cmps = d["cmps"].as_object().unwrap();
    let mut ids = std::collections::HashSet::new();
    for (k, c) in cmps {
        assert!(c["p"].is_string(), "{k} has a platform");
        assert!(ids.insert(c["unique_id"].as_str().unwrap().to_owned()), "{k}: unique ids differ");
        assert!(c["unique_id"].as_str().unwrap().starts_with("ember_edge_7_"));
    }
    assert_eq!(cmps["boiler_room_fire"]["device_class"], "smoke", "a camera sees smoke");
    assert_eq!(cmps["boiler_room_1_fire"]["device_class"], "heat", "thermal only: slug collision made unique");
    assert_eq!(cmps["boiler_room_trouble"]["device_class"], "problem");
    assert_eq!(cmps["boiler_room_state"]["options"].as_array().unwrap().len(), ZoneState::ALL.len());
    assert_eq!(cmps["demo_cam_connected"]["device_class"], "connectivity");
    assert_eq!(cmps["boiler_sensor_connected"]["state_topic"], "ember/7/source/boiler_sensor");
    assert_eq!(cmps["hottest"]["expire_after"], 90);
    assert_eq!(cmps["demo_cam_fps"]["value_template"], "{{ value_json.camera_fps[0] }}");
    assert_eq!(cmps["operator"]["p"], "event");
    assert!(!cmps.values().any(|c| c["p"] == "button"), "no button unless configured");
    assert_eq!(m.command_filter(), None);
}

#[test]
fn unique_ids_are_stable_across_restarts_and_button_choices() {
    let a = HaModel::from_config(&config(&[])).discovery();
    let b = HaModel::from_config(&config(&[HaButton::Acknowledge])).discovery();
    for (k, c) in a["cmps"].as_object().unwrap() {
        assert_eq!(b["cmps"][k]["unique_id"], c["unique_id"]);
    }
}

#[test]
fn configured_buttons_appear_and_others_are_refused() {
    let m = HaModel::from_config(&config(&[HaButton::Acknowledge, HaButton::Test]));
    let d = m.discovery();
    assert_eq!(d["cmps"]["boiler_room_acknowledge"]["command_topic"], "ember/7/command/boiler_room/acknowledge");
    assert_eq!(d["cmps"]["boiler_room_test_start"]["p"], "button");
    assert!(d["cmps"].get("boiler_room_silence").is_none());
    assert_eq!(m.command_filter().as_deref(), Some("ember/7/command/#"));
    assert_eq!(
        m.parse_command("ember/7/command/boiler_room_1/acknowledge", b"PRESS"),
        Ok(Command { zone: Some(1), cmd: OperatorCmd::Acknowledge })
    );
    assert_eq!(
        m.parse_command("ember/7/command/all/test-end", b"PRESS"),
        Ok(Command { zone: None, cmd: OperatorCmd::TestEnd })
    );
    let refused = m.parse_command("ember/7/command/boiler_room/silence", b"PRESS").unwrap_err();
    assert!(refused.contains("not configured"), "{refused}");
    assert!(m.parse_command("ember/7/command/nowhere/acknowledge", b"PRESS").is_err());
    assert!(m.parse_command("ember/7/command/boiler_room/acknowledge", b"ON").is_err());
    assert!(m.parse_command("ember/8/command/boiler_room/acknowledge", b"PRESS").is_err());
    assert!(m.parse_command("ember/7/command/boiler_room/cut-delay", b"PRESS").is_err(), "not configured");
    let m = HaModel::from_config(&config(&[HaButton::CutDelay]));
    assert_eq!(m.discovery()["cmps"]["boiler_room_cut_delay"]["p"], "button");
    assert_eq!(
        m.parse_command("ember/7/command/boiler_room/cut-delay", b"PRESS"),
        Ok(Command { zone: Some(0), cmd: OperatorCmd::CutDelay })
    );
}

#[test]
fn zone_payloads_follow_the_alarm_states() {
    let v = |s| serde_json::from_str::<Value>(&zone_payload(s)).unwrap();
    assert_eq!(v(ZoneState::PreAlarm), json!({"state": "pre_alarm", "fire": "OFF", "trouble": "OFF"}));
    assert_eq!(v(ZoneState::Alarm)["fire"], "ON");
    assert_eq!(v(ZoneState::Acknowledged)["fire"], "ON", "acknowledged is still a fire");
    assert_eq!(v(ZoneState::Trouble)["trouble"], "ON");
    assert_eq!(v(ZoneState::Test)["fire"], "OFF", "an output test is no fire");
}

#[test]
fn only_operator_transitions_are_events() {
    let e = event_payload(reason::OPERATOR_ACK, "boiler-room", ZoneState::Acknowledged).unwrap();
    let v: Value = serde_json::from_str(&e).unwrap();
    assert_eq!(v["event_type"], "acknowledge");
    assert!(EVENT_TYPES.contains(&v["event_type"].as_str().unwrap()));
    assert_eq!(event_payload(reason::K_OF_N, "boiler-room", ZoneState::Alarm), None);
}

#[test]
fn diagnostics_round_and_leave_unknowns_null() {
    let d = Diagnostics { hottest_c: Some(61.26), smoke_pct: None, camera_fps: vec![Some(3.96), None], spool_depth: 4 };
    let v: Value = serde_json::from_str(&diagnostics_payload(&d)).unwrap();
    assert_eq!(v, json!({"hottest_c": 61.3, "smoke_pct": null, "camera_fps": [4.0, null], "spool_depth": 4}));
}

#[test]
fn birth_resends_after_a_short_random_delay_and_diagnostics_are_rate_limited() {
    let t0 = Instant::now();
    let mut s = Schedule::new(Duration::from_secs(30));
    assert!(s.take_diagnostics(t0), "first diagnostics go at once");
    assert!(!s.take_diagnostics(t0 + Duration::from_secs(29)));
    assert!(s.take_diagnostics(t0 + Duration::from_secs(30)));
    // Jitter 0.5 of the 0.5..=3 s range.
    s.on_birth(t0, 0.5);
    assert!(!s.resend_due(t0 + Duration::from_millis(1749)));
    // A second birth while one is pending does not push the re-send back.
    s.on_birth(t0 + Duration::from_secs(1), 1.0);
    assert!(s.resend_due(t0 + Duration::from_millis(1750)));
    assert_eq!(s.next(), Some(t0 + Duration::from_millis(1750)));
    s.sent_all(t0 + Duration::from_secs(2));
    assert!(!s.resend_due(t0 + Duration::from_secs(100)));
    assert_eq!(s.next(), Some(t0 + Duration::from_secs(32)));
}

#[test]
fn a_large_site_fits_in_one_discovery_packet() {
    let mut c = config(&[HaButton::Acknowledge, HaButton::Silence, HaButton::Test]);
    for i in 0..64 {
        let mut z = c.zones[0].clone();
        z.name = format!("zone-{i:02}-with-a-longer-name");
        c.zones.push(z);
    }
    let d = HaModel::from_config(&c).discovery().to_string();
    assert!(d.len() > 10 * 1024, "beyond rumqttc's default limit: {}", d.len());
    assert!(d.len() < MAX_PAYLOAD / 4, "{}", d.len());
}

#[test]
fn a_site_with_cameras_has_an_image_entity_for_the_alarm_picture() {
    let m = HaModel::from_config(&config(&[]));
    let d = m.discovery();
    let image = &d["cmps"]["snapshot"];
    assert_eq!(image["p"], "image");
    assert_eq!(image["image_topic"], m.picture_topic());
    assert_eq!(m.picture_topic(), "ember/7/snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
    let mut c = config(&[]);
    c.cameras.clear();
    for z in &mut c.zones {
        z.cameras.clear();
    }
    let d = HaModel::from_config(&c).discovery();
    assert!(d["cmps"].get("snapshot").is_none(), "no cameras, no picture");
}
