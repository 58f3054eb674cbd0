//! Local alarm outputs, driven only by the local fusion decision (no network in the path). The state of the
//! outputs is derived from all zone states; a backend applies it. `safe()` is called last at shutdown.
//! Backends: `log` (laptops) and `gpio` (the Linux GPIO character device, every board).

pub mod gpio;
#[cfg(feature = "rppal")]
pub mod rppal_backend;

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

    /// Worst zone wins. Relay: on while any zone is in alarm (acknowledged or silenced included) or testing.
    /// Siren: steady for an unhandled alarm or a test, pulsed for pre-alarm or an acknowledged alarm (a
    /// reminder), off when silenced. Trouble LED: any zone in trouble.
    pub fn from_states(states: impl IntoIterator<Item = ZoneState>) -> Self {
        let mut o = Outputs::SAFE;
        let louder = |a: Siren, b: Siren| match (a, b) {
            (Siren::Steady, _) | (_, Siren::Steady) => Siren::Steady,
            (Siren::Pulsed, _) | (_, Siren::Pulsed) => Siren::Pulsed,
            _ => Siren::Off,
        };
        for s in states {
            let siren = match s {
                ZoneState::Alarm | ZoneState::Test => Siren::Steady,
                ZoneState::PreAlarm | ZoneState::Acknowledged => Siren::Pulsed,
                _ => Siren::Off,
            };
            o.siren = louder(o.siren, siren);
            o.relay |= s.is_alarm() || s == ZoneState::Test;
            o.trouble_led |= s == ZoneState::Trouble;
        }
        o
    }
}

/// One seam per piece of hardware: the real backends and the fakes implement this.
pub trait AlarmOutput: Send {
    fn name(&self) -> &'static str;
    fn apply(&mut self, o: Outputs) -> std::io::Result<()>;
    /// Called every half second, for patterns (the pulsed siren).
    fn tick(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// The alarm outputs, shared by the fusion task (which sets them) and shutdown (which makes them safe last).
pub type SharedAlarm = std::sync::Arc<std::sync::Mutex<Box<dyn AlarmOutput>>>;

/// Builds the configured backend; a GPIO backend needs the site's board profile.
pub fn build(c: &crate::config::Alarm, board: Option<&crate::config::Board>) -> anyhow::Result<Box<dyn AlarmOutput>> {
    match c.backend {
        crate::config::AlarmBackend::Log => Ok(Box::new(LogOutput::default())),
        crate::config::AlarmBackend::Gpio => {
            let b = board.ok_or_else(|| anyhow::anyhow!("[alarm] backend \"gpio\" needs [site] board"))?;
            Ok(Box::new(gpio::GpioOutputs::open(&b.gpio)?))
        }
        #[cfg(feature = "rppal")]
        crate::config::AlarmBackend::Rppal => {
            let b = board.ok_or_else(|| anyhow::anyhow!("[alarm] backend \"rppal\" needs [site] board"))?;
            Ok(Box::new(rppal_backend::RppalOutputs::open(&b.gpio)?))
        }
        #[cfg(not(feature = "rppal"))]
        crate::config::AlarmBackend::Rppal => {
            anyhow::bail!("[alarm] backend \"rppal\" needs a build with `--features rppal`")
        }
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
        assert_eq!(
            Outputs::from_states([ZoneState::Silenced]),
            Outputs { relay: true, siren: Siren::Off, trouble_led: false }
        );
        assert_eq!(Outputs::from_states([ZoneState::Acknowledged]).siren, Siren::Pulsed);
        assert_eq!(Outputs::from_states([ZoneState::Silenced, ZoneState::PreAlarm]).siren, Siren::Pulsed);
        assert!(Outputs::from_states([ZoneState::Test]).relay);
    }
}
