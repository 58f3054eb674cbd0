//! Liveness of every supervised part. A part is unhealthy when its task ended before shutdown was asked for,
//! or when it promised to beat and has not beaten recently. `/health` and the systemd watchdog read this.
//! A part in trouble (running, but something it depends on failed: the uplink's spool disk) is reported by
//! `/health` and the status page like a failing one, but does not starve the watchdog: a restart would not
//! mend a disk and would lose what the part holds in memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    Running,
    Stopped,
    Failed(String),
    /// Running, degraded: the operator must act (why).
    Trouble(String),
}

struct Part {
    name: String,
    state: PartState,
    last_beat: Instant,
    stale_after: Option<Duration>,
}

#[derive(Default)]
pub struct Health {
    parts: Mutex<Vec<Part>>,
    /// Still starting: not every listener and task is up yet, so `/health` must not say ok.
    starting: std::sync::atomic::AtomicBool,
}

/// Held by the part itself to beat and to report its end.
#[derive(Clone)]
pub struct PartHandle {
    health: Arc<Health>,
    index: usize,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// For the appliance: reports "starting" until [`Health::set_ready`], so a probe that sees ok can rely on
    /// every listener being bound.
    pub fn starting() -> Arc<Self> {
        let h = Health::default();
        h.starting.store(true, std::sync::atomic::Ordering::Relaxed);
        Arc::new(h)
    }

    pub fn set_ready(&self) {
        self.starting.store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.starting.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Part>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>, name: &str, stale_after: Option<Duration>) -> PartHandle {
        let mut parts = self.lock();
        parts.push(Part { name: name.to_owned(), state: PartState::Running, last_beat: Instant::now(), stale_after });
        PartHandle { health: Arc::clone(self), index: parts.len() - 1 }
    }

    /// Names of failing parts and parts in trouble with why, or an empty list when all is well.
    pub fn failing(&self, now: Instant) -> Vec<String> {
        self.report(now, true)
    }

    /// As `failing`, without parts that are only in trouble: what a restart could mend (the watchdog).
    pub fn dead(&self, now: Instant) -> Vec<String> {
        self.report(now, false)
    }

    fn report(&self, now: Instant, with_trouble: bool) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|p| match &p.state {
                PartState::Failed(why) => Some(format!("{} ({why})", p.name)),
                PartState::Trouble(why) if with_trouble => Some(format!("{} (trouble: {why})", p.name)),
                PartState::Trouble(_) => None,
                PartState::Running => match p.stale_after {
                    Some(limit) if now.saturating_duration_since(p.last_beat) > limit => {
                        Some(format!("{} (no progress for {:.1} s)", p.name, (now - p.last_beat).as_secs_f64()))
                    }
                    _ => None,
                },
                PartState::Stopped => None,
            })
            .collect()
    }

    pub fn states(&self) -> Vec<(String, PartState)> {
        self.lock().iter().map(|p| (p.name.clone(), p.state.clone())).collect()
    }
}

impl PartHandle {
    pub fn beat(&self) {
        if let Some(p) = self.health.lock().get_mut(self.index) {
            p.last_beat = Instant::now();
        }
    }

    pub fn set(&self, state: PartState) {
        if let Some(p) = self.health.lock().get_mut(self.index) {
            p.state = state;
        }
    }

    pub fn is_running(&self) -> bool {
        self.health.lock().get(self.index).is_some_and(|p| p.state == PartState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appliance_health_is_starting_until_ready_and_tools_are_ready_at_once() {
        let h = Health::starting();
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
        assert!(Health::new().is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_and_stale_parts_are_named() {
        let h = Health::new();
        let a = h.register("camera:front", Some(Duration::from_secs(5)));
        let b = h.register("fusion", None);
        assert!(h.failing(Instant::now()).is_empty());
        b.set(PartState::Failed("exited".into()));
        tokio::time::advance(Duration::from_secs(6)).await;
        let f = h.failing(Instant::now());
        assert_eq!(f.len(), 2);
        assert!(f[0].starts_with("camera:front (no progress"));
        assert_eq!(f[1], "fusion (exited)");
        a.beat();
        assert_eq!(h.failing(Instant::now()).len(), 1);
        // Trouble is reported, but a restart would not mend it: the watchdog keeps being fed.
        b.set(PartState::Trouble("spool disk full".into()));
        assert_eq!(h.failing(Instant::now()), ["fusion (trouble: spool disk full)"]);
        assert!(h.dead(Instant::now()).is_empty());
    }
}
