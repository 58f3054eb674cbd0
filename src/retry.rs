//! The one reconnect policy of every link that can fail (camera streams and devices, serial ports, the uplink,
//! the collector's broker link, the load tools): exponential backoff from `min` to `max` with full jitter, reset
//! once a connection has stayed up long enough, and one rule for when a failure is worth a log line. The policy
//! is pure (callers say how long the link was up); the waits that beat a health part and honour a stop token
//! come in async and thread forms.
//!
//! Full jitter (a delay uniform in [0, ceiling]) rather than a jittered fixed delay: links that fail together
//! (a switch reboots, a USB hub resets) spread their retries over the whole window instead of arriving in a
//! burst at its end.
//!
//! The log rule: a failure is logged when its number within the current outage is a power of two (1st, 2nd,
//! 4th, 8th, …). The first failure of an outage is always seen at once; a link down for a day at a 30 s ceiling
//! writes about a dozen lines, not three thousand; and the growing gaps still show the outage is ongoing, which
//! "once per outage" would not. The others are left to DEBUG.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::prng::XorShift64;
use crate::telemetry::PartHandle;

/// Longest a wait goes without beating its health part.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Reconnect delays: the ceiling starts at `min`, doubles per failure up to `max`, and each delay is uniform in
/// [0, ceiling]. A connection that stayed up for `healthy_after` (default: any connection at all) resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    healthy_after: Duration,
    ceiling: Duration,
    failures: u32,
    rng: XorShift64,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// Failures in a row in this outage, this one included (1 for the first).
    pub failures: u32,
    /// True when this failure should be logged at the site's level (the module's log rule); DEBUG otherwise.
    pub log: bool,
}

impl Retry {
    /// `loud` when the log rule picks this failure, DEBUG otherwise: every site logs each failure with one call.
    pub fn level(&self, loud: log::Level) -> log::Level {
        if self.log { loud } else { log::Level::Debug }
    }
}

impl Backoff {
    /// Seeded from the clock and process; see `seed` for reproducible delays.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            healthy_after: Duration::ZERO,
            ceiling: min,
            failures: 0,
            rng: XorShift64::from_clock(0),
        }
    }

    /// A connection must stay up this long to reset the backoff (so a link that connects and at once fails
    /// keeps backing off).
    pub fn healthy_after(mut self, d: Duration) -> Self {
        self.healthy_after = d;
        self
    }

    /// A fixed seed for the jitter (tests rely on the same seed giving the same delays).
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = XorShift64::new(seed | 1);
        self
    }

    /// Seeded from the clock, the process and `salt` (a camera's index), so parts do not retry in lockstep.
    pub fn salted(mut self, salt: u64) -> Self {
        self.rng = XorShift64::from_clock(salt);
        self
    }

    /// The largest delay the next failure can get.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// An attempt ended. `up_for` is how long the connection was up (delivered frames, was connected), None if
    /// it never came up.
    pub fn failed(&mut self, up_for: Option<Duration>) -> Retry {
        if up_for.is_some_and(|d| d >= self.healthy_after) {
            self.ceiling = self.min;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = self.ceiling.mul_f64(self.rng.unit());
        self.ceiling = (self.ceiling * 2).min(self.max);
        Retry { delay, failures: self.failures, log: self.failures.is_power_of_two() }
    }
}

/// Waits `delay` unless `stop` comes first (false then), beating `part` at least every second so a long
/// backoff does not look like a hung task.
pub async fn wait(delay: Duration, stop: &CancellationToken, part: Option<&PartHandle>) -> bool {
    wait_doing(delay, stop, part, std::future::pending()).await
}

/// As `wait`, while also driving `meanwhile` (for example, taking in work that must not back up while the
/// link is down). `meanwhile` is dropped when the wait ends, finished or not.
pub async fn wait_doing(
    delay: Duration,
    stop: &CancellationToken,
    part: Option<&PartHandle>,
    meanwhile: impl Future<Output = ()>,
) -> bool {
    let until = tokio::time::Instant::now() + delay;
    tokio::pin!(meanwhile);
    let mut busy = true;
    loop {
        if let Some(p) = part {
            p.beat();
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        let slice = (until - now).min(BEAT_EVERY);
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(slice) => {}
            _ = &mut meanwhile, if busy => busy = false,
        }
    }
}

/// The thread form of `wait`, for parts on their own OS thread: sleeps in slices of at most `slice` and
/// looks at `stop` between them.
pub fn wait_blocking(delay: Duration, stop: &CancellationToken, part: Option<&PartHandle>, slice: Duration) -> bool {
    let until = std::time::Instant::now() + delay;
    loop {
        if stop.is_cancelled() {
            return false;
        }
        if let Some(p) = part {
            p.beat();
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(slice).min(BEAT_EVERY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_to_the_cap_and_resets_after_a_connection() {
        let mut b = Backoff::new(ms(500), Duration::from_secs(4));
        let mut ceilings = vec![];
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis() as u64);
            let r = b.failed(None);
            assert!(r.delay <= ms(*ceilings.last().unwrap_or(&0)));
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 4000, 4000]);
        // With the default healthy time, any connection resets it.
        let r = b.failed(Some(Duration::ZERO));
        assert!(r.delay <= ms(500));
        assert_eq!((r.failures, b.ceiling()), (1, ms(1000)));
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_resets_after_a_healthy_connection() {
        let mut b = Backoff::new(ms(100), ms(3000)).healthy_after(Duration::from_secs(10)).seed(42);
        let mut ceilings = vec![];
        for _ in 0..8 {
            let c = b.ceiling();
            let d = b.failed(None).delay;
            assert!(d <= c, "{d:?} > {c:?}");
            ceilings.push(c.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        // A short healthy spell keeps the ceiling; a long one resets it.
        b.failed(Some(Duration::from_secs(9)));
        assert_eq!(b.ceiling(), ms(3000));
        let d = b.failed(Some(Duration::from_secs(10))).delay;
        assert!(d <= ms(100));
        assert_eq!(b.ceiling(), ms(200));

        // Full jitter: delays spread over the whole [0, ceiling] range.
        let mut b = Backoff::new(ms(1000), ms(1000)).healthy_after(Duration::from_secs(10)).seed(7);
        let d: Vec<f64> = (0..2000).map(|_| b.failed(None).delay.as_secs_f64()).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(d.iter().any(|&x| x < 0.05) && d.iter().any(|&x| x > 0.95));
        // Same seed, same sequence (tests rely on it).
        let mut a = Backoff::new(ms(10), ms(500)).healthy_after(Duration::from_secs(1)).seed(5);
        let mut c = a.clone();
        for _ in 0..10 {
            assert_eq!(a.failed(None), c.failed(None));
        }
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_varies() {
        let mut b = Backoff::new(ms(2000), ms(2000)).seed(42);
        let v: Vec<Duration> = (0..100).map(|_| b.failed(None).delay).collect();
        assert!(v.iter().all(|x| *x <= ms(2000)));
        assert!(v.iter().any(|x| *x != v[0]));
    }

    #[test]
    fn failures_are_logged_at_powers_of_two_within_an_outage() {
        let mut b = Backoff::new(ms(10), ms(100)).healthy_after(Duration::from_secs(10)).seed(1);
        let logged: Vec<u32> = (0..40).map(|_| b.failed(None)).filter(|r| r.log).map(|r| r.failures).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32]);
        // A short connection does not end the outage; a healthy one starts a new one, logged at once.
        assert_eq!(b.failed(Some(Duration::from_secs(1))).failures, 41);
        let r = b.failed(Some(Duration::from_secs(10)));
        assert_eq!((r.failures, r.log), (1, true));
        assert_eq!(r.level(log::Level::Error), log::Level::Error);
        assert_eq!(b.failed(None).level(log::Level::Error), log::Level::Error, "2nd");
        assert_eq!(b.failed(None).level(log::Level::Error), log::Level::Debug, "3rd");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_end_on_time_or_on_stop_and_drive_the_side_work() {
        let stop = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        assert!(wait(Duration::from_secs(5), &stop, None).await);
        assert!(t0.elapsed() >= Duration::from_secs(5));
        let mut ran = 0;
        let side = async {
            loop {
                tokio::time::sleep(ms(300)).await;
                ran += 1;
            }
        };
        assert!(wait_doing(Duration::from_secs(1), &stop, None, side).await);
        assert_eq!(ran, 3);
        stop.cancel();
        assert!(!wait(Duration::from_secs(60), &stop, None).await);
        assert!(!wait_blocking(Duration::from_secs(60), &stop, None, ms(10)));
        let live = CancellationToken::new();
        assert!(wait_blocking(ms(20), &live, None, ms(5)));
    }
}
