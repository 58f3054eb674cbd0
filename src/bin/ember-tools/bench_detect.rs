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
#[cfg(feature = "tflite")]
use ember_edge::frame::PixelFormat;
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
    /// The CNN on the grid detector's candidate regions (`detector = "model"`; needs the `tflite` feature and
    /// the runtime library).
    Model,
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
    /// `model`: the TFLite/LiteRT runtime library (libLiteRtRuntimeCApi.so). Default: $EMBER_TFLITE_LIB.
    #[arg(long, value_name = "LIB.so")]
    pub model_library: Option<PathBuf>,
    /// `model`: the .tflite file.
    #[arg(long, value_name = "FILE.tflite", default_value = "models/fire-int8.tflite")]
    pub model: PathBuf,
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
    /// `model`: CNN runs per frame (candidate crops scored), and the mean time of one inference alone (a
    /// prepared 64x64 input: quantisation and the runtime call, no crop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inferences_per_frame: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_ns: Option<u64>,
}

#[cfg(feature = "tflite")]
type Cnn = (ember_edge::detect::cnn::ModelDetector, ember_edge::detect::cnn::ModelCounters, u64);

/// The `model` detector and the measured time of one inference, or None for the other detectors.
#[cfg(feature = "tflite")]
fn load_cnn(args: &Args) -> anyhow::Result<Option<Cnn>> {
    use ember_edge::detect::tflite::Model;
    if args.detector != Which::Model {
        return Ok(None);
    }
    let library = args
        .model_library
        .clone()
        .or_else(|| std::env::var_os("EMBER_TFLITE_LIB").map(PathBuf::from))
        .context("--detector model needs --model-library or EMBER_TFLITE_LIB")?;
    let mut alone = Model::load(&library, &args.model, 1)?;
    let (iw, ih) = alone.input_size();
    let input: Vec<u8> = (0..iw * ih * 3).map(|i| (i * 7 % 256) as u8).collect();
    for _ in 0..50 {
        alone.classify_input(&input)?;
    }
    let runs = 2000u32;
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(alone.classify_input(std::hint::black_box(&input))?);
    }
    let inference_ns = (t.elapsed().as_nanos() / u128::from(runs)) as u64;
    let counters = ember_edge::detect::cnn::ModelCounters::register(&ember_edge::telemetry::Registry::new(), &[]);
    let loaded = Model::load(&library, &args.model, 1)?;
    Ok(Some((
        ember_edge::detect::cnn::ModelDetector::with_model(loaded, &[], counters.clone()),
        counters,
        inference_ns,
    )))
}

/// CPU time of the calling thread, in ns.
pub(crate) fn thread_cpu_ns() -> u64 {
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
    #[cfg(not(feature = "tflite"))]
    if args.detector == Which::Model {
        bail!("the `model` detector needs the TFLite stage; this binary was built without the `tflite` feature");
    }
    #[cfg(feature = "tflite")]
    let mut cnn = load_cnn(args)?;
    #[cfg(feature = "tflite")]
    let counted = cnn.as_ref().map(|c| (c.1.inferences.clone(), c.2));
    let mut run_one = |f: &[u8]| -> f32 {
        match (args.detector, args.format) {
            (Which::Embereye, _) => ember.score_rgb(f, w, h).score,
            (Which::Grid, Format::Rgb) => grid.score_rgb(f, w, h).score,
            (Which::Grid, Format::Yuyv) => grid.score_yuyv(f, w, h).score,
            #[cfg(feature = "tflite")]
            (Which::Model, fmt) => match cnn.as_mut() {
                Some((d, _, _)) => {
                    let pf = if fmt == Format::Rgb { PixelFormat::Rgb24 } else { PixelFormat::Yuyv };
                    d.score(f, w, h, pf).score
                }
                None => 0.0,
            },
            #[cfg(not(feature = "tflite"))]
            (Which::Model, _) => 0.0,
        }
    };
    let mut sink = 0f32;
    for i in 0..50 {
        sink += run_one(std::hint::black_box(&frames[i % frames.len()]));
    }
    let n = args.frames.max(1);
    #[cfg(feature = "tflite")]
    let runs_before = counted.as_ref().map_or(0, |c| c.0.get());
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
    #[cfg(feature = "tflite")]
    let (inferences_per_frame, inference_ns) = match &counted {
        Some((c, t)) => (Some((c.get() - runs_before) as f64 / n as f64), Some(*t)),
        None => (None, None),
    };
    #[cfg(not(feature = "tflite"))]
    let (inferences_per_frame, inference_ns) = (None, None);
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
        inferences_per_frame,
        inference_ns,
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
        if let (Some(per), Some(ns)) = (r.inferences_per_frame, r.inference_ns) {
            println!("  CNN: {per:.2} inferences per frame (candidate crops), {:.1} µs per inference", ns as f64 / 1e3);
        }
    }
    Ok(())
}
