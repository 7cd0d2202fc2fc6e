//! Exactly-once drain benchmark: a backlog of single-row outbox transactions delivered by the
//! `outboxd` binary into Kafka, next to two ceilings measured in the same run: `pg_recvlogical`
//! draining the same backlog (how fast the walsender can send it) and Kafka's own
//! `ProducerPerformance` tool with a transactional producer and records of the same size (how fast
//! the broker takes it).
//!
//! `cargo bench --bench kafka_drain` (set `DRAIN_TRANSACTIONS` to change the 200,000).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::kafka::{create_topic, read_topic, Isolation};
use support::postgres::{create_pgoutput_slot, TestDb};
use support::relay::{RelayProcess, RelaySpec};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let transactions = common::transactions();
    let db = TestDb::create("bench_kafka").await;
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
    let ceiling_slot = format!("{}_ceiling", db.slot);
    create_pgoutput_slot(&client, &ceiling_slot).await;
    create_pgoutput_slot(&client, &db.slot).await;
    let aggregate = db.name.clone();
    let topic = format!("outbox.event.{aggregate}");
    create_topic(&topic, 3).await;
    client
        .batch_execute(&format!(
            "CREATE PROCEDURE fill(n int) LANGUAGE plpgsql AS $$
             BEGIN
               FOR i IN 1..n LOOP
                 INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                 VALUES ('{aggregate}', 'order-' || (i % 1000), 'OrderCreated',
                         jsonb_build_object('id', i, 'note', repeat('x', 440)));
                 COMMIT;
               END LOOP;
             END $$;"
        ))
        .await
        .expect("procedure");
    client
        .batch_execute(&format!("CALL fill({transactions})"))
        .await
        .expect("backlog");
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("end lsn")
        .get(0);
    let record_size: i32 = client
        .query_one("SELECT avg(length(payload::text))::int FROM outbox", &[])
        .await
        .expect("size")
        .get(0);

    // Ceiling (a): the walsender.
    let walsender = common::pg_recvlogical(&db, &ceiling_slot, &end);

    // Ceiling (b): the broker, with Kafka's own transactional producer and the same record size.
    let perf_topic = format!("{}.perf", db.name);
    create_topic(&perf_topic, 3).await;
    let perf = Command::new("java")
        .arg("-cp")
        .arg(format!(
            "{}/libs/*",
            std::env::var("OUTBOXD_DEV_KAFKA_HOME").unwrap_or_else(|_| kafka_home())
        ))
        .args([
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            &perf_topic,
        ])
        .args([
            "--num-records",
            &transactions.to_string(),
            "--record-size",
            &record_size.to_string(),
        ])
        .args([
            "--throughput",
            "-1",
            "--transactional-id",
            &format!("{}-perf", db.name),
        ])
        .args(["--transaction-duration-ms", "1000", "--producer-props"])
        .arg(format!(
            "bootstrap.servers={}",
            support::dev_env().kafka_bootstrap
        ))
        .args(["acks=all", "compression.type=lz4"])
        .output()
        .expect("ProducerPerformance");
    let perf_out = String::from_utf8_lossy(&perf.stdout);
    let broker_rate: f64 = perf_out
        .lines()
        .last()
        .and_then(|line| line.split(" records/sec").next())
        .and_then(|head| head.rsplit(['(', ',']).next())
        .and_then(|n| n.trim().split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("unparsed ProducerPerformance output: {perf_out}"));

    // outboxd, the binary, exactly-once, until a read_committed consumer has every record.
    let spec = RelaySpec::for_db(&db);
    let started = Instant::now();
    let relay = RelayProcess::start(&spec);
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &topic,
            Isolation::ReadCommitted,
            Duration::from_secs(600),
            |r| r.len() >= transactions,
        )
        .len()
    })
    .await
    .expect("reader");
    let ours = started.elapsed();
    assert_eq!(records, transactions, "every event delivered");
    let peak_kib = std::fs::read_to_string(format!("/proc/{}/status", relay.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);

    let rate = |d: Duration| transactions as f64 / d.as_secs_f64();
    let slower_ceiling = rate(walsender).min(broker_rate);
    let report = serde_json::json!({
        "benchmark": "kafka_drain",
        "transactions": transactions,
        "record_bytes": record_size,
        "pg_recvlogical_txn_per_s": rate(walsender),
        "kafka_transactional_producer_records_per_s": broker_rate,
        "outboxd_txn_per_s": rate(ours),
        "outboxd_peak_rss_mib": peak_kib / 1024,
        "ratio_to_slower_ceiling": rate(ours) / slower_ceiling,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}

/// Where `scripts/setup` caches Kafka, when the environment does not say.
fn kafka_home() -> String {
    let out = Command::new("bash")
        .args(["-c", "source scripts/common.sh && echo $KAFKA_HOME"])
        .current_dir(support::repo_root())
        .output()
        .expect("common.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
