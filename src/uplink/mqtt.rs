//! The MQTT transport of the uplink, for fleets behind a broker: the same spooled, tagged alert frames are
//! published at QoS 1 to `<prefix>/<device_id>/alert` and leave the spool when the broker's PUBACK arrives;
//! heartbeats go to `/heartbeat`; `/status` holds a retained `online`, replaced by the broker with the last
//! will `offline` when the appliance vanishes. Each connection uses a fresh client, so after a reconnect the
//! spool alone decides what is resent (everything unacknowledged, in order); consumers de-duplicate by
//! sequence number, as the TCP collector does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::wire;
use super::{Attempt, Transition};
use crate::queue::Queue;
use crate::telemetry::PartHandle;

pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("`{s}` is not host:port"))?;
    let port: u16 = p.parse().map_err(|_| anyhow::anyhow!("`{s}`: bad port"))?;
    Ok((h.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

/// What each outgoing publish was, in the order rumqttc reports them: an alert's sequence number or None.
type PublishOrder = VecDeque<Option<u32>>;

/// Most publishes handed to the client and not yet reported sent: the client's request queue holds 256.
const IN_FLIGHT: usize = 256;

/// Where and as whom this appliance publishes.
pub(super) struct Broker {
    server: String,
    host: String,
    port: u16,
    device_id: u32,
    /// `<prefix>/<device_id>`.
    base: String,
}

impl Broker {
    pub(super) fn new(server: &str, prefix: &str, device_id: u32) -> anyhow::Result<Self> {
        let (host, port) = split_host_port(server)?;
        Ok(Broker { server: server.to_owned(), host, port, device_id, base: format!("{prefix}/{device_id}") })
    }

    /// One client, from connecting until the connection fails or `stop` (then `offline` is published first).
    pub(super) async fn attempt(
        &self,
        outbox: &mut Outbox,
        input: &Queue<Transition>,
        part: &PartHandle,
        stop: &CancellationToken,
    ) -> Attempt {
        let base = &self.base;
        let mut opts = MqttOptions::new(format!("ember-edge-{}", self.device_id), self.host.clone(), self.port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(10))
            .set_inflight(64)
            .set_last_will(LastWill::new(format!("{base}/status"), "offline", QoS::AtLeastOnce, true));
        let (client, mut events) = AsyncClient::new(opts, IN_FLIGHT);
        let alert_topic = format!("{base}/alert");
        let mut order: PublishOrder = VecDeque::new();
        let mut pkids: HashMap<u16, u32> = HashMap::new();
        let mut connected_at: Option<Instant> = None;
        let lost = loop {
            if connected_at.is_some() {
                publish_pending(outbox, &client, &alert_topic, &mut order);
            }
            let due = outbox.heartbeat_due();
            let far = Instant::now() + Duration::from_secs(3600);
            let maintain = outbox.maintain_due(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(maintain) => outbox.maintain(Instant::now()),
                _ = stop.cancelled() => {
                    let _ = client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "offline");
                    let _ = client.try_disconnect();
                    // Give the client a moment to flush the status and the disconnect.
                    let _ = tokio::time::timeout(Duration::from_millis(300), async { while events.poll().await.is_ok() {} }).await;
                    return Attempt { up_for: connected_at.map(|t| t.elapsed()), why: "stopped".into() };
                }
                t = input.pop(), if connected_at.is_none() || order.len() < IN_FLIGHT => {
                    if let Some(frame) = outbox.on_transition(&t) {
                        if client.try_publish(alert_topic.clone(), QoS::AtLeastOnce, false, frame.bytes().to_vec()).is_ok() {
                            order.push_back(Some(frame.seq));
                        } else {
                            outbox.resend_from(frame.seq);
                        }
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    part.beat();
                    let mut out = [0u8; wire::MAX_FRAME];
                    if let Some(n) = outbox.heartbeat(Instant::now(), &mut out)
                        && client.try_publish(format!("{base}/heartbeat"), QoS::AtMostOnce, false, out[..n].to_vec()).is_ok()
                    {
                        order.push_back(None);
                    }
                }
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let now = Instant::now();
                        connected_at = Some(now);
                        outbox.on_connected(now);
                        log::info!("uplink connected to MQTT broker {} ({} alerts pending)", self.server, outbox.pending());
                        if client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "online").is_ok() {
                            order.push_back(None);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(seq)) = order.pop_front() {
                            pkids.insert(pkid, seq);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = pkids.remove(&ack.pkid) {
                            outbox.on_ack(seq);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break e,
                },
            }
        };
        let why = if connected_at.is_some() { format!("lost: {lost}") } else { format!("cannot connect: {lost}") };
        Attempt { up_for: connected_at.map(|t| t.elapsed()), why }
    }
}

/// Hands spooled alerts not yet given to this client over, until its request queue is full.
fn publish_pending(outbox: &mut Outbox, client: &AsyncClient, topic: &str, order: &mut PublishOrder) {
    let room = IN_FLIGHT.saturating_sub(order.len());
    if room == 0 {
        return;
    }
    let r = outbox.unsent(room, |seq, frame| {
        if client.try_publish(topic.to_owned(), QoS::AtLeastOnce, false, frame.to_vec()).is_err() {
            return false;
        }
        order.push_back(Some(seq));
        true
    });
    if let Err(e) = r {
        log::error!("uplink spool cannot be read: {e}");
    }
}
