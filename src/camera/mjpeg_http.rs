//! MJPEG over HTTP camera: a minimal HTTP/1.1 GET on a plain TCP stream, framed by `multipart`, paced by the
//! camera's shared `Rate`, decoded into pooled frames and handed to the detector through the newest-wins
//! mailbox. Every failure (refused, timed out, non-200, not HTTP, stalled, closed, chunk errors) is counted
//! and followed by a reconnect with backoff; nothing the server sends can stop the task.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Latest;
use super::http::{Dechunker, HttpUrl, Pacer, parse_head};
use super::jpeg::JpegDecoder;
use super::multipart::{MultipartParser, Stats};
use super::rate::Rate;
use crate::frame::{Frame, FramePool};
use crate::retry::Backoff;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};

/// Socket reads land here; also holds the response head, so a head must fit.
const READ_BUF: usize = 64 * 1024;
/// A connection that delivered frames for this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Why a connection ended. Each is counted under `ember_camera_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// TCP connect failed or timed out (DNS included).
    Connect,
    /// The server answered with a status other than 200.
    Status(u16),
    /// The response was not HTTP, its head too large, or its chunked encoding broken.
    Protocol,
    /// No bytes for `stall_timeout`, or bytes but no complete frame for twice that.
    Stall,
    /// The server closed the connection (or reset it).
    Closed,
}

impl End {
    pub fn kind(self) -> &'static str {
        match self {
            End::Connect => "connect",
            End::Status(_) => "status",
            End::Protocol => "protocol",
            End::Stall => "stall",
            End::Closed => "closed",
        }
    }
    pub const KINDS: [&'static str; 5] = ["connect", "status", "protocol", "stall", "closed"];
}

#[derive(Clone)]
pub struct MjpegCounters {
    /// Frames decoded and delivered (`ember_frames_captured_total`).
    pub captured: Counter,
    /// Parts that did not decode (`ember_frame_errors_total`).
    pub decode_errors: Counter,
    pub pool_exhausted: Counter,
    /// Complete parts not decoded because the rate did not ask for them yet.
    pub skipped: Counter,
    pub reconnects: Counter,
    /// Indexed like `End::KINDS`.
    pub errors: [Counter; 5],
    pub parts: Counter,
    pub oversized: Counter,
    pub truncated: Counter,
    pub garbage_bytes: Counter,
    pub bytes: Counter,
    pub connected: Gauge,
}

pub struct MjpegHttp {
    pub camera: usize,
    pub name: String,
    pub url: HttpUrl,
    /// The camera's current rate; the adaptive controller may change it at any time.
    pub rate: Arc<Rate>,
    pub max_width: usize,
    pub max_height: usize,
    pub max_jpeg_bytes: usize,
    /// Coarsest analysis scale (see `camera::jpeg::analysis_denom`).
    pub max_denom: usize,
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    pub backoff: Backoff,
    pub pool: FramePool,
    pub out: Arc<Latest<Frame>>,
    pub counters: MjpegCounters,
}

/// Per-task state reused across connections: everything allocated once.
struct Io {
    part: PartHandle,
    buf: Box<[u8]>,
    parser: MultipartParser,
    decoder: JpegDecoder,
    pacer: Pacer,
    synced: Stats,
    seq: u64,
    /// When this connection delivered its first part, and when its latest.
    first_part: Option<Instant>,
    last_part: Instant,
    /// Decode errors are logged once per connection, then only counted.
    logged_decode_error: bool,
}

impl MjpegHttp {
    /// Builds the source of camera `index` from its config. The backoff's jitter is seeded per process and
    /// camera, so cameras behind one switch do not reconnect in lockstep.
    pub fn from_config(
        index: usize,
        cam: &crate::config::Camera,
        rate: Arc<Rate>,
        pool: FramePool,
        out: Arc<Latest<Frame>>,
        counters: MjpegCounters,
    ) -> anyhow::Result<Self> {
        let url = cam.url.as_deref().unwrap_or_default();
        let url = HttpUrl::parse(url).map_err(|e| anyhow::anyhow!("camera {}: url: {e}", cam.name))?;
        let ms = Duration::from_millis;
        Ok(MjpegHttp {
            camera: index,
            name: cam.name.clone(),
            url,
            rate,
            max_width: cam.max_width(),
            max_height: cam.max_height(),
            max_jpeg_bytes: cam.max_jpeg_bytes,
            max_denom: super::source::analysis_cap(cam),
            connect_timeout: ms(cam.connect_timeout_ms),
            stall_timeout: ms(cam.stall_timeout_ms),
            backoff: Backoff::new(ms(cam.reconnect_min_ms), ms(cam.reconnect_max_ms))
                .healthy_after(HEALTHY_AFTER)
                .salted(index as u64),
            pool,
            out,
            counters,
        })
    }

    /// How long the task may go without beating before /health calls it stuck: every wait is bounded by
    /// one of the timeouts, and backoff waits beat every second.
    pub fn stale_after(&self) -> Duration {
        self.connect_timeout.max(self.stall_timeout) * 2 + Duration::from_secs(5)
    }

    pub async fn run(mut self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let request = self.url.request();
        let mut io = Io {
            part,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            parser: MultipartParser::new(self.max_jpeg_bytes),
            decoder: JpegDecoder::with_max_denom(self.max_denom),
            pacer: Pacer::default(),
            synced: Stats::default(),
            seq: 0,
            first_part: None,
            last_part: Instant::now(),
            logged_decode_error: false,
        };
        loop {
            io.part.beat();
            io.first_part = None;
            io.logged_decode_error = false;
            let end = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                end = self.session(&request, &mut io) => end,
            };
            self.counters.connected.set(0.0);
            io.parser.end_of_stream();
            self.sync_stats(&mut io);
            if let Some(c) = End::KINDS.iter().position(|k| *k == end.kind()) {
                self.counters.errors[c].inc();
            }
            let retry = self.backoff.failed(io.first_part.map(|t| t.elapsed()));
            log::log!(
                retry.level(log::Level::Warn),
                "camera {}: {} ({}); reconnecting in {:.1} s (failure {} in a row)",
                self.name,
                describe(end),
                self.url.redacted(),
                retry.delay.as_secs_f64(),
                retry.failures
            );
            if !crate::retry::wait(retry.delay, &stop, Some(&io.part)).await {
                return Ok(());
            }
            self.counters.reconnects.inc();
        }
    }

    async fn session(&self, request: &[u8], io: &mut Io) -> End {
        let addr = (self.url.host.as_str(), self.url.port);
        let mut stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => return End::Connect,
        };
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(self.stall_timeout, stream.write_all(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return End::Closed,
            Err(_) => return End::Stall,
        }

        // Response head. It must arrive whole within twice the stall timeout, so a server trickling header
        // bytes cannot hold the connection forever.
        let head_deadline = Instant::now() + self.stall_timeout * 2;
        let mut filled = 0;
        let head = loop {
            io.part.beat();
            if filled == io.buf.len() {
                return End::Protocol;
            }
            if Instant::now() >= head_deadline {
                return End::Stall;
            }
            match self.read(&mut stream, &mut io.buf[filled..]).await {
                Ok(n) => {
                    filled += n;
                    self.counters.bytes.add(n as u64);
                }
                Err(end) => return end,
            }
            match parse_head(&io.buf[..filled]) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return End::Protocol,
            }
        };
        if head.status != 200 {
            return End::Status(head.status);
        }
        if !head.looks_like_mjpeg {
            log::debug!("camera {}: the response is not declared as MJPEG; framing it anyway", self.name);
        }
        match head.boundary {
            Some((a, b)) => io.parser.set_boundary(&io.buf[a..b]),
            None => io.parser.set_boundary(b""),
        }
        self.counters.connected.set(1.0);
        let mut chunks = head.chunked.then(Dechunker::default);
        io.last_part = Instant::now();

        // Body: whatever followed the head in the buffer, then read after read.
        let (mut start, mut end) = (head.len, filled);
        loop {
            match self.body(io, start, end, chunks.as_mut()) {
                // A fast camera keeps the socket readable, so without this the task would decode frame after
                // frame (up to tokio's I/O budget) before the detector it just woke gets to run.
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => {}
                Err(e) => return e,
            }
            if chunks.as_ref().is_some_and(Dechunker::is_done) {
                return End::Closed;
            }
            if io.last_part.elapsed() >= self.stall_timeout * 2 {
                return End::Stall;
            }
            io.part.beat();
            match self.read(&mut stream, &mut io.buf).await {
                Ok(n) => {
                    self.counters.bytes.add(n as u64);
                    (start, end) = (0, n);
                }
                Err(end) => return end,
            }
        }
    }

    async fn read(&self, stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, End> {
        match tokio::time::timeout(self.stall_timeout, stream.read(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(End::Closed),
            Ok(Ok(n)) => Ok(n),
            Err(_) => Err(End::Stall),
        }
    }

    /// Frames `io.buf[start..end]` (dechunking first if needed) and handles every complete JPEG. True when a
    /// frame was decoded.
    fn body(&self, io: &mut Io, start: usize, end: usize, mut chunks: Option<&mut Dechunker>) -> Result<bool, End> {
        let mut decoded = false;
        let Io { buf, parser, .. } = io;
        let mut data = &buf[start..end];
        while !data.is_empty() {
            let (used, mut payload) = match chunks.as_deref_mut() {
                Some(d) => d.next(data).map_err(|_| End::Protocol)?,
                None => (data.len(), data),
            };
            data = &data[used..];
            while !payload.is_empty() {
                let (n, jpeg) = parser.push(payload);
                payload = &payload[n..];
                if let Some(jpeg) = jpeg {
                    let now = Instant::now();
                    io.last_part = now;
                    io.first_part.get_or_insert(now);
                    if io.pacer.admit(now, self.rate.period()) {
                        decoded = true;
                        self.deliver(jpeg, &mut io.decoder, &mut io.seq, &mut io.logged_decode_error);
                    } else {
                        self.counters.skipped.inc();
                    }
                }
            }
        }
        self.sync_stats(io);
        Ok(decoded)
    }

    fn deliver(&self, jpeg: &[u8], decoder: &mut JpegDecoder, seq: &mut u64, logged: &mut bool) {
        let Some(mut frame) = self.pool.take() else {
            self.counters.pool_exhausted.inc();
            return;
        };
        match decoder.decode_analysis(jpeg, frame.buffer_mut(), self.max_width, self.max_height) {
            Ok(d) => {
                *seq += 1;
                frame.meta.camera = self.camera;
                frame.meta.seq = *seq;
                d.describe(&mut frame.meta);
                frame.meta.captured = Instant::now();
                self.counters.captured.inc();
                self.out.put_jpeg(frame, jpeg);
            }
            Err(e) => {
                self.counters.decode_errors.inc();
                if !std::mem::replace(logged, true) {
                    if let super::jpeg::JpegError::TooLarge { .. } = e {
                        // Every frame of this camera will fail until max_width/max_height are raised.
                        log::error!("camera {}: {e}; raise max_width/max_height (frames are dropped)", self.name);
                    } else {
                        log::warn!("camera {}: a frame does not decode: {e} (further errors only counted)", self.name);
                    }
                }
            }
        }
    }

    /// Adds what the framer counted since the last sync to the metrics.
    fn sync_stats(&self, io: &mut Io) {
        let s = io.parser.stats();
        let d = &io.synced;
        let c = &self.counters;
        c.parts.add(s.parts - d.parts);
        c.oversized.add(s.oversized - d.oversized);
        c.truncated.add(s.truncated - d.truncated);
        c.garbage_bytes.add(s.garbage_bytes - d.garbage_bytes);
        io.synced = s;
    }
}

impl MjpegCounters {
    /// Registers the stream metrics of one camera; the frame counters are shared with the replay source.
    pub fn register(reg: &Registry, camera: &str, frames: super::replay::ReplayCounters) -> Self {
        let l = [("camera", camera)];
        let errors = End::KINDS.map(|kind| {
            reg.counter(
                "ember_camera_errors_total",
                "Camera stream connections that ended, by why: connect, status, protocol, stall, closed.",
                &[("camera", camera), ("kind", kind)],
            )
        });
        MjpegCounters {
            captured: frames.captured,
            decode_errors: frames.decode_errors,
            pool_exhausted: frames.pool_exhausted,
            skipped: reg.counter(
                "ember_camera_frames_skipped_total",
                "Complete stream frames not decoded because the camera's rate did not ask for one yet.",
                &l,
            ),
            reconnects: reg.counter("ember_camera_reconnects_total", "Camera stream reconnection attempts.", &l),
            errors,
            parts: reg.counter("ember_camera_parts_total", "Complete JPEGs framed from a camera stream.", &l),
            oversized: reg.counter(
                "ember_camera_parts_oversized_total",
                "Stream JPEGs larger than max_jpeg_bytes, skipped.",
                &l,
            ),
            truncated: reg.counter(
                "ember_camera_parts_truncated_total",
                "Stream JPEGs cut off before their end (connection lost or a new frame began).",
                &l,
            ),
            garbage_bytes: reg.counter(
                "ember_camera_garbage_bytes_total",
                "Stream bytes that were neither JPEG nor multipart framing, skipped.",
                &l,
            ),
            bytes: reg.counter("ember_camera_bytes_total", "Bytes received from a camera stream.", &l),
            connected: reg.gauge("ember_camera_connected", "1 while a camera stream is connected and streaming.", &l),
        }
    }
}

fn describe(end: End) -> String {
    match end {
        End::Connect => "cannot connect".into(),
        End::Status(401) => "HTTP 401: wrong or missing credentials (user:pass@ in the url)".into(),
        End::Status(s @ 300..=399) => format!("HTTP {s}: redirects are not followed, put the final URL in the config"),
        End::Status(s) => format!("HTTP status {s}"),
        End::Protocol => "not an HTTP MJPEG response".into(),
        End::Stall => "stream stalled".into(),
        End::Closed => "connection closed".into(),
    }
}
