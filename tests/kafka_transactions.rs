//! Transactions that stay safe on every broker: librdkafka does not implement Kafka 4's
//! transaction protocol v2 (KIP-890), so a transaction call that times out is never repeated in
//! place; the relay builds a new producer (whose epoch fences the old one's requests) and resumes
//! from the checkpoint. Proven on brokers formatted with `transaction.version=1` and `=2`, each
//! paused (SIGSTOP) across a commit and resumed after the call timeout: a `read_committed`
//! consumer sees every event exactly once, in per-key order.

mod support;

use std::time::{Duration, Instant};

use support::kafka::{create_topic_at, read_topic_at, Isolation, PrivateKafka};
use support::outbox::{assert_exactly_once_in_order, read_all_at, Outbox, KEYS};
use support::postgres::TestDb;
use support::relay::{RelayProcess, RelaySpec};

/// Events per Postgres transaction, one per key.
const EVENTS: usize = 30;

/// The relay's `kafka.call_timeout` in these tests.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay publishes exactly once across a commit the broker (of `transaction_version`) does not
/// answer until after the call timeout.
async fn paused_across_a_commit(transaction_version: &str) {
    let started = Instant::now();
    let kafka = PrivateKafka::start_with_env(&[(
        "OUTBOXD_DEV_KAFKA_TRANSACTION_VERSION",
        transaction_version,
    )]);
    let feature = format!("setting feature transaction.version to {transaction_version}");
    assert!(
        kafka.server_log().contains(&feature),
        "the broker's {feature}"
    );
    let db = TestDb::create(&format!("paused_tv{transaction_version}")).await;
    let outbox = Outbox::published(&db).await;
    let writer = outbox.client().await;
    let topic = outbox.topic();
    create_topic_at(&kafka.bootstrap, &topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.bootstrap = kafka.bootstrap.clone();
    spec.call_timeout = format!("{}s", CALL_TIMEOUT.as_secs());
    // The first commit with events waits before committing: long enough for the test to see its
    // records written (uncommitted) and to pause the broker before the commit goes out.
    let relay = RelayProcess::start_with_env(
        &spec,
        &[("FAILPOINTS", "before-kafka-commit=1*sleep(8000)")],
    );
    relay.wait_streaming(Duration::from_secs(60));

    outbox.write(&writer, &KEYS[..EVENTS]).await;
    let written = read_topic_at(
        &kafka.bootstrap,
        &topic,
        Isolation::ReadUncommitted,
        Duration::from_secs(60),
        |records| records.len() >= EVENTS,
    );
    assert_eq!(
        written.len(),
        EVENTS,
        "the first batch written, uncommitted"
    );
    kafka.pause();
    let paused = Instant::now();
    // The commit goes out to the paused broker and times out; resumed after that (and after the
    // next producer's init_transactions had time to time out too).
    let timed_out = "Kafka did not answer while committing";
    while !relay.log_text().contains(timed_out) {
        assert!(
            paused.elapsed() < Duration::from_secs(60),
            "the commit did not time out:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(CALL_TIMEOUT);
    kafka.resume();
    let paused_for = paused.elapsed();
    outbox.write(&writer, &KEYS[..EVENTS]).await;
    // The relay confirms the slot only with a committed checkpoint: once it covers the second
    // batch, the relay holds both batches committed in Kafka.
    let end: String = writer
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("WAL position")
        .get(0);
    let confirmed = Instant::now();
    loop {
        let covered: bool = writer
            .query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots \
                 WHERE slot_name = $2",
                &[&end, &db.slot],
            )
            .await
            .expect("slot position")
            .get(0);
        if covered {
            break;
        }
        assert!(
            confirmed.elapsed() < Duration::from_secs(90),
            "the relay did not publish the second batch:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let expected = outbox.ids().await;
    assert_eq!(expected.len(), 2 * EVENTS);
    let records = read_all_at(&kafka.bootstrap, &topic, expected.len());
    assert_exactly_once_in_order(&records, &expected);
    eprintln!(
        "transaction.version={transaction_version}: paused {paused_for:?}, test took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_across_a_paused_commit_with_transaction_version_1() {
    paused_across_a_commit("1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_across_a_paused_commit_with_transaction_version_2() {
    paused_across_a_commit("2").await;
}

/// A transaction open longer than `kafka.transaction_timeout` is aborted by the coordinator, which
/// bumps the producer's epoch: the relay is fenced as if another instance had taken over. It must
/// say what happened, retry from its checkpoint and publish exactly once, not stop as for a
/// takeover. The first commit with events waits past the timeout and the broker's check for
/// expired transactions (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_the_broker_expired_is_retried_not_taken_for_a_takeover() {
    let db = TestDb::create("expired_txn").await;
    let outbox = Outbox::published(&db).await;
    let writer = outbox.client().await;
    let topic = outbox.topic();
    support::kafka::create_topic(&topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.transaction_timeout = Duration::from_secs(2);
    let mut relay = RelayProcess::start_with_env(
        &spec,
        &[("FAILPOINTS", "before-kafka-commit=1*sleep(14000)")],
    );
    relay.wait_streaming(Duration::from_secs(60));

    outbox.write(&writer, &KEYS[..EVENTS]).await;
    let expired = "the broker aborted the Kafka transaction after it stayed open";
    let waiting = Instant::now();
    while !relay.log_text().contains(expired) {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "no expired transaction reported:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    outbox.write(&writer, &KEYS[..EVENTS]).await;

    let expected = outbox.ids().await;
    let records = support::outbox::read_all(&topic, expected.len());
    assert_exactly_once_in_order(&records, &expected);
    assert!(
        relay.wait_exit(Duration::from_millis(100)).is_none(),
        "the relay stopped:\n{}",
        relay.log_text()
    );
    assert!(
        !relay.log_text().contains("took over"),
        "an expired transaction was taken for a takeover:\n{}",
        relay.log_text()
    );
}

/// A relay SIGKILLed inside a Kafka transaction (its events and checkpoint written, not committed)
/// leaves the transaction open until the broker aborts it, `kafka.transaction_timeout` after it
/// began; `read_committed` reading of the offsets topic cannot pass it meanwhile. `outboxd status`
/// says so after its bounded wait (`kafka.call_timeout`, at most 10 s), without failing; once the
/// broker aborted the transaction it shows the last committed checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn status_says_the_checkpoint_is_behind_a_killed_relays_open_transaction() {
    let started = Instant::now();
    let db = TestDb::create("status_open_txn").await;
    let outbox = Outbox::published(&db).await;
    let writer = outbox.client().await;
    let topic = outbox.topic();
    support::kafka::create_topic(&topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.call_timeout = format!("{}s", CALL_TIMEOUT.as_secs());
    spec.transaction_timeout = Duration::from_secs(15);
    // The first commit with events goes through; the second waits, and the relay is killed in it.
    let mut relay = RelayProcess::start_with_env(
        &spec,
        &[("FAILPOINTS", "before-kafka-commit=1*off->sleep(60000)")],
    );
    relay.wait_streaming(Duration::from_secs(60));
    outbox.write(&writer, &KEYS[..EVENTS]).await;
    support::outbox::read_all(&topic, EVENTS);
    outbox.write(&writer, &KEYS[..EVENTS]).await;
    let checkpoint_events = |record: &rdkafka::message::OwnedMessage| {
        use rdkafka::Message;
        record
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|c| c["events"].as_u64())
    };
    // The open transaction's checkpoint (the second batch's) is written: the relay waits in it.
    read_topic_at(
        &spec.bootstrap,
        &spec.offsets_topic,
        Isolation::ReadUncommitted,
        Duration::from_secs(60),
        |records| {
            records
                .last()
                .is_some_and(|r| checkpoint_events(r) == Some(2 * EVENTS as u64))
        },
    );
    relay.kill();

    let asked = Instant::now();
    let output = support::relay::outboxd(&spec, &["status"], &[]);
    let waited = asked.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(
            "checkpoint     UNKNOWN for now: the checkpoint is behind an open Kafka transaction"
        ) && text.contains("previous instance killed mid-transaction")
            && text.contains("within kafka.transaction_timeout (15s): run status again then"),
        "{text}"
    );
    assert!(waited < Duration::from_secs(20), "status took {waited:?}");

    // Aborted by the broker: the first batch's checkpoint is the last committed one.
    support::wait::wait_until(
        Duration::from_secs(60),
        || {
            let output = support::relay::outboxd(&spec, &["status", "--json"], &[]);
            let status: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_default();
            let read = status["checkpoint_pending"].is_null()
                && status["checkpoint"]["events"].as_u64() == Some(EVENTS as u64);
            async move { read }
        },
        || "status reads the checkpoint once the broker aborted the transaction".into(),
    )
    .await;
    eprintln!(
        "status waited {waited:?} and said:\n{text}test took {:?}",
        started.elapsed()
    );
}

/// The same open transaction seen by `check`: a warning that says what holds the checkpoint back
/// and when it ends, not a failure blaming the principal's grants. The transaction is opened by a
/// producer of the test's own on the offsets topic, as a relay killed mid-transaction leaves it.
#[tokio::test(flavor = "multi_thread")]
async fn check_says_the_checkpoint_is_behind_an_open_transaction_not_a_missing_grant() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let started = Instant::now();
    let db = TestDb::create("check_open_txn").await;
    let mut spec = RelaySpec::for_db(&db);
    spec.call_timeout = "3s".into();
    support::kafka::create_topic_with_at(
        &spec.bootstrap,
        &spec.offsets_topic,
        1,
        &[("cleanup.policy", "compact")],
    )
    .await;
    let producer: BaseProducer = support::kafka::client_config_at(&spec.bootstrap)
        .set("transactional.id", format!("{}.killed", spec.name))
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    producer
        .send(
            BaseRecord::to(&spec.offsets_topic)
                .key(&spec.name)
                .payload("{}"),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    let output = support::relay::outboxd(&spec, &["check"], &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .position(|l| l.contains("checkpoint of relay"))
        .unwrap_or_else(|| panic!("no checkpoint line:\n{text}"));
    let (what, fix) = (text.lines().nth(line), text.lines().nth(line + 1));
    assert!(
        what.is_some_and(|l| l.starts_with("WARN")
            && l.contains("behind an open Kafka transaction")
            && l.contains("killed mid-transaction")
            && l.contains("(offsets topic records 0 to 1)")),
        "{text}"
    );
    assert!(
        fix.is_some_and(
            |l| l.contains("the broker aborts it within kafka.transaction_timeout")
                && !l.contains("principal")
        ),
        "{text}"
    );
    producer
        .abort_transaction(Duration::from_secs(30))
        .expect("abort_transaction");
    eprintln!("check said:\n{text}test took {:?}", started.elapsed());
}
