//! Per-device state of the sensor link, shared by whichever connection currently carries the device:
//! liveness (offline after a silence → trouble, not alarm), ADC supervision (a channel stuck at a rail or
//! repeating one value for too long → trouble), the thermal conversion (compat or calibrated from the
//! device's own EEPROM, cached and re-read when it changes) and frame analysis. All buffers are allocated
//! once per device at start-up; handling a packet allocates nothing.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::proto::{EEPROM_WORDS, FRAME_WORDS, PIXELS, SensorFields};
use super::{adc_percent, thermal_compat};
use crate::config::{Device as DeviceCfg, ThermalMode};
use crate::event::{AdcReading, Observation, SourceRef, ThermalSummary};
use crate::queue::Queue;
use crate::telemetry::{Counter, Gauge, PartHandle, Registry};

/// Trouble conditions of a device, as bits so several can hold at once.
pub mod fault {
    pub const OFFLINE: u8 = 1;
    pub const ADC_RAIL: u8 = 2;
    pub const ADC_STATIC: u8 = 4;
    pub const THERMAL: u8 = 8;
    pub const NO_CALIBRATION: u8 = 16;
    /// Another link speaks for the device: an impostor of a pinned device, or a second live connection.
    pub const TAMPER: u8 = 32;

    pub fn names(bits: u8) -> impl Iterator<Item = &'static str> {
        [
            (OFFLINE, "offline"),
            (ADC_RAIL, "adc_stuck_at_rail"),
            (ADC_STATIC, "adc_not_changing"),
            (THERMAL, "thermal_sensor_fault"),
            (NO_CALIBRATION, "no_calibration"),
            (TAMPER, "tamper"),
        ]
        .into_iter()
        .filter(move |(b, _)| bits & b != 0)
        .map(|(_, n)| n)
    }
}

const ADC_RAIL_HIGH: i64 = 4095;

const FAULTS_HELP: &str = "Trouble bits of the device: 1 offline, 2 ADC at a rail, 4 ADC static, 8 thermal fault, \
                           16 no calibration, 32 tamper (0 = healthy).";

struct State {
    last_seen: Option<Instant>,
    faults: u8,
    adc1_last: Option<i64>,
    adc1_since: Option<Instant>,
    rail_run: u32,
    eeprom_hash: Option<u64>,
    calibration: Option<Box<super::mlx90640::Params>>,
    temps: Box<[f32; PIXELS]>,
    analysis: super::analysis::Scratch,
    rise: super::analysis::RiseTracker,
    thermal_health: super::analysis::Health,
    started: Instant,
    /// Thermal frames converted and analysed so far (the live view shows `temps` only once there is one).
    thermal_frames: u64,
}

/// A device as the status page shows it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView {
    pub online: bool,
    pub faults: u8,
    pub has_frame: bool,
    pub hot_c: f32,
}

pub struct DeviceCounters {
    pub online: Gauge,
    pub faults: Gauge,
    pub reconnects: Counter,
    pub frames_uncalibrated: Counter,
    pub thermal_max: Gauge,
    pub rise: Gauge,
    pub smoke_pct: Gauge,
}

pub struct Devices {
    cfg: Vec<DeviceCfg>,
    state: Vec<Mutex<State>>,
    counters: Vec<DeviceCounters>,
    offline_after: Duration,
    output: Queue<Observation>,
}

impl Devices {
    pub fn new(cfg: &crate::config::Sensors, reg: &Registry, output: Queue<Observation>) -> Self {
        let now = Instant::now();
        let state = cfg
            .devices
            .iter()
            .map(|d| {
                Mutex::new(State {
                    last_seen: None,
                    faults: 0,
                    adc1_last: None,
                    adc1_since: None,
                    rail_run: 0,
                    eeprom_hash: None,
                    calibration: None,
                    temps: Box::new([0.0; PIXELS]),
                    analysis: super::analysis::Scratch::new(),
                    rise: super::analysis::RiseTracker::new(d.rise_window_secs),
                    thermal_health: super::analysis::Health::default(),
                    started: now,
                    thermal_frames: 0,
                })
            })
            .collect();
        let counters = cfg
            .devices
            .iter()
            .map(|d| {
                let l = [("device", d.name.as_str())];
                DeviceCounters {
                    online: reg.gauge("ember_sensor_device_online", "1 while the device is sending.", &l),
                    faults: reg.gauge("ember_sensor_device_faults", FAULTS_HELP, &l),
                    reconnects: reg.counter(
                        "ember_sensor_device_reconnects_total",
                        "Times the device came back after being offline.",
                        &l,
                    ),
                    frames_uncalibrated: reg.counter(
                        "ember_thermal_frames_uncalibrated_total",
                        "Frames dropped in calibrated mode because no valid EEPROM was received yet.",
                        &l,
                    ),
                    thermal_max: reg.gauge("ember_thermal_max_celsius", "Hottest pixel of the last thermal frame.", &l),
                    rise: reg.gauge("ember_thermal_rise_celsius_per_minute", "Rate of rise of the hottest spot.", &l),
                    smoke_pct: reg.gauge(
                        "ember_sensor_smoke_percent",
                        "Smoke channel (ADC1) in percent of full scale.",
                        &l,
                    ),
                }
            })
            .collect();
        Devices {
            cfg: cfg.devices.clone(),
            state,
            counters,
            offline_after: Duration::from_secs(cfg.offline_after_secs.max(1)),
            output,
        }
    }

    pub fn config(&self, device: usize) -> Option<&DeviceCfg> {
        self.cfg.get(device)
    }

    fn lock(&self, device: usize) -> Option<std::sync::MutexGuard<'_, State>> {
        self.state.get(device).map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets or clears fault bits; reports trouble to fusion when the device goes from healthy to faulty or back.
    fn set_fault(&self, device: usize, st: &mut State, bit: u8, on: bool, now: Instant) {
        let before = st.faults;
        if on {
            st.faults |= bit
        } else {
            st.faults &= !bit
        }
        if let Some(c) = self.counters.get(device) {
            c.faults.set(st.faults as f64);
        }
        if (before == 0) != (st.faults == 0) {
            let name = self.cfg.get(device).map(|d| d.name.as_str()).unwrap_or("?");
            if st.faults != 0 {
                let why: Vec<&str> = fault::names(st.faults).collect();
                log::warn!("sensor device {name}: trouble {why:?}");
            } else {
                log::info!("sensor device {name}: healthy again");
            }
            self.output.push(Observation::SourceHealth {
                source: SourceRef::Device(device),
                at: now,
                ok: st.faults == 0,
            });
        }
    }

    /// Raises or clears the tamper trouble (see `sensor::claims`).
    pub fn set_tamper(&self, device: usize, on: bool, now: Instant) {
        let Some(mut st) = self.lock(device) else { return };
        self.set_fault(device, &mut st, fault::TAMPER, on, now);
    }

    /// Any packet from the device: it is alive.
    pub fn seen(&self, device: usize, now: Instant) {
        let Some(mut st) = self.lock(device) else { return };
        let was_offline = st.faults & fault::OFFLINE != 0;
        st.last_seen = Some(now);
        if let Some(c) = self.counters.get(device) {
            c.online.set(1.0);
            if was_offline {
                c.reconnects.inc();
            }
        }
        if was_offline {
            self.set_fault(device, &mut st, fault::OFFLINE, false, now);
        }
    }

    /// Ticks `tick` every second until stopped, beating `part`: the liveness task of the sensor link.
    pub async fn watch_liveness(
        self: std::sync::Arc<Self>,
        part: PartHandle,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            part.beat();
            self.tick(Instant::now());
        }
    }

    /// Periodic: marks silent devices offline. A device never heard from is offline after the same silence.
    pub fn tick(&self, now: Instant) {
        for device in 0..self.state.len() {
            let Some(mut st) = self.lock(device) else { continue };
            let since = st.last_seen.unwrap_or(st.started);
            if st.faults & fault::OFFLINE == 0 && now.saturating_duration_since(since) >= self.offline_after {
                if let Some(c) = self.counters.get(device) {
                    c.online.set(0.0);
                }
                self.set_fault(device, &mut st, fault::OFFLINE, true, now);
            }
        }
    }

    pub fn eeprom(&self, device: usize, words: &[u16; EEPROM_WORDS], now: Instant) {
        let Some(mut st) = self.lock(device) else { return };
        let h = super::analysis::fnv1a(words);
        if st.eeprom_hash == Some(h) {
            return;
        }
        let name = self.cfg.get(device).map(|d| d.name.as_str()).unwrap_or("?");
        match super::mlx90640::Params::from_eeprom(words) {
            Ok(p) => {
                if st.eeprom_hash.is_some() {
                    log::warn!("sensor device {name}: EEPROM changed; calibration reloaded");
                }
                st.calibration = Some(Box::new(p));
                st.eeprom_hash = Some(h);
                self.set_fault(device, &mut st, fault::NO_CALIBRATION, false, now);
            }
            Err(e) => {
                log::warn!("sensor device {name}: EEPROM rejected: {e}");
                st.eeprom_hash = Some(h);
                st.calibration = None;
                let calibrated = self.cfg.get(device).is_some_and(|d| d.thermal == ThermalMode::Calibrated);
                self.set_fault(device, &mut st, fault::NO_CALIBRATION, calibrated, now);
            }
        }
    }

    /// A 3336-hex frame: converts, analyses and reports it.
    pub fn frame(&self, device: usize, words: &[u16; FRAME_WORDS], now: Instant) {
        let Some(cfg) = self.cfg.get(device) else { return };
        let Some(mut st) = self.lock(device) else { return };
        let st = &mut *st;
        match cfg.thermal {
            ThermalMode::Compat => thermal_compat::compat_frame(words, 0.0, &mut st.temps),
            ThermalMode::Calibrated => match &st.calibration {
                Some(p) => {
                    let cond = super::mlx90640::Conditions { emissivity: cfg.emissivity, ..Default::default() };
                    super::mlx90640::compute(p, words, &cond, &mut st.temps);
                }
                None => {
                    if let Some(c) = self.counters.get(device) {
                        c.frames_uncalibrated.inc();
                    }
                    return;
                }
            },
        }
        let fault = st.thermal_health.check(&words[..PIXELS], &st.temps);
        self.set_fault(device, st, fault::THERMAL, fault.is_some(), now);
        if fault.is_some() {
            return;
        }
        let stats = super::analysis::analyse(&st.temps, cfg.hot_cluster_c, &mut st.analysis);
        st.thermal_frames += 1;
        let secs = now.saturating_duration_since(st.started).as_secs_f64();
        st.rise.push(secs, stats.max_c);
        let rise = st.rise.rate_c_per_min();
        if let Some(c) = self.counters.get(device) {
            c.thermal_max.set(stats.max_c as f64);
            c.rise.set(rise.unwrap_or(0.0) as f64);
        }
        let hot_pixels = stats.clusters().first().map(|c| c.pixels).unwrap_or(0);
        self.output.push(Observation::Thermal(ThermalSummary {
            device,
            at: now,
            min_c: stats.min_c,
            max_c: stats.max_c,
            mean_c: stats.mean_c,
            hot_pixels,
            rise_c_per_min: rise,
        }));
    }

    /// Copies the device's last thermal grid (°C) into `out` and says what state the device is in; None for an
    /// unknown device. For the status page and the live-view overlay.
    pub fn thermal_grid(&self, device: usize, out: &mut [f32; PIXELS]) -> Option<DeviceView> {
        let hot_c = self.cfg.get(device)?.hot_cluster_c;
        let st = self.lock(device)?;
        out.copy_from_slice(&st.temps[..]);
        Some(DeviceView {
            online: st.last_seen.is_some() && st.faults & fault::OFFLINE == 0,
            faults: st.faults,
            has_frame: st.thermal_frames > 0,
            hot_c,
        })
    }

    /// Online, and the hottest pixel (°C, once a thermal frame arrived) and smoke (%, once a reading arrived)
    /// as the device's metrics last recorded them; None for an unknown device. For Home Assistant.
    pub fn summary(&self, device: usize) -> Option<(bool, Option<f32>, Option<f32>)> {
        let c = self.counters.get(device)?;
        let st = self.lock(device)?;
        let online = st.last_seen.is_some() && st.faults & fault::OFFLINE == 0;
        let hottest = (st.thermal_frames > 0).then(|| c.thermal_max.get() as f32);
        let smoke = (st.last_seen.is_some() && c.smoke_pct.get() > 0.0).then(|| c.smoke_pct.get() as f32);
        Some((online, hottest, smoke))
    }

    pub fn count(&self) -> usize {
        self.cfg.len()
    }

    /// A `#Sensor` packet: converts the ADC channels and supervises them.
    pub fn sensor(&self, device: usize, fields: &SensorFields<'_>, sent_ns: u64, now: Instant) {
        let Some(cfg) = self.cfg.get(device) else { return };
        let Some(mut st) = self.lock(device) else { return };
        let st = &mut *st;
        let adc1 = fields.adc1().map(|v| v.as_f64() as i64);
        let adc2 = fields.adc2().map(|v| v.as_f64() as i64);
        let at_rail = |v: Option<i64>| v.is_some_and(|v| v <= 0 || v >= ADC_RAIL_HIGH);
        st.rail_run = if at_rail(adc1) || at_rail(adc2) { st.rail_run.saturating_add(1) } else { 0 };
        let rail = st.rail_run >= cfg.adc_rail_readings;
        self.set_fault(device, st, fault::ADC_RAIL, rail, now);
        if let Some(v) = adc1 {
            if st.adc1_last != Some(v) {
                st.adc1_last = Some(v);
                st.adc1_since = Some(now);
            }
            let static_too_long = cfg.adc_static_secs > 0.0
                && st.adc1_since.is_some_and(|t| now.saturating_duration_since(t).as_secs_f64() >= cfg.adc_static_secs);
            self.set_fault(device, st, fault::ADC_STATIC, static_too_long, now);
        }
        let smoke_pct = adc1.map(|v| adc_percent(v as f64));
        if let (Some(s), Some(c)) = (smoke_pct, self.counters.get(device)) {
            c.smoke_pct.set(s as f64);
        }
        let flame_pct = adc2.map(|v| adc_percent(v as f64));
        let flame_analog = match (cfg.flame_alarm_pct, flame_pct) {
            (Some(limit), Some(f)) => Some(f >= limit),
            _ => None,
        };
        let flame_digital = fields.mpy30().map(|v| v.as_f64() == 1.0);
        self.output.push(Observation::Adc(AdcReading {
            device,
            at: now,
            smoke_pct,
            flame_pct,
            flame_digital: match (flame_digital, flame_analog) {
                (Some(a), Some(b)) => Some(a || b),
                (a, b) => a.or(b),
            },
            sent_ns,
        }));
    }
}
