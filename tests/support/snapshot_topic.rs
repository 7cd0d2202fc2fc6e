//! Snapshot workloads: a writer updating, deleting and inserting rows of `items (id bigint
//! PRIMARY KEY, v bigint, …)` while a snapshot reads it, and a `read_committed` consumer that folds
//! the table's topic into a per-key history, to check what a snapshot must give a consumer:
//! every row read at most once, no read after a newer change of its key, the last record of every
//! key equal to the row's final state.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::kafka::client_config;
use super::unique_name;

/// What the topic holds per key, folded as records arrive.
#[derive(Debug, Default)]
pub struct KeyHistory {
    /// Read events of the key.
    pub reads: u32,
    /// Whether a read came after a newer change: after a delete, or with a lower `v` than a
    /// change before it (the writer only raises `v`, and never reuses a deleted id).
    pub read_after_newer_change: bool,
    /// Whether any change event (or tombstone) came yet.
    pub changed: bool,
    /// Whether a delete (or tombstone) came yet.
    pub deleted: bool,
    /// The highest `after.v` of the change events so far.
    pub newest_change: Option<i64>,
    /// `after.v` of the last record, `None` for a delete or tombstone.
    pub last: Option<i64>,
    /// `after` of the last read.
    pub last_read: Option<Value>,
}

/// A `read_committed` consumer of a table's topic that folds every record into [`KeyHistory`].
pub struct SnapshotTopic {
    consumer: BaseConsumer,
    topic: String,
    /// The next offset to read of each partition.
    next: Vec<Offset>,
    /// Each key's history.
    pub keys: HashMap<i64, KeyHistory>,
    /// The `source.snapshot` markers a read may carry.
    marks: &'static [&'static str],
    /// Reads whose `source.snapshot` is not in `marks`, with a `before`, or incremental ones with
    /// a `source.txId` or `source.lsn`.
    pub bad_marks: Vec<String>,
    /// Records read.
    pub records: u64,
}

impl SnapshotTopic {
    /// A consumer of `topic`'s `partitions` from the beginning, whose reads must carry one of
    /// `marks`.
    pub fn new(topic: &str, partitions: i32, marks: &'static [&'static str]) -> Self {
        let consumer: BaseConsumer = client_config()
            .set("group.id", unique_name("snapshot_reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        Self {
            consumer,
            topic: topic.to_owned(),
            next: vec![Offset::Beginning; partitions as usize],
            keys: HashMap::new(),
            marks,
            bad_marks: Vec::new(),
            records: 0,
        }
    }

    /// Reads what the topic holds now, to the end of every partition (assigned anew from where
    /// the last call stopped: librdkafka reports a partition's end once per assignment).
    pub fn catch_up(&mut self) {
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

    /// Read events so far.
    pub fn reads(&self) -> u32 {
        self.keys.values().map(|h| h.reads).sum()
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
            history.last_read = Some(value["after"].clone());
            let mark = value["source"]["snapshot"].as_str().unwrap_or_default();
            // Debezium's incremental reads leave the source's txId and lsn out.
            let incremental_position = mark == "incremental"
                && !(value["source"]["txId"].is_null() && value["source"]["lsn"].is_null());
            if !self.marks.contains(&mark) || !value["before"].is_null() || incremental_position {
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
/// It reconnects when the server goes away (a restart): the ids of a transaction whose commit
/// went unanswered count as touched, as it may have committed. Writer `writer` inserts ids of its
/// own range past `rows`.
pub fn spawn_writer(
    url: &str,
    rows: i64,
    writer: i64,
    stop: Arc<AtomicBool>,
    touched: Arc<Mutex<BTreeSet<i64>>>,
) -> tokio::task::JoinHandle<u64> {
    let url = url.to_owned();
    tokio::spawn(async move {
        let (mut next_id, mut transactions) = (rows * (2 + writer), 0_u64);
        while let Some(client) = super::postgres::connect_retrying(&url, &stop).await {
            while !stop.load(Ordering::Relaxed) {
                let mut ids = Vec::new();
                let written = async {
                    client.simple_query("BEGIN").await?;
                    for _ in 0..rand::random_range(1..4) {
                        let id = rand::random_range(1..=rows);
                        let sql = match rand::random_range(0..10) {
                            0..=5 => "UPDATE items SET v = v + 1 WHERE id = $1",
                            6..=7 => "DELETE FROM items WHERE id = $1",
                            _ => {
                                next_id += 1;
                                ids.push(next_id);
                                client
                                    .execute(
                                        "INSERT INTO items (id, v) VALUES ($1, 1)",
                                        &[&next_id],
                                    )
                                    .await?;
                                continue;
                            }
                        };
                        if client.execute(sql, &[&id]).await? > 0 {
                            ids.push(id);
                        }
                    }
                    touched.lock().expect("touched").extend(ids.iter().copied());
                    client.simple_query("COMMIT").await.map(drop)
                }
                .await;
                if written.is_err() {
                    break;
                }
                transactions += 1;
            }
        }
        transactions
    })
}
