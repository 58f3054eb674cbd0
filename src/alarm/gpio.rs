//! Alarm outputs and the ack/silence button on the Linux GPIO character device (gpiocdev): every board with
//! a gpiochip (Raspberry Pi 4/5, Jetson, anything with gpio-sim). Lines are found by name on the board
//! profile's chip (falling back to the configured offset), requested once with the profile's polarity and
//! the consumer label, and held for the life of the process: once released, an output is indeterminate, so
//! the wiring must make "unpowered" safe (relay coil off = contacts open) — see `board/*.toml`.
//!
//! Safe state, per output, on shutdown, crash or watchdog reset: relay inactive (coil off), siren inactive,
//! trouble LED inactive. `safe()` drives it on an orderly stop; after a crash or a watchdog reset the kernel
//! releases the lines and the relay module's own pull keeps the coil off.

use std::path::Path;
use std::time::Duration;

use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Offset, Value};
use gpiocdev::request::Request;
use tokio_util::sync::CancellationToken;

use super::{AlarmOutput, Outputs, Siren};
use crate::board::{Gpio, Line};
use crate::event::{Observation, OperatorCmd};
use crate::queue::Queue;

#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("gpio chip {chip}: {source}")]
    Chip { chip: String, source: gpiocdev::Error },
    #[error("gpio line `{name}` not found on {chip} and no offset configured")]
    NoLine { name: String, chip: String },
    #[error("gpio request on {chip}: {source}")]
    Request { chip: String, source: gpiocdev::Error },
}

/// The line's offset: by name on the chip, else the configured offset.
fn resolve(chip_path: &str, line: &Line) -> Result<Offset, GpioError> {
    let chip = gpiocdev::chip::Chip::from_path(Path::new(chip_path))
        .map_err(|source| GpioError::Chip { chip: chip_path.to_owned(), source })?;
    if let Some(info) = chip.find_line_info(&line.name) {
        return Ok(info.offset);
    }
    line.offset.ok_or_else(|| GpioError::NoLine { name: line.name.clone(), chip: chip_path.to_owned() })
}

/// Logical values (active = energised) of relay, siren and LED for `o`; `pulse_on` is the siren's blink phase.
pub fn line_values(o: Outputs, pulse_on: bool) -> [bool; 3] {
    let siren = match o.siren {
        Siren::Off => false,
        Siren::Steady => true,
        Siren::Pulsed => pulse_on,
    };
    [o.relay, siren, o.trouble_led]
}

pub struct GpioOutputs {
    req: Request,
    offsets: [Offset; 3],
    desired: Outputs,
    pulse_on: bool,
    chip: String,
}

impl GpioOutputs {
    /// Requests relay, siren and LED as outputs, starting in the safe state.
    pub fn open(g: &Gpio) -> Result<Self, GpioError> {
        let offsets = [resolve(&g.chip, &g.relay)?, resolve(&g.chip, &g.siren)?, resolve(&g.chip, &g.trouble_led)?];
        let mut b = Request::builder();
        b.on_chip(&g.chip).with_consumer(g.consumer.clone());
        for (off, line) in offsets.iter().zip([&g.relay, &g.siren, &g.trouble_led]) {
            b.with_line(*off).as_output(Value::Inactive);
            if line.active_low {
                b.as_active_low();
            }
        }
        let req = b.request().map_err(|source| GpioError::Request { chip: g.chip.clone(), source })?;
        log::info!(
            "gpio outputs on {}: relay {}, siren {}, trouble LED {}",
            g.chip,
            offsets[0],
            offsets[1],
            offsets[2]
        );
        Ok(GpioOutputs { req, offsets, desired: Outputs::SAFE, pulse_on: true, chip: g.chip.clone() })
    }

    fn write(&mut self) -> std::io::Result<()> {
        let v = line_values(self.desired, self.pulse_on);
        for (off, on) in self.offsets.iter().zip(v) {
            self.req
                .set_value(*off, if on { Value::Active } else { Value::Inactive })
                .map_err(|e| std::io::Error::other(format!("{} line {off}: {e}", self.chip)))?;
        }
        Ok(())
    }
}

impl AlarmOutput for GpioOutputs {
    fn name(&self) -> &'static str {
        "gpio"
    }

    fn apply(&mut self, o: Outputs) -> std::io::Result<()> {
        if o.siren == Siren::Pulsed && self.desired.siren != Siren::Pulsed {
            // A new pulsed phase starts audible, so the change is heard at once.
            self.pulse_on = true;
        }
        self.desired = o;
        self.write()
    }

    fn tick(&mut self) -> std::io::Result<()> {
        if self.desired.siren == Siren::Pulsed {
            self.pulse_on = !self.pulse_on;
            self.write()?;
        }
        Ok(())
    }
}

/// The default long press (`[alarm] long_press_secs`).
pub const LONG_PRESS: Duration = Duration::from_secs(2);

/// What a press of `held` means: shorter than `long` acknowledges (then silences, on a second press); a long
/// press cuts every running output delay or, when none runs, resets (fusion decides which, as it knows the
/// delays).
pub fn classify_press(held: Duration, long: Duration) -> OperatorCmd {
    if held >= long { OperatorCmd::LongPress } else { OperatorCmd::Button }
}

/// An input line of `g` with both edges reported after the kernel's debounce, active as the wiring says.
fn request_input(g: &Gpio, line: &Line, what: &str) -> anyhow::Result<gpiocdev::tokio::AsyncRequest> {
    let off = resolve(&g.chip, line)?;
    let mut b = Request::builder();
    b.on_chip(&g.chip)
        .with_consumer(g.consumer.clone())
        .with_line(off)
        .as_input()
        .with_bias(Bias::PullUp)
        .with_edge_detection(EdgeDetection::BothEdges)
        .with_debounce_period(Duration::from_millis(line.debounce_ms.max(1) as u64));
    if line.active_low {
        b.as_active_low();
    }
    let req = b.request().map_err(|source| GpioError::Request { chip: g.chip.clone(), source })?;
    log::info!("{what} on {} line {off}", g.chip);
    Ok(gpiocdev::tokio::AsyncRequest::new(req))
}

/// Watches the ack button (edge events with the kernel's debounce) and turns presses into operator commands
/// for every zone; `long` is `[alarm] long_press_secs`. Runs until `stop`.
pub async fn watch_button(
    g: Gpio,
    long: Duration,
    out: Queue<Observation>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let req = request_input(&g, &g.ack_button, "ack button")?;
    let mut pressed_at: Option<tokio::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = req.read_edge_event() => ev?,
        };
        let now = tokio::time::Instant::now();
        match ev.kind {
            EdgeKind::Rising => pressed_at = Some(now),
            EdgeKind::Falling => {
                if let Some(t) = pressed_at.take() {
                    let cmd = classify_press(now - t, long);
                    log::info!("ack button: {cmd:?}");
                    out.push(Observation::Operator { zone: None, cmd, at: now });
                }
            }
        }
    }
}

/// Watches the board's manual input (`[gpio] manual_input`): each activation cuts every running output delay
/// (`CutDelay` for every zone; nothing happens where no delay runs). Runs until `stop`; nothing to do without
/// the line.
pub async fn watch_manual_input(g: Gpio, out: Queue<Observation>, stop: CancellationToken) -> anyhow::Result<()> {
    let Some(line) = g.manual_input.clone() else { return Ok(()) };
    let req = request_input(&g, &line, "manual input")?;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = req.read_edge_event() => ev?,
        };
        if ev.kind == EdgeKind::Rising {
            log::info!("manual input: cut the output delays");
            out.push(Observation::Operator { zone: None, cmd: OperatorCmd::CutDelay, at: tokio::time::Instant::now() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siren_patterns_map_to_lines() {
        let alarm = Outputs { relay: true, siren: Siren::Steady, trouble_led: false };
        assert_eq!(line_values(alarm, false), [true, true, false]);
        let ack = Outputs { relay: true, siren: Siren::Pulsed, trouble_led: true };
        assert_eq!((line_values(ack, true), line_values(ack, false)), ([true, true, true], [true, false, true]));
        assert_eq!(line_values(Outputs::SAFE, true), [false, false, false]);
    }

    #[test]
    fn short_press_acknowledges_long_press_is_long() {
        assert_eq!(classify_press(Duration::from_millis(300), LONG_PRESS), OperatorCmd::Button);
        assert_eq!(classify_press(Duration::from_millis(2500), LONG_PRESS), OperatorCmd::LongPress);
        assert_eq!(classify_press(Duration::from_millis(2500), Duration::from_secs(5)), OperatorCmd::Button);
    }
}
