//! Builds the uplink task from `[uplink]`: opens (and recovers) the alert spool (a spool that cannot be opened
//! does not stop the start: the outbox holds alerts in memory until it can), reads the device key, picks the
//! transport and registers the uplink's metrics. The one place the wiring asks for an uplink.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::ha::HaModel;
use super::ha_link::{HaSetup, SiteView};
use super::spool::{Fsync, Place, Spool};
use super::tls::TlsFiles;
use super::{MqttTransport, Transport, UplinkCounters, UplinkTask};
use crate::config::{FsyncPolicy, Loaded, UplinkTransport};
use crate::event::{Observation, Transition};
use crate::queue::Queue;
use crate::telemetry::Registry;

impl From<FsyncPolicy> for Fsync {
    fn from(p: FsyncPolicy) -> Self {
        match p {
            FsyncPolicy::Always => Fsync::Always,
            FsyncPolicy::Never => Fsync::Never,
        }
    }
}

/// A built uplink; `temp_spool` is the folder to remove at shutdown when the spool is not durable.
pub struct BuiltUplink {
    pub task: UplinkTask,
    pub temp_spool: Option<PathBuf>,
}

/// The uplink of `loaded`, sending the transitions of `input`; `local_collector` is the in-process collector's
/// address, the server when `[uplink] server` is unset. `site` and `operator` serve Home Assistant discovery
/// (what it shows, where its button presses go) when `[uplink.mqtt] home_assistant` is on.
pub fn from_config(
    loaded: &Loaded,
    registry: &Registry,
    local_collector: Option<SocketAddr>,
    zone_names: Arc<Vec<String>>,
    input: Queue<Transition>,
    site: Arc<dyn SiteView>,
    operator: Queue<Observation>,
) -> anyhow::Result<BuiltUplink> {
    let c = &loaded.config;
    // Validation refuses an enabled uplink without a device id.
    let device_id = c.site.device_id.unwrap_or_default();
    let server = match (&c.uplink.server, local_collector) {
        (Some(s), _) => s.clone(),
        (None, Some(a)) => a.to_string(),
        (None, None) => anyhow::bail!("uplink is enabled but has no server and no local collector"),
    };
    let (spool_dir, durable) = match &c.uplink.spool_dir {
        Some(d) => (loaded.resolve(d), true),
        None => {
            // Several apps may run in one process (tests): each needs its own temporary spool.
            static INSTANCE: AtomicU32 = AtomicU32::new(0);
            let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
            let name = format!("ember-edge-spool-{}-{}-{n}", device_id, std::process::id());
            (std::env::temp_dir().join(name), false)
        }
    };
    if !durable {
        log::warn!("[uplink] spool_dir is not set: alerts survive a lost link but not a restart");
    }
    let place = Place { dir: spool_dir.clone(), max_bytes: c.uplink.spool_max_bytes, fsync: c.uplink.fsync.into() };
    // The alarm path never waits for the disk: without a spool the appliance starts, holds alerts in memory
    // and sends them from there (TROUBLE until the spool opens).
    let spool = match Spool::open(&spool_dir, place.max_bytes, place.fsync) {
        Ok((spool, recovery)) => {
            if recovery.records > 0 || recovery.torn_bytes > 0 {
                log::info!(
                    "alert spool {}: {} records recovered ({} pending), {} torn bytes discarded",
                    spool_dir.display(),
                    recovery.records,
                    spool.pending(),
                    recovery.torn_bytes
                );
            }
            Ok(spool)
        }
        Err(e) => {
            log::error!("cannot open the alert spool: {e}; alerts are held in memory until it opens");
            Err(format!("cannot open: {e}"))
        }
    };
    let key = match &c.uplink.key_file {
        Some(k) => super::collector::read_key(&loaded.resolve(k))
            .map_err(|e| anyhow::anyhow!("cannot read the uplink key {k}: {e}"))?,
        None => Vec::new(),
    };
    let transport = match c.uplink.transport {
        UplinkTransport::Tcp => Transport::Tcp,
        UplinkTransport::Mqtt => {
            let m = &c.uplink.mqtt;
            let resolve = |p: &Option<String>| p.as_deref().map(|p| loaded.resolve(p));
            let tls = resolve(&m.ca_file).map(|ca_file| TlsFiles {
                ca_file,
                client_cert: resolve(&m.client_cert),
                client_key: resolve(&m.client_key),
            });
            let ha = m
                .home_assistant
                .then(|| Arc::new(HaSetup::new(HaModel::from_config(c), Arc::clone(&site), operator, registry)));
            Transport::Mqtt(MqttTransport { topic_prefix: c.uplink.topic_prefix.clone(), tls, ha })
        }
    };
    let task = UplinkTask {
        transport,
        server,
        device_id,
        key,
        zone_names,
        input,
        spool,
        place,
        reconnect_min: Duration::from_millis(c.uplink.reconnect_min_ms),
        reconnect_max: Duration::from_millis(c.uplink.reconnect_max_ms),
        heartbeat: Duration::from_secs(c.uplink.heartbeat_secs.max(1)),
        counters: UplinkCounters::register(registry),
        site: Some(site),
    };
    Ok(BuiltUplink { task, temp_spool: (!durable).then_some(spool_dir) })
}
