//! `ember-edge model check` (hidden, for installers and the qemu test): loads the TFLite library and a model,
//! prints the runtime version, the tensors and the outputs for a few inputs. With `--frames DIR` it scores every
//! JPEG listed in DIR/labels.csv on the device itself and prints recall / FPR per threshold.

use std::path::{Path, PathBuf};

use ember_edge::detect::model_input::Region;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The TFLite C-API library (libLiteRtRuntimeCApi.so).
    #[arg(long, value_name = "LIB.so")]
    pub library: PathBuf,
    /// The .tflite model.
    #[arg(long, value_name = "FILE.tflite")]
    pub model: PathBuf,
    /// Interpreter threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// A JPEG to classify (whole frame, or --region of it).
    #[arg(long, value_name = "FILE.jpg")]
    pub image: Option<PathBuf>,
    /// Region of --image: x0,y0,x1,y1 (pixels, exclusive end).
    #[arg(long, value_name = "X0,Y0,X1,Y1", value_parser = parse_region)]
    pub region: Option<Region>,
    /// A frames folder with labels.csv (file,fire,smoke,hard_negative,...): score all, print the curve.
    #[arg(long, value_name = "DIR")]
    pub frames: Option<PathBuf>,
}

fn parse_region(s: &str) -> Result<Region, String> {
    let v: Vec<usize> =
        s.split(',').map(|p| p.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    match v[..] {
        [x0, y0, x1, y1] if x0 < x1 && y0 < y1 => Ok(Region { x0, y0, x1, y1 }),
        _ => Err("expected x0,y0,x1,y1 with x0 < x1 and y0 < y1".into()),
    }
}

#[cfg(not(feature = "tflite"))]
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("this binary was built without the `tflite` feature (cargo build --features tflite)")
}

#[cfg(feature = "tflite")]
pub fn run(args: Args) -> anyhow::Result<()> {
    use ember_edge::detect::tflite::Model;
    let mut m = Model::load(&args.library, &args.model, args.threads)?;
    println!("tflite_version: {}", m.version());
    println!("model: {}", args.model.display());
    for (name, t) in [("input", m.input().clone()), ("output", m.output().clone())] {
        println!("{name}: {:?} {:?} {} bytes, scale {} zero_point {}", t.elem, t.dims, t.bytes, t.scale, t.zero_point);
    }
    let (w, h) = m.input_size();
    for (name, px) in ember_edge::detect::model_input::synthetic_inputs(w, h) {
        let (fire, smoke) = m.classify_input(&px)?;
        println!("{name}: fire {fire:.6} smoke {smoke:.6} raw {:?}", m.raw_output());
    }
    let mut jpeg = ember_edge::camera::jpeg::JpegDecoder::new();
    let mut rgb = vec![0u8; 2048 * 2048 * 3];
    if let Some(img) = &args.image {
        let (iw, ih) = decode(&mut jpeg, img, &mut rgb)?;
        let (fire, smoke) = m.classify_rgb(&rgb[..iw * ih * 3], iw, ih, args.region)?;
        println!("{}: {iw}x{ih} fire {fire:.6} smoke {smoke:.6}", img.display());
    }
    if let Some(dir) = &args.frames {
        let rows = labels(dir)?;
        let mut scored = Vec::with_capacity(rows.len());
        let started = std::time::Instant::now();
        for r in rows {
            let (iw, ih) = decode(&mut jpeg, &dir.join(&r.file), &mut rgb)?;
            let (fire, smoke) = m.classify_rgb(&rgb[..iw * ih * 3], iw, ih, None)?;
            println!(
                "frame {} fire {fire:.4} smoke {smoke:.4} labels {}{}{}",
                r.file, r.fire as u8, r.smoke as u8, r.hard as u8
            );
            scored.push((r, fire, smoke));
        }
        println!(
            "scored {} frames in {:.2} s (decode + preprocess + invoke)",
            scored.len(),
            started.elapsed().as_secs_f64()
        );
        println!("{:>5} {:>9} {:>10} {:>8} {:>9} {:>6}", "thr", "rec_fire", "rec_smoke", "rec_any", "hard_fpr", "fpr");
        for t in [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] {
            let c = curve_point(&scored, t);
            println!("{t:5.2} {:9.3} {:10.3} {:8.3} {:9.3} {:6.3}", c[0], c[1], c[2], c[3], c[4]);
        }
    }
    Ok(())
}

#[cfg(feature = "tflite")]
fn decode(
    jpeg: &mut ember_edge::camera::jpeg::JpegDecoder,
    path: &Path,
    out: &mut [u8],
) -> anyhow::Result<(usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    jpeg.decode_rgb(&bytes, out, 2048, 2048).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// One labelled frame of a labels.csv.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub file: String,
    pub fire: bool,
    pub smoke: bool,
    pub hard: bool,
}

/// Reads `file,fire,smoke,hard_negative,...` rows (the fixtures' labels.csv).
pub fn labels(dir: &Path) -> anyhow::Result<Vec<Labelled>> {
    let path = dir.join("labels.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.splitn(5, ',').collect();
        let [file, fire, smoke, hard, ..] = f[..] else {
            anyhow::bail!("{}:{}: expected file,fire,smoke,hard_negative,...", path.display(), n + 1);
        };
        out.push(Labelled { file: file.into(), fire: fire == "1", smoke: smoke == "1", hard: hard == "1" });
    }
    Ok(out)
}

/// [recall fire, recall smoke, recall any (max score), hard-negative FPR, FPR] at threshold `t`.
pub fn curve_point(scored: &[(Labelled, f32, f32)], t: f32) -> [f64; 5] {
    let rate = |sel: &dyn Fn(&Labelled) -> bool, hit: &dyn Fn(f32, f32) -> bool| {
        let all: Vec<_> = scored.iter().filter(|(l, _, _)| sel(l)).collect();
        if all.is_empty() {
            return f64::NAN;
        }
        all.iter().filter(|(_, f, s)| hit(*f, *s)).count() as f64 / all.len() as f64
    };
    let any = |f: f32, s: f32| f.max(s) >= t;
    [
        rate(&|l| l.fire, &|f, _| f >= t),
        rate(&|l| l.smoke, &|_, s| s >= t),
        rate(&|l| l.fire || l.smoke, &any),
        rate(&|l| l.hard, &any),
        rate(&|l| !l.fire && !l.smoke, &any),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_argument() {
        assert_eq!(parse_region("1,2,30,40"), Ok(Region { x0: 1, y0: 2, x1: 30, y1: 40 }));
        assert!(parse_region("5,5,5,9").is_err());
        assert!(parse_region("1,2,3").is_err());
        assert!(parse_region("a,b,c,d").is_err());
    }

    #[test]
    fn curve_counts() {
        let l = |fire, smoke, hard| Labelled { file: String::new(), fire, smoke, hard };
        let scored = vec![
            (l(true, false, false), 0.9, 0.1),
            (l(true, true, false), 0.2, 0.7),
            (l(false, false, true), 0.6, 0.0),
            (l(false, false, false), 0.1, 0.1),
        ];
        let c = curve_point(&scored, 0.5);
        assert_eq!(c, [0.5, 1.0, 1.0, 1.0, 0.5]);
    }
}
