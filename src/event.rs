//! Values that cross task boundaries on the way from sources to fusion, and the decisions fusion makes.
//! Sources are referred to by their index in the config (fixed at start-up), never by allocated names.

use tokio::time::Instant;

/// A detector's verdict on one frame of one camera.
#[derive(Debug, Clone, Copy)]
pub struct VisionScore {
    pub camera: usize,
    pub seq: u64,
    pub at: Instant,
    /// 0..=1; what the detector considers fire/smoke evidence.
    pub score: f32,
    pub fire_pixels: u32,
    pub smoke_pixels: u32,
}

/// Summary of one thermal frame from a sensor device.
#[derive(Debug, Clone, Copy)]
pub struct ThermalSummary {
    pub device: usize,
    pub at: Instant,
    pub min_c: f32,
    pub max_c: f32,
    pub mean_c: f32,
    /// Pixels in the largest hot cluster (0 if none).
    pub hot_pixels: u16,
    /// Rate of rise of the hottest spot, once the window has enough samples.
    pub rise_c_per_min: Option<f32>,
}

/// One `#Sensor` packet's ADC channels, converted to percent of full scale.
#[derive(Debug, Clone, Copy)]
pub struct AdcReading {
    pub device: usize,
    pub at: Instant,
    pub smoke_pct: Option<f32>,
    pub flame_pct: Option<f32>,
    pub flame_digital: Option<bool>,
    /// When the device wrote the packet (its `TS` field, ns since the epoch), for latency; 0 if unknown.
    pub sent_ns: u64,
}

/// Everything fusion consumes.
#[derive(Debug, Clone, Copy)]
pub enum Observation {
    Vision(VisionScore),
    Thermal(ThermalSummary),
    Adc(AdcReading),
    /// A source went silent or came back; trouble, never alarm.
    SourceHealth {
        source: SourceRef,
        at: Instant,
        ok: bool,
    },
}

/// A source of evidence, by config index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceRef {
    Camera(usize),
    Device(usize),
}

/// The states of a zone. Later issues add ACKNOWLEDGED, SILENCED and TEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ZoneState {
    Normal,
    PreAlarm,
    Alarm,
    Trouble,
}

impl ZoneState {
    pub fn label(self) -> &'static str {
        match self {
            ZoneState::Normal => "normal",
            ZoneState::PreAlarm => "pre_alarm",
            ZoneState::Alarm => "alarm",
            ZoneState::Trouble => "trouble",
        }
    }

    /// Numeric level for metrics and the wire: higher is worse.
    pub fn level(self) -> u8 {
        match self {
            ZoneState::Normal => 0,
            ZoneState::Trouble => 1,
            ZoneState::PreAlarm => 2,
            ZoneState::Alarm => 3,
        }
    }
}

/// Bit flags naming which kinds of evidence contributed to a decision.
pub mod evidence {
    pub const VISION: u8 = 1;
    pub const THERMAL: u8 = 2;
    pub const SMOKE: u8 = 4;
    pub const FLAME: u8 = 8;
    pub const TROUBLE: u8 = 16;

    pub fn names(bits: u8) -> impl Iterator<Item = &'static str> {
        [(VISION, "vision"), (THERMAL, "thermal"), (SMOKE, "smoke"), (FLAME, "flame"), (TROUBLE, "trouble")]
            .into_iter()
            .filter(move |(b, _)| bits & b != 0)
            .map(|(_, n)| n)
    }
}

/// A zone changed state: what the alarm outputs and the uplink act on. Carries the evidence that caused it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub zone: usize,
    pub at: Instant,
    pub from: ZoneState,
    pub to: ZoneState,
    /// `evidence::*` bits active when the transition happened.
    pub sources: u8,
    pub vision_score: f32,
    pub max_c: f32,
    /// Rate of rise of the hottest thermal spot (°C/min); NaN until known.
    pub rise_c_per_min: f32,
    pub smoke_pct: f32,
    /// `uplink::wire::flags` (operator test, operator action).
    pub flags: u8,
}
