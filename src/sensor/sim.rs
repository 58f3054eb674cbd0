//! A simulated EmberEye field device that behaves like the real firmware: it connects to the appliance's
//! sensor port, waits for `PERIOD_ON`, announces its serial number and loc id, then streams a 3336-hex
//! MLX90640 frame and a `#Sensor` packet every interval (`…!\r\n`, like the real device), answers `EEPROM1`
//! with a real sensor's EEPROM and `REQUEST1` with one frame. Pixel words are solved so that the *calibrated*
//! (Melexis) temperatures follow the scenario; EmberEye's compat formula under-reads them, as with real heat.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mlx90640::{self, Conditions, Params};
use super::proto::{FRAME_WORDS, GRID_W, PIXELS};
use super::sim_device_data::{AUX, EEPROM};

/// The real sensor calibration image the simulator (and the load tool) present.
pub const DEVICE_EEPROM: &[u16; 832] = &EEPROM;
use crate::config::{Scenario, Simulator};

/// Temperature of the simulated room at pixel (r, c), `secs` after the simulation started.
pub fn scene_celsius(s: &Simulator, secs: f64, r: usize, c: usize) -> f64 {
    let ambient = 24.0 + 0.5 * ((r as f64) * 0.3).sin() * ((c as f64) * 0.3).cos();
    let burning = secs - s.fire_after_secs;
    let d = (r as f64 - 12.0).abs() + (c as f64 - 16.0).abs();
    match s.scenario {
        // A fast-flaming fire seen by a thermal array: the core heats at 12 °C/s, capped at the sensor's 300 °C.
        Scenario::Fire if burning > 0.0 => {
            let core = (ambient + 12.0 * burning).min(300.0);
            (core - 25.0 * d).max(ambient)
        }
        // Smouldering: a warm patch rising slowly.
        Scenario::Smoke if burning > 0.0 => {
            let core = (ambient + 0.5 * burning).min(60.0);
            (core - 4.0 * d).max(ambient)
        }
        _ => ambient,
    }
}

/// ADC1 (smoke) raw value: the real device idles near 275; smoke builds once a fire or smoulder starts.
pub fn smoke_adc(s: &Simulator, secs: f64) -> u32 {
    let burning = secs - s.fire_after_secs;
    let rate = match s.scenario {
        Scenario::Fire => 300.0,
        Scenario::Smoke => 150.0,
        _ => 0.0,
    };
    if burning <= 0.0 || rate == 0.0 {
        return 275 + (secs as u32 % 7);
    }
    // A saturated sensor still has a few counts of noise; a flat value would be "ADC not changing" trouble.
    ((275.0 + rate * burning).min(3900.0) as u32).saturating_sub(secs as u32 % 5)
}

/// Builds frames whose calibrated temperatures match a target scene.
pub struct FrameSynth {
    params: Params,
    cond: Conditions,
    words: Box<[u16; FRAME_WORDS]>,
    lo: Box<[i32; PIXELS]>,
    hi: Box<[i32; PIXELS]>,
    temps: Box<[f32; PIXELS]>,
}

impl FrameSynth {
    pub fn new() -> Result<Self, mlx90640::CalibError> {
        let params = Params::from_eeprom(&EEPROM)?;
        let mut words = Box::new([0u16; FRAME_WORDS]);
        words[PIXELS..].copy_from_slice(&AUX);
        Ok(FrameSynth {
            params,
            cond: Conditions::default(),
            words,
            lo: Box::new([0; PIXELS]),
            hi: Box::new([0; PIXELS]),
            temps: Box::new([0.0; PIXELS]),
        })
    }

    /// Solves every pixel word at once by bisection: each pixel's temperature depends only on its own word
    /// and the shared aux words, and rises with the word.
    pub fn frame(&mut self, target: impl Fn(usize, usize) -> f64) -> &[u16; FRAME_WORDS] {
        self.lo.fill(i16::MIN as i32);
        self.hi.fill(i16::MAX as i32);
        for _ in 0..17 {
            for i in 0..PIXELS {
                self.words[i] = (((self.lo[i] + self.hi[i]) / 2) as i16) as u16;
            }
            mlx90640::compute(&self.params, &self.words, &self.cond, &mut self.temps);
            for i in 0..PIXELS {
                let mid = (self.lo[i] + self.hi[i]) / 2;
                let t = self.temps[i];
                // Far below any real scene the Melexis formula has no real root (NaN): that is "too cold".
                let too_cold = if t.is_finite() { (t as f64) < target(i / GRID_W, i % GRID_W) } else { mid < 0 };
                if too_cold {
                    self.lo[i] = mid;
                } else {
                    self.hi[i] = mid;
                }
            }
        }
        for i in 0..PIXELS {
            self.words[i] = (self.hi[i] as i16) as u16;
        }
        &self.words
    }
}

/// Sensor noise: a real MLX90640 pixel wanders by about ±0.1 °C frame to frame (and the appliance flags a
/// sensor whose frames repeat exactly as frozen).
fn noise(secs: f64, r: usize, c: usize) -> f64 {
    let seed = (secs.to_bits() ^ ((r * GRID_W + c) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    (crate::prng::XorShift64::new(seed).below(2001) as f64 / 1000.0 - 1.0) * 0.15
}

fn frame_line(s: &Simulator, synth: &mut FrameSynth, secs: f64, out: &mut String) {
    out.clear();
    let _ = write!(out, "#frame{}:", s.loc_id);
    for w in synth.frame(|r, c| scene_celsius(s, secs, r, c) + noise(secs, r, c)).iter() {
        let _ = write!(out, "{w:04X}");
    }
    out.push_str("!\r\n");
}

fn eeprom_line(s: &Simulator, out: &mut String) {
    out.clear();
    let _ = write!(out, "#EEPROM{}:", s.loc_id);
    for w in EEPROM.iter() {
        let _ = write!(out, "{w:04X}");
    }
    out.push_str("!\r\n");
}

/// Runs the device against `target` until stopped, reconnecting like field devices do.
pub async fn run(s: Simulator, target: SocketAddr, stop: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut synth = FrameSynth::new().map_err(|e| anyhow::anyhow!("simulator calibration: {e}"))?;
    let mut sessions = 0u64;
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = TcpStream::connect(target) => c,
        };
        match conn {
            Ok(stream) => {
                sessions += 1;
                if let Err(e) = session(&s, &mut synth, stream, started, sessions, &stop).await {
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
    synth: &mut FrameSynth,
    mut stream: S,
    started: Instant,
    session_no: u64,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let mut cmd = [0u8; 256];
    let mut streaming = false;
    let mut line = String::with_capacity(4096);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(s.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frames = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = stream.read(&mut cmd) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                // Like the firmware, one read is one command; case and trailing CR/LF do not matter here.
                let text = String::from_utf8_lossy(&cmd[..n]).to_ascii_uppercase();
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
                    frame_line(s, synth, started.elapsed().as_secs_f64(), &mut line);
                    stream.write_all(line.as_bytes()).await?;
                }
            }
            _ = tick.tick(), if streaming => {
                frames += 1;
                let secs = started.elapsed().as_secs_f64();
                frame_line(s, synth, secs, &mut line);
                if s.scenario == Scenario::Flaky {
                    // A noisy link: every 5th frame loses bytes, every 12th frame the link drops.
                    if frames.is_multiple_of(12) && session_no % 2 == 1 {
                        return Ok(());
                    }
                    if frames.is_multiple_of(5) {
                        line.replace_range(100..109, "");
                    }
                }
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
    use crate::sensor::proto::{Decoder, Event, GRID_H, Packet};

    fn sim(scenario: Scenario) -> Simulator {
        Simulator { loc_id: "1234".into(), serial: "SIM1".into(), scenario, interval_secs: 1.0, fire_after_secs: 3.0 }
    }

    #[test]
    fn calibrated_temperatures_follow_the_scene() {
        let s = sim(Scenario::Fire);
        let mut synth = FrameSynth::new().unwrap();
        let mut line = String::new();
        frame_line(&s, &mut synth, 10.0, &mut line);
        let mut dec = Decoder::new();
        let params = Params::from_eeprom(&EEPROM).unwrap();
        let mut temps = [0f32; PIXELS];
        let mut rest = line.as_bytes();
        let mut frames = 0;
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            while let Some(ev) = dec.pull() {
                if let Event::Packet(Packet::Frame { loc, words }) = ev {
                    assert_eq!(loc, Some("1234"));
                    frames += 1;
                    mlx90640::compute(&params, words, &Conditions::default(), &mut temps);
                }
            }
        }
        assert_eq!(frames, 1);
        for r in 0..GRID_H {
            for c in 0..GRID_W {
                let want = scene_celsius(&s, 10.0, r, c) as f32;
                let got = temps[r * GRID_W + c];
                assert!((got - want).abs() < 0.6, "pixel ({r},{c}): {got} vs {want} (noise is ±0.15)");
            }
        }
        assert!(temps.iter().copied().fold(f32::MIN, f32::max) > 100.0);
    }

    #[test]
    fn idle_room_stays_cool_and_clean() {
        let s = sim(Scenario::Idle);
        assert!(scene_celsius(&s, 100.0, 12, 16) < 26.0);
        assert!(smoke_adc(&s, 100.0) < 300);
        let smoke = sim(Scenario::Smoke);
        assert!(scene_celsius(&smoke, 30.0, 12, 16) < 40.0);
        assert!(smoke_adc(&smoke, 30.0) > 1024, "smoulder reaches the 25 % smoke level");
    }
}
