//! `ember-tools eval clips`: runs clips of consecutive frames (a folder of JPEGs in name order, or an
//! .mjpeg file of concatenated JPEGs) through the appliance's own vision stage, `detect::Vision` (detector,
//! temporal confirmation, day/night gate), on a simulated clock that advances 1/fps per frame, and applies the
//! zone's vision rule (score at or above `vision_threshold` for `vision_frames` frames in a row) as fusion
//! does. It reports what an operator would have seen: per clip whether an event was confirmed and when; event
//! recall and time to detection for fire/smoke clips; false confirmations per hour for negative clips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use ember_edge::camera::jpeg::JpegDecoder;
use ember_edge::camera::multipart::MultipartParser;
use ember_edge::camera::replay::{ReplaySet, is_mjpeg_file};
use ember_edge::config::{DetectorKind, Zone};
use ember_edge::detect::{Detector, Vision};
use ember_edge::frame::{FramePool, PixelFormat};
use ember_edge::pixels::{load_analysis, load_rgb, rgb_to_yuyv_in_place};

use super::eval_frames::Which;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clips: .mjpeg files, folders of JPEG frames, or a folder with a clips.csv (every clip it lists).
    #[arg(required = true)]
    pub clips: Vec<PathBuf>,
    /// Labels (file,label,fps,frames,onset_s,...; label fire, smoke or negative). Default: clips.csv beside
    /// each clip, if there is one. A clip it does not list is reported but counted in no rate.
    #[arg(long, value_name = "CSV")]
    pub labels: Option<PathBuf>,
    /// Frames per second of clips the labels give no fps for.
    #[arg(long, default_value_t = 5.0)]
    pub fps: f64,
    #[arg(long, value_enum, default_value_t = Which::Grid)]
    pub detector: Which,
    /// The zone rule: a confirmed score at or above this counts. Default: the zone default.
    #[arg(long)]
    pub vision_threshold: Option<f32>,
    /// The zone rule: frames in a row at or above the threshold. Default: the zone default.
    #[arg(long)]
    pub vision_frames: Option<u32>,
    /// `model`: the TFLite C-API library. Default: $EMBER_TFLITE_LIB.
    #[arg(long, value_name = "LIB.so")]
    pub model_library: Option<PathBuf>,
    /// `model`: the .tflite file.
    #[arg(long, value_name = "FILE.tflite", default_value = "models/fire-int8.tflite")]
    pub model: PathBuf,
    /// Feed the frames as YUYV (a V4L2 webcam's path) instead of RGB.
    #[arg(long)]
    pub yuyv: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A clip's label as clips.csv gives it.
#[derive(Debug, Clone)]
pub struct ClipLabel {
    pub label: String,
    pub fps: Option<f64>,
    pub onset_s: Option<f64>,
}

/// Reads `file,label,fps,frames,onset_s,...` (header first; the notes column may be quoted with commas).
pub fn read_clip_labels(path: &Path) -> anyhow::Result<Vec<(String, ClipLabel)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        // The first five columns never hold quotes or commas.
        let cols: Vec<&str> = line.splitn(6, ',').map(str::trim).collect();
        if cols.len() < 5 {
            bail!("{}:{}: expected at least 5 columns (file,label,fps,frames,onset_s)", path.display(), n + 1);
        }
        let label = cols[1].to_owned();
        if !matches!(label.as_str(), "fire" | "smoke" | "negative") {
            bail!("{}:{}: label must be fire, smoke or negative, got `{label}`", path.display(), n + 1);
        }
        let num = |s: &str, what: &str| -> anyhow::Result<Option<f64>> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<f64>()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{}:{}: {what} must be a number, got `{s}`", path.display(), n + 1))
        };
        let fps = num(cols[2], "fps")?;
        if fps.is_some_and(|f| !(f > 0.0 && f <= 120.0)) {
            bail!("{}:{}: fps must be in (0, 120]", path.display(), n + 1);
        }
        out.push((cols[0].to_owned(), ClipLabel { label, fps, onset_s: num(cols[4], "onset_s")? }));
    }
    Ok(out)
}

/// One clip's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClipReport {
    pub clip: String,
    /// fire, smoke, negative, or unlabelled.
    pub label: String,
    pub frames: usize,
    pub fps: f64,
    pub seconds: f64,
    pub onset_s: Option<f64>,
    /// Times the zone rule went from not met to met (each is one confirmation an operator would see).
    pub confirmations: usize,
    /// Time of the first confirmation from the clip's start.
    pub first_confirmation_s: Option<f64>,
    /// fire/smoke: the first confirmation at or after the onset, minus the onset.
    pub ttd_s: Option<f64>,
    /// Confirmations before the onset of a fire/smoke clip, or anywhere in a negative clip.
    pub false_confirmations: usize,
    /// Frames the day/night gate found grey.
    pub grey_frames: usize,
    pub max_score: f32,
}

/// The summary printed with `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub detector: String,
    pub pixel_format: String,
    pub vision_threshold: f32,
    pub vision_frames: u32,
    pub clips: Vec<ClipReport>,
    pub positive_clips: usize,
    pub fire_clips: usize,
    pub smoke_clips: usize,
    pub negative_clips: usize,
    /// Share of fire/smoke clips confirmed at or after their onset (None without such clips).
    pub event_recall: Option<f64>,
    pub median_ttd_s: Option<f64>,
    pub negative_hours: f64,
    /// False confirmations per hour of negative video (None without negative clips).
    pub false_confirmations_per_hour: Option<f64>,
}

/// The clips named on the command line, each with its label if one is known.
fn collect(args: &Args) -> anyhow::Result<Vec<(PathBuf, Option<ClipLabel>)>> {
    let given = match &args.labels {
        Some(p) => Some(read_clip_labels(p)?),
        None => None,
    };
    let mut out = Vec::new();
    for p in &args.clips {
        let csv = p.join("clips.csv");
        if p.is_dir() && csv.is_file() {
            let rows = match &given {
                Some(rows) => rows.clone(),
                None => read_clip_labels(&csv)?,
            };
            for (file, label) in rows {
                out.push((p.join(file), Some(label)));
            }
            continue;
        }
        let rows = match (&given, p.parent().map(|d| d.join("clips.csv"))) {
            (Some(rows), _) => Some(rows.clone()),
            (None, Some(beside)) if beside.is_file() => Some(read_clip_labels(&beside)?),
            _ => None,
        };
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label = rows.and_then(|r| r.into_iter().find(|(f, _)| *f == name).map(|(_, l)| l));
        out.push((p.clone(), label));
    }
    Ok(out)
}

/// The clip's JPEGs in order: the files of a folder, or the parts of an .mjpeg file split by the framer the
/// cameras use.
fn jpegs(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    if is_mjpeg_file(path) {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut parser = MultipartParser::new(8 << 20);
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (n, part) = parser.push(rest);
            if let Some(p) = part {
                out.push(p.to_vec());
            }
            if n == 0 {
                break;
            }
            rest = &rest[n..];
        }
        if out.is_empty() {
            bail!("no complete JPEG in {}", path.display());
        }
        return Ok(out);
    }
    match ReplaySet::folder(path).with_context(|| format!("cannot open clip {}", path.display()))? {
        ReplaySet::Folder(files) => {
            files.iter().map(|f| std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))).collect()
        }
        _ => bail!("{} is not a folder of frames", path.display()),
    }
}

fn detector(args: &Args) -> anyhow::Result<Detector> {
    Ok(match args.detector {
        Which::Embereye => Detector::new(DetectorKind::Embereye, &[]),
        Which::Grid => Detector::new(DetectorKind::Grid, &[]),
        Which::Model => model_detector(args)?,
    })
}

#[cfg(feature = "tflite")]
fn model_detector(args: &Args) -> anyhow::Result<Detector> {
    let library = args
        .model_library
        .clone()
        .or_else(|| std::env::var_os("EMBER_TFLITE_LIB").map(PathBuf::from))
        .context("--detector model needs --model-library or EMBER_TFLITE_LIB")?;
    // Loaded here so a failure is an error: a run that fell back to the grid would report the wrong detector.
    let loaded = ember_edge::detect::tflite::Model::load(&library, &args.model, 1)?;
    let counters = ember_edge::detect::cnn::ModelCounters::register(&ember_edge::telemetry::Registry::new(), &[]);
    Ok(Detector::Model(
        Box::new(ember_edge::detect::cnn::ModelDetector::with_model(loaded, &[], counters)),
        Box::default(),
    ))
}

#[cfg(not(feature = "tflite"))]
fn model_detector(_: &Args) -> anyhow::Result<Detector> {
    bail!("the `model` detector needs the TFLite stage; this binary was built without the `tflite` feature")
}

/// The zone defaults, as a zone without those keys gets them.
fn zone_defaults() -> anyhow::Result<(f32, u32)> {
    let z: Zone = toml::from_str("name = \"clip\"").context("zone defaults")?;
    Ok((z.vision_threshold, z.vision_frames.max(1)))
}

/// Runs one clip through a fresh vision stage (a camera that has just started).
fn run_clip(
    args: &Args,
    path: &Path,
    label: Option<&ClipLabel>,
    rule: (f32, u32),
    dec: &mut JpegDecoder,
) -> anyhow::Result<ClipReport> {
    let fps = label.and_then(|l| l.fps).unwrap_or(args.fps);
    if !(fps > 0.0 && fps <= 120.0) {
        bail!("fps must be in (0, 120], got {fps}");
    }
    let jpegs = jpegs(path)?;
    let mut vision = Vision::from(detector(args)?);
    let mut rgb = Vec::new();
    let mut pool: Option<FramePool> = None;
    let t0 = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / fps);
    let positive = label.is_some_and(|l| l.label != "negative");
    // A fire/smoke clip without an onset shows it from its first frame.
    let onset = label.and_then(|l| l.onset_s).or(positive.then_some(0.0));
    let (mut streak, mut met) = (0u32, false);
    let mut r = ClipReport {
        clip: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        label: label.map_or("unlabelled".into(), |l| l.label.clone()),
        frames: jpegs.len(),
        fps,
        seconds: jpegs.len() as f64 / fps,
        onset_s: onset,
        confirmations: 0,
        first_confirmation_s: None,
        ttd_s: None,
        false_confirmations: 0,
        grey_frames: 0,
        max_score: 0.0,
    };
    for (k, jpeg) in jpegs.iter().enumerate() {
        // As the cameras read them: a JPEG camera decodes at analysis scale, a raw YUYV camera delivers full frames.
        let decoded = if args.yuyv { load_rgb(dec, jpeg, &mut rgb) } else { load_analysis(dec, jpeg, &mut rgb) };
        let (w, h) = decoded.with_context(|| format!("{}: frame {k} does not decode", r.clip))?;
        // One pool per clip, sized by its largest frame so far: frames go through the appliance's buffers.
        if pool.as_ref().is_none_or(|p| p.buffer_len() < rgb.len()) {
            pool = Some(FramePool::new(1, rgb.len()));
        }
        let Some(mut frame) = pool.as_ref().and_then(FramePool::take) else { bail!("frame pool exhausted") };
        frame.buffer_mut()[..rgb.len()].copy_from_slice(&rgb);
        frame.meta.seq = k as u64 + 1;
        frame.meta.height = h;
        if args.yuyv {
            frame.meta.width = rgb_to_yuyv_in_place(frame.buffer_mut(), w, h);
            frame.meta.format = PixelFormat::Yuyv;
        } else {
            frame.meta.width = w;
            frame.meta.format = PixelFormat::Rgb24;
        }
        let at = k as f64 / fps;
        frame.meta.captured = t0 + period * k as u32;
        let Some(a) = vision.analyse(&frame, frame.meta.captured) else {
            bail!("the detector cannot read {:?} frames", frame.meta.format);
        };
        r.grey_frames += usize::from(a.grey);
        r.max_score = r.max_score.max(a.scored.score);
        streak = if a.scored.score >= rule.0 { streak + 1 } else { 0 };
        let now_met = streak >= rule.1;
        if now_met && !met {
            r.confirmations += 1;
            r.first_confirmation_s.get_or_insert(at);
            // Before the onset (or in a negative clip) a confirmation is a false alarm.
            match onset {
                Some(o) if positive && at + 1e-9 >= o => {
                    r.ttd_s.get_or_insert(at - o);
                }
                _ if label.is_some() => r.false_confirmations += 1,
                _ => {}
            }
        }
        met = now_met;
    }
    Ok(r)
}

pub fn evaluate(args: &Args) -> anyhow::Result<Report> {
    let defaults = zone_defaults()?;
    let rule = (args.vision_threshold.unwrap_or(defaults.0), args.vision_frames.unwrap_or(defaults.1).max(1));
    // The cap a camera with this detector decodes at (camera::source::analysis_cap).
    let mut dec = JpegDecoder::with_max_denom(if args.detector == Which::Model { 2 } else { 8 });
    let mut clips = Vec::new();
    for (path, label) in collect(args)? {
        clips.push(run_clip(args, &path, label.as_ref(), rule, &mut dec)?);
    }
    let count = |l: &str| clips.iter().filter(|c| c.label == l).count();
    let (fire, smoke, negative) = (count("fire"), count("smoke"), count("negative"));
    let positives: Vec<&ClipReport> = clips.iter().filter(|c| c.label == "fire" || c.label == "smoke").collect();
    let event_recall = (!positives.is_empty())
        .then(|| positives.iter().filter(|c| c.ttd_s.is_some()).count() as f64 / positives.len() as f64);
    let mut ttds: Vec<f64> = positives.iter().filter_map(|c| c.ttd_s).collect();
    ttds.sort_by(f64::total_cmp);
    let median_ttd_s = match ttds.len() {
        0 => None,
        n if n % 2 == 1 => Some(ttds[n / 2]),
        n => Some((ttds[n / 2 - 1] + ttds[n / 2]) / 2.0),
    };
    let negatives: Vec<&ClipReport> = clips.iter().filter(|c| c.label == "negative").collect();
    let negative_hours = negatives.iter().map(|c| c.seconds).sum::<f64>() / 3600.0;
    let false_confirmations_per_hour = (negative_hours > 0.0)
        .then(|| negatives.iter().map(|c| c.false_confirmations).sum::<usize>() as f64 / negative_hours);
    Ok(Report {
        detector: format!("{:?}", args.detector).to_lowercase(),
        pixel_format: if args.yuyv { "yuyv" } else { "rgb" }.into(),
        vision_threshold: rule.0,
        vision_frames: rule.1,
        positive_clips: positives.len(),
        fire_clips: fire,
        smoke_clips: smoke,
        negative_clips: negative,
        event_recall,
        median_ttd_s,
        negative_hours,
        false_confirmations_per_hour,
        clips,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = evaluate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<10} {:>6} {:>5} {:>7} {:>7} {:>5} {:>8} {:>7} {:>5} {:>6}",
        "clip", "label", "frames", "fps", "onset_s", "first_s", "conf", "ttd_s", "false", "grey", "max"
    );
    for c in &r.clips {
        println!(
            "{:<34} {:<10} {:>6} {:>5.1} {:>7} {:>7} {:>5} {:>8} {:>7} {:>5} {:>6.3}",
            c.clip,
            c.label,
            c.frames,
            c.fps,
            opt(c.onset_s, 1),
            opt(c.first_confirmation_s, 1),
            c.confirmations,
            opt(c.ttd_s, 1),
            c.false_confirmations,
            c.grey_frames,
            c.max_score
        );
    }
    println!(
        "\n{} detector on {} frames, zone rule score >= {:.2} for {} frames: {} fire, {} smoke, {} negative clips",
        r.detector, r.pixel_format, r.vision_threshold, r.vision_frames, r.fire_clips, r.smoke_clips, r.negative_clips
    );
    println!(
        "event recall {} ({} positive clips), median time to detection {} s, false confirmations/hour {} ({:.3} h of negatives)",
        opt(r.event_recall, 3),
        r.positive_clips,
        opt(r.median_ttd_s, 1),
        opt(r.false_confirmations_per_hour, 1),
        r.negative_hours
    );
    Ok(())
}
