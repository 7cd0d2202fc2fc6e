//! Poll mode end to end on real Postgres and real Kafka, as a role with no REPLICATION attribute
//! and only SELECT and DELETE on the outbox: every committed outbox row reaches a `read_committed`
//! consumer exactly once, per key in commit order, and the outbox ends empty, whatever happens to
//! the relay, the broker or the database.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Headers;
use rdkafka::Message;
use support::kafka::{create_topic, create_topic_at, read_topic, Isolation, PrivateKafka};
use support::outbox::{
    assert_exactly_once_in_order, random_keys, read_all, read_all_at, spawn_writer, Outbox,
};
use support::postgres::{PrivateCluster, TestDb};
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// An outbox migrated by `outboxd migrate` in poll mode, polled by a role of its own that may
/// only log in, SELECT and DELETE (what migration 0003 grants), with every inserted id logged by
/// a trigger of the test (the relay deletes the rows it publishes).
struct PollDb {
    outbox: Outbox,
    /// The relay's settings: poll mode, as the restricted role.
    spec: RelaySpec,
    _db: Option<TestDb>,
}

impl std::ops::Deref for PollDb {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

impl PollDb {
    /// A new database in the shared cluster.
    async fn create(prefix: &str) -> PollDb {
        let db = TestDb::create(prefix).await;
        let poll = Self::prepare(&db.url, RelaySpec::for_db(&db)).await;
        PollDb {
            _db: Some(db),
            ..poll
        }
    }

    /// The `postgres` database of a private cluster.
    async fn on_cluster(cluster: &PrivateCluster, prefix: &str) -> PollDb {
        let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
        Self::prepare(&url, RelaySpec::for_url(prefix, &url)).await
    }

    async fn prepare(url: &str, mut spec: RelaySpec) -> PollDb {
        let outbox = Outbox {
            url: url.to_owned(),
            aggregate_type: spec.name.clone(),
        };
        let role = format!("{}_poller", spec.name);
        outbox
            .client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN NOREPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE"
            ))
            .await
            .expect("create the poller role");
        spec.mode = "poll".into();
        let admin_url = url.to_owned();
        spec.url = url.replacen("postgres@", &format!("{role}@"), 1);
        // The migrations as an administrator; they grant the relay's role what poll mode needs.
        let migrated = outboxd(&spec, &["migrate", "--admin-url", &admin_url], &[]);
        assert!(migrated.status.success(), "migrate: {migrated:?}");
        let said = String::from_utf8_lossy(&migrated.stdout);
        assert!(
            said.contains("attached the poll-mode notify trigger to public.outbox"),
            "{said}"
        );
        outbox
            .client()
            .await
            .batch_execute(
                "CREATE TABLE key_seq (aggregateid text PRIMARY KEY, n int NOT NULL);
                 CREATE TABLE inserted (id uuid PRIMARY KEY);
                 CREATE FUNCTION log_id() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN INSERT INTO inserted VALUES (NEW.id); RETURN NULL; END $$;
                 CREATE TRIGGER log_id AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION log_id();",
            )
            .await
            .expect("test tables");
        PollDb {
            outbox,
            spec,
            _db: None,
        }
    }

    /// Every id ever inserted into the outbox.
    async fn inserted(&self) -> BTreeSet<String> {
        self.client()
            .await
            .query("SELECT id::text FROM inserted", &[])
            .await
            .expect("inserted ids")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Waits until the relay emptied the outbox.
    async fn wait_empty(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = self.ids().await.len();
            if left == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} rows still in the outbox"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Everything inserted is in the topic once, per key in order, and the outbox is empty.
    async fn assert_delivered(&self, bootstrap: &str) {
        self.wait_empty().await;
        let inserted = self.inserted().await;
        let topic = self.topic();
        let bootstrap = bootstrap.to_owned();
        let records = tokio::task::spawn_blocking({
            let count = inserted.len();
            move || read_all_at(&bootstrap, &topic, count)
        })
        .await
        .expect("reader");
        assert_exactly_once_in_order(&records, &inserted);
    }
}

fn writer_stop() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_polled_exactly_once_in_order_by_a_role_without_replication() {
    let db = PollDb::create("poll_concurrent").await;
    create_topic(&db.topic(), 3).await;

    // `check` says what this role can do, and passes in poll mode.
    let check = outboxd(&db.spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("logical mode is not possible: the role lacks the REPLICATION attribute"),
        "{report}"
    );
    assert!(
        report.contains("poll mode is possible: the role may SELECT and DELETE"),
        "{report}"
    );

    let relay = RelayProcess::start(&db.spec);
    relay.wait_streaming(Duration::from_secs(60));
    // 10 writers x 100 transactions x 10 rows = 10,000 rows in 1,000 transactions.
    let writers: Vec<_> = (0..10)
        .map(|_| {
            let outbox = db.outbox.clone();
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
    db.assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
    assert!(
        relay.log_text().contains("\"notify\":true"),
        "the relay listens for the trigger:\n{}",
        relay.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_twenty_sigkills_including_between_kafka_commit_and_delete() {
    let db = PollDb::create("poll_kill").await;
    create_topic(&db.topic(), 3).await;
    // Hold every Postgres commit back a while after its Kafka commit, so that many kills land
    // between the two: those rows are in Kafka and still in the outbox.
    let failpoints = [("FAILPOINTS", "after-kafka-commit=sleep(300)")];
    let stop = writer_stop();
    let writer = spawn_writer(db.outbox.clone(), stop.clone());
    let mut settled = 0;
    for _ in 0..20 {
        let mut relay = RelayProcess::start_with_env(&db.spec, &failpoints);
        let lifetime = rand::random_range(1000..3500);
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        assert!(
            relay.wait_exit(Duration::ZERO).is_none(),
            "the relay died by itself:\n{}",
            relay.log_text()
        );
        relay.kill();
        settled += relay
            .log_text()
            .lines()
            .filter(|l| l.contains("took away the rows of the last committed checkpoint"))
            .filter(|l| !l.contains("\"settled\":0"))
            .count();
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.await.expect("writer");
    assert!(transactions > 300, "the writer made a large transaction");

    let relay = RelayProcess::start(&db.spec);
    db.assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
    settled += usize::from(
        relay
            .log_text()
            .lines()
            .any(|l| l.contains("took away") && !l.contains("\"settled\":0")),
    );
    assert!(
        settled > 0,
        "no kill landed between a Kafka commit and its Postgres commit"
    );
    eprintln!("{settled} restarts deleted rows published before the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_right_after_the_kafka_commit_publishes_nothing_twice() {
    let db = PollDb::create("poll_window").await;
    create_topic(&db.topic(), 3).await;
    let client = db.client().await;
    for _ in 0..100 {
        db.write(&client, &random_keys()[..3]).await;
    }
    let mut relay =
        RelayProcess::start_with_env(&db.spec, &[("FAILPOINTS", "after-kafka-commit=panic")]);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay crashes at the failpoint");
    assert!(!status.success());
    assert_eq!(
        db.ids().await.len(),
        300,
        "the crash rolled the claim back: the published rows are still there"
    );
    let relay = RelayProcess::start(&db.spec);
    db.assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
    assert!(
        relay.log_text().contains("\"settled\":300"),
        "the restart deleted the rows of the committed checkpoint:\n{}",
        relay.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_relay_with_the_same_name_fences_the_first() {
    let db = PollDb::create("poll_zombie").await;
    create_topic(&db.topic(), 3).await;
    let stop = writer_stop();
    let writer = spawn_writer(db.outbox.clone(), stop.clone());

    let mut first = RelayProcess::start(&db.spec);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = RelayProcess::start(&db.spec);
    let status = first
        .wait_exit(Duration::from_secs(60))
        .expect("the first relay exits once fenced");
    assert_eq!(status.code(), Some(3), "exit status of a fenced relay");
    assert!(first.log_text().contains("fenced"), "{}", first.log_text());
    second.wait_streaming(Duration::from_secs(60));

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    db.assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_postgres_restarts_on_a_server_without_logical_decoding() {
    // wal_level = replica: logical mode is impossible here, poll mode is not.
    let cluster =
        PrivateCluster::start("wal_level = replica", &["host all all 127.0.0.1/32 trust"]);
    let db = PollDb::on_cluster(&cluster, "poll_pg_restart").await;
    create_topic(&db.topic(), 3).await;
    let check = outboxd(&db.spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("logical mode is not possible: wal_level = replica"),
        "{report}"
    );

    let relay = RelayProcess::start(&db.spec);
    for round in 0..3 {
        // A new session each round: a restart ends the old one.
        let client = db.client().await;
        for _ in 0..200 {
            db.write(&client, &random_keys()[..3]).await;
        }
        if round < 2 {
            cluster.restart();
        }
    }
    db.assert_delivered(&support::dev_env().kafka_bootstrap)
        .await;
    let mut relay = relay;
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
    assert!(relay.log_text().contains("resuming from the checkpoint"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovers_from_broker_restarts() {
    let kafka = PrivateKafka::start();
    let mut db = PollDb::create("poll_kafka_restart").await;
    db.spec.bootstrap = kafka.bootstrap.clone();
    create_topic_at(&kafka.bootstrap, &db.topic(), 3).await;
    let stop = writer_stop();
    let writer = spawn_writer(db.outbox.clone(), stop.clone());
    let mut relay = RelayProcess::start(&db.spec);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| kafka.restart());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    db.assert_delivered(&kafka.bootstrap).await;
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_mode_keeps_the_rows_and_publishes_each_once() {
    let mut db = PollDb::create("poll_mark").await;
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
    assert!(records_after.len() >= records.len());
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
    let mut db = PollDb::create("poll_dlq").await;
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
