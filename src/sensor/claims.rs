//! Who may speak for a configured device. EmberEye's protocol has no authentication: any host that reaches the
//! sensor port can announce a device's serial number or loc id. This pure machine (stepped with `now`) decides
//! for every packet attributed to a device whether it is taken:
//!
//! - A device with a configured source (`ip`, or a serial port bound to it) is pinned: packets for it from any
//!   other link are impostors, dropped. Several links from the pinned address are all accepted (a device that
//!   reconnects before its old link timed out comes from the same address).
//! - An unpinned device belongs to the first live link that speaks for it. Another live link claiming it is a
//!   duplicate: dropped, so a spoofer can neither raise a false alarm nor hide a real fire behind quiet readings.
//!   Only when the owning link has been silent for `handover` does a new link take the device over (the device
//!   rebooted and its old connection is half-open).
//!
//! While any impostor or duplicate link is live the device is tampered with: trouble for its zones, never alarm.

use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Where a link comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub ip: Option<IpAddr>,
    /// The configured device of a serial port, when the port is bound to one.
    pub bound: Option<usize>,
}

/// A device's configured source, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pin {
    pub ip: Option<IpAddr>,
    pub serial: bool,
}

impl Pin {
    fn pinned(&self) -> bool {
        self.ip.is_some() || self.serial
    }

    fn admits(&self, device: usize, from: Source) -> bool {
        (self.ip.is_some() && self.ip == from.ip) || (self.serial && from.bound == Some(device))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// From a link that is not the pinned device's source.
    Impostor,
    /// From a second live link while another owns the unpinned device.
    Duplicate,
}

#[derive(Debug, Clone, Copy)]
struct Owner {
    link: u64,
    last: Instant,
}

#[derive(Debug, Default)]
struct DeviceClaims {
    pin: Pin,
    owner: Option<Owner>,
    /// Live links whose packets for this device were refused (impostors and duplicates).
    contenders: Vec<u64>,
}

#[derive(Debug)]
pub struct Claims {
    devices: Vec<DeviceClaims>,
    handover: Duration,
}

impl Claims {
    pub fn new(pins: impl IntoIterator<Item = Pin>, handover: Duration) -> Claims {
        let devices = pins.into_iter().map(|pin| DeviceClaims { pin, ..Default::default() }).collect();
        Claims { devices, handover }
    }

    /// Decides a packet for `device` from `link`.
    pub fn claim(&mut self, device: usize, link: u64, from: Source, now: Instant) -> Verdict {
        let handover = self.handover;
        let Some(d) = self.devices.get_mut(device) else { return Verdict::Accept };
        let verdict = if d.pin.pinned() {
            if d.pin.admits(device, from) { Verdict::Accept } else { Verdict::Impostor }
        } else {
            match d.owner {
                Some(o) if o.link != link && now.saturating_duration_since(o.last) < handover => Verdict::Duplicate,
                _ => {
                    d.owner = Some(Owner { link, last: now });
                    Verdict::Accept
                }
            }
        };
        if verdict == Verdict::Accept {
            d.contenders.retain(|l| *l != link);
        } else if !d.contenders.contains(&link) {
            d.contenders.push(link);
        }
        verdict
    }

    /// A link closed: it owns and contends for nothing any more.
    pub fn closed(&mut self, link: u64) {
        for d in &mut self.devices {
            if d.owner.is_some_and(|o| o.link == link) {
                d.owner = None;
            }
            d.contenders.retain(|l| *l != link);
        }
    }

    /// True while a live link that is not the device's is speaking for it.
    pub fn tampered(&self, device: usize) -> bool {
        self.devices.get(device).is_some_and(|d| !d.contenders.is_empty())
    }

    /// The link that owns an unpinned device now.
    pub fn owner(&self, device: usize) -> Option<u64> {
        self.devices.get(device).and_then(|d| d.owner.map(|o| o.link))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_A: Source = Source { ip: Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5))), bound: None };
    const TCP_B: Source = Source { ip: Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66))), bound: None };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn pinned_device_takes_only_its_source() {
        let t = Instant::now();
        let mut c = Claims::new([Pin { ip: TCP_A.ip, serial: false }, Pin { ip: None, serial: true }], secs(10));
        assert_eq!(c.claim(0, 1, TCP_A, t), Verdict::Accept);
        // Another link from the pinned address (a reconnect) is the device too.
        assert_eq!(c.claim(0, 2, TCP_A, t), Verdict::Accept);
        assert_eq!(c.claim(0, 3, TCP_B, t), Verdict::Impostor);
        assert!(c.tampered(0));
        assert_eq!(c.claim(0, 1, TCP_A, t + secs(1)), Verdict::Accept);
        assert!(c.tampered(0), "tampered while the impostor's link lives");
        c.closed(3);
        assert!(!c.tampered(0));
        // A device bound to a serial port: only that port speaks for it, not a TCP link.
        let port = Source { ip: None, bound: Some(1) };
        assert_eq!(c.claim(1, 4, port, t), Verdict::Accept);
        assert_eq!(c.claim(1, 5, TCP_A, t), Verdict::Impostor);
        assert_eq!(c.claim(1, 6, Source { ip: None, bound: Some(0) }, t), Verdict::Impostor);
    }

    #[test]
    fn unpinned_device_belongs_to_its_first_live_link() {
        let t = Instant::now();
        let mut c = Claims::new([Pin::default()], secs(10));
        assert_eq!(c.claim(0, 1, TCP_A, t), Verdict::Accept);
        assert_eq!(c.claim(0, 2, TCP_B, t + secs(1)), Verdict::Duplicate);
        assert!(c.tampered(0));
        // The owner keeps streaming: the duplicate never gets in, whatever it sends.
        for s in 2..30 {
            assert_eq!(c.claim(0, 1, TCP_A, t + secs(s)), Verdict::Accept);
            assert_eq!(c.claim(0, 2, TCP_B, t + secs(s)), Verdict::Duplicate);
        }
        assert_eq!(c.owner(0), Some(1));
        c.closed(2);
        assert!(!c.tampered(0));
        // The owner's link closes: the next link to speak owns the device.
        c.closed(1);
        assert_eq!(c.claim(0, 3, TCP_B, t + secs(31)), Verdict::Accept);
        assert_eq!(c.owner(0), Some(3));
    }

    #[test]
    fn a_silent_owner_hands_over_after_the_handover_time() {
        let t = Instant::now();
        let mut c = Claims::new([Pin::default()], secs(10));
        assert_eq!(c.claim(0, 1, TCP_A, t), Verdict::Accept);
        // The device rebooted: its old link is half-open and silent, the new one streams.
        assert_eq!(c.claim(0, 2, TCP_A, t + secs(9)), Verdict::Duplicate);
        assert_eq!(c.claim(0, 2, TCP_A, t + secs(10)), Verdict::Accept);
        assert_eq!(c.owner(0), Some(2));
        assert!(!c.tampered(0), "the new link's own earlier refusal is forgiven once it owns the device");
        // If the old link speaks again while the new one streams, it is the duplicate now.
        assert_eq!(c.claim(0, 1, TCP_A, t + secs(11)), Verdict::Duplicate);
        assert!(c.tampered(0));
    }

    #[test]
    fn unknown_device_index_is_accepted_without_state() {
        let mut c = Claims::new([], secs(10));
        assert_eq!(c.claim(3, 1, TCP_A, Instant::now()), Verdict::Accept);
        assert!(!c.tampered(3));
    }
}
