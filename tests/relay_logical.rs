//! The relay end to end on real Postgres and real Kafka: every committed outbox row reaches a
//! `read_committed` consumer exactly once, per key in commit order, whatever happens to the relay.
//! The scenarios poll mode passes too are written once in `scenarios/`; the tests here run them in
//! logical mode, and what only logical mode has.

mod scenarios;
mod support;

use std::time::Duration;

use scenarios::{lsn, slot_confirmed};
use support::kafka::{create_topic, create_topic_at, read_topic, Isolation, PrivateKafka};
use support::mode::{Mode, ModeDb};
use support::outbox::{random_keys, read_all, spawn_writer};
use support::postgres::PrivateCluster;
use support::relay::RelayProcess;

/// A database with the outbox tables, a publication of the outbox and a slot.
struct OutboxDb;

impl OutboxDb {
    /// A new database in the shared cluster.
    async fn create(prefix: &str) -> ModeDb {
        ModeDb::create(Mode::Logical, prefix).await
    }

    /// The `postgres` database of a private cluster.
    async fn on_cluster(cluster: &PrivateCluster, prefix: &str) -> ModeDb {
        ModeDb::on_cluster(Mode::Logical, cluster, prefix).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_delivered_exactly_once_in_commit_order() {
    let outbox = OutboxDb::create("relay_concurrent").await;
    scenarios::concurrent_writers(&outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_sigkill_at_random_moments() {
    let outbox = OutboxDb::create("relay_kill").await;
    scenarios::sigkills(&outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_explicit_takeover_fences_the_first() {
    let outbox = OutboxDb::create("relay_zombie").await;
    scenarios::an_explicit_takeover_fences_the_first(&outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_stops_cleanly_and_loses_nothing() {
    let outbox = std::sync::Arc::new(OutboxDb::create("relay_sigterm").await);
    create_topic(&outbox.topic(), 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(outbox.outbox.clone(), stop.clone());

    for _ in 0..3 {
        let mut relay = RelayProcess::start(&outbox.spec);
        // The stop lands while the relay publishes: after a Kafka commit of this run.
        relay.wait_for_commits_past(0).await;
        let status = relay
            .signal_and_wait("TERM", Duration::from_secs(30))
            .expect("exits within the timeout after SIGTERM");
        assert!(
            status.success(),
            "exit status {status:?}:\n{}",
            relay.log_text()
        );
        assert!(
            relay.log_text().contains("stopped cleanly"),
            "{}",
            relay.log_text()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");

    let _relay = RelayProcess::start(&outbox.spec);
    outbox
        .assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
}

/// Peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// The last `lines` lines of `log`.
fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sum over partitions of what a `read_committed` consumer may read up to (last stable offsets).
fn stable_offsets(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = support::kafka::client_config()
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    (0..3)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_row_transaction_arrives_atomically_in_bounded_memory() {
    const ROWS: i64 = 1_000_000;
    let mut outbox = OutboxDb::create("relay_huge").await;
    // One Kafka transaction holds the million records while they are produced: on a loaded
    // machine that outlasted the tests' usual 60 s, and the broker aborted it (the relay's default
    // is 15 min).
    outbox.spec.transaction_timeout = Duration::from_secs(600);
    let topic = outbox.topic();
    create_topic(&topic, 3).await;
    let relay = RelayProcess::start(&outbox.spec);
    outbox
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
             SELECT '{agg}', 'k' || (g % 100), 'bulk',
                    jsonb_build_object('key', 'k' || (g % 100), 'g', g, 'pad', repeat('x', 100))
             FROM generate_series(1, {ROWS}) g",
            agg = outbox.aggregate_type
        ))
        .await
        .expect("one huge transaction");

    // Until the Kafka commit nothing is readable; then all of it at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut samples = Vec::new();
    loop {
        let stable = tokio::task::spawn_blocking({
            let topic = topic.clone();
            move || stable_offsets(&topic)
        })
        .await
        .expect("watermarks");
        samples.push(stable);
        if stable >= ROWS {
            break;
        }
        if stable > 0 {
            // Offsets alone cannot tell a partial commit from an abort: the broker moves the
            // stable offset past an aborted transaction's records too (its transaction timeout,
            // or the relay stopping on a lost lease on a loaded machine, then retrying). Records
            // a read_committed consumer gets can: none, or all of them once the retry commits.
            let readable = tokio::task::spawn_blocking({
                let topic = topic.clone();
                move || {
                    read_topic(
                        &topic,
                        Isolation::ReadCommitted,
                        Duration::from_secs(20),
                        |r| !r.is_empty(),
                    )
                    .len()
                }
            })
            .await
            .expect("read_committed records");
            assert!(
                readable == 0 || stable_offsets(&topic) >= ROWS,
                "a partial transaction became readable: {readable} records, stable offsets \
                 {samples:?}; the relay's log ends:\n{}",
                log_tail(&relay.log_text(), 60)
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = peak_rss_kib(relay.pid());
    assert!(
        peak < 150 * 1024,
        "peak RSS {} MiB is over 150 MiB",
        peak / 1024
    );
    let records = read_topic(
        &topic,
        Isolation::ReadCommitted,
        Duration::from_secs(120),
        |r| r.len() >= 1_000_000,
    );
    assert_eq!(
        records.len(),
        1_000_000,
        "stable offsets {samples:?}; the relay's log ends:\n{}",
        log_tail(&relay.log_text(), 60)
    );
    eprintln!("relay peak RSS: {} MiB", peak / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_a_postgres_restart_mid_stream() {
    let cluster = PrivateCluster::start(
        Mode::Logical.cluster_conf(),
        &["host all all 127.0.0.1/32 trust"],
    );
    let outbox = OutboxDb::on_cluster(&cluster, "relay_pg_restart").await;
    scenarios::postgres_restarts(&cluster, &outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_a_broker_restart_mid_stream() {
    let kafka = PrivateKafka::start();
    let mut outbox = OutboxDb::create("relay_kafka_restart").await;
    outbox.spec.bootstrap = kafka.bootstrap.clone();
    scenarios::broker_restarts(&kafka, &outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_kafka_commit_and_slot_confirmation_repeats_nothing() {
    let outbox = OutboxDb::create("relay_window").await;
    scenarios::a_crash_right_after_the_kafka_commit(&outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_kafka_outage_stops_within_seconds() {
    let kafka = PrivateKafka::start();
    let mut outbox = OutboxDb::create("relay_outage_stop").await;
    outbox.spec.bootstrap = kafka.bootstrap.clone();
    // A Kafka commit gives up after 2 x 10 s (its records' acknowledgements, then the commit call,
    // never repeated): a stop that waited for one would take longer than the 10 s asserted below.
    outbox.spec.call_timeout = "10s".into();
    create_topic_at(&kafka.bootstrap, &outbox.topic(), 3).await;
    let mut relay = RelayProcess::start(&outbox.spec);
    relay.wait_streaming(Duration::from_secs(60));
    tokio::task::block_in_place(|| drop(kafka));
    let client = outbox.client().await;
    outbox.write(&client, &random_keys()[..3]).await;
    // The rows' Kafka transaction cannot commit while the broker is down: the sink waits in its
    // commit for up to 2 x call_timeout, and the stop request lands there (the case that once
    // panicked: the stop, then the commit's failure, then a backoff that awaited the stop again).
    // Time passes on purpose: nothing marks the moment the sink enters that commit.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let signalled = std::time::Instant::now();
    let status = relay
        .signal_and_wait("TERM", Duration::from_secs(30))
        .expect("the relay exits after SIGTERM");
    let took = signalled.elapsed();
    let log = relay.log_text();
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}:\n{log}"
    );
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(!log.contains("panicked"), "no panic:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_moved_between_its_check_and_the_start_is_refused_not_skipped() {
    let outbox = OutboxDb::create("relay_slot_race").await;
    create_topic(&outbox.topic(), 3).await;
    let client = outbox.client().await;
    outbox.write(&client, &random_keys()[..3]).await;
    let mut first = RelayProcess::start(&outbox.spec);
    read_all(&outbox.topic(), 3);
    let stopped = first
        .signal_and_wait("TERM", Duration::from_secs(30))
        .expect("the first relay stops");
    assert!(stopped.success());
    let checkpoint = lsn(first
        .logged("committed a Kafka transaction", "lsn")
        .last()
        .expect("the first relay committed a checkpoint"));
    let before = slot_confirmed(&outbox).await;
    assert!(
        before <= checkpoint,
        "slot at {before}, checkpoint {checkpoint}"
    );
    // Changes after the checkpoint, which the next start must publish or refuse to skip.
    outbox.write(&client, &random_keys()[..3]).await;

    let mut relay = RelayProcess::start_with_env(
        &outbox.spec,
        &[("FAILPOINTS", "before-start-replication=sleep(3000)")],
    );
    // "starting replication" is logged after the slot check, before the failpoint.
    relay.wait_streaming(Duration::from_secs(60));
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())",
            &[&outbox.spec.slot],
        )
        .await
        .expect("advance the slot (it is free: the relay sleeps at the failpoint)");
    let moved = slot_confirmed(&outbox).await;
    assert!(
        moved > checkpoint,
        "the slot moved past the checkpoint: {moved}"
    );
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops instead of skipping the changes");
    let log = relay.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("is confirmed at {moved}, past relay"))
            && log.contains(&format!("checkpoint at {checkpoint}")),
        "the error names the slot's move and the checkpoint:\n{log}"
    );
    // Refused: the relay published none of the changes past the checkpoint.
    let published = read_topic(
        &outbox.topic(),
        Isolation::ReadCommitted,
        Duration::from_secs(5),
        |r| r.len() > 3,
    );
    assert_eq!(published.len(), 3, "only the first relay's events");
}
