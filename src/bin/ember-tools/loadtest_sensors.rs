//! `ember-tools loadtest sensors`: EmberEye's `tcp_sensor_load_test.py` (same flags, same JSON report) done
//! as a real measurement. Each client is one TCP connection that announces `#locid:<prefix>_<i>!`, then
//! sends `#Sensor` packets (and, with `--include-frames`, a thermal frame every second packet). What the
//! Python tool never measured is added: the appliance's own count of the packets it decoded (read from
//! `/metrics`), the packets lost, disconnects, and end-to-end latency — each sensor packet carries its send
//! time in a `TS` field, the appliance records write→decode and write→decision histograms, and this tool
//! reports their p50/p95/p99 over the run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 4888)]
    pub port: u16,
    /// Concurrent device connections.
    #[arg(long, default_value_t = 5)]
    pub clients: usize,
    /// Packets per client, including the initial `#locid`.
    #[arg(long, group = "target")]
    pub packets: Option<u64>,
    /// Seconds to run.
    #[arg(long, group = "target", value_parser = ember_edge::cmd::seconds)]
    pub duration: Option<f64>,
    /// Packets per second per client; 0 sends as fast as the link takes them.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Every second packet is a thermal frame.
    #[arg(long)]
    pub include_frames: bool,
    /// Frame payload: 3336 hex chars (real MLX90640 frames) or 3072 (EmberEye's load test, raw counts).
    #[arg(long, default_value_t = 3336, value_parser = parse_frame_hex)]
    pub frame_hex: usize,
    #[arg(long, default_value = "room")]
    pub locid_prefix: String,
    /// Seconds between progress reports.
    #[arg(long, default_value_t = 2.0, value_parser = ember_edge::cmd::seconds_or_zero)]
    pub report_interval: f64,
    /// Also write the JSON report here.
    #[arg(long)]
    pub stats_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The appliance's /metrics, for its own packet count, latency and resource use. "none" to skip.
    #[arg(long, default_value = "http://127.0.0.1:9090/metrics")]
    pub metrics_url: String,
    /// Count only packets the appliance attributed to this configured device (exact when other devices are
    /// connected too); default: all packets it decoded or rejected.
    #[arg(long)]
    pub server_device: Option<String>,
}

fn parse_frame_hex(s: &str) -> Result<usize, String> {
    match s {
        "3336" => Ok(3336),
        "3072" => Ok(3072),
        _ => Err("3336 or 3072".into()),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: seeded per client like the Python tool's Random(seed + i).
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Default, Clone)]
struct ClientStats {
    packets: u64,
    bytes: u64,
    errors: u64,
    disconnected: bool,
    duration: f64,
    latencies_ms: Vec<f64>,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Pre-built frame payloads: real-sensor frames (solved against a real MLX90640 calibration, with noise and a
/// warm spot that moves) so the appliance's calibration and analysis do real work; or, for `--frame-hex 3072`,
/// EmberEye's random raw words.
pub struct Frames {
    hex: Vec<String>,
    eeprom: String,
}

impl Frames {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let mut eeprom = String::from("#EEPROM:");
        for w in ember_edge::sensor::sim::DEVICE_EEPROM.iter() {
            let _ = write!(eeprom, "{w:04X}");
        }
        eeprom.push_str("!\n");
        let mut hex = Vec::new();
        if args.frame_hex == 3336 {
            let mut synth =
                ember_edge::sensor::sim::FrameSynth::new().map_err(|e| anyhow::anyhow!("frame synthesis: {e}"))?;
            for k in 0..16 {
                let (hr, hc) = (4 + k % 16, 4 + (k * 5) % 24);
                let words = synth.frame(|r, c| {
                    let d = (r as f64 - hr as f64).abs() + (c as f64 - hc as f64).abs();
                    // Per-pixel noise of about ±0.15 °C, different in every frame.
                    let mut x = Rng(args.seed ^ ((k * 768 + r * 32 + c) as u64));
                    24.0 + (40.0 - 8.0 * d).max(0.0) + (x.next() % 300) as f64 / 1000.0 - 0.15
                });
                let mut h = String::with_capacity(3336);
                for w in words.iter() {
                    let _ = write!(h, "{w:04X}");
                }
                hex.push(h);
            }
        }
        Ok(Frames { hex, eeprom })
    }
}

fn push_packet(out: &mut String, n: u64, args: &Args, frames: &Frames, rng: &mut Rng) {
    if args.include_frames && n.is_multiple_of(2) {
        out.push_str("#frame:");
        if frames.hex.is_empty() {
            for _ in 0..args.frame_hex / 4 {
                let _ = write!(out, "{:04X}", rng.next() as u16);
            }
        } else {
            out.push_str(&frames.hex[(n / 2) as usize % frames.hex.len()]);
        }
        out.push_str("!\n");
    } else {
        let _ = writeln!(
            out,
            "#Sensor:ADC1={},ADC2={},ADC3={},TS={}!",
            rng.range(400, 700),
            rng.range(750, 900),
            rng.range(850, 950),
            unix_nanos()
        );
    }
}

async fn client(
    i: usize,
    addr: SocketAddr,
    args: Arc<Args>,
    frames: Arc<Frames>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> ClientStats {
    let mut st = ClientStats::default();
    let started = Instant::now();
    let mut rng = Rng(args.seed.wrapping_add(i as u64));
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            st.errors = 1;
            st.disconnected = true;
            return st;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    // Drain the appliance's commands so its writes never block; note if it closes the link on us.
    let closed = Arc::new(AtomicBool::new(false));
    let closed_r = Arc::clone(&closed);
    let reader = tokio::spawn(async move {
        let mut b = [0u8; 256];
        while let Ok(n) = rd.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
        closed_r.store(true, Ordering::Relaxed);
    });
    let limit = args.packets.unwrap_or(u64::MAX);
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    // Unpaced: coalesce packets into one write, as a busy bridge would; paced: one packet per write.
    let batch: u64 = if period.is_some() { 1 } else { 32 };
    let mut buf = String::with_capacity(4096 * batch.min(4) as usize);
    let mut n: u64 = 0;
    let mut next_send = Instant::now();
    loop {
        if n >= limit || stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Pace on a fixed schedule (no drift), and stamp packets only after the wait so TS is the send time.
        if let Some(p) = period {
            let now = Instant::now();
            if next_send > now {
                tokio::time::sleep(next_send - now).await;
            }
            next_send += p;
        }
        buf.clear();
        let mut in_batch = 0u64;
        while in_batch < batch && n < limit {
            if n == 0 {
                let _ = writeln!(buf, "#locid:{}_{}!", args.locid_prefix, i);
            } else if n == 1 && args.include_frames && !frames.hex.is_empty() {
                // Calibrated frames need the sensor's EEPROM first, as a real device answers EEPROM1.
                buf.push_str(&frames.eeprom);
            } else {
                push_packet(&mut buf, n, &args, &frames, &mut rng);
            }
            n += 1;
            in_batch += 1;
        }
        let t = Instant::now();
        if wr.write_all(buf.as_bytes()).await.is_err() {
            st.errors += 1;
            st.disconnected = true;
            break;
        }
        st.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        st.packets += in_batch;
        st.bytes += buf.len() as u64;
        sent.fetch_add(in_batch, Ordering::Relaxed);
    }
    let _ = wr.shutdown().await;
    // Let the appliance read everything before we go; its close (or ours after a grace period) ends the link.
    let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
    if closed.load(Ordering::Relaxed) && !st.disconnected && n < limit && deadline.is_none() {
        st.disconnected = true;
    }
    st.duration = started.elapsed().as_secs_f64();
    st
}

/// A scrape of the appliance's /metrics.
#[derive(Default, Clone)]
struct Scrape {
    text: String,
}

impl Scrape {
    fn sum(&self, name: &str, label_filter: Option<(&str, &str)>) -> f64 {
        super::prom::sum(&self.text, name, label_filter)
    }

    fn buckets(&self, name: &str) -> Vec<(f64, u64)> {
        super::prom::buckets(&self.text, name)
    }
}

async fn scrape(url: &str) -> Option<Scrape> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(hostport)).await.ok()?.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&body);
    let (_, b) = text.split_once("\r\n\r\n")?;
    Some(Scrape { text: b.to_owned() })
}

fn delta_quantiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> serde_json::Value {
    let d = super::prom::delta(before, after);
    serde_json::json!({"count": d.count, "p50_ms": d.p50_ms, "p95_ms": d.p95_ms, "p99_ms": d.p99_ms})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.len() < 20 {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn own_usage() -> serde_json::Value {
    use ember_edge::telemetry::proc_stat;
    serde_json::json!({
        "cpu_seconds": proc_stat::cpu_seconds(),
        "mem_rss_mb": proc_stat::rss_bytes().map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0),
        "threads": proc_stat::threads(),
    })
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    if args.packets.is_none() == args.duration.is_none() {
        anyhow::bail!("give exactly one of --packets or --duration");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<serde_json::Value> {
    let addr: SocketAddr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} does not resolve", args.host))?;
    let frames = Arc::new(Frames::new(&args)?);
    let args = Arc::new(args);
    let use_metrics = args.metrics_url != "none";
    let before = if use_metrics { scrape(&args.metrics_url).await } else { None };
    if use_metrics && before.is_none() {
        log::warn!("cannot read {}: reporting client-side numbers only", args.metrics_url);
    }
    let cpu_before = before.as_ref().map(|s| s.sum("ember_process_cpu_seconds_total", None));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        handles.push(tokio::spawn(client(
            i,
            addr,
            Arc::clone(&args),
            Arc::clone(&frames),
            Arc::clone(&stop),
            Arc::clone(&sent),
        )));
    }
    let progress = {
        let (args, sent) = (Arc::clone(&args), Arc::clone(&sent));
        tokio::spawn(async move {
            // SAFETY: isatty has no preconditions.
            let tty = unsafe { libc::isatty(2) } == 1;
            let total = args.packets.map(|p| p * args.clients as u64);
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs_f64(args.report_interval.max(0.1))).await;
                let n = sent.load(Ordering::Relaxed);
                let pps = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                let frac = match (total, args.duration) {
                    (Some(t), _) if t > 0 => n as f64 / t as f64,
                    (_, Some(d)) => started.elapsed().as_secs_f64() / d,
                    _ => 0.0,
                }
                .min(1.0);
                if tty {
                    let filled = (frac * 30.0) as usize;
                    eprint!(
                        "\r[{}{}] {:3.0}% {n} packets {pps:.0} pkt/s ",
                        "#".repeat(filled),
                        ".".repeat(30 - filled),
                        frac * 100.0
                    );
                } else {
                    eprintln!("progress: {:.0}% {n} packets, {pps:.0} pkt/s", frac * 100.0);
                }
            }
        })
    };
    let mut per_client = Vec::with_capacity(args.clients);
    for h in handles {
        per_client.push(h.await.unwrap_or_else(|_| ClientStats {
            errors: 1,
            disconnected: true,
            ..Default::default()
        }));
    }
    let wall = started.elapsed().as_secs_f64();
    progress.abort();
    eprintln!();
    stop.store(true, Ordering::Relaxed);

    // The appliance may still be decoding what we sent: wait until its count stops moving (≤ 5 s).
    let count_of = |s: &Scrape| match &args.server_device {
        Some(d) => s.sum("ember_sensor_device_packets_total", Some(("device", d))),
        None => s.sum("ember_sensor_packets_total", None) + s.sum("ember_sensor_rejected_total", None),
    };
    let mut after = None;
    if before.is_some() {
        let mut last = -1.0;
        for _ in 0..50 {
            let s = scrape(&args.metrics_url).await;
            let c = s.as_ref().map(count_of).unwrap_or(-1.0);
            after = s;
            if c == last {
                break;
            }
            last = c;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let total_packets: u64 = per_client.iter().map(|c| c.packets).sum();
    let total_bytes: u64 = per_client.iter().map(|c| c.bytes).sum();
    let total_errors: u64 = per_client.iter().map(|c| c.errors).sum();
    let mut client_json = Vec::with_capacity(per_client.len());
    let (mut avg_sum, mut p95_sum, mut max_all) = (0.0, 0.0, 0.0f64);
    for c in &mut per_client {
        c.latencies_ms.sort_by(f64::total_cmp);
        let avg = if c.latencies_ms.is_empty() {
            0.0
        } else {
            c.latencies_ms.iter().sum::<f64>() / c.latencies_ms.len() as f64
        };
        let p95 = percentile(&c.latencies_ms, 0.95);
        let max = c.latencies_ms.last().copied().unwrap_or(0.0);
        avg_sum += avg;
        p95_sum += p95;
        max_all = max_all.max(max);
        let dur = c.duration.max(1e-9);
        client_json.push(serde_json::json!({
            "packets": c.packets, "bytes": c.bytes, "errors": c.errors,
            "duration_sec": (c.duration * 1000.0).round() / 1000.0,
            "pps": (c.packets as f64 / dur * 100.0).round() / 100.0,
            "throughput_kbps": (c.bytes as f64 / dur / 1024.0 * 8.0 * 100.0).round() / 100.0,
            "latency_avg_ms": avg, "latency_p95_ms": p95, "latency_max_ms": max,
        }));
    }
    let n = per_client.len().max(1) as f64;
    let mean_duration = per_client.iter().map(|c| c.duration).sum::<f64>() / n;
    let disconnects = per_client.iter().filter(|c| c.disconnected).count();
    let server = match (&before, &after) {
        (Some(b), Some(a)) => {
            let accepted = (count_of(a) - count_of(b)).max(0.0) as u64;
            let cpu = a.sum("ember_process_cpu_seconds_total", None) - cpu_before.unwrap_or(0.0);
            serde_json::json!({
                "metrics_url": args.metrics_url,
                "accepted": accepted,
                "lost": total_packets.saturating_sub(accepted),
                "rejected": (a.sum("ember_sensor_rejected_total", None) - b.sum("ember_sensor_rejected_total", None)) as u64,
                "frames_decoded": (a.sum("ember_sensor_packets_total", Some(("kind", "frame"))) - b.sum("ember_sensor_packets_total", Some(("kind", "frame")))) as u64,
                "observations_dropped": (a.sum("ember_queue_dropped_total", Some(("queue", "observations"))) - b.sum("ember_queue_dropped_total", Some(("queue", "observations")))) as u64,
                "refused_connections": (a.sum("ember_sensor_connections_refused_total", None) - b.sum("ember_sensor_connections_refused_total", None)) as u64,
                "write_to_decode": delta_quantiles(&b.buckets("ember_sensor_packet_latency_seconds"), &a.buckets("ember_sensor_packet_latency_seconds")),
                "write_to_decision": delta_quantiles(&b.buckets("ember_decision_latency_seconds"), &a.buckets("ember_decision_latency_seconds")),
                "cpu_percent": (cpu / wall * 1000.0).round() / 10.0,
                "mem_rss_mb": (a.sum("ember_process_resident_memory_bytes", None) / 1048576.0 * 10.0).round() / 10.0,
            })
        }
        _ => serde_json::Value::Null,
    };
    let report = serde_json::json!({
        "test_config": {
            "clients": args.clients,
            "target": match (args.packets, args.duration) { (Some(p), _) => format!("{p} packets"), (_, Some(d)) => format!("{d}s duration"), _ => String::new() },
            "rate_pps": args.rate,
            "include_frames": args.include_frames,
            "frame_hex": args.frame_hex,
            "server": format!("{}:{}", args.host, args.port),
        },
        "per_client": client_json,
        "aggregate": {
            "total_packets": total_packets,
            "total_bytes": total_bytes,
            "total_errors": total_errors,
            "aggregate_pps": (total_packets as f64 / mean_duration.max(1e-9) * 100.0).round() / 100.0,
            "wall_pps": (total_packets as f64 / wall * 100.0).round() / 100.0,
            "avg_latency_ms": avg_sum / n,
            "p95_latency_ms": p95_sum / n,
            "max_latency_ms": max_all,
            "disconnects": disconnects,
        },
        "system_metrics": own_usage(),
        "server": server,
    });
    if let Some(f) = &args.stats_file {
        std::fs::write(f, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}
