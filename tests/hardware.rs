//! Hardware tests against real kernel drivers. Not part of plain `cargo test` (Cargo.toml: `test = false`; a
//! development machine has no gpiochip); `board/qemu-test.sh system` builds them with `--test hardware` and
//! runs them inside qemu-system-aarch64, where the rig (board/qemu/init) creates a gpio-sim bank and exports:
//!   EMBER_GPIO_SIM_CHIP   /dev/gpiochipN of the bank (8 lines, no names)
//!   EMBER_GPIO_SIM_SYSFS  its sysfs folder, with sim_gpioN/value (what the lines drive) and sim_gpioN/pull
//! A test fails loudly if it is run without them.

use std::path::PathBuf;
use std::time::Duration;

use ember_edge::alarm::gpio::{GpioOutputs, LONG_PRESS, watch_button};
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
async fn a_button_press_injected_by_the_harness_becomes_an_operator_command() {
    let (chip, sysfs) = rig();
    let pull = |v: &str| std::fs::write(sysfs.join("sim_gpio3/pull"), v).unwrap();
    pull("pull-up"); // released (active-low button)
    let q: Queue<Observation> = Queue::new("t", 16, Overflow::DropOldest);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(watch_button(profile(&chip), LONG_PRESS, q.clone(), stop.clone()));
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

/// The V4L2 source against vivid (the rig loads it and exports EMBER_VIDEO_DEVICE): the same capture thread
/// `source = "v4l2"` runs, reading real frames through MMAP streaming into the frame pool.
#[cfg(feature = "v4l2")]
mod v4l2 {
    use std::sync::Arc;
    use std::time::Duration;

    use ember_edge::app::{App, Overrides};
    use ember_edge::camera::Latest;
    use ember_edge::camera::rate::Rate;
    use ember_edge::camera::v4l2::{V4l2Camera, V4l2Counters, negotiate};
    use ember_edge::config::{CaptureFormat, DetectorKind};
    use ember_edge::frame::{FramePool, PixelFormat};
    use ember_edge::telemetry::{Counter, Health, Registry};

    fn device() -> String {
        std::env::var("EMBER_VIDEO_DEVICE")
            .ok()
            .filter(|d| !d.is_empty())
            .expect("EMBER_VIDEO_DEVICE: run this inside the QEMU rig (vivid)")
    }

    /// Captures `n` frames through the product's source; returns (width, height, format, FNV hash) of each
    /// and the count of bad frames.
    async fn capture(format: CaptureFormat, n: usize) -> (Vec<(usize, usize, PixelFormat, u64)>, u64) {
        let registry = Registry::new();
        let health = Health::new();
        let out = Arc::new(Latest::new(Counter::default()));
        let pool = FramePool::new(4, PixelFormat::Rgb24.frame_len(640, 480));
        let counters = V4l2Counters::new(&registry, "vivid");
        let (captured, errors) = (counters.captured.clone(), counters.errors.clone());
        let cam = V4l2Camera {
            camera: 0,
            name: "vivid".into(),
            device: device(),
            format,
            width: 320,
            height: 240,
            fps: 30.0,
            rate: Arc::new(Rate::new(30.0)),
            max_width: 640,
            max_height: 480,
            max_denom: 8,
            pool,
            out: Arc::clone(&out),
            counters,
            part: health.register("camera:vivid", None),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(cam.run(stop.clone()));
        let mut seen = Vec::new();
        let mut last_seq = 0;
        while seen.len() < n {
            let f =
                tokio::time::timeout(Duration::from_secs(30), out.take()).await.expect("no frame from vivid in 30 s");
            assert!(f.meta.seq > last_seq, "frames arrive in order");
            last_seq = f.meta.seq;
            let px = f.pixels();
            assert_eq!(px.len(), f.meta.format.frame_len(f.meta.width, f.meta.height));
            let hash = px.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
            seen.push((f.meta.width, f.meta.height, f.meta.format, hash));
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("capture thread did not stop")
            .unwrap()
            .unwrap();
        assert!(captured.get() >= n as u64);
        (seen, errors.get())
    }

    #[tokio::test]
    async fn vivid_yuyv_frames_arrive_with_the_granted_size_and_changing_content() {
        let (_, g) = negotiate(&device(), CaptureFormat::Yuyv, 320, 240, 30.0).unwrap();
        println!(
            "vivid granted {} {}x{} stride {} at {} fps ({} '{}')",
            g.fourcc, g.width, g.height, g.stride, g.fps, g.driver, g.card
        );
        assert_eq!(g.fourcc, "YUYV");
        let (frames, bad) = capture(CaptureFormat::Yuyv, 12).await;
        assert_eq!(bad, 0, "no frame may fail the size checks");
        for (w, h, fmt, _) in &frames {
            assert_eq!((*w, *h, *fmt), (g.width as usize, g.height as usize, PixelFormat::Yuyv));
        }
        let distinct = frames.windows(2).filter(|p| p[0].3 != p[1].3).count();
        println!(
            "YUYV: {} frames of {}x{}, {distinct} of {} consecutive pairs differ",
            frames.len(),
            g.width,
            g.height,
            frames.len() - 1
        );
        assert!(distinct * 2 >= frames.len() - 1, "vivid's picture should change between frames");
    }

    /// The value of one series in the registry's text rendering.
    fn series(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    /// A `v4l2` camera with only `device` set (format, size and detector at their defaults: YUYV, the grid
    /// detector) scores its frames in the appliance: they reach detection and go on to fusion as vision scores.
    #[tokio::test]
    async fn a_v4l2_camera_with_only_its_device_set_scores_frames() {
        let text = format!(
            "[telemetry]\nlisten = \"127.0.0.1:0\"\n[sensors]\nlisten = [\"127.0.0.1:0\"]\n\
             [[cameras]]\nname = \"usb\"\nsource = \"v4l2\"\ndevice = \"{}\"\n\
             [[zones]]\nname = \"room\"\ncameras = [\"usb\"]\n",
            device()
        );
        let loaded = ember_edge::config::load_str("hw.toml", &text, std::path::Path::new("."))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let cam = &loaded.config.cameras[0];
        assert_eq!((cam.format, cam.detector), (CaptureFormat::Yuyv, DetectorKind::Grid), "the defaults");
        let app = App::start(&loaded, Overrides::default()).await.unwrap();
        let scored = "ember_detect_frames_total{camera=\"usb\"}";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let text = loop {
            let text = app.registry.render();
            if series(&text, scored).unwrap_or(0.0) >= 10.0 || tokio::time::Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        app.shutdown().await;
        println!(
            "v4l2 defaults: {} frames scored, {} unsupported, last score {}, mode {}",
            series(&text, scored).unwrap_or(0.0),
            series(&text, "ember_detect_unsupported_total{camera=\"usb\"}").unwrap_or(-1.0),
            series(&text, "ember_vision_score{camera=\"usb\"}").unwrap_or(-1.0),
            series(&text, "ember_camera_mode{camera=\"usb\"}").unwrap_or(-1.0),
        );
        assert!(series(&text, scored).unwrap_or(0.0) >= 10.0, "YUYV frames must be scored:\n{text}");
        assert_eq!(series(&text, "ember_detect_unsupported_total{camera=\"usb\"}"), Some(0.0), "{text}");
        // vivid's test pattern is in colour: the camera stays in day mode, so its scores are colour evidence.
        assert_eq!(series(&text, "ember_camera_mode{camera=\"usb\"}"), Some(0.0), "{text}");
    }

    #[tokio::test]
    async fn vivid_mjpeg_is_captured_if_offered_or_refused_with_the_offered_formats() {
        match negotiate(&device(), CaptureFormat::Mjpeg, 320, 240, 30.0) {
            Ok((_, g)) => {
                println!("vivid offers MJPG: {}x{}", g.width, g.height);
                let (frames, _) = capture(CaptureFormat::Mjpeg, 10).await;
                assert!(frames.iter().all(|f| f.2 == PixelFormat::Rgb24 && f.0 > 0 && f.1 > 0));
            }
            Err(e) => {
                println!("MJPEG: {e}");
                assert!(e.contains("does not offer MJPG") && e.contains("YUYV"), "{e}");
            }
        }
    }
}
