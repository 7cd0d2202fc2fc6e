//! The relay end to end on real Postgres and real Kafka: every committed outbox row reaches a
//! `read_committed` consumer exactly once, per key in commit order, whatever happens to the relay.

mod support;

use std::time::Duration;

use support::kafka::{create_topic, create_topic_at, read_topic, Isolation, PrivateKafka};
use support::outbox::{
    assert_exactly_once_in_order, random_keys, read_all, read_all_at, spawn_writer, Outbox,
};
use support::postgres::{create_pgoutput_slot, PrivateCluster, TestDb};
use support::relay::{RelayProcess, RelaySpec};

/// A database with the outbox tables, a publication of the outbox and a slot.
struct OutboxDb {
    /// The outbox and its writers.
    outbox: Outbox,
    /// The relay's settings over this database.
    spec: RelaySpec,
    /// The database in the shared cluster, dropped with this value.
    _db: Option<TestDb>,
}

impl std::ops::Deref for OutboxDb {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

impl OutboxDb {
    /// A new database in the shared cluster.
    async fn create(prefix: &str) -> OutboxDb {
        let db = TestDb::create(prefix).await;
        let outbox = OutboxDb {
            outbox: Outbox {
                url: db.url.clone(),
                aggregate_type: db.name.clone(),
            },
            spec: RelaySpec::for_db(&db),
            _db: Some(db),
        };
        outbox.migrate().await;
        outbox
    }

    /// The `postgres` database of a private cluster.
    async fn on_cluster(cluster: &PrivateCluster, prefix: &str) -> OutboxDb {
        let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
        let spec = RelaySpec::for_url(prefix, &url);
        let outbox = OutboxDb {
            outbox: Outbox {
                url,
                aggregate_type: spec.name.clone(),
            },
            spec,
            _db: None,
        };
        outbox.migrate().await;
        outbox
    }

    async fn migrate(&self) {
        self.create_tables().await;
        let client = self.client().await;
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE outbox;",
                self.spec.publication
            ))
            .await
            .expect("publication");
        // The slot marks where capture begins: rows committed before it exists are not changes.
        create_pgoutput_slot(&client, &self.spec.slot).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_delivered_exactly_once_in_commit_order() {
    let outbox = OutboxDb::create("relay_concurrent").await;
    create_topic(&outbox.topic(), 3).await;
    let _relay = RelayProcess::start(&outbox.spec.clone());

    // 10 writers x 100 transactions x 10 rows = 10,000 rows in 1,000 transactions.
    let outbox = std::sync::Arc::new(outbox);
    let writers: Vec<_> = (0..10)
        .map(|_| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let client = outbox.client().await;
                for _ in 0..100 {
                    outbox.write(&client, &random_keys()).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }

    let records = read_all(&outbox.topic(), 10_000);
    assert_exactly_once_in_order(&records, &outbox.ids().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_sigkill_at_random_moments() {
    let outbox = std::sync::Arc::new(OutboxDb::create("relay_kill").await);
    create_topic(&outbox.topic(), 3).await;
    let spec = outbox.spec.clone();
    // Hold every confirmation back a while after its Kafka commit, so that many kills land
    // between the two.
    let failpoints = [("FAILPOINTS", "after-kafka-commit=sleep(300)")];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(outbox.outbox.clone(), stop.clone());
    let mut kills = 0;
    while kills < 20 {
        let mut relay = RelayProcess::start_with_env(&spec, &failpoints);
        // Startup takes about a second; most kills land while streaming.
        let lifetime = rand::random_range(1000..3500);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        assert!(
            relay.wait_exit(Duration::ZERO).is_none(),
            "the relay died by itself:\n{}",
            relay.log_text()
        );
        relay.kill();
        kills += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transactions = writer.await.expect("writer");
    assert!(transactions > 300, "the writer made a large transaction");

    let _relay = RelayProcess::start(&spec);
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_relay_with_the_same_name_fences_the_first() {
    let outbox = std::sync::Arc::new(OutboxDb::create("relay_zombie").await);
    create_topic(&outbox.topic(), 3).await;
    let spec = outbox.spec.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(outbox.outbox.clone(), stop.clone());

    let mut first = RelayProcess::start(&spec);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _second = RelayProcess::start(&spec);
    let status = first
        .wait_exit(Duration::from_secs(60))
        .expect("the first relay exits once fenced");
    assert_eq!(status.code(), Some(3), "exit status of a fenced relay");
    assert!(first.log_text().contains("fenced"), "{}", first.log_text());

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_stops_cleanly_and_loses_nothing() {
    let outbox = std::sync::Arc::new(OutboxDb::create("relay_sigterm").await);
    create_topic(&outbox.topic(), 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(outbox.outbox.clone(), stop.clone());

    for _ in 0..3 {
        let mut relay = RelayProcess::start(&outbox.spec);
        tokio::time::sleep(Duration::from_secs(2)).await;
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
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
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
    let outbox = OutboxDb::create("relay_huge").await;
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
        assert!(
            stable == 0,
            "a partial transaction became readable: {samples:?}"
        );
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
    assert_eq!(records.len(), 1_000_000);
    eprintln!("relay peak RSS: {} MiB", peak / 1024);
}

/// Waits until a walsender holds `slot` in `cluster`.
fn wait_for_active_slot(cluster: &PrivateCluster, slot: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let query =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active");
    while cluster.psql(&query).unwrap_or_default().trim() != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never took slot {slot}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_a_postgres_restart_mid_stream() {
    let cluster = PrivateCluster::start(
        "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
        &["host all all 127.0.0.1/32 trust"],
    );
    let outbox = std::sync::Arc::new(OutboxDb::on_cluster(&cluster, "relay_pg_restart").await);
    create_topic(&outbox.topic(), 3).await;
    let mut relay = RelayProcess::start(&outbox.spec);
    for round in 0..3 {
        // A new session each round: a restart ends the old one.
        let client = outbox.client().await;
        for _ in 0..200 {
            outbox.write(&client, &random_keys()[..3]).await;
        }
        if round < 2 {
            // Restart only while the relay streams, so each restart cuts a live connection.
            wait_for_active_slot(&cluster, &outbox.spec.slot);
            cluster.restart();
        }
    }
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
    let log = relay.log_text();
    assert!(log.contains("resuming from the checkpoint"));
    // A fast shutdown ends the walsender's stream with a bare CommandComplete: a reconnect, not a
    // protocol violation.
    assert!(!log.contains("protocol violation"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_a_broker_restart_mid_stream() {
    let kafka = PrivateKafka::start();
    let mut outbox = OutboxDb::create("relay_kafka_restart").await;
    outbox.spec.bootstrap = kafka.bootstrap.clone();
    let outbox = std::sync::Arc::new(outbox);
    create_topic_at(&kafka.bootstrap, &outbox.topic(), 3).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(outbox.outbox.clone(), stop.clone());
    let mut relay = RelayProcess::start(&outbox.spec);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| kafka.restart());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let ids = outbox.ids().await;
    let records =
        tokio::task::block_in_place(|| read_all_at(&kafka.bootstrap, &outbox.topic(), ids.len()));
    assert_exactly_once_in_order(&records, &ids);
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_kafka_commit_and_slot_confirmation_repeats_nothing() {
    let outbox = OutboxDb::create("relay_window").await;
    create_topic(&outbox.topic(), 3).await;
    let client = outbox.client().await;
    for _ in 0..100 {
        outbox.write(&client, &random_keys()[..3]).await;
    }
    // The relay dies right after its first Kafka commit, before it can confirm the slot.
    let mut relay =
        RelayProcess::start_with_env(&outbox.spec, &[("FAILPOINTS", "after-kafka-commit=panic")]);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay crashes at the failpoint");
    assert!(!status.success());
    assert!(relay
        .log_text()
        .contains("failpoint after-kafka-commit panic"));
    let confirmed: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&outbox.spec.slot],
        )
        .await
        .expect("slot")
        .get(0);
    let committed = read_topic(
        &outbox.topic(),
        Isolation::ReadCommitted,
        Duration::from_secs(10),
        |r| !r.is_empty(),
    );
    assert!(!committed.is_empty(), "the first batch reached Kafka");

    for _ in 0..100 {
        outbox.write(&client, &random_keys()[..3]).await;
    }
    let _relay = RelayProcess::start(&outbox.spec);
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
    eprintln!("slot was confirmed at {confirmed} when the relay crashed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_kafka_outage_stops_within_seconds() {
    let kafka = PrivateKafka::start();
    let mut outbox = OutboxDb::create("relay_outage_stop").await;
    outbox.spec.bootstrap = kafka.bootstrap.clone();
    // A Kafka call gives up after 4 x 10 s: a stop that waited for one would take longer than the
    // 10 s asserted below.
    outbox.spec.call_timeout = "10s".into();
    create_topic_at(&kafka.bootstrap, &outbox.topic(), 3).await;
    let mut relay = RelayProcess::start(&outbox.spec);
    relay.wait_streaming(Duration::from_secs(60));
    tokio::task::block_in_place(|| drop(kafka));
    let client = outbox.client().await;
    outbox.write(&client, &random_keys()[..3]).await;
    // The rows' Kafka transaction cannot commit while the broker is down: the sink waits in its
    // commit for up to 4 x call_timeout, and the stop request lands there (the case that once
    // panicked: the stop, then the commit's failure, then a backoff that awaited the stop again).
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
        .expect("advance the slot");
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops instead of skipping the changes");
    let log = relay.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("past relay"),
        "the error names the slot moving:\n{log}"
    );
}
