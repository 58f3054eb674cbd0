//! The MQTT transport of the uplink, for fleets behind a broker: the same spooled, tagged alert frames are
//! published at QoS 1 to `<prefix>/<device_id>/alert` and leave the spool when the broker's PUBACK arrives;
//! heartbeats go to `/heartbeat`; `/status` holds a retained `online`, replaced by the broker with the last
//! will `offline` when the appliance vanishes. Each connection uses a fresh client, so after a reconnect the
//! spool alone decides what is resent (everything unacknowledged, in order); consumers de-duplicate by
//! sequence number, as the TCP collector does. With a CA file the connection is TLS (`tls`); with Home
//! Assistant discovery on, `ha_link` rides on the same connection.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use std::sync::Arc;

use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ha_link::{HaLink, HaSetup};
use super::outbox::Outbox;
use super::{Attempt, Transition};
use super::{tls, wire};
use crate::queue::Queue;
use crate::telemetry::Counter;
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
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// `ember_uplink_tls_refused_total`, in `tls::REASONS` order.
    tls_refused: Vec<Counter>,
    ha: Option<Arc<HaSetup>>,
}

impl Broker {
    pub(super) fn new(
        server: &str,
        settings: &super::MqttTransport,
        device_id: u32,
        tls_refused: Vec<Counter>,
    ) -> anyhow::Result<Self> {
        let (host, port) = split_host_port(server)?;
        let tls = settings.tls.as_ref().map(tls::client_config).transpose()?;
        Ok(Broker {
            server: server.to_owned(),
            host,
            port,
            device_id,
            base: format!("{}/{device_id}", settings.topic_prefix),
            tls,
            tls_refused,
            ha: settings.ha.clone(),
        })
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
            // rumqttc refuses packets over 10 KiB by default, and refusing one ends the connection: Home
            // Assistant's discovery message of a site with many zones and buttons is larger than that.
            .set_max_packet_size(64 * 1024, super::ha::MAX_PAYLOAD)
            .set_last_will(LastWill::new(format!("{base}/status"), "offline", QoS::AtLeastOnce, true));
        if let Some(t) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(TlsConfiguration::Rustls(Arc::clone(t))));
        }
        let (client, mut events) = AsyncClient::new(opts, IN_FLIGHT);
        // rumqttc's poll is not cancel-safe while it connects: dropped by the select below whenever an alert
        // arrives, a TLS handshake started over and never finished while alerts kept coming. So the event loop
        // runs in a task of its own and hands its events over a channel.
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(64);
        let pump = tokio::spawn(async move {
            loop {
                let ev = events.poll().await;
                let last = ev.is_err();
                if ev_tx.send(ev).await.is_err() || last {
                    break;
                }
            }
        });
        let _pump = AbortOnDrop(pump.abort_handle());
        let mut ha = self.ha.as_deref().map(HaLink::new);
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
                    let _ = tokio::time::timeout(Duration::from_millis(300), async { while let Some(Ok(_)) = ev_rx.recv().await {} }).await;
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
                    if let Some(h) = &ha && connected_at.is_some() {
                        h.on_transition(&mut sink(&client, &mut order), &t);
                    }
                }
                _ = tokio::time::sleep_until(ha.as_ref().map_or(far, HaLink::next_due)), if ha.is_some() && connected_at.is_some() => {
                    if let Some(h) = &mut ha {
                        h.tick(&mut sink(&client, &mut order), outbox.pending() as u64);
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
                ev = ev_rx.recv() => match ev {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let now = Instant::now();
                        connected_at = Some(now);
                        outbox.on_connected(now);
                        log::info!("uplink connected to MQTT broker {} ({} alerts pending)", self.server, outbox.pending());
                        if client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "online").is_ok() {
                            order.push_back(None);
                        }
                        if let Some(h) = &mut ha {
                            h.on_connected(&client, &mut sink(&client, &mut order), outbox.pending() as u64);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if let Some(h) = &mut ha {
                            h.on_message(&p);
                        }
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(Some(seq)) = order.pop_front() {
                            pkids.insert(pkid, seq);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(seq) = pkids.remove(&ack.pkid) {
                            outbox.on_ack(seq);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e,
                    None => break ConnectionError::Io(std::io::Error::other("MQTT event loop ended")),
                },
            }
        };
        if let Some((reason, why)) = tls::refusal(&lost) {
            if let Some(c) = tls::REASONS.iter().position(|r| *r == reason).and_then(|i| self.tls_refused.get(i)) {
                c.inc();
            }
            // The spool keeps everything; retrying is right (a certificate can be renewed), but someone must act.
            log::error!("uplink to MQTT broker {}: TLS refused: {why}", self.server);
            return Attempt { up_for: connected_at.map(|t| t.elapsed()), why: format!("TLS refused: {why}") };
        }
        let why = if connected_at.is_some() { format!("lost: {lost}") } else { format!("cannot connect: {lost}") };
        Attempt { up_for: connected_at.map(|t| t.elapsed()), why }
    }
}

/// Ends the event-loop task with the attempt.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A publish sink for `ha_link` that keeps `order` in step with what the client reports sent.
fn sink<'a>(
    client: &'a AsyncClient,
    order: &'a mut PublishOrder,
) -> impl FnMut(String, QoS, bool, Vec<u8>) -> bool + 'a {
    move |topic, qos, retain, payload| {
        if order.len() >= IN_FLIGHT || client.try_publish(topic, qos, retain, payload).is_err() {
            return false;
        }
        order.push_back(None);
        true
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
