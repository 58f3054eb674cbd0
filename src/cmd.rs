//! What the two binaries (`ember-edge`, the appliance; `ember-tools`, the development and control-room tools)
//! share as processes: argument parsing with clap's exit codes, logging set-up, and waiting for a stop signal
//! or a duration. Their output (reports, errors) is printed by the binaries themselves.

use std::process::ExitCode;
use std::time::Duration;

/// Parses the command line; on `--help`/`--version` or a usage error clap has already written its text, and
/// the returned code is the process's exit status (0 for help and version, 2 for a usage error).
pub fn parse_args<C: clap::Parser>() -> Result<C, ExitCode> {
    match C::try_parse() {
        Ok(c) => Ok(c),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
    }
}

/// env_logger on stderr, `info` unless RUST_LOG says otherwise, millisecond timestamps.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

/// The longest duration a command line takes: a year. `1e300` seconds made `Duration::from_secs_f64` panic.
const MAX_SECS: f64 = 365.0 * 86_400.0;

/// A clap value parser for a number of seconds that becomes a timer: finite, positive, at most a year.
pub fn seconds(text: &str) -> Result<f64, String> {
    let s: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if s.is_finite() && s > 0.0 && s <= MAX_SECS {
        Ok(s)
    } else {
        Err(format!("must be more than 0 and at most {MAX_SECS} seconds (a year), got {text}"))
    }
}

/// `seconds`, where 0 is allowed (a warm-up or a wait that may be skipped).
pub fn seconds_or_zero(text: &str) -> Result<f64, String> {
    if text.trim().parse::<f64>() == Ok(0.0) { Ok(0.0) } else { seconds(text) }
}

/// A device's frame interval: 0.05..=3600 s, as `[[simulator]] interval_secs` in the config.
pub fn interval(text: &str) -> Result<f64, String> {
    let s = seconds(text)?;
    if (0.05..=3600.0).contains(&s) { Ok(s) } else { Err(format!("must be 0.05..=3600 seconds, got {text}")) }
}

/// Waits for SIGINT/SIGTERM or, if given, `duration` seconds; says which came first.
pub async fn wait_for_stop(duration: Option<f64>) -> &'static str {
    let timer = async {
        match duration {
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(d) => tokio::time::sleep(d).await,
                Err(_) => std::future::pending::<()>().await,
            },
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        s = wait_for_signal() => s,
        _ = timer => "duration elapsed",
    }
}

/// Waits for SIGINT or SIGTERM and names it.
pub async fn wait_for_signal() -> &'static str {
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
