//! Whether the wall clock can be trusted. A Raspberry Pi has no real-time clock: it boots at its last shutdown
//! time (fake-hwclock) or at 1970 and is right only once NTP has synchronised it. Nothing here changes what the
//! appliance decides (every timeout, retry and expiry runs on the monotonic clock); it only says whether the
//! times written into alerts, events and heartbeats are real, on `/api/status` (`clock_synchronised`), in
//! heartbeats (`wire::health::CLOCK`), as `ember_clock_synchronised` and in the log when it changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Registry;
use super::metrics::Kind;

/// No wall clock before this (2026-01-01 UTC) is real: this build did not exist yet.
pub const NOT_BEFORE_UNIX_SECS: u64 = 1_767_225_600;

/// How often the kernel is asked (cheap: one system call).
const EVERY: Duration = Duration::from_secs(10);

/// The clock is synchronised when the kernel says so (NTP, chrony or systemd-timesyncd discipline it) and it
/// reads a plausible date. Where the kernel cannot say (`None`: not Linux), a plausible date is taken as
/// synchronised, the best that can be known.
pub fn judge(kernel_synchronised: Option<bool>, unix_secs: u64) -> bool {
    unix_secs >= NOT_BEFORE_UNIX_SECS && kernel_synchronised.unwrap_or(true)
}

/// The kernel's own word: `adjtimex` reports `TIME_ERROR` while the clock is not synchronised (its
/// `STA_UNSYNC` status bit, set at boot and cleared by the time daemon).
#[cfg(target_os = "linux")]
pub fn kernel_synchronised() -> Option<bool> {
    // SAFETY: adjtimex with `modes` 0 only reads; the struct is plain data, zeroed, and outlives the call.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::adjtimex(&mut t) };
    if r < 0 {
        return None;
    }
    Some(r != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0)
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_synchronised() -> Option<bool> {
    None
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const UNKNOWN: u8 = 0;
const SYNCED: u8 = 1;
const UNSYNCED: u8 = 2;

/// The clock's state as last checked, shared by the status page, the uplink and the metrics.
pub struct ClockWatch {
    state: AtomicU8,
    probe: Box<dyn Fn() -> bool + Send + Sync>,
}

impl ClockWatch {
    /// Watches the real clock.
    pub fn new(registry: &Registry) -> Arc<Self> {
        Self::with_probe(registry, Box::new(|| judge(kernel_synchronised(), unix_secs())))
    }

    /// Watches what `probe` says (tests, and the seam for another time source).
    pub fn with_probe(registry: &Registry, probe: Box<dyn Fn() -> bool + Send + Sync>) -> Arc<Self> {
        let w = Arc::new(ClockWatch { state: AtomicU8::new(UNKNOWN), probe });
        w.check();
        let w2 = Arc::clone(&w);
        registry.probe(
            "ember_clock_synchronised",
            "1 while the wall clock is synchronised (NTP); 0 until then: alert and event times are the device's guess.",
            Kind::Gauge,
            &[],
            move || if w2.synchronised() { 1.0 } else { 0.0 },
        );
        w
    }

    /// Asks again; logs a change. Returns the new state.
    pub fn check(&self) -> bool {
        let now = if (self.probe)() { SYNCED } else { UNSYNCED };
        let before = self.state.swap(now, Ordering::Relaxed);
        if before != now {
            if now == SYNCED {
                if before == UNSYNCED {
                    log::info!("wall clock synchronised: alert and event times are real from now on");
                }
            } else {
                log::warn!(
                    "wall clock not synchronised (no NTP yet, or no real-time clock): alerts and events carry the \
                     device's time, which may be wrong; every timeout runs on the monotonic clock and is unaffected"
                );
            }
        }
        now == SYNCED
    }

    pub fn synchronised(&self) -> bool {
        self.state.load(Ordering::Relaxed) == SYNCED
    }

    /// Checks every few seconds until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(EVERY) => { self.check(); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_clock_is_trusted_only_when_synchronised_and_plausible() {
        let now = NOT_BEFORE_UNIX_SECS + 86_400;
        assert!(judge(Some(true), now));
        assert!(!judge(Some(false), now), "fake-hwclock: a plausible date, but not synchronised");
        assert!(!judge(Some(true), 0), "1970 is never real");
        assert!(!judge(None, 100), "no kernel word and an implausible date");
        assert!(judge(None, now), "no kernel word: a plausible date is the best there is");
    }

    #[test]
    fn the_watch_follows_its_probe_and_exports_a_gauge() {
        let reg = Registry::new();
        let synced = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&synced);
        let w = ClockWatch::with_probe(&reg, Box::new(move || s2.load(Ordering::Relaxed)));
        assert!(!w.synchronised());
        assert!(reg.render().contains("ember_clock_synchronised 0"));
        synced.store(true, Ordering::Relaxed);
        assert!(w.check() && w.synchronised());
        assert!(reg.render().contains("ember_clock_synchronised 1"));
    }

    #[test]
    fn the_kernel_can_be_asked() {
        // Whatever this machine's state, the call works on Linux and says something.
        #[cfg(target_os = "linux")]
        assert!(kernel_synchronised().is_some());
    }
}
