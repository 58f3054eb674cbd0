//! Per-zone fusion as a pure state machine: observations, operator commands and ticks go in with their time;
//! transitions come out, each with the evidence and the reason behind it (the decision trace in every alert).
//!
//! Evidence kinds are vision, thermal, smoke and flame, each counted only after its own persistence (frames or
//! readings in a row). ALARM needs `min_sources` kinds within `window_secs`, or smoke alone (if configured),
//! or critical heat alone; a camera alone gives PRE_ALARM unless `vision_alone_alarms`. ALARM latches: an
//! operator acknowledges (siren to a reminder), silences (siren off, relay on) and resets it; new evidence
//! while acknowledged or silenced re-sounds. Lost or faulty sources give TROUBLE, never ALARM. TEST drives
//! the outputs on an operator's request and yields to a real alarm. Unlike EmberEye's stateless
//! last-writer-wins fusion, no later quiet reading can clear an alarm. `task` is the IO loop around it.
//!
//! Two options of fire panels, per zone, both off by default. Alarm verification (UL 864): a detection that
//! would alarm instead starts a retard/reset period (PRE_ALARM, reason `verification_start`) in which evidence
//! does not count, then a confirmation window in which a second detection latches ALARM
//! (`verification_confirmed`); without one the zone returns to normal (`verification_timeout`). Critical heat
//! bypasses it, and an operator's test never goes through it. Output delay (EN 54-2 §7.11): ALARM is decided
//! and sent at once, but the relay and siren are held (`delay_running`) until the delay expires, a long press
//! or `CutDelay` cuts it, or critical heat appears. Delay changes come out as `Note`s, which the task logs.

mod task;

pub use task::{FusionMetrics, FusionTask};

use std::time::Duration;
use tokio::time::Instant;

use crate::config::Config;
use crate::event::{FrameRef, Observation, OperatorCmd, SourceRef, Transition, ZoneState, evidence, reason};

/// Everything a zone's rule needs, copied out of the config once.
#[derive(Debug, Clone)]
pub struct ZoneRule {
    pub vision_threshold: f32,
    pub vision_frames: u32,
    pub thermal_alarm_c: f32,
    pub thermal_frames: u32,
    pub rise_alarm_c_per_min: f32,
    pub rise_min_pixels: u16,
    pub thermal_critical_c: f32,
    pub smoke_readings: u32,
    pub min_sources: u32,
    pub window: Duration,
    pub smoke_alone_alarms: bool,
    pub vision_alone_alarms: bool,
    pub auto_reset: Option<Duration>,
    pub verification: Option<Verification>,
    pub output_delay: Option<Duration>,
}

/// UL 864 alarm verification of one zone.
#[derive(Debug, Clone, Copy)]
pub struct Verification {
    /// Evidence seen during this, from the first detection, does not count: the detector is being reset.
    pub retard: Duration,
    /// After the retard: a second detection in this window latches ALARM.
    pub confirm: Duration,
}

/// A change of a zone's output delay, for the event log and the status page (not a state change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub zone: usize,
    pub at: Instant,
    pub what: NoteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The zone alarmed with outputs held until `at + delay`.
    DelayOn(Duration),
    /// An operator (long press, `cut-delay`) ended the delay early.
    DelayCutByOperator,
    /// Critical heat ended the delay early.
    DelayCutByCriticalHeat,
    /// The delay ran out: outputs on.
    DelayExpired,
    /// The alarm was reset or auto-reset while the delay ran: the outputs were never driven.
    DelayCleared,
}

impl NoteKind {
    pub fn label(self) -> &'static str {
        match self {
            NoteKind::DelayOn(_) => "delay on",
            NoteKind::DelayCutByOperator => "delay cut by operator",
            NoteKind::DelayCutByCriticalHeat => "delay cut by critical heat",
            NoteKind::DelayExpired => "delay expired",
            NoteKind::DelayCleared => "delay cleared by reset",
        }
    }
}

/// Notes held between two drains; the task drains after every observation or tick, so a handful suffices.
const NOTES_CAP: usize = 64;

const KINDS: [u8; 4] = [evidence::VISION, evidence::THERMAL, evidence::SMOKE, evidence::FLAME];

fn kind_index(bit: u8) -> usize {
    KINDS.iter().position(|k| *k == bit).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct ZoneRuntime {
    rule: ZoneRule,
    state: ZoneState,
    /// When each kind of evidence was last confirmed, indexed like `KINDS`.
    last_seen: [Option<Instant>; 4],
    critical_seen: Option<Instant>,
    /// Evidence kinds present when the alarm was last acknowledged or silenced, to notice escalation.
    handled_kinds: u8,
    vision_score: f32,
    /// The newest frame that confirmed vision evidence.
    vision_frame: Option<FrameRef>,
    /// The device whose frames last confirmed thermal evidence.
    thermal_device: Option<usize>,
    max_c: f32,
    rise_c_per_min: f32,
    smoke_pct: f32,
    troubled_sources: u32,
    /// When the running verification started (its first detection).
    verify_started: Option<Instant>,
    /// Evidence last seen at or before this does not count: set to the end of a verification's retard (so
    /// with a retard of 0 the first detection still cannot confirm itself).
    evidence_floor: Option<Instant>,
    /// While set, the zone's ALARM holds its outputs until then.
    delay_until: Option<Instant>,
}

/// Consecutive-reading counters of one source for one zone.
#[derive(Debug, Clone, Copy, Default)]
struct Streaks {
    vision: u32,
    thermal: u32,
    smoke: u32,
}

pub struct Fusion {
    zones: Vec<ZoneRuntime>,
    camera_zones: Vec<Vec<usize>>,
    device_zones: Vec<Vec<usize>>,
    /// Per source, per zone it feeds (same order as `camera_zones` / `device_zones`).
    camera_streaks: Vec<Vec<Streaks>>,
    device_streaks: Vec<Vec<Streaks>>,
    device_smoke_pct: Vec<f32>,
    notes: Vec<Note>,
    notes_dropped: u64,
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
                    thermal_frames: z.thermal_frames.max(1),
                    rise_alarm_c_per_min: z.rise_alarm_c_per_min,
                    rise_min_pixels: z.rise_min_pixels,
                    thermal_critical_c: z.thermal_critical_c,
                    smoke_readings: z.smoke_readings.max(1),
                    min_sources: z.min_sources,
                    window: Duration::from_secs_f64(z.window_secs),
                    smoke_alone_alarms: z.smoke_alone_alarms,
                    vision_alone_alarms: z.vision_alone_alarms,
                    auto_reset: (z.auto_reset_secs > 0.0).then(|| Duration::from_secs_f64(z.auto_reset_secs)),
                    verification: z.verification.then(|| Verification {
                        retard: Duration::from_secs_f64(z.verification_retard_secs),
                        confirm: Duration::from_secs_f64(z.verification_confirm_secs),
                    }),
                    output_delay: (z.output_delay_secs > 0.0).then(|| Duration::from_secs_f64(z.output_delay_secs)),
                },
                state: ZoneState::Normal,
                last_seen: [None; 4],
                critical_seen: None,
                handled_kinds: 0,
                vision_score: 0.0,
                vision_frame: None,
                thermal_device: None,
                max_c: f32::NAN,
                rise_c_per_min: f32::NAN,
                smoke_pct: f32::NAN,
                troubled_sources: 0,
                verify_started: None,
                evidence_floor: None,
                delay_until: None,
            })
            .collect();
        let zones_of = |pred: &dyn Fn(&crate::config::Zone) -> bool| -> Vec<usize> {
            c.zones.iter().enumerate().filter(|(_, z)| pred(z)).map(|(i, _)| i).collect()
        };
        let camera_zones: Vec<Vec<usize>> =
            c.cameras.iter().map(|cam| zones_of(&|z| z.cameras.contains(&cam.name))).collect();
        let device_zones: Vec<Vec<usize>> =
            c.sensors.devices.iter().map(|d| zones_of(&|z| z.devices.contains(&d.name))).collect();
        let camera_streaks = camera_zones.iter().map(|z| vec![Streaks::default(); z.len()]).collect();
        let device_streaks = device_zones.iter().map(|z| vec![Streaks::default(); z.len()]).collect();
        let device_smoke_pct = c.sensors.devices.iter().map(|d| d.smoke_alarm_pct).collect();
        Fusion {
            zones,
            camera_zones,
            device_zones,
            camera_streaks,
            device_streaks,
            device_smoke_pct,
            notes: Vec::with_capacity(NOTES_CAP),
            notes_dropped: 0,
        }
    }

    /// Whether the zone's output delay is running: ALARM decided, relay and siren held.
    pub fn delay_running(&self, zone: usize) -> bool {
        self.zones.get(zone).is_some_and(|z| z.delay_until.is_some())
    }

    /// Hands out the delay notes made since the last call, oldest first.
    pub fn drain_notes(&mut self, mut f: impl FnMut(Note)) {
        for n in self.notes.drain(..) {
            f(n);
        }
    }

    /// Notes dropped because nobody drained them (a bug in the loop around fusion, never expected).
    pub fn notes_dropped(&self) -> u64 {
        self.notes_dropped
    }

    fn note(&mut self, zone: usize, at: Instant, what: NoteKind) {
        if self.notes.len() < NOTES_CAP {
            self.notes.push(Note { zone, at, what });
        } else {
            self.notes_dropped += 1;
        }
    }

    pub fn state(&self, zone: usize) -> Option<ZoneState> {
        self.zones.get(zone).map(|z| z.state)
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// Applies one observation or command and emits any transitions it causes.
    pub fn observe(&mut self, obs: &Observation, out: &mut impl FnMut(Transition)) {
        match *obs {
            Observation::Vision(v) => {
                let Some(zones) = self.camera_zones.get(v.camera) else { return };
                for (k, &zi) in zones.iter().enumerate() {
                    let z = &mut self.zones[zi];
                    let s = &mut self.camera_streaks[v.camera][k];
                    s.vision = if v.score >= z.rule.vision_threshold { s.vision.saturating_add(1) } else { 0 };
                    z.vision_score = v.score;
                    if s.vision >= z.rule.vision_frames {
                        z.last_seen[kind_index(evidence::VISION)] = Some(v.at);
                        z.vision_frame = Some(FrameRef { camera: v.camera, frame: v.frame });
                    }
                }
                self.settle_zones(v.camera, true, v.at, out);
            }
            Observation::Thermal(t) => {
                let Some(zones) = self.device_zones.get(t.device) else { return };
                for (k, &zi) in zones.iter().enumerate() {
                    let z = &mut self.zones[zi];
                    let s = &mut self.device_streaks[t.device][k];
                    z.max_c = t.max_c;
                    z.rise_c_per_min = t.rise_c_per_min.unwrap_or(f32::NAN);
                    let rising = z.rule.rise_alarm_c_per_min > 0.0
                        && t.hot_pixels >= z.rule.rise_min_pixels
                        && t.rise_c_per_min.is_some_and(|r| r >= z.rule.rise_alarm_c_per_min);
                    s.thermal =
                        if t.max_c >= z.rule.thermal_alarm_c || rising { s.thermal.saturating_add(1) } else { 0 };
                    if s.thermal >= z.rule.thermal_frames {
                        z.last_seen[kind_index(evidence::THERMAL)] = Some(t.at);
                        z.thermal_device = Some(t.device);
                    }
                    if t.max_c >= z.rule.thermal_critical_c {
                        z.critical_seen = Some(t.at);
                        z.thermal_device = Some(t.device);
                    }
                }
                self.settle_zones(t.device, false, t.at, out);
            }
            Observation::Adc(a) => {
                let Some(zones) = self.device_zones.get(a.device) else { return };
                let limit = self.device_smoke_pct.get(a.device).copied().unwrap_or(25.0);
                for (k, &zi) in zones.iter().enumerate() {
                    let z = &mut self.zones[zi];
                    let s = &mut self.device_streaks[a.device][k];
                    if let Some(p) = a.smoke_pct {
                        z.smoke_pct = p;
                        s.smoke = if p >= limit { s.smoke.saturating_add(1) } else { 0 };
                        if s.smoke >= z.rule.smoke_readings {
                            z.last_seen[kind_index(evidence::SMOKE)] = Some(a.at);
                        }
                    }
                    if a.flame_digital == Some(true) {
                        z.last_seen[kind_index(evidence::FLAME)] = Some(a.at);
                    }
                }
                self.settle_zones(a.device, false, a.at, out);
            }
            Observation::SourceHealth { source, at, ok } => {
                let (idx, camera) = match source {
                    SourceRef::Camera(i) => (i, true),
                    SourceRef::Device(i) => (i, false),
                };
                let zones = if camera { self.camera_zones.get(idx) } else { self.device_zones.get(idx) };
                for &zi in zones.into_iter().flatten() {
                    let z = &mut self.zones[zi];
                    z.troubled_sources = if ok { z.troubled_sources.saturating_sub(1) } else { z.troubled_sources + 1 };
                }
                self.settle_zones(idx, camera, at, out);
            }
            Observation::Operator { zone, cmd, at } => {
                let range = match zone {
                    Some(z) if z < self.zones.len() => z..z + 1,
                    Some(_) => 0..0,
                    None => 0..self.zones.len(),
                };
                // A long press while any of its zones holds its outputs cuts those delays and nothing else:
                // the person at the panel wants the outputs now, not the other alarms reset.
                let cmd = match cmd {
                    OperatorCmd::LongPress if range.clone().any(|zi| self.zones[zi].delay_until.is_some()) => {
                        OperatorCmd::CutDelay
                    }
                    OperatorCmd::LongPress => OperatorCmd::Reset,
                    c => c,
                };
                for zi in range {
                    self.operator(zi, cmd, at, out);
                }
            }
        }
    }

    /// Re-evaluates every zone at `now`, so evidence expires and alarms can auto-reset.
    pub fn tick(&mut self, now: Instant, out: &mut impl FnMut(Transition)) {
        for zi in 0..self.zones.len() {
            self.settle(zi, now, out);
        }
    }

    fn settle_zones(&mut self, source: usize, camera: bool, now: Instant, out: &mut impl FnMut(Transition)) {
        let zones = if camera { self.camera_zones.get(source) } else { self.device_zones.get(source) };
        let n = zones.map_or(0, Vec::len);
        for k in 0..n {
            let zi = if camera { self.camera_zones[source][k] } else { self.device_zones[source][k] };
            self.settle(zi, now, out);
        }
    }

    fn emit(
        z: &mut ZoneRuntime,
        zi: usize,
        now: Instant,
        to: ZoneState,
        why: u8,
        operator: bool,
        out: &mut impl FnMut(Transition),
    ) {
        if to == z.state {
            return;
        }
        Self::emit_always(z, zi, now, to, why, operator, out);
    }

    /// As `emit`, also when the state stays (verification start from PRE_ALARM is still worth recording).
    fn emit_always(
        z: &mut ZoneRuntime,
        zi: usize,
        now: Instant,
        to: ZoneState,
        why: u8,
        operator: bool,
        out: &mut impl FnMut(Transition),
    ) {
        let active = active_bits(z, now);
        let t = Transition {
            zone: zi,
            at: now,
            from: z.state,
            to,
            sources: active | if z.troubled_sources > 0 { evidence::TROUBLE } else { 0 },
            vision_score: z.vision_score,
            max_c: z.max_c,
            rise_c_per_min: z.rise_c_per_min,
            smoke_pct: z.smoke_pct,
            operator,
            test: to == ZoneState::Test || z.state == ZoneState::Test,
            reason: why,
            vision_frame: if active & evidence::VISION != 0 { z.vision_frame } else { None },
            thermal_device: if active & evidence::THERMAL != 0 { z.thermal_device } else { None },
            event_id: None,
        };
        z.state = to;
        out(t);
    }

    fn settle(&mut self, zi: usize, now: Instant, out: &mut impl FnMut(Transition)) {
        let delay_change = self.settle_state(zi, now, out);
        if let Some(what) = delay_change {
            self.note(zi, now, what);
        }
    }

    /// `settle` without the notes: returns the change of the zone's output delay, if any.
    fn settle_state(&mut self, zi: usize, now: Instant, out: &mut impl FnMut(Transition)) -> Option<NoteKind> {
        let z = &mut self.zones[zi];
        let active = active_bits(z, now);
        let kinds = active.count_ones();
        let critical = z.critical_seen.is_some_and(|t| now.saturating_duration_since(t) <= z.rule.window);
        let vision_only = active == evidence::VISION;
        let confirmed = if critical {
            Some(reason::CRITICAL_HEAT)
        } else if kinds >= z.rule.min_sources && (!vision_only || z.rule.vision_alone_alarms) {
            Some(if vision_only { reason::VISION_ALONE } else { reason::K_OF_N })
        } else if z.rule.smoke_alone_alarms && active & evidence::SMOKE != 0 {
            Some(reason::SMOKE_ALONE)
        } else {
            None
        };
        let base = if z.troubled_sources > 0 { ZoneState::Trouble } else { ZoneState::Normal };
        let mut delay_change = None;
        if let Some(until) = z.delay_until {
            if critical {
                z.delay_until = None;
                delay_change = Some(NoteKind::DelayCutByCriticalHeat);
            } else if now >= until {
                z.delay_until = None;
                delay_change = Some(NoteKind::DelayExpired);
            }
        }
        match z.state {
            s if s.is_alarm() => {
                if matches!(s, ZoneState::Acknowledged | ZoneState::Silenced)
                    && active & !z.handled_kinds != 0
                    && confirmed.is_some()
                {
                    z.handled_kinds = active;
                    Self::emit(z, zi, now, ZoneState::Alarm, reason::ESCALATION, false, out);
                    return delay_change;
                }
                let quiet_for = z
                    .last_seen
                    .iter()
                    .chain([&z.critical_seen])
                    .flatten()
                    .map(|t| now.saturating_duration_since(*t))
                    .min();
                if let (Some(limit), Some(q)) = (z.rule.auto_reset, quiet_for)
                    && q >= limit
                    && kinds == 0
                    && !critical
                {
                    Self::emit(z, zi, now, base, reason::AUTO_RESET, false, out);
                    if z.delay_until.take().is_some() {
                        delay_change = Some(NoteKind::DelayCleared);
                    }
                }
            }
            ZoneState::Test => {
                // A real fire during a test is an alarm, not part of the test: neither verified nor delayed,
                // as the outputs are already on.
                if let Some(why) = confirmed {
                    Self::emit(z, zi, now, ZoneState::Alarm, why, false, out);
                }
            }
            _ => {
                if let (Some(started), Some(v)) = (z.verify_started, z.rule.verification) {
                    let retard_end = started + v.retard;
                    let (to, why) = match confirmed {
                        // Critical heat never waits for verification.
                        Some(reason::CRITICAL_HEAT) => (ZoneState::Alarm, reason::CRITICAL_HEAT),
                        // During the retard nothing counts (the floor hides it); after it, a detection confirms.
                        Some(_) if now >= retard_end => (ZoneState::Alarm, reason::VERIFY_CONFIRMED),
                        _ if now >= retard_end + v.confirm => (base, reason::VERIFY_TIMEOUT),
                        _ => return delay_change,
                    };
                    z.verify_started = None;
                    Self::emit_always(z, zi, now, to, why, false, out);
                    if to == ZoneState::Alarm {
                        return Self::start_delay(z, now, why).or(delay_change);
                    }
                    return delay_change;
                }
                let (to, why) = match confirmed {
                    Some(why) => (ZoneState::Alarm, why),
                    None if kinds > 0 => (ZoneState::PreAlarm, reason::SINGLE_SOURCE),
                    None if base == ZoneState::Trouble => (base, reason::SOURCE_TROUBLE),
                    None if z.state == ZoneState::Trouble => (base, reason::SOURCE_RESTORED),
                    None => (base, reason::EVIDENCE_CLEARED),
                };
                if to == ZoneState::Alarm
                    && why != reason::CRITICAL_HEAT
                    && let Some(v) = z.rule.verification
                {
                    // The first detection: reset the detector (forget what it said) and wait out the retard.
                    z.verify_started = Some(now);
                    z.evidence_floor = Some(now + v.retard);
                    Self::emit_always(z, zi, now, ZoneState::PreAlarm, reason::VERIFY_START, false, out);
                    return delay_change;
                }
                Self::emit(z, zi, now, to, why, false, out);
                if to == ZoneState::Alarm {
                    return Self::start_delay(z, now, why).or(delay_change);
                }
            }
        }
        delay_change
    }

    /// A zone has just entered ALARM for `why`: holds its outputs for the configured delay, unless the cause is
    /// critical heat (never delayed).
    fn start_delay(z: &mut ZoneRuntime, now: Instant, why: u8) -> Option<NoteKind> {
        let d = z.rule.output_delay?;
        if why == reason::CRITICAL_HEAT {
            return None;
        }
        z.delay_until = Some(now + d);
        Some(NoteKind::DelayOn(d))
    }

    fn operator(&mut self, zi: usize, cmd: OperatorCmd, now: Instant, out: &mut impl FnMut(Transition)) {
        if cmd == OperatorCmd::CutDelay {
            if self.zones[zi].delay_until.take().is_some() {
                self.note(zi, now, NoteKind::DelayCutByOperator);
            }
            return;
        }
        let z = &mut self.zones[zi];
        let base = if z.troubled_sources > 0 { ZoneState::Trouble } else { ZoneState::Normal };
        let cmd = match (cmd, z.state) {
            (OperatorCmd::Button, ZoneState::Acknowledged) => OperatorCmd::Silence,
            (OperatorCmd::Button, _) => OperatorCmd::Acknowledge,
            (c, _) => c,
        };
        match (cmd, z.state) {
            (OperatorCmd::Acknowledge, ZoneState::Alarm) => {
                z.handled_kinds = active_bits(z, now);
                Self::emit(z, zi, now, ZoneState::Acknowledged, reason::OPERATOR_ACK, true, out);
            }
            (OperatorCmd::Silence, ZoneState::Alarm | ZoneState::Acknowledged) => {
                z.handled_kinds |= active_bits(z, now);
                Self::emit(z, zi, now, ZoneState::Silenced, reason::OPERATOR_SILENCE, true, out);
            }
            (OperatorCmd::Reset, s) if s.is_alarm() || s == ZoneState::PreAlarm => {
                // Forget the evidence: only what the sources report from now on can raise the zone again.
                z.last_seen = [None; 4];
                z.critical_seen = None;
                z.handled_kinds = 0;
                z.verify_started = None;
                z.evidence_floor = None;
                let cleared = z.delay_until.take().is_some();
                Self::emit(z, zi, now, base, reason::OPERATOR_RESET, true, out);
                if cleared {
                    self.note(zi, now, NoteKind::DelayCleared);
                }
            }
            (OperatorCmd::TestStart, ZoneState::Normal | ZoneState::Trouble | ZoneState::PreAlarm) => {
                // An operator's test is never verified: a running verification ends with it.
                z.verify_started = None;
                Self::emit(z, zi, now, ZoneState::Test, reason::TEST_START, true, out);
            }
            (OperatorCmd::TestEnd, ZoneState::Test) => {
                Self::emit(z, zi, now, base, reason::TEST_END, true, out);
                self.settle(zi, now, out);
            }
            _ => {}
        }
    }
}

fn active_bits(z: &ZoneRuntime, now: Instant) -> u8 {
    let mut bits = 0;
    for (i, seen) in z.last_seen.iter().enumerate() {
        if let Some(t) = seen
            && now.saturating_duration_since(*t) <= z.rule.window
            && z.evidence_floor.is_none_or(|f| *t > f)
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
    use crate::uplink::wire::flags;

    /// The flags byte the wire encoder makes of a transition.
    fn wire_flags(t: &Transition) -> u8 {
        crate::uplink::alert(0, 0, 0, "room", t).flags
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
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
            thermal_frames = 1
            {extra}
        "#
        );
        crate::config::load_str("t.toml", &text, std::path::Path::new(".")).unwrap().config
    }

    fn vision(at: Instant, score: f32) -> Observation {
        vision_frame(at, score, 0)
    }

    fn vision_frame(at: Instant, score: f32, frame: u64) -> Observation {
        Observation::Vision(VisionScore { camera: 0, frame, at, score })
    }

    fn thermal_full(at: Instant, max_c: f32, hot_pixels: u16, rise: Option<f32>) -> Observation {
        Observation::Thermal(ThermalSummary {
            device: 0,
            at,
            min_c: 20.0,
            max_c,
            mean_c: 25.0,
            hot_pixels,
            rise_c_per_min: rise,
        })
    }

    fn thermal(at: Instant, max_c: f32) -> Observation {
        thermal_full(at, max_c, 0, None)
    }

    fn smoke(at: Instant, pct: f32) -> Observation {
        Observation::Adc(AdcReading {
            device: 0,
            at,
            smoke_pct: Some(pct),
            flame_pct: None,
            flame_digital: None,
            sent_ns: 0,
        })
    }

    fn op(at: Instant, cmd: OperatorCmd) -> Observation {
        Observation::Operator { zone: Some(0), cmd, at }
    }

    fn run(f: &mut Fusion, obs: &[Observation]) -> Vec<Transition> {
        let mut out = Vec::new();
        for o in obs {
            f.observe(o, &mut |t| out.push(t));
        }
        out
    }

    fn states(tr: &[Transition]) -> Vec<(ZoneState, u8)> {
        tr.iter().map(|t| (t.to, t.reason)).collect()
    }

    #[test]
    fn vision_alone_is_pre_alarm_even_with_one_source_needed() {
        let mut f = Fusion::from_config(&config("min_sources = 1"));
        let t0 = Instant::now();
        assert!(run(&mut f, &[vision(t0, 0.9)]).is_empty(), "one frame is not enough");
        let tr = run(&mut f, &[vision(t0 + Duration::from_millis(200), 0.9)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::SINGLE_SOURCE)]);
        let mut f = Fusion::from_config(&config("min_sources = 1\nvision_alone_alarms = true"));
        let tr = run(&mut f, &[vision(t0, 0.9), vision(t0, 0.9)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::VISION_ALONE)]);
    }

    #[test]
    fn a_vision_decision_names_the_frame_that_confirmed_it() {
        let mut f = Fusion::from_config(&config("min_sources = 1\nvision_alone_alarms = true"));
        let t0 = Instant::now();
        let tr = run(&mut f, &[vision_frame(t0, 0.9, 41), vision_frame(t0, 0.9, 42)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::VISION_ALONE)]);
        assert_eq!(tr[0].vision_frame, Some(FrameRef { camera: 0, frame: 42 }));
        // A later frame below the threshold confirms nothing: a thermal escalation still names frame 42.
        let tr = run(&mut f, &[vision_frame(t0, 0.1, 43), op(t0, OperatorCmd::Acknowledge), thermal(t0, 80.0)]);
        assert_eq!(
            states(&tr),
            [(ZoneState::Acknowledged, reason::OPERATOR_ACK), (ZoneState::Alarm, reason::ESCALATION)]
        );
        assert_eq!(tr[1].vision_frame, Some(FrameRef { camera: 0, frame: 42 }));
        // Without vision among the evidence there is no frame to name.
        let mut f = Fusion::from_config(&config(""));
        let tr = run(&mut f, &[vision_frame(t0, 0.9, 7), thermal(t0, 130.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);
        assert_eq!(tr[0].vision_frame, None);
    }

    #[test]
    fn two_kinds_alarm_and_a_quiet_reading_does_not_clear_it() {
        let mut f = Fusion::from_config(&config("auto_reset_secs = 30"));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let tr = run(&mut f, &[vision(ms(0), 0.9), vision(ms(200), 0.9), thermal(ms(300), 75.0)]);
        assert_eq!(
            tr.last().map(|t| (t.to, t.reason, t.sources)),
            Some((ZoneState::Alarm, reason::K_OF_N, evidence::VISION | evidence::THERMAL))
        );
        assert_eq!(tr.last().map(|t| wire_flags(t) >> 2), Some(reason::K_OF_N), "the reason travels in the flags byte");
        // EmberEye would clear the alarm on the next quiet packet; a latched alarm stays.
        assert!(run(&mut f, &[thermal(ms(400), 20.0), vision(ms(500), 0.0)]).is_empty());
        let mut out = Vec::new();
        f.tick(ms(20_000), &mut |t| out.push(t));
        assert!(out.is_empty(), "latched until auto reset");
        f.tick(ms(31_000), &mut |t| out.push(t));
        assert_eq!(states(&out), [(ZoneState::Normal, reason::AUTO_RESET)]);
    }

    #[test]
    fn acknowledge_silence_escalate_reset() {
        let mut f = Fusion::from_config(&config("smoke_readings = 1"));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        run(&mut f, &[vision(ms(0), 0.9), vision(ms(100), 0.9), thermal(ms(200), 80.0)]);
        assert_eq!(f.state(0), Some(ZoneState::Alarm));
        let tr = run(&mut f, &[op(ms(1000), OperatorCmd::Acknowledge)]);
        assert_eq!(states(&tr), [(ZoneState::Acknowledged, reason::OPERATOR_ACK)]);
        assert!(tr[0].operator && !tr[0].test);
        assert_ne!(wire_flags(&tr[0]) & flags::OPERATOR, 0);
        // The same evidence again does not re-sound; a new kind (smoke) does.
        assert!(run(&mut f, &[thermal(ms(1500), 85.0)]).is_empty());
        let tr = run(&mut f, &[smoke(ms(2000), 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::ESCALATION)]);
        let tr = run(&mut f, &[op(ms(2500), OperatorCmd::Silence)]);
        assert_eq!(states(&tr), [(ZoneState::Silenced, reason::OPERATOR_SILENCE)]);
        let tr = run(&mut f, &[op(ms(3000), OperatorCmd::Reset)]);
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::OPERATOR_RESET)]);
        // After a reset only new reports count; the fire is still there, so it comes straight back.
        let tr = run(&mut f, &[thermal(ms(3500), 90.0), smoke(ms(3600), 45.0)]);
        assert_eq!(tr.last().map(|t| t.to), Some(ZoneState::Alarm));
    }

    #[test]
    fn critical_heat_alarms_alone_and_rate_of_rise_counts_as_thermal() {
        let mut f = Fusion::from_config(&config(""));
        let t0 = Instant::now();
        let tr = run(&mut f, &[thermal(t0, 130.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);

        let mut f = Fusion::from_config(&config(""));
        let tr = run(&mut f, &[thermal_full(t0, 45.0, 1, Some(30.0))]);
        assert!(tr.is_empty(), "a single rising pixel is noise");
        let tr = run(&mut f, &[thermal_full(t0, 45.0, 6, Some(30.0))]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::SINGLE_SOURCE)]);
        assert_eq!(tr[0].sources, evidence::THERMAL);
    }

    #[test]
    fn test_mode_drives_outputs_and_yields_to_a_real_alarm() {
        let mut f = Fusion::from_config(&config(""));
        let t0 = Instant::now();
        let tr = run(&mut f, &[op(t0, OperatorCmd::TestStart)]);
        assert_eq!(states(&tr), [(ZoneState::Test, reason::TEST_START)]);
        assert!(tr[0].operator && tr[0].test);
        assert_ne!(wire_flags(&tr[0]) & flags::TEST, 0);
        let tr = run(&mut f, &[op(t0, OperatorCmd::TestEnd)]);
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::TEST_END)]);
        run(&mut f, &[op(t0, OperatorCmd::TestStart)]);
        let tr = run(&mut f, &[thermal(t0, 150.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);
        assert!(run(&mut f, &[op(t0, OperatorCmd::TestStart)]).is_empty(), "no test during an alarm");
    }

    #[test]
    fn smoke_needs_its_persistence_then_alarms_alone() {
        let mut f = Fusion::from_config(&config("smoke_readings = 2"));
        let at = Instant::now();
        assert!(run(&mut f, &[smoke(at, 40.0)]).is_empty());
        assert!(run(&mut f, &[smoke(at, 10.0), smoke(at, 40.0)]).is_empty(), "a dip restarts the count");
        let tr = run(&mut f, &[smoke(at, 41.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::SMOKE_ALONE)]);
    }

    #[test]
    fn lost_source_is_trouble_not_alarm() {
        let mut f = Fusion::from_config(&config(""));
        let at = Instant::now();
        let tr = run(&mut f, &[Observation::SourceHealth { source: SourceRef::Device(0), at, ok: false }]);
        assert_eq!(states(&tr), [(ZoneState::Trouble, reason::SOURCE_TROUBLE)]);
        let tr = run(&mut f, &[Observation::SourceHealth { source: SourceRef::Device(0), at, ok: true }]);
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::SOURCE_RESTORED)]);
    }

    fn smoke_zone(extra: &str) -> Fusion {
        Fusion::from_config(&config(&format!("smoke_readings = 1\n{extra}")))
    }

    fn tick(f: &mut Fusion, at: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        f.tick(at, &mut |t| out.push(t));
        out
    }

    fn notes(f: &mut Fusion) -> Vec<NoteKind> {
        let mut v = Vec::new();
        f.drain_notes(|n| v.push(n.what));
        v
    }

    const VERIFY: &str = "verification = true\nverification_retard_secs = 30\nverification_confirm_secs = 60";

    #[test]
    fn verification_first_detection_waits_out_the_retard_then_a_second_confirms() {
        let mut f = smoke_zone(VERIFY);
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        // First detection: no alarm, the verification starts (and is recorded).
        let tr = run(&mut f, &[smoke(t0, 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::VERIFY_START)]);
        // During the retard the detector is being reset: a detection then does not count.
        assert!(run(&mut f, &[smoke(s(10), 40.0), smoke(s(29), 40.0)]).is_empty());
        assert!(tick(&mut f, s(30)).is_empty(), "what was seen during the retard does not confirm");
        // A second detection in the confirmation window latches the alarm.
        let tr = run(&mut f, &[smoke(s(45), 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::VERIFY_CONFIRMED)]);
        assert_eq!(tr[0].sources & evidence::SMOKE, evidence::SMOKE);
        // Latched as ever: no timeout afterwards.
        assert!(tick(&mut f, s(200)).is_empty());
        assert_eq!(f.state(0), Some(ZoneState::Alarm));
    }

    #[test]
    fn with_no_retard_the_first_detection_still_needs_a_second() {
        let mut f = smoke_zone("verification = true\nverification_retard_secs = 0");
        let t0 = Instant::now();
        let tr = run(&mut f, &[smoke(t0, 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::VERIFY_START)]);
        assert!(tick(&mut f, t0).is_empty(), "the first detection does not confirm itself");
        let tr = run(&mut f, &[smoke(t0 + Duration::from_secs(1), 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::VERIFY_CONFIRMED)]);
    }

    #[test]
    fn verification_from_pre_alarm_is_recorded_too() {
        let mut f = Fusion::from_config(&config(VERIFY));
        let t0 = Instant::now();
        let tr = run(&mut f, &[vision(t0, 0.9), vision(t0, 0.9)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::SINGLE_SOURCE)]);
        let tr = run(&mut f, &[thermal(t0, 80.0)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::VERIFY_START)], "a second kind starts verification");
        assert_eq!(tr[0].from, ZoneState::PreAlarm);
    }

    #[test]
    fn verification_times_out_without_a_second_detection() {
        let mut f = smoke_zone(VERIFY);
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        run(&mut f, &[smoke(t0, 40.0)]);
        // A reading below the alarm level in the window is no detection.
        assert!(run(&mut f, &[smoke(s(50), 5.0)]).is_empty());
        assert!(tick(&mut f, s(89)).is_empty(), "the window runs 30 s + 60 s");
        let tr = tick(&mut f, s(90));
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::VERIFY_TIMEOUT)]);
        // The next detection starts a new verification, not an alarm.
        let tr = run(&mut f, &[smoke(s(100), 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::PreAlarm, reason::VERIFY_START)]);
    }

    #[test]
    fn critical_heat_and_tests_bypass_verification() {
        let t0 = Instant::now();
        let mut f = smoke_zone(VERIFY);
        let tr = run(&mut f, &[thermal(t0, 130.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);
        // Critical heat during the retard alarms at once too.
        let mut f = smoke_zone(VERIFY);
        run(&mut f, &[smoke(t0, 40.0)]);
        let tr = run(&mut f, &[thermal(t0 + Duration::from_secs(5), 130.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);
        // An operator's test drives the outputs at once and ends a running verification.
        let mut f = smoke_zone(VERIFY);
        run(&mut f, &[smoke(t0, 40.0)]);
        let tr = run(&mut f, &[op(t0, OperatorCmd::TestStart)]);
        assert_eq!(states(&tr), [(ZoneState::Test, reason::TEST_START)]);
        let tr = run(&mut f, &[op(t0 + Duration::from_secs(1), OperatorCmd::TestEnd)]);
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::TEST_END)]);
        assert!(tick(&mut f, t0 + Duration::from_secs(120)).is_empty(), "no verification left to time out");
    }

    #[test]
    fn output_delay_holds_the_outputs_until_it_expires() {
        let mut f = smoke_zone("output_delay_secs = 300");
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        // The alarm is decided at once (the transition is sent); only the outputs wait.
        let tr = run(&mut f, &[smoke(t0, 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::SMOKE_ALONE)]);
        assert!(f.delay_running(0));
        assert_eq!(notes(&mut f), [NoteKind::DelayOn(Duration::from_secs(300))]);
        tick(&mut f, s(299));
        assert!(f.delay_running(0) && notes(&mut f).is_empty());
        tick(&mut f, s(300));
        assert!(!f.delay_running(0));
        assert_eq!(notes(&mut f), [NoteKind::DelayExpired]);
        assert_eq!(f.state(0), Some(ZoneState::Alarm));
    }

    #[test]
    fn long_press_cuts_a_running_delay_and_otherwise_resets() {
        let mut f = smoke_zone("output_delay_secs = 600");
        let t0 = Instant::now();
        run(&mut f, &[smoke(t0, 40.0)]);
        notes(&mut f);
        let press = |at| Observation::Operator { zone: None, cmd: OperatorCmd::LongPress, at };
        // During the delay a long press cuts it: outputs on, the alarm stays.
        let tr = run(&mut f, &[press(t0 + Duration::from_secs(20))]);
        assert!(tr.is_empty(), "not a reset");
        assert!(!f.delay_running(0));
        assert_eq!(notes(&mut f), [NoteKind::DelayCutByOperator]);
        assert_eq!(f.state(0), Some(ZoneState::Alarm));
        // Without a delay running, a long press resets, as before.
        let tr = run(&mut f, &[press(t0 + Duration::from_secs(30))]);
        assert_eq!(states(&tr), [(ZoneState::Normal, reason::OPERATOR_RESET)]);
        // The API's cut-delay does the same as the long press during a delay.
        run(&mut f, &[smoke(t0 + Duration::from_secs(40), 40.0)]);
        assert!(f.delay_running(0));
        run(&mut f, &[op(t0 + Duration::from_secs(41), OperatorCmd::CutDelay)]);
        assert!(!f.delay_running(0));
    }

    #[test]
    fn critical_heat_is_never_delayed() {
        let t0 = Instant::now();
        let mut f = smoke_zone("output_delay_secs = 600");
        let tr = run(&mut f, &[thermal(t0, 130.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::CRITICAL_HEAT)]);
        assert!(!f.delay_running(0));
        // Critical heat during a running delay cuts it.
        let mut f = smoke_zone("output_delay_secs = 600");
        run(&mut f, &[smoke(t0, 40.0)]);
        assert!(f.delay_running(0));
        run(&mut f, &[thermal(t0 + Duration::from_secs(5), 130.0)]);
        assert!(!f.delay_running(0));
        assert_eq!(notes(&mut f), [NoteKind::DelayOn(Duration::from_secs(600)), NoteKind::DelayCutByCriticalHeat]);
    }

    #[test]
    fn verification_then_delay() {
        let mut f = smoke_zone(&format!("{VERIFY}\noutput_delay_secs = 60"));
        let t0 = Instant::now();
        run(&mut f, &[smoke(t0, 40.0)]);
        assert!(!f.delay_running(0), "no alarm yet, so no delay");
        let tr = run(&mut f, &[smoke(t0 + Duration::from_secs(31), 40.0)]);
        assert_eq!(states(&tr), [(ZoneState::Alarm, reason::VERIFY_CONFIRMED)]);
        assert!(f.delay_running(0));
        // A reset during the delay clears it: the outputs were never driven.
        run(&mut f, &[op(t0 + Duration::from_secs(40), OperatorCmd::Reset)]);
        assert!(!f.delay_running(0));
        assert_eq!(notes(&mut f), [NoteKind::DelayOn(Duration::from_secs(60)), NoteKind::DelayCleared]);
    }
}
