//! Rate-limited log lines: a flood of the same bad input (junk frames, refused connections, a failing accept)
//! must not become a flood of log lines that fills an SD card. The first occurrence is logged at once; later
//! ones within the interval are only counted, and the next line let through says how many were held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogLimit {
    every: Duration,
    /// When a line was last let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(held_back)` when a line may be logged at `now`, `None` when this occurrence is only counted.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// The suffix for a line let through after `held` were held back: empty when none were.
pub fn held_back(held: u64) -> String {
    if held == 0 { String::new() } else { format!(" ({held} more like it in between, not logged)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_passes_then_one_per_interval_with_the_count_held_back() {
        let l = LogLimit::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(l.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_secs(5)), Some(1000));
        assert_eq!(l.allow(t0 + Duration::from_secs(6)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(11)), Some(1));
        assert_eq!(held_back(0), "");
        assert!(held_back(3).contains('3'));
    }
}
