//! The sensor link: EmberEye-protocol devices (MLX90640 thermal array plus ADC smoke/flame channels) over TCP
//! and serial ports. `proto` is the sans-IO decoder, `server` the link handler feeding it (TCP listeners and
//! `serial` ports), `device` the per-device state that turns packets into observations, `mlx90640` the
//! calibrated temperatures, and `sim` a simulated device that speaks the protocol like real firmware.

pub mod analysis;
pub mod claims;
pub mod commands;
pub mod device;
pub mod mlx90640;
pub mod proto;
pub mod serial;
pub mod server;
pub mod session;
pub mod sim;
mod sim_device_data;
pub mod thermal_compat;

use std::collections::HashMap;

/// Device identity lookup, built once from the config: a loc id or serial number → device index.
#[derive(Debug, Default, Clone)]
pub struct DeviceMap {
    by_loc: HashMap<String, usize>,
    by_serial: HashMap<String, usize>,
    by_ip: HashMap<std::net::IpAddr, usize>,
    pub names: Vec<String>,
}

impl DeviceMap {
    pub fn from_config(c: &crate::config::Sensors) -> Self {
        let mut m = DeviceMap::default();
        for (i, d) in c.devices.iter().enumerate() {
            if let Some(l) = &d.loc_id {
                m.by_loc.insert(l.clone(), i);
            }
            if let Some(s) = &d.serial {
                m.by_serial.insert(s.clone(), i);
            }
            if let Some(ip) = d.ip {
                m.by_ip.insert(ip, i);
            }
            m.names.push(d.name.clone());
        }
        m
    }

    pub fn by_loc(&self, loc: &str) -> Option<usize> {
        self.by_loc.get(loc).copied()
    }

    pub fn by_serial(&self, serial: &str) -> Option<usize> {
        self.by_serial.get(serial).copied()
    }

    pub fn by_ip(&self, ip: std::net::IpAddr) -> Option<usize> {
        self.by_ip.get(&ip).copied()
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// Full scale of the devices' 12-bit ADCs.
pub const ADC_FULL_SCALE: f32 = 4095.0;

/// Percent of full scale, as EmberEye computes smoke and flame levels (ADC·100/4095).
pub fn adc_percent(raw: f64) -> f32 {
    (raw as f32 * 100.0 / ADC_FULL_SCALE).clamp(0.0, 100.0)
}
