//! Side-by-side benchmark (issue 8): outboxd next to its ceilings and to Debezium Server, all in one
//! run on the same Postgres, broker and workloads.
//!
//! - W1: a backlog of 200,000 single-row outbox transactions (~500-byte JSON payloads), drained.
//! - W2: 1,000,000 rows in 100 transactions, drained.
//! - W3: 2,000 single-row transactions/s for 60 s: commit-to-visible latency and resident memory.
//! - W4: one transaction of 1,000,000 rows: drain time and peak memory.
//!
//! Ceilings, with each backlog: `pg_recvlogical` draining a slot created at the same point; with W1,
//! Kafka's transactional `ProducerPerformance` for the same record size (the broker's rate does not
//! depend on how rows were grouped in Postgres, so W2 and W4 are compared with W1's).
//!
//! `bench/run` resolves Debezium Server, runs this and renders the results; run alone it benchmarks
//! outboxd only. `OUTBOXD_BENCH_WORKLOADS=w1,w3` picks workloads, `OUTBOXD_BENCH_SCALE=0.1` shrinks
//! every count (and W3's length) for a quick try, `OUTBOXD_BENCH_OUT` names the JSON file (default:
//! stdout). Variables `OUTBOXD_BENCH_META_<KEY>` land in the report's `environment` as `<key>`.

mod backlog;
#[path = "../common.rs"]
mod common;
mod steady;
mod subjects;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::{json, Map};

use backlog::Backlog;
use common::{scaled, Steady};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = common::scale();
    let selected = common::env("OUTBOXD_BENCH_WORKLOADS").unwrap_or_else(|| "w1,w2,w3,w4".into());
    let runs = |name: &str| selected.split(',').any(|w| w.trim() == name);
    let kinds = subjects::Kind::selected();
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let load_before = common::loadavg();

    let mut workloads = Map::new();
    let backlogs = [
        ("w1", scaled(200_000), 1),
        ("w2", 100, scaled(10_000)),
        ("w4", 1, scaled(1_000_000)),
    ];
    for (name, transactions, rows) in backlogs {
        if name == "w4" && runs("w3") {
            let steady = Steady {
                rate: 2_000,
                seconds: scaled(60) as u64,
            };
            workloads.insert("w3".into(), steady::run(steady, &kinds).await);
        }
        if runs(name) {
            let backlog = Backlog {
                name,
                transactions,
                rows,
            };
            let report = backlog::run(backlog, &kinds, name == "w1").await;
            workloads.insert(name.into(), report);
        }
    }

    common::write_report(&json!({
        "benchmark": "side_by_side",
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "duration_seconds": started.elapsed().as_secs_f64(),
        "scale": scale,
        "environment": common::environment(load_before).await,
        "workloads": workloads,
    }));
}
