//! The command line: parses arguments, sets up logging and the runtime, and maps results to exit codes.
//! The appliance's commands (run, demo, check-config...) and the developer tools share it for now.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::app::{App, Overrides};
use crate::config;

#[derive(Parser, Debug)]
#[command(
    name = "ember-edge",
    version,
    about = "Fire-detection appliance: cameras, thermal/smoke sensors, fusion, local alarm, durable uplink"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the appliance with a site config until SIGINT/SIGTERM.
    Run {
        /// Site config (TOML). See `ember-edge print-config` for every field.
        #[arg(long, short)]
        config: PathBuf,
        /// Stop by itself after this many seconds (for tests and soak runs).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// Run the built-in simulated site: replayed camera frames, a simulated sensor device, a log alarm and a
    /// local collector that prints every alert as a JSON line on stdout.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// Check config files; prints every problem as FILE:LINE:COL: message and exits non-zero if any.
    CheckConfig {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the commented reference config (the embedded default, which is also the demo site).
    PrintConfig,
    /// Thermal-array tools.
    Thermal {
        #[command(subcommand)]
        cmd: ThermalCmd,
    },
    /// Simulated devices.
    Simulate {
        #[command(subcommand)]
        cmd: SimulateCmd,
    },
    /// The control-room receiver: verifies, acknowledges and de-duplicates alerts, one JSON line each.
    Collect(crate::tools::collect::Args),
    /// Load tools that measure a running appliance.
    Loadtest {
        #[command(subcommand)]
        cmd: LoadtestCmd,
    },
    /// Detector evaluation on labelled images.
    Eval {
        #[command(subcommand)]
        cmd: EvalCmd,
    },
    /// Micro-benchmarks of the hot paths.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// The optional TFLite model (installers, board checks).
    #[command(hide = true)]
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// Runs a detector on every image of a labelled folder (labels.csv) and reports recall and false-positive
    /// rates (single frames, no temporal confirmation).
    Frames(crate::tools::eval_frames::Args),
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Nanoseconds per frame of a detector (one thread), on real frames resized to the given size.
    Detect(crate::tools::bench_detect::Args),
}

#[derive(Subcommand, Debug)]
pub enum ModelCmd {
    /// Load the TFLite library and a model; print the version, tensors and outputs.
    Check(crate::tools::model_check::Args),
}

#[derive(Subcommand, Debug)]
pub enum ThermalCmd {
    /// Decode a recorded device session (JSONL) into temperatures: one JSON line per complete frame, then a
    /// summary line with the rejected packets by reason.
    Decode {
        #[arg(long, value_name = "FILE.jsonl")]
        session: PathBuf,
        #[arg(long, value_enum, default_value_t = crate::tools::thermal_decode::Mode::Calibrated)]
        mode: crate::tools::thermal_decode::Mode,
        /// Print JSON lines (the default output is a short table).
        #[arg(long)]
        json: bool,
        /// Scene emissivity for calibrated mode.
        #[arg(long, default_value_t = 0.95)]
        emissivity: f32,
    },
}

#[derive(Subcommand, Debug)]
pub enum SimulateCmd {
    /// An EmberEye field device (MLX90640 + smoke/flame ADCs) that connects to an appliance and behaves like
    /// the real firmware.
    Sensor {
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        #[arg(long, default_value = "1234")]
        loc_id: String,
        #[arg(long, default_value = "SIM0001")]
        serial: String,
        /// Seconds between frames.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[arg(long, value_enum, default_value_t = SimScenario::Idle)]
        scenario: SimScenario,
        /// Seconds before the fire or smoke starts.
        #[arg(long, default_value_t = 3.0)]
        fire_after: f64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SimScenario {
    Idle,
    Fire,
    Smoke,
    Flaky,
}

#[derive(Subcommand, Debug)]
pub enum LoadtestCmd {
    /// Many device connections against the sensor port (EmberEye's tcp_sensor_load_test.py flags and JSON),
    /// plus the appliance's own packet count, losses and latency percentiles.
    Sensors(crate::tools::loadtest_sensors::Args),
    /// Synthetic alerts through the real uplink and spool to a collector, resumable across kills; prints a
    /// JSON report when every alert is acknowledged.
    Uplink(crate::tools::loadtest_uplink::Args),
    /// Input → alarm output latency: drives a zone into ALARM with stamped smoke packets and resets it, many
    /// times; reports the appliance's own latency percentiles.
    Alarm(crate::tools::loadtest_alarm::Args),
    /// Detector throughput on synthetic frames, one thread per stream (EmberEye's camera_stream_load_test.py
    /// flags and JSON), with per-stream fps and latency percentiles and the process's CPU and peak RSS.
    Vision(crate::tools::loadtest_vision::Args),
    /// Live-view viewers: K MJPEG streams per camera, frames/bytes/fps per connection, the appliance's CPU, RSS
    /// and JPEG encodes; `--find-max` steps viewers up to the measured limit. Prints a JSON report.
    Streams(crate::tools::loadtest_streams::Args),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    init_logging();
    match cli.command {
        Command::PrintConfig => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { files } => check_config(&files),
        Command::Run { config, duration } => match config::load_file(&config) {
            Ok(loaded) => run_app(loaded, duration, false),
            Err(problems) => {
                report(&problems);
                ExitCode::from(2)
            }
        },
        Command::Thermal { cmd: ThermalCmd::Decode { session, mode, json, emissivity } } => {
            let r = if json {
                crate::tools::thermal_decode::run(&session, mode, emissivity)
            } else {
                thermal_table(&session, mode, emissivity)
            };
            finish(r)
        }
        Command::Simulate {
            cmd: SimulateCmd::Sensor { connect, loc_id, serial, interval, scenario, fire_after, duration },
        } => {
            let scenario = match scenario {
                SimScenario::Idle => config::Scenario::Idle,
                SimScenario::Fire => config::Scenario::Fire,
                SimScenario::Smoke => config::Scenario::Smoke,
                SimScenario::Flaky => config::Scenario::Flaky,
            };
            let sim =
                config::Simulator { loc_id, serial, scenario, interval_secs: interval, fire_after_secs: fire_after };
            finish(simulate_sensor(sim, &connect, duration))
        }
        Command::Loadtest { cmd: LoadtestCmd::Sensors(args) } => match crate::tools::loadtest_sensors::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Model { cmd: ModelCmd::Check(args) } => finish(crate::tools::model_check::run(args)),
        Command::Collect(args) => finish(crate::tools::collect::run(args, wait_for_stop(None))),
        Command::Loadtest { cmd: LoadtestCmd::Uplink(args) } => match crate::tools::loadtest_uplink::run(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Alarm(args) } => match crate::tools::loadtest_alarm::run(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Vision(args) } => match crate::tools::loadtest_vision::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Streams(args) } => match crate::tools::loadtest_streams::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                let failed = report["passed"] == false;
                if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
            Err(e) => finish(Err(e)),
        },
        Command::Eval { cmd: EvalCmd::Frames(args) } => finish(crate::tools::eval_frames::run(args)),
        Command::Bench { cmd: BenchCmd::Detect(args) } => finish(crate::tools::bench_detect::run(args)),
        Command::Demo { duration } => match config::load_default() {
            Ok(loaded) => run_app(loaded, duration, true),
            Err(problems) => {
                report(&problems);
                ExitCode::FAILURE
            }
        },
    }
}

fn finish(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn thermal_table(
    session: &std::path::Path,
    mode: crate::tools::thermal_decode::Mode,
    emissivity: f32,
) -> anyhow::Result<()> {
    println!("{:>6} {:>8} {:>8} {:>8} {:>8}", "frame", "min_c", "max_c", "mean_c", "ta_c");
    let summary = crate::tools::thermal_decode::decode(session, mode, emissivity, |k, t, ta| {
        let min = t.iter().copied().fold(f32::INFINITY, f32::min);
        let max = t.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64;
        let ta = ta.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!("{k:>6} {min:>8.2} {max:>8.2} {mean:>8.2} {ta:>8}");
        Ok(())
    })?;
    println!(
        "{} frames, {} sensor packets, {} EEPROM replies, rejected {:?}",
        summary.frames, summary.sensors, summary.eeproms, summary.rejected
    );
    Ok(())
}

fn simulate_sensor(sim: config::Simulator, connect: &str, duration: Option<f64>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let target = tokio::net::lookup_host(connect)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{connect} does not resolve"))?;
        let stop = tokio_util::sync::CancellationToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            let why = wait_for_stop(duration).await;
            log::info!("simulator stopping ({why})");
            s2.cancel();
        });
        log::info!("simulated device {} connecting to {target} (scenario {:?})", sim.loc_id, sim.scenario);
        crate::sensor::sim::run(sim, target, stop).await
    })
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

fn report(problems: &[config::ConfigProblem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

fn check_config(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for f in files {
        match config::load_file(f) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w} (warning)");
                }
                println!("{}: ok", f.display());
            }
            Err(problems) => {
                bad += 1;
                report(&problems);
                eprintln!("{}: {} problem(s)", f.display(), problems.len());
            }
        }
    }
    if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn run_app(loaded: config::Loaded, duration: Option<f64>, demo: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let app = match App::start(&loaded, Overrides::default()).await {
            Ok(app) => app,
            Err(e) => {
                log::error!("cannot start: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "{} running from {}: telemetry http://{}/metrics, sensors on {:?}",
            loaded.config.site.name,
            loaded.source_name,
            app.telemetry_addr,
            app.sensor_addrs
        );
        if demo {
            log::info!("demo: a simulated fire starts after a few seconds; the collector prints each alert as a JSON line on stdout");
        }
        let stopped_by = wait_for_stop(duration).await;
        log::info!("stopping ({stopped_by})");
        // A second signal while we shut down means "now": exit without waiting.
        tokio::spawn(async {
            let _ = wait_for_signal().await;
            log::warn!("second signal: exiting immediately");
            std::process::exit(130);
        });
        let report = app.shutdown().await;
        log::info!("stopped in {:.0} ms ({} tasks joined)", report.elapsed.as_secs_f64() * 1000.0, report.joined);
        ExitCode::SUCCESS
    })
}

async fn wait_for_stop(duration: Option<f64>) -> &'static str {
    let timer = async {
        match duration {
            Some(s) if s.is_finite() && s >= 0.0 => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        s = wait_for_signal() => s,
        _ = timer => "duration elapsed",
    }
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
