//! Where W3's latency goes: the relay's own latency histograms (`/metrics`), scraped before and
//! after the measured phase, read as quantiles of what happened in between.
//!
//! Each histogram counts from the Postgres commit timestamp to a point on the path: the Commit
//! message decoded, the last record handed to the producer, the Kafka commit returned. The
//! bench's own figure (commit to `read_committed` receipt) is the last point; the difference
//! between neighbouring points' quantiles is the time a stage adds.

use serde_json::{json, Value};

use crate::support::http::http_get;

/// The histograms, in path order: (name in the report, metric series without `_bucket`, labels).
const POINTS: [(&str, &str, &str); 3] = [
    (
        "decoded",
        "outboxd_latency_since_commit_seconds",
        "reached=\"decoded\",",
    ),
    (
        "produced",
        "outboxd_latency_since_commit_seconds",
        "reached=\"produced\",",
    ),
    ("kafka_committed", "outboxd_end_to_end_latency_seconds", ""),
];

/// One scrape of the relay's `/metrics`.
#[derive(Debug)]
pub struct Scrape(String);

impl Scrape {
    /// GETs `/metrics` at `address`.
    pub fn take(address: &str) -> Self {
        let (status, body) = http_get(address, "/metrics").expect("scrape the relay's /metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Self(body)
    }

    /// Cumulative bucket counts of `series{labels le=…}`, by upper bound, ascending.
    fn buckets(&self, series: &str, labels: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{series}_bucket{{{labels}le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .lines()
            .filter_map(|line| {
                let (bound, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// p50, p95 and p99 in milliseconds of each point between `before` and `after`.
pub fn stage_table(before: &Scrape, after: &Scrape) -> Value {
    let mut table = json!({});
    for (name, series, labels) in POINTS {
        let earlier = before.buckets(series, labels);
        let later = after.buckets(series, labels);
        let delta: Vec<(f64, f64)> = later
            .iter()
            .map(|&(bound, count)| {
                let was = earlier
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0.0, |(_, c)| *c);
                (bound, count - was)
            })
            .collect();
        table[name] = json!({
            "samples": delta.last().map_or(0.0, |(_, c)| *c),
            "p50": quantile(&delta, 0.50),
            "p95": quantile(&delta, 0.95),
            "p99": quantile(&delta, 0.99),
        });
    }
    table
}

/// The `q` quantile in milliseconds of cumulative `buckets`, interpolated linearly within the
/// bucket it falls in, as Prometheus' `histogram_quantile` does; `None` without samples, the
/// highest finite bound when it falls in `+Inf`.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0 * 1000.0);
            }
            let within = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                0.0
            };
            return Some((lower.0 + (bound - lower.0) * within) * 1000.0);
        }
        lower = (bound, count);
    }
    None
}
