//! The MQTT transport of the uplink, for fleets behind a broker: the same spooled, tagged alert frames are
//! published at QoS 1 to `<prefix>/<device_id>/alert` and leave the spool when the broker's PUBACK arrives;
//! heartbeats go to `/heartbeat`; `/status` holds a retained `online`, replaced by the broker with the last
//! will `offline` when the appliance vanishes. Each connection uses a fresh client, so after a reconnect the
//! spool alone decides what is resent (everything unacknowledged, in order); consumers de-duplicate by
//! sequence number, as the TCP collector does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;

use super::UplinkTask;
use super::wire;
use crate::telemetry::PartHandle;

pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("`{s}` is not host:port"))?;
    let port: u16 = p.parse().map_err(|_| anyhow::anyhow!("`{s}`: bad port"))?;
    Ok((h.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
}

/// What each outgoing publish was, in the order rumqttc reports them: an alert's sequence number or None.
type PublishOrder = VecDeque<Option<u32>>;

impl UplinkTask {
    pub(super) async fn run_mqtt(
        mut self,
        prefix: String,
        part: PartHandle,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let (host, port) = split_host_port(&self.server)?;
        let base = format!("{prefix}/{}", self.device_id);
        let mut jitter = super::Jitter::new();
        let mut delay = self.reconnect_min;
        self.update_gauges();
        loop {
            part.beat();
            let mut opts = MqttOptions::new(format!("ember-edge-{}", self.device_id), host.clone(), port);
            opts.set_clean_session(true)
                .set_keep_alive(Duration::from_secs(10))
                .set_inflight(64)
                .set_last_will(LastWill::new(format!("{base}/status"), "offline", QoS::AtLeastOnce, true));
            let (client, mut events) = AsyncClient::new(opts, 256);
            let mut order: PublishOrder = VecDeque::new();
            let mut pkids: HashMap<u16, u32> = HashMap::new();
            let mut connected = false;
            // Highest sequence handed to the client in this connection; everything above is still to send.
            let mut sent_upto = 0u32;
            let mut heartbeat = tokio::time::interval(self.heartbeat);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let lost = loop {
                if connected {
                    self.publish_pending(&client, &base, &mut order, &mut sent_upto);
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = client.try_publish(format!("{base}/status"), QoS::AtLeastOnce, true, "offline");
                        let _ = client.try_disconnect();
                        // Give the client a moment to flush the status and the disconnect.
                        let _ = tokio::time::timeout(Duration::from_millis(300), async { while events.poll().await.is_ok() {} }).await;
                        return Ok(());
                    }
                    t = self.input.pop(), if !connected || order.len() < 256 => { self.spool_transition(&t); }
                    _ = heartbeat.tick(), if connected => {
                        part.beat();
                        let mut out = [0u8; wire::MAX_FRAME];
                        if let Ok(n) = wire::encode(&self.heartbeat_msg(), &self.key, &mut out)
                            && client.try_publish(format!("{base}/heartbeat"), QoS::AtMostOnce, false, out[..n].to_vec()).is_ok()
                        {
                            order.push_back(None);
                        }
                    }
                    ev = events.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            connected = true;
                            self.counters.connected.set(1.0);
                            delay = self.reconnect_min;
                            log::info!("uplink connected to MQTT broker {} ({} alerts pending)", self.server, self.spool.pending());
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
                                match self.spool.ack(seq) {
                                    Ok(true) => self.counters.acked.inc(),
                                    Ok(false) => {}
                                    Err(e) => log::error!("uplink spool cannot record acknowledgement {seq}: {e}"),
                                }
                                self.update_gauges();
                            }
                        }
                        Ok(_) => {}
                        Err(e) => break e,
                    },
                }
            };
            self.counters.connected.set(0.0);
            if connected {
                log::warn!("uplink to MQTT broker {} lost: {lost}", self.server);
            } else {
                log::debug!("uplink MQTT connect to {} failed: {lost}", self.server);
            }
            if !self.wait_to_reconnect(jitter.apply(delay), &stop).await {
                return Ok(());
            }
            delay = (delay * 2).min(self.reconnect_max);
        }
    }

    /// Hands spooled alerts above `sent_upto` to the client until its request queue is full.
    fn publish_pending(&mut self, client: &AsyncClient, base: &str, order: &mut PublishOrder, sent_upto: &mut u32) {
        let topic = format!("{base}/alert");
        let mut batch: Vec<(u32, Vec<u8>)> = Vec::new();
        let from = *sent_upto;
        let room = 256usize.saturating_sub(order.len());
        if room == 0 {
            return;
        }
        let r = self.spool.for_each_pending(|seq, frame| {
            if seq > from {
                batch.push((seq, frame.to_vec()));
            }
            batch.len() < room
        });
        if let Err(e) = r {
            log::error!("uplink spool cannot be read: {e}");
            return;
        }
        for (seq, frame) in batch {
            if client.try_publish(topic.clone(), QoS::AtLeastOnce, false, frame).is_err() {
                break;
            }
            order.push_back(Some(seq));
            *sent_upto = seq;
            self.counters.sent.inc();
        }
    }
}
