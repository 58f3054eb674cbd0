//! The board's hardware watchdog (`/dev/watchdog`): opened with a timeout, fed only while every part is healthy
//! (the same gate as systemd's `WATCHDOG=1`), and disarmed with the magic close (`V`) on a clean stop. A hung
//! kernel, a wedged board or a stalled part stops the feeding and the hardware resets the board. systemd must not
//! own the device as well (`RuntimeWatchdogSec=` unset): a watchdog has one owner.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Health;

/// `_IOWR('W', 6, int)`: set the timeout in seconds; the driver writes back the one it chose.
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

pub struct HwWatchdog {
    file: File,
    path: PathBuf,
}

impl HwWatchdog {
    /// Opens (and so arms) the device and asks for `timeout_secs`; returns the timeout in force, None when the
    /// device took no timeout (not a watchdog driver, or one without that ioctl: its own default applies).
    pub fn open(path: &Path, timeout_secs: u32) -> std::io::Result<(Self, Option<u32>)> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut t: libc::c_int = timeout_secs.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: the ioctl reads and writes one c_int through a valid pointer, on a file we own.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), WDIOC_SETTIMEOUT as _, &mut t) };
        let timeout = (r == 0).then_some(t.max(0) as u32);
        Ok((HwWatchdog { file, path: path.to_owned() }, timeout))
    }

    pub fn feed(&mut self) -> std::io::Result<()> {
        self.file.write_all(b"\0")
    }

    /// The magic close: the driver disarms when `V` is the last byte before close (unless built "nowayout").
    pub fn disarm(mut self) -> std::io::Result<()> {
        self.file.write_all(b"V")
    }
}

/// How often to feed a watchdog of `timeout`: three chances before it fires.
pub fn feed_period(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(100))
}

/// Feeds `dev` every `period` while no part of `health` is dead; disarms it when `stop` is cancelled. The gate is
/// `Health::dead`, the one `sdnotify::feed_watchdog` uses for `WATCHDOG=1`: a part only in trouble (the spool's
/// disk) keeps it fed, because a reset would not mend a disk and would drop what the appliance holds in memory.
pub async fn run(
    mut dev: HwWatchdog,
    health: Arc<Health>,
    period: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(period);
    let mut starving = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let failing = health.dead(tokio::time::Instant::now());
        if failing.is_empty() {
            if let Err(e) = dev.feed() {
                log::error!("hardware watchdog {}: cannot feed it: {e}; the board will reset", dev.path.display());
            }
            starving = false;
        } else if !starving {
            log::error!(
                "not feeding the hardware watchdog ({} will reset the board): {}",
                dev.path.display(),
                failing.join(", ")
            );
            starving = true;
        }
    }
    let path = dev.path.clone();
    match dev.disarm() {
        Ok(()) => log::info!("hardware watchdog {} disarmed", path.display()),
        Err(e) => log::error!("hardware watchdog {}: magic close failed ({e}): the board may reset", path.display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::PartState;

    #[tokio::test(start_paused = true)]
    async fn fed_only_while_healthy_and_disarmed_on_a_clean_stop() {
        let path = std::env::temp_dir().join(format!("ember-fake-watchdog-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let (dev, timeout) = HwWatchdog::open(&path, 15).unwrap();
        assert_eq!(timeout, None, "a plain file takes no timeout");
        let health = Health::new();
        let part = health.register("fusion", None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(dev, Arc::clone(&health), Duration::from_secs(5), stop.clone()));
        // Ticks at 0, 5 and 10 s.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0");
        part.set(PartState::Failed("stalled".into()));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0", "starved while a part is failing");
        part.set(PartState::Running);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0\0", "fed again once healthy");
        // Trouble (the systemd gate feeds through it) keeps the board's watchdog fed too.
        part.set(PartState::Trouble("spool disk full".into()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0\0\0", "fed while only in trouble");
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0\0\0V", "magic close last");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn three_feeds_per_timeout() {
        assert_eq!(feed_period(Duration::from_secs(15)), Duration::from_secs(5));
    }
}
