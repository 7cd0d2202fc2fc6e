//! Kafka for tests: topics, and consumers that read a topic to a known end.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use super::dev_env;

/// How a consumer treats records of open or aborted Kafka transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions, up to the last stable offset.
    ReadCommitted,
    /// Every record written, aborted ones included.
    ReadUncommitted,
}

impl Isolation {
    fn as_config(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Client settings pointing at the dev environment's broker.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &dev_env().kafka_bootstrap);
    config
}

/// Creates `topic` with `partitions` partitions (replication factor 1: there is one broker).
pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
    }
}

/// Reads every partition of `topic` from the beginning until `done` holds for what was read, or
/// until `timeout`, whichever comes first; returns the records in the order read (per partition in
/// offset order). Assigns partitions directly: no consumer group, nothing committed.
pub fn read_topic(
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", super::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation.as_config())
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata
        .topics()
        .iter()
        .flat_map(rdkafka::metadata::MetadataTopic::partitions)
    {
        assignment
            .add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign partitions");
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records.push(message.detach()),
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
    records
}

/// The value of a record as UTF-8 text (panics on a tombstone or non-UTF-8 value).
pub fn value_text(message: &OwnedMessage) -> String {
    String::from_utf8(message.payload().expect("record has a value").to_vec()).expect("UTF-8 value")
}
