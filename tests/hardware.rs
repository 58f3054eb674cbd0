//! Hardware tests against real kernel drivers. Ignored on a development machine (it has no gpiochip);
//! `board/qemu-test.sh system` runs them inside qemu-system-aarch64 with `--include-ignored`, where the rig
//! (board/qemu/init) creates a gpio-sim bank and exports:
//!   EMBER_GPIO_SIM_CHIP   /dev/gpiochipN of the bank (8 lines, no names)
//!   EMBER_GPIO_SIM_SYSFS  its sysfs folder, with sim_gpioN/value (what the lines drive) and sim_gpioN/pull
//! A test fails loudly if it is run (not ignored) without them.

use std::path::PathBuf;
use std::time::Duration;

use ember_edge::alarm::gpio::{GpioOutputs, watch_button};
use ember_edge::alarm::{AlarmOutput, Outputs, Siren};
use ember_edge::board::{Gpio, Line};
use ember_edge::event::{Observation, OperatorCmd};
use ember_edge::queue::{Overflow, Queue};

fn rig() -> (String, PathBuf) {
    let chip = std::env::var("EMBER_GPIO_SIM_CHIP").expect("EMBER_GPIO_SIM_CHIP: run this inside the QEMU rig");
    let sysfs = std::env::var("EMBER_GPIO_SIM_SYSFS").expect("EMBER_GPIO_SIM_SYSFS: run this inside the QEMU rig");
    (chip, PathBuf::from(sysfs))
}

fn line(offset: u32, active_low: bool) -> Line {
    // gpio-sim lines have no names: the lookup by name fails and the offset is used, as on unnamed chips.
    Line { name: format!("ember-test-{offset}"), offset: Some(offset), active_low, debounce_ms: 5 }
}

fn profile(chip: &str) -> Gpio {
    Gpio {
        backend: ember_edge::board::GpioBackend::Gpiocdev,
        chip: chip.to_owned(),
        consumer: "ember-edge-test".into(),
        relay: line(0, true),
        siren: line(1, false),
        trouble_led: line(2, false),
        ack_button: line(3, true),
    }
}

fn physical(sysfs: &std::path::Path, n: u32) -> u8 {
    let v = std::fs::read_to_string(sysfs.join(format!("sim_gpio{n}/value"))).unwrap();
    v.trim().parse().unwrap()
}

#[test]
#[ignore = "needs gpio-sim: run by board/qemu-test.sh system"]
fn outputs_drive_gpio_sim_lines_with_polarity_and_return_to_safe() {
    let (chip, sysfs) = rig();
    let mut out = GpioOutputs::open(&profile(&chip)).unwrap();
    // Safe at start: the active-low relay line sits high (coil off), the others low.
    assert_eq!((physical(&sysfs, 0), physical(&sysfs, 1), physical(&sysfs, 2)), (1, 0, 0));
    out.apply(Outputs { relay: true, siren: Siren::Steady, trouble_led: true }).unwrap();
    assert_eq!((physical(&sysfs, 0), physical(&sysfs, 1), physical(&sysfs, 2)), (0, 1, 1));
    // Pulsed siren: the line toggles on each tick.
    out.apply(Outputs { relay: true, siren: Siren::Pulsed, trouble_led: false }).unwrap();
    let a = physical(&sysfs, 1);
    out.tick().unwrap();
    assert_ne!(physical(&sysfs, 1), a);
    out.safe().unwrap();
    assert_eq!((physical(&sysfs, 0), physical(&sysfs, 1), physical(&sysfs, 2)), (1, 0, 0));
}

#[tokio::test]
#[ignore = "needs gpio-sim: run by board/qemu-test.sh system"]
async fn a_button_press_injected_by_the_harness_becomes_an_operator_command() {
    let (chip, sysfs) = rig();
    let pull = |v: &str| std::fs::write(sysfs.join("sim_gpio3/pull"), v).unwrap();
    pull("pull-up"); // released (active-low button)
    let q: Queue<Observation> = Queue::new("t", 16, Overflow::DropOldest);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(watch_button(profile(&chip), q.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    pull("pull-down"); // pressed
    tokio::time::sleep(Duration::from_millis(300)).await;
    pull("pull-up"); // released after 0.3 s: a short press
    let ev = tokio::time::timeout(Duration::from_secs(5), q.pop()).await.expect("no button event");
    assert!(matches!(ev, Observation::Operator { zone: None, cmd: OperatorCmd::Button, .. }), "{ev:?}");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// rppal on QEMU's raspi3b machine (BCM2837 registers through /dev/mem; the rig boots with iomem=relaxed).
#[cfg(feature = "rppal")]
#[test]
#[ignore = "needs a Raspberry Pi or QEMU raspi3b: run by board/qemu-test.sh system"]
fn rppal_toggles_pins_on_raspi3b() {
    if std::env::var("EMBER_QEMU_MACHINE").as_deref() != Ok("raspi3b") {
        eprintln!("not a Raspberry Pi machine: rppal is checked on the raspi3b pass");
        return;
    }
    let bcm = |n: u32, active_low: bool| Line { name: format!("GPIO{n}"), offset: Some(n), active_low, debounce_ms: 0 };
    let g = Gpio {
        backend: ember_edge::board::GpioBackend::Rppal,
        chip: "/dev/gpiochip0".into(),
        consumer: "ember-edge-test".into(),
        relay: bcm(17, true),
        siren: bcm(27, false),
        trouble_led: bcm(22, false),
        ack_button: bcm(23, true),
    };
    let mut out = ember_edge::alarm::rppal_backend::RppalOutputs::open(&g).unwrap();
    assert_eq!(out.levels(), [true, false, false], "safe: active-low relay high, others low");
    out.apply(Outputs { relay: true, siren: Siren::Steady, trouble_led: true }).unwrap();
    assert_eq!(out.levels(), [false, true, true]);
    out.safe().unwrap();
    assert_eq!(out.levels(), [true, false, false]);
}
