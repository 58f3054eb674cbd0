//! A simulated EmberEye field device that behaves like the real firmware: it connects to the appliance's
//! sensor port, waits for `PERIOD_ON`, announces its serial number and loc id, then streams a 3336-hex thermal
//! frame and a `#Sensor` packet every interval (`…!\r\n` like the real device), and answers `EEPROM1`.
//! The room follows a scenario; temperatures are encoded so EmberEye's compat conversion reads them back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::proto::{EEPROM_WORDS, FRAME_WORDS, GRID_H, GRID_W};
use crate::config::{Scenario, Simulator};

/// Temperature of the room at pixel (r, c), `secs` after the simulation started.
pub fn scene_celsius(s: &Simulator, secs: f64, r: usize, c: usize) -> f64 {
    let ambient = 24.0 + 0.5 * ((r as f64) * 0.3).sin() * ((c as f64) * 0.3).cos();
    if s.scenario != Scenario::Fire || secs < s.fire_after_secs {
        return ambient;
    }
    // A fire grows at 12 °C/s at its core (a fast-flaming fire seen by a thermal array), up to 300 °C.
    let core = (ambient + 12.0 * (secs - s.fire_after_secs)).min(300.0);
    let d = (r as f64 - 12.0).abs() + (c as f64 - 16.0).abs();
    (core - 25.0 * d).max(ambient)
}

/// ADC1 (smoke) raw value: the real device idles near 275; smoke builds after the fire starts.
pub fn smoke_adc(s: &Simulator, secs: f64) -> u32 {
    if s.scenario != Scenario::Fire || secs < s.fire_after_secs {
        return 275;
    }
    (275.0 + 300.0 * (secs - s.fire_after_secs)).min(3900.0) as u32
}

/// EmberEye's compat encoding: word = (T − 27) · 100 as 16-bit two's complement.
pub fn compat_word(celsius: f64) -> u16 {
    ((celsius - 27.0) * 100.0).round().clamp(i16::MIN as f64, i16::MAX as f64) as i16 as u16
}

fn frame_line(s: &Simulator, secs: f64, out: &mut String) {
    out.clear();
    let _ = write!(out, "#frame{}:", s.loc_id);
    for r in 0..GRID_H {
        for c in 0..GRID_W {
            let _ = write!(out, "{:04X}", compat_word(scene_celsius(s, secs, r, c)));
        }
    }
    // Aux words as the real device sends them start with Ta_Vbe; the rest is not used by compat mode.
    for i in 0..(FRAME_WORDS - GRID_W * GRID_H) {
        let _ = write!(out, "{:04X}", if i == 0 { 0x4CD0 } else { 0x0001 });
    }
    out.push_str("!\r\n");
}

fn eeprom_line(s: &Simulator, out: &mut String) {
    out.clear();
    let _ = write!(out, "#EEPROM{}:", s.loc_id);
    for i in 0..EEPROM_WORDS {
        // Word 0 and the control register image match a real MLX90640 dump; issue 3 makes the rest valid.
        let w = match i {
            0 => 0x00B0,
            12 => 0x1901,
            _ => 0x0000,
        };
        let _ = write!(out, "{w:04X}");
    }
    out.push_str("!\r\n");
}

/// Runs the device against `target` until stopped, reconnecting like field devices do.
pub async fn run(s: Simulator, target: SocketAddr, stop: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = TcpStream::connect(target) => c,
        };
        match conn {
            Ok(stream) => {
                if let Err(e) = session(&s, stream, started, &stop).await {
                    log::info!("simulated device {}: connection ended: {e}", s.loc_id);
                }
            }
            Err(e) => log::debug!("simulated device {}: connect to {target} failed: {e}", s.loc_id),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One connection's worth of device behaviour. Generic so tests can use in-memory streams.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &Simulator,
    mut stream: S,
    started: Instant,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let mut cmd = [0u8; 256];
    let mut streaming = false;
    let mut line = String::with_capacity(4096);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(s.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = stream.read(&mut cmd) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&cmd[..n]);
                if (text.contains("PERIOD_ON") || text.contains("PERIODIC_ON")) && !streaming {
                    streaming = true;
                    line.clear();
                    let _ = write!(line, "#serialno:{}!\r\n#locid:{}!\r\n", s.serial, s.loc_id);
                    stream.write_all(line.as_bytes()).await?;
                }
                if text.contains("EEPROM1") {
                    eeprom_line(s, &mut line);
                    stream.write_all(line.as_bytes()).await?;
                }
                if text.contains("REQUEST1") {
                    frame_line(s, started.elapsed().as_secs_f64(), &mut line);
                    stream.write_all(line.as_bytes()).await?;
                }
            }
            _ = tick.tick(), if streaming => {
                let secs = started.elapsed().as_secs_f64();
                frame_line(s, secs, &mut line);
                stream.write_all(line.as_bytes()).await?;
                line.clear();
                let _ = write!(line, "#Sensor{}:ADC1={},ADC2=1310,ADC3:=1,DIO=0!\r\n", s.loc_id, smoke_adc(s, secs));
                stream.write_all(line.as_bytes()).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::proto::{Decoder, Event, Packet};
    use crate::sensor::thermal_compat::compat_celsius;

    fn sim(scenario: Scenario) -> Simulator {
        Simulator { loc_id: "1234".into(), serial: "SIM1".into(), scenario, interval_secs: 1.0, fire_after_secs: 3.0 }
    }

    #[test]
    fn frames_decode_back_to_the_scene() {
        let s = sim(Scenario::Fire);
        let mut line = String::new();
        frame_line(&s, 10.0, &mut line);
        let mut dec = Decoder::new();
        let mut max = f32::MIN;
        let mut frames = 0;
        let mut rest = line.as_bytes();
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            while let Some(ev) = dec.pull() {
                if let Event::Packet(Packet::Frame { loc, words }) = ev {
                    assert_eq!(loc, Some("1234"));
                    frames += 1;
                    for &w in &words[..768] {
                        max = max.max(compat_celsius(w, 0.0));
                    }
                }
            }
        }
        assert_eq!(frames, 1);
        let expected = scene_celsius(&s, 10.0, 12, 16) as f32;
        assert!((max - expected).abs() < 0.01, "{max} vs {expected}");
        assert!(max > 100.0);
    }

    #[test]
    fn idle_room_stays_cool_and_clean() {
        let s = sim(Scenario::Idle);
        assert!(scene_celsius(&s, 100.0, 12, 16) < 26.0);
        assert_eq!(smoke_adc(&s, 100.0), 275);
    }
}
