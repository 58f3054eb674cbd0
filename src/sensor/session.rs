//! Replays a recorded device session (JSONL of `{"t_ms","dir","data"}` records, as in the MLX90640 fixture)
//! through the same decoder the server uses, chunk by chunk as recorded, handing over each complete frame's
//! temperatures and counting rejections by reason. `ember-edge thermal decode` prints what this yields.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use crate::sensor::mlx90640::{self, Conditions, Params};
use crate::sensor::proto::{Decoder, Event, PIXELS, Packet};
use crate::sensor::thermal_compat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The Melexis algorithm with the session's EEPROM: real temperatures.
    Calibrated,
    /// EmberEye's formula, for side-by-side comparison.
    Compat,
}

#[derive(serde::Deserialize)]
struct Record {
    dir: String,
    data: String,
}

/// What the session contained.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub frames: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub sensors: u64,
    pub eeproms: u64,
    /// Frames that could not be calibrated because the session holds no valid EEPROM.
    pub uncalibrated: u64,
}

fn records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not a session record: {e}", path.display(), i + 1))?;
        out.push(r);
    }
    Ok(out)
}

/// Decodes `path`, calling `on_frame(k, temps, ta)` for each complete frame; returns the summary.
pub fn decode(
    path: &Path,
    mode: Mode,
    emissivity: f32,
    mut on_frame: impl FnMut(u64, &[f32; PIXELS], Option<f32>) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let recs = records(path)?;
    // A device's EEPROM does not change within a session, so frames that arrive before the first reply are
    // calibrated with it too (the live server drops such frames instead and counts them).
    let mut params: Option<Params> = None;
    if mode == Mode::Calibrated {
        let mut dec = Decoder::new();
        'find: for r in recs.iter().filter(|r| r.dir == "from_device") {
            let mut rest = r.data.as_bytes();
            while !rest.is_empty() {
                let n = dec.push(rest);
                rest = &rest[n..];
                while let Some(ev) = dec.pull() {
                    if let Event::Packet(Packet::Eeprom { words, .. }) = ev
                        && let Ok(p) = Params::from_eeprom(words)
                    {
                        params = Some(p);
                        break 'find;
                    }
                }
            }
        }
    }
    let cond = Conditions { emissivity, ..Default::default() };
    let mut summary = Summary::default();
    let mut dec = Decoder::new();
    let mut temps = Box::new([0f32; PIXELS]);
    for r in recs.iter().filter(|r| r.dir == "from_device") {
        let mut rest = r.data.as_bytes();
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            while let Some(ev) = dec.pull() {
                match ev {
                    Event::Rejected(why) => *summary.rejected.entry(why.reason()).or_default() += 1,
                    Event::Packet(Packet::Sensor { .. }) => summary.sensors += 1,
                    Event::Packet(Packet::Eeprom { .. }) => summary.eeproms += 1,
                    Event::Packet(Packet::Frame { words, .. }) => {
                        let ta = match (mode, &params) {
                            (Mode::Compat, _) => {
                                thermal_compat::compat_frame(words, 0.0, &mut temps);
                                None
                            }
                            (Mode::Calibrated, Some(p)) => Some(mlx90640::compute(p, words, &cond, &mut temps).ta_c),
                            (Mode::Calibrated, None) => {
                                summary.uncalibrated += 1;
                                continue;
                            }
                        };
                        on_frame(summary.frames, &temps, ta)?;
                        summary.frames += 1;
                    }
                    Event::Packet(_) => {}
                }
            }
        }
    }
    dec.finish();
    while let Some(ev) = dec.pull() {
        if let Event::Rejected(why) = ev {
            *summary.rejected.entry(why.reason()).or_default() += 1;
        }
    }
    Ok(summary)
}
