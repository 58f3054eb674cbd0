//! Board profiles (`board/*.toml`): what differs between a Raspberry Pi and a Jetson — the GPIO lines of the
//! alarm outputs and the ack button (by name, with polarity), default camera nodes and UARTs, the target
//! triple, the glibc floor and the cargo features a board build uses. A site config points at one; it is
//! parsed and checked with the site config and kept in `config::Loaded`.

use serde::Deserialize;
use std::path::Path;

use super::{ConfigProblem, PathSeg};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Human-readable board name.
    pub name: String,
    /// Rust target triple of the board's userland.
    pub target: String,
    /// Highest GLIBC symbol version a binary for this board may need (e.g. "2.34").
    pub glibc_max: String,
    /// Cargo features the board's build enables.
    #[serde(default)]
    pub features: Vec<String>,
    pub gpio: Gpio,
    #[serde(default)]
    pub cameras: Vec<CameraNode>,
    #[serde(default)]
    pub uarts: Vec<Uart>,
    /// Free-form installer notes.
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioBackend {
    /// Linux GPIO character device: every board.
    Gpiocdev,
    /// Raspberry Pi register access (Pi only).
    Rppal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpio {
    pub backend: GpioBackend,
    /// Character device of the chip holding the lines, e.g. "/dev/gpiochip0".
    pub chip: String,
    /// Consumer label shown by `gpioinfo`.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    pub relay: Line,
    pub siren: Line,
    pub trouble_led: Line,
    pub ack_button: Line,
    /// Optional manual input (a key switch or a second button, EN 54-2 §7.11): while an output delay runs, its
    /// activation cuts the delay in every zone (outputs on at once), as the ack button's long press does.
    #[serde(default)]
    pub manual_input: Option<Line>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Line name as the kernel reports it (gpioinfo), e.g. "GPIO17" on a Pi.
    pub name: String,
    /// Line offset on the chip: the BCM number for rppal; optional for gpiocdev, which finds lines by name.
    #[serde(default)]
    pub offset: Option<u32>,
    /// Active means "energised/pressed"; true when the hardware is wired active-low.
    #[serde(default)]
    pub active_low: bool,
    /// Inputs only: debounce period.
    #[serde(default)]
    pub debounce_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraNode {
    pub device: String,
    /// FourCC the camera delivers, e.g. "MJPG" or "YUYV".
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uart {
    pub path: String,
    pub baud: u32,
}

fn default_consumer() -> String {
    "ember-edge".into()
}

fn validate(b: &Board) -> Vec<(Vec<PathSeg>, String)> {
    let mut out = Vec::new();
    let key = |k: &str| PathSeg::Key(k.to_owned());
    if !["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"].contains(&b.target.as_str()) {
        out.push((vec![key("target")], format!("unsupported target `{}`", b.target)));
    }
    let glibc_ok = b.glibc_max.split_once('.').is_some_and(|(a, c)| a == "2" && c.parse::<u32>().is_ok());
    if !glibc_ok {
        out.push((vec![key("glibc_max")], format!("glibc_max must look like 2.34, got `{}`", b.glibc_max)));
    }
    let mut lines = vec![
        ("relay", &b.gpio.relay),
        ("siren", &b.gpio.siren),
        ("trouble_led", &b.gpio.trouble_led),
        ("ack_button", &b.gpio.ack_button),
    ];
    lines.extend(b.gpio.manual_input.as_ref().map(|l| ("manual_input", l)));
    for (i, (n, l)) in lines.iter().enumerate() {
        if lines[..i].iter().any(|(_, o)| o.name == l.name) {
            out.push((vec![key("gpio"), key(n), key("name")], format!("gpio {n} reuses line `{}`", l.name)));
        }
        if b.gpio.backend == GpioBackend::Rppal && l.offset.is_none() {
            out.push((vec![key("gpio"), key(n)], format!("gpio {n} needs `offset` (the BCM number) for rppal")));
        }
    }
    for (i, u) in b.uarts.iter().enumerate() {
        if ![9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600].contains(&u.baud) {
            out.push((vec![key("uarts"), PathSeg::Index(i), key("baud")], format!("unusual baud rate {}", u.baud)));
        }
    }
    out
}

pub fn load_str(name: &str, text: &str) -> Result<Board, Vec<ConfigProblem>> {
    let b: Board = super::parse_all(name, text)?;
    let problems: Vec<ConfigProblem> =
        validate(&b).into_iter().map(|(p, m)| super::locate(name, text, &p, m)).collect();
    if problems.is_empty() { Ok(b) } else { Err(problems) }
}

pub fn load_file(path: &Path) -> Result<Board, Vec<ConfigProblem>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem { file: name.clone(), line: 0, col: 0, message: format!("cannot read: {e}") }]
    })?;
    load_str(&name, &text)
}
