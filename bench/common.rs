//! What the benchmarks share: their size from the environment, the outbox database and its
//! backlogs, and the two ceilings (`pg_recvlogical` for the walsender, Kafka's transactional
//! `ProducerPerformance` for the broker).
#![allow(dead_code)] // each benchmark uses its own part

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

/// A fresh database with the outbox table of `migrations/`, a publication of it, and the `fill`
/// procedure of [`fill_sql`].
pub async fn outbox_db(prefix: &str) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(include_str!("../migrations/0001_outbox.sql"))
        .await
        .expect("outbox table");
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE outbox",
            db.publication
        ))
        .await
        .expect("publication");
    client
        .batch_execute(
            "CREATE PROCEDURE fill(agg text, txns int, nrows int, first bigint) LANGUAGE plpgsql AS $$
             DECLARE n bigint := first;
             BEGIN
               FOR t IN 1..txns LOOP
                 FOR r IN 1..nrows LOOP
                   INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                   VALUES (agg, 'order-' || (n % 1000), 'OrderCreated',
                           jsonb_build_object('id', n, 'note', repeat('x', 475)));
                   n := n + 1;
                 END LOOP;
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .expect("fill procedure");
    (db, client)
}

/// SQL committing `transactions` transactions of `rows` outbox rows each, all of aggregate type
/// `aggregate` (so on one topic). Each payload is `{"id": n, "note": "x…"}`, about 500 bytes, with
/// `n` counting rows from `first`; keys cycle over 1,000 aggregate ids. Run it as a simple query:
/// the procedure commits, which the extended protocol does not allow everywhere.
pub fn fill_sql(aggregate: &str, transactions: usize, rows: usize, first: u64) -> String {
    format!("CALL fill('{aggregate}', {transactions}, {rows}, {first})")
}

/// Writes a backlog with [`fill_sql`] (ids from 1); returns how long it took.
pub async fn fill(
    client: &tokio_postgres::Client,
    aggregate: &str,
    transactions: usize,
    rows: usize,
) -> Duration {
    let started = Instant::now();
    client
        .batch_execute(&fill_sql(aggregate, transactions, rows, 1))
        .await
        .expect("backlog");
    started.elapsed()
}

/// The server's current WAL position, as text.
pub async fn current_lsn(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("current lsn")
        .get(0)
}

/// The mean length of the outbox payloads' JSON text: the record size for the broker ceiling.
pub async fn payload_bytes(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT avg(length(payload::text))::int FROM outbox", &[])
        .await
        .expect("payload size")
        .get(0)
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

/// Kafka's own `ProducerPerformance` tool, transactional (1 s transactions, `acks=all`, lz4), writing
/// `records` records of `record_bytes` to `topic` as fast as it can: how fast the broker takes
/// exactly-once writes. Returns its records/s.
pub fn producer_performance(topic: &str, records: usize, record_bytes: i32) -> f64 {
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/libs/*", kafka_home()))
        .args([
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
        ])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_bytes.to_string()])
        .args(["--throughput", "-1", "--transactional-id"])
        .arg(format!("{topic}-perf"))
        .args(["--transaction-duration-ms", "1000", "--producer-props"])
        .arg(format!(
            "bootstrap.servers={}",
            support::dev_env().kafka_bootstrap
        ))
        .args(["acks=all", "compression.type=lz4"])
        .output()
        .expect("ProducerPerformance");
    let text = String::from_utf8_lossy(&out.stdout);
    // The summary line: "200000 records sent, 16882.0 records/sec (8.05 MB/sec), ...".
    text.lines()
        .last()
        .and_then(|line| line.split(" records/sec").next())
        .and_then(|head| head.rsplit(['(', ',']).next())
        .and_then(|n| n.trim().split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("unparsed ProducerPerformance output: {text}"))
}

/// Where the Kafka jars are: the dev environment's, else where `scripts/setup` caches them.
pub fn kafka_home() -> String {
    if let Ok(home) = std::env::var("OUTBOXD_DEV_KAFKA_HOME") {
        return home;
    }
    let out = Command::new("bash")
        .args(["-c", "source scripts/common.sh && echo $KAFKA_HOME"])
        .current_dir(support::repo_root())
        .output()
        .expect("common.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A memory figure of process `pid` from `/proc/<pid>/status` in MiB (`field` is `VmRSS` for the
/// resident set now, `VmHWM` for its peak); `None` once the process is gone.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
