//! The TCP transport of the uplink, to `ember-tools collect`: one connection at a time, the spooled alert frames
//! written as they are, heartbeats between them, and the collector's per-alert acknowledgements read back.
//! All bookkeeping is the outbox's; this file only moves bytes.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::wire::MAX_FRAME;
use super::{Attempt, Transition};
use crate::queue::Queue;
use crate::telemetry::PartHandle;

/// Connects and runs one session until the connection fails or `stop`.
pub(super) async fn attempt(
    server: &str,
    outbox: &mut Outbox,
    input: &Queue<Transition>,
    part: &PartHandle,
    stop: &CancellationToken,
) -> Attempt {
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(server));
    let stream = tokio::select! {
        _ = stop.cancelled() => return Attempt { up_for: None, why: "stopped".into() },
        r = connect => r,
    };
    let mut stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Attempt { up_for: None, why: format!("cannot connect: {e}") },
        Err(_) => return Attempt { up_for: None, why: "connect timed out".into() },
    };
    let _ = stream.set_nodelay(true);
    let up = Instant::now();
    outbox.on_connected(up);
    log::info!("uplink connected to {server} ({} alerts pending)", outbox.pending());
    let why = match session(&mut stream, outbox, input, part, stop).await {
        Ok(()) => "stopped".to_owned(),
        Err(e) => format!("lost: {e}"),
    };
    Attempt { up_for: Some(up.elapsed()), why }
}

async fn session(
    stream: &mut TcpStream,
    outbox: &mut Outbox,
    input: &Queue<Transition>,
    part: &PartHandle,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    // Everything unacknowledged first, oldest first, in batches of 64 frames per write.
    let mut batch: Vec<u8> = Vec::with_capacity(64 * MAX_FRAME);
    loop {
        batch.clear();
        let n = outbox
            .unsent(64, |_, frame| {
                batch.extend_from_slice(frame);
                true
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if n == 0 {
            break;
        }
        stream.write_all(&batch).await?;
    }
    let mut rbuf = [0u8; 1024];
    let mut out = [0u8; MAX_FRAME];
    loop {
        // Always set while connected; the fallback only keeps the arm from firing.
        let due = outbox.heartbeat_due().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let maintain = outbox.maintain_due(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(maintain) => outbox.maintain(Instant::now()),
            _ = stop.cancelled() => return Ok(()),
            t = input.pop() => {
                if let Some(frame) = outbox.on_transition(&t) {
                    stream.write_all(frame.bytes()).await?;
                }
            }
            _ = tokio::time::sleep_until(due) => {
                part.beat();
                if let Some(n) = outbox.heartbeat(Instant::now(), &mut out) {
                    stream.write_all(&out[..n]).await?;
                }
            }
            r = stream.read(&mut rbuf) => {
                let n = r?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "collector closed the connection"));
                }
                outbox.on_received(&rbuf[..n]);
            }
        }
    }
}
