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
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

type Probe = Box<dyn Fn() -> f64 + Send + Sync>;

enum Value {
    Counter(Counter),
    Gauge(Gauge),
    Probe(Probe),
}

struct Series {
    labels: String,
    value: Value,
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    series: Vec<Series>,
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
        if let Some(f) = fams.iter_mut().find(|f| f.name == name) {
            // Re-registering the same series (e.g. a reconnected device) replaces it instead of duplicating it.
            f.series.retain(|s| s.labels != series.labels);
            f.series.push(series);
        } else {
            fams.push(Family { name, help, kind, series: vec![series] });
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

    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(8192);
        for f in fams.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, kind);
            for s in &f.series {
                let v = match &s.value {
                    Value::Counter(c) => c.get() as f64,
                    Value::Gauge(g) => g.get(),
                    Value::Probe(p) => p(),
                };
                let _ = writeln!(out, "{}{} {}", f.name, s.labels, fmt_value(v));
            }
        }
        out
    }
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
}
