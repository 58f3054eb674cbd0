//! Local alarm outputs, driven only by the local fusion decision (no network in the path). The state of the
//! outputs is derived from all zone states; a backend applies it. `safe()` is called last at shutdown.
//! Issue 5 adds GPIO backends (gpiocdev, rppal) beside the log backend.

use crate::event::ZoneState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Siren {
    Off,
    /// Pre-alarm: an attention signal.
    Pulsed,
    Steady,
}

/// What the outputs should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    pub relay: bool,
    pub siren: Siren,
    pub trouble_led: bool,
}

impl Outputs {
    pub const SAFE: Outputs = Outputs { relay: false, siren: Siren::Off, trouble_led: false };

    /// Worst zone wins: any ALARM energises the relay and the steady siren.
    pub fn from_states(states: impl IntoIterator<Item = ZoneState>) -> Self {
        let mut o = Outputs::SAFE;
        for s in states {
            match s {
                ZoneState::Alarm => {
                    o.relay = true;
                    o.siren = Siren::Steady;
                }
                ZoneState::PreAlarm if o.siren == Siren::Off => o.siren = Siren::Pulsed,
                ZoneState::Trouble => o.trouble_led = true,
                _ => {}
            }
        }
        o
    }
}

/// One seam per piece of hardware: the real backends and the fakes implement this.
pub trait AlarmOutput: Send {
    fn name(&self) -> &'static str;
    fn apply(&mut self, o: Outputs) -> std::io::Result<()>;
    /// Puts every output in its documented safe state (relay open, siren off).
    fn safe(&mut self) -> std::io::Result<()> {
        self.apply(Outputs::SAFE)
    }
}

/// Logs every change of the outputs; the backend for laptops and simulated sites.
#[derive(Default)]
pub struct LogOutput {
    last: Option<Outputs>,
}

impl AlarmOutput for LogOutput {
    fn name(&self) -> &'static str {
        "log"
    }

    fn apply(&mut self, o: Outputs) -> std::io::Result<()> {
        if self.last != Some(o) {
            // An energised relay is the product doing its job, not an operator error; WARN makes it stand out.
            if o.relay {
                log::warn!("alarm outputs: relay=ON siren={:?} trouble_led={}", o.siren, o.trouble_led);
            } else {
                log::info!("alarm outputs: relay=off siren={:?} trouble_led={}", o.siren, o.trouble_led);
            }
            self.last = Some(o);
        }
        Ok(())
    }
}

/// Records every applied state; for tests of ordering and safe state.
#[derive(Clone, Default)]
pub struct RecordingOutput {
    pub applied: std::sync::Arc<std::sync::Mutex<Vec<Outputs>>>,
}

impl AlarmOutput for RecordingOutput {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn apply(&mut self, o: Outputs) -> std::io::Result<()> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).push(o);
        Ok(())
    }
}

pub fn build(c: &crate::config::Alarm) -> Box<dyn AlarmOutput> {
    match c.backend {
        crate::config::AlarmBackend::Log => Box::new(LogOutput::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_zone_wins() {
        let o = Outputs::from_states([ZoneState::PreAlarm, ZoneState::Alarm, ZoneState::Trouble]);
        assert_eq!(o, Outputs { relay: true, siren: Siren::Steady, trouble_led: true });
        assert_eq!(Outputs::from_states([ZoneState::Normal]), Outputs::SAFE);
        assert_eq!(Outputs::from_states([ZoneState::PreAlarm]).siren, Siren::Pulsed);
    }
}
