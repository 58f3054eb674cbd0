//! The event log: what happened on the panel, with date, time and source, kept across restarts and power cuts
//! (what EN 54-2 and NFPA 72 expect of a panel's log): zone transitions, trouble raised and restored per
//! source, operator actions and who took them, output changes, start, clean stop, unclean restart (no clean
//! stop at the tail when the log is opened) and the config loaded (its SHA-256).
//!
//! The alarm path never waits for the disk: `EventLog::record` only offers the event to a bounded channel
//! (overflow counted) and a writer thread appends it to the `store`. When the disk refuses (full, read-only,
//! gone) the writer keeps the newest events in a fixed in-memory ring (older ones counted as lost), raises
//! TROUBLE (the trouble output, `/health` and the status page, a metric) and writes the held events out, in order, as soon as
//! the disk takes them again.
//!
//! An alarm's picture (`crate::snapshot`) is named by its event's id: a transition recorded with
//! `record_with_snapshot` carries the request to the writer, which offers it to the snapshot writer once the
//! id is given (again without waiting).

pub mod record;
pub mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::event::SourceRef;
use crate::telemetry::{Counter, Gauge, PartHandle, PartState, Registry};
use crate::uplink::spool::Fsync;
pub use store::{Query, Store};

/// Events held in memory while the disk refuses them.
pub const MEMORY_CAP: usize = 256;
const CHANNEL: usize = 256;
/// How often the writer retries a refusing disk when no new event comes.
const RETRY: Duration = Duration::from_secs(5);

/// What an event is about (the `kind` filter of the API and CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    /// A zone changed state.
    #[default]
    Zone = 1,
    /// A source raised trouble (offline, stuck, camera fault).
    Trouble = 2,
    /// A source's trouble cleared.
    Restored = 3,
    /// An operator's command (ack, silence, reset, test start/end), with who.
    Operator = 4,
    /// The relay, siren or trouble output changed.
    Output = 5,
    Start = 6,
    /// A clean stop: the last event of a run that ended as asked.
    Stop = 7,
    /// The previous run ended without a clean stop (crash, kill, power cut).
    UncleanRestart = 8,
    /// The config this run loaded, with its hash.
    Config = 9,
    /// The log itself: the disk refused events or took them again.
    Log = 10,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Zone,
        Kind::Trouble,
        Kind::Restored,
        Kind::Operator,
        Kind::Output,
        Kind::Start,
        Kind::Stop,
        Kind::UncleanRestart,
        Kind::Config,
        Kind::Log,
    ];

    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Zone => "zone",
            Kind::Trouble => "trouble",
            Kind::Restored => "restored",
            Kind::Operator => "operator",
            Kind::Output => "output",
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::UncleanRestart => "unclean_restart",
            Kind::Config => "config",
            Kind::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// One logged event. `id` rises by one per event for the life of the log (across restarts); it is given when the
/// event is recorded, so an event lost to a full queue leaves a gap.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub id: u64,
    /// Wall-clock time, ms since the Unix epoch.
    pub ms: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The camera or device, for trouble and restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Who took an operator action: `button`, `page`/`api` with the credential (token, basic user) or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Event {
    /// A new event stamped now (its id is given by the writer).
    pub fn now(kind: Kind, detail: impl Into<String>) -> Event {
        Event { ms: crate::live::status::unix_ms(), kind, detail: detail.into(), ..Event::default() }
    }
}

enum Msg {
    /// An event, and what to keep of the alarm moment once it has its id.
    Event(Event, Option<crate::snapshot::Request>),
    /// Answered once everything sent before it is written (or held in memory).
    Flush(SyncSender<()>),
}

struct Inner {
    store: Option<Store>,
    memory: heapless::Deque<Event, MEMORY_CAP>,
    /// The log's own notes (disk refused, disk back), with their ids, waiting until every event with a lower id
    /// has been taken from the queue.
    notes: heapless::Deque<Event, 4>,
}

struct Counters {
    written: Counter,
    dropped: Counter,
    overflow: Counter,
    lost: Counter,
    held: Gauge,
    trouble: Gauge,
}

struct Shared {
    inner: Mutex<Inner>,
    /// The next id. Ids are given when an event is recorded (so a caller knows its event's id at once, e.g. for
    /// the alert of a transition), under `send` together with the queueing, so the queue holds them in order.
    next_id: AtomicU64,
    send: Mutex<()>,
    trouble: AtomicBool,
    /// The log's part in `/health`: in TROUBLE (reported, the watchdog still fed) while the disk refuses.
    part: Option<PartHandle>,
    counters: Counters,
    dir: PathBuf,
    max_bytes: u64,
    fsync: Fsync,
    zones: Vec<String>,
    cameras: Vec<String>,
    devices: Vec<String>,
    /// The alarm snapshot store, once the cameras exist (`attach_snapshots`).
    snapshots: OnceLock<crate::snapshot::Snapshots>,
}

/// The handle every part records through; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// A page of events as the API and the CLI give them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub events: Vec<Event>,
    /// The id to pass as `since` for the next page (the last id given, or `since` when there was none).
    pub next: u64,
    /// The oldest id still held; older ones were dropped to bound the log.
    pub first: Option<u64>,
    /// Events dropped (oldest first) or lost (channel or memory full) since this run started.
    pub dropped: u64,
    pub lost: u64,
    /// True while the disk refuses events (they are held in memory).
    pub trouble: bool,
    /// The alarm snapshots held for events of this page (`GET /api/events/{id}/snapshot.jpg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<crate::snapshot::Info>,
}

/// The names events use for zones and sources, in config order.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub zones: Vec<String>,
    pub cameras: Vec<String>,
    pub devices: Vec<String>,
}

impl Names {
    pub fn from_config(c: &crate::config::Config) -> Names {
        Names {
            zones: c.zones.iter().map(|z| z.name.clone()).collect(),
            cameras: c.cameras.iter().map(|c| c.name.clone()).collect(),
            devices: c.sensors.devices.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventLog {
    /// Opens the log in `dir` (creating it) and starts the writer thread. A log that cannot be opened does not
    /// stop the appliance: events are held in memory and TROUBLE is raised until the disk takes them. The first
    /// events are an unclean restart (if the last run did not stop cleanly), start, and the config's hash.
    pub fn start(
        dir: PathBuf,
        max_bytes: u64,
        fsync: Fsync,
        names: Names,
        registry: &Registry,
        part: Option<PartHandle>,
        config_note: &str,
    ) -> EventLog {
        let counters = Counters {
            written: registry.counter("ember_events_written_total", "Events written to the event log.", &[]),
            dropped: registry.counter(
                "ember_events_dropped_total",
                "Oldest events removed from the event log to keep it within its bounds.",
                &[],
            ),
            overflow: registry.counter(
                "ember_events_overflow_total",
                "Events lost because the event log's writer queue was full.",
                &[],
            ),
            lost: registry.counter(
                "ember_events_lost_total",
                "Events lost while the disk refused them and the in-memory hold was full (oldest first).",
                &[],
            ),
            held: registry.gauge("ember_events_held", "Events held in memory because the disk refused them.", &[]),
            trouble: registry.gauge(
                "ember_event_log_trouble",
                "1 while the event log cannot write to disk (TROUBLE is raised), else 0.",
                &[],
            ),
        };
        let opened = Store::open(&dir, max_bytes, fsync);
        let (store, unclean) = match opened {
            Ok((s, o)) => {
                if o.torn_bytes > 0 || o.dropped > 0 {
                    log::warn!(
                        "event log {}: {} events recovered, {} torn bytes cut, {} dropped to fit its bounds",
                        dir.display(),
                        o.records,
                        o.torn_bytes,
                        o.dropped
                    );
                }
                counters.dropped.add(o.dropped);
                let unclean = o.last_kind.is_some_and(|k| k != Kind::Stop);
                (Some(s), unclean)
            }
            Err(e) => {
                log::error!("event log {} cannot be opened ({e}): events are held in memory only", dir.display());
                (None, false)
            }
        };
        let next_id = AtomicU64::new(store.as_ref().map(Store::next_id).unwrap_or(1));
        let trouble = store.is_none();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { store, memory: heapless::Deque::new(), notes: heapless::Deque::new() }),
            next_id,
            send: Mutex::new(()),
            trouble: AtomicBool::new(trouble),
            part,
            counters,
            dir,
            max_bytes,
            fsync,
            zones: names.zones,
            cameras: names.cameras,
            devices: names.devices,
            snapshots: OnceLock::new(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        let writer = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("event-log".into()).spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            log::error!("event log writer cannot start ({e}): events are not recorded");
        }
        shared.show_trouble(trouble);
        let log = EventLog { tx, shared };
        if unclean {
            log.record(Event::now(Kind::UncleanRestart, "the previous run ended without a clean stop"));
        }
        log.record(Event::now(Kind::Start, format!("ember-edge {} started", env!("CARGO_PKG_VERSION"))));
        log.record(Event::now(Kind::Config, config_note));
        log
    }

    /// Offers `ev` to the writer; never blocks (a full queue loses the event, counted).
    pub fn record(&self, ev: Event) {
        self.send(ev, None);
    }

    /// Like `record`, and returns the id the event has (also when the queue was full and it is lost: ids then
    /// skip it).
    pub fn record_id(&self, ev: Event) -> u64 {
        self.send(ev, None)
    }

    /// Like `record`, and once the event has its id the snapshot `snap` asks for is offered to the snapshot
    /// writer under that id (dropped without a snapshot store).
    pub fn record_with_snapshot(&self, ev: Event, snap: crate::snapshot::Request) -> u64 {
        self.send(ev, Some(snap))
    }

    /// Gives the log the snapshot store its alarm events' pictures go to (once; later calls are ignored).
    pub fn attach_snapshots(&self, s: crate::snapshot::Snapshots) {
        let _ = self.shared.snapshots.set(s);
    }

    pub fn snapshots(&self) -> Option<&crate::snapshot::Snapshots> {
        self.shared.snapshots.get()
    }

    /// Gives `ev` its id and queues it; never waits for the writer (the lock only orders ids with queueing).
    fn send(&self, mut ev: Event, snap: Option<crate::snapshot::Request>) -> u64 {
        let _order = self.shared.send.lock().unwrap_or_else(|p| p.into_inner());
        ev.id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = ev.id;
        match self.tx.try_send(Msg::Event(ev, snap)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.shared.counters.overflow.inc(),
        }
        id
    }

    /// Waits (at most `timeout`) until everything recorded before is written or held; false on timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        send_within(&self.tx, Msg::Flush(done), timeout) && wait.recv_timeout(timeout).is_ok()
    }

    /// Whether the disk refuses events (TROUBLE while true).
    pub fn in_trouble(&self) -> bool {
        self.shared.trouble.load(Ordering::Relaxed)
    }

    pub fn zone_name(&self, zone: usize) -> String {
        self.shared.zones.get(zone).cloned().unwrap_or_else(|| format!("#{zone}"))
    }

    pub fn source_name(&self, s: SourceRef) -> String {
        match s {
            SourceRef::Camera(i) => format!("camera {}", self.shared.cameras.get(i).map_or("?", String::as_str)),
            SourceRef::Device(i) => format!("device {}", self.shared.devices.get(i).map_or("?", String::as_str)),
        }
    }

    /// The events `q` asks for: the stored ones, then any held in memory.
    pub fn query(&self, q: &Query) -> Page {
        let inner = lock(&self.shared.inner);
        let mut events = inner.store.as_ref().map(|s| s.query(q)).unwrap_or_default();
        let held = inner.memory.iter().filter(|e| e.id > q.since && q.kind.is_none_or(|k| k == e.kind));
        events.extend(held.cloned());
        if q.newest && events.len() > q.limit {
            events.drain(..events.len() - q.limit);
        }
        events.truncate(q.limit);
        let first = inner.store.as_ref().and_then(Store::first_id).or_else(|| inner.memory.front().map(|e| e.id));
        drop(inner);
        let c = &self.shared.counters;
        let snapshots = self.snapshots().map(|s| s.infos(events.iter().map(|e| e.id))).unwrap_or_default();
        Page {
            snapshots,
            next: events.last().map_or(q.since, |e| e.id),
            events,
            first,
            dropped: c.dropped.get(),
            lost: c.overflow.get() + c.lost.get(),
            trouble: self.in_trouble(),
        }
    }
}

/// `SyncSender::send` with a bound: the writer may be stuck on a dead disk, and shutdown must not hang on it.
fn send_within(tx: &SyncSender<Msg>, mut m: Msg, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match tx.try_send(m) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                m = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
}

impl Shared {
    fn run(&self, rx: Receiver<Msg>) {
        // Flushes answered once the queue is empty and the notes are written too.
        let mut flushed: Vec<SyncSender<()>> = Vec::new();
        loop {
            let got = match rx.try_recv() {
                Ok(m) => Ok(m),
                Err(TryRecvError::Empty) => {
                    // Every event with a lower id than a waiting note has been taken: the notes go now.
                    self.put_notes(&mut lock(&self.inner), u64::MAX);
                    for done in flushed.drain(..) {
                        let _ = done.try_send(());
                    }
                    rx.recv_timeout(RETRY)
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(Msg::Event(ev, snap)) => {
                    let mut inner = lock(&self.inner);
                    let id = ev.id;
                    self.put_notes(&mut inner, id);
                    self.put(&mut inner, ev);
                    drop(inner);
                    if let (Some(mut r), Some(s)) = (snap, self.snapshots.get()) {
                        r.event = id;
                        s.request(r);
                    }
                }
                Ok(Msg::Flush(done)) => {
                    let mut inner = lock(&self.inner);
                    self.drain_memory(&mut inner);
                    drop(inner);
                    // Bounded: a flush waits with a timeout, and its answer channel is dropped with it.
                    if flushed.len() < 64 {
                        flushed.push(done);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut inner = lock(&self.inner);
                    if !inner.memory.is_empty() {
                        self.drain_memory(&mut inner);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.put_notes(&mut lock(&self.inner), u64::MAX);
                    return;
                }
            }
        }
    }

    /// A note of the log itself, with the next id; written once every event with a lower id is.
    fn note(&self, inner: &mut Inner, detail: &str) {
        let mut ev = Event::now(Kind::Log, detail);
        {
            // Under the same lock as `send`: every event with a lower id is in the queue already.
            let _order = self.send.lock().unwrap_or_else(|p| p.into_inner());
            ev.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        }
        if inner.notes.is_full() {
            inner.notes.pop_front();
            self.counters.lost.inc();
        }
        let _ = inner.notes.push_back(ev);
    }

    /// Writes (or holds) the waiting notes with ids below `before`.
    fn put_notes(&self, inner: &mut Inner, before: u64) {
        while inner.notes.front().is_some_and(|n| n.id < before) {
            if let Some(n) = inner.notes.pop_front() {
                self.put(inner, n);
            }
        }
    }

    /// Writes held events, oldest first, while the disk takes them. True when none is left.
    fn drain_memory(&self, inner: &mut Inner) -> bool {
        if inner.store.is_none() {
            match Store::open(&self.dir, self.max_bytes, self.fsync) {
                // Ids already given to held events stay theirs: the store continues after them.
                Ok((s, _)) => inner.store = Some(s),
                Err(_) => return inner.memory.is_empty(),
            }
        }
        while let Some(ev) = inner.memory.front() {
            let Some(store) = inner.store.as_mut() else { return false };
            // An id the reopened store has already passed cannot be written in order: keep it in memory only.
            if ev.id < store.next_id() {
                inner.memory.pop_front();
                self.counters.lost.inc();
                continue;
            }
            match store.append(ev) {
                Ok(dropped) => {
                    self.counters.dropped.add(dropped);
                    self.counters.written.inc();
                    inner.memory.pop_front();
                }
                Err(_) => return false,
            }
        }
        self.counters.held.set(0.0);
        if self.trouble.swap(false, Ordering::Relaxed) {
            self.show_trouble(false);
            log::warn!("event log {} writable again: held events written", self.dir.display());
            self.note(inner, "the disk takes events again: those held in memory are written");
        }
        true
    }

    /// Writes `ev` (its id given by `send` or `note`), or holds it in memory while the disk refuses.
    fn put(&self, inner: &mut Inner, ev: Event) {
        // Held events have lower ids than this one: they go first, so ids stay in order.
        let drained = self.drain_memory(inner);
        if drained && let Some(store) = inner.store.as_mut() {
            match store.append(&ev) {
                Ok(dropped) => {
                    self.counters.dropped.add(dropped);
                    self.counters.written.inc();
                    return;
                }
                Err(e) => {
                    if !self.trouble.load(Ordering::Relaxed) {
                        log::error!(
                            "event log {} refuses writes ({e}): TROUBLE; the newest {MEMORY_CAP} events are held in memory",
                            self.dir.display()
                        );
                    }
                }
            }
        }
        let raised = !self.trouble.swap(true, Ordering::Relaxed);
        if raised {
            self.show_trouble(true);
        }
        self.hold(inner, ev);
        if raised {
            self.note(inner, "the disk refuses events: TROUBLE; the newest are held in memory");
        }
    }

    fn show_trouble(&self, on: bool) {
        self.counters.trouble.set(if on { 1.0 } else { 0.0 });
        if let Some(p) = &self.part {
            p.set(if on {
                PartState::Trouble("the disk refuses events; newest held in memory".into())
            } else {
                PartState::Running
            });
        }
    }

    fn hold(&self, inner: &mut Inner, ev: Event) {
        if inner.memory.is_full() {
            inner.memory.pop_front();
            self.counters.lost.inc();
        }
        let _ = inner.memory.push_back(ev);
        self.counters.held.set(inner.memory.len() as f64);
    }
}

#[cfg(test)]
mod tests;
