//! Reading the appliance's own Prometheus text, for the load tools: one series, a sum over label sets, a
//! histogram's cumulative buckets, and quantiles of the difference between two scrapes.

use ember_edge::telemetry::metrics::quantile_from_buckets;

/// The value of the series named exactly `series` (labels included), e.g. `ember_zone_state{zone="a"}`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The sum of every series of `name`, optionally only those with label `k="v"`.
pub fn sum(text: &str, name: &str, label_filter: Option<(&str, &str)>) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some((k, v)) = label_filter
            && !rest.contains(&format!("{k}=\"{v}\""))
        {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            total += v;
        }
    }
    total
}

/// The cumulative `(le, count)` buckets of histogram `name`.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let Some(le) = rest.split("le=\"").nth(1).and_then(|x| x.split('"').next()) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let c = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        out.push((le, c));
    }
    out
}

/// Observations between two scrapes of one histogram, and their p50/p95/p99 in milliseconds.
pub struct Delta {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub fn delta(before: &[(f64, u64)], after: &[(f64, u64)]) -> Delta {
    let d: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, c)| (le, c.saturating_sub(before.iter().find(|b| b.0 == le).map(|b| b.1).unwrap_or(0))))
        .collect();
    let q = |p| quantile_from_buckets(&d, p).map(|s| (s * 1e6).round() / 1e3);
    Delta { count: d.last().map(|x| x.1).unwrap_or(0), p50_ms: q(0.50), p95_ms: q(0.95), p99_ms: q(0.99) }
}
