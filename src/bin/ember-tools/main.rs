//! The `ember-tools` binary: development and control-room tools built on the library, kept out of the
//! appliance binary that boards run. Load tools that measure a running appliance, detector micro-benchmarks and
//! evaluation on labelled images, and the control-room alert receiver. Parses arguments, prints the reports,
//! and maps results to exit codes.

mod bench_camera;
mod bench_detect;
mod collect;
mod eval_clips;
mod eval_frames;
mod loadtest_alarm;
mod loadtest_sensors;
mod loadtest_streams;
mod loadtest_uplink;
mod loadtest_vision;
mod prom;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ember-tools",
    version,
    about = "Development and control-room tools for ember-edge: load tests, benchmarks, detector evaluation, the alert receiver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The control-room receiver: verifies, acknowledges and de-duplicates alerts, one JSON line each.
    Collect(collect::Args),
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
}

#[derive(Subcommand, Debug)]
enum EvalCmd {
    /// Runs a detector on every image of a labelled folder (labels.csv) and reports recall and false-positive
    /// rates (single frames, no temporal confirmation).
    Frames(eval_frames::Args),
    /// Runs clips of consecutive frames (folders or .mjpeg files) through the appliance's vision stage and
    /// temporal confirmation on a simulated clock: event recall and time to detection for fire/smoke clips,
    /// false confirmations per hour for negative clips.
    Clips(eval_clips::Args),
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Nanoseconds per frame of a detector (one thread), on real frames resized to the given size.
    Detect(bench_detect::Args),
    /// Nanoseconds per frame of a JPEG camera's analysis path (decode + detect) at camera sizes, per DCT scale.
    Camera(bench_camera::Args),
}

#[derive(Subcommand, Debug)]
enum LoadtestCmd {
    /// Many device connections against the sensor port (EmberEye's tcp_sensor_load_test.py flags and JSON),
    /// plus the appliance's own packet count, losses and latency percentiles.
    Sensors(loadtest_sensors::Args),
    /// Synthetic alerts through the real uplink and spool to a collector, resumable across kills; prints a
    /// JSON report when every alert is acknowledged.
    Uplink(loadtest_uplink::Args),
    /// Input → alarm output latency: drives a zone into ALARM with stamped smoke packets and resets it, many
    /// times; reports the appliance's own latency percentiles.
    Alarm(loadtest_alarm::Args),
    /// Detector throughput on synthetic frames, one thread per stream (EmberEye's camera_stream_load_test.py
    /// flags and JSON), with per-stream fps and latency percentiles and the process's CPU and peak RSS.
    Vision(loadtest_vision::Args),
    /// Live-view viewers: K MJPEG streams per camera, frames/bytes/fps per connection, the appliance's CPU, RSS
    /// and JPEG encodes; `--find-max` steps viewers up to the measured limit. Prints a JSON report.
    Streams(loadtest_streams::Args),
}

fn main() -> ExitCode {
    let cli: Cli = match ember_edge::cmd::parse_args() {
        Ok(c) => c,
        Err(code) => return code,
    };
    ember_edge::cmd::init_logging();
    match cli.command {
        Command::Collect(args) => finish(collect::run(args, ember_edge::cmd::wait_for_stop(None))),
        Command::Loadtest { cmd: LoadtestCmd::Sensors(args) } => match loadtest_sensors::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Uplink(args) } => match loadtest_uplink::run(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Alarm(args) } => match loadtest_alarm::run(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Vision(args) } => match loadtest_vision::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => finish(Err(e)),
        },
        Command::Loadtest { cmd: LoadtestCmd::Streams(args) } => match loadtest_streams::run(args) {
            Ok(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                let failed = report["passed"] == false;
                if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
            Err(e) => finish(Err(e)),
        },
        Command::Eval { cmd: EvalCmd::Frames(args) } => finish(eval_frames::run(args)),
        Command::Eval { cmd: EvalCmd::Clips(args) } => finish(eval_clips::run(args)),
        Command::Bench { cmd: BenchCmd::Detect(args) } => finish(bench_detect::run(args)),
        Command::Bench { cmd: BenchCmd::Camera(args) } => finish(bench_camera::run(args)),
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
