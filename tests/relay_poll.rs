//! Poll mode end to end on real Postgres and real Kafka, as a role with no REPLICATION attribute
//! and only SELECT and DELETE on the outbox: every committed outbox row reaches a `read_committed`
//! consumer exactly once, per key in commit order, and the outbox ends empty, whatever happens to
//! the relay, the broker or the database. The scenarios logical mode passes too are written once
//! in `scenarios/`; the tests here run them in poll mode, and what only poll mode has.

mod scenarios;
mod support;

use std::time::Duration;

use rdkafka::message::Headers;
use rdkafka::Message;
use support::kafka::{create_topic, read_topic, Isolation, PrivateKafka};
use support::mode::{Mode, ModeDb};
use support::outbox::{assert_exactly_once_in_order, random_keys, read_all};
use support::postgres::PrivateCluster;
use support::relay::{outboxd, RelayProcess};

/// An outbox migrated by `outboxd migrate` in poll mode, polled by a role of its own.
async fn poll_db(prefix: &str) -> ModeDb {
    ModeDb::create(Mode::Poll, prefix).await
}

/// Asserts what `outboxd check` says of this relay's role: logical mode impossible for `why`,
/// poll mode possible.
fn assert_check_allows_poll_only(db: &ModeDb, why: &str) {
    let check = outboxd(&db.spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains(&format!("logical mode is not possible: {why}")),
        "{report}"
    );
    assert!(
        report.contains("poll mode is possible: the role may SELECT and DELETE"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_polled_exactly_once_in_order_by_a_role_without_replication() {
    let db = poll_db("poll_concurrent").await;
    assert_check_allows_poll_only(&db, "the role lacks the REPLICATION attribute");
    let relay = scenarios::concurrent_writers(&db).await;
    assert!(
        relay.log_text().contains("\"notify\":true"),
        "the relay listens for the trigger:\n{}",
        relay.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_twenty_sigkills_including_between_kafka_commit_and_delete() {
    let db = poll_db("poll_kill").await;
    let logs = scenarios::sigkills(&db).await;
    // Restarts after a kill between a Kafka commit and its Postgres commit find those rows in
    // Kafka and still in the outbox, and delete them.
    let settled = logs
        .iter()
        .flat_map(|log| log.lines())
        .filter(|l| l.contains("took away the rows of the last committed checkpoint"))
        .filter(|l| !l.contains("\"settled\":0"))
        .count();
    assert!(
        settled > 0,
        "no kill landed between a Kafka commit and its Postgres commit"
    );
    eprintln!("{settled} restarts deleted rows published before the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_right_after_the_kafka_commit_publishes_nothing_twice() {
    let db = poll_db("poll_window").await;
    scenarios::a_crash_right_after_the_kafka_commit(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_explicit_takeover_fences_the_first() {
    let db = poll_db("poll_zombie").await;
    scenarios::an_explicit_takeover_fences_the_first(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_postgres_restarts_on_a_server_without_logical_decoding() {
    // wal_level = replica: logical mode is impossible here, poll mode is not.
    let cluster = PrivateCluster::start(
        Mode::Poll.cluster_conf(),
        &["host all all 127.0.0.1/32 trust"],
    );
    let db = ModeDb::on_cluster(Mode::Poll, &cluster, "poll_pg_restart").await;
    assert_check_allows_poll_only(&db, "wal_level = replica");
    scenarios::postgres_restarts(&cluster, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_broker_restarts() {
    let kafka = PrivateKafka::start();
    let mut db = poll_db("poll_kafka_restart").await;
    db.spec.bootstrap = kafka.bootstrap.clone();
    scenarios::broker_restarts(&kafka, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_mode_keeps_the_rows_and_publishes_each_once() {
    let mut db = poll_db("poll_mark").await;
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE outbox ADD COLUMN published_at timestamptz;
             GRANT UPDATE ON outbox TO {}_poller;",
            db.spec.name
        ))
        .await
        .expect("mark column");
    db.spec.extra = "[poll]\nafter_publish = \"mark\"\nbatch_size = 50\n".into();
    create_topic(&db.topic(), 3).await;
    let client = db.client().await;
    for _ in 0..100 {
        db.write(&client, &random_keys()[..3]).await;
    }
    let mut relay = RelayProcess::start(&db.spec);
    let records = tokio::task::spawn_blocking({
        let topic = db.topic();
        move || read_all(&topic, 300)
    })
    .await
    .expect("reader");
    assert_exactly_once_in_order(&records, &db.inserted().await);
    // A restart after everything was published publishes nothing again.
    relay.kill();
    let _relay = RelayProcess::start(&db.spec);
    for _ in 0..10 {
        db.write(&client, &random_keys()[..3]).await;
    }
    let records_after = tokio::task::spawn_blocking({
        let topic = db.topic();
        move || read_all(&topic, 330)
    })
    .await
    .expect("reader");
    assert_exactly_once_in_order(&records_after, &db.inserted().await);
    let unmarked: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(unmarked, 0, "every row is marked");
    assert_eq!(db.ids().await.len(), 330, "mark mode keeps the rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_of_poll_mode_claims_no_wal_position() {
    let mut db = poll_db("poll_dlq").await;
    let dlq = format!("{}.dlq", db.spec.name);
    db.spec.extra = format!("[dead_letter]\ntopic = {dlq:?}\n");
    create_topic(&dlq, 1).await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
             VALUES ('not a topic!', 'k', 'T', '{}')",
        )
        .await
        .expect("a row with an illegal topic name");
    let _relay = RelayProcess::start(&db.spec);
    let dead = tokio::task::spawn_blocking(move || {
        read_topic(
            &dlq,
            Isolation::ReadCommitted,
            Duration::from_secs(60),
            |r| !r.is_empty(),
        )
    })
    .await
    .expect("reader");
    assert_eq!(dead.len(), 1, "the row became a dead letter");
    let names: Vec<String> = dead[0]
        .headers()
        .map(|headers| headers.iter().map(|h| h.key.to_owned()).collect())
        .unwrap_or_default();
    assert!(names.iter().any(|n| n == "outboxd.dlq.reason"), "{names:?}");
    // Poll mode reads rows, not WAL: no made-up 0/0 position.
    assert!(!names.iter().any(|n| n == "outboxd.dlq.lsn"), "{names:?}");
}
