//! `ember-tools loadtest uplink`: drives the appliance's real uplink task and spool with synthetic zone
//! transitions until the spool has handed out `--alerts` sequence numbers in total (so a run killed halfway
//! and started again with the same spool continues where it stopped), then waits until the collector has
//! acknowledged everything and prints a JSON report. Used for the delivery fault tests and for measuring
//! alert throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use ember_edge::event::{Transition, ZoneState, evidence};
use ember_edge::queue::{Overflow, Pushed, Queue};
use ember_edge::telemetry::Registry;
use ember_edge::uplink::spool::{Fsync, Place, Spool};
use ember_edge::uplink::{UplinkCounters, UplinkTask};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The collector or MQTT broker (host:port).
    #[arg(long)]
    pub server: String,
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    pub transport: TransportArg,
    /// MQTT topic prefix.
    #[arg(long, default_value = "ember")]
    pub topic_prefix: String,
    /// MQTT over TLS: PEM file of the CA that signed the broker's certificate.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// MQTT over TLS: PEM client certificate (needs --client-key).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// MQTT over TLS: PEM key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Total alerts to produce over the life of the spool.
    #[arg(long)]
    pub alerts: u32,
    /// Spool folder (reuse it across runs to resume).
    #[arg(long)]
    pub spool: std::path::PathBuf,
    #[arg(long, default_value_t = 8 << 20)]
    pub spool_max_bytes: u64,
    #[arg(long, value_enum, default_value_t = FsyncArg::Always)]
    pub fsync: FsyncArg,
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 4242)]
    pub device_id: u32,
    /// Alerts per second; 0 = as fast as the spool takes them.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 5.0, value_parser = ember_edge::cmd::seconds)]
    pub heartbeat_secs: f64,
    /// Give up waiting for acknowledgements after this many seconds (exit code 1).
    #[arg(long, default_value_t = 120.0, value_parser = ember_edge::cmd::seconds_or_zero)]
    pub wait_secs: f64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    Tcp,
    Mqtt,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FsyncArg {
    Always,
    Never,
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<serde_json::Value> {
    let fsync = match args.fsync {
        FsyncArg::Always => Fsync::Always,
        FsyncArg::Never => Fsync::Never,
    };
    let (spool, recovery) = Spool::open(&args.spool, args.spool_max_bytes, fsync)?;
    let already = spool.next_seq().saturating_sub(1);
    let to_produce = args.alerts.saturating_sub(already);
    let key = match &args.key_file {
        Some(k) => ember_edge::uplink::collector::read_key(k)?,
        None => Vec::new(),
    };
    let reg = Registry::new();
    let input: Queue<Transition> = Queue::new("uplink", 1024, Overflow::DropNewest);
    let counters = UplinkCounters {
        sent: reg.counter("sent", "", &[]),
        acked: reg.counter("acked", "", &[]),
        dropped: reg.gauge("dropped", "", &[]),
        reconnects: reg.counter("reconnects", "", &[]),
        pending: reg.gauge("pending", "", &[]),
        connected: reg.gauge("connected", "", &[]),
        spool_bytes: reg.gauge("spool_bytes", "", &[]),
        rejected_acks: reg.counter("rejected_acks", "", &[]),
        in_memory: reg.gauge("in_memory", "", &[]),
        spool_trouble: reg.gauge("spool_trouble", "", &[]),
        lost: reg.counter("lost", "", &[]),
        tls_refused: ember_edge::uplink::tls::refusal_counters(&reg),
    };
    let tls_refused = counters.tls_refused.clone();
    let (sent, acked, pending, dropped, reconnects) = (
        counters.sent.clone(),
        counters.acked.clone(),
        counters.pending.clone(),
        counters.dropped.clone(),
        counters.reconnects.clone(),
    );
    let task = UplinkTask {
        transport: match args.transport {
            TransportArg::Tcp => ember_edge::uplink::Transport::Tcp,
            TransportArg::Mqtt => ember_edge::uplink::Transport::Mqtt(ember_edge::uplink::MqttTransport {
                topic_prefix: args.topic_prefix.clone(),
                tls: args.ca_file.clone().map(|ca_file| ember_edge::uplink::tls::TlsFiles {
                    ca_file,
                    client_cert: args.client_cert.clone(),
                    client_key: args.client_key.clone(),
                }),
                ha: None,
            }),
        },
        server: args.server.clone(),
        device_id: args.device_id,
        key,
        zone_names: Arc::new(vec!["loadtest".into()]),
        input: input.clone(),
        spool: Ok(spool),
        place: Place { dir: args.spool.clone(), max_bytes: args.spool_max_bytes, fsync },
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(1000),
        heartbeat: Duration::from_secs_f64(args.heartbeat_secs.max(0.1)),
        counters,
        site: None,
    };
    let stop = CancellationToken::new();
    let health = ember_edge::telemetry::Health::new();
    let part = health.register("uplink", None);
    let uplink = tokio::spawn(task.run(part, stop.clone()));
    let started = Instant::now();
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut next = tokio::time::Instant::now();
    for k in 0..to_produce {
        if let Some(p) = period {
            tokio::time::sleep_until(next).await;
            next += p;
        }
        let (from, to) = if k % 2 == 0 {
            (ZoneState::Normal, ZoneState::PreAlarm)
        } else {
            (ZoneState::PreAlarm, ZoneState::Normal)
        };
        let t = Transition {
            zone: 0,
            at: tokio::time::Instant::now(),
            from,
            to,
            sources: evidence::VISION,
            vision_score: 0.5,
            max_c: 25.0,
            rise_c_per_min: 0.0,
            smoke_pct: 5.0,
            operator: false,
            test: false,
            reason: ember_edge::event::reason::SINGLE_SOURCE,
            vision_frame: None,
            thermal_device: None,
            event_id: None,
        };
        // The queue refuses when the uplink is busy; wait rather than lose a synthetic alert.
        while input.push(t) == Pushed::Refused {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let produced_at = started.elapsed();
    // The queue accepting an alert is not the spool holding it: wait until the uplink task has taken every one
    // in (or dropped it as the oldest of a full spool), then say so. Scripts that inject faults wait for this
    // line (stderr) to know the spool has everything it will get.
    let spooled_by = Instant::now() + Duration::from_secs_f64(args.wait_secs);
    while Instant::now() < spooled_by
        && !(input.is_empty() && pending.get() + dropped.get() + acked.get() as f64 >= f64::from(to_produce))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log::info!(
        "loadtest uplink: produced {to_produce} alerts in {:.2} s, all in the spool; waiting for acknowledgements",
        produced_at.as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait_secs);
    let mut complete = false;
    while Instant::now() < deadline {
        if input.is_empty() && pending.get() == 0.0 {
            // The gauge is updated after each spool change; a short settle avoids racing the last append.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if input.is_empty() && pending.get() == 0.0 {
                complete = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = uplink.await;
    let elapsed = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "alerts_total": args.alerts,
        "produced_before": already,
        "produced_now": to_produce,
        "recovered_records": recovery.records,
        "torn_bytes": recovery.torn_bytes,
        "sent_frames": sent.get(),
        "acked": acked.get(),
        "pending": pending.get(),
        "dropped_by_full_spool": dropped.get(),
        "reconnects": reconnects.get(),
        "tls_refused": tls_refused.iter().map(|c| c.get()).sum::<u64>(),
        "produce_secs": produced_at.as_secs_f64(),
        "elapsed_secs": elapsed,
        "alerts_per_sec": if elapsed > 0.0 { to_produce as f64 / elapsed } else { 0.0 },
        "complete": complete,
    });
    if !complete {
        anyhow::bail!("not all alerts acknowledged within {} s: {report}", args.wait_secs);
    }
    Ok(report)
}
