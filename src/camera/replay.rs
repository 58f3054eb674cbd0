//! Replay camera: plays a folder of JPEG files (name order, looping), or one .mjpeg file of concatenated
//! JPEGs (read incrementally through the MJPEG framer, looping), at a fixed rate into pooled frames.
//! `builtin:demo` plays the small set of real frames compiled into the binary, so the demo needs no files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::Latest;
use super::jpeg::JpegDecoder;
use super::multipart::MultipartParser;
use crate::frame::{Frame, FramePool, PixelFormat};
use crate::telemetry::{Counter, PartHandle, Registry};

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
    /// One file of concatenated JPEGs (`ffmpeg -f mjpeg`).
    Stream(PathBuf),
}

pub use crate::config::is_mjpeg_file;

impl ReplaySet {
    /// `builtin:demo`, or the .jpg/.jpeg files of a folder in name order.
    pub fn open(path: &str, resolve: impl Fn(&str) -> PathBuf) -> std::io::Result<Self> {
        if path == "builtin:demo" {
            return Ok(ReplaySet::Builtin(DEMO_FRAMES));
        }
        let p = resolve(path);
        if is_mjpeg_file(&p) {
            // Opened now so a missing or unreadable file fails start-up, not the first frame.
            std::fs::File::open(&p)?;
            return Ok(ReplaySet::Stream(p));
        }
        Self::folder(&p)
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
            ReplaySet::Stream(_) => 1,
        }
    }
}

/// Reads concatenated JPEGs from a file through a fixed read buffer and the MJPEG framer, looping at the end.
pub struct StreamReader {
    path: PathBuf,
    file: Option<std::fs::File>,
    parser: MultipartParser,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// JPEGs found since the file was last opened; a pass with none means the file holds no JPEG.
    found: u64,
}

/// Outcome counts a replay reports as frame errors.
fn bad_parts(s: &super::multipart::Stats) -> u64 {
    s.truncated + s.oversized
}

impl StreamReader {
    pub fn new(path: PathBuf, max_jpeg_bytes: usize) -> Self {
        StreamReader {
            path,
            file: None,
            parser: MultipartParser::new(max_jpeg_bytes),
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            pos: 0,
            end: 0,
            found: 0,
        }
    }

    /// The next JPEG of the file (from its start again after the last one), with how many parts were
    /// truncated or oversized on the way.
    pub fn next_jpeg(&mut self) -> std::io::Result<(&[u8], u64)> {
        let bad_before = bad_parts(&self.parser.stats());
        let mut reopened = false;
        loop {
            if self.pos == self.end {
                let file = match &mut self.file {
                    Some(f) => f,
                    None => {
                        if reopened && self.found == 0 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("no complete JPEG in {}", self.path.display()),
                            ));
                        }
                        reopened = true;
                        self.found = 0;
                        self.file.insert(std::fs::File::open(&self.path)?)
                    }
                };
                let n = std::io::Read::read(file, &mut self.buf)?;
                if n == 0 {
                    // End of the file: a part in progress is cut off; start over.
                    self.parser.end_of_stream();
                    self.file = None;
                    continue;
                }
                (self.pos, self.end) = (0, n);
            }
            let (n, part) = self.parser.push(&self.buf[self.pos..self.end]);
            let done = part.is_some();
            self.pos += n;
            if done {
                self.found += 1;
                let bad = bad_parts(&self.parser.stats()) - bad_before;
                return Ok((self.parser.last_part(), bad));
            }
        }
    }
}

/// The frame counters every source has (the replay's own set; MJPEG and V4L2 extend it).
pub struct ReplayCounters {
    pub captured: Counter,
    pub decode_errors: Counter,
    pub pool_exhausted: Counter,
}

impl ReplayCounters {
    /// Registers one camera's frame counters; the one place these names are registered, for every source.
    pub fn register(reg: &Registry, camera: &str) -> Self {
        let l = [("camera", camera)];
        ReplayCounters {
            captured: reg.counter("ember_frames_captured_total", "Frames captured and decoded.", &l),
            decode_errors: reg.counter("ember_frame_errors_total", "Frames that could not be read or decoded.", &l),
            pool_exhausted: reg.counter(
                "ember_frame_pool_exhausted_total",
                "Frames skipped because every pooled buffer was in use.",
                &l,
            ),
        }
    }
}

pub struct Replay {
    pub camera: usize,
    pub name: String,
    pub set: ReplaySet,
    /// The camera's current rate, adapted at run time to the detector's budget.
    pub rate: Arc<super::rate::Rate>,
    pub max_width: usize,
    pub max_height: usize,
    pub pool: FramePool,
    pub out: Arc<Latest<Frame>>,
    pub counters: ReplayCounters,
    pub part: PartHandle,
    /// Largest JPEG taken from an .mjpeg file.
    pub max_jpeg_bytes: usize,
    /// Coarsest analysis scale (see `camera::jpeg::analysis_denom`).
    pub max_denom: usize,
}

impl Replay {
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        self.run_sized(None, stop).await
    }

    /// Like `run`; with `size` = [w, h], every frame is scaled to w×h (nearest neighbour) to stand in for a
    /// camera of that resolution, then averaged down to that camera's analysis scale. The decode and the scaled
    /// frame go through two scratch buffers allocated here, once.
    pub async fn run_sized(self, size: Option<[usize; 2]>, stop: CancellationToken) -> anyhow::Result<()> {
        self.run_as(size, false, stop).await
    }

    /// Like `run_sized`; with `yuyv`, each frame is decoded at full size and converted in place to YUYV and handed
    /// on as such, as a V4L2 webcam in YUYV delivers it (the webcam's path, without a webcam).
    pub async fn run_as(self, size: Option<[usize; 2]>, yuyv: bool, stop: CancellationToken) -> anyhow::Result<()> {
        let (mut scratch, mut sized) = match size {
            Some([tw, th]) => (
                vec![0u8; PixelFormat::Rgb24.frame_len(self.max_width, self.max_height)],
                vec![0u8; if yuyv { 0 } else { PixelFormat::Rgb24.frame_len(tw, th) }],
            ),
            None => (Vec::new(), Vec::new()),
        };
        // Paced frame by frame so a rate change applies from the next frame; after a stall, carry on at the
        // current rate rather than bursting to catch up.
        let mut next = tokio::time::Instant::now();
        let mut decoder = JpegDecoder::with_max_denom(self.max_denom);
        // One read buffer reused for every file: it grows to the largest file once, then stays.
        let mut file_buf: Vec<u8> = Vec::new();
        let mut seq: u64 = 0;
        let mut index = 0usize;
        let mut stream = match &self.set {
            ReplaySet::Stream(p) => Some(StreamReader::new(p.clone(), self.max_jpeg_bytes)),
            _ => None,
        };
        let mut stream_warned = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(next) => {}
            }
            next = (next + self.rate.period()).max(tokio::time::Instant::now());
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
                ReplaySet::Stream(path) => match stream.as_mut().map(StreamReader::next_jpeg) {
                    Some(Ok((jpeg, bad))) => {
                        if bad > 0 {
                            self.counters.decode_errors.add(bad);
                            log::warn!("camera {}: {bad} cut or oversized JPEGs in {}", self.name, path.display());
                        }
                        ("", jpeg)
                    }
                    Some(Err(e)) => {
                        self.counters.decode_errors.inc();
                        // Retried every tick; said once, then only counted.
                        if !std::mem::replace(&mut stream_warned, true) {
                            log::warn!("camera {}: cannot read {}: {e}", self.name, path.display());
                        }
                        continue;
                    }
                    None => continue,
                },
            };
            let full = |w: usize, h: usize| super::jpeg::Decoded {
                width: w,
                height: h,
                source_width: w,
                source_height: h,
                denom: 1,
            };
            let decoded = match size {
                None if yuyv => decoder
                    .decode_rgb(bytes, frame.buffer_mut(), self.max_width, self.max_height)
                    .map(|(w, h)| full(w, h)),
                None => decoder.decode_analysis(bytes, frame.buffer_mut(), self.max_width, self.max_height),
                Some([tw, th]) => {
                    decoder.decode_rgb(bytes, &mut scratch, self.max_width, self.max_height).map(|(w, h)| {
                        if yuyv {
                            scale_nearest(&scratch, w, h, frame.buffer_mut(), tw, th);
                            return full(tw, th);
                        }
                        scale_nearest(&scratch, w, h, &mut sized, tw, th);
                        let denom = super::jpeg::analysis_denom_capped(tw, th, self.max_denom);
                        let (width, height) = (tw.div_ceil(denom), th.div_ceil(denom));
                        if let Some(out) = frame.buffer_mut().get_mut(..width * height * 3) {
                            crate::pixels::box_average(&sized, tw, th, denom, out);
                        }
                        super::jpeg::Decoded { width, height, source_width: tw, source_height: th, denom }
                    })
                }
            };
            match decoded {
                Ok(d) => {
                    seq += 1;
                    frame.meta.camera = self.camera;
                    frame.meta.seq = seq;
                    d.describe(&mut frame.meta);
                    if yuyv {
                        let w = crate::pixels::rgb_to_yuyv_in_place(frame.buffer_mut(), d.width, d.height);
                        let m = &mut frame.meta;
                        (m.format, m.from_jpeg, m.width, m.source_width) = (PixelFormat::Yuyv, false, w, w);
                    }
                    frame.meta.captured = tokio::time::Instant::now();
                    self.counters.captured.inc();
                    // Viewers get the file's own JPEG, also when `replay_size` stands in for another size; a
                    // replayed YUYV webcam is previewed as a YUYV camera is (encoded).
                    if frame.meta.from_jpeg {
                        self.out.put_jpeg(frame, bytes);
                    } else {
                        self.out.put(frame);
                    }
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
        ReplaySet::Stream(p) => p.display().to_string(),
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
