//! What the status page and `/api/status` report about zones: each zone's current state and the most recent
//! transitions (a fixed ring), recorded by the fusion task as it decides them.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::event::{Transition, ZoneState, evidence, reason};

/// Transitions kept for the page.
pub const RECENT: usize = 32;

#[derive(Debug, Clone, Copy)]
pub struct AlertRecord {
    pub zone: usize,
    pub from: ZoneState,
    pub to: ZoneState,
    pub reason: u8,
    pub sources: u8,
    /// Wall-clock time, ms since the epoch.
    pub at_ms: u64,
    pub vision_score: f32,
    pub max_c: f32,
    pub smoke_pct: f32,
}

struct Inner {
    states: Vec<ZoneState>,
    since_ms: Vec<u64>,
    /// While a zone's output delay runs: when it ends (wall clock, ms since the epoch).
    delay_until_ms: Vec<Option<u64>>,
    recent: VecDeque<AlertRecord>,
    total: u64,
}

pub struct ZoneBoard {
    pub names: Vec<String>,
    inner: Mutex<Inner>,
}

impl ZoneBoard {
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        ZoneBoard {
            names,
            inner: Mutex::new(Inner {
                states: vec![ZoneState::Normal; n],
                since_ms: vec![0; n],
                delay_until_ms: vec![None; n],
                recent: VecDeque::with_capacity(RECENT),
                total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, t: &Transition, at_ms: u64) {
        let mut g = self.lock();
        if let Some(s) = g.states.get_mut(t.zone) {
            *s = t.to;
        }
        if let Some(s) = g.since_ms.get_mut(t.zone) {
            *s = at_ms;
        }
        if g.recent.len() == RECENT {
            g.recent.pop_front();
        }
        g.recent.push_back(AlertRecord {
            zone: t.zone,
            from: t.from,
            to: t.to,
            reason: t.reason,
            sources: t.sources,
            at_ms,
            vision_score: t.vision_score,
            max_c: t.max_c,
            smoke_pct: t.smoke_pct,
        });
        g.total += 1;
    }

    /// Whether any zone's output delay runs.
    pub fn any_delay(&self) -> bool {
        self.lock().delay_until_ms.iter().any(Option::is_some)
    }

    /// Sets (`Some(end)`) or clears the zone's running output delay.
    pub fn set_delay(&self, zone: usize, until_ms: Option<u64>) {
        if let Some(d) = self.lock().delay_until_ms.get_mut(zone) {
            *d = until_ms;
        }
    }

    pub fn state(&self, zone: usize) -> Option<ZoneState> {
        self.lock().states.get(zone).copied()
    }

    /// `[{name, state, level, since_ms, delay_on, delay_until_ms}]`; `delay_on` while the zone's output delay
    /// holds its relay and siren.
    pub fn zones_json(&self) -> serde_json::Value {
        let g = self.lock();
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let s = g.states.get(i).copied().unwrap_or(ZoneState::Normal);
                let delay = g.delay_until_ms.get(i).copied().flatten();
                serde_json::json!({"name": n, "state": s.label(), "level": s.level(),
                    "since_ms": g.since_ms.get(i).copied().unwrap_or(0),
                    "delay_on": delay.is_some(), "delay_until_ms": delay})
            })
            .collect()
    }

    /// The recent transitions, newest first.
    pub fn alerts_json(&self) -> serde_json::Value {
        let g = self.lock();
        let num = |v: f32| {
            if v.is_finite() { serde_json::json!((v * 100.0).round() / 100.0) } else { serde_json::Value::Null }
        };
        g.recent
            .iter()
            .rev()
            .map(|a| {
                serde_json::json!({
                    "zone": self.names.get(a.zone).map(String::as_str).unwrap_or("?"),
                    "from": a.from.label(), "to": a.to.label(), "reason": reason::label(a.reason),
                    "evidence": evidence::names(a.sources).collect::<Vec<_>>(), "at_ms": a.at_ms,
                    "vision_score": num(a.vision_score), "max_c": num(a.max_c), "smoke_pct": num(a.smoke_pct),
                })
            })
            .collect()
    }

    pub fn transitions(&self) -> u64 {
        self.lock().total
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(zone: usize, to: ZoneState) -> Transition {
        Transition {
            zone,
            at: tokio::time::Instant::now(),
            from: ZoneState::Normal,
            to,
            sources: evidence::SMOKE,
            vision_score: 0.1,
            max_c: f32::NAN,
            rise_c_per_min: f32::NAN,
            smoke_pct: 30.0,
            operator: false,
            test: false,
            reason: reason::SMOKE_ALONE,
            vision_frame: None,
            thermal_device: None,
            event_id: None,
        }
    }

    #[test]
    fn states_follow_transitions_and_the_ring_keeps_the_newest() {
        let b = ZoneBoard::new(vec!["a".into(), "b".into()]);
        b.record(&t(1, ZoneState::Alarm), 5);
        assert_eq!(b.state(1), Some(ZoneState::Alarm));
        let z = b.zones_json();
        assert_eq!(z[1]["state"], "alarm");
        assert_eq!(z[0]["state"], "normal");
        assert_eq!(z[1]["delay_on"], false);
        b.set_delay(1, Some(99));
        assert_eq!(
            (b.zones_json()[1]["delay_on"].clone(), b.zones_json()[1]["delay_until_ms"].clone()),
            (true.into(), 99.into())
        );
        b.set_delay(1, None);
        assert_eq!(b.zones_json()[1]["delay_on"], false);
        for i in 0..RECENT + 5 {
            b.record(&t(0, ZoneState::PreAlarm), i as u64);
        }
        let a = b.alerts_json();
        assert_eq!(a.as_array().unwrap().len(), RECENT);
        assert_eq!(a[0]["at_ms"], (RECENT + 4) as u64, "newest first");
        assert_eq!(a[0]["reason"], "smoke_alone");
        assert_eq!(a[0]["max_c"], serde_json::Value::Null);
        assert_eq!(b.transitions(), RECENT as u64 + 6);
    }
}
