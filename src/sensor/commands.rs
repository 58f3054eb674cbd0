//! What the appliance says to a device, and when: a pure planner stepped with `now`. The real firmware and
//! EmberEye's strict simulator compare a whole received chunk with the command, so each command is its own
//! write, bare (no terminator), and at least 0.5 s after the previous one.

use std::time::Duration;
use tokio::time::Instant;

use crate::config::{Device, DeviceMode};

pub const PERIOD_ON: &[u8] = b"PERIOD_ON";
pub const EEPROM1: &[u8] = b"EEPROM1";
pub const REQUEST1: &[u8] = b"REQUEST1";

/// Minimum gap between two commands on one link.
pub const SPACING: Duration = Duration::from_millis(500);
/// The device needs a moment after `PERIOD_ON` before it reads the next command.
const FIRST_EEPROM_DELAY: Duration = Duration::from_millis(600);
const DEFAULT_EEPROM_REFRESH: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Planner {
    last_sent: Option<Instant>,
    started: bool,
    next_eeprom: Option<Instant>,
    next_request: Option<Instant>,
}

impl Planner {
    pub fn new() -> Self {
        Planner { last_sent: None, started: false, next_eeprom: None, next_request: None }
    }

    fn refresh(device: Option<&Device>) -> Option<Duration> {
        match device {
            Some(d) if d.eeprom_refresh_secs == 0.0 => None,
            Some(d) => Some(Duration::from_secs_f64(d.eeprom_refresh_secs)),
            None => Some(DEFAULT_EEPROM_REFRESH),
        }
    }

    /// The command due at `now` for a link carrying `device` (None while it has not said who it is).
    /// A polled device known at connect is never sent `PERIOD_ON`, which would make it stream.
    pub fn due(&mut self, now: Instant, device: Option<&Device>) -> Option<&'static [u8]> {
        let polled = device.is_some_and(|d| d.mode == DeviceMode::OnDemand);
        if !self.started {
            self.started = true;
            if polled {
                self.next_eeprom = Some(now);
            } else {
                self.next_eeprom = Some(now + FIRST_EEPROM_DELAY);
                self.last_sent = Some(now);
                return Some(PERIOD_ON);
            }
        }
        if let Some(t) = self.last_sent
            && now < t + SPACING
        {
            return None;
        }
        let cmd = if self.next_eeprom.is_some_and(|t| now >= t) {
            self.next_eeprom = Self::refresh(device).map(|d| now + d);
            EEPROM1
        } else if let Some(d) = device.filter(|d| d.mode == DeviceMode::OnDemand) {
            let due = *self.next_request.get_or_insert(now);
            if now < due {
                return None;
            }
            self.next_request = Some(now + Duration::from_secs_f64(d.poll_secs));
            REQUEST1
        } else {
            return None;
        };
        self.last_sent = Some(now);
        Some(cmd)
    }

    /// When to call `due` again.
    pub fn wake_at(&self, now: Instant, device: Option<&Device>) -> Instant {
        if !self.started {
            return now;
        }
        let mut t: Option<Instant> = self.next_eeprom;
        if device.is_some_and(|d| d.mode == DeviceMode::OnDemand) {
            let r = self.next_request.unwrap_or(now);
            t = Some(t.map_or(r, |x| x.min(r)));
        }
        let t = t.unwrap_or(now + Duration::from_secs(3600));
        match self.last_sent {
            Some(l) => t.max(l + SPACING),
            None => t,
        }
    }
}

impl Default for Planner {
    fn default() -> Self {
        Planner::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(mode: DeviceMode) -> Device {
        let text = format!(
            "[[sensors.devices]]\nname = \"d\"\nip = \"192.0.2.1\"\nmode = \"{}\"\npoll_secs = 2.0\neeprom_refresh_secs = 60\n\
             [[zones]]\nname = \"z\"\ndevices = [\"d\"]",
            if mode == DeviceMode::OnDemand { "on_demand" } else { "continuous" }
        );
        crate::config::load_str("t.toml", &text, std::path::Path::new(".")).unwrap().config.sensors.devices[0].clone()
    }

    /// Steps the planner every 10 ms for `secs` and returns (time offset ms, command).
    fn run(p: &mut Planner, d: Option<&Device>, secs: u64) -> Vec<(u64, &'static [u8])> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for ms in (0..secs * 1000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            if let Some(c) = p.due(now, d) {
                out.push((ms, c));
            }
        }
        out
    }

    #[test]
    fn continuous_device_gets_period_on_then_eeprom_then_periodic_eeprom() {
        let d = device(DeviceMode::Continuous);
        let sent = run(&mut Planner::new(), Some(&d), 130);
        assert_eq!(sent[0], (0, PERIOD_ON));
        assert_eq!(sent[1], (600, EEPROM1));
        assert_eq!(sent[2], (60_600, EEPROM1));
        assert_eq!(sent[3], (120_600, EEPROM1));
        assert_eq!(sent.len(), 4);
    }

    #[test]
    fn on_demand_device_is_polled_and_commands_stay_half_a_second_apart() {
        let d = device(DeviceMode::OnDemand);
        let sent = run(&mut Planner::new(), Some(&d), 7);
        let cmds: Vec<&[u8]> = sent.iter().map(|s| s.1).collect();
        assert_eq!(&cmds[..3], &[EEPROM1, REQUEST1, REQUEST1], "calibration first, never PERIOD_ON");
        assert!(cmds.iter().filter(|c| **c == REQUEST1).count() >= 3);
        for w in sent.windows(2) {
            assert!(w[1].0 - w[0].0 >= 500, "{sent:?}");
        }
    }
}
