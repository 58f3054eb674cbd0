//! The live view's routes: `/` (the status page), `/api/status`, `/cameras`, `/cameras/{id}/snapshot.jpg` and
//! `/cameras/{id}/stream.mjpg` (`?overlay=1` for the detection overlay). A stream keeps its connection and is
//! written the newest shared JPEG each time; the lag rule (`live::viewers`) drops a viewer that stops taking them.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::auth::query_param;
use crate::live::viewers::Lag;
use crate::live::{Live, PAGE, Variant, multipart};

/// How long a snapshot waits for a fresh frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

/// Whether this listener serves `path` here (GET only).
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/index.html" || path == "/api/status" || path == "/cameras" || path.starts_with("/cameras/")
}

/// Serves one GET for a live route; a stream keeps the connection until the viewer leaves or lags.
pub async fn serve(
    mut stream: TcpStream,
    path: &str,
    query: &str,
    head_only: bool,
    live: &Live,
) -> std::io::Result<()> {
    match path {
        "/" | "/index.html" => {
            return respond(&mut stream, 200, "text/html; charset=utf-8", PAGE.as_bytes(), head_only).await;
        }
        "/api/status" => {
            let body = live.status_json().to_string();
            return respond(&mut stream, 200, "application/json", body.as_bytes(), head_only).await;
        }
        "/cameras" => {
            let body = live.cameras_json().to_string();
            return respond(&mut stream, 200, "application/json", body.as_bytes(), head_only).await;
        }
        _ => {}
    }
    let rest = path.trim_start_matches("/cameras/");
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let id = super::head::segment(id);
    let Some(cam) = live.camera(&id) else {
        return respond(&mut stream, 404, "text/plain", format!("no camera `{id}`\n").as_bytes(), head_only).await;
    };
    let variant =
        if query_param(query, "overlay").is_some_and(|v| v != "0") { Variant::Overlay } else { Variant::Plain };
    if what != "snapshot.jpg" && what != "stream.mjpg" {
        return respond(&mut stream, 404, "text/plain", b"use snapshot.jpg or stream.mjpg\n", head_only).await;
    }
    let _place = match live.limits.join(cam.index) {
        Ok(g) => g,
        Err(why) => {
            live.counters.refused.inc();
            return respond(&mut stream, 503, "text/plain", why.message().as_bytes(), head_only).await;
        }
    };
    let mut rx = cam.receiver(variant);
    let _watching = cam.watch(variant);
    if what == "snapshot.jpg" {
        // A frame published before anyone watched may be stale: wait for one encoded for us.
        rx.borrow_and_update();
        let frame = tokio::select! {
            _ = live.stop_token().cancelled() => return Ok(()),
            r = tokio::time::timeout(SNAPSHOT_WAIT, rx.changed()) => match r {
                Ok(Ok(())) => rx.borrow_and_update().clone(),
                _ => None,
            },
        };
        return match frame {
            Some(f) => respond(&mut stream, 200, "image/jpeg", f.jpeg(), head_only).await,
            None => respond(&mut stream, 503, "text/plain", b"no frame from this camera\n", head_only).await,
        };
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={}\r\nCache-Control: no-cache, no-store\r\n\
         Pragma: no-cache\r\nConnection: close\r\n\r\n",
        multipart::BOUNDARY
    );
    stream.write_all(head.as_bytes()).await?;
    if head_only {
        return Ok(());
    }
    let _ = stream.set_nodelay(true);
    limit_send_buffer(&stream);
    let mut lag = Lag::new(live.max_lag);
    let joined = tokio::time::Instant::now();
    // The frame already published (if any) goes out at once, so a new viewer sees a picture immediately.
    let mut first = rx.borrow_and_update().clone();
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => {
                tokio::select! {
                    _ = live.stop_token().cancelled() => return Ok(()),
                    r = rx.changed() => if r.is_err() { return Ok(()) },
                }
                match rx.borrow_and_update().clone() {
                    Some(f) => f,
                    None => continue,
                }
            }
        };
        let skipped_before = lag.skipped;
        // A frame published before this viewer came is due from when it came.
        let deadline = lag.start(frame.seq, frame.ready_at.max(joined));
        let part = frame.part();
        let sent = tokio::select! {
            _ = live.stop_token().cancelled() => return Ok(()),
            r = tokio::time::timeout_at(deadline, stream.write_all(part)) => r,
        };
        match sent {
            Ok(Ok(())) => {
                lag.done();
                live.counters.frames_sent.inc();
                live.counters.bytes_sent.add(part.len() as u64);
                live.counters.frames_skipped.add(lag.skipped - skipped_before);
            }
            // The viewer went away: the normal end of a stream.
            Ok(Err(_)) => return Ok(()),
            Err(_) => {
                live.counters.lagged.inc();
                log::warn!(
                    "live view of camera {}: viewer dropped, frame {} not taken within {} ms",
                    cam.name,
                    frame.seq,
                    live.max_lag.as_millis()
                );
                return Ok(());
            }
        }
    }
}

/// Live responses are never cached: a snapshot or a status document is stale a moment later.
async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    super::respond(stream, status, ctype, "Cache-Control: no-cache\r\n", body, head_only).await
}

/// Kernel send buffer per viewer. Small, so a viewer that stops reading is noticed by the lag rule within
/// about this many bytes of frames, instead of megabytes of kernel buffering hiding it (and costing memory).
const SEND_BUFFER: libc::c_int = 128 * 1024;

fn limit_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let v = SEND_BUFFER;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        log::debug!("SO_SNDBUF not set: {}", std::io::Error::last_os_error());
    }
}
