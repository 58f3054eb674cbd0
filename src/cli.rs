//! The command line: parses arguments, sets up logging and the runtime, and maps results to exit codes.
//! Each subcommand listed here works; later capabilities add theirs.

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
        Command::Demo { duration } => match config::load_default() {
            Ok(loaded) => run_app(loaded, duration, true),
            Err(problems) => {
                report(&problems);
                ExitCode::FAILURE
            }
        },
    }
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
            Ok(_) => println!("{}: ok", f.display()),
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
