//! What the benchmarks share: their size from the environment and the `pg_recvlogical` ceiling.

use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{self, postgres::TestDb};

/// `DRAIN_TRANSACTIONS`, or 200,000.
pub fn transactions() -> usize {
    std::env::var("DRAIN_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// `pg_recvlogical` from `slot`'s start to `end` (an LSN as text), output discarded: how fast the
/// walsender itself can send the backlog.
pub fn pg_recvlogical(db: &TestDb, slot: &str, end: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new(support::dev_env().pg_bin.join("pg_recvlogical"))
        .args([
            "-d",
            &db.url,
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .arg(format!("--endpos={end}"))
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={}", db.publication))
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical failed");
    started.elapsed()
}
