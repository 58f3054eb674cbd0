//! `ember-tools loadtest streams`: many live-view viewers against a running appliance. Opens K MJPEG streams
//! per camera, parses each multipart stream (any boundary), counts frames, bytes and fps per connection,
//! reconnects with backoff (counted), and reads the appliance's own CPU, RSS and JPEG encodes from /metrics
//! while it runs. `--find-max` raises the number of viewers step by step until fps per viewer falls below a
//! floor or errors appear, and reports the largest step that held. Only measured numbers, no extrapolation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::prom;
use ember_edge::camera::multipart::{MultipartParser, boundary_param};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The appliance's telemetry listener, e.g. http://127.0.0.1:9090.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub url: String,
    /// How many of the appliance's cameras to watch (the first N of GET /cameras).
    #[arg(long, default_value_t = 1)]
    pub cameras: usize,
    /// Viewers per camera.
    #[arg(long, default_value_t = 1)]
    pub connections_per_camera: usize,
    /// Seconds to run (each step, with --find-max: see --step-duration).
    #[arg(long, default_value_t = 10.0, value_parser = ember_edge::cmd::seconds)]
    pub duration: f64,
    /// Seconds at the start of a run not counted in fps (connecting, first frames).
    #[arg(long, default_value_t = 2.0, value_parser = ember_edge::cmd::seconds_or_zero)]
    pub warmup: f64,
    /// Bearer token for an appliance that requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Watch the overlay variant (`?overlay=1`).
    #[arg(long)]
    pub overlay: bool,
    /// Write the JSON report here too.
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    /// Write P_connections.csv and P_cameras.csv.
    #[arg(long, value_name = "P")]
    pub csv_prefix: Option<String>,
    /// Raise the total number of viewers by --step until a step fails (fps below --fps-floor, or errors).
    #[arg(long)]
    pub find_max: bool,
    /// fps every viewer must reach for a run to pass.
    #[arg(long, default_value_t = 24.0)]
    pub fps_floor: f64,
    /// Viewers added per step (total over all cameras).
    #[arg(long, default_value_t = 40)]
    pub step: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 15.0, value_parser = ember_edge::cmd::seconds)]
    pub step_duration: f64,
    /// Highest total viewers tried.
    #[arg(long, default_value_t = 2000)]
    pub max_viewers: usize,
}

/// One connection's counts over a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnStats {
    pub camera: String,
    pub connection: usize,
    pub frames: u64,
    pub bytes: u64,
    /// Frames per second inside the measurement window (after warm-up).
    pub fps: f64,
    /// The slowest whole second inside the window.
    pub min_second_fps: f64,
    pub reconnects: u64,
    pub errors: u64,
    pub refused_503: u64,
    pub last_error: Option<String>,
}

struct Target {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("--url must start with http://"))?;
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    Ok((addr, host))
}

async fn get(t: &Target, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(t.addr)).await??;
    let auth = t.token.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", t.host).as_bytes())
        .await?;
    let mut r = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut r)).await??;
    let r = String::from_utf8_lossy(&r);
    let status = r.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub viewers: usize,
    pub duration_s: f64,
    pub per_connection: Vec<ConnStats>,
    pub per_camera: Vec<serde_json::Value>,
    pub aggregate: serde_json::Value,
    pub appliance: serde_json::Value,
    pub passed: bool,
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let (addr, host) = parse_url(&args.url)?;
        let target = std::rc::Rc::new(Target { addr, host, token: args.token.clone() });
        let (status, body) = get(&target, "/cameras").await?;
        if status != 200 {
            anyhow::bail!("GET /cameras answered {status}: {}", body.trim());
        }
        let list: serde_json::Value = serde_json::from_str(&body)?;
        let names: Vec<String> =
            list.as_array().into_iter().flatten().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
        if names.len() < args.cameras || args.cameras == 0 {
            anyhow::bail!("asked for {} cameras, the appliance has {}", args.cameras, names.len());
        }
        let names = &names[..args.cameras];
        let report = if args.find_max {
            let mut steps = Vec::new();
            let mut best: Option<usize> = None;
            let mut total = args.step.max(names.len());
            while total <= args.max_viewers {
                let r = run_once(&target, names, total, args.step_duration, &args).await?;
                eprintln!(
                    "{total} viewers: min fps {:.2}, mean {:.2}, errors {}, appliance CPU {} %, RSS {} MB -> {}",
                    r.aggregate["fps_min"].as_f64().unwrap_or(0.0),
                    r.aggregate["fps_mean"].as_f64().unwrap_or(0.0),
                    r.aggregate["errors"],
                    r.appliance["cpu_percent"],
                    r.appliance["rss_max_mb"],
                    if r.passed { "held" } else { "FAILED" }
                );
                let passed = r.passed;
                steps.push(serde_json::json!({"viewers": total, "passed": passed, "aggregate": r.aggregate,
                    "appliance": r.appliance}));
                if !passed {
                    break;
                }
                best = Some(total);
                total += args.step;
            }
            serde_json::json!({
                "mode": "find_max", "url": args.url, "cameras": names, "fps_floor": args.fps_floor,
                "step": args.step, "step_duration_s": args.step_duration,
                "max_viewers_held": best, "steps": steps,
                "note": "each step is a measured run; max_viewers_held is the largest step in which every viewer \
                         kept at least fps_floor with zero errors",
            })
        } else {
            let r = run_once(&target, names, names.len() * args.connections_per_camera, args.duration, &args).await?;
            if let Some(p) = &args.csv_prefix {
                write_csv(p, &r)?;
            }
            serde_json::json!({
                "mode": "fixed", "url": args.url, "cameras": names, "connections_per_camera":
                args.connections_per_camera, "fps_floor": args.fps_floor, "duration_s": r.duration_s,
                "warmup_s": args.warmup, "passed": r.passed, "aggregate": r.aggregate, "appliance": r.appliance,
                "per_camera": r.per_camera, "per_connection": r.per_connection,
            })
        };
        if let Some(f) = &args.stats_file {
            std::fs::write(f, serde_json::to_string_pretty(&report)?)?;
        }
        Ok(report)
    })
}

async fn run_once(
    target: &std::rc::Rc<Target>,
    names: &[String],
    total: usize,
    duration: f64,
    args: &Args,
) -> anyhow::Result<RunReport> {
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let started = Instant::now();
    let window_start = started + warmup;
    let end = window_start + Duration::from_secs_f64(duration.max(1.0));
    let metrics_before = get(target, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for k in 0..total {
        let cam = names[k % names.len()].clone();
        let path = format!("/cameras/{cam}/stream.mjpg{}", if args.overlay { "?overlay=1" } else { "" });
        let t = std::rc::Rc::clone(target);
        handles.push(local.spawn_local(viewer(t, path, cam, k / names.len(), window_start, end)));
    }
    // Sample the appliance once a second for its peak RSS while the viewers run.
    let t = std::rc::Rc::clone(target);
    let sampler = local.spawn_local(async move {
        let mut rss_max = 0f64;
        while Instant::now() < end {
            if let Ok((_, m)) = get(&t, "/metrics").await {
                rss_max = rss_max.max(prom::value(&m, "ember_process_resident_memory_bytes").unwrap_or(0.0));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        rss_max
    });
    let mut conns = Vec::new();
    let mut rss_max = 0.0;
    local
        .run_until(async {
            for h in handles {
                if let Ok(c) = h.await {
                    conns.push(c);
                }
            }
            rss_max = sampler.await.unwrap_or(0.0);
        })
        .await;
    let metrics_after = get(target, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
    let wall = started.elapsed().as_secs_f64();
    let window = duration.max(1.0);
    let cpu = prom::sum(&metrics_after, "ember_process_cpu_seconds_total", None)
        - prom::sum(&metrics_before, "ember_process_cpu_seconds_total", None);
    let encodes = prom::sum(&metrics_after, "ember_live_encodes_total", None)
        - prom::sum(&metrics_before, "ember_live_encodes_total", None);
    let lagged = prom::sum(&metrics_after, "ember_live_viewers_lagged_total", None)
        - prom::sum(&metrics_before, "ember_live_viewers_lagged_total", None);
    let rss_end = prom::value(&metrics_after, "ember_process_resident_memory_bytes").unwrap_or(0.0);
    let mut per_camera = Vec::new();
    for cam in names {
        let cs: Vec<&ConnStats> = conns.iter().filter(|c| &c.camera == cam).collect();
        let fps: Vec<f64> = cs.iter().map(|c| c.fps).collect();
        per_camera.push(serde_json::json!({
            "camera": cam, "connections": cs.len(),
            "frames": cs.iter().map(|c| c.frames).sum::<u64>(), "bytes": cs.iter().map(|c| c.bytes).sum::<u64>(),
            "fps_mean": round2(mean(&fps)), "fps_min": round2(fps.iter().copied().fold(f64::INFINITY, f64::min)),
            "reconnects": cs.iter().map(|c| c.reconnects).sum::<u64>(),
            "errors": cs.iter().map(|c| c.errors).sum::<u64>(),
            "encodes_per_s": round2((prom::value(&metrics_after, &format!("ember_live_encodes_total{{camera=\"{cam}\"}}"))
                .unwrap_or(0.0) - prom::value(&metrics_before, &format!("ember_live_encodes_total{{camera=\"{cam}\"}}"))
                .unwrap_or(0.0)) / wall),
        }));
    }
    let fps: Vec<f64> = conns.iter().map(|c| c.fps).collect();
    let errors: u64 = conns.iter().map(|c| c.errors).sum();
    let fps_min = fps.iter().copied().fold(f64::INFINITY, f64::min);
    let bytes: u64 = conns.iter().map(|c| c.bytes).sum();
    let aggregate = serde_json::json!({
        "viewers": total, "frames": conns.iter().map(|c| c.frames).sum::<u64>(), "bytes": bytes,
        "mbit_per_s": round2(bytes as f64 * 8.0 / 1e6 / wall),
        "fps_min": round2(fps_min), "fps_mean": round2(mean(&fps)),
        "fps_min_second": round2(conns.iter().map(|c| c.min_second_fps).fold(f64::INFINITY, f64::min)),
        "viewers_below_floor": fps.iter().filter(|f| **f < args.fps_floor).count(),
        "errors": errors, "reconnects": conns.iter().map(|c| c.reconnects).sum::<u64>(),
        "refused_503": conns.iter().map(|c| c.refused_503).sum::<u64>(),
    });
    let appliance = serde_json::json!({
        "cpu_percent": round2(cpu / wall * 100.0),
        "rss_max_mb": round2(rss_max.max(rss_end) / 1e6),
        "rss_end_mb": round2(rss_end / 1e6),
        "jpeg_encodes_per_s": round2(encodes / wall),
        "viewers_dropped_for_lag": lagged,
        "window_s": window,
    });
    let passed = errors == 0 && conns.len() == total && fps_min >= args.fps_floor;
    Ok(RunReport {
        viewers: total,
        duration_s: window,
        per_connection: conns,
        per_camera,
        aggregate,
        appliance,
        passed,
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn round2(v: f64) -> f64 {
    if v.is_finite() { (v * 100.0).round() / 100.0 } else { 0.0 }
}

/// Frame counts of one viewer, with the measurement window.
struct Counter {
    window_start: Instant,
    end: Instant,
    frames: u64,
    bytes: u64,
    window_frames: u64,
    /// The whole second of the window being counted, and its frames so far.
    second: u64,
    second_frames: u64,
    min_second: f64,
}

impl Counter {
    fn frame(&mut self, now: Instant, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
        if now < self.window_start || now >= self.end {
            return;
        }
        self.window_frames += 1;
        let s = (now - self.window_start).as_secs();
        if s != self.second {
            self.min_second = self.min_second.min(self.second_frames as f64);
            // Seconds with no frame at all in between count as zero.
            if s > self.second + 1 {
                self.min_second = 0.0;
            }
            self.second = s;
            self.second_frames = 0;
        }
        self.second_frames += 1;
    }
}

/// One viewer: connect, read the stream, count; reconnect with backoff until `end`.
async fn viewer(
    t: std::rc::Rc<Target>,
    path: String,
    camera: String,
    connection: usize,
    window_start: Instant,
    end: Instant,
) -> ConnStats {
    let mut st = ConnStats { camera, connection, ..Default::default() };
    let mut c = Counter {
        window_start,
        end,
        frames: 0,
        bytes: 0,
        window_frames: 0,
        second: 0,
        second_frames: 0,
        min_second: f64::INFINITY,
    };
    let mut backoff = ember_edge::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut delay = None;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < end {
        if let Some(d) = delay {
            st.reconnects += 1;
            tokio::time::sleep(d).await;
        }
        let frames_before = c.frames;
        let r = tokio::select! {
            _ = tokio::time::sleep_until(end) => Ok(()),
            r = stream_once(&t, &path, &mut buf, &mut c) => r,
        };
        if let Err(e) = r {
            if Instant::now() >= end {
                break;
            }
            st.errors += 1;
            if e.to_string().contains("503") {
                st.refused_503 += 1;
            }
            st.last_error = Some(e.to_string());
        }
        // If it worked for a while, the next reconnect starts with a short wait again.
        delay = Some(backoff.failed((c.frames > frames_before).then_some(Duration::ZERO)).delay);
    }
    // The last, possibly partial, second is not a whole second: it does not count towards the slowest one.
    let window = end.saturating_duration_since(window_start).as_secs_f64();
    st.frames = c.frames;
    st.bytes = c.bytes;
    st.fps = round2(c.window_frames as f64 / window.max(1e-9));
    st.min_second_fps = if c.min_second.is_finite() { c.min_second } else { c.second_frames as f64 };
    st
}

async fn stream_once(t: &Target, path: &str, buf: &mut [u8], counter: &mut Counter) -> anyhow::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(t.addr)).await??;
    let auth = t.token.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}\r\n", t.host).as_bytes()).await?;
    // Response head.
    let mut head = Vec::with_capacity(1024);
    let body_start = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(buf)).await??;
        if n == 0 {
            anyhow::bail!("closed before the response head");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > 16 * 1024 {
            anyhow::bail!("response head too long");
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).into_owned();
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if status != 200 {
        anyhow::bail!("HTTP {status}");
    }
    let ctype = text
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap_or("");
    let boundary =
        boundary_param(ctype.as_bytes()).ok_or_else(|| anyhow::anyhow!("no multipart boundary in `{ctype}`"))?;
    let mut parser = MultipartParser::new(16 << 20);
    parser.set_boundary(boundary);
    feed(&mut parser, &head[body_start..], counter)?;
    loop {
        // A stream that delivers nothing for 5 s is broken (the appliance would have dropped us by then).
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(buf)).await??;
        if n == 0 {
            anyhow::bail!("stream closed by the appliance");
        }
        feed(&mut parser, &buf[..n], counter)?;
    }
}

/// Counts every whole JPEG in `data`; a part the appliance should never send (oversized) is an error.
fn feed(parser: &mut MultipartParser, mut data: &[u8], counter: &mut Counter) -> anyhow::Result<()> {
    while !data.is_empty() {
        let (used, part) = parser.push(data);
        if let Some(jpeg) = part {
            counter.frame(Instant::now(), jpeg.len());
        }
        data = &data[used..];
    }
    if parser.stats().oversized > 0 {
        anyhow::bail!("part larger than the limit");
    }
    Ok(())
}

fn write_csv(prefix: &str, r: &RunReport) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut c = String::from("camera,connection,frames,bytes,fps,min_second_fps,reconnects,errors,refused_503\n");
    for x in &r.per_connection {
        let _ = writeln!(
            c,
            "{},{},{},{},{},{},{},{},{}",
            x.camera, x.connection, x.frames, x.bytes, x.fps, x.min_second_fps, x.reconnects, x.errors, x.refused_503
        );
    }
    std::fs::write(format!("{prefix}_connections.csv"), c)?;
    let mut c = String::from("camera,connections,frames,bytes,fps_mean,fps_min,reconnects,errors,encodes_per_s\n");
    for x in &r.per_camera {
        let _ = writeln!(
            c,
            "{},{},{},{},{},{},{},{},{}",
            x["camera"].as_str().unwrap_or(""),
            x["connections"],
            x["frames"],
            x["bytes"],
            x["fps_mean"],
            x["fps_min"],
            x["reconnects"],
            x["errors"],
            x["encodes_per_s"]
        );
    }
    std::fs::write(format!("{prefix}_cameras.csv"), c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_counts_only_the_window_and_the_slowest_second_sees_gaps() {
        let t0 = Instant::now();
        let mut c = Counter {
            window_start: t0 + Duration::from_secs(1),
            end: t0 + Duration::from_secs(5),
            frames: 0,
            bytes: 0,
            window_frames: 0,
            second: 0,
            second_frames: 0,
            min_second: f64::INFINITY,
        };
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        c.frame(at(500), 10); // warm-up: counted in frames, not in the window
        for ms in (1000..2000).step_by(100) {
            c.frame(at(ms), 10);
        }
        for ms in (2000..3000).step_by(250) {
            c.frame(at(ms), 10);
        }
        assert_eq!((c.frames, c.bytes, c.window_frames), (15, 150, 14));
        // Nothing during window second 2, then a frame in second 3: second 2 counts as zero.
        c.frame(at(4100), 10);
        assert_eq!(c.min_second, 0.0);
        c.frame(at(5000), 10); // after the end
        assert_eq!(c.window_frames, 15);
    }

    #[test]
    fn urls_resolve_to_host_and_port() {
        let (a, h) = parse_url("http://127.0.0.1:9091/").unwrap();
        assert_eq!((a.port(), h.as_str()), (9091, "127.0.0.1:9091"));
        assert!(parse_url("https://x:1").is_err());
    }
}
