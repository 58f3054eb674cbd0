//! The control-room receiver for the TCP transport: decodes alert frames, acknowledges each by sequence
//! number, ignores duplicates (so retransmissions have exactly-once effect) and writes one JSON line per alert
//! and heartbeat. Bad frames are counted and skipped; the connection and the collector keep running.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Split, Up};
use crate::event::{ZoneState, evidence};
use crate::telemetry::{Counter, Registry};

pub struct Collector {
    sink: Mutex<Box<dyn Write + Send>>,
    last_seq: Mutex<HashMap<u32, u32>>,
    pub alerts: Counter,
    pub heartbeats: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
}

fn state_label(level: u8) -> &'static str {
    [ZoneState::Normal, ZoneState::Trouble, ZoneState::PreAlarm, ZoneState::Alarm]
        .into_iter()
        .find(|s| s.level() == level)
        .map(ZoneState::label)
        .unwrap_or("unknown")
}

impl Collector {
    pub fn new(reg: &Registry, sink: Box<dyn Write + Send>) -> Arc<Self> {
        Arc::new(Collector {
            sink: Mutex::new(sink),
            last_seq: Mutex::new(HashMap::new()),
            alerts: reg.counter("ember_collector_alerts_total", "Alerts accepted by the collector.", &[]),
            heartbeats: reg.counter("ember_collector_heartbeats_total", "Heartbeats received by the collector.", &[]),
            duplicates: reg.counter(
                "ember_collector_duplicates_total",
                "Retransmitted alerts ignored by the collector.",
                &[],
            ),
            rejected: reg.counter("ember_collector_rejected_total", "Frames the collector could not decode.", &[]),
        })
    }

    fn emit(&self, v: serde_json::Value) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(sink, "{v}");
        let _ = sink.flush();
    }

    /// Handles one decoded message; returns the ack to send, if any.
    fn handle(&self, msg: Up<'_>) -> Option<Down> {
        match msg {
            Up::Alert(a) => {
                let fresh = {
                    let mut last = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
                    let prev = last.entry(a.device_id).or_insert(0);
                    if a.seq > *prev {
                        *prev = a.seq;
                        true
                    } else {
                        false
                    }
                };
                if fresh {
                    self.alerts.inc();
                    self.emit(serde_json::json!({
                        "type": "alert",
                        "device_id": a.device_id,
                        "seq": a.seq,
                        "ts_ms": a.ts_ms,
                        "zone": a.zone,
                        "from": state_label(a.from),
                        "to": state_label(a.to),
                        "sources": evidence::names(a.sources).collect::<Vec<_>>(),
                        "vision_score": a.vision_milli as f64 / 1000.0,
                        "max_c": (a.max_deci_c != wire::UNKNOWN_DECI_C).then(|| a.max_deci_c as f64 / 10.0),
                        "smoke_pct": (a.smoke_deci_pct != wire::UNKNOWN_DECI_PCT).then(|| a.smoke_deci_pct as f64 / 10.0),
                    }));
                } else {
                    self.duplicates.inc();
                }
                Some(Down::Ack { seq: a.seq })
            }
            Up::Heartbeat { device_id, ts_ms, health } => {
                self.heartbeats.inc();
                self.emit(
                    serde_json::json!({"type": "heartbeat", "device_id": device_id, "ts_ms": ts_ms, "health": health}),
                );
                None
            }
        }
    }

    /// Serves one appliance connection until it closes.
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) -> std::io::Result<()> {
        let mut splitter = FrameSplitter::default();
        let mut buf = [0u8; 2048];
        let mut acks: Vec<Down> = Vec::with_capacity(64);
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            splitter.feed(&buf[..n], |s| match s {
                Split::Frame(f) => {
                    let mut scratch = [0u8; MAX_MESSAGE];
                    match wire::decode::<Up<'_>>(f, &mut scratch) {
                        Ok(msg) => acks.extend(self.handle(msg)),
                        Err(e) => {
                            self.rejected.inc();
                            log::warn!("collector: frame rejected: {e}");
                        }
                    }
                }
                Split::Oversize => {
                    self.rejected.inc();
                    log::warn!("collector: oversize frame rejected");
                }
            });
            let mut out = [0u8; MAX_FRAME];
            for ack in acks.drain(..) {
                if let Ok(n) = wire::encode(&ack, &mut out) {
                    stream.write_all(&out[..n]).await?;
                }
            }
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("collector accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let me = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    r = me.serve_connection(stream) => if let Err(e) = r {
                        log::warn!("collector: connection from {peer} ended: {e}");
                    }
                }
            });
        }
    }
}
