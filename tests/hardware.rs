//! Hardware tests against real kernel drivers. Not part of plain `cargo test` (Cargo.toml: `test = false`; a
//! development machine has no gpiochip); `board/qemu-test.sh system` builds them with `--test hardware` and
//! runs them inside qemu-system-aarch64, where the rig (board/qemu/init) creates a gpio-sim bank and exports:
//!   EMBER_GPIO_SIM_CHIP   /dev/gpiochipN of the bank (8 lines, no names)
//!   EMBER_GPIO_SIM_SYSFS  its sysfs folder, with sim_gpioN/value (what the lines drive) and sim_gpioN/pull
//! A test fails loudly if it is run without them.

use std::path::PathBuf;
use std::time::Duration;

use ember_edge::alarm::gpio::{GpioOutputs, LONG_PRESS, watch_button, watch_manual_input};
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
        manual_input: Some(line(4, true)),
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

#[tokio::test]
async fn the_manual_input_cuts_the_output_delays() {
    let (chip, sysfs) = rig();
    let pull = |v: &str| std::fs::write(sysfs.join("sim_gpio4/pull"), v).unwrap();
    pull("pull-up"); // inactive (active-low key switch)
    let q: Queue<Observation> = Queue::new("t", 16, Overflow::DropOldest);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(watch_manual_input(profile(&chip), q.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.is_empty(), "nothing before the input is operated");
    pull("pull-down"); // operated
    let ev = tokio::time::timeout(Duration::from_secs(5), q.pop()).await.expect("no manual input event");
    assert!(matches!(ev, Observation::Operator { zone: None, cmd: OperatorCmd::CutDelay, .. }), "{ev:?}");
    pull("pull-up"); // released: no second command
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.is_empty(), "release is not an activation");
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
        manual_input: None,
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

/// The board's hardware watchdog: the i6300esb PCI watchdog on the virt machine (the rig adds `-device i6300esb`,
/// loads its driver and exports EMBER_WATCHDOG_DEVICE (`/dev/watchdog0`) and EMBER_WATCHDOG_SYSFS (its
/// `/sys/class/watchdog/watchdogN`, where the kernel shows whether it is armed and with what timeout). raspi3b has
/// no watchdog QEMU emulates, so there the tests say so and pass. The reboot itself is observed by the rig: the
/// stall test never returns (board/qemu/init runs it alone, last, and the next boot reports the watchdog reset).
mod watchdog {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use ember_edge::alarm::{AlarmOutput, Outputs};
    use ember_edge::app::{App, Overrides};

    /// Short, so "several timeouts" stays a few seconds of CI; three feeds per timeout leave 1.3 s between feeds.
    const SECS: u64 = 4;

    fn rig() -> Option<(String, std::path::PathBuf)> {
        let dev = std::env::var("EMBER_WATCHDOG_DEVICE").ok().filter(|d| !d.is_empty());
        let sysfs = std::env::var("EMBER_WATCHDOG_SYSFS").ok().filter(|d| !d.is_empty());
        match (dev, sysfs) {
            (Some(d), Some(s)) => Some((d, s.into())),
            _ => {
                assert_ne!(
                    std::env::var("EMBER_QEMU_MACHINE").as_deref(),
                    Ok("virt"),
                    "the virt machine has the i6300esb: EMBER_WATCHDOG_DEVICE must be set"
                );
                eprintln!("no hardware watchdog on this machine: checked on the virt pass");
                None
            }
        }
    }

    fn attr(sysfs: &std::path::Path, name: &str) -> String {
        std::fs::read_to_string(sysfs.join(name)).map(|s| s.trim().to_owned()).unwrap_or_default()
    }

    fn wait_for_state(sysfs: &std::path::Path, want: &str, within: Duration) {
        let t0 = Instant::now();
        while attr(sysfs, "state") != want {
            assert!(t0.elapsed() < within, "watchdog state {:?}, want {want:?}", attr(sysfs, "state"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The appliance with only a sensor device (no camera: cheap under emulation) and the hardware watchdog on.
    fn config(dev: &str) -> String {
        format!(
            "[telemetry]\nlisten = \"127.0.0.1:0\"\n[runtime]\nhardware_watchdog = \"{dev}\"\n\
             hardware_watchdog_secs = {SECS}\n[sensors]\nlisten = [\"127.0.0.1:0\"]\n\
             [[sensors.devices]]\nname = \"dev\"\nloc_id = \"1234\"\n[[zones]]\nname = \"room\"\ndevices = [\"dev\"]\n"
        )
    }

    /// The shipped binary (`ember-edge run`, as the service starts it): it arms the device with the configured
    /// timeout, keeps the board up for several timeouts while healthy, and a SIGTERM (systemd's stop) ends with the
    /// magic close: the kernel shows the watchdog inactive and no reset follows in several more timeouts.
    #[test]
    fn a_healthy_appliance_keeps_the_board_up_and_a_clean_stop_disarms_the_watchdog() {
        let Some((dev, sysfs)) = rig() else { return };
        let bin = std::env::var("EMBER_QEMU_BIN").ok().filter(|b| !b.is_empty()).expect("EMBER_QEMU_BIN: --bin");
        let dir = std::env::temp_dir().join(format!("ember-wdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("wdog.toml");
        std::fs::write(&cfg, config(&dev)).unwrap();
        assert_eq!(attr(&sysfs, "state"), "inactive", "nobody holds the watchdog before the appliance");
        let mut child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&l);
                all.push('\n');
            }
            all
        });
        wait_for_state(&sysfs, "active", Duration::from_secs(60));
        assert_eq!(attr(&sysfs, "timeout"), SECS.to_string(), "the configured timeout is in force");
        // Several timeouts: were the feeding to stop, the board would reset and this test would never end.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(4 * SECS) {
            assert!(child.try_wait().unwrap().is_none(), "the appliance exited");
            assert_eq!(attr(&sysfs, "state"), "active");
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("healthy for {:.1} s = {} timeouts of {SECS} s, no reset", t0.elapsed().as_secs_f64(), 4);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let log = log.join().unwrap();
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        assert!(log.contains(&format!("hardware watchdog {dev} armed: {SECS} s")), "{log}");
        assert!(log.contains(&format!("hardware watchdog {dev} disarmed")), "{log}");
        assert!(!log.contains("not feeding the hardware watchdog"), "{log}");
        // The magic close: the driver stopped the timer; nothing feeds it now and nothing may reset the board.
        assert_eq!(attr(&sysfs, "state"), "inactive", "the magic close disarmed the watchdog");
        std::thread::sleep(Duration::from_secs(3 * SECS));
        assert_eq!(attr(&sysfs, "state"), "inactive");
        eprintln!("clean stop: disarmed, no reset in {} s", 3 * SECS);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An alarm output driver that hangs (a relay board that never answers) once `hang` is set: the fusion loop
    /// calls it every half second, so the loop itself stalls, as it would on a real hung driver. The hang is
    /// wrapped in `block_in_place`, which hands the rest of this worker's tasks to another thread: only the fusion
    /// loop stalls, so the test shows the health gate stopping the feed, not a runtime worker that took the
    /// watchdog's task down with it (that would reset the board too, but without naming the part).
    struct HangingOutput {
        hang: Arc<AtomicBool>,
    }

    impl AlarmOutput for HangingOutput {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn apply(&mut self, _: Outputs) -> std::io::Result<()> {
            Ok(())
        }
        fn tick(&mut self) -> std::io::Result<()> {
            if self.hang.load(Ordering::Relaxed) {
                tokio::task::block_in_place(|| {
                    while self.hang.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
            Ok(())
        }
    }

    /// The appliance (in this process, with a hanging output driver) stalls its fusion loop: fusion stops beating,
    /// the health gate names it, the feeding stops and the i6300esb resets the board. The test never returns
    /// when that works; board/qemu/init runs it last and alone (it is in the rig's `--reboot-test`) and the next
    /// boot prints the kernel's reset reason. Returning is a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stalled_fusion_loop_reboots_the_board() {
        let Some((dev, sysfs)) = rig() else { return };
        let loaded = ember_edge::config::load_str("wdog.toml", &config(&dev), std::path::Path::new("."))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let hang = Arc::new(AtomicBool::new(false));
        let app = App::start(
            &loaded,
            Overrides { alarm: Some(Box::new(HangingOutput { hang: Arc::clone(&hang) })), ..Default::default() },
        )
        .await
        .unwrap();
        let s = sysfs.clone();
        tokio::task::spawn_blocking(move || wait_for_state(&s, "active", Duration::from_secs(60))).await.unwrap();
        // Healthy first: one timeout and more, fed.
        tokio::time::sleep(Duration::from_secs(2 * SECS)).await;
        assert!(app.health.dead(tokio::time::Instant::now()).is_empty(), "healthy before the stall");
        eprintln!("WDOG-STALL: fusion loop stalled now (watchdog {dev}, {SECS} s)");
        hang.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let mut named = false;
        let mut said = 0;
        while t0.elapsed() < Duration::from_secs(60) {
            let dead = app.health.dead(tokio::time::Instant::now());
            if !named && !dead.is_empty() {
                eprintln!("WDOG-STALL: +{:.1} s health gate closed: {}", t0.elapsed().as_secs_f64(), dead.join(", "));
                named = true;
            }
            // A timeline on the console: the last line before the reset says how long the board lived on.
            if t0.elapsed().as_secs() > said {
                said = t0.elapsed().as_secs();
                eprintln!("WDOG-STALL: +{said} s, watchdog {}", attr(&sysfs, "state"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the board was not reset 60 s after the fusion loop stalled (gate closed: {named})");
    }
}
