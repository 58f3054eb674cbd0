//! Reads this process's resource use from /proc/self; None where /proc is unavailable.

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * page_size())
}

/// The high-water mark of resident memory (`VmHWM`), which catches peaks a periodic sample would miss.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Fields of /proc/self/stat after the command name, which may itself contain spaces.
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub fn cpu_seconds() -> Option<f64> {
    let f = stat_fields()?;
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// From /proc/self/status (`Threads:`), which qemu-user emulates faithfully, unlike the thread field of
/// /proc/self/stat.
pub fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:"))?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        assert!(super::rss_bytes().unwrap_or(0) > 0);
        assert!(super::cpu_seconds().is_some());
        assert!(super::threads().unwrap_or(0) >= 1);
    }
}
