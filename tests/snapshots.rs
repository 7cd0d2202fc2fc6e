//! Snapshots while streaming, exactly once (`snapshot.mode = "initial"`), on real Postgres and
//! Kafka: a table snapshotted while a writer keeps updating, deleting and inserting its rows, with
//! and without SIGKILLs of the relay. What a `read_committed` consumer must see:
//! - every row present at the start and never touched by the writer: read exactly once;
//! - no key read twice, and no read of a key after a newer change of that key;
//! - for every key, the last record equals the row's final state (or is a tombstone).
//!
//! The row count is lean for CI; `OUTBOXD_SNAPSHOT_ROWS=1000000` (and `OUTBOXD_SNAPSHOT_KILLS=20`)
//! run the acceptance's size by hand.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use support::kafka::{client_config, create_topic};
use support::postgres::TestDb;
use support::relay::{RelayProcess, RelaySpec};
use support::unique_name;

/// What the log says once the snapshot is complete.
const COMPLETE: &str = "snapshot complete; streaming goes on";

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the topic holds per key, folded as records arrive.
#[derive(Debug, Default)]
struct KeyHistory {
    /// Read events of the key.
    reads: u32,
    /// Whether a read came after a newer change: after a delete, or with a lower `v` than a
    /// change before it (the writer only raises `v`, and never reuses a deleted id).
    read_after_newer_change: bool,
    /// Whether any change event (or tombstone) came yet.
    changed: bool,
    /// Whether a delete (or tombstone) came yet.
    deleted: bool,
    /// The highest `after.v` of the change events so far.
    newest_change: Option<i64>,
    /// `after.v` of the last record, `None` for a delete or tombstone.
    last: Option<i64>,
}

/// A `read_committed` consumer of the table's topic that folds every record into [`KeyHistory`].
struct Topic {
    consumer: BaseConsumer,
    topic: String,
    /// The next offset to read of each partition.
    next: Vec<Offset>,
    keys: HashMap<i64, KeyHistory>,
    /// Reads whose `source.snapshot` is not one of an initial snapshot's markers.
    bad_marks: Vec<String>,
    records: u64,
}

impl Topic {
    fn new(topic: &str, partitions: i32) -> Topic {
        let consumer: BaseConsumer = client_config()
            .set("group.id", unique_name("snapshot_reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        Topic {
            consumer,
            topic: topic.to_owned(),
            next: vec![Offset::Beginning; partitions as usize],
            keys: HashMap::new(),
            bad_marks: Vec::new(),
            records: 0,
        }
    }

    /// Reads what the topic holds now, to the end of every partition (assigned anew from where
    /// the last call stopped: librdkafka reports a partition's end once per assignment).
    fn catch_up(&mut self) {
        let mut assignment = TopicPartitionList::new();
        for (partition, offset) in (0..).zip(&self.next) {
            assignment
                .add_partition_offset(&self.topic, partition, *offset)
                .expect("partition");
        }
        self.consumer.assign(&assignment).expect("assign");
        let mut at_end = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while at_end.len() < self.next.len() {
            assert!(Instant::now() < deadline, "reading the topic to its end");
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let message = message.detach();
                    at_end.remove(&message.partition());
                    let partition = usize::try_from(message.partition()).expect("partition");
                    self.next[partition] = Offset::Offset(message.offset() + 1);
                    self.fold(message.key(), message.payload());
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None => {}
            }
        }
    }

    fn fold(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.records += 1;
        let key: Value = serde_json::from_slice(key.expect("a key")).expect("JSON key");
        let id = key["id"].as_i64().expect("key id");
        let history = self.keys.entry(id).or_default();
        let Some(value) = value else {
            (history.changed, history.deleted, history.last) = (true, true, None);
            return;
        };
        let value: Value = serde_json::from_slice(value).expect("JSON value");
        let v = value["after"]["v"].as_i64();
        if value["op"] == "r" {
            history.reads += 1;
            history.read_after_newer_change |= history.deleted || history.newest_change > v;
            let mark = value["source"]["snapshot"].as_str().unwrap_or_default();
            if ![
                "first",
                "true",
                "last",
                "first_in_data_collection",
                "last_in_data_collection",
            ]
            .contains(&mark)
                || !value["before"].is_null()
            {
                self.bad_marks.push(value.to_string());
            }
        } else {
            history.changed = true;
            history.deleted |= value["op"] == "d";
            history.newest_change = history.newest_change.max(v);
        }
        history.last = v;
    }
}

/// A writer updating, deleting and inserting rows of `items` until stopped; the ids it touched.
fn spawn_writer(
    db: &TestDb,
    rows: i64,
    writer: i64,
    stop: Arc<AtomicBool>,
    touched: Arc<Mutex<BTreeSet<i64>>>,
) -> tokio::task::JoinHandle<u64> {
    let url = db.url.clone();
    tokio::spawn(async move {
        let client = support::postgres::connect(&url).await;
        let (mut next_id, mut transactions) = (rows * (2 + writer), 0_u64);
        while !stop.load(Ordering::Relaxed) {
            let transaction = client.simple_query("BEGIN").await.map(drop);
            transaction.expect("begin");
            let mut ids = Vec::new();
            for _ in 0..rand::random_range(1..4) {
                let id = rand::random_range(1..=rows);
                let sql = match rand::random_range(0..10) {
                    0..=5 => "UPDATE items SET v = v + 1 WHERE id = $1",
                    6..=7 => "DELETE FROM items WHERE id = $1",
                    _ => {
                        next_id += 1;
                        ids.push(next_id);
                        client
                            .execute("INSERT INTO items VALUES ($1, 1)", &[&next_id])
                            .await
                            .expect("insert");
                        continue;
                    }
                };
                if client.execute(sql, &[&id]).await.expect("write") > 0 {
                    ids.push(id);
                }
            }
            client.simple_query("COMMIT").await.expect("commit");
            touched.lock().expect("touched").extend(ids);
            transactions += 1;
        }
        transactions
    })
}

/// The scenario: `rows` rows, a writer running until the snapshot is complete, `kills` SIGKILLs of
/// the relay while it snapshots.
/// Returns how many SIGKILLs landed before the snapshot completed.
async fn snapshot_while_writing(prefix: &str, rows: i64, chunk: u64, kills: u64) -> u64 {
    let began = Instant::now();
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO items SELECT i, 0 FROM generate_series(1, {rows}) i;
             CREATE PUBLICATION {} FOR TABLE items;",
            db.publication
        ))
        .await
        .expect("schema");
    let topic = format!("{}.public.items", db.name);
    create_topic(&topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{}\"\n\
         [snapshot]\nmode = \"initial\"\nchunk_size = {chunk}\n",
        db.name
    );

    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(Mutex::new(BTreeSet::new()));
    // Two writers, each id range of its own for the inserts, busy before the relay starts.
    let writers = [
        spawn_writer(&db, rows, 0, stop.clone(), touched.clone()),
        spawn_writer(&db, rows, 1, stop.clone(), touched.clone()),
    ];
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let mut logs = Vec::new();
    let complete = |logs: &[String], relay: &RelayProcess| {
        logs.iter().any(|log| log.contains(COMPLETE)) || relay.log_text().contains(COMPLETE)
    };
    let mut killed = 0;
    while killed < kills && !complete(&logs, &relay) {
        logs.push(relay.kill_at_random(700..2500).await);
        killed += 1;
        relay = RelayProcess::start(&spec);
    }
    let deadline = Instant::now() + Duration::from_secs(30 + rows as u64 / 1000);
    while !complete(&logs, &relay) {
        assert!(
            Instant::now() < deadline,
            "the snapshot did not complete:\n{}",
            relay.log_text()
        );
        assert!(
            relay.wait_exit(Duration::ZERO).is_none(),
            "the relay died:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshot_done = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut transactions = 0;
    for writer in writers {
        transactions += writer.await.expect("writer");
    }
    let touched = touched.lock().expect("touched").clone();

    // The final state, and the topic caught up with it.
    let state: HashMap<i64, i64> = client
        .query("SELECT id, v FROM items", &[])
        .await
        .expect("final state")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut topic_keys = Topic::new(&topic, 3);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mismatch = |topic: &Topic| {
        let all: BTreeSet<i64> = (1..=rows).chain(touched.iter().copied()).collect();
        all.into_iter().find(|id| {
            let last = topic.keys.get(id).and_then(|h| h.last);
            last != state.get(id).copied()
        })
    };
    loop {
        topic_keys.catch_up();
        let Some(id) = mismatch(&topic_keys) else {
            break;
        };
        assert!(
            Instant::now() < deadline,
            "key {id}: the topic ends with {:?}, the table holds {:?}:\n{}",
            topic_keys.keys.get(&id),
            state.get(&id),
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert!(
        topic_keys.bad_marks.is_empty(),
        "{:?}",
        &topic_keys.bad_marks[..1]
    );
    let mut untouched = 0;
    for id in 1..=rows {
        let history = topic_keys.keys.get(&id);
        if !touched.contains(&id) {
            untouched += 1;
            let history =
                history.unwrap_or_else(|| panic!("row {id} never touched is not in the topic"));
            assert_eq!(
                (history.reads, history.changed),
                (1, false),
                "row {id}, never touched, is read exactly once and nothing else"
            );
        }
    }
    for (id, history) in &topic_keys.keys {
        assert!(history.reads <= 1, "key {id} read {} times", history.reads);
        assert!(
            !history.read_after_newer_change,
            "key {id} read after a newer change of it"
        );
    }
    let reads: u32 = topic_keys.keys.values().map(|h| h.reads).sum();
    eprintln!(
        "snapshot of {rows} rows (chunk {chunk}) with {killed} SIGKILLs: complete after {:.1} s; \
         {transactions} writer transactions touched {} keys; {untouched} untouched rows each \
         read once; {reads} reads, {} records; whole test {:.1} s",
        snapshot_done.as_secs_f64(),
        touched.len(),
        topic_keys.records,
        began.elapsed().as_secs_f64()
    );
    assert!(
        touched.len() > 100,
        "the writer ran during the snapshot ({} keys)",
        touched.len()
    );
    killed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_snapshotted_while_written_is_read_exactly_once_and_never_over_a_newer_change() {
    let rows = env_or("OUTBOXD_SNAPSHOT_ROWS", 10_000) as i64;
    snapshot_while_writing("snap_write", rows, 200, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_a_snapshot_repeat_no_read_and_lose_nothing() {
    let rows = env_or("OUTBOXD_SNAPSHOT_ROWS", 20_000) as i64;
    let kills = env_or("OUTBOXD_SNAPSHOT_KILLS", 5);
    // Small chunks: the snapshot outlives several relays.
    let killed = snapshot_while_writing("snap_kill", rows, 25, kills).await;
    assert!(
        killed >= kills.min(3),
        "only {killed} SIGKILLs landed before the snapshot completed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_a_primary_key_is_refused_by_name() {
    let db = TestDb::create("snap_nokey").await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE nokey (v text); INSERT INTO nokey VALUES ('a');
             CREATE PUBLICATION {} FOR TABLE nokey;",
            db.publication
        ))
        .await
        .expect("schema");
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = "[outbox]\ntables = []\n[snapshot]\nmode = \"initial\"\n".into();
    let mut relay = RelayProcess::start(&spec);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops");
    assert_eq!(status.code(), Some(1), "{}", relay.log_text());
    assert!(
        relay
            .log_text()
            .contains("table public.nokey cannot be snapshotted: it has no primary key"),
        "{}",
        relay.log_text()
    );
}
