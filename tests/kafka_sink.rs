//! The transactional sink and the checkpoint store against the real broker: what commits is what a
//! `read_committed` reader sees, the checkpoint travels with its events, a newer instance fences an
//! older one.

mod support;

use std::time::Duration;

use outboxd::checkpoint::{Checkpoint, CheckpointError, StoredCheckpoint};
use outboxd::pg::{Lsn, Xid};
use outboxd::route::Record;
use outboxd::sink::batch::{BatchLimits, Batcher, SinkInput};
use outboxd::sink::kafka::{KafkaSettings, SinkError, TransactionalProducer};
use outboxd::sink::offsets::{checkpoint_record, OffsetsError, OffsetsTopic};
use support::kafka::{create_topic, read_topic, value_text, Isolation};
use support::{dev_env, unique_name};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

fn settings() -> KafkaSettings {
    KafkaSettings::new(dev_env().kafka_bootstrap.clone())
}

fn producer(transactional_id: &str) -> TransactionalProducer {
    TransactionalProducer::start(&settings(), transactional_id, TXN_TIMEOUT, CALL_TIMEOUT)
        .expect("start producer")
}

fn checkpoint(lsn: u64) -> Checkpoint {
    Checkpoint {
        version: Checkpoint::VERSION,
        system_id: "7000000000000000001".into(),
        timeline: 1,
        slot: "slot".into(),
        lsn: Lsn(lsn),
        xid: Some(Xid(700)),
        commit_ts: None,
        events: 0,
        snapshot: None,
    }
}

fn record(topic: &str, value: &str) -> SinkInput {
    SinkInput::Record(Record {
        topic: topic.into(),
        partition: None,
        key: Some("k".as_bytes().to_vec().into()),
        value: Some(value.as_bytes().to_vec().into()),
        headers: Vec::new(),
        timestamp_ms: None,
    })
}

async fn offsets_topic() -> OffsetsTopic {
    let topic = OffsetsTopic::new(settings(), unique_name("offsets"));
    topic.ensure().await.expect("ensure offsets topic");
    topic.ensure().await.expect("ensure is idempotent");
    topic
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_commits_with_its_events_and_aborts_with_them() {
    let offsets = offsets_topic().await;
    let events = unique_name("events");
    create_topic(&events, 3).await;
    let relay = unique_name("relay");
    let offsets_name = offsets.name().to_owned();

    let (events_topic, relay_name) = (events.clone(), relay.clone());
    tokio::task::spawn_blocking(move || {
        let mut batcher = Batcher::new(
            producer(&format!("outboxd-{relay_name}")),
            BatchLimits::default(),
            offsets_name,
            &relay_name,
            0,
        );
        for input in [record(&events_topic, "a"), record(&events_topic, "b")] {
            batcher.accept(input).expect("accept");
        }
        batcher
            .accept(SinkInput::Boundary(checkpoint(100)))
            .expect("boundary");
        let committed = batcher.idle().expect("commit").expect("committed");
        assert_eq!((committed.lsn, committed.events), (Lsn(100), 2));

        batcher
            .accept(record(&events_topic, "aborted"))
            .expect("accept");
        batcher
            .accept(SinkInput::Boundary(checkpoint(200)))
            .expect("boundary");
        batcher.abort().expect("abort");
    })
    .await
    .expect("producer thread");

    let last = offsets
        .read_last(&relay, CALL_TIMEOUT)
        .expect("read checkpoint")
        .expect("a checkpoint exists")
        .into_logical(&relay)
        .expect("a logical checkpoint");
    assert_eq!(
        (last.lsn, last.events),
        (Lsn(100), 2),
        "the aborted checkpoint is invisible"
    );
    assert_eq!(
        offsets
            .read_last("another-relay", CALL_TIMEOUT)
            .expect("read"),
        None
    );

    let committed = read_topic(
        &events,
        Isolation::ReadCommitted,
        Duration::from_secs(5),
        |_| false,
    );
    let values: Vec<String> = committed.iter().map(value_text).collect();
    assert_eq!(values, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_the_checkpoint_waits_out_another_relays_open_transaction() {
    let offsets = offsets_topic().await;
    let relay = unique_name("relay");
    let offsets_name = offsets.name().to_owned();

    // Another relay opens a transaction on the shared offsets topic and writes into it...
    let other_name = offsets_name.clone();
    let mut other = tokio::task::spawn_blocking(move || {
        let mut other = producer(&unique_name("outboxd-other"));
        other.begin().expect("begin");
        other
            .send(&checkpoint_record(&other_name, "other", &checkpoint(1)))
            .expect("send");
        other
    })
    .await
    .expect("producer thread");
    let written = read_topic(
        offsets.name(),
        Isolation::ReadUncommitted,
        Duration::from_secs(20),
        |r| !r.is_empty(),
    );
    assert_eq!(
        written.len(),
        1,
        "the open transaction's record is in the log"
    );

    // ...then ours commits behind it, so the stable offset stays before our record...
    let relay_name = relay.clone();
    tokio::task::spawn_blocking(move || {
        let mut ours = Batcher::new(
            producer(&format!("outboxd-{relay_name}")),
            BatchLimits::default(),
            offsets_name,
            &relay_name,
            0,
        );
        ours.accept(SinkInput::Boundary(checkpoint(42)))
            .expect("boundary");
        ours.idle().expect("commit").expect("committed");
    })
    .await
    .expect("producer thread");

    // ...until the other one commits, a moment later.
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        other.commit().expect("other commits");
    });
    let last = tokio::task::spawn_blocking(move || offsets.read_last(&relay, CALL_TIMEOUT))
        .await
        .expect("reader thread")
        .expect("read checkpoint");
    committer.join().expect("committer");
    assert_eq!(
        last.map(|c| c.into_logical("r").expect("logical").lsn),
        Some(Lsn(42)),
        "our newest checkpoint, not none"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_instance_fences_the_older_one() {
    let events = unique_name("events");
    create_topic(&events, 1).await;
    let transactional_id = unique_name("outboxd-zombie");

    let topic = events.clone();
    let error = tokio::task::spawn_blocking(move || {
        let mut old = producer(&transactional_id);
        old.begin().expect("begin");
        let SinkInput::Record(r) = record(&topic, "zombie") else {
            unreachable!()
        };
        old.send(&r).expect("send");
        let _new = producer(&transactional_id);
        let error = old.commit().expect_err("the fenced producer cannot commit");
        // Every later call reports the fencing too, not a generic fatal error a relay would retry.
        let again = old.send(&r).expect_err("a fenced producer cannot send");
        assert!(
            matches!(again, SinkError::Fenced { .. }),
            "send after fencing: {again:?}"
        );
        error
    })
    .await
    .expect("producer thread");
    assert!(matches!(error, SinkError::Fenced { .. }), "got {error:?}");
    assert!(
        error.to_string().contains("only one relay per name"),
        "{error}"
    );

    let committed = read_topic(
        &events,
        Isolation::ReadCommitted,
        Duration::from_secs(5),
        |_| false,
    );
    assert!(committed.is_empty(), "the zombie's record is not visible");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offsets_topic_with_several_partitions_is_refused() {
    let name = unique_name("offsets-wide");
    create_topic(&name, 3).await;
    let error = OffsetsTopic::new(settings(), &name)
        .ensure()
        .await
        .expect_err("three partitions refused");
    assert!(matches!(
        error,
        OffsetsError::Partitioned { partitions: 3, .. }
    ));
    assert!(error.to_string().contains("exactly 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offsets_topic_that_is_not_compacted_is_refused() {
    // A topic made by hand (or auto-created by a metadata request) has the broker's default
    // cleanup.policy=delete: retention would delete checkpoints of an idle relay.
    let name = unique_name("offsets-delete");
    create_topic(&name, 1).await;
    let error = OffsetsTopic::new(settings(), &name)
        .ensure()
        .await
        .expect_err("cleanup.policy=delete refused");
    assert!(
        matches!(&error, OffsetsError::NotCompacted { policy, .. } if policy == "delete"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("cleanup.policy=compact"),
        "the message names the fix: {error}"
    );
}

#[test]
fn checkpoint_json_is_the_documented_shape() {
    let mut c = checkpoint(0x16B_3748);
    c.events = 5;
    let json: serde_json::Value = serde_json::from_slice(
        checkpoint_record("o", "r", &c)
            .value
            .as_deref()
            .expect("value"),
    )
    .expect("json");
    assert_eq!(
        json,
        serde_json::json!({"version":1,"system_id":"7000000000000000001","timeline":1,
            "slot":"slot","lsn":"0/16B3748","xid":700,"commit_ts":null,"events":5})
    );
    let bad = br#"{"version":3,"system_id":"1","timeline":1,"slot":"s","lsn":"0/1","xid":null,"commit_ts":null,"events":0}"#;
    assert!(matches!(
        StoredCheckpoint::from_json(bad),
        Err(CheckpointError::UnknownVersion(3))
    ));
}
