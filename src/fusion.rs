//! Per-zone fusion as a pure state machine: observations and ticks go in with their time, transitions come
//! out. A zone needs `min_sources` independent kinds of evidence within its window for ALARM (smoke alone may
//! count if configured); one kind gives PRE_ALARM. ALARM latches. Lost sources give TROUBLE, never ALARM.
//! Unlike EmberEye's stateless last-writer-wins fusion, a later quiet reading cannot clear an alarm.

use std::time::Duration;
use tokio::time::Instant;

use crate::config::Config;
use crate::event::{Observation, SourceRef, Transition, ZoneState, evidence};

/// Everything a zone's rule needs, copied out of the config once.
#[derive(Debug, Clone)]
pub struct ZoneRule {
    pub vision_threshold: f32,
    pub vision_frames: u32,
    pub thermal_alarm_c: f32,
    pub min_sources: u32,
    pub window: Duration,
    pub smoke_alone_alarms: bool,
    pub auto_reset: Option<Duration>,
}

#[derive(Debug, Clone)]
struct ZoneRuntime {
    rule: ZoneRule,
    state: ZoneState,
    /// When each kind of evidence was last seen, indexed by bit position in `evidence`.
    last_seen: [Option<Instant>; 4],
    vision_score: f32,
    max_c: f32,
    rise_c_per_min: f32,
    smoke_pct: f32,
    troubled_sources: u32,
}

/// Which zones each source feeds, and per-source fixed state.
pub struct Fusion {
    zones: Vec<ZoneRuntime>,
    camera_zones: Vec<Vec<usize>>,
    device_zones: Vec<Vec<usize>>,
    /// Consecutive frames over threshold, per (camera, zone) pair in `camera_zones` order.
    streak: Vec<Vec<u32>>,
    device_smoke_pct: Vec<f32>,
}

const KINDS: [u8; 4] = [evidence::VISION, evidence::THERMAL, evidence::SMOKE, evidence::FLAME];

fn kind_index(bit: u8) -> usize {
    KINDS.iter().position(|k| *k == bit).unwrap_or(0)
}

impl Fusion {
    pub fn from_config(c: &Config) -> Self {
        let zones: Vec<ZoneRuntime> = c
            .zones
            .iter()
            .map(|z| ZoneRuntime {
                rule: ZoneRule {
                    vision_threshold: z.vision_threshold,
                    vision_frames: z.vision_frames.max(1),
                    thermal_alarm_c: z.thermal_alarm_c,
                    min_sources: z.min_sources,
                    window: Duration::from_secs_f64(z.window_secs),
                    smoke_alone_alarms: z.smoke_alone_alarms,
                    auto_reset: (z.auto_reset_secs > 0.0).then(|| Duration::from_secs_f64(z.auto_reset_secs)),
                },
                state: ZoneState::Normal,
                last_seen: [None; 4],
                vision_score: 0.0,
                max_c: f32::NAN,
                rise_c_per_min: f32::NAN,
                smoke_pct: f32::NAN,
                troubled_sources: 0,
            })
            .collect();
        let camera_zones: Vec<Vec<usize>> = c
            .cameras
            .iter()
            .map(|cam| {
                c.zones.iter().enumerate().filter(|(_, z)| z.cameras.contains(&cam.name)).map(|(i, _)| i).collect()
            })
            .collect();
        let device_zones: Vec<Vec<usize>> = c
            .sensors
            .devices
            .iter()
            .map(|d| c.zones.iter().enumerate().filter(|(_, z)| z.devices.contains(&d.name)).map(|(i, _)| i).collect())
            .collect();
        let streak = camera_zones.iter().map(|z| vec![0; z.len()]).collect();
        let device_smoke_pct = c.sensors.devices.iter().map(|d| d.smoke_alarm_pct).collect();
        Fusion { zones, camera_zones, device_zones, streak, device_smoke_pct }
    }

    pub fn state(&self, zone: usize) -> Option<ZoneState> {
        self.zones.get(zone).map(|z| z.state)
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// Applies one observation and emits any transitions it causes.
    pub fn observe(&mut self, obs: &Observation, out: &mut impl FnMut(Transition)) {
        match *obs {
            Observation::Vision(v) => {
                let Some(zones) = self.camera_zones.get(v.camera) else { return };
                for (k, &zi) in zones.iter().enumerate() {
                    let z = &mut self.zones[zi];
                    let streak = &mut self.streak[v.camera][k];
                    if v.score >= z.rule.vision_threshold {
                        *streak = streak.saturating_add(1);
                    } else {
                        *streak = 0;
                    }
                    z.vision_score = v.score;
                    if *streak >= z.rule.vision_frames {
                        z.last_seen[kind_index(evidence::VISION)] = Some(v.at);
                    }
                }
                self.settle_zones(zones.clone().into_iter(), v.at, out);
            }
            Observation::Thermal(t) => {
                let Some(zones) = self.device_zones.get(t.device) else { return };
                for &zi in zones {
                    let z = &mut self.zones[zi];
                    z.max_c = t.max_c;
                    z.rise_c_per_min = t.rise_c_per_min.unwrap_or(f32::NAN);
                    if t.max_c >= z.rule.thermal_alarm_c {
                        z.last_seen[kind_index(evidence::THERMAL)] = Some(t.at);
                    }
                }
                self.settle_zones(zones.clone().into_iter(), t.at, out);
            }
            Observation::Adc(a) => {
                let Some(zones) = self.device_zones.get(a.device) else { return };
                let limit = self.device_smoke_pct.get(a.device).copied().unwrap_or(25.0);
                for &zi in zones {
                    let z = &mut self.zones[zi];
                    if let Some(s) = a.smoke_pct {
                        z.smoke_pct = s;
                        if s >= limit {
                            z.last_seen[kind_index(evidence::SMOKE)] = Some(a.at);
                        }
                    }
                    if a.flame_digital == Some(true) {
                        z.last_seen[kind_index(evidence::FLAME)] = Some(a.at);
                    }
                }
                self.settle_zones(zones.clone().into_iter(), a.at, out);
            }
            Observation::SourceHealth { source, at, ok } => {
                let zones = match source {
                    SourceRef::Camera(i) => self.camera_zones.get(i),
                    SourceRef::Device(i) => self.device_zones.get(i),
                };
                let Some(zones) = zones.cloned() else { return };
                for &zi in &zones {
                    let z = &mut self.zones[zi];
                    z.troubled_sources = if ok { z.troubled_sources.saturating_sub(1) } else { z.troubled_sources + 1 };
                }
                self.settle_zones(zones.into_iter(), at, out);
            }
        }
    }

    /// Re-evaluates every zone at `now`, so evidence expires and latched alarms can auto-reset.
    pub fn tick(&mut self, now: Instant, out: &mut impl FnMut(Transition)) {
        self.settle_zones(0..self.zones.len(), now, out);
    }

    fn settle_zones(&mut self, zones: impl Iterator<Item = usize>, now: Instant, out: &mut impl FnMut(Transition)) {
        for zi in zones {
            let z = &mut self.zones[zi];
            let active = active_bits(z, now);
            let kinds = active.count_ones();
            let confirmed = kinds >= z.rule.min_sources || (z.rule.smoke_alone_alarms && active & evidence::SMOKE != 0);
            let next = if z.state == ZoneState::Alarm {
                let quiet_for = z.last_seen.iter().flatten().map(|t| now.saturating_duration_since(*t)).min();
                match (z.rule.auto_reset, quiet_for) {
                    (Some(limit), Some(q)) if q >= limit && kinds == 0 => base_state(z),
                    _ => ZoneState::Alarm,
                }
            } else if confirmed {
                ZoneState::Alarm
            } else if kinds > 0 {
                ZoneState::PreAlarm
            } else {
                base_state(z)
            };
            if next != z.state {
                let t = Transition {
                    zone: zi,
                    at: now,
                    from: z.state,
                    to: next,
                    sources: active | if z.troubled_sources > 0 { evidence::TROUBLE } else { 0 },
                    vision_score: z.vision_score,
                    max_c: z.max_c,
                    rise_c_per_min: z.rise_c_per_min,
                    smoke_pct: z.smoke_pct,
                    flags: 0,
                };
                z.state = next;
                out(t);
            }
        }
    }
}

fn base_state(z: &ZoneRuntime) -> ZoneState {
    if z.troubled_sources > 0 { ZoneState::Trouble } else { ZoneState::Normal }
}

fn active_bits(z: &ZoneRuntime, now: Instant) -> u8 {
    let mut bits = 0;
    for (i, seen) in z.last_seen.iter().enumerate() {
        if let Some(t) = seen
            && now.saturating_duration_since(*t) <= z.rule.window
        {
            bits |= KINDS[i];
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AdcReading, ThermalSummary, VisionScore};

    fn config() -> Config {
        let text = r#"
            [[cameras]]
            name = "cam"
            source = "replay"
            path = "builtin:demo"
            [[sensors.devices]]
            name = "dev"
            loc_id = "1234"
            [[zones]]
            name = "room"
            cameras = ["cam"]
            devices = ["dev"]
            vision_frames = 2
            auto_reset_secs = 30
        "#;
        crate::config::load_str("t.toml", text, std::path::Path::new(".")).unwrap().config
    }

    fn vision(at: Instant, score: f32) -> Observation {
        Observation::Vision(VisionScore { camera: 0, seq: 0, at, score, fire_pixels: 0, smoke_pixels: 0 })
    }

    fn thermal(at: Instant, max_c: f32) -> Observation {
        Observation::Thermal(ThermalSummary {
            device: 0,
            at,
            min_c: 20.0,
            max_c,
            mean_c: 25.0,
            hot_pixels: 0,
            rise_c_per_min: None,
        })
    }

    fn run(f: &mut Fusion, obs: &[Observation]) -> Vec<Transition> {
        let mut out = Vec::new();
        for o in obs {
            f.observe(o, &mut |t| out.push(t));
        }
        out
    }

    #[test]
    fn vision_alone_is_pre_alarm_and_needs_persistence() {
        let mut f = Fusion::from_config(&config());
        let t0 = Instant::now();
        assert!(run(&mut f, &[vision(t0, 0.9)]).is_empty(), "one frame is not enough");
        let tr = run(&mut f, &[vision(t0 + Duration::from_millis(200), 0.9)]);
        assert_eq!(tr.len(), 1);
        assert_eq!((tr[0].from, tr[0].to), (ZoneState::Normal, ZoneState::PreAlarm));
        assert_eq!(tr[0].sources, evidence::VISION);
    }

    #[test]
    fn two_kinds_alarm_and_a_quiet_reading_does_not_clear_it() {
        let mut f = Fusion::from_config(&config());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let tr = run(&mut f, &[vision(ms(0), 0.9), vision(ms(200), 0.9), thermal(ms(300), 75.0)]);
        assert_eq!(tr.last().map(|t| t.to), Some(ZoneState::Alarm));
        assert_eq!(tr.last().map(|t| t.sources), Some(evidence::VISION | evidence::THERMAL));
        // EmberEye would clear the alarm on the next quiet packet; a latched alarm stays.
        assert!(run(&mut f, &[thermal(ms(400), 20.0), vision(ms(500), 0.0)]).is_empty());
        let mut out = Vec::new();
        f.tick(ms(20_000), &mut |t| out.push(t));
        assert!(out.is_empty(), "latched until auto reset");
        f.tick(ms(31_000), &mut |t| out.push(t));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, ZoneState::Normal);
    }

    #[test]
    fn smoke_alone_alarms_when_configured() {
        let mut f = Fusion::from_config(&config());
        let at = Instant::now();
        let tr = run(
            &mut f,
            &[Observation::Adc(AdcReading {
                device: 0,
                at,
                smoke_pct: Some(40.0),
                flame_pct: None,
                flame_digital: None,
                sent_ns: 0,
            })],
        );
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].to, ZoneState::Alarm);
    }

    #[test]
    fn lost_source_is_trouble_not_alarm() {
        let mut f = Fusion::from_config(&config());
        let at = Instant::now();
        let tr = run(&mut f, &[Observation::SourceHealth { source: SourceRef::Device(0), at, ok: false }]);
        assert_eq!(tr[0].to, ZoneState::Trouble);
        let tr = run(&mut f, &[Observation::SourceHealth { source: SourceRef::Device(0), at, ok: true }]);
        assert_eq!(tr[0].to, ZoneState::Normal);
    }
}
