//! Records the broker would refuse, and dead letters operators can live with, against the real
//! broker: a record over its topic's `max.message.bytes` becomes a dead letter carrying its event
//! id while the events around it arrive exactly once and the relay stays ready; a
//! `kafka.transaction_timeout` the broker refuses stops `run` and fails `check`; a flood of poison
//! rows is counted one by one but logged in a bounded number of lines.

mod support;

use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use support::http;
use support::kafka::{client_config, create_topic, header, read_exactly};
use support::postgres::TestDb;
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// A database with a text-payload outbox table in the relay's publication, and a relay spec
/// whose dead letters go to their own topic (created).
async fn outbox_db(prefix: &str) -> (TestDb, RelaySpec, String) {
    let db = TestDb::create(prefix).await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE outbox (id text, aggregatetype text, aggregateid text, type text, \
             payload text); CREATE PUBLICATION {} FOR TABLE outbox",
            db.publication
        ))
        .await
        .expect("schema");
    let mut spec = RelaySpec::for_db(&db);
    let dlq = db.topic("dlq");
    create_topic(&dlq, 1).await;
    spec.extra = format!("[dead_letter]\ntopic = {dlq:?}\n");
    (db, spec, dlq)
}

/// Creates `topic` (one partition) taking records of at most `max_bytes`.
async fn create_small_topic(topic: &str, max_bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let max = max_bytes.to_string();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &max);
    for result in admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create topic")
    {
        result.unwrap_or_else(|(name, code)| panic!("create {name}: {code}"));
    }
}

/// Sets `topic`'s `max.message.bytes` on the live broker.
async fn set_topic_limit(topic: &str, max_bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let max = max_bytes.to_string();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &max);
    for result in admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .expect("alter topic")
    {
        result.unwrap_or_else(|(name, code)| panic!("alter {name:?}: {code}"));
    }
}

/// The one dead letter in `dlq`, checked to stand for the event `big`, too large.
fn read_big_letter(dlq: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let dead = read_exactly(dlq, 1);
    let reason = header(&dead[0], "outboxd.dlq.reason");
    assert_eq!(reason.as_deref(), Some("too-large"));
    let event = header(&dead[0], "outboxd.dlq.event_id");
    assert_eq!(event.as_deref(), Some("big"), "the letter names the event");
    dead
}

/// The `id` headers of `records`, in order.
fn ids(records: &[rdkafka::message::OwnedMessage]) -> Vec<String> {
    records
        .iter()
        .map(|r| header(r, "id").expect("id header"))
        .collect()
}

/// An outbox row of `agg` with event id `id` and a JSON payload of about `bytes` bytes of random
/// hex: the producer compresses batches (lz4), and the broker's limit applies to the compressed
/// size, so a large payload must not compress.
fn row(agg: &str, id: &str, bytes: usize) -> String {
    let pad: String = (0..bytes / 2)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    format!("INSERT INTO outbox VALUES ('{id}', '{agg}', 'k', 'T', '{{\"pad\": \"{pad}\"}}');")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_over_its_topics_limit_becomes_a_dead_letter_and_the_relay_stays_ready() {
    let (db, spec, dlq) = outbox_db("dlq_topic_limit").await;
    let agg = db.name.clone();
    let topic = format!("outbox.event.{agg}");
    // kafka.max_record_bytes keeps its default (1,000,000): only the topic's limit is small.
    create_small_topic(&topic, 20_000).await;
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let address = relay.metrics_address(Duration::from_secs(30));

    let client = db.client().await;
    for statement in [
        row(&agg, "before-1", 100),
        format!(
            "BEGIN; {} {} {} COMMIT;",
            row(&agg, "before-2", 100),
            row(&agg, "big", 50_000),
            row(&agg, "after-1", 100)
        ),
        row(&agg, "after-2", 100),
    ] {
        client.batch_execute(&statement).await.expect("insert");
    }
    let events = read_exactly(&topic, 4);
    assert_eq!(
        ids(&events),
        ["before-1", "before-2", "after-1", "after-2"],
        "the events around the big one, once, in order"
    );
    let dead = read_big_letter(&dlq);
    assert_eq!(header(&dead[0], "outboxd.dlq.topic"), Some(topic.clone()));
    let error = header(&dead[0], "outboxd.dlq.error").expect("error header");
    assert!(error.contains("max.message.bytes"), "{error}");
    assert!(
        relay.log_text().contains("\"event_id\":\"big\""),
        "the log line names the event:\n{}",
        relay.log_text()
    );

    // Still running and ready, and still publishing.
    client
        .batch_execute(&row(&agg, "after-3", 100))
        .await
        .expect("insert");
    let events = read_exactly(&topic, 5);
    assert_eq!(ids(&events)[4], "after-3");
    assert_eq!(
        http::http_get(&address, "/readyz").map(|(code, _)| code),
        Some(200)
    );
    assert!(
        !relay.log_text().contains("relay attempt failed"),
        "no transaction failed:\n{}",
        relay.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_broker_still_refuses_goes_to_the_dead_letter_topic_in_a_retried_transaction()
{
    let (db, spec, dlq) = outbox_db("dlq_refused").await;
    let agg = db.name.clone();
    let topic = format!("outbox.event.{agg}");
    create_small_topic(&topic, 200_000).await;
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let client = db.client().await;
    client
        .batch_execute(&row(&agg, "first", 100))
        .await
        .expect("insert");
    read_exactly(&topic, 1);
    // The relay learned 200,000 bytes; the topic now takes less, which only the broker knows.
    set_topic_limit(&topic, 20_000).await;
    client
        .batch_execute(&format!(
            "BEGIN; {} {} {} COMMIT;",
            row(&agg, "before", 100),
            row(&agg, "big", 50_000),
            row(&agg, "after", 100)
        ))
        .await
        .expect("insert");
    client
        .batch_execute(&row(&agg, "later", 100))
        .await
        .expect("insert");
    let events = read_exactly(&topic, 4);
    assert_eq!(ids(&events), ["first", "before", "after", "later"]);
    let dead = read_big_letter(&dlq);
    // The retry knew the record by what the broker's delivery report said of it.
    let error = header(&dead[0], "outboxd.dlq.error").expect("error header");
    assert!(error.contains("the broker refused"), "{error}");
    let log = relay.log_text();
    let retries = log
        .matches("retrying the transaction with that record as a dead letter")
        .count();
    assert_eq!(retries, 1, "one retry:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_timeout_above_the_brokers_maximum_stops_run_and_fails_check() {
    let (_db, spec, _dlq) = outbox_db("dlq_txn_timeout").await;
    // The dev broker keeps Kafka's default transaction.max.timeout.ms: 15 min.
    let env = [("OUTBOXD__KAFKA__TRANSACTION_TIMEOUT", "20min")];
    let check = outboxd(&spec, &["check"], &env);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{report}");
    let fail = report
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("kafka.transaction_timeout"))
        .unwrap_or_else(|| panic!("no FAIL naming the key:\n{report}"));
    assert!(
        fail.contains("1200s") && fail.contains("900000 ms"),
        "both values: {fail}"
    );
    assert!(
        !report.contains("allow WRITE"),
        "no unrelated ACL fix:\n{report}"
    );

    let mut relay = RelayProcess::start_with_env(&spec, &env);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("run must stop:\n{}", relay.log_text()));
    assert_eq!(status.code(), Some(1), "{}", relay.log_text());
    let log = relay.log_text();
    assert!(
        log.contains("kafka.transaction_timeout (1200s)") && log.contains("900000 ms"),
        "the error names the key and both values:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_poison_rows_is_counted_one_by_one_and_logged_in_a_few_lines() {
    let (db, spec, dlq) = outbox_db("dlq_flood").await;
    let agg = db.name.clone();
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let address = relay.metrics_address(Duration::from_secs(30));
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO outbox SELECT 'bad-' || g, '{agg}', 'k', 'T', 'not json' \
             FROM generate_series(1, 500) g"
        ))
        .await
        .expect("poison rows");
    read_exactly(&dlq, 500);
    let counted = http::await_sample(
        &address,
        "outboxd_dead_letters_total{reason=\"invalid-json\"}",
        500.0,
        Duration::from_secs(30),
    );
    assert_eq!(counted, Some(500.0));
    // The rest is summed up once its interval (10 s) is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !relay
        .log_text()
        .contains("more dead letters (invalid-json)")
    {
        assert!(
            Instant::now() < deadline,
            "no summary:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = relay.log_text();
    let individual = log
        .lines()
        .filter(|l| l.contains("the change went to the dead-letter topic"))
        .count();
    assert!(
        (1..=5).contains(&individual),
        "{individual} lines for single dead letters"
    );
    let summarized: u64 = log
        .lines()
        .filter(|l| l.contains("more dead letters (invalid-json)"))
        .map(|l| {
            let entry: serde_json::Value = serde_json::from_str(l).expect("JSON log line");
            entry["fields"]["dead_letters"].as_u64().expect("count")
        })
        .sum();
    assert_eq!(
        summarized + individual as u64,
        500,
        "every dead letter is in a line or a summary"
    );
}
