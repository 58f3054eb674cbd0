//! Hostile hosts on the sensor port (the EmberEye protocol has no authentication): a second connection posing as
//! a configured device can neither raise a false alarm nor hide a real fire behind quiet readings, and it raises
//! TROUBLE (tamper) while it stays; a pinned device takes packets only from its own address; anonymous
//! connections cannot hold the slots a real device needs.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{SharedBuf, load, metric};
use ember_edge::app::{App, Overrides};

fn site(sensors: &str, devices: &str) -> String {
    format!(
        r#"
[telemetry]
listen = "127.0.0.1:0"
[sensors]
listen = ["127.0.0.1:0"]
offline_after_secs = 30
{sensors}
{devices}
[[zones]]
name = "z"
devices = ["alpha"]
smoke_readings = 1
smoke_alone_alarms = true
"#
    )
}

const ALPHA_BY_LOC: &str = r#"
[[sensors.devices]]
name = "alpha"
loc_id = "1234"
thermal = "compat"
"#;

async fn start(text: &str) -> App {
    App::start(&load(text), Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() })
        .await
        .unwrap()
}

/// A TCP connection from a chosen loopback address (the whole 127/8 reaches the listener on Linux).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(to).await.unwrap()
}

async fn metric_of(telemetry: SocketAddr, series: &str) -> f64 {
    let series = series.to_owned();
    tokio::task::spawn_blocking(move || metric(telemetry, &series)).await.unwrap()
}

async fn wait_metric(telemetry: SocketAddr, series: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + common::scaled(Duration::from_secs(10));
    loop {
        let v = metric_of(telemetry, series).await;
        if want(v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drains whatever the appliance writes (commands), so its writes never block.
fn drain(mut s: TcpStream) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let mut b = [0u8; 256];
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
}

const ZONE: &str = "ember_zone_state{zone=\"z\"}";
const FAULTS: &str = "ember_sensor_device_faults{device=\"alpha\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_posing_as_a_device_neither_alarms_nor_hides_a_fire() {
    let app = start(&site("", ALPHA_BY_LOC)).await;
    let (sensors, telemetry) = (app.sensor_addrs[0], app.telemetry_addr);
    let mut device = TcpStream::connect(sensors).await.unwrap();
    device.write_all(b"#Sensor1234:ADC1=280,ADC2=1300!\r\n").await.unwrap();
    assert_eq!(wait_metric(telemetry, "ember_sensor_device_packets_total{device=\"alpha\"}", |v| v >= 1.0).await, 1.0);

    // The spoofer claims the same loc id with full-scale smoke: dropped, no alarm, tamper trouble.
    let mut spoofer = TcpStream::connect(sensors).await.unwrap();
    for _ in 0..5 {
        spoofer.write_all(b"#Sensor1234:ADC1=4000,ADC2=1300!\r\n").await.unwrap();
    }
    let dup = wait_metric(telemetry, "ember_sensor_rejected_total{reason=\"duplicate\"}", |v| v >= 5.0).await;
    assert_eq!(dup, 5.0);
    assert_eq!(wait_metric(telemetry, ZONE, |v| v == 1.0).await, 1.0, "trouble, not alarm");
    assert_eq!(metric_of(telemetry, FAULTS).await, 32.0, "tamper bit");
    assert_eq!(metric_of(telemetry, "ember_sensor_device_impostor_packets_total{device=\"alpha\"}").await, 5.0);

    // Quiet readings from the spoofer cannot hide the real device's smoke: the zone alarms.
    for _ in 0..20 {
        spoofer.write_all(b"#Sensor1234:ADC1=280,ADC2=1300!\r\n").await.unwrap();
    }
    device.write_all(b"#Sensor1234:ADC1=3000,ADC2=1300!\r\n").await.unwrap();
    assert_eq!(wait_metric(telemetry, ZONE, |v| v == 3.0).await, 3.0, "the real smoke alarms");

    // The spoofer leaves: the tamper bit clears.
    drop(spoofer);
    assert_eq!(wait_metric(telemetry, FAULTS, |v| v == 0.0).await, 0.0);
    drop(device);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_device_takes_packets_only_from_its_own_address() {
    let devices = r#"
[[sensors.devices]]
name = "alpha"
loc_id = "1234"
ip = "127.0.0.2"
thermal = "compat"
"#;
    let app = start(&site("", devices)).await;
    let (sensors, telemetry) = (app.sensor_addrs[0], app.telemetry_addr);
    // The impostor connects first: it still does not become the device.
    let mut impostor = connect_from(Ipv4Addr::new(127, 0, 0, 1), sensors).await;
    impostor.write_all(b"#Sensor1234:ADC1=4000,ADC2=1300!\r\n").await.unwrap();
    let got = wait_metric(telemetry, "ember_sensor_rejected_total{reason=\"impostor\"}", |v| v >= 1.0).await;
    assert_eq!(got, 1.0);
    assert_eq!(wait_metric(telemetry, FAULTS, |v| v == 32.0).await, 32.0);
    let mut device = connect_from(Ipv4Addr::new(127, 0, 0, 2), sensors).await;
    device.write_all(b"#Sensor1234:ADC1=280,ADC2=1300!\r\n").await.unwrap();
    assert_eq!(wait_metric(telemetry, "ember_sensor_device_packets_total{device=\"alpha\"}", |v| v >= 1.0).await, 1.0);
    assert!(metric_of(telemetry, ZONE).await <= 1.0, "no alarm from the impostor's smoke");
    drop(impostor);
    assert_eq!(wait_metric(telemetry, FAULTS, |v| v == 0.0).await, 0.0);
    drop(device);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_cannot_lock_out_a_device() {
    // 20 slots; the flood comes from one address (capped at 8) and from many (evicted as the device arrives).
    let sensors_cfg = "max_connections = 20\nmax_connections_per_ip = 8\nidentify_secs = 2";
    let app = start(&site(sensors_cfg, ALPHA_BY_LOC)).await;
    let (sensors, telemetry) = (app.sensor_addrs[0], app.telemetry_addr);
    let mut flood = Vec::new();
    for i in 0..30u8 {
        // 10 from 127.0.0.1 (2 over its cap), then one each from 20 other addresses.
        let from = if i < 10 { Ipv4Addr::new(127, 0, 0, 1) } else { Ipv4Addr::new(127, 0, 1, i) };
        let mut s = connect_from(from, sensors).await;
        let _ = s.write_all(b"\n").await;
        flood.push(s);
    }
    let refused = wait_metric(telemetry, "ember_sensor_connections_refused_total", |v| v >= 2.0).await;
    assert!(refused >= 2.0, "over the per-address cap: {refused}");
    // Every slot is held by anonymous links, and the device still gets in at once.
    let mut device = connect_from(Ipv4Addr::new(127, 0, 0, 9), sensors).await;
    device.write_all(b"#Sensor1234:ADC1=280,ADC2=1300!\r\n").await.unwrap();
    assert_eq!(wait_metric(telemetry, "ember_sensor_device_packets_total{device=\"alpha\"}", |v| v >= 1.0).await, 1.0);
    assert!(metric_of(telemetry, "ember_sensor_connections_evicted_total").await >= 1.0);
    // Links that never identify are closed after identify_secs; the device's stays.
    let closed: Vec<_> = flood.into_iter().map(drain).collect();
    for c in closed {
        let gone = tokio::time::timeout(common::scaled(Duration::from_secs(10)), c).await;
        assert!(matches!(gone, Ok(Ok(true))), "anonymous link closed");
    }
    assert!(metric_of(telemetry, "ember_sensor_unidentified_closed_total").await >= 1.0);
    device.write_all(b"#Sensor1234:ADC1=281,ADC2=1300!\r\n").await.unwrap();
    assert_eq!(wait_metric(telemetry, "ember_sensor_device_packets_total{device=\"alpha\"}", |v| v >= 2.0).await, 2.0);
    app.shutdown().await;
}
