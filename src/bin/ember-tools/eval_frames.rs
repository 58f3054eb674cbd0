//! `ember-tools eval frames`: runs a detector on every image of a labelled folder (labels.csv as in
//! shared/fixtures/frames) and reports recall and false-positive rates. Single frames: no temporal help.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use ember_edge::camera::jpeg::JpegDecoder;
use ember_edge::detect::embereye::EmberEyeHsv;
use ember_edge::detect::grid::{self, GridDetector};
use ember_edge::pixels::{load_analysis, load_rgb, rgb_to_yuyv};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// EmberEye's HSV heuristic (bit-exact).
    Embereye,
    /// The grid detector (colour regions + learned scorer); `default` is its old name.
    #[value(alias = "default")]
    Grid,
    /// The TFLite model (needs a build with the `tflite` feature).
    Model,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of images.
    pub dir: PathBuf,
    /// Labels CSV (file,fire,smoke,hard_negative,...). Default DIR/labels.csv.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Which::Grid)]
    pub detector: Which,
    /// Score at or above this is a detection. Default: EmberEye's anomaly threshold (0.4) for `embereye`, the
    /// trained operating point for `default`.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Development: write the default detector's feature vector per image to this CSV (for
    /// scripts/train-detector.py).
    #[arg(long, hide = true)]
    pub dump_features: Option<PathBuf>,
    /// Development: write the grid detector's candidate regions the `model` detector crops (the largest
    /// MAX_CROPS, relative coordinates, frames decoded as a model camera decodes them) to this CSV, so
    /// scripts/train-model.py trains the CNN on the crops the appliance feeds it.
    #[arg(long, hide = true)]
    pub dump_boxes: Option<PathBuf>,
    /// `model`: the TFLite C-API library (libLiteRtRuntimeCApi.so). Default: $EMBER_TFLITE_LIB.
    #[arg(long, value_name = "LIB.so")]
    pub model_library: Option<PathBuf>,
    /// `model`: the .tflite file.
    #[arg(long, value_name = "FILE.tflite", default_value = "models/fire-int8.tflite")]
    pub model: PathBuf,
    /// Also write every image's score to this CSV (`file,fire,smoke,hard_negative,score`), for curves
    /// (scripts/plot-detector.py).
    #[arg(long, value_name = "FILE.csv")]
    pub scores: Option<PathBuf>,
    /// Development: feed the default detector YUYV converted from the full-size decoded RGB instead of RGB, as a
    /// raw V4L2 camera delivers its frames.
    #[arg(long, hide = true)]
    pub yuyv: bool,
    /// How each image is decoded: `analysis` as a JPEG camera of the appliance decodes it (at the smallest
    /// DCT scale that covers the detector's grid, 1/2 at most for `model`), `full` at full size (EmberEye's
    /// own path, for comparing with its published numbers).
    #[arg(long, value_enum, default_value_t = Decode::Analysis)]
    pub decode: Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Decode {
    Analysis,
    Full,
}

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Label {
    pub file: String,
    pub fire: bool,
    pub smoke: bool,
    pub hard: bool,
}

/// Reads `file,fire,smoke,hard_negative,...` (header first). Only the first four columns are used.
pub fn read_labels(path: &Path) -> anyhow::Result<Vec<Label>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 4 {
            bail!("{}:{}: expected at least 4 columns", path.display(), n + 1);
        }
        let flag = |s: &str| match s.trim() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(anyhow::anyhow!("{}:{}: expected 0 or 1, got `{other}`", path.display(), n + 1)),
        };
        out.push(Label {
            file: cols[0].trim().to_owned(),
            fire: flag(cols[1])?,
            smoke: flag(cols[2])?,
            hard: flag(cols[3])?,
        });
    }
    Ok(out)
}

/// The summary printed with `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub images: usize,
    pub positives: usize,
    pub recall: f64,
    pub fire_recall: f64,
    pub smoke_recall: f64,
    pub fpr: f64,
    pub hard_fpr: f64,
    pub threshold: f32,
}

/// Per-image scores and the report.
pub struct Outcome {
    pub scores: Vec<(Label, f32)>,
    pub report: Report,
}

pub fn evaluate(args: &Args) -> anyhow::Result<Outcome> {
    #[cfg(not(feature = "tflite"))]
    if args.detector == Which::Model {
        bail!("the `model` detector needs the TFLite stage; this binary was built without the `tflite` feature");
    }
    #[cfg(feature = "tflite")]
    let mut model = match args.detector {
        Which::Model => {
            let library = args
                .model_library
                .clone()
                .or_else(|| std::env::var_os("EMBER_TFLITE_LIB").map(PathBuf::from))
                .context("--detector model needs --model-library or EMBER_TFLITE_LIB")?;
            // Loaded here so a failure is an error (a run that fell back to the grid would report the wrong detector).
            let loaded = ember_edge::detect::tflite::Model::load(&library, &args.model, 1)?;
            let counters =
                ember_edge::detect::cnn::ModelCounters::register(&ember_edge::telemetry::Registry::new(), &[]);
            Some((ember_edge::detect::cnn::ModelDetector::with_model(loaded, &[], counters.clone()), counters))
        }
        _ => None,
    };
    let labels_path = args.labels.clone().unwrap_or_else(|| args.dir.join("labels.csv"));
    let labels = read_labels(&labels_path)?;
    if labels.is_empty() {
        bail!("{} lists no images", labels_path.display());
    }
    let threshold = args.threshold.unwrap_or(match args.detector {
        Which::Embereye => 0.4,
        Which::Model => 0.5,
        _ => ember_edge::detect::grid_weights::THRESHOLD,
    });
    // The cap a camera with this detector decodes at (camera::source::analysis_cap).
    let model_decode = args.detector == Which::Model || args.dump_boxes.is_some();
    let mut dec = JpegDecoder::with_max_denom(if model_decode { 2 } else { 8 });
    let ember = EmberEyeHsv::new();
    let mut grid = GridDetector::new(&[]);
    let mut rgb = Vec::new();
    let mut yuyv = Vec::new();
    let names: Vec<String> = grid::FEATURE_NAMES.iter().map(|n| format!("f_{n}")).collect();
    let feature_header = format!("file,fire,smoke,hard_negative,{}", names.join(","));
    let mut dump = args.dump_features.as_deref().map(|p| csv_file(p, &feature_header)).transpose()?;
    let mut boxes = args.dump_boxes.as_deref().map(|p| csv_file(p, "file,kind,x0,y0,x1,y1")).transpose()?;
    let mut scores = Vec::with_capacity(labels.len());
    for l in labels {
        let path = args.dir.join(&l.file);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (w, h) = match args.decode {
            Decode::Analysis if !args.yuyv => load_analysis(&mut dec, &bytes, &mut rgb),
            _ => load_rgb(&mut dec, &bytes, &mut rgb),
        }
        .with_context(|| format!("cannot decode {}", path.display()))?;
        let score = match args.detector {
            Which::Embereye => ember.score_rgb(&rgb, w, h).score,
            // As the pipeline's `model` detector scores it: the CNN on the grid's candidate regions.
            #[cfg(feature = "tflite")]
            Which::Model => match model.as_mut() {
                Some((m, counters)) => {
                    let r = m.score(&rgb, w, h, ember_edge::frame::PixelFormat::Rgb24);
                    if counters.errors.get() > 0 {
                        bail!("the model could not score {}", l.file);
                    }
                    r.score
                }
                None => bail!("model not loaded"),
            },
            _ => {
                let r = if args.yuyv {
                    rgb_to_yuyv(&rgb, w & !1, w, h, &mut yuyv);
                    grid.score_yuyv(&yuyv, w & !1, h)
                } else {
                    grid.score_rgb(&rgb, w, h)
                };
                if let Some(f) = boxes.as_mut() {
                    for g in r.regions.iter().take(r.n_regions.min(ember_edge::detect::cnn::MAX_CROPS)) {
                        let kind = if g.kind == grid::RegionKind::Smoke { "smoke" } else { "fire" };
                        writeln!(f, "{},{kind},{:.5},{:.5},{:.5},{:.5}", l.file, g.x0, g.y0, g.x1, g.y1)?;
                    }
                }
                if let Some(f) = dump.as_mut() {
                    let feats: Vec<String> = r.features.iter().map(|v| format!("{v:.6}")).collect();
                    writeln!(
                        f,
                        "{},{},{},{},{}",
                        l.file,
                        u8::from(l.fire),
                        u8::from(l.smoke),
                        u8::from(l.hard),
                        feats.join(",")
                    )?;
                }
                r.score
            }
        };
        scores.push((l, score));
    }
    for mut f in [dump, boxes].into_iter().flatten() {
        f.flush()?;
    }
    if let Some(p) = &args.scores {
        write_scores(p, &scores)?;
    }
    let report = summarise(&scores, threshold);
    Ok(Outcome { scores, report })
}

/// A new CSV file at `path`, its header line written.
fn csv_file(path: &Path, header: &str) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    writeln!(f, "{header}")?;
    Ok(f)
}

fn write_scores(path: &Path, scores: &[(Label, f32)]) -> anyhow::Result<()> {
    let mut f = csv_file(path, "file,fire,smoke,hard_negative,score")?;
    for (l, s) in scores {
        writeln!(f, "{},{},{},{},{s:.6}", l.file, u8::from(l.fire), u8::from(l.smoke), u8::from(l.hard))?;
    }
    Ok(f.flush()?)
}

pub fn summarise(scores: &[(Label, f32)], threshold: f32) -> Report {
    let rate = |pred: &dyn Fn(&Label) -> bool| {
        let (mut n, mut hit) = (0usize, 0usize);
        for (l, s) in scores {
            if pred(l) {
                n += 1;
                hit += usize::from(*s >= threshold);
            }
        }
        if n == 0 { 0.0 } else { hit as f64 / n as f64 }
    };
    Report {
        images: scores.len(),
        positives: scores.iter().filter(|(l, _)| l.fire || l.smoke).count(),
        recall: rate(&|l| l.fire || l.smoke),
        fire_recall: rate(&|l| l.fire),
        smoke_recall: rate(&|l| l.smoke),
        fpr: rate(&|l| !l.fire && !l.smoke),
        hard_fpr: rate(&|l| !l.fire && !l.smoke && l.hard),
        threshold,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = evaluate(&args)?;
    let r = &out.report;
    if args.json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!("{:<60} {:>5} {:>5} {:>4} {:>7}  verdict", "file", "fire", "smoke", "hard", "score");
    for (l, s) in &out.scores {
        let pos = l.fire || l.smoke;
        let det = *s >= r.threshold;
        let verdict = match (pos, det) {
            (true, true) => "hit",
            (true, false) => "MISS",
            (false, true) => "FALSE ALARM",
            (false, false) => "ok",
        };
        println!(
            "{:<60} {:>5} {:>5} {:>4} {:>7.3}  {verdict}",
            l.file,
            u8::from(l.fire),
            u8::from(l.smoke),
            u8::from(l.hard),
            s
        );
    }
    println!(
        "\n{} images, {} positive; threshold {:.3}: recall {:.3} (fire {:.3}, smoke {:.3}), fpr {:.3}, hard_fpr {:.3}",
        r.images, r.positives, r.threshold, r.recall, r.fire_recall, r.smoke_recall, r.fpr, r.hard_fpr
    );
    Ok(())
}
