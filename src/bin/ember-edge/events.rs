//! `ember-edge events`: the event log read straight from its folder on the board (no network, works while the
//! appliance runs or is stopped, and after a crash), as a table or JSON lines; `--follow` keeps printing new
//! events. Reading never changes the folder: a record being written is simply shown on the next pass.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ember_edge::events::{Event, Kind, Query, Store};
use ember_edge::uplink::spool::Fsync;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Site config whose `[uplink] events_dir` holds the log.
    #[arg(long, short, default_value = "/etc/ember-edge/ember-edge.toml")]
    config: PathBuf,
    /// The event log folder itself, instead of reading it from the config.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Only events with a greater id.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    since: u64,
    /// Only this kind: zone, trouble, restored, operator, output, start, stop, unclean_restart, config, log.
    #[arg(long)]
    kind: Option<String>,
    /// Only the newest N events.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Keep running and print new events as they are written.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Test helper: append events to --dir for ever (fsync each), printing `written ID` once each is durable.
    #[arg(long, hide = true)]
    write_test: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let loaded = ember_edge::config::load_file(&a.config).map_err(|p| {
                anyhow::anyhow!("{}: {}", a.config.display(), p.first().map(|p| p.to_string()).unwrap_or_default())
            })?;
            let d = loaded.config.uplink.events_dir.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{} sets no [uplink] events_dir: that site keeps its log in a temporary folder for one run; \
                     read it from the running appliance with GET /api/events",
                    a.config.display()
                )
            })?;
            loaded.resolve(d)
        }
    };
    if a.write_test {
        return write_test(&dir);
    }
    let kind = match a.kind.as_deref() {
        None => None,
        Some(k) => Some(Kind::parse(k).ok_or_else(|| anyhow::anyhow!("unknown kind `{k}`"))?),
    };
    if !dir.is_dir() {
        anyhow::bail!("{} is not an event log folder", dir.display());
    }
    let mut since = a.since;
    let mut first = true;
    let out = std::io::stdout();
    loop {
        let store = Store::open_read_only(&dir)?;
        let newest = first && a.last.is_some();
        let limit = if newest { a.last.unwrap_or(usize::MAX) } else { usize::MAX };
        let events = store.query(&Query { since, limit, kind, newest });
        let mut o = out.lock();
        for e in &events {
            if a.json {
                writeln!(o, "{}", serde_json::to_string(e)?)?;
            } else {
                writeln!(o, "{}", line(e))?;
            }
            since = e.id;
        }
        o.flush()?;
        drop(o);
        if !a.follow {
            return Ok(());
        }
        // Without a kind filter, ids we skipped because they were not shown still move the mark on.
        if let Some(n) = store.next_id().checked_sub(1) {
            since = since.max(n);
        }
        first = false;
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn line(e: &Event) -> String {
    let what = match (&e.zone, &e.source) {
        (Some(z), _) => format!("zone {z}"),
        (None, Some(s)) => s.clone(),
        (None, None) => String::new(),
    };
    let by = e.by.as_deref().map(|b| format!(" [by {b}]")).unwrap_or_default();
    format!("{:>6}  {}  {:<15} {:<18} {}{by}", e.id, utc(e.ms), e.kind.label(), what, e.detail)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` UTC from ms since the epoch (civil-from-days, proleptic Gregorian).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", sod / 3600, sod / 60 % 60, sod % 60, ms % 1000)
}

/// The crash test's writer: the log's own append path with fsync on, reporting each event only once it is on
/// disk. The detail repeats the id so a reader can tell a corrupt event from a good one.
fn write_test(dir: &std::path::Path) -> anyhow::Result<()> {
    let (mut store, opened) = Store::open(dir, 16 << 20, Fsync::Always)?;
    let out = std::io::stdout();
    let put = |kind: Kind, store: &mut Store| -> anyhow::Result<()> {
        let id = store.next_id();
        let ev = Event { id, ms: id, kind, detail: test_detail(id), ..Event::default() };
        store.append(&ev)?;
        let mut o = out.lock();
        writeln!(o, "written {id}")?;
        o.flush()?;
        Ok(())
    };
    if opened.last_kind.is_some_and(|k| k != Kind::Stop) {
        put(Kind::UncleanRestart, &mut store)?;
    }
    loop {
        put(Kind::Zone, &mut store)?;
    }
}

/// The detail the crash test writes for event `id`.
pub fn test_detail(id: u64) -> String {
    format!("event {id} {}", "x".repeat((id % 97) as usize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(super::utc(1_796_601_599_000), "2026-12-06 23:59:59.000");
    }
}
