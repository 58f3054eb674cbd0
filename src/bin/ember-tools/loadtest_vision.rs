//! `ember-tools loadtest vision`: EmberEye's `camera_stream_load_test.py` (same flags, same JSON) run against
//! ember-edge's detectors. One thread per stream, paced at `--fps`, each scoring synthetic uniform-random
//! frames held in a pooled buffer (the appliance's own frame type), with latency measured around the detector
//! call as EmberEye does; the report adds the process's CPU and peak RSS.

use std::time::{Duration, Instant};

use serde_json::json;

use ember_edge::config::DetectorKind;
use ember_edge::detect::Detector;
use ember_edge::frame::{FramePool, PixelFormat};
use ember_edge::telemetry::proc_stat;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Concurrent camera streams, one thread each.
    #[arg(long)]
    pub streams: usize,
    /// Frames per stream (or use --duration).
    #[arg(long, conflicts_with = "duration", required_unless_present = "duration")]
    pub frames: Option<u64>,
    /// Seconds to run (or use --frames).
    #[arg(long, value_parser = ember_edge::cmd::seconds)]
    pub duration: Option<f64>,
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    #[arg(long, default_value_t = 640)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 2.0, value_parser = ember_edge::cmd::seconds_or_zero)]
    pub report_interval: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub stats_file: Option<std::path::PathBuf>,
    /// Seeds the synthetic frames (reproducible, unlike EmberEye's).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = DetectorArg::Embereye)]
    pub detector: DetectorArg,
    /// Pixel format of the synthetic frames: what an RGB source or a V4L2 YUYV camera delivers.
    #[arg(long, value_enum, default_value_t = FormatArg::Rgb)]
    pub format: FormatArg,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum DetectorArg {
    Embereye,
    /// The grid detector; `default` is its old name.
    #[value(alias = "default")]
    Grid,
}

impl DetectorArg {
    fn kind(self) -> DetectorKind {
        match self {
            DetectorArg::Embereye => DetectorKind::Embereye,
            DetectorArg::Grid => DetectorKind::Grid,
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum FormatArg {
    Rgb,
    Yuyv,
}

struct StreamResult {
    frames: u64,
    unsupported: u64,
    duration: f64,
    latencies_ms: Vec<f64>,
    score_sum: f64,
}

fn stream(args: &Args, index: usize, stop_at: Option<Instant>) -> StreamResult {
    let format = match args.format {
        FormatArg::Rgb => PixelFormat::Rgb24,
        FormatArg::Yuyv => PixelFormat::Yuyv,
    };
    let len = format.frame_len(args.width, args.height);
    let pool = FramePool::new(1, len);
    let mut detector = Detector::new(args.detector.kind(), &[]);
    let period = Duration::from_secs_f64(1.0 / args.fps.max(0.001));
    let mut rng = ember_edge::prng::XorShift64::new(
        args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index as u64 + 1) | 1,
    );
    let cap = args.frames.unwrap_or((args.duration.unwrap_or(0.0) * args.fps) as u64 + 16);
    let mut r = StreamResult {
        frames: 0,
        unsupported: 0,
        duration: 0.0,
        latencies_ms: Vec::with_capacity(cap.min(10_000_000) as usize),
        score_sum: 0.0,
    };
    let started = Instant::now();
    let mut next = started;
    loop {
        if args.frames.is_some_and(|n| r.frames + r.unsupported >= n) || stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let Some(mut frame) = pool.take() else { break };
        rng.fill(frame.buffer_mut());
        frame.meta.width = args.width;
        frame.meta.height = args.height;
        frame.meta.format = format;
        r.frames += 1;
        let t = Instant::now();
        match detector.score(&frame, tokio::time::Instant::now()) {
            Some(s) => {
                // EmberEye's tool reports the per-frame score; so does this one (temporal damping aside).
                let score = s.frame_score;
                r.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                r.score_sum += score as f64;
            }
            None => {
                r.frames -= 1;
                r.unsupported += 1;
            }
        }
        drop(frame);
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind schedule: start the next frame now rather than bursting to catch up.
            next = now;
        }
    }
    r.duration = started.elapsed().as_secs_f64();
    r
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn summary(lat: &mut [f64]) -> (f64, f64, f64, f64) {
    lat.sort_by(|a, b| a.total_cmp(b));
    let avg = if lat.is_empty() { 0.0 } else { lat.iter().sum::<f64>() / lat.len() as f64 };
    (avg, percentile(lat, 0.95), percentile(lat, 0.99), lat.last().copied().unwrap_or(0.0))
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.streams >= 1, "--streams must be at least 1");
    anyhow::ensure!(
        args.width >= 2 && args.height >= 1 && args.width.is_multiple_of(2),
        "--width must be even and ≥ 2"
    );
    anyhow::ensure!(args.fps > 0.0, "--fps must be positive");
    let cpu0 = proc_stat::cpu_seconds();
    let wall0 = Instant::now();
    let stop_at = args.duration.map(|d| wall0 + Duration::from_secs_f64(d.max(0.0)));
    let mut results: Vec<StreamResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.streams)
            .map(|i| {
                s.spawn({
                    let a = &args;
                    move || stream(a, i, stop_at)
                })
            })
            .collect();
        if args.report_interval > 0.0 {
            // Progress for a human watching a long run; the JSON report is what tools read.
            let every = Duration::from_secs_f64(args.report_interval);
            while handles.iter().any(|h| !h.is_finished()) {
                std::thread::sleep(every.min(Duration::from_millis(200)));
                if wall0.elapsed().as_millis() % every.as_millis().max(1) < 200 {
                    eprintln!("loadtest vision: {:.1} s", wall0.elapsed().as_secs_f64());
                }
            }
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(proc_stat::cpu_seconds()).map(|(a, b)| b - a);
    anyhow::ensure!(results.len() == args.streams, "a stream thread failed");
    let unsupported: u64 = results.iter().map(|r| r.unsupported).sum();
    anyhow::ensure!(
        unsupported == 0 || results.iter().any(|r| r.frames > 0),
        "the {:?} detector cannot read {:?} frames",
        args.detector,
        args.format
    );
    let mut all: Vec<f64> = results.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect();
    let total_frames: u64 = results.iter().map(|r| r.frames).sum();
    let total_score: f64 = results.iter().map(|r| r.score_sum).sum();
    let per_stream: Vec<_> = results
        .iter_mut()
        .map(|r| {
            let (avg, p95, p99, max) = summary(&mut r.latencies_ms);
            json!({
                "frames": r.frames,
                "duration_sec": r.duration,
                "fps": if r.duration > 0.0 { r.frames as f64 / r.duration } else { 0.0 },
                "latency_avg_ms": avg,
                "latency_p95_ms": p95,
                "latency_p99_ms": p99,
                "latency_max_ms": max,
                "vision_score_avg": if r.frames > 0 { r.score_sum / r.frames as f64 } else { 0.0 },
            })
        })
        .collect();
    let (avg, p95, p99, max) = summary(&mut all);
    let report = json!({
        "mode": "direct",
        "detector": format!("{:?}", args.detector).to_lowercase(),
        "format": format!("{:?}", args.format).to_lowercase(),
        "streams": args.streams,
        "frame_spec": {"width": args.width, "height": args.height},
        "per_stream": per_stream,
        "aggregate": {
            "total_frames": total_frames,
            "aggregate_fps": if wall > 0.0 { total_frames as f64 / wall } else { 0.0 },
            "avg_latency_ms": avg,
            "p95_latency_ms": p95,
            "p99_latency_ms": p99,
            "max_latency_ms": max,
            "avg_vision_score": if total_frames > 0 { total_score / total_frames as f64 } else { 0.0 },
        },
        "system_metrics": {
            "wall_sec": wall,
            "cpu_seconds": cpu,
            "cpu_percent": cpu.map(|c| 100.0 * c / wall.max(1e-9)),
            "peak_rss_bytes": proc_stat::peak_rss_bytes(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        },
    });
    if let Some(path) = &args.stats_file {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}
