//! Values that cross task boundaries on the way from sources to fusion, and the decisions fusion makes.
//! Sources are referred to by their index in the config (fixed at start-up), never by allocated names.

use tokio::time::Instant;

/// A detector's verdict on one frame of one camera.
#[derive(Debug, Clone, Copy)]
pub struct VisionScore {
    pub camera: usize,
    /// The frame's number (`FrameMeta::seq`), so a decision can name the picture behind it.
    pub frame: u64,
    pub at: Instant,
    /// 0..=1; what the detector considers fire/smoke evidence.
    pub score: f32,
}

/// One camera frame, by camera index and frame number: the picture behind a vision decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub camera: usize,
    pub frame: u64,
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
    /// An operator's command for one zone, or for all zones when `zone` is None.
    Operator {
        zone: Option<usize>,
        cmd: OperatorCmd,
        at: Instant,
    },
}

/// A source of evidence, by config index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceRef {
    Camera(usize),
    Device(usize),
}

/// The states of a zone, as an alarm panel has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ZoneState {
    Normal,
    PreAlarm,
    /// Latched until reset.
    Alarm,
    /// An operator has seen the alarm: relay stays on, siren falls back to a reminder pattern.
    Acknowledged,
    /// Sounders off, relay stays on; new evidence re-sounds.
    Silenced,
    /// A lost or faulty source; never an alarm.
    Trouble,
    /// An operator's output test: outputs driven, alerts flagged as test.
    Test,
}

/// What an operator (ack button, status page, API) asks of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorCmd {
    /// The ack button: acknowledges an alarm, or silences an acknowledged one.
    Button,
    Acknowledge,
    Silence,
    Reset,
    TestStart,
    TestEnd,
    /// The ack button held at least `[alarm] long_press_secs`: cuts every running output delay in its zones,
    /// or resets them when no delay runs.
    LongPress,
    /// Ends a running output delay at once (outputs on): the API's `cut-delay`, a manual input.
    CutDelay,
}

impl ZoneState {
    pub fn label(self) -> &'static str {
        match self {
            ZoneState::Normal => "normal",
            ZoneState::PreAlarm => "pre_alarm",
            ZoneState::Alarm => "alarm",
            ZoneState::Acknowledged => "acknowledged",
            ZoneState::Silenced => "silenced",
            ZoneState::Trouble => "trouble",
            ZoneState::Test => "test",
        }
    }

    /// Numeric level for metrics and the wire: higher is worse.
    pub fn level(self) -> u8 {
        match self {
            ZoneState::Normal => 0,
            ZoneState::Trouble => 1,
            ZoneState::PreAlarm => 2,
            ZoneState::Alarm => 3,
            ZoneState::Acknowledged => 4,
            ZoneState::Silenced => 5,
            ZoneState::Test => 6,
        }
    }

    /// All states, for decoding levels.
    pub const ALL: [ZoneState; 7] = [
        ZoneState::Normal,
        ZoneState::Trouble,
        ZoneState::PreAlarm,
        ZoneState::Alarm,
        ZoneState::Acknowledged,
        ZoneState::Silenced,
        ZoneState::Test,
    ];

    /// A latched alarm in any of its operator-handled forms.
    pub fn is_alarm(self) -> bool {
        matches!(self, ZoneState::Alarm | ZoneState::Acknowledged | ZoneState::Silenced)
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

/// Why a transition happened: the decision trace carried in every alert (the wire packs it into its flags byte).
pub mod reason {
    pub const EVIDENCE_CLEARED: u8 = 0;
    /// One kind of evidence: pre-alarm.
    pub const SINGLE_SOURCE: u8 = 1;
    /// `min_sources` kinds within the window.
    pub const K_OF_N: u8 = 2;
    pub const SMOKE_ALONE: u8 = 3;
    pub const CRITICAL_HEAT: u8 = 4;
    pub const OPERATOR_ACK: u8 = 5;
    pub const OPERATOR_SILENCE: u8 = 6;
    pub const OPERATOR_RESET: u8 = 7;
    pub const TEST_START: u8 = 8;
    pub const TEST_END: u8 = 9;
    pub const AUTO_RESET: u8 = 10;
    /// New evidence while acknowledged or silenced: re-sound.
    pub const ESCALATION: u8 = 11;
    pub const SOURCE_TROUBLE: u8 = 12;
    pub const SOURCE_RESTORED: u8 = 13;
    pub const VISION_ALONE: u8 = 14;
    /// Alarm verification started: the zone waits out the retard, then a confirmation window.
    pub const VERIFY_START: u8 = 15;
    /// A second detection in the confirmation window latched the alarm.
    pub const VERIFY_CONFIRMED: u8 = 16;
    /// The confirmation window passed without a second detection: back to normal.
    pub const VERIFY_TIMEOUT: u8 = 17;

    pub fn label(r: u8) -> &'static str {
        match r {
            EVIDENCE_CLEARED => "evidence_cleared",
            SINGLE_SOURCE => "single_source",
            K_OF_N => "k_of_n_sources",
            SMOKE_ALONE => "smoke_alone",
            CRITICAL_HEAT => "critical_heat",
            OPERATOR_ACK => "operator_acknowledge",
            OPERATOR_SILENCE => "operator_silence",
            OPERATOR_RESET => "operator_reset",
            TEST_START => "test_start",
            TEST_END => "test_end",
            AUTO_RESET => "auto_reset",
            ESCALATION => "escalation",
            SOURCE_TROUBLE => "source_trouble",
            SOURCE_RESTORED => "source_restored",
            VISION_ALONE => "vision_alone",
            VERIFY_START => "verification_start",
            VERIFY_CONFIRMED => "verification_confirmed",
            VERIFY_TIMEOUT => "verification_timeout",
            _ => "unknown",
        }
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
    /// Caused by an operator (acknowledge, silence, reset, test).
    pub operator: bool,
    /// Caused by, or during, an operator's output test.
    pub test: bool,
    /// `reason::*`: why.
    pub reason: u8,
    /// The newest frame that counted as vision evidence in the zone, while vision is among `sources`. The log
    /// names it, the snapshot keeps it, and the alert carries it after its body (`wire::AlertExt`).
    pub vision_frame: Option<FrameRef>,
    /// The device whose thermal frames last confirmed thermal evidence in the zone, while thermal is among
    /// `sources`: its grid is kept with the event's snapshot.
    pub thermal_device: Option<usize>,
    /// The event log's id of this transition's event, given after the outputs are set and before the alert is
    /// queued: the alert carries it, so the control room can ask for the event's snapshot. None without a log.
    pub event_id: Option<u64>,
}
