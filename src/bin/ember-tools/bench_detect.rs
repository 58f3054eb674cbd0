//! `ember-tools bench detect`: nanoseconds per frame of one detector on real frames, single thread.
//!
//! Frames are the JPEGs of a folder (default: the repo's tests/fixtures/frames), decoded once, resized to the
//! requested size by nearest neighbour and converted to YUYV when asked, so the timing covers detection only.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use ember_edge::camera::jpeg::JpegDecoder;
use ember_edge::detect::embereye::EmberEyeHsv;
use ember_edge::detect::grid::GridDetector;
use ember_edge::pixels::{load_rgb, resize_rgb, rgb_to_yuyv};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Rgb,
    Yuyv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Embereye,
    /// The grid detector; `default` is its old name.
    #[value(alias = "default")]
    Grid,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 640)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    #[arg(long, value_enum, default_value_t = Format::Rgb)]
    pub format: Format,
    #[arg(long, value_enum, default_value_t = Which::Grid)]
    pub detector: Which,
    /// Frames to time (after 50 warm-up frames).
    #[arg(long, default_value_t = 2000)]
    pub frames: usize,
    /// Folder of JPEG frames to use.
    #[arg(long, default_value = "tests/fixtures/frames")]
    pub dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub detector: String,
    pub format: String,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub images: usize,
    pub mean_ns: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// This thread's CPU time per frame (not inflated by other processes preempting it on a busy machine).
    pub cpu_mean_ns: u64,
    pub cpu_p50_ns: u64,
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn measure(args: &Args) -> anyhow::Result<Report> {
    if args.width < 16 || args.height < 16 || !args.width.is_multiple_of(2) {
        bail!("width must be even and both sides at least 16");
    }
    if args.detector == Which::Embereye && args.format == Format::Yuyv {
        bail!("the embereye detector reads RGB only (EmberEye converts every frame to BGR first)");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .jpg files in {}", args.dir.display());
    }
    let mut dec = JpegDecoder::new();
    let mut rgb = Vec::new();
    let mut frames = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let (w, h) = load_rgb(&mut dec, &bytes, &mut rgb).with_context(|| format!("cannot decode {}", f.display()))?;
        let sized = resize_rgb(&rgb, w, h, args.width, args.height);
        frames.push(match args.format {
            Format::Rgb => sized,
            Format::Yuyv => {
                let mut y = Vec::new();
                rgb_to_yuyv(&sized, args.width, args.width, args.height, &mut y);
                y
            }
        });
    }
    let ember = EmberEyeHsv::new();
    let mut grid = GridDetector::new(&[]);
    let (w, h) = (args.width, args.height);
    let mut run_one = |f: &[u8]| -> f32 {
        match (args.detector, args.format) {
            (Which::Embereye, _) => ember.score_rgb(f, w, h).score,
            (Which::Grid, Format::Rgb) => grid.score_rgb(f, w, h).score,
            (Which::Grid, Format::Yuyv) => grid.score_yuyv(f, w, h).score,
        }
    };
    let mut sink = 0f32;
    for i in 0..50 {
        sink += run_one(std::hint::black_box(&frames[i % frames.len()]));
    }
    let n = args.frames.max(1);
    let mut ns = Vec::with_capacity(n);
    let mut cpu = Vec::with_capacity(n);
    for i in 0..n {
        let f = std::hint::black_box(&frames[i % frames.len()]);
        let c = thread_cpu_ns();
        let t = Instant::now();
        sink += run_one(f);
        ns.push(t.elapsed().as_nanos() as u64);
        cpu.push(thread_cpu_ns().saturating_sub(c));
    }
    let cpu_mean = cpu.iter().sum::<u64>() / n as u64;
    cpu.sort_unstable();
    std::hint::black_box(sink);
    let mean = ns.iter().sum::<u64>() / n as u64;
    ns.sort_unstable();
    let pct = |p: f64| ns[((n as f64 * p) as usize).min(n - 1)];
    Ok(Report {
        detector: format!("{:?}", args.detector).to_lowercase(),
        format: format!("{:?}", args.format).to_lowercase(),
        width: w,
        height: h,
        frames: n,
        images: frames.len(),
        mean_ns: mean,
        min_ns: ns[0],
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        cpu_mean_ns: cpu_mean,
        cpu_p50_ns: cpu[n / 2],
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} {}x{}: {} frames over {} images: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs per frame (CPU {:.1} µs)",
            r.detector,
            r.format,
            r.width,
            r.height,
            r.frames,
            r.images,
            r.mean_ns as f64 / 1e3,
            r.p50_ns as f64 / 1e3,
            r.p99_ns as f64 / 1e3,
            r.cpu_mean_ns as f64 / 1e3
        );
    }
    Ok(())
}
