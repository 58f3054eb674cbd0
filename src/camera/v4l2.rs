//! V4L2 camera source (cargo feature `v4l2`): negotiates format, size and rate with the driver, streams
//! with MMAP buffers on its own OS thread, keeps frames at the camera's adaptive rate (`Rate`), copies YUYV or
//! decodes MJPEG into pooled frames and hands the newest to the detector. When the device fails or
//! disappears it is reopened with exponential backoff and jitter; nothing the device does can panic the
//! process (the `v4l` crate's own drop-time panics are caught per session).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use v4l::buffer::{Flags as BufFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC};

use super::Latest;
use super::capture::{Pacer, copy_yuyv};
use super::jpeg::JpegDecoder;
use super::rate::Rate;
use crate::config::CaptureFormat;
use crate::frame::{Frame, FramePool, PixelFormat};
use crate::retry::Backoff;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};

/// MMAP buffers requested from the driver: one being copied, the rest filling.
const BUFFERS: u32 = 4;
/// Longest wait inside the driver before the thread looks at the stop token again.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// First and longest delay before reopening a failed device.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

pub struct V4l2Counters {
    pub captured: Counter,
    pub errors: Counter,
    pub pool_exhausted: Counter,
    pub skipped: Counter,
    pub reconnects: Counter,
    pub streaming: Gauge,
    pub granted_width: Gauge,
    pub granted_height: Gauge,
    pub granted_fps: Gauge,
}

impl V4l2Counters {
    pub fn new(registry: &Registry, camera: &str) -> Self {
        Self::with_frames(registry, camera, super::replay::ReplayCounters::register(registry, camera))
    }

    /// The V4L2 metrics of one camera around its frame counters (registered once, by the camera's builder).
    pub fn with_frames(registry: &Registry, camera: &str, frames: super::replay::ReplayCounters) -> Self {
        let l = [("camera", camera)];
        V4l2Counters {
            captured: frames.captured,
            errors: frames.decode_errors,
            pool_exhausted: frames.pool_exhausted,
            skipped: registry.counter(
                "ember_camera_frames_skipped_total",
                "Frames the camera delivered above the camera's current analysis rate, not used.",
                &l,
            ),
            reconnects: registry.counter(
                "ember_camera_reconnects_total",
                "Times a camera was reopened after failing or disappearing.",
                &l,
            ),
            streaming: registry.gauge("ember_camera_streaming", "1 while a V4L2 camera delivers frames.", &l),
            granted_width: registry.gauge("ember_camera_granted_width", "Frame width the V4L2 driver granted.", &l),
            granted_height: registry.gauge("ember_camera_granted_height", "Frame height the V4L2 driver granted.", &l),
            granted_fps: registry.gauge(
                "ember_camera_granted_fps",
                "Frame rate the V4L2 driver granted (0 if it does not say).",
                &l,
            ),
        }
    }
}

/// What the driver agreed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    pub driver: String,
    pub card: String,
    pub fourcc: String,
    pub width: u32,
    pub height: u32,
    /// Bytes between rows (YUYV); drivers may pad.
    pub stride: u32,
    /// 0 when the driver reports no frame interval.
    pub fps: f64,
}

pub struct V4l2Camera {
    pub camera: usize,
    pub name: String,
    pub device: String,
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
    /// The rate asked of the driver (frames the camera produces).
    pub fps: f64,
    /// The rate frames are kept at; adapted at run time, never above what the camera delivers.
    pub rate: Arc<Rate>,
    pub max_width: usize,
    pub max_height: usize,
    /// Coarsest analysis scale of MJPEG frames (see `camera::jpeg::analysis_denom`).
    pub max_denom: usize,
    pub pool: FramePool,
    pub out: Arc<Latest<Frame>>,
    pub counters: V4l2Counters,
    pub part: PartHandle,
}

fn fourcc_of(f: CaptureFormat) -> FourCC {
    match f {
        CaptureFormat::Yuyv => FourCC::new(b"YUYV"),
        CaptureFormat::Mjpeg => FourCC::new(b"MJPG"),
    }
}

fn io_err(what: &str, device: &str, e: std::io::Error) -> String {
    format!("{device}: {what}: {e}")
}

/// Opens `device` and negotiates `format` at about `width` x `height` and `fps`. The same function the
/// capture thread uses; public so a hardware test and `check`-style tools can ask a device what it grants.
pub fn negotiate(
    device: &str,
    format: CaptureFormat,
    width: u32,
    height: u32,
    fps: f64,
) -> Result<(Device, Granted), String> {
    let dev = Device::with_path(device).map_err(|e| io_err("cannot open", device, e))?;
    let caps = dev.query_caps().map_err(|e| io_err("VIDIOC_QUERYCAP", device, e))?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) || !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(format!(
            "{device} ({} '{}') is not a streaming video capture node (capabilities: {})",
            caps.driver, caps.card, caps.capabilities
        ));
    }
    let want = fourcc_of(format);
    let got = dev.set_format(&Format::new(width, height, want)).map_err(|e| io_err("VIDIOC_S_FMT", device, e))?;
    if got.fourcc != want {
        let offered = dev
            .enum_formats()
            .map(|v| v.iter().map(|d| d.fourcc.to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|e| format!("unknown: {e}"));
        return Err(format!("{device} ({}) does not offer {want}; it offers: {offered}", caps.card));
    }
    // Rate: drivers without VIDIOC_S_PARM (some CSI bridges) keep their own; report what they say.
    let asked = fps.round().clamp(1.0, 1000.0) as u32;
    let interval = match dev.set_params(&Parameters::with_fps(asked)) {
        Ok(p) => Some(p.interval),
        Err(e) => {
            log::warn!("{device}: cannot set {asked} fps ({e}); keeping the driver's rate");
            dev.params().ok().map(|p| p.interval)
        }
    };
    let fps = match interval {
        Some(i) if i.numerator > 0 && i.denominator > 0 => f64::from(i.denominator) / f64::from(i.numerator),
        _ => 0.0,
    };
    let granted = Granted {
        driver: caps.driver,
        card: caps.card,
        fourcc: got.fourcc.to_string(),
        width: got.width,
        height: got.height,
        stride: got.stride,
        fps,
    };
    Ok((dev, granted))
}

impl V4l2Camera {
    /// Runs the capture thread until `stop`; the future ends when the thread has ended.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("v4l2-{}", self.name))
            .spawn(move || {
                self.capture_loop(&thread_stop);
                let _ = done_tx.send(());
            })
            .map_err(|e| anyhow::anyhow!("cannot start the capture thread: {e}"))?;
        // The sender only vanishes without a message if the thread panicked outside a session.
        let ended = done_rx.await;
        let joined = handle.join();
        match (ended, joined) {
            (Ok(()), Ok(())) => Ok(()),
            _ => Err(anyhow::anyhow!("capture thread panicked")),
        }
    }

    fn capture_loop(mut self, stop: &CancellationToken) {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX).salted(self.camera as u64);
        let mut decoder = JpegDecoder::with_max_denom(self.max_denom);
        let mut pacer = Pacer::new();
        let mut seq = 0u64;
        loop {
            let mut delivered = false;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                self.session(stop, &mut decoder, &mut pacer, &mut seq, &mut delivered)
            }));
            self.counters.streaming.set(0.0);
            if stop.is_cancelled() {
                return;
            }
            let why = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "the V4L2 layer panicked while releasing the device".to_owned(),
            };
            // A session that delivered a frame ends the outage: the next failure starts from the shortest wait.
            let retry = backoff.failed(delivered.then_some(Duration::ZERO));
            // ERROR: an operator should look at a lost camera (the log rule keeps a day-long outage short).
            log::log!(
                retry.level(log::Level::Error),
                "camera {}: {why}; reopening in {:.1} s (attempt {})",
                self.name,
                retry.delay.as_secs_f64(),
                retry.failures
            );
            if !crate::retry::wait_blocking(retry.delay, stop, Some(&self.part), POLL_SLICE) {
                return;
            }
            self.counters.reconnects.inc();
        }
    }

    /// One open → negotiate → stream run. Ok(()) only when stopped; any device trouble is an Err.
    fn session(
        &mut self,
        stop: &CancellationToken,
        decoder: &mut JpegDecoder,
        pacer: &mut Pacer,
        seq: &mut u64,
        delivered: &mut bool,
    ) -> Result<(), String> {
        let (dev, g) = negotiate(&self.device, self.format, self.width, self.height, self.fps)?;
        let (w, h) = (g.width as usize, g.height as usize);
        let need = match self.format {
            CaptureFormat::Yuyv => PixelFormat::Yuyv.frame_len(w, h),
            CaptureFormat::Mjpeg => PixelFormat::Rgb24.frame_len(w, h),
        };
        if w > self.max_width || h > self.max_height || need > self.pool.buffer_len() {
            return Err(format!(
                "the driver granted {w}x{h}, larger than max_width x max_height ({}x{}); raise them",
                self.max_width, self.max_height
            ));
        }
        let fps_text = if g.fps > 0.0 { format!("{:.2} fps", g.fps) } else { "an unreported rate".into() };
        log::info!(
            "camera {}: {} ({} '{}') granted {} {}x{} at {fps_text} (asked {:?} {}x{} at {} fps; analysing at {:.2} fps)",
            self.name,
            self.device,
            g.driver,
            g.card,
            g.fourcc,
            g.width,
            g.height,
            self.format,
            self.width,
            self.height,
            self.fps,
            self.rate.fps()
        );
        self.counters.granted_width.set(f64::from(g.width));
        self.counters.granted_height.set(f64::from(g.height));
        self.counters.granted_fps.set(g.fps);
        let cam_interval = if g.fps > 0.0 { Duration::from_secs_f64(1.0 / g.fps) } else { Duration::ZERO };
        // A stream that goes silent this long is treated as a lost device.
        let stall = (cam_interval * 4).clamp(Duration::from_secs(3), Duration::from_secs(30));

        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| io_err("cannot map capture buffers", &self.device, e))?;
        stream.set_timeout(POLL_SLICE);
        let handle = stream.handle();
        pacer.reset();
        let mut started = false;
        let mut last_frame = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            if started {
                // Wait here, not in the crate's dequeue: its `next()` re-queues the previous buffer first,
                // so it cannot be retried after a time-out.
                match handle.poll(libc::POLLIN, POLL_SLICE.as_millis() as i32) {
                    Ok(0) => {
                        self.part.beat();
                        if last_frame.elapsed() > stall {
                            return Err(format!("{}: no frame for {:.1} s", self.device, stall.as_secs_f64()));
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err("poll", &self.device, e)),
                }
            } else {
                // First frame: `next()` queues every buffer and starts streaming, then waits POLL_SLICE.
                // On a time-out the stream is running; wait for a buffer with plain dequeues, which leave
                // the crate in the same state as a successful `next()` (that frame is dropped).
                match stream.next() {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => loop {
                        if stop.is_cancelled() {
                            return Ok(());
                        }
                        match CaptureStream::dequeue(&mut stream) {
                            Ok(_) => break,
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                                self.part.beat();
                                if last_frame.elapsed() > stall {
                                    return Err(format!("{}: no first frame within {stall:?}", self.device));
                                }
                            }
                            Err(e) => return Err(io_err("VIDIOC_DQBUF", &self.device, e)),
                        }
                    },
                    Err(e) => return Err(io_err("cannot start streaming", &self.device, e)),
                }
                started = true;
                last_frame = Instant::now();
                continue;
            }
            let (buf, meta) = stream.next().map_err(|e| io_err("VIDIOC_DQBUF", &self.device, e))?;
            let now = Instant::now();
            last_frame = now;
            self.part.beat();
            if !*delivered {
                *delivered = true;
                self.counters.streaming.set(1.0);
            }
            if meta.flags.contains(BufFlags::ERROR) {
                self.counters.errors.inc();
                continue;
            }
            if !pacer.admit(now, self.rate.period(), cam_interval) {
                self.counters.skipped.inc();
                continue;
            }
            let Some(mut frame) = self.pool.take() else {
                self.counters.pool_exhausted.inc();
                continue;
            };
            let used = if meta.bytesused > 0 { (meta.bytesused as usize).min(buf.len()) } else { buf.len() };
            let bytes = &buf[..used];
            let filled = match self.format {
                CaptureFormat::Yuyv => copy_yuyv(bytes, w, h, g.stride as usize, frame.buffer_mut())
                    .map(|_| None)
                    .map_err(|e| e.to_string()),
                CaptureFormat::Mjpeg => decoder
                    .decode_analysis(bytes, frame.buffer_mut(), self.max_width, self.max_height)
                    .map(Some)
                    .map_err(|e| e.to_string()),
            };
            match filled {
                Ok(d) => {
                    *seq += 1;
                    frame.meta.camera = self.camera;
                    frame.meta.seq = *seq;
                    match d {
                        Some(d) => d.describe(&mut frame.meta),
                        None => {
                            let m = &mut frame.meta;
                            (m.width, m.height, m.source_width, m.source_height) = (w, h, w, h);
                            (m.format, m.from_jpeg) = (PixelFormat::Yuyv, false);
                        }
                    }
                    frame.meta.captured = tokio::time::Instant::from_std(now);
                    self.counters.captured.inc();
                    if frame.meta.from_jpeg {
                        self.out.put_jpeg(frame, bytes);
                    } else {
                        self.out.put(frame);
                    }
                }
                Err(e) => {
                    self.counters.errors.inc();
                    // One line per 100 bad frames: a camera sending garbage must not flood the log.
                    if self.counters.errors.get() % 100 == 1 {
                        log::warn!("camera {}: bad frame ({e}); skipped", self.name);
                    }
                }
            }
        }
    }
}
