//! Home Assistant discovery from the appliance itself (`ember-edge run`) through a real mosquitto: the retained
//! discovery message checked against what Home Assistant requires, its re-send after a birth message, the zone
//! following pre-alarm, alarm and an acknowledge pressed in Home Assistant, a button that is not configured
//! refused, and availability going `offline` (the last will) when the appliance is SIGKILLed; and the newest
//! alarm snapshot published, retained, for Home Assistant's image entity.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::common::{free_port, http_get, metric};
use super::{broker, signal};

const DISCOVERY: &str = "homeassistant/device/ember_edge_7/config";
const ZONE: &str = "ember/7/zone/room";

/// A message as a subscriber got it.
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Msg {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{}: {e}: {}", self.topic, self.text()))
    }
}

fn subscriber(port: u16, id: &str, topics: &[&str]) -> (Client, Receiver<Msg>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    // Room for the alarm picture (tens of KB); rumqttc's default is 10 KiB.
    opts.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 64);
    for t in topics {
        client.subscribe(*t, QoS::AtLeastOnce).unwrap();
    }
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let m = Msg { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    (client, rx)
}

/// The next message matching `want` within `secs`; earlier ones are skipped.
fn next(rx: &Receiver<Msg>, secs: u64, what: &str, want: impl Fn(&Msg) -> bool) -> Msg {
    let deadline = Instant::now() + super::common::scaled(Duration::from_secs(secs));
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) if want(&m) => return m,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!("no message: {what}"),
        }
    }
}

fn zone_is(state: &'static str) -> impl Fn(&Msg) -> bool {
    move |m| m.topic == ZONE && m.json()["state"] == state
}

/// A fresh folder `ember-mqtt-NAME-PID` and a mosquitto of its own on a free port.
fn site_with_broker(name: &str) -> (std::path::PathBuf, u16, std::process::Child) {
    let d = std::env::temp_dir().join(format!("ember-mqtt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let port = free_port();
    let conf = d.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")).unwrap();
    let b = broker(&conf, port);
    (d, port, b)
}

#[test]
fn home_assistant_discovery_states_buttons_and_last_will() {
    let (d, port, mut b) = site_with_broker("ha");
    let (sport, tport) = (free_port(), free_port());
    let (ha, rx) = subscriber(port, "test-ha", &["homeassistant/#", "ember/7/#"]);
    std::thread::sleep(Duration::from_millis(300));

    let config = d.join("site.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[site]
device_id = 7
name = "ha-test"
[telemetry]
listen = "127.0.0.1:{tport}"
[sensors]
listen = ["127.0.0.1:{sport}"]
[[sensors.devices]]
name = "dev"
ip = "127.0.0.1"
flame_alarm_pct = 50
[[zones]]
name = "room"
devices = ["dev"]
smoke_readings = 1
smoke_alone_alarms = false
[uplink]
enabled = true
transport = "mqtt"
server = "127.0.0.1:{port}"
reconnect_min_ms = 20
[uplink.mqtt]
home_assistant = true
buttons = ["acknowledge"]
diagnostics_secs = 1
"#
        ),
    )
    .unwrap();
    let mut app = super::common::spawn_run(&config, &d.join("appliance.log"));
    let telemetry: SocketAddr = format!("127.0.0.1:{tport}").parse().unwrap();

    // The discovery message, against what Home Assistant's device-based discovery requires.
    let disc = next(&rx, 20, "discovery", |m| m.topic == DISCOVERY).json();
    assert!(disc["dev"]["ids"].as_array().is_some_and(|a| !a.is_empty()), "device identifiers: {disc}");
    assert!(disc["o"]["name"].is_string(), "origin: {disc}");
    let cmps = disc["cmps"].as_object().unwrap();
    for (k, c) in cmps {
        assert!(c["p"].is_string() && c["unique_id"].is_string(), "{k}: p and unique_id: {c}");
    }
    let platforms = |p: &str| cmps.values().filter(|c| c["p"] == p).count();
    assert_eq!(platforms("binary_sensor"), 3, "fire, trouble, the device's connectivity");
    assert_eq!(platforms("button"), 1, "acknowledge only, as configured");
    assert_eq!(platforms("event"), 1);
    assert_eq!(cmps["room_fire"]["device_class"], "smoke", "the device's smoke channel is on: {disc}");
    assert_eq!(disc["avty_t"], "ember/7/status");

    // Retained, and the availability topic exists: a late subscriber (Home Assistant starting) gets both.
    let (_late, late_rx) = subscriber(port, "test-late", &[DISCOVERY, "ember/7/status"]);
    let m = next(&late_rx, 5, "retained discovery", |m| m.topic == DISCOVERY);
    assert!(m.retain, "discovery is retained");
    let m = next(&late_rx, 5, "retained availability", |m| m.topic == "ember/7/status");
    assert!(m.retain && m.text() == "online", "availability retained online: {}", m.text());

    // Home Assistant restarts: its birth message brings the discovery again, after a short delay.
    let born = Instant::now();
    ha.publish("homeassistant/status", QoS::AtLeastOnce, false, "online").unwrap();
    next(&rx, 10, "discovery after the birth message", |m| m.topic == DISCOVERY);
    assert!(born.elapsed() >= Duration::from_millis(400), "re-sent after a delay, not at once");

    // The zone through pre-alarm, alarm and an acknowledge pressed in Home Assistant.
    let mut dev = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    dev.write_all(b"#Sensor:ADC1=280,ADC2=1300!\n").unwrap();
    next(&rx, 10, "device online", |m| m.topic == "ember/7/source/dev" && m.text() == "online");
    dev.write_all(b"#Sensor:ADC1=3500,ADC2=1300!\n").unwrap();
    let m = next(&rx, 10, "pre_alarm", zone_is("pre_alarm"));
    assert_eq!(m.json()["fire"], "OFF");
    let diag = next(&rx, 10, "diagnostics with smoke", |m| {
        m.topic == "ember/7/diagnostics" && m.json()["smoke_pct"].as_f64().is_some_and(|v| v > 50.0)
    });
    assert!(diag.json()["spool_depth"].is_u64());
    dev.write_all(b"#Sensor:ADC1=3500,ADC2=3500!\n").unwrap();
    let m = next(&rx, 10, "alarm", zone_is("alarm"));
    assert_eq!(m.json()["fire"], "ON");
    ha.publish("ember/7/command/room/acknowledge", QoS::AtLeastOnce, false, "PRESS").unwrap();
    let m = next(&rx, 10, "acknowledged", zone_is("acknowledged"));
    assert_eq!(m.json()["fire"], "ON", "still a fire until reset");
    let e = next(&rx, 10, "operator event", |m| m.topic == "ember/7/event").json();
    assert_eq!(e["event_type"], "acknowledge");
    assert_eq!(e["zone"], "room");

    // A button that was not configured is refused and counted; the zone stays as it is.
    ha.publish("ember/7/command/room/silence", QoS::AtLeastOnce, false, "PRESS").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(telemetry, "ember_ha_commands_total{result=\"refused\"}") < 1.0 {
        assert!(Instant::now() < deadline, "refusal counted: {}", http_get(telemetry, "/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(telemetry, "ember_ha_commands_total{result=\"accepted\"}"), 1.0);
    assert_eq!(metric(telemetry, "ember_zone_state{zone=\"room\"}"), 4.0, "still acknowledged");

    // The retained state is what a restarting Home Assistant reads.
    let (_late2, late2_rx) = subscriber(port, "test-late2", &[ZONE]);
    let m = next(&late2_rx, 5, "retained zone state", |m| m.topic == ZONE);
    assert!(m.retain && m.json()["state"] == "acknowledged", "{}", m.text());

    // SIGKILL: the broker publishes the last will.
    signal(&mut app.0, libc::SIGKILL);
    next(&rx, 30, "availability offline", |m| m.topic == "ember/7/status" && m.text() == "offline");
    signal(&mut b, libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&d);
}

/// The demo camera's alarm: its snapshot reaches Home Assistant's image entity as a JPEG, retained, and the
/// discovery message declares that entity.
#[test]
fn home_assistant_shows_the_newest_alarm_picture() {
    let (d, port, mut b) = site_with_broker("ha-picture");
    let tport = free_port();
    let (_ha, rx) =
        subscriber(port, "test-ha-picture", &["homeassistant/device/ember_edge_8/config", "ember/8/snapshot"]);
    std::thread::sleep(Duration::from_millis(300));
    let config = d.join("site.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[site]
device_id = 8
name = "ha-picture"
[telemetry]
listen = "127.0.0.1:{tport}"
[[cameras]]
name = "cam"
source = "replay"
path = "builtin:demo"
fps = 4.0
[[zones]]
name = "hall"
cameras = ["cam"]
[uplink]
enabled = true
transport = "mqtt"
server = "127.0.0.1:{port}"
reconnect_min_ms = 20
events_dir = "events"
[uplink.mqtt]
home_assistant = true
"#
        ),
    )
    .unwrap();
    let _app = super::common::spawn_run(&config, &d.join("appliance.log"));

    let disc = next(&rx, 20, "discovery", |m| m.topic == "homeassistant/device/ember_edge_8/config").json();
    let image = &disc["cmps"]["snapshot"];
    assert_eq!(image["p"], "image", "{disc}");
    assert_eq!(image["image_topic"], "ember/8/snapshot");
    assert_eq!(image["content_type"], "image/jpeg");
    let m = next(&rx, 60, "the alarm picture", |m| m.topic == "ember/8/snapshot");
    assert_eq!(m.payload.get(..2), Some(&[0xFF, 0xD8][..]), "a JPEG");
    let mut px = vec![0u8; 1024 * 1024 * 3];
    let got = ember_edge::camera::jpeg::JpegDecoder::new().decode_rgb(&m.payload, &mut px, 1024, 1024);
    assert!(got.is_ok(), "the picture decodes: {got:?}");
    // Retained: Home Assistant starting later still shows it.
    let (_late, late_rx) = subscriber(port, "test-ha-picture-late", &["ember/8/snapshot"]);
    let m = next(&late_rx, 10, "the retained picture", |m| m.topic == "ember/8/snapshot");
    assert!(m.retain && m.payload.starts_with(&[0xFF, 0xD8]), "retained JPEG");
    signal(&mut b, libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&d);
}
