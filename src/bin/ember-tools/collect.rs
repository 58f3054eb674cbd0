//! `ember-tools collect`: the control-room receiver as a process of its own. Listens for appliances, verifies
//! and de-duplicates their alerts, and writes one JSON line per alert and heartbeat to stdout or appends them
//! to a file (whose alerts it reads back at start, so a restart never writes an alert twice).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use ember_edge::telemetry::{Health, Registry};
use ember_edge::uplink::collector::{Collector, load_keys};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to listen on for appliances using the TCP transport, e.g. 0.0.0.0:4900.
    #[arg(long, required_unless_present = "mqtt")]
    pub listen: Option<SocketAddr>,
    /// Consume alerts from this MQTT broker (host:port) instead of, or besides, listening.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Topic filter to subscribe to.
    #[arg(long, default_value = "ember/#")]
    pub mqtt_topic: String,
    /// MQTT client id; the broker keeps this session's queued alerts while the collector is down.
    #[arg(long, default_value = "ember-edge-collector")]
    pub mqtt_client_id: String,
    /// Folder of `<device_id>.key` files; when given, every frame must carry a valid tag.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Append JSON lines here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Serve the collector's own /metrics and /health here.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// A collector killed mid-line leaves a torn last line; end it so the next line stays parseable. The torn
/// alert was never acknowledged, so the appliance resends it and it is written again in full.
fn terminate_torn_line(f: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        log::warn!("collector: output ended with a torn line (previous run was killed); it is skipped");
        f.write_all(b"\n")?;
    }
    Ok(())
}

pub fn run(
    args: Args,
    stop_signal: impl std::future::Future<Output = &'static str> + Send + 'static,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let keys = match &args.keys {
            Some(d) => {
                let k = load_keys(d).map_err(|e| anyhow::anyhow!("keys in {}: {e}", d.display()))?;
                log::info!("collector: {} device keys loaded from {}", k.len(), d.display());
                Some(k)
            }
            None => None,
        };
        let sink: Box<dyn std::io::Write + Send> = match &args.out {
            Some(p) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                terminate_torn_line(&mut f).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Box::new(f)
            }
            None => Box::new(std::io::stdout()),
        };
        let registry = Registry::new();
        ember_edge::telemetry::metrics::register_process(&registry);
        let collector = Collector::new(&registry, sink, keys);
        if let Some(p) = &args.out {
            let n = collector.recover_from(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            if n > 0 {
                log::info!("collector: {n} alerts already in {}; they will not be written again", p.display());
            }
        }
        let stop = CancellationToken::new();
        if let Some(addr) = args.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
            let state = ember_edge::web::HttpState::new(Arc::clone(&registry), Health::new());
            tokio::spawn(ember_edge::web::serve(l, state, stop.clone()));
        }
        let mut tasks = Vec::new();
        if let Some(addr) = args.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            log::info!("collector listening on {}", listener.local_addr()?);
            tasks.push(tokio::spawn(Arc::clone(&collector).serve(listener, stop.clone())));
        }
        if let Some(broker) = args.mqtt.clone() {
            ember_edge::uplink::mqtt::split_host_port(&broker)?;
            let c = Arc::clone(&collector);
            tasks.push(tokio::spawn(c.consume_mqtt(
                broker,
                args.mqtt_topic.clone(),
                args.mqtt_client_id.clone(),
                stop.clone(),
            )));
        }
        let why = stop_signal.await;
        log::info!(
            "collector stopping ({why}): {} alerts, {} duplicates ignored",
            collector.alerts.get(),
            collector.duplicates.get()
        );
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}
