//! Kafka for tests: topics, and consumers that read a topic to a known end.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, OwnedMessage};
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
    client_config_at(&dev_env().kafka_bootstrap)
}

/// Client settings pointing at `bootstrap`.
pub fn client_config_at(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Creates `topic` with `partitions` partitions (replication factor 1: there is one broker).
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_at(&dev_env().kafka_bootstrap, topic, partitions).await;
}

/// Creates `topic` on the broker at `bootstrap`.
pub async fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with_at(bootstrap, topic, partitions, &[]).await;
}

/// Creates `topic` on the broker at `bootstrap` with topic configurations `configs`
/// (`cleanup.policy=compact`).
pub async fn create_topic_with_at(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> =
        client_config_at(bootstrap).create().expect("admin client");
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
    }
}

/// The partition count and configuration entry `config` of `topic` on the broker at
/// `bootstrap`.
pub async fn topic_settings_at(
    bootstrap: &str,
    topic: &str,
    config: &str,
) -> (usize, Option<String>) {
    let consumer: BaseConsumer = client_config_at(bootstrap).create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len();
    let admin: AdminClient<DefaultClientContext> =
        client_config_at(bootstrap).create().expect("admin");
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe");
    let resource = described.into_iter().next().expect("one").expect("topic");
    let value = resource.get(config).and_then(|e| e.value.clone());
    (partitions, value)
}

/// Reads exactly `count` committed records of `topic` (and checks no more follow shortly).
pub fn read_exactly(topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    read_exactly_at(&dev_env().kafka_bootstrap, topic, count)
}

/// [`read_exactly`] on the broker at `bootstrap`.
pub fn read_exactly_at(
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let records = read_past_at(bootstrap, topic, count, Duration::from_secs(3));
    assert_eq!(records.len(), count, "records in {topic}");
    records
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
    read_topic_at(&dev_env().kafka_bootstrap, topic, isolation, timeout, done)
}

/// [`read_topic`] on the broker at `bootstrap`.
pub fn read_topic_at(
    bootstrap: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let mut records = Vec::new();
    if done(&records) {
        return records;
    }
    consume_topic_at(bootstrap, topic, isolation, timeout, |message| {
        records.push(message.detach());
        done(&records)
    });
    records
}

/// Reads every partition of `topic` from the beginning, handing each record to `on_record` as it
/// arrives, until `on_record` returns true or until `timeout`. Nothing is kept: the benchmarks
/// count and time millions of records this way without holding them.
pub fn consume_topic_at(
    bootstrap: &str,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    mut on_record: impl FnMut(&BorrowedMessage<'_>) -> bool,
) {
    let consumer: BaseConsumer = reader_config(bootstrap, isolation)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + timeout;
    let assignment = from_the_beginning(&consumer, topic, deadline);
    consumer.assign(&assignment).expect("assign partitions");
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) if on_record(&message) => return,
            Some(Ok(_)) | None => {}
            Some(Err(e)) => panic!("consume {topic}: {e}"),
        }
    }
}

/// Settings of a consumer that reads without committing anything: a group of its own, no
/// automatic commits, and fetches answered as soon as there is something to return (the wait of
/// an empty one only bounded, so a benchmark's receipt times are not rounded up by it).
fn reader_config(bootstrap: &str, isolation: Isolation) -> ClientConfig {
    let mut config = client_config_at(bootstrap);
    config
        .set("group.id", super::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation.as_config())
        .set("fetch.wait.max.ms", "10");
    config
}

/// Every partition of `topic` from its beginning. A topic the relay creates by producing to it
/// may not exist yet: waits for its partitions until `deadline` (then the list is empty).
fn from_the_beginning(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
) -> TopicPartitionList {
    let mut assignment = TopicPartitionList::new();
    while assignment.count() == 0 && Instant::now() < deadline {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        for partition in metadata
            .topics()
            .iter()
            .flat_map(rdkafka::metadata::MetadataTopic::partitions)
        {
            assignment
                .add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)
                .expect("add partition");
        }
        if assignment.count() == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assignment
}

/// Every record of `topic` on the dev broker, read (`read_committed`) from the beginning to the
/// end each partition has now, in partition and offset order.
pub fn read_to_end(topic: &str) -> Vec<OwnedMessage> {
    read_to_end_at(&dev_env().kafka_bootstrap, topic)
}

/// [`read_to_end`] on the broker at `bootstrap`.
pub fn read_to_end_at(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let mut records = read_past_at(bootstrap, topic, 0, Duration::ZERO);
    records.sort_by_key(|m| (m.partition(), m.offset()));
    records
}

/// Reads `topic` (read_committed) from the beginning until at least `count` records arrived and
/// every partition is at its end, then for `linger` more (records committed a little later: a
/// duplicate published again); in the order read, per partition in offset order. Panics when
/// that takes longer than a minute. One pass, never a second read from the beginning boxed in a
/// few seconds: under load such a pass read hundreds of thousands of records short.
pub fn read_past_at(
    bootstrap: &str,
    topic: &str,
    count: usize,
    linger: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = reader_config(bootstrap, Isolation::ReadCommitted)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    let assignment = from_the_beginning(&consumer, topic, deadline);
    let partitions = assignment.count();
    consumer.assign(&assignment).expect("assign partitions");
    let mut records = Vec::new();
    let mut at_end = std::collections::HashSet::new();
    let mut lingering: Option<Instant> = None;
    loop {
        let done = records.len() >= count && at_end.len() == partitions;
        match (done, lingering) {
            (true, None) => lingering = Some(Instant::now() + linger),
            (_, Some(until)) if Instant::now() >= until => return records,
            _ => {}
        }
        assert!(
            lingering.is_some() || Instant::now() < deadline,
            "reading {topic} to its end: {} of at least {count} records within a minute",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                records.push(message.detach());
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
}

/// The value of header `name` of `record`, as text.
pub fn header(record: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = record.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The value of a record as UTF-8 text (panics on a tombstone or non-UTF-8 value).
pub fn value_text(message: &OwnedMessage) -> String {
    String::from_utf8(message.payload().expect("record has a value").to_vec()).expect("UTF-8 value")
}

/// A broker of one test's own, for what the shared one must not suffer (restarts). Stopped and
/// deleted on drop.
#[derive(Debug)]
pub struct PrivateKafka {
    dir: tempfile::TempDir,
    /// `host:port` of the broker.
    pub bootstrap: String,
}

impl PrivateKafka {
    /// Starts a single-node broker with `scripts/dev-env up kafka` in a directory of its own.
    pub fn start() -> PrivateKafka {
        Self::start_with_env(&[])
    }

    /// [`PrivateKafka::start`] with extra environment variables for `scripts/dev-env` (such as
    /// `OUTBOXD_DEV_KAFKA_SECURITY=1`).
    pub fn start_with_env(vars: &[(&str, &str)]) -> PrivateKafka {
        let dir = tempfile::Builder::new()
            .prefix("outboxd-kafka-")
            .tempdir()
            .expect("temp dir");
        let env_dir = dir.path().join("env");
        dev_env_command(&env_dir, &["up", "kafka"], vars);
        let port = std::fs::read_to_string(env_dir.join("kafka.port")).expect("kafka.port");
        PrivateKafka {
            bootstrap: format!("127.0.0.1:{}", port.trim()),
            dir,
        }
    }

    /// Stops the broker gracefully and starts it again on the same port and data.
    pub fn restart(&self) {
        dev_env_command(&self.dir.path().join("env"), &["restart-kafka"], &[]);
    }

    /// SIGKILL: the broker dies at once, with no controlled shutdown (a crash).
    pub fn kill(&self) {
        dev_env_command(&self.dir.path().join("env"), &["kill-kafka"], &[]);
    }

    /// Starts a killed broker again on the same port and data.
    pub fn start_again(&self) {
        dev_env_command(&self.dir.path().join("env"), &["start-kafka"], &[]);
    }

    /// SIGSTOP: the broker keeps its connections but answers nothing until [`Self::resume`].
    pub fn pause(&self) {
        dev_env_command(&self.dir.path().join("env"), &["pause-kafka"], &[]);
    }

    /// SIGCONT: a paused broker goes on where it stopped.
    pub fn resume(&self) {
        dev_env_command(&self.dir.path().join("env"), &["resume-kafka"], &[]);
    }

    /// The broker's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("env/kafka/server.log")).unwrap_or_default()
    }

    /// Runs `scripts/dev-env ARGS` for this broker's environment, returning its standard output.
    pub fn dev_env(&self, args: &[&str]) -> String {
        dev_env_command(&self.dir.path().join("env"), args, &[])
    }

    /// `scripts/dev-env ARGS` for this broker's environment, to spawn (a long-lived subcommand).
    pub fn dev_env_process(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(super::repo_root().join("scripts/dev-env"));
        command
            .args(args)
            .env("OUTBOXD_DEV_DIR", self.dir.path().join("env"));
        command
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new(super::repo_root().join("scripts/dev-env"))
            .arg("down")
            .env("OUTBOXD_DEV_DIR", self.dir.path().join("env"))
            .status();
    }
}

fn dev_env_command(env_dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(super::repo_root().join("scripts/dev-env"))
        .args(args)
        .env("OUTBOXD_DEV_DIR", env_dir)
        .envs(vars.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/dev-env");
    assert!(output.status.success(), "scripts/dev-env {args:?} failed");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}
