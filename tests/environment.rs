//! The test environment is the real thing: a Kafka broker that implements transactions and
//! isolation levels, and a PostgreSQL cluster with logical decoding. Everything else stands on these.

mod support;

use std::time::Duration;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;
use support::kafka::{self, Isolation};
use support::postgres::TestDb;

/// A transactional producer commits one record and aborts another; only `read_uncommitted` sees the
/// aborted one. librdkafka's mock cluster would fail this: it has no abort markers.
#[tokio::test]
async fn broker_honours_transactions_and_isolation_levels() {
    let topic = support::unique_name("txn_probe");
    kafka::create_topic(&topic, 1).await;

    let producer_topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = kafka::client_config()
            .set("transactional.id", support::unique_name("txn_probe"))
            .create()
            .expect("transactional producer");
        let timeout = Duration::from_secs(30);
        producer
            .init_transactions(timeout)
            .expect("init_transactions");
        for (value, commit) in [("committed", true), ("aborted", false), ("end", true)] {
            producer.begin_transaction().expect("begin_transaction");
            producer
                .send(
                    BaseRecord::<str, str>::to(&producer_topic)
                        .key("k")
                        .payload(value),
                )
                .map_err(|(e, _)| e)
                .expect("send");
            if commit {
                producer
                    .commit_transaction(timeout)
                    .expect("commit_transaction");
            } else {
                producer
                    .flush(timeout)
                    .expect("flush the record to be aborted");
                producer
                    .abort_transaction(timeout)
                    .expect("abort_transaction");
            }
        }
    })
    .await
    .expect("producer thread");

    let values = |isolation| {
        let records = kafka::read_topic(&topic, isolation, Duration::from_secs(30), |read| {
            read.iter().any(|m| m.payload() == Some(b"end".as_slice()))
        });
        records.iter().map(kafka::value_text).collect::<Vec<_>>()
    };
    assert_eq!(values(Isolation::ReadCommitted), ["committed", "end"]);
    assert_eq!(
        values(Isolation::ReadUncommitted),
        ["committed", "aborted", "end"]
    );
}

/// The cluster decodes logically: `wal_level` is `logical`, and a pgoutput slot over a publication
/// yields a committed insert.
#[tokio::test]
async fn postgres_decodes_with_pgoutput() {
    let db = TestDb::create("logical_probe").await;
    let client = db.client().await;

    let wal_level = client
        .query_one("SHOW wal_level", &[])
        .await
        .expect("show wal_level");
    assert_eq!(wal_level.get::<_, String>(0), "logical");

    client
        .batch_execute(&format!(
            "CREATE TABLE probe (id int PRIMARY KEY, note text);
             CREATE PUBLICATION {pub} FOR TABLE probe;",
            pub = db.publication
        ))
        .await
        .expect("create table and publication");
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&db.slot],
        )
        .await
        .expect("create pgoutput slot");
    let plugin = client
        .query_one(
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.slot],
        )
        .await
        .expect("find the slot");
    assert_eq!(plugin.get::<_, String>(0), "pgoutput");

    client
        .batch_execute("INSERT INTO probe VALUES (1, 'hello')")
        .await
        .expect("insert");
    // pgoutput emits binary messages; its first byte names the message: Begin, Relation, Insert, Commit.
    let rows = client
        .query(
            "SELECT chr(get_byte(data, 0)) FROM pg_logical_slot_get_binary_changes(
                 $1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)",
            &[&db.slot, &db.publication],
        )
        .await
        .expect("read the slot");
    let kinds: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(kinds, "BRIC");
}
