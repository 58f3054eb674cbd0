//! Wires the pipeline from a loaded config and owns its life: one cancellation token for every task, each task
//! registered in `Health`, listeners bound before readiness is reported, and an orderly shutdown that joins the
//! tasks within the configured timeout and puts the alarm outputs in their safe state last.
//!
//! Each part builds itself from its config section; `App::start` only connects them, in the order of the data
//! flow drawn in the crate docs: telemetry and the live view; cameras → detect → observations; devices → sensor
//! server → observations; observations → fusion → alarm outputs (local, no network) and → uplink → collector.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::alarm::AlarmOutput;
pub use crate::alarm::SharedAlarm;
use crate::camera::{self, BuiltCamera, CameraCtx};
use crate::config::{AlarmBackend, Config, Loaded};
use crate::detect::{DetectCounters, DetectTask, Detector};
use crate::event::{Observation, Transition};
use crate::events::{Event, EventLog, Kind, Names};
use crate::fusion::{Fusion, FusionMetrics, FusionTask};
use crate::queue::{Overflow, Queue};
use crate::sensor::device::Devices;
use crate::sensor::server::{SensorCounters, SensorServer};
use crate::sensor::{DeviceMap, serial};
use crate::telemetry::{Health, PartHandle, PartState, Registry, hwwatchdog, metrics, sdnotify};
use crate::uplink::{self, collector::Collector};
use crate::web;

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
    /// Temporary folders to remove at shutdown (a non-durable spool or event log).
    temp_dirs: Vec<std::path::PathBuf>,
    /// The event log; its clean-stop record is the last thing written at shutdown.
    pub events: Option<EventLog>,
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
    fn new(c: &Config, registry: &Arc<Registry>, health: &Arc<Health>, alarm: &SharedAlarm) -> App {
        App {
            registry: Arc::clone(registry),
            health: Arc::clone(health),
            telemetry_addr: c.telemetry.listen,
            sensor_addrs: Vec::new(),
            collector_addr: None,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            aborts: Vec::new(),
            alarm: Arc::clone(alarm),
            shutdown_timeout: Duration::from_millis(c.runtime.shutdown_timeout_ms),
            temp_dirs: Vec::new(),
            events: None,
        }
    }

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
        let alarm: SharedAlarm = Arc::new(Mutex::new(match ov.alarm.take() {
            Some(a) => a,
            None => crate::alarm::build(&c.alarm, loaded.board.as_ref())?,
        }));
        let mut app = App::new(c, &registry, &health, &alarm);
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        metrics::register_process_wide(&registry);
        let observations: Queue<Observation> =
            Queue::new("observations", c.runtime.observation_queue, Overflow::DropOldest);
        metrics::register_queue(&registry, "observations", observations.capacity(), observations.stats());

        let (events, events_dir) = app.start_event_log(loaded, &registry);

        // Telemetry next, so a failing start-up can still be observed.
        let listener = bind("telemetry", c.telemetry.listen).await?;
        app.telemetry_addr = listener.local_addr()?;
        let operator = web::OperatorPort {
            queue: observations.clone(),
            zones: Arc::new(c.zones.iter().map(|z| z.name.clone()).collect()),
            events: Some(events.clone()),
        };
        // The sensor devices first: the live view shows their thermal grids.
        let devices = Arc::new(Devices::new(&c.sensors, &registry, observations.clone()));
        let clock = crate::telemetry::clock::ClockWatch::new(&registry);
        {
            let clock = Arc::clone(&clock);
            app.spawn("clock", None, move |_, stop| clock.run(stop));
        }
        let live = crate::live::Live::new(c, &registry, &health, &devices, &clock, app.stop.clone());
        live.start().map_err(|e| anyhow::anyhow!("cannot start the live-view encoders: {e}"))?;
        events.attach_snapshots(start_snapshots(loaded, &events_dir, &live, &devices, &registry));
        live.attach_events(events.clone());
        let state = web::HttpState::with_live(
            Arc::clone(&registry),
            Arc::clone(&health),
            operator,
            Arc::clone(&live),
            &c.telemetry,
        );
        app.spawn("telemetry", None, move |_, stop| async move { Ok(web::serve(listener, state, stop).await?) });

        // Cameras → (newest frame) → detect → observations.
        for (i, cam) in c.cameras.iter().enumerate() {
            let ctx = CameraCtx {
                index: i,
                frames: c.runtime.frames_per_camera,
                registry: &registry,
                observations: observations.clone(),
                tap: live.cameras[i].clone(),
                resolve: &|p| loaded.resolve(p),
            };
            let BuiltCamera { source, frames, watch } = camera::build(cam, ctx)?;
            app.spawn(&format!("camera:{}", cam.name), source.stale_after, move |part, stop| source.run(part, stop));
            let detect = DetectTask {
                camera: i,
                detector: Detector::from_config(cam, &c.model, &loaded.base_dir, &registry).into(),
                name: cam.name.clone(),
                input: frames,
                output: observations.clone(),
                watch,
                sink: Some(live.cameras[i].clone()),
                counters: DetectCounters::register(&registry, &cam.name),
            };
            app.spawn(&format!("detect:{}", cam.name), None, move |part, stop| detect.run(part, stop));
        }

        // Devices (TCP listeners, serial ports, simulators) → sensor server → observations.
        app.start_sensor_link(c, &registry, devices).await?;

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

        // Fusion → uplink (queue) → collector or broker.
        let zone_names: Arc<Vec<String>> = Arc::new(c.zones.iter().map(|z| z.name.clone()).collect());
        let mut uplink_queue: Option<Queue<Transition>> = None;
        if c.uplink.enabled {
            let q = Queue::new("uplink", c.runtime.uplink_queue, Overflow::DropNewest);
            metrics::register_queue(&registry, "uplink", q.capacity(), q.stats());
            let names = Arc::clone(&zone_names);
            let site: Arc<dyn uplink::ha_link::SiteView> = live.clone();
            let up = uplink::build::from_config(
                loaded,
                &registry,
                app.collector_addr,
                names,
                q.clone(),
                site,
                observations.clone(),
            )?;
            app.temp_dirs.extend(up.temp_spool);
            app.spawn("uplink", None, move |part, stop| up.task.run(part, stop));
            uplink_queue = Some(q);
        }

        // Observations → fusion → alarm outputs (directly: no queue, no network between them) and the uplink.
        let fusion = FusionTask {
            fusion: Fusion::from_config(c),
            input: observations.clone(),
            alarm: Arc::clone(&alarm),
            uplink: uplink_queue,
            metrics: FusionMetrics::register(&registry, &zone_names),
            zone_names,
            zone_status: Arc::clone(&live.board),
            events: Some(events),
        };
        app.spawn("fusion", Some(Duration::from_secs(5)), move |part, stop| fusion.run(part, stop));

        // The ack button is read through the GPIO character device for both GPIO backends.
        if c.alarm.backend != AlarmBackend::Log
            && let Some(b) = &loaded.board
        {
            let (gpio, q) = (b.gpio.clone(), observations.clone());
            let long = Duration::from_secs_f64(c.alarm.long_press_secs);
            app.spawn("ack-button", None, move |_, stop| crate::alarm::gpio::watch_button(gpio, long, q, stop));
            if b.gpio.manual_input.is_some() {
                let (gpio, q) = (b.gpio.clone(), observations.clone());
                app.spawn("manual-input", None, move |_, stop| crate::alarm::gpio::watch_manual_input(gpio, q, stop));
            }
        }
        if let Some(period) = sdnotify::watchdog_interval() {
            let health = Arc::clone(&health);
            app.spawn("watchdog", None, move |_, stop| sdnotify::feed_watchdog(health, period, stop));
        }
        app.start_hardware_watchdog(c);
        app.health.set_ready();
        sdnotify::notify("READY=1");
        Ok(app)
    }

    /// Opens the event log (a temporary folder when `events_dir` is unset) and records start and the config.
    fn start_event_log(&mut self, loaded: &Loaded, registry: &Registry) -> (EventLog, std::path::PathBuf) {
        let c = &loaded.config;
        let dir = match &c.uplink.events_dir {
            Some(d) => loaded.resolve(d),
            None => {
                // Several apps may run in one process (tests): each needs its own folder.
                static INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = std::env::temp_dir().join(format!("ember-edge-events-{}-{n}", std::process::id()));
                log::warn!("[uplink] events_dir is not set: the event log does not survive a restart");
                self.temp_dirs.push(d.clone());
                d
            }
        };
        let note = format!("{} sha256 {}", loaded.source_name, loaded.sha256);
        let part = self.health.register("event log", None);
        let log = EventLog::start(
            dir.clone(),
            c.uplink.events_max_bytes,
            c.uplink.fsync.into(),
            Names::from_config(c),
            registry,
            Some(part),
            &note,
        );
        self.events = Some(log.clone());
        (log, dir)
    }

    /// The hardware watchdog, when configured. A missing or unusable device is an ERROR but does not stop the
    /// appliance: detection and the alarm outputs matter more than the reset they would get.
    fn start_hardware_watchdog(&mut self, c: &Config) {
        let Some(p) = &c.runtime.hardware_watchdog else { return };
        let want = c.runtime.hardware_watchdog_secs;
        match hwwatchdog::HwWatchdog::open(std::path::Path::new(p), want) {
            Ok((dev, timeout)) => {
                let secs = timeout.unwrap_or_else(|| {
                    log::warn!("hardware watchdog {p} did not take a timeout of {want} s: its driver's own applies");
                    want
                });
                log::info!("hardware watchdog {p} armed: {secs} s");
                let period = hwwatchdog::feed_period(Duration::from_secs(u64::from(secs.max(1))));
                let health = Arc::clone(&self.health);
                self.spawn("hardware-watchdog", None, move |_, stop| hwwatchdog::run(dev, health, period, stop));
            }
            Err(e) => log::error!("cannot open the hardware watchdog {p}: {e}; running without it"),
        }
    }

    /// The sensor link: one server for every TCP listener and serial port, the liveness tick, and the simulated
    /// devices (which connect to the first listener).
    async fn start_sensor_link(
        &mut self,
        c: &Config,
        registry: &Arc<Registry>,
        devices: Arc<Devices>,
    ) -> anyhow::Result<()> {
        let map = Arc::new(DeviceMap::from_config(&c.sensors));
        let counters = Arc::new(SensorCounters::new(registry, &map));
        let server = Arc::new(SensorServer::from_config(&c.sensors, Arc::clone(&map), Arc::clone(&devices), counters));
        for addr in &c.sensors.listen {
            let listener = bind("sensors", *addr).await?;
            let local = listener.local_addr()?;
            self.sensor_addrs.push(local);
            let server = Arc::clone(&server);
            self.spawn(&format!("sensors:{local}"), None, move |_, stop| server.serve(listener, stop));
        }
        for port in &c.sensors.serial {
            let bound = port.device.as_deref().and_then(|n| map.by_name(n));
            let reopened = serial::reopens_counter(registry, &port.path);
            let (server, port) = (Arc::clone(&server), port.clone());
            self.spawn(&format!("serial:{}", port.path), None, move |_, stop| {
                serial::run(server, port, bound, reopened, stop)
            });
        }
        if !c.sensors.devices.is_empty() {
            self.spawn("sensor-liveness", Some(Duration::from_secs(5)), move |part, stop| {
                devices.watch_liveness(part, stop)
            });
        }
        for (k, sim) in c.simulator.iter().enumerate() {
            let Some(mut target) = self.sensor_addrs.first().copied() else { break };
            if target.ip().is_unspecified() {
                target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let sim = sim.clone();
            self.spawn(&format!("simulator:{k}"), None, move |_, stop| crate::sensor::sim::run(sim, target, stop));
        }
        Ok(())
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
        // After every task: nothing may log after the clean stop, or the next start would call it unclean.
        if let Some(log) = self.events.take() {
            log.record(Event::now(Kind::Stop, format!("clean stop after {:.1} s", started.elapsed().as_secs_f64())));
            let flushed = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(2))).await;
            if !matches!(flushed, Ok(true)) {
                log::warn!("the event log's clean-stop record may not be on disk");
            }
        }
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

/// The alarm snapshot store (`snapshots_dir`, or `snapshots` inside the event log's folder), fed from the
/// cameras' frame rings and the devices' thermal grids.
fn start_snapshots(
    loaded: &Loaded,
    events_dir: &std::path::Path,
    live: &crate::live::Live,
    devices: &Arc<Devices>,
    registry: &Registry,
) -> crate::snapshot::Snapshots {
    let c = &loaded.config;
    let dir = match &c.uplink.snapshots_dir {
        Some(d) => loaded.resolve(d),
        None => events_dir.join("snapshots"),
    };
    let cameras = live
        .cameras
        .iter()
        .map(|cam| crate::snapshot::Camera { name: cam.name.clone(), ring: Arc::clone(&cam.ring) })
        .collect();
    let max_len =
        c.cameras.iter().map(|cam| crate::frame::PixelFormat::Rgb24.frame_len(cam.max_width(), cam.max_height())).max();
    crate::snapshot::Snapshots::start(
        dir,
        c.uplink.snapshots_max_bytes,
        c.uplink.snapshots_max_count as usize,
        cameras,
        Some(Arc::clone(devices)),
        c.sensors.devices.iter().map(|d| d.name.clone()).collect(),
        max_len.unwrap_or(0),
        registry,
    )
}
