//! The store of checkpoints: a compacted one-partition Kafka topic, keyed by relay name, written
//! in the same Kafka transaction as the events each checkpoint covers.
//!
//! Reading happens once per start, after `init_transactions` settled our own last transaction:
//! the topic is read with `read_committed` to its end.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::checkpoint::{CheckpointError, StoredCheckpoint};
use crate::route::Record;
use crate::sink::kafka::KafkaSettings;

/// The record that stores `checkpoint` (of either mode) for `relay_name` in the offsets topic
/// `topic`: keyed by relay name, in the topic's only partition.
pub fn checkpoint_record(topic: &str, relay_name: &str, checkpoint: &impl Serialize) -> Record {
    let value = serde_json::to_vec(checkpoint).expect("a checkpoint always serializes");
    Record {
        topic: topic.to_owned(),
        partition: Some(0),
        key: Some(relay_name.as_bytes().to_vec().into()),
        value: Some(value.into()),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

/// The group id of the checkpoint reader's consumer. It never commits, but librdkafka looks up
/// the group's coordinator all the same: the principal needs Describe on the group.
pub const READER_GROUP: &str = "outboxd-checkpoint-reader";

/// Failure to create, check or read the offsets topic.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// The broker could not be asked.
    #[error("offsets topic {topic:?}: {action} failed: {source}")]
    Kafka {
        /// The offsets topic.
        topic: String,
        /// What was tried.
        action: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The topic exists with a shape that would lose or hide checkpoints.
    #[error("offsets topic {topic:?} has {partitions} partitions; it must have exactly 1 (delete it or name another with kafka.offsets_topic)")]
    Partitioned {
        /// The offsets topic.
        topic: String,
        /// Its partition count.
        partitions: usize,
    },
    /// The topic exists but is not compacted: the broker would delete old checkpoints with its
    /// retention, and a relay idle for longer would start over, publishing everything again.
    #[error(
        "offsets topic {topic:?} has cleanup.policy={policy:?}; it must be \"compact\" (run \
         `kafka-configs --alter --entity-type topics --entity-name {topic} --add-config \
         cleanup.policy=compact`, or name another topic with kafka.offsets_topic)"
    )]
    NotCompacted {
        /// The offsets topic.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// The broker described the topic without its `cleanup.policy`: the relay's principal may
    /// not read the topic's configuration, so compaction cannot be verified.
    #[error(
        "the cleanup.policy of offsets topic {topic:?} could not be read, so the relay cannot \
         verify that it is compacted: grant the relay's principal DescribeConfigs on it \
         (`kafka-acls --add --allow-principal User:<relay> --operation DescribeConfigs --topic \
         {topic}`)"
    )]
    PolicyUnreadable {
        /// The offsets topic.
        topic: String,
    },
    /// Reading did not reach the end in time (a transaction of another producer stays open?).
    #[error("offsets topic {topic:?}: could not read to offset {end} within {timeout:?}")]
    Timeout {
        /// The offsets topic.
        topic: String,
        /// The end offset aimed for.
        end: i64,
        /// How long it tried.
        timeout: Duration,
    },
    /// Reading reached the last stable offset but not the end: a transaction holds the stable
    /// offset back. A relay instance killed mid-transaction leaves its transaction open until the
    /// broker aborts it (`kafka.transaction_timeout` after it began); a running instance's
    /// transaction ends within `batch.max_age`.
    #[error(
        "offsets topic {topic:?}: the checkpoint is behind an open Kafka transaction (records \
         from offset {stable} up to {end} still undecided after {timeout:?}); an instance killed \
         mid-transaction leaves it open until the broker aborts it, within \
         kafka.transaction_timeout"
    )]
    OpenTransaction {
        /// The offsets topic.
        topic: String,
        /// The last stable offset: where `read_committed` reading stopped.
        stable: i64,
        /// The end offset aimed for.
        end: i64,
        /// How long it waited.
        timeout: Duration,
    },
    /// A stored checkpoint cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl OffsetsError {
    /// Whether a new attempt can succeed: the broker may come back; a topic of the wrong shape or
    /// an unusable checkpoint stays so until someone acts.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kafka { .. } | Self::Timeout { .. } | Self::OpenTransaction { .. } => true,
            Self::Partitioned { .. }
            | Self::NotCompacted { .. }
            | Self::PolicyUnreadable { .. }
            | Self::Checkpoint(_) => false,
        }
    }
}

/// The compacted one-partition topic that holds every relay's checkpoint, keyed by relay name.
#[derive(Debug, Clone)]
pub struct OffsetsTopic {
    settings: KafkaSettings,
    name: String,
}

impl OffsetsTopic {
    /// The offsets topic `name` on the broker of `settings`.
    pub fn new(settings: KafkaSettings, name: impl Into<String>) -> Self {
        Self {
            settings,
            name: name.into(),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the topic (compacted, one partition, the broker's replication factor) unless it
    /// exists, and checks the shape of an existing one.
    pub async fn ensure(&self) -> Result<(), OffsetsError> {
        let admin: AdminClient<DefaultClientContext> = self
            .settings
            .client_config(&[])
            .create()
            .map_err(self.kafka_error("creating an admin client"))?;
        let topic = NewTopic::new(&self.name, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .map_err(self.kafka_error("creating the topic"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(self.kafka_error("creating the topic")(KafkaError::AdminOp(
                        code,
                    )));
                }
            }
        }
        let partitions = self.partition_count().await?;
        if partitions != 1 {
            return Err(OffsetsError::Partitioned {
                topic: self.name.clone(),
                partitions,
            });
        }
        self.check_compacted(&admin).await
    }

    /// Fails unless the topic's `cleanup.policy` is exactly `compact` (a topic created by hand,
    /// or auto-created by the broker, has its default `delete`).
    async fn check_compacted(
        &self,
        admin: &AdminClient<DefaultClientContext>,
    ) -> Result<(), OffsetsError> {
        let results = admin
            .describe_configs(
                [&ResourceSpecifier::Topic(&self.name)],
                &AdminOptions::new(),
            )
            .await
            .map_err(self.kafka_error("describing the topic's configuration"))?;
        let mut policy = None;
        for result in results {
            let resource = result.map_err(|code| {
                self.kafka_error("describing the topic's configuration")(KafkaError::AdminOp(code))
            })?;
            policy = resource
                .get("cleanup.policy")
                .and_then(|entry| entry.value.clone());
        }
        let Some(policy) = policy else {
            return Err(OffsetsError::PolicyUnreadable {
                topic: self.name.clone(),
            });
        };
        if policy == "compact" {
            return Ok(());
        }
        Err(OffsetsError::NotCompacted {
            topic: self.name.clone(),
            policy,
        })
    }

    /// The topic's partition count once the broker's metadata knows the topic.
    ///
    /// Right after `create_topics` returns, a broker may still answer metadata requests with
    /// `UNKNOWN_TOPIC_OR_PARTITION` or `LEADER_NOT_AVAILABLE` and no partitions; that is the topic
    /// being born, not a topic of the wrong shape, so it is asked again until it settles.
    async fn partition_count(&self) -> Result<usize, OffsetsError> {
        // librdkafka's metadata call blocks: off the runtime's thread, which `run` shares with
        // the lease's proofs and the metrics endpoint (main.rs).
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.settled_partition_count())
            .await
            .map_err(|_| self.kafka_error("reading metadata")(KafkaError::Canceled))?
    }

    /// [`OffsetsTopic::partition_count`] on one client of its own. Blocking.
    fn settled_partition_count(&self) -> Result<usize, OffsetsError> {
        const SETTLE: Duration = Duration::from_secs(30);
        let deadline = Instant::now() + SETTLE;
        let admin: AdminClient<DefaultClientContext> = self
            .settings
            .client_config(&[])
            .create()
            .map_err(self.kafka_error("creating an admin client"))?;
        loop {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&self.name), Duration::from_secs(10))
                .map_err(self.kafka_error("reading metadata"))?;
            let topic = metadata.topics().first();
            let settled = topic.is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
            if settled || Instant::now() >= deadline {
                if let Some(code) = topic.and_then(rdkafka::metadata::MetadataTopic::error) {
                    return Err(self.kafka_error("reading metadata")(
                        KafkaError::MetadataFetch(code.into()),
                    ));
                }
                return Ok(topic.map_or(0, |t| t.partitions().len()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last committed checkpoint of `relay_name`, or `None` if it never committed one.
    ///
    /// Blocking. Reads with `read_committed` until it has passed the end offset the partition had
    /// when the call began. Reading only to the last stable offset would not do: another relay's
    /// open transaction, begun before our last commit, holds the stable offset back and would hide
    /// our newest checkpoint, and resuming from an older one duplicates events.
    pub fn read_last(
        &self,
        relay_name: &str,
        timeout: Duration,
    ) -> Result<Option<StoredCheckpoint>, OffsetsError> {
        let deadline = Instant::now() + timeout;
        let end = self.end_offset(timeout)?;
        if end == 0 {
            return Ok(None);
        }
        let consumer: BaseConsumer<EndIsNoError> = self
            .settings
            .client_config(&[
                ("group.id", READER_GROUP),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
            ])
            .create_with_context(EndIsNoError)
            .map_err(self.kafka_error("creating a consumer"))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.name, 0, Offset::Beginning)
            .map_err(self.kafka_error("assigning the partition"))?;
        consumer
            .assign(&assignment)
            .map_err(self.kafka_error("assigning the partition"))?;

        let mut last: Option<StoredCheckpoint> = None;
        // Where `read_committed` reading last stopped short of `end`, if it did.
        let mut stable = None;
        loop {
            if Instant::now() >= deadline {
                let topic = self.name.clone();
                return Err(match stable {
                    Some(stable) => OffsetsError::OpenTransaction {
                        topic,
                        stable,
                        end,
                        timeout,
                    },
                    None => OffsetsError::Timeout {
                        topic,
                        end,
                        timeout,
                    },
                });
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(message)) => {
                    if message.key() == Some(relay_name.as_bytes()) {
                        last = message
                            .payload()
                            .map(StoredCheckpoint::from_json)
                            .transpose()?;
                    }
                    if message.offset() + 1 >= end {
                        return Ok(last);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // At the end of what read_committed may see. librdkafka moves the position
                    // past transaction markers and aborted records, which are never delivered,
                    // so the position says whether everything before `end` has been decided.
                    let position = consumer
                        .position()
                        .map_err(self.kafka_error("reading the position"))?;
                    let reached = position
                        .find_partition(&self.name, 0)
                        .and_then(|p| p.offset().to_raw())
                        // No position yet (nothing read, -1001): the partition's start.
                        .filter(|&offset| offset >= 0)
                        .unwrap_or(0);
                    if reached >= end {
                        return Ok(last);
                    }
                    stable = Some(reached);
                }
                Some(Err(error)) => return Err(self.kafka_error("reading")(error)),
            }
        }
    }

    /// Wraps a librdkafka error of `action` on this topic.
    fn kafka_error(&self, action: &'static str) -> impl FnOnce(KafkaError) -> OffsetsError {
        let topic = self.name.clone();
        move |source| OffsetsError::Kafka {
            topic,
            action,
            source,
        }
    }

    /// The partition's end offset including records of open transactions (a `read_uncommitted` view).
    fn end_offset(&self, timeout: Duration) -> Result<i64, OffsetsError> {
        let consumer: BaseConsumer = self
            .settings
            .client_config(&[("isolation.level", "read_uncommitted")])
            .create()
            .map_err(self.kafka_error("creating a consumer"))?;
        let (_, high) = consumer
            .fetch_watermarks(&self.name, 0, timeout)
            .map_err(self.kafka_error("reading the end offset"))?;
        Ok(high)
    }
}

/// The checkpoint reader's client context: reaching the end of the partition is how it knows it
/// is done, not an error to log.
#[derive(Debug, Clone, Copy)]
struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!(error = %error, reason, "librdkafka error while reading checkpoints");
        }
    }
}

impl ConsumerContext for EndIsNoError {}
