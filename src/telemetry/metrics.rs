//! A small Prometheus registry: every series is registered once at start-up and updated through atomics on the
//! hot path; `render` produces the text exposition format. Metric names start with `ember_`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An f64 stored as bits so it can be set without a lock.
#[derive(Clone, Default, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    /// Atomic read-modify-write: tasks on several worker threads move the same gauge (open links), and
    /// `set(get() + 1)` from two of them at once loses one of the updates.
    pub fn add(&self, delta: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + delta).to_bits()));
    }
}

/// Upper bounds (seconds) of the latency histograms: fine below 2 ms, where the budgets are.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1,
    0.5, 1.0, 5.0, 30.0,
];

/// A fixed-bucket histogram updated with atomics (Prometheus `histogram`).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram(Arc::new(HistogramInner { counts: Default::default(), sum_nanos: AtomicU64::new(0) }))
    }

    pub fn observe(&self, secs: f64) {
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add((secs.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

type Probe = Box<dyn Fn() -> f64 + Send + Sync>;

enum Value {
    Counter(Counter),
    Gauge(Gauge),
    Probe(Probe),
    Histogram(Histogram),
}

struct Series {
    labels: String,
    value: Value,
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Label names of its series, in the order first seen (kept for `families`; the series hold them rendered).
    label_names: Vec<String>,
    series: Vec<Series>,
}

/// What a registered family is: its reference entry (docs/reference/metrics.md is generated from these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Label names of the series registered so far (a histogram's `le` not included).
    pub labels: Vec<String>,
}

#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Family>>,
}

fn format_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    fn add(&self, name: &'static str, help: &'static str, kind: Kind, labels: &[(&str, &str)], value: Value) {
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let series = Series { labels: format_labels(labels), value };
        let pos = match fams.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                fams.push(Family { name, help, kind, label_names: Vec::new(), series: Vec::new() });
                fams.len() - 1
            }
        };
        let f = &mut fams[pos];
        // Re-registering the same series (e.g. a reconnected device) replaces it instead of duplicating it.
        f.series.retain(|s| s.labels != series.labels);
        f.series.push(series);
        for (k, _) in labels {
            if !f.label_names.iter().any(|n| n == k) {
                f.label_names.push((*k).to_owned());
            }
        }
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        let c = Counter::default();
        self.add(name, help, Kind::Counter, labels, Value::Counter(c.clone()));
        c
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let g = Gauge::default();
        self.add(name, help, Kind::Gauge, labels, Value::Gauge(g.clone()));
        g
    }

    pub fn histogram(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Histogram {
        let h = Histogram::new();
        self.add(name, help, Kind::Histogram, labels, Value::Histogram(h.clone()));
        h
    }

    /// A series computed at scrape time, for values that already live elsewhere (queue depths, RSS).
    pub fn probe(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.add(name, help, kind, labels, Value::Probe(Box::new(f)));
    }

    /// Names of all registered families, for documentation tests.
    pub fn names(&self) -> Vec<&'static str> {
        self.families.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|f| f.name).collect()
    }

    /// Every registered family with its kind, help and label names, in registration order.
    pub fn families(&self) -> Vec<FamilyInfo> {
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        fams.iter()
            .map(|f| FamilyInfo { name: f.name, kind: f.kind, help: f.help, labels: f.label_names.clone() })
            .collect()
    }

    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(8192);
        for f in fams.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, kind);
            for s in &f.series {
                let v = match &s.value {
                    Value::Counter(c) => c.get() as f64,
                    Value::Gauge(g) => g.get(),
                    Value::Probe(p) => p(),
                    Value::Histogram(h) => {
                        render_histogram(&mut out, f.name, &s.labels, h);
                        continue;
                    }
                };
                let _ = writeln!(out, "{}{} {}", f.name, s.labels, fmt_value(v));
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    // Labels are pre-rendered as `{a="b"}`; the bucket label goes inside the braces.
    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap_or("");
    let sep = if inner.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, c) in h.0.counts.iter().enumerate() {
        cumulative += c.load(Ordering::Relaxed);
        let le = LATENCY_BUCKETS.get(i).map(|b| format!("{b}")).unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{le}\"}} {cumulative}");
    }
    let sum = h.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {cumulative}");
}

/// Estimates a quantile from cumulative Prometheus buckets `(le, count)` by linear interpolation.
pub fn quantile_from_buckets(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev = (0.0, 0u64);
    for &(le, c) in buckets {
        if c as f64 >= rank {
            if !le.is_finite() {
                return Some(prev.0);
            }
            let span = (c - prev.1) as f64;
            let frac = if span > 0.0 { (rank - prev.1 as f64) / span } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Registers the queue's counters under its name.
pub fn register_queue(reg: &Registry, name: &'static str, capacity: usize, stats: Arc<crate::queue::QueueStats>) {
    let labels = [("queue", name)];
    let s = Arc::clone(&stats);
    reg.probe("ember_queue_depth", "Items waiting in a bounded queue.", Kind::Gauge, &labels, move || {
        s.depth.load(Ordering::Relaxed) as f64
    });
    let s = Arc::clone(&stats);
    reg.probe("ember_queue_high_water", "Deepest a bounded queue has been.", Kind::Gauge, &labels, move || {
        s.high_water.load(Ordering::Relaxed) as f64
    });
    reg.probe("ember_queue_capacity", "Capacity of a bounded queue.", Kind::Gauge, &labels, move || capacity as f64);
    let s = Arc::clone(&stats);
    reg.probe("ember_queue_pushed_total", "Items accepted by a bounded queue.", Kind::Counter, &labels, move || {
        s.pushed.load(Ordering::Relaxed) as f64
    });
    reg.probe(
        "ember_queue_dropped_total",
        "Items lost to a bounded queue's overflow policy.",
        Kind::Counter,
        &labels,
        move || stats.dropped.load(Ordering::Relaxed) as f64,
    );
}

/// Process CPU and memory from /proc/self (Linux), so RSS claims can be checked from outside.
pub fn register_process(reg: &Registry) {
    reg.probe("ember_process_resident_memory_bytes", "Resident set size.", Kind::Gauge, &[], || {
        crate::telemetry::proc_stat::rss_bytes().map(|b| b as f64).unwrap_or(f64::NAN)
    });
    reg.probe("ember_process_cpu_seconds_total", "User plus system CPU time.", Kind::Counter, &[], || {
        crate::telemetry::proc_stat::cpu_seconds().unwrap_or(f64::NAN)
    });
    reg.probe("ember_process_threads", "OS threads of the process.", Kind::Gauge, &[], || {
        crate::telemetry::proc_stat::threads().map(|t| t as f64).unwrap_or(f64::NAN)
    });
}

/// The appliance's process-wide series: build info, uptime, and the process figures of `register_process`.
pub fn register_process_wide(reg: &Registry) {
    reg.gauge("ember_build_info", "Version of this build.", &[("version", env!("CARGO_PKG_VERSION"))]).set(1.0);
    let started = std::time::Instant::now();
    reg.probe("ember_uptime_seconds", "Seconds since start.", Kind::Gauge, &[], move || {
        started.elapsed().as_secs_f64()
    });
    register_process(reg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_exposition_format() {
        let reg = Registry::new();
        let c = reg.counter("ember_test_total", "A test.", &[("camera", "a\"b")]);
        c.add(3);
        reg.gauge("ember_g", "G.", &[]).set(1.5);
        let text = reg.render();
        assert!(text.contains("# TYPE ember_test_total counter\nember_test_total{camera=\"a\\\"b\"} 3\n"));
        assert!(text.contains("ember_g 1.5\n"));
    }

    #[test]
    fn families_list_kind_help_and_every_label_name_once() {
        let reg = Registry::new();
        reg.counter("ember_a_total", "A.", &[("camera", "x")]);
        reg.counter("ember_a_total", "A.", &[("camera", "y"), ("kind", "k")]);
        reg.histogram("ember_h_seconds", "H.", &[]);
        let info = |name, kind, help, labels: &[&str]| FamilyInfo {
            name,
            kind,
            help,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        assert_eq!(
            reg.families(),
            [
                info("ember_a_total", Kind::Counter, "A.", &["camera", "kind"]),
                info("ember_h_seconds", Kind::Histogram, "H.", &[])
            ]
        );
    }

    #[test]
    fn gauge_moved_from_many_threads_loses_no_update() {
        let g = Gauge::default();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        g.add(if i % 2 == 0 { 1.0 } else { -1.0 });
                        g.add(1.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.get(), 80_000.0);
    }

    #[test]
    fn histogram_renders_cumulative_buckets_and_quantiles_come_back() {
        let reg = Registry::new();
        let h = reg.histogram("ember_lat_seconds", "L.", &[("kind", "x")]);
        for _ in 0..90 {
            h.observe(0.000_08);
        }
        for _ in 0..10 {
            h.observe(0.004);
        }
        let text = reg.render();
        assert!(text.contains("ember_lat_seconds_bucket{kind=\"x\",le=\"0.0001\"} 90\n"), "{text}");
        assert!(text.contains("ember_lat_seconds_bucket{kind=\"x\",le=\"+Inf\"} 100\n"), "{text}");
        assert!(text.contains("ember_lat_seconds_count{kind=\"x\"} 100\n"), "{text}");
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|le| {
                let c = if le < 0.000_1 {
                    0
                } else if le < 0.005 {
                    90
                } else {
                    100
                };
                (le, c)
            })
            .collect();
        let p50 = quantile_from_buckets(&buckets, 0.5).unwrap();
        assert!(p50 > 0.000_05 && p50 <= 0.000_1, "{p50}");
        let p99 = quantile_from_buckets(&buckets, 0.99).unwrap();
        assert!(p99 > 0.003 && p99 <= 0.005, "{p99}");
    }
}
