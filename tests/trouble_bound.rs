//! The fault bound, in paused time: with the default thresholds, a sensor device that goes silent, or whose
//! smoke channel sticks at one value, puts its zone in TROUBLE within 100 s (the time EN 54-2 gives a panel
//! to indicate a fault). The device layer is driven as the sensor link drives it (a reading, then the
//! liveness tick every second) and its observations go through fusion, so the bound covers the whole path
//! from the source to the zone state.

use std::sync::Arc;
use std::time::Duration;

use ember_edge::event::{Observation, ZoneState};
use ember_edge::fusion::Fusion;
use ember_edge::queue::{Overflow, Queue};
use ember_edge::sensor::device::Devices;
use ember_edge::sensor::proto::{Decoder, Event, Packet};
use tokio::time::Instant;

/// One device and one zone, every supervision setting at its default.
const SITE: &str = "[[sensors.devices]]\nname = \"d\"\nloc_id = \"1\"\n[[zones]]\nname = \"z\"\ndevices = [\"d\"]\n";

const BOUND: Duration = Duration::from_secs(100);

struct Rig {
    devices: Arc<Devices>,
    obs: Queue<Observation>,
    fusion: Fusion,
    decoder: Decoder,
}

impl Rig {
    fn new() -> Rig {
        let loaded = ember_edge::config::load_str("t.toml", SITE, std::path::Path::new(".")).unwrap();
        let reg = ember_edge::telemetry::Registry::new();
        let obs = Queue::new("t", 256, Overflow::DropOldest);
        let devices = Arc::new(Devices::new(&loaded.config.sensors, &reg, obs.clone()));
        Rig { devices, obs, fusion: Fusion::from_config(&loaded.config), decoder: Decoder::new() }
    }

    /// One `#Sensor` packet from the device, as the link hands it over.
    fn reading(&mut self, adc1: u32, now: Instant) {
        let line = format!("#Sensor:ADC1={adc1},ADC2=1300!\n");
        self.decoder.push(line.as_bytes());
        let Some(Event::Packet(Packet::Sensor { fields, .. })) = self.decoder.pull() else { panic!("not a packet") };
        self.devices.seen(0, now);
        self.devices.sensor(0, &fields, 0, now);
    }

    /// The liveness tick, then every observation through fusion; the zone's state after.
    fn settle(&mut self, now: Instant) -> Option<ZoneState> {
        self.devices.tick(now);
        while let Some(o) = self.obs.try_pop() {
            self.fusion.observe(&o, &mut |_| {});
        }
        self.fusion.tick(now, &mut |_| {});
        self.fusion.state(0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_device_is_zone_trouble_within_100_s() {
    let mut rig = Rig::new();
    let t0 = Instant::now();
    rig.reading(280, t0);
    assert_eq!(rig.settle(t0), Some(ZoneState::Normal));
    // From here on the device says nothing; the liveness task ticks every second.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        if rig.settle(now) == Some(ZoneState::Trouble) {
            assert!(now - t0 <= BOUND, "trouble after {:?}", now - t0);
            break;
        }
        assert!(now - t0 <= BOUND, "no trouble within {BOUND:?} of the device going silent");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_smoke_channel_is_zone_trouble_within_100_s() {
    let mut rig = Rig::new();
    let t0 = Instant::now();
    // The device keeps talking, once a second, but its smoke channel repeats one exact value.
    loop {
        let now = Instant::now();
        rig.reading(280, now);
        let state = rig.settle(now);
        if state == Some(ZoneState::Trouble) {
            assert!(now - t0 <= BOUND, "trouble after {:?}", now - t0);
            break;
        }
        assert!(now - t0 <= BOUND, "no trouble within {BOUND:?} of the smoke channel sticking");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A channel that moves again is restored.
    let now = Instant::now();
    rig.reading(281, now);
    assert_eq!(rig.settle(now), Some(ZoneState::Normal));
}

#[tokio::test(start_paused = true)]
async fn a_live_varying_device_stays_normal() {
    let mut rig = Rig::new();
    for i in 0..300u32 {
        let now = Instant::now();
        rig.reading(280 + i % 3, now);
        assert_eq!(rig.settle(now), Some(ZoneState::Normal), "at {i} s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
