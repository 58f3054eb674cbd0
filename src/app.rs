//! Wires the pipeline from a loaded config and owns its life: one cancellation token for every task, each task
//! registered in `Health`, listeners bound before readiness is reported, and an orderly shutdown that joins the
//! tasks within the configured timeout and puts the alarm outputs in their safe state last.
//!
//! Data flow: camera → (newest frame) → detect → observations ← sensor server ← devices;
//! observations → fusion → alarm outputs (local, no network) and → uplink → collector.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::alarm::{AlarmOutput, Outputs};
use crate::camera::adapt::AdaptConfig;
use crate::camera::rate::Rate;
use crate::camera::watch::{CameraWatch, WatchMetrics};
use crate::camera::{Latest, mjpeg_http, replay};
use crate::config::{CameraSource, Loaded};
use crate::detect::{DetectCounters, DetectTask, Detector};
use crate::event::{Observation, Transition, ZoneState};
use crate::frame::{FramePool, PixelFormat};
use crate::fusion::Fusion;
use crate::queue::{Overflow, Queue};
use crate::sensor::DeviceMap;
use crate::sensor::device::Devices;
use crate::sensor::server::{SensorCounters, SensorServer};
use crate::telemetry::{Health, PartHandle, PartState, Registry, metrics, sdnotify};
use crate::uplink::collector::Collector;
use crate::uplink::{UplinkCounters, UplinkTask};
use crate::web;

pub type SharedAlarm = Arc<Mutex<Box<dyn AlarmOutput>>>;

/// Things a caller (a test, the demo) may substitute.
#[derive(Default)]
pub struct Overrides {
    pub alarm: Option<Box<dyn AlarmOutput>>,
    pub collector_sink: Option<Box<dyn std::io::Write + Send>>,
}

pub struct App {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub telemetry_addr: SocketAddr,
    pub sensor_addrs: Vec<SocketAddr>,
    pub collector_addr: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    aborts: Vec<(String, AbortHandle)>,
    alarm: SharedAlarm,
    shutdown_timeout: Duration,
    /// Temporary folders to remove at shutdown (a non-durable spool).
    temp_dirs: Vec<std::path::PathBuf>,
}

/// What happened during shutdown.
#[derive(Debug)]
pub struct ShutdownReport {
    pub joined: usize,
    pub aborted: Vec<String>,
    pub elapsed: Duration,
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))
}

impl App {
    fn spawn<F, Fut>(&mut self, name: &str, stale_after: Option<Duration>, f: F)
    where
        F: FnOnce(PartHandle, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let part = self.health.register(name, stale_after);
        let inner = tokio::spawn(f(part.clone(), self.stop.clone()));
        self.aborts.push((name.to_owned(), inner.abort_handle()));
        let stop = self.stop.clone();
        let name = name.to_owned();
        self.tasks.spawn(async move {
            let state = match inner.await {
                Ok(Ok(())) if stop.is_cancelled() => PartState::Stopped,
                Ok(Ok(())) => PartState::Failed("exited".into()),
                Ok(Err(e)) => PartState::Failed(format!("{e:#}")),
                Err(e) if e.is_cancelled() => PartState::Failed("aborted".into()),
                Err(_) => PartState::Failed("panicked".into()),
            };
            if let PartState::Failed(why) = &state
                && !stop.is_cancelled()
            {
                log::error!("task {name} stopped unexpectedly: {why}; /health now reports it");
            }
            part.set(state);
        });
    }

    /// Test hook: aborts the named task as if it had crashed. Returns false if no task has that name.
    pub fn kill_task(&self, name: &str) -> bool {
        match self.aborts.iter().find(|(n, _)| n == name) {
            Some((_, h)) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    pub fn task_names(&self) -> Vec<String> {
        self.aborts.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Builds and starts everything. Listeners are bound before this returns, so a caller can connect at once.
    pub async fn start(loaded: &Loaded, mut ov: Overrides) -> anyhow::Result<App> {
        let c = &loaded.config;
        let registry = Registry::new();
        let health = Health::starting();
        let board = match &c.site.board {
            Some(b) => Some(crate::board::load_file(&loaded.resolve(b)).map_err(|p| {
                anyhow::anyhow!("board profile {b}: {}", p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; "))
            })?),
            None => None,
        };
        let backend = match ov.alarm.take() {
            Some(a) => a,
            None => crate::alarm::build(&c.alarm, board.as_ref())?,
        };
        let alarm: SharedAlarm = Arc::new(Mutex::new(backend));
        let mut app = App {
            registry: Arc::clone(&registry),
            health: Arc::clone(&health),
            telemetry_addr: c.telemetry.listen,
            sensor_addrs: Vec::new(),
            collector_addr: None,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            aborts: Vec::new(),
            alarm: Arc::clone(&alarm),
            shutdown_timeout: Duration::from_millis(c.runtime.shutdown_timeout_ms),
            temp_dirs: Vec::new(),
        };
        registry
            .gauge("ember_build_info", "Version of this build.", &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        let started = std::time::Instant::now();
        registry.probe("ember_uptime_seconds", "Seconds since start.", metrics::Kind::Gauge, &[], move || {
            started.elapsed().as_secs_f64()
        });
        metrics::register_process(&registry);

        let observations: Queue<Observation> =
            Queue::new("observations", c.runtime.observation_queue, Overflow::DropOldest);
        metrics::register_queue(&registry, "observations", observations.capacity(), observations.stats());

        // Telemetry next, so a failing start-up can still be observed.
        let listener = bind("telemetry", c.telemetry.listen).await?;
        app.telemetry_addr = listener.local_addr()?;
        let operator = web::OperatorPort {
            queue: observations.clone(),
            zones: Arc::new(c.zones.iter().map(|z| z.name.clone()).collect()),
        };
        // The sensor devices first: the live view shows their thermal grids.
        let devices = Arc::new(Devices::new(&c.sensors, &registry, observations.clone()));
        let live = crate::live::Live::new(c, &registry, &health, &devices, app.stop.clone());
        live.start().map_err(|e| anyhow::anyhow!("cannot start the live-view encoders: {e}"))?;
        let auth = web::auth::Auth::new(c.telemetry.token.as_deref(), c.telemetry.basic_auth.as_deref());
        let state =
            web::HttpState::with_live(Arc::clone(&registry), Arc::clone(&health), operator, Arc::clone(&live), auth);
        app.spawn("telemetry", None, move |_, stop| async move { Ok(web::serve(listener, state, stop).await?) });

        // Cameras and their detectors.
        for (i, cam) in c.cameras.iter().enumerate() {
            let labels = [("camera", cam.name.as_str())];
            let pool = FramePool::new(
                c.runtime.frames_per_camera,
                PixelFormat::Rgb24.frame_len(cam.max_width, cam.max_height),
            );
            let tap: Arc<dyn crate::camera::Tap<crate::frame::Frame>> = live.cameras[i].clone();
            let latest = Arc::new(Latest::with_tap(
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
                metrics::Kind::Gauge,
                &labels,
                move || pool_free.available() as f64,
            );
            let counters = replay::ReplayCounters {
                captured: registry.counter("ember_frames_captured_total", "Frames captured and decoded.", &labels),
                decode_errors: registry.counter(
                    "ember_frame_errors_total",
                    "Frames that could not be read or decoded.",
                    &labels,
                ),
                pool_exhausted: registry.counter(
                    "ember_frame_pool_exhausted_total",
                    "Frames skipped because every pooled buffer was in use.",
                    &labels,
                ),
            };
            let rate = Arc::new(Rate::new(cam.fps));
            let watch = CameraWatch::new(
                i,
                cam.name.clone(),
                Arc::clone(&rate),
                AdaptConfig::new(cam.min_fps(), cam.fps),
                observations.clone(),
                WatchMetrics {
                    fps: registry.gauge("ember_camera_fps", "The camera's current adaptive frame rate.", &labels),
                    condition: registry.gauge(
                        "ember_camera_condition",
                        "Camera health: 0 ok, 1 no frames, 2 frozen, 3 covered or black, 4 defocused or fogged.",
                        &labels,
                    ),
                    troubles: registry.counter(
                        "ember_camera_troubles_total",
                        "Times the camera went into a trouble condition.",
                        &labels,
                    ),
                    dropped: latest.replaced_counter(),
                },
                tokio::time::Instant::now(),
            );
            let stale = Some(Duration::from_secs_f64((5.0 / cam.min_fps()).max(5.0)));
            let (name, mw, mh, out) = (cam.name.clone(), cam.max_width, cam.max_height, Arc::clone(&latest));
            match cam.source {
                CameraSource::Replay => {
                    let set = replay::ReplaySet::open(cam.path.as_deref().unwrap_or_default(), |p| loaded.resolve(p))
                        .map_err(|e| anyhow::anyhow!("camera {}: {e}", cam.name))?;
                    let max_jpeg_bytes = cam.max_jpeg_bytes;
                    let size = cam.replay_size;
                    app.spawn(&format!("camera:{}", cam.name), stale, move |part, stop| {
                        let (max_width, max_height) = (mw, mh);
                        replay::Replay {
                            camera: i,
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
                        }
                        .run_sized(size, stop)
                    });
                }
                CameraSource::Mjpeg => {
                    let counters = mjpeg_http::MjpegCounters::register(&registry, &cam.name, counters);
                    let source = mjpeg_http::MjpegHttp::from_config(i, cam, rate, pool, out, counters)?;
                    let stale = Some(source.stale_after());
                    app.spawn(&format!("camera:{}", cam.name), stale, move |part, stop| source.run(part, stop));
                }
                #[cfg(feature = "v4l2")]
                CameraSource::V4l2 => {
                    let counters = crate::camera::v4l2::V4l2Counters::new(&registry, &cam.name);
                    let (cam, out) = (cam.clone(), Arc::clone(&latest));
                    // The capture thread beats at least every 200 ms, also while it waits to reopen a lost
                    // device: a missing camera shows in the metrics and the log, it does not restart the service.
                    app.spawn(&format!("camera:{}", cam.name), Some(Duration::from_secs(5)), move |part, stop| {
                        crate::camera::v4l2::V4l2Camera {
                            camera: i,
                            name: cam.name,
                            device: cam.device,
                            format: cam.format,
                            width: cam.width as u32,
                            height: cam.height as u32,
                            fps: cam.fps,
                            rate,
                            max_width: cam.max_width,
                            max_height: cam.max_height,
                            pool,
                            out,
                            counters,
                            part,
                        }
                        .run(stop)
                    });
                }
                #[cfg(not(feature = "v4l2"))]
                CameraSource::V4l2 => {
                    anyhow::bail!("camera {}: this binary was built without the `v4l2` cargo feature", cam.name)
                }
            }
            let detect = DetectTask {
                camera: i,
                detector: match cam.detector {
                    crate::config::DetectorKind::Model => Detector::model(
                        &crate::detect::model::spec_from_config(&c.model, &loaded.base_dir),
                        &cam.mask,
                        crate::detect::model::ModelCounters::register(&registry, &labels),
                    ),
                    kind => Detector::new(kind, &cam.mask),
                },
                input: latest,
                output: observations.clone(),
                watch,
                sink: Some(live.cameras[i].clone()),
                counters: DetectCounters {
                    frames: registry.counter("ember_detect_frames_total", "Frames scored by the detector.", &labels),
                    nanos: registry.counter("ember_detect_nanoseconds_total", "Time spent scoring frames.", &labels),
                    unsupported: registry.counter(
                        "ember_detect_unsupported_total",
                        "Frames in a pixel format the detector cannot read.",
                        &labels,
                    ),
                    score: registry.gauge("ember_vision_score", "Last detector score (0..1).", &labels),
                },
            };
            app.spawn(&format!("detect:{}", cam.name), None, move |part, stop| detect.run(part, stop));
        }

        // Sensor link.
        let map = Arc::new(DeviceMap::from_config(&c.sensors));
        let counters = Arc::new(SensorCounters::new(&registry, &map));
        let server = Arc::new(SensorServer::from_config(&c.sensors, Arc::clone(&map), Arc::clone(&devices), counters));
        for addr in &c.sensors.listen {
            let listener = bind("sensors", *addr).await?;
            let local = listener.local_addr()?;
            app.sensor_addrs.push(local);
            let server = Arc::clone(&server);
            app.spawn(&format!("sensors:{local}"), None, move |_, stop| server.serve(listener, stop));
        }
        for port in &c.sensors.serial {
            let bound = port.device.as_deref().and_then(|n| map.by_name(n));
            let reopened = registry.counter(
                "ember_serial_reopens_total",
                "Times a serial port was reopened after failing or disappearing.",
                &[("port", port.path.as_str())],
            );
            let (server, port) = (Arc::clone(&server), port.clone());
            app.spawn(&format!("serial:{}", port.path), None, move |_, stop| {
                crate::sensor::serial::run(server, port, bound, reopened, stop)
            });
        }
        if !c.sensors.devices.is_empty() {
            let devices = Arc::clone(&devices);
            app.spawn("sensor-liveness", Some(Duration::from_secs(5)), move |part, stop| async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    part.beat();
                    devices.tick(tokio::time::Instant::now());
                }
            });
        }
        for (k, sim) in c.simulator.iter().enumerate() {
            let Some(mut target) = app.sensor_addrs.first().copied() else { break };
            if target.ip().is_unspecified() {
                target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let sim = sim.clone();
            app.spawn(&format!("simulator:{k}"), None, move |_, stop| crate::sensor::sim::run(sim, target, stop));
        }

        // Collector (control-room receiver) for simulated sites.
        if c.collector.enabled
            && let Some(addr) = c.collector.listen
        {
            let listener = bind("collector", addr).await?;
            app.collector_addr = Some(listener.local_addr()?);
            let sink = ov.collector_sink.take().unwrap_or_else(|| Box::new(std::io::stdout()));
            let collector = Collector::new(&registry, sink, None);
            app.spawn("collector", None, move |_, stop| collector.serve(listener, stop));
        }

        // Uplink.
        let zone_names: Arc<Vec<String>> = Arc::new(c.zones.iter().map(|z| z.name.clone()).collect());
        let uplink_queue: Option<Queue<Transition>> = if c.uplink.enabled {
            let server = match (&c.uplink.server, app.collector_addr) {
                (Some(s), _) => s.clone(),
                (None, Some(a)) => a.to_string(),
                (None, None) => anyhow::bail!("uplink is enabled but has no server and no local collector"),
            };
            let q = Queue::new("uplink", c.runtime.uplink_queue, Overflow::DropNewest);
            metrics::register_queue(&registry, "uplink", q.capacity(), q.stats());
            let (spool_dir, durable) = match &c.uplink.spool_dir {
                Some(d) => (loaded.resolve(d), true),
                None => {
                    static INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                    let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let name = format!("ember-edge-spool-{}-{}-{n}", c.site.device_id, std::process::id());
                    (std::env::temp_dir().join(name), false)
                }
            };
            if !durable {
                log::warn!("[uplink] spool_dir is not set: alerts survive a lost link but not a restart");
            }
            let fsync = match c.uplink.fsync {
                crate::config::FsyncPolicy::Always => crate::uplink::spool::Fsync::Always,
                crate::config::FsyncPolicy::Never => crate::uplink::spool::Fsync::Never,
            };
            let (spool, recovery) = crate::uplink::spool::Spool::open(&spool_dir, c.uplink.spool_max_bytes, fsync)
                .map_err(|e| anyhow::anyhow!("cannot open the alert spool: {e}"))?;
            if recovery.records > 0 || recovery.torn_bytes > 0 {
                log::info!(
                    "alert spool {}: {} records recovered ({} pending), {} torn bytes discarded",
                    spool_dir.display(),
                    recovery.records,
                    spool.pending(),
                    recovery.torn_bytes
                );
            }
            if !durable {
                app.temp_dirs.push(spool_dir.clone());
            }
            let key = match &c.uplink.key_file {
                Some(k) => crate::uplink::collector::read_key(&loaded.resolve(k))
                    .map_err(|e| anyhow::anyhow!("cannot read the uplink key {k}: {e}"))?,
                None => Vec::new(),
            };
            let transport = match c.uplink.transport {
                crate::config::UplinkTransport::Tcp => crate::uplink::Transport::Tcp,
                crate::config::UplinkTransport::Mqtt => {
                    crate::uplink::Transport::Mqtt { topic_prefix: c.uplink.topic_prefix.clone() }
                }
            };
            let task = UplinkTask {
                transport,
                server,
                device_id: c.site.device_id,
                key,
                zone_names: Arc::clone(&zone_names),
                input: q.clone(),
                spool,
                reconnect_min: Duration::from_millis(c.uplink.reconnect_min_ms),
                reconnect_max: Duration::from_millis(c.uplink.reconnect_max_ms),
                heartbeat: Duration::from_secs(c.uplink.heartbeat_secs.max(1)),
                counters: UplinkCounters {
                    sent: registry.counter(
                        "ember_uplink_sent_total",
                        "Alert frames written to the uplink (resends included).",
                        &[],
                    ),
                    acked: registry.counter("ember_uplink_acked_total", "Alerts acknowledged by the collector.", &[]),
                    dropped: registry.gauge(
                        "ember_uplink_dropped",
                        "Alerts dropped from a full spool since it was created.",
                        &[],
                    ),
                    reconnects: registry.counter(
                        "ember_uplink_reconnects_total",
                        "Uplink connection attempts after the first.",
                        &[],
                    ),
                    pending: registry.gauge("ember_uplink_pending", "Alerts in the spool not yet acknowledged.", &[]),
                    connected: registry.gauge("ember_uplink_connected", "1 while connected to the collector.", &[]),
                    spool_bytes: registry.gauge("ember_uplink_spool_bytes", "Bytes in the alert spool.", &[]),
                    rejected_acks: registry.counter(
                        "ember_uplink_rejected_acks_total",
                        "Acknowledgements with a bad tag or framing, ignored.",
                        &[],
                    ),
                },
            };
            app.spawn("uplink", None, move |part, stop| task.run(part, stop));
            Some(q)
        } else {
            None
        };

        // Fusion, which also drives the local alarm outputs directly: no queue, no network between them.
        let fusion = Fusion::from_config(c);
        let zone_gauges: Vec<_> = zone_names
            .iter()
            .map(|z| {
                registry.gauge(
                    "ember_zone_state",
                    "Zone state: 0 normal, 1 trouble, 2 pre-alarm, 3 alarm.",
                    &[("zone", z)],
                )
            })
            .collect();
        let transitions = registry.counter("ember_zone_transitions_total", "Zone state changes.", &[]);
        let alarm_latency = registry.histogram(
            "ember_alarm_latency_seconds",
            "Decisive sensor packet written by the device (its TS field) to the alarm outputs changed.",
            &[],
        );
        let decision_latency = registry.histogram(
            "ember_decision_latency_seconds",
            "Sensor packet written by the device (its TS field) to fusion decided and outputs applied.",
            &[],
        );
        let alarm_for_fusion = Arc::clone(&alarm);
        let obs = observations.clone();
        let names = Arc::clone(&zone_names);
        let zone_board = Arc::clone(&live.board);
        app.spawn("fusion", Some(Duration::from_secs(5)), move |part, stop| {
            let m = FusionMetrics { zone_gauges, transitions, decision_latency, alarm_latency };
            let (alarm, uplink, zone_names, board) = (alarm_for_fusion, uplink_queue, names, zone_board);
            FusionTask { fusion, input: obs, alarm, uplink, zone_names, m, board }.run(part, stop)
        });

        // The ack button is read through the GPIO character device for both GPIO backends.
        if c.alarm.backend != crate::config::AlarmBackend::Log
            && let Some(b) = &board
        {
            let (gpio, q) = (b.gpio.clone(), observations.clone());
            app.spawn("ack-button", None, move |_, stop| crate::alarm::gpio::watch_button(gpio, q, stop));
        }

        if let Some(period) = sdnotify::watchdog_interval() {
            let health = Arc::clone(&health);
            app.spawn("watchdog", None, move |_, stop| async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    // Starving the watchdog is how systemd learns that a part of us is dead.
                    let failing = health.failing(tokio::time::Instant::now());
                    if failing.is_empty() {
                        sdnotify::notify("WATCHDOG=1");
                    } else {
                        log::error!("not feeding the systemd watchdog: {}", failing.join(", "));
                    }
                }
            });
        }
        app.health.set_ready();
        sdnotify::notify("READY=1");
        Ok(app)
    }

    /// Cancels every task, joins them within the timeout (aborting stragglers), then sets the alarm outputs to
    /// their safe state — last, so nothing can switch them back on afterwards.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let started = std::time::Instant::now();
        sdnotify::notify("STOPPING=1");
        self.stop.cancel();
        let mut joined = 0;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(_)) => joined += 1,
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let mut aborted = Vec::new();
        for (name, h) in &self.aborts {
            if !h.is_finished() {
                h.abort();
                aborted.push(name.clone());
            }
        }
        if !aborted.is_empty() {
            log::warn!(
                "tasks did not stop within {:?} and were aborted: {}",
                self.shutdown_timeout,
                aborted.join(", ")
            );
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        {
            let mut alarm = self.alarm.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = alarm.safe() {
                log::error!("alarm outputs ({}) could not be set to their safe state: {e}", alarm.name());
            }
        }
        for d in &self.temp_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        ShutdownReport { joined, aborted, elapsed: started.elapsed() }
    }
}

struct FusionMetrics {
    zone_gauges: Vec<crate::telemetry::Gauge>,
    transitions: crate::telemetry::Counter,
    decision_latency: crate::telemetry::metrics::Histogram,
    alarm_latency: crate::telemetry::metrics::Histogram,
}

/// The fusion loop: observations in, transitions out to the alarm outputs (directly) and the uplink queue.
struct FusionTask {
    fusion: Fusion,
    input: Queue<Observation>,
    alarm: SharedAlarm,
    uplink: Option<Queue<Transition>>,
    zone_names: Arc<Vec<String>>,
    m: FusionMetrics,
    /// Zone states and recent transitions for the status page.
    board: Arc<crate::live::ZoneBoard>,
}

impl FusionTask {
    async fn run(self, part: PartHandle, stop: CancellationToken) -> anyhow::Result<()> {
        let FusionTask { mut fusion, input, alarm, uplink, zone_names, m, board } = self;
        let FusionMetrics { zone_gauges, transitions, decision_latency, alarm_latency } = m;
        let mut last_outputs = Outputs::SAFE;
        let mut states = vec![ZoneState::Normal; fusion.zone_count()];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(Outputs::SAFE) {
            log::error!("alarm outputs cannot be initialised: {e}");
        }
        let mut pending: Vec<Transition> = Vec::with_capacity(16);
        loop {
            let mut sent_ns = 0;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                o = input.pop() => {
                    if let Observation::Adc(a) = &o {
                        sent_ns = a.sent_ns;
                    }
                    fusion.observe(&o, &mut |t| pending.push(t));
                }
                _ = tick.tick() => {
                    part.beat();
                    fusion.tick(tokio::time::Instant::now(), &mut |t| pending.push(t));
                    if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).tick() {
                        log::error!("alarm outputs could not be set: {e}");
                    }
                }
            }
            if pending.is_empty() {
                observe_latency(&decision_latency, sent_ns);
                continue;
            }
            for t in pending.drain(..) {
                states[t.zone] = t.to;
                board.record(&t, crate::live::status::unix_ms());
                transitions.inc();
                if let Some(g) = zone_gauges.get(t.zone) {
                    g.set(t.to.level() as f64);
                }
                let zone = zone_names.get(t.zone).map(String::as_str).unwrap_or("?");
                let why: Vec<&str> = crate::event::evidence::names(t.sources).collect();
                match t.to {
                    ZoneState::Alarm => log::error!(
                        "FIRE ALARM in zone {zone}: evidence {why:?}, vision {:.2}{}, max {:.1} °C, smoke {:.1} %",
                        t.vision_score,
                        frame_note(&t),
                        t.max_c,
                        t.smoke_pct
                    ),
                    ZoneState::PreAlarm | ZoneState::Trouble => log::warn!(
                        "zone {zone}: {} → {} ({}, evidence {why:?}{})",
                        t.from.label(),
                        t.to.label(),
                        crate::event::reason::label(t.reason),
                        frame_note(&t)
                    ),
                    _ => log::info!(
                        "zone {zone}: {} → {} ({})",
                        t.from.label(),
                        t.to.label(),
                        crate::event::reason::label(t.reason)
                    ),
                }
                if let Some(q) = &uplink
                    && q.push(t) == crate::queue::Pushed::Refused
                {
                    log::warn!("uplink queue full: alert for zone {zone} not queued");
                }
            }
            let outputs = Outputs::from_states(states.iter().copied());
            if let Err(e) = alarm.lock().unwrap_or_else(|p| p.into_inner()).apply(outputs) {
                log::error!("alarm outputs could not be set: {e}");
            }
            observe_latency(&decision_latency, sent_ns);
            if outputs != last_outputs {
                // The packet that changed the outputs: its latency is input → line change.
                observe_latency(&alarm_latency, sent_ns);
                last_outputs = outputs;
            }
        }
    }
}

/// " (camera N frame M)" naming the picture behind a vision decision, for the log; empty without one.
fn frame_note(t: &Transition) -> String {
    t.vision_frame.map(|f| format!(" (camera {} frame {})", f.camera, f.frame)).unwrap_or_default()
}

fn observe_latency(h: &crate::telemetry::metrics::Histogram, sent_ns: u64) {
    if sent_ns > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        h.observe(now.saturating_sub(sent_ns) as f64 / 1e9);
    }
}
