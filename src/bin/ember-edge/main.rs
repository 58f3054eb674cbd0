//! The `ember-edge` binary, the appliance: runs a site (or the demo) and holds what an installer uses on
//! site (config checks, thermal session decoding, the model check, the simulated sensor). Development and
//! control-room tools are in `ember-tools`. Parses arguments, sets up logging and the runtime, prints, and maps
//! results to exit codes.

// Without the `tflite` feature `model check` only refuses, which leaves its arguments and frame-scoring
// helpers unread in that build.
mod events;
#[cfg_attr(not(feature = "tflite"), allow(dead_code))]
mod model_check;
mod thermal;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use ember_edge::app::{App, Overrides};
use ember_edge::cmd::{wait_for_signal, wait_for_stop};
use ember_edge::config;
use ember_edge::sensor::session::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "ember-edge",
    version,
    about = "Fire-detection appliance: cameras, thermal/smoke sensors, fusion, local alarm, durable uplink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance with a site config until SIGINT/SIGTERM.
    Run {
        /// Site config (TOML). See `ember-edge print-config` for every field.
        #[arg(long, short)]
        config: PathBuf,
        /// Stop by itself after this many seconds (for tests and soak runs).
        #[arg(long, value_name = "SECS", value_parser = ember_edge::cmd::seconds)]
        duration: Option<f64>,
    },
    /// Run the built-in simulated site: replayed camera frames, a simulated sensor device, a log alarm and a
    /// local collector that prints every alert as a JSON line on stdout.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECS", value_parser = ember_edge::cmd::seconds)]
        duration: Option<f64>,
    },
    /// Check config files; prints every problem as FILE:LINE:COL: message and exits non-zero if any.
    CheckConfig {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the event log (alarms, trouble, operator actions, outputs, starts and stops) from its folder on
    /// this board.
    Events(events::Args),
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
    /// The optional TFLite model (installers, board checks).
    #[command(hide = true)]
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Load the TFLite library and a model; print the version, tensors and outputs.
    Check(model_check::Args),
}

#[derive(Subcommand, Debug)]
enum ThermalCmd {
    /// Decode a recorded device session (JSONL) into temperatures: one JSON line per complete frame, then a
    /// summary line with the rejected packets by reason.
    Decode {
        #[arg(long, value_name = "FILE.jsonl")]
        session: PathBuf,
        #[arg(long, value_enum, default_value_t = Mode::Calibrated)]
        mode: Mode,
        /// Print JSON lines (the default output is a short table).
        #[arg(long)]
        json: bool,
        /// Scene emissivity for calibrated mode.
        #[arg(long, default_value_t = 0.95)]
        emissivity: f32,
    },
}

#[derive(Subcommand, Debug)]
enum SimulateCmd {
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
        #[arg(long, default_value_t = 1.0, value_parser = ember_edge::cmd::interval)]
        interval: f64,
        #[arg(long, value_enum, default_value_t = SimScenario::Idle)]
        scenario: SimScenario,
        /// Seconds before the fire or smoke starts.
        #[arg(long, default_value_t = 3.0, value_parser = ember_edge::cmd::seconds_or_zero)]
        fire_after: f64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long, value_parser = ember_edge::cmd::seconds)]
        duration: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SimScenario {
    Idle,
    Fire,
    Smoke,
    Flaky,
}

fn main() -> ExitCode {
    let cli: Cli = match ember_edge::cmd::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    ember_edge::cmd::init_logging();
    match cli.command {
        Command::PrintConfig => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { files } => check_config(&files),
        Command::Events(args) => finish(events::run(args)),
        Command::Run { config, duration } => match config::load_file(&config) {
            Ok(loaded) => run_app(loaded, duration, false),
            Err(problems) => {
                report(&problems);
                ExitCode::from(2)
            }
        },
        Command::Thermal { cmd: ThermalCmd::Decode { session, mode, json, emissivity } } => {
            let r = if json {
                thermal::json_lines(&session, mode, emissivity)
            } else {
                thermal::table(&session, mode, emissivity)
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
        Command::Model { cmd: ModelCmd::Check(args) } => finish(model_check::run(args)),
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
        ember_edge::sensor::sim::run(sim, target, stop).await
    })
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
