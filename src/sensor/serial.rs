//! Serial (UART) device links: opens the port with tokio-serial (no libudev), serves it exactly like a TCP
//! connection, and when the port fails or disappears (USB bridge unplugged) reopens it with exponential
//! backoff, counting each reconnection.

use std::sync::Arc;
use std::time::Duration;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;

use super::server::{Peer, SensorServer};
use crate::config::{Parity, SerialPort};
use crate::retry::Backoff;
use crate::telemetry::{Counter, Registry};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn open(p: &SerialPort) -> tokio_serial::Result<tokio_serial::SerialStream> {
    let data_bits = match p.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match p.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let stop_bits = if p.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    tokio_serial::new(&p.path, p.baud).data_bits(data_bits).parity(parity).stop_bits(stop_bits).open_native_async()
}

pub async fn run(
    server: Arc<SensorServer>,
    port: SerialPort,
    bound: Option<usize>,
    reopened: Counter,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let (up_for, open_error) = match open(&port) {
            Ok(stream) => {
                log::info!("serial port {} open at {} baud", port.path, port.baud);
                let opened = tokio::time::Instant::now();
                let peer = Peer { label: format!("serial:{}", port.path), ip: None, bound };
                match server.serve_link(stream, peer, &stop).await {
                    Ok(()) => log::warn!("serial port {} closed; reopening", port.path),
                    Err(e) => log::warn!("serial port {} failed: {e}; reopening", port.path),
                }
                (Some(opened.elapsed()), None)
            }
            Err(e) => (None, Some(e)),
        };
        if stop.is_cancelled() {
            return Ok(());
        }
        let retry = backoff.failed(up_for);
        if let Some(e) = open_error {
            // WARN: the port being absent is a wiring or udev problem someone must see.
            let n = retry.failures;
            log::log!(
                retry.level(log::Level::Warn),
                "serial port {} cannot be opened: {e}; retrying (failure {n})",
                port.path
            );
        }
        reopened.inc();
        if !crate::retry::wait(retry.delay, &stop, None).await {
            return Ok(());
        }
    }
}

/// Registers the reopen counter of serial port `path` (the `reopened` of `run`).
pub fn reopens_counter(registry: &Registry, path: &str) -> Counter {
    registry.counter(
        "ember_serial_reopens_total",
        "Times a serial port was reopened after failing or disappearing.",
        &[("port", path)],
    )
}
