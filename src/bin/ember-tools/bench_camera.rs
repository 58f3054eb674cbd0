//! `ember-tools bench camera`: nanoseconds per frame of a JPEG camera's whole analysis path, decode plus detect,
//! on real frames at camera sizes, single thread.
//!
//! The frames are the JPEGs of a folder (default: the repo's tests/fixtures/frames), decoded, resized to each
//! size bilinearly (deterministic, so every run and the OpenCV peer time the same files) and re-encoded as a
//! camera would send them (baseline, 4:2:0 or 4:2:2, quality 85 unless told). Each size is timed at every DCT
//! scale (1 = zune-jpeg at full size) and along the appliance's own path (`decode_analysis`, which picks the
//! scale). `--write-jpegs` keeps the encoded frames for `scripts/bench-camera-opencv.sh`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use ember_edge::camera::jpeg::{JpegDecoder, analysis_denom};
use ember_edge::camera::scaled::ScaledDecoder;
use ember_edge::detect::embereye::EmberEyeHsv;
use ember_edge::detect::grid::GridDetector;
use ember_edge::pixels::load_rgb;

use crate::bench_detect::thread_cpu_ns;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Embereye,
    Grid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Chroma {
    /// 4:2:0, as IP cameras and libjpeg's defaults send.
    #[value(name = "420")]
    S420,
    /// 4:2:2, as most UVC webcams send MJPEG.
    #[value(name = "422")]
    S422,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Frame sizes, WxH, comma separated.
    #[arg(long, default_value = "640x480,1280x720,1920x1080", value_delimiter = ',')]
    pub sizes: Vec<String>,
    #[arg(long, value_enum, default_value_t = Which::Grid)]
    pub detector: Which,
    /// Frames to time per row (after 20 warm-up frames).
    #[arg(long, default_value_t = 500)]
    pub frames: usize,
    /// Folder of JPEG frames to build the camera frames from.
    #[arg(long, default_value = "tests/fixtures/frames")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 85)]
    pub quality: u8,
    #[arg(long, value_enum, default_value_t = Chroma::S420)]
    pub chroma: Chroma,
    /// Also write the encoded frames here as WxH/NNN.jpg (what the OpenCV peer decodes).
    #[arg(long)]
    pub write_jpegs: Option<PathBuf>,
    /// Print one JSON object per row.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub path: String,
    pub detector: String,
    pub width: usize,
    pub height: usize,
    /// 1, 2, 4, 8; 0 for the appliance's path (which picks per frame).
    pub denom: usize,
    pub decoded_width: usize,
    pub decoded_height: usize,
    pub jpeg_bytes: usize,
    pub frames: usize,
    pub decode_p50_ns: u64,
    pub detect_p50_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub mean_ns: u64,
    pub cpu_p50_ns: u64,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s.split_once('x').with_context(|| format!("size {s:?} is not WxH"))?;
    let (w, h) = (w.trim().parse::<usize>()?, h.trim().parse::<usize>()?);
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        bail!("size {s:?} out of range (16..8192)");
    }
    Ok((w, h))
}

/// Bilinear resize of RGB24 (pixel centres aligned), integer weights, so the result is the same everywhere.
fn resize_bilinear(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    let mut out = vec![0u8; dw * dh * 3];
    let map = |d: usize, dn: usize, sn: usize| {
        // Source coordinate in 1/256 pixels.
        let x = ((2 * d + 1) * sn * 256 / (2 * dn)).saturating_sub(128);
        let i = (x / 256).min(sn - 1);
        (i, (i + 1).min(sn - 1), (x % 256) as u32)
    };
    for y in 0..dh {
        let (y0, y1, fy) = map(y, dh, sh);
        for x in 0..dw {
            let (x0, x1, fx) = map(x, dw, sw);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| u32::from(src[(yy * sw + xx) * 3 + c]);
                let top = p(x0, y0) * (256 - fx) + p(x1, y0) * fx;
                let bot = p(x0, y1) * (256 - fx) + p(x1, y1) * fx;
                out[(y * dw + x) * 3 + c] = ((top * (256 - fy) + bot * fy + 32768) >> 16) as u8;
            }
        }
    }
    out
}

fn encode(rgb: &[u8], w: usize, h: usize, args: &Args) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, args.quality);
    e.set_sampling_factor(match args.chroma {
        Chroma::S420 => jpeg_encoder::SamplingFactor::F_2_2,
        Chroma::S422 => jpeg_encoder::SamplingFactor::F_2_1,
    });
    e.encode(rgb, u16::try_from(w)?, u16::try_from(h)?, jpeg_encoder::ColorType::Rgb)?;
    Ok(out)
}

struct Stats {
    total: Vec<u64>,
    decode: Vec<u64>,
    detect: Vec<u64>,
    cpu: Vec<u64>,
}

fn p50(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn measure(args: &Args) -> anyhow::Result<Vec<Row>> {
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
    let mut sources = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let mut rgb = Vec::new();
        let (w, h) = load_rgb(&mut dec, &bytes, &mut rgb).with_context(|| format!("cannot decode {}", f.display()))?;
        sources.push((rgb, w, h));
    }
    let ember = EmberEyeHsv::new();
    let mut grid = GridDetector::new(&[]);
    let mut scaled = ScaledDecoder::default();
    let mut rows = Vec::new();
    for size in &args.sizes {
        let (w, h) = parse_size(size)?;
        let mut jpegs = Vec::new();
        for (rgb, sw, sh) in &sources {
            jpegs.push(encode(&resize_bilinear(rgb, *sw, *sh, w, h), w, h, args)?);
        }
        if let Some(dir) = &args.write_jpegs {
            let d = dir.join(format!("{w}x{h}"));
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            for (i, j) in jpegs.iter().enumerate() {
                std::fs::write(d.join(format!("{i:03}.jpg")), j)?;
            }
        }
        let jpeg_bytes = jpegs.iter().map(Vec::len).sum::<usize>() / jpegs.len();
        let mut out = vec![0u8; w * h * 3];
        // denom 0: the appliance's path; 1: zune-jpeg full size; 2, 4, 8: the DCT-domain decoder forced.
        for denom in [0, 1, 2, 4, 8] {
            let mut st = Stats { total: vec![], decode: vec![], detect: vec![], cpu: vec![] };
            let mut dims = (0, 0);
            let mut sink = 0f32;
            for i in 0..args.frames + 20 {
                let j = std::hint::black_box(&jpegs[i % jpegs.len()]);
                let c = thread_cpu_ns();
                let t = Instant::now();
                let (dw, dh) = match denom {
                    0 => dec.decode_analysis(j, &mut out, w, h).map(|d| (d.width, d.height))?,
                    1 => dec.decode_rgb(j, &mut out, w, h)?,
                    d => match scaled.decode(j, &mut out, |_, _| Ok(d))? {
                        Ok((dw, dh, _)) => (dw, dh),
                        Err(e) => bail!("{w}x{h} at 1/{d}: {e:?}"),
                    },
                };
                let t1 = Instant::now();
                let px = &out[..dw * dh * 3];
                sink += match args.detector {
                    Which::Embereye => ember.score_rgb(px, dw, dh).score,
                    Which::Grid => grid.score_rgb(px, dw, dh).score,
                };
                let t2 = Instant::now();
                let cpu = thread_cpu_ns().saturating_sub(c);
                if i >= 20 {
                    st.decode.push((t1 - t).as_nanos() as u64);
                    st.detect.push((t2 - t1).as_nanos() as u64);
                    st.total.push((t2 - t).as_nanos() as u64);
                    st.cpu.push(cpu);
                }
                dims = (dw, dh);
            }
            std::hint::black_box(sink);
            let n = st.total.len().max(1);
            let mean = st.total.iter().sum::<u64>() / n as u64;
            let total_p50 = p50(&mut st.total);
            rows.push(Row {
                path: match denom {
                    0 => format!("appliance (1/{})", analysis_denom(w, h)),
                    1 => "zune-jpeg full".into(),
                    d => format!("DCT 1/{d}"),
                },
                detector: format!("{:?}", args.detector).to_lowercase(),
                width: w,
                height: h,
                denom,
                decoded_width: dims.0,
                decoded_height: dims.1,
                jpeg_bytes,
                frames: args.frames,
                decode_p50_ns: p50(&mut st.decode),
                detect_p50_ns: p50(&mut st.detect),
                p50_ns: total_p50,
                p99_ns: st.total[((n as f64 * 0.99) as usize).min(n - 1)],
                mean_ns: mean,
                cpu_p50_ns: p50(&mut st.cpu),
            });
        }
    }
    Ok(rows)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rows = measure(&args)?;
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<11} {:<20} {:>9} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "size", "path", "decoded", "JPEG kB", "decode µs", "detect µs", "p50 µs", "p99 µs", "CPU p50"
    );
    for r in &rows {
        println!(
            "{:<11} {:<20} {:>9} {:>8.1} {:>10.1} {:>10.1} {:>9.1} {:>9.1} {:>9.1}",
            format!("{}x{}", r.width, r.height),
            r.path,
            format!("{}x{}", r.decoded_width, r.decoded_height),
            r.jpeg_bytes as f64 / 1e3,
            r.decode_p50_ns as f64 / 1e3,
            r.detect_p50_ns as f64 / 1e3,
            r.p50_ns as f64 / 1e3,
            r.p99_ns as f64 / 1e3,
            r.cpu_p50_ns as f64 / 1e3,
        );
    }
    Ok(())
}
