//! `ember-edge loadtest alarm`: measures input → alarm output latency on a running appliance. It connects as
//! a sensor device, sends a smoke packet stamped with its send time that pushes a zone into ALARM, waits for
//! the zone to latch, resets the zone over the operator API, and repeats. The appliance records, for each
//! packet that changed the alarm outputs, the time from the packet's `TS` to the outputs applied
//! (`ember_alarm_latency_seconds`); the tool reports p50/p95/p99 over the run. Use a zone with
//! `smoke_readings = 1` and `smoke_alone_alarms = true` so no confirmation window is measured.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::telemetry::metrics::quantile_from_buckets;

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
}

fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn metric_line(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

fn buckets(text: &str) -> Vec<(f64, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("ember_alarm_latency_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, tail) = rest.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, tail.rsplit(' ').next()?.parse::<f64>().ok()? as u64))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let state_metric = format!("ember_zone_state{{zone=\"{}\"}}", args.zone);
    let before = buckets(&http(args.telemetry, "GET", "/metrics")?);
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
            if metric_line(&m, &state_metric) == Some(3.0) {
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
        while metric_line(&http(args.telemetry, "GET", "/metrics")?, &state_metric) == Some(3.0) {
            if Instant::now() > deadline {
                anyhow::bail!("iteration {i}: zone {} did not reset", args.zone);
            }
        }
    }
    let after = buckets(&http(args.telemetry, "GET", "/metrics")?);
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, c)| (le, c.saturating_sub(before.iter().find(|b| b.0 == le).map(|b| b.1).unwrap_or(0))))
        .collect();
    let q = |p| quantile_from_buckets(&delta, p).map(|s| (s * 1e6).round() / 1e3);
    Ok(serde_json::json!({
        "iterations": args.iterations,
        "measured": delta.last().map(|x| x.1).unwrap_or(0),
        "input_to_outputs_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        "wall_secs": started.elapsed().as_secs_f64(),
    }))
}
