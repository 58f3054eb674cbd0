//! systemd notifications (READY, STOPPING, WATCHDOG) over $NOTIFY_SOCKET, and the task that feeds the watchdog
//! while every part is healthy; a no-op when not under systemd.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::Health;

pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        send_abstract(&sock, abstract_name, state)
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path)).map(|_| ())
    };
    if let Err(e) = res {
        log::warn!("sd_notify {state:?} failed: {e}");
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Ok(())
}

/// Half the watchdog period systemd asked for, if it asked (WATCHDOG_USEC for our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Feeds the systemd watchdog every `period` while every part is healthy, until stopped.
pub async fn feed_watchdog(health: Arc<Health>, period: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Starving the watchdog is how systemd learns that a part of us is dead.
        let failing = health.dead(tokio::time::Instant::now());
        if failing.is_empty() {
            notify("WATCHDOG=1");
        } else {
            log::error!("not feeding the systemd watchdog: {}", failing.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ember-sdn-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Only this test touches NOTIFY_SOCKET in this process.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
