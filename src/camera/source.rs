//! Builds one camera from its config section: the frame pool and the newest-frame mailbox, the source task that
//! fills them (replay, MJPEG over HTTP or V4L2), the watch that adapts its rate and reports its health, and
//! every per-camera metric, registered here once whatever the source.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::adapt::AdaptConfig;
use super::rate::Rate;
use super::replay::{Replay, ReplayCounters, ReplaySet};
use super::watch::{CameraWatch, WatchMetrics};
use super::{Latest, Tap, mjpeg_http};
use crate::config::{Camera, CameraSource, CaptureFormat, DetectorKind, ReplayFormat};
use crate::event::Observation;
use crate::frame::{Frame, FramePool, PixelFormat};
use crate::queue::Queue;
use crate::telemetry::metrics::Kind;
use crate::telemetry::{PartHandle, Registry};

/// What a camera needs from the rest of the appliance.
pub struct CameraCtx<'a> {
    /// The camera's position in the config, which names it in observations.
    pub index: usize,
    /// Frames in the camera's pool (`[runtime] frames_per_camera`).
    pub frames: usize,
    pub registry: &'a Registry,
    /// Where the watch reports trouble and recovery to fusion.
    pub observations: Queue<Observation>,
    /// Sees every frame before detection does (the live view).
    pub tap: Arc<dyn Tap<Frame>>,
    /// Resolves a path written in the config.
    pub resolve: &'a dyn Fn(&str) -> PathBuf,
}

type RunFn =
    Box<dyn FnOnce(PartHandle, CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send>;

/// The task that fills a camera's frames, whichever the source.
pub struct SourceTask {
    /// How long the task may go without beating before /health calls it stuck.
    pub stale_after: Option<Duration>,
    run: RunFn,
}

impl SourceTask {
    pub async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        (self.run)(part, stop).await
    }
}

/// A built camera: its source task, the mailbox detection reads and the watch detection drives.
pub struct BuiltCamera {
    pub source: SourceTask,
    pub frames: Arc<Latest<Frame>>,
    pub watch: CameraWatch,
}

/// Builds camera `cam`; fails when its source cannot be opened (a missing replay folder, a bad URL) or is not
/// in this build.
pub fn build(cam: &Camera, ctx: CameraCtx<'_>) -> anyhow::Result<BuiltCamera> {
    let CameraCtx { index, frames, registry, observations, tap, resolve } = ctx;
    let labels = [("camera", cam.name.as_str())];
    let pool = FramePool::new(frames, frame_len(cam));
    let out = Arc::new(Latest::with_tap(
        registry.counter(
            "ember_frames_dropped_total",
            "Frames replaced by a newer one before detection read them.",
            &labels,
        ),
        tap,
    ));
    let pool_free = pool.clone();
    registry.probe(
        "ember_frame_pool_free",
        "Free buffers in a camera's frame pool.",
        Kind::Gauge,
        &labels,
        move || pool_free.available() as f64,
    );
    let counters = ReplayCounters::register(registry, &cam.name);
    let rate = Arc::new(Rate::new(cam.fps));
    let watch = CameraWatch::new(
        index,
        cam.name.clone(),
        Arc::clone(&rate),
        AdaptConfig::new(cam.min_fps(), cam.fps),
        observations,
        WatchMetrics::register(registry, &cam.name, out.replaced_counter()),
        tokio::time::Instant::now(),
    );
    let source = match cam.source {
        CameraSource::Replay => {
            let set = ReplaySet::open(cam.path.as_deref().unwrap_or_default(), resolve)
                .map_err(|e| anyhow::anyhow!("camera {}: {e}", cam.name))?;
            let (name, max_width, max_height, out) =
                (cam.name.clone(), cam.max_width(), cam.max_height(), Arc::clone(&out));
            let (max_jpeg_bytes, size, max_denom) = (cam.max_jpeg_bytes, cam.replay_size, analysis_cap(cam));
            let yuyv = cam.replay_format == ReplayFormat::Yuyv;
            SourceTask {
                stale_after: Some(Duration::from_secs_f64((5.0 / cam.min_fps()).max(5.0))),
                run: Box::new(move |part, stop| {
                    let replay = Replay {
                        camera: index,
                        name,
                        set,
                        rate,
                        max_width,
                        max_height,
                        pool,
                        out,
                        counters,
                        part,
                        max_jpeg_bytes,
                        max_denom,
                    };
                    Box::pin(replay.run_as(size, yuyv, stop))
                }),
            }
        }
        CameraSource::Mjpeg => {
            let counters = mjpeg_http::MjpegCounters::register(registry, &cam.name, counters);
            let source = mjpeg_http::MjpegHttp::from_config(index, cam, rate, pool, Arc::clone(&out), counters)?;
            SourceTask {
                stale_after: Some(source.stale_after()),
                run: Box::new(|part, stop| Box::pin(source.run(part, stop))),
            }
        }
        #[cfg(feature = "v4l2")]
        CameraSource::V4l2 => {
            let counters = super::v4l2::V4l2Counters::with_frames(registry, &cam.name, counters);
            let (cam, out, max_denom) = (cam.clone(), Arc::clone(&out), analysis_cap(cam));
            SourceTask {
                // The capture thread beats at least every 200 ms, also while it waits to reopen a lost device: a
                // missing camera shows in the metrics and the log, it does not restart the service.
                stale_after: Some(Duration::from_secs(5)),
                run: Box::new(move |part, stop| {
                    let [max_width, max_height] = cam.max_size();
                    let v4l2 = super::v4l2::V4l2Camera {
                        camera: index,
                        name: cam.name,
                        device: cam.device,
                        format: cam.format,
                        width: cam.width as u32,
                        height: cam.height as u32,
                        fps: cam.fps,
                        rate,
                        max_width,
                        max_height,
                        max_denom,
                        pool,
                        out,
                        counters,
                        part,
                    };
                    Box::pin(v4l2.run(stop))
                }),
            }
        }
        #[cfg(not(feature = "v4l2"))]
        CameraSource::V4l2 => {
            anyhow::bail!("camera {}: this binary was built without the `v4l2` cargo feature", cam.name)
        }
    };
    Ok(BuiltCamera { source, frames: out, watch })
}

/// The coarsest analysis scale of a camera's JPEG frames: a camera whose CNN reads crops (`detector = "model"`)
/// decodes at 1/2 at most, so a 64×64 crop of a small fire still has detail (docs/design.md, "Camera cost").
pub fn analysis_cap(cam: &Camera) -> usize {
    if cam.detector == DetectorKind::Model { 2 } else { 8 }
}

/// Bytes of each pooled frame buffer: JPEG cameras hold analysis-scale RGB frames; a raw YUYV camera holds
/// its frames as they come.
fn frame_len(cam: &Camera) -> usize {
    let analysis = super::jpeg::analysis_len(cam.max_width(), cam.max_height(), analysis_cap(cam));
    match cam.source {
        CameraSource::V4l2 if cam.format == CaptureFormat::Yuyv => {
            analysis.max(PixelFormat::Yuyv.frame_len(cam.max_width(), cam.max_height()))
        }
        // A replayed webcam in YUYV is decoded at full size and converted in place.
        CameraSource::Replay if cam.replay_format == ReplayFormat::Yuyv => {
            let [w, h] = cam.replay_size.unwrap_or(cam.max_size());
            analysis.max(PixelFormat::Rgb24.frame_len(cam.max_width().max(w), cam.max_height().max(h)))
        }
        _ => analysis,
    }
}
