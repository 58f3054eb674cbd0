//! Alarm outputs through rppal (feature `rppal`): Raspberry Pi register access by BCM number, for Pi OS images
//! where the GPIO character device is not available to the service. Same outputs, polarity and safe state as
//! the `gpio` backend; the pins come from the board profile's `offset` (the BCM number). rppal refuses to run
//! on anything that is not a Raspberry Pi ("Unknown Raspberry Pi model"), which `open` reports as an error.

use rppal::gpio::{Gpio as Rpi, OutputPin};

use super::gpio::line_values;
use super::{AlarmOutput, Outputs, Siren};
use crate::board::{Gpio, Line};

pub struct RppalOutputs {
    pins: [(OutputPin, bool); 3],
    desired: Outputs,
    pulse_on: bool,
}

fn pin(rpi: &Rpi, line: &Line) -> anyhow::Result<(OutputPin, bool)> {
    let bcm = line
        .offset
        .ok_or_else(|| anyhow::anyhow!("rppal needs the BCM number as `offset` for line `{}`", line.name))?;
    let bcm = u8::try_from(bcm).map_err(|_| anyhow::anyhow!("BCM {bcm} is out of range"))?;
    let mut p = rpi.get(bcm)?.into_output();
    // Held for the life of the process; on drop rppal would restore the pin's previous mode.
    p.set_reset_on_drop(false);
    Ok((p, line.active_low))
}

impl RppalOutputs {
    pub fn open(g: &Gpio) -> anyhow::Result<Self> {
        let rpi = Rpi::new()?;
        let pins = [pin(&rpi, &g.relay)?, pin(&rpi, &g.siren)?, pin(&rpi, &g.trouble_led)?];
        let mut me = RppalOutputs { pins, desired: Outputs::SAFE, pulse_on: true };
        me.write();
        Ok(me)
    }

    fn write(&mut self) {
        for ((p, active_low), on) in self.pins.iter_mut().zip(line_values(self.desired, self.pulse_on)) {
            if on != *active_low { p.set_high() } else { p.set_low() }
        }
    }

    /// Physical level of each pin (relay, siren, LED), as the SoC reports it.
    pub fn levels(&self) -> [bool; 3] {
        [self.pins[0].0.is_set_high(), self.pins[1].0.is_set_high(), self.pins[2].0.is_set_high()]
    }
}

impl AlarmOutput for RppalOutputs {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn apply(&mut self, o: Outputs) -> std::io::Result<()> {
        if o.siren == Siren::Pulsed && self.desired.siren != Siren::Pulsed {
            self.pulse_on = true;
        }
        self.desired = o;
        self.write();
        Ok(())
    }

    fn tick(&mut self) -> std::io::Result<()> {
        if self.desired.siren == Siren::Pulsed {
            self.pulse_on = !self.pulse_on;
            self.write();
        }
        Ok(())
    }
}
