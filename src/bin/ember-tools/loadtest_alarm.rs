//! `ember-tools loadtest alarm`: measures input → alarm output latency on a running appliance. It connects as
//! a sensor device, sends a smoke packet stamped with its send time that pushes a zone into ALARM, waits for
//! the zone to latch, resets the zone over the operator API, and repeats. The appliance records, for each
//! packet that changed the alarm outputs, the time from the packet's `TS` to the outputs applied
//! (`ember_alarm_latency_seconds`); the tool reports p50/p95/p99 over the run. Use a zone with
//! `smoke_readings = 1` and `smoke_alone_alarms = true` so no confirmation window is measured.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::prom;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The appliance's sensor port.
    #[arg(long, default_value = "127.0.0.1:4888")]
    pub sensor: SocketAddr,
    /// The appliance's telemetry listener (metrics and the operator API).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub telemetry: SocketAddr,
    /// The zone to drive; its device must be identified by the sensor connection (e.g. `ip` in config).
    #[arg(long)]
    pub zone: String,
    #[arg(long, default_value_t = 300)]
    pub iterations: u32,
    /// Milliseconds to wait after each reset before the next smoke packet: time for a camera in the zone to
    /// see fire again, so that each ALARM carries vision evidence and writes a snapshot.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let state_metric = format!("ember_zone_state{{zone=\"{}\"}}", args.zone);
    const HIST: &str = "ember_alarm_latency_seconds";
    let before = prom::buckets(&http(args.telemetry, "GET", "/metrics")?, HIST);
    let mut dev = TcpStream::connect(args.sensor)?;
    dev.set_nodelay(true)?;
    dev.set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut sink = [0u8; 256];
    let started = Instant::now();
    for i in 0..args.iterations {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        dev.write_all(format!("#Sensor:ADC1=3500,ADC2=1300,TS={ts}!\n").as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Drain the appliance's commands so its writes never block.
            let _ = dev.read(&mut sink);
            let m = http(args.telemetry, "GET", "/metrics")?;
            if prom::value(&m, &state_metric) == Some(3.0) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "iteration {i}: zone {} did not reach ALARM (is its device identified and smoke_readings 1?)",
                    args.zone
                );
            }
        }
        http(args.telemetry, "POST", &format!("/api/zones/{}/reset", args.zone))?;
        dev.write_all(b"#Sensor:ADC1=280,ADC2=1300!\n")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while prom::value(&http(args.telemetry, "GET", "/metrics")?, &state_metric) == Some(3.0) {
            if Instant::now() > deadline {
                anyhow::bail!("iteration {i}: zone {} did not reset", args.zone);
            }
        }
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    }
    let after = prom::buckets(&http(args.telemetry, "GET", "/metrics")?, HIST);
    let d = prom::delta(&before, &after);
    Ok(serde_json::json!({
        "iterations": args.iterations,
        "measured": d.count,
        "input_to_outputs_ms": {"p50": d.p50_ms, "p95": d.p95_ms, "p99": d.p99_ms},
        "wall_secs": started.elapsed().as_secs_f64(),
    }))
}
