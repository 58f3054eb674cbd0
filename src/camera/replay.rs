//! Replay camera: plays a folder of JPEG files (name order, looping) at a fixed rate into pooled frames.
//! `builtin:demo` plays the small set of real frames compiled into the binary, so the demo needs no files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Latest;
use super::jpeg::JpegDecoder;
use crate::frame::{Frame, FramePool, PixelFormat};
use crate::telemetry::{Counter, PartHandle};

/// Real frames (CC BY 4.0, Roboflow Universe; see tests/fixtures/frames/ATTRIBUTION.md): a quiet room, then a
/// fire, so the demo shows vision evidence rising.
pub const DEMO_FRAMES: &[(&str, &[u8])] = &[
    ("rf-indoorfire_image6_880670.jpg", include_bytes!("../../tests/fixtures/frames/rf-indoorfire_image6_880670.jpg")),
    (
        "rf-indoorfire_image415_68a572.jpg",
        include_bytes!("../../tests/fixtures/frames/rf-indoorfire_image415_68a572.jpg"),
    ),
    (
        "rf-indoorfire_image453_0b89e4.jpg",
        include_bytes!("../../tests/fixtures/frames/rf-indoorfire_image453_0b89e4.jpg"),
    ),
    (
        "rf-indoorfire_image557_b666b1.jpg",
        include_bytes!("../../tests/fixtures/frames/rf-indoorfire_image557_b666b1.jpg"),
    ),
    (
        "rf-indoorfire_classk11_mp4-107_6e6650.jpg",
        include_bytes!("../../tests/fixtures/frames/rf-indoorfire_classk11_mp4-107_6e6650.jpg"),
    ),
];

/// Where replayed frames come from.
pub enum ReplaySet {
    Builtin(&'static [(&'static str, &'static [u8])]),
    Folder(Vec<PathBuf>),
}

impl ReplaySet {
    /// `builtin:demo`, or the .jpg/.jpeg files of a folder in name order.
    pub fn open(path: &str, resolve: impl Fn(&str) -> PathBuf) -> std::io::Result<Self> {
        if path == "builtin:demo" {
            return Ok(ReplaySet::Builtin(DEMO_FRAMES));
        }
        Self::folder(&resolve(path))
    }

    pub fn folder(dir: &Path) -> std::io::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no .jpg files in {}", dir.display()),
            ));
        }
        Ok(ReplaySet::Folder(files))
    }

    fn len(&self) -> usize {
        match self {
            ReplaySet::Builtin(b) => b.len(),
            ReplaySet::Folder(f) => f.len(),
        }
    }
}

pub struct ReplayCounters {
    pub captured: Counter,
    pub decode_errors: Counter,
    pub pool_exhausted: Counter,
}

pub struct Replay {
    pub camera: usize,
    pub name: String,
    pub set: ReplaySet,
    pub fps: f64,
    pub max_width: usize,
    pub max_height: usize,
    pub pool: FramePool,
    pub out: Arc<Latest<Frame>>,
    pub counters: ReplayCounters,
    pub part: PartHandle,
}

impl Replay {
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        self.run_sized(None, stop).await
    }

    /// Like `run`; with `size` = [w, h], every frame is scaled to w×h (nearest neighbour) to stand in for a
    /// camera of that resolution. The decode goes through one scratch buffer allocated here, once.
    pub async fn run_sized(self, size: Option<[usize; 2]>, stop: CancellationToken) -> anyhow::Result<()> {
        let mut scratch = match size {
            Some(_) => vec![0u8; PixelFormat::Rgb24.frame_len(self.max_width, self.max_height)],
            None => Vec::new(),
        };
        let period = Duration::from_secs_f64(1.0 / self.fps);
        let mut tick = tokio::time::interval(period);
        // After a stall, carry on at the set rate rather than bursting to catch up. `Skip` keeps the ticks on
        // the original schedule: with `Delay`, every wake-up later than 5 ms (a busy board) pushed all later
        // ticks back, and a 25 fps camera delivered 17 fps.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut decoder = JpegDecoder::new();
        // One read buffer reused for every file: it grows to the largest file once, then stays.
        let mut file_buf: Vec<u8> = Vec::new();
        let mut seq: u64 = 0;
        let mut index = 0usize;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            self.part.beat();
            let Some(mut frame) = self.pool.take() else {
                self.counters.pool_exhausted.inc();
                continue;
            };
            let i = index % self.set.len();
            index = index.wrapping_add(1);
            let (name, bytes): (&str, &[u8]) = match &self.set {
                ReplaySet::Builtin(b) => (b[i].0, b[i].1),
                ReplaySet::Folder(files) => {
                    file_buf.clear();
                    match std::fs::File::open(&files[i])
                        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut file_buf))
                    {
                        Ok(_) => ("", &file_buf[..]),
                        Err(e) => {
                            self.counters.decode_errors.inc();
                            log::warn!("camera {}: cannot read {}: {e}", self.name, files[i].display());
                            continue;
                        }
                    }
                }
            };
            let decoded = match size {
                None => decoder.decode_rgb(bytes, frame.buffer_mut(), self.max_width, self.max_height),
                Some([tw, th]) => {
                    decoder.decode_rgb(bytes, &mut scratch, self.max_width, self.max_height).map(|(w, h)| {
                        scale_nearest(&scratch, w, h, frame.buffer_mut(), tw, th);
                        (tw, th)
                    })
                }
            };
            match decoded {
                Ok((w, h)) => {
                    seq += 1;
                    frame.meta.camera = self.camera;
                    frame.meta.seq = seq;
                    frame.meta.width = w;
                    frame.meta.height = h;
                    frame.meta.format = PixelFormat::Rgb24;
                    frame.meta.captured = tokio::time::Instant::now();
                    self.counters.captured.inc();
                    self.out.put(frame);
                }
                Err(e) => {
                    self.counters.decode_errors.inc();
                    log::warn!(
                        "camera {}: frame {} does not decode: {e}",
                        self.name,
                        if name.is_empty() { files_name(&self.set, i) } else { name.to_owned() }
                    );
                }
            }
        }
    }
}

/// Nearest-neighbour scaling of RGB24 `src` (sw×sh) into `dst` (dw×dh); `dst` must hold dw×dh×3 bytes.
pub fn scale_nearest(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    if sw == 0 || sh == 0 {
        return;
    }
    for y in 0..dh {
        let sy = y * sh / dh;
        let row = &mut dst[y * dw * 3..(y + 1) * dw * 3];
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let i = (sy * sw + x * sw / dw) * 3;
            px.copy_from_slice(&src[i..i + 3]);
        }
    }
}

fn files_name(set: &ReplaySet, i: usize) -> String {
    match set {
        ReplaySet::Folder(f) => f.get(i).map(|p| p.display().to_string()).unwrap_or_default(),
        ReplaySet::Builtin(b) => b.get(i).map(|x| x.0.to_owned()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_scaling_maps_corners_and_blocks() {
        // 2x1 source: red, blue; scaled to 4x2.
        let src = [255, 0, 0, 0, 0, 255];
        let mut dst = [0u8; 4 * 2 * 3];
        super::scale_nearest(&src, 2, 1, &mut dst, 4, 2);
        let px = |x: usize, y: usize| &dst[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(px(0, 0), [255, 0, 0]);
        assert_eq!(px(1, 1), [255, 0, 0]);
        assert_eq!(px(2, 0), [0, 0, 255]);
        assert_eq!(px(3, 1), [0, 0, 255]);
    }
}
