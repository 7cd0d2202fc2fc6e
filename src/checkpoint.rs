//! The resume position, and where it lives: a compacted Kafka topic, written in the same Kafka
//! transaction as the events it covers.
//!
//! Because the checkpoint and the events commit or abort together, "the last committed checkpoint"
//! is exactly "how far the topic holds our events". The replication slot is only a hint that lags
//! behind it (it is confirmed after the Kafka commit), never ahead.
//!
//! Reading happens once per start, after `init_transactions` settled our own last transaction:
//! the offsets topic is read with `read_committed` to its end.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::pg::{Lsn, Xid};
use crate::route::Record;
use crate::sink::kafka::KafkaSettings;

/// The resume position of one relay (DESIGN.md §4), the value of its record in the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// `IDENTIFY_SYSTEM`'s system id: a checkpoint is only valid on the cluster that wrote it.
    pub system_id: String,
    /// The timeline the position is on; a promoted replica has a new one.
    pub timeline: u32,
    /// The replication slot the relay reads.
    pub slot: String,
    /// End LSN of the Commit of the last Postgres transaction included (or the WAL end of an idle
    /// confirmation). Replication resumes here; transactions ending at or before it are skipped.
    pub lsn: Lsn,
    /// Transaction id of the last included transaction; `None` for an idle confirmation.
    pub xid: Option<Xid>,
    /// Commit time of the last included transaction.
    pub commit_ts: Option<DateTime<Utc>>,
    /// Events this relay has published in total, carried from checkpoint to checkpoint.
    pub events: u64,
}

impl Checkpoint {
    /// The only format version written and read.
    pub const VERSION: u32 = 1;

    /// The record that stores this checkpoint for `relay_name` in `topic`.
    pub fn to_record(&self, topic: &str, relay_name: &str) -> Record {
        checkpoint_record(topic, relay_name, self)
    }
}

/// The resume position of a relay in poll mode (DESIGN.md §5): the row ids of the last batch it
/// published from `table`. The rows are deleted (or marked) only after this commits, so on start
/// they may still be there: they are deleted first, never published again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollCheckpoint {
    /// Format version, as [`Checkpoint::VERSION`].
    pub version: u32,
    /// Always `"poll"`: what tells it from a logical-mode checkpoint.
    pub mode: String,
    /// The outbox table of the batch, `schema.table`.
    pub table: String,
    /// The batch's row ids, as text of the table's id column.
    pub ids: Vec<String>,
    /// Events this relay has published in total.
    pub events: u64,
}

impl PollCheckpoint {
    /// The `mode` of every poll checkpoint.
    pub const MODE: &'static str = "poll";

    /// The checkpoint of a batch of `ids` from `table`.
    pub fn new(table: impl Into<String>, ids: Vec<String>, events: u64) -> Self {
        Self {
            version: Checkpoint::VERSION,
            mode: Self::MODE.to_owned(),
            table: table.into(),
            ids,
            events,
        }
    }

    /// The record that stores this checkpoint for `relay_name` in `topic`.
    pub fn to_record(&self, topic: &str, relay_name: &str) -> Record {
        checkpoint_record(topic, relay_name, self)
    }
}

/// A relay's last committed checkpoint, of either mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StoredCheckpoint {
    /// Written by a relay streaming a replication slot.
    Logical(Checkpoint),
    /// Written by a relay polling outbox tables.
    Poll(PollCheckpoint),
}

impl StoredCheckpoint {
    /// Parses a stored checkpoint: one with `"mode": "poll"` is a poll checkpoint, one without a
    /// mode a logical one (the format DESIGN.md §4 gives, unchanged).
    pub fn from_json(bytes: &[u8]) -> Result<Self, CheckpointError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
            mode: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(CheckpointError::Corrupt)?;
        if probe.version != Checkpoint::VERSION {
            return Err(CheckpointError::UnknownVersion(probe.version));
        }
        match probe.mode.as_deref() {
            None | Some("logical") => serde_json::from_slice(bytes).map(Self::Logical),
            Some(PollCheckpoint::MODE) => serde_json::from_slice(bytes).map(Self::Poll),
            Some(other) => return Err(CheckpointError::UnknownMode(other.to_owned())),
        }
        .map_err(CheckpointError::Corrupt)
    }

    /// The mode that wrote it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Logical(_) => "logical",
            Self::Poll(_) => PollCheckpoint::MODE,
        }
    }

    /// The logical checkpoint, or an error naming the mode that wrote this one: a relay name's
    /// position means nothing to the other mode, and guessing would repeat or skip events.
    pub fn into_logical(self, relay_name: &str) -> Result<Checkpoint, CheckpointError> {
        match self {
            Self::Logical(checkpoint) => Ok(checkpoint),
            other => Err(other.mode_mismatch(relay_name, "logical")),
        }
    }

    /// The poll checkpoint, or an error naming the mode that wrote this one.
    pub fn into_poll(self, relay_name: &str) -> Result<PollCheckpoint, CheckpointError> {
        match self {
            Self::Poll(checkpoint) => Ok(checkpoint),
            other => Err(other.mode_mismatch(relay_name, PollCheckpoint::MODE)),
        }
    }

    fn mode_mismatch(&self, relay_name: &str, wanted: &'static str) -> CheckpointError {
        CheckpointError::ModeMismatch {
            relay: relay_name.to_owned(),
            stored: self.mode(),
            configured: wanted,
        }
    }
}

/// The record of a checkpoint: keyed by relay name, in the offsets topic's only partition.
fn checkpoint_record(topic: &str, relay_name: &str, checkpoint: &impl Serialize) -> Record {
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

/// Failure to create or read the offsets topic.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
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
    /// A stored value is not a checkpoint.
    #[error("stored checkpoint is not valid JSON of the expected shape: {0}")]
    Corrupt(serde_json::Error),
    /// A checkpoint written by a newer outboxd.
    #[error("stored checkpoint has format version {0}; this outboxd reads version 1 only")]
    UnknownVersion(u32),
    /// A checkpoint of a mode this outboxd does not know.
    #[error("stored checkpoint has mode {0:?}; this outboxd knows \"logical\" and \"poll\"")]
    UnknownMode(String),
    /// The relay's last checkpoint was written in the other mode.
    #[error(
        "relay {relay:?} last committed a {stored}-mode checkpoint, but runs in {configured} mode \
         now: the position of one mode means nothing to the other, so resuming could repeat or \
         skip events. Switch back to relay.mode = \"{stored}\", or give this mode its own \
         relay.name (after draining: a new name starts from scratch)"
    )]
    ModeMismatch {
        /// The relay name.
        relay: String,
        /// The mode of the stored checkpoint.
        stored: &'static str,
        /// The configured mode.
        configured: &'static str,
    },
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
    pub async fn ensure(&self) -> Result<(), CheckpointError> {
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
        let partitions = self.partition_count(&admin).await?;
        if partitions != 1 {
            return Err(CheckpointError::Partitioned {
                topic: self.name.clone(),
                partitions,
            });
        }
        Ok(())
    }

    /// The topic's partition count once the broker's metadata knows the topic.
    ///
    /// Right after `create_topics` returns, a broker may still answer metadata requests with
    /// `UNKNOWN_TOPIC_OR_PARTITION` or `LEADER_NOT_AVAILABLE` and no partitions; that is the topic
    /// being born, not a topic of the wrong shape, so it is asked again until it settles.
    async fn partition_count(
        &self,
        admin: &AdminClient<DefaultClientContext>,
    ) -> Result<usize, CheckpointError> {
        const SETTLE: Duration = Duration::from_secs(30);
        let deadline = Instant::now() + SETTLE;
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
            tokio::time::sleep(Duration::from_millis(100)).await;
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
    ) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        let deadline = Instant::now() + timeout;
        let end = self.end_offset(timeout)?;
        if end == 0 {
            return Ok(None);
        }
        let consumer: BaseConsumer<EndIsNoError> = self
            .settings
            .client_config(&[
                ("group.id", "outboxd-checkpoint-reader"),
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
        loop {
            if Instant::now() >= deadline {
                return Err(CheckpointError::Timeout {
                    topic: self.name.clone(),
                    end,
                    timeout,
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
                        .unwrap_or(0);
                    if reached >= end {
                        return Ok(last);
                    }
                }
                Some(Err(error)) => return Err(self.kafka_error("reading")(error)),
            }
        }
    }

    /// Wraps a librdkafka error of `action` on this topic.
    fn kafka_error(&self, action: &'static str) -> impl FnOnce(KafkaError) -> CheckpointError {
        let topic = self.name.clone();
        move |source| CheckpointError::Kafka {
            topic,
            action,
            source,
        }
    }

    /// The partition's end offset including records of open transactions (a `read_uncommitted` view).
    fn end_offset(&self, timeout: Duration) -> Result<i64, CheckpointError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_parses_as_the_mode_that_wrote_it() {
        let logical = br#"{"version":1,"system_id":"1","timeline":1,"slot":"s","lsn":"0/1","xid":null,"commit_ts":null,"events":3}"#;
        let stored = StoredCheckpoint::from_json(logical).expect("logical");
        assert_eq!(stored.mode(), "logical");
        assert_eq!(stored.clone().into_logical("r").expect("logical").events, 3);
        assert!(matches!(
            stored.into_poll("r"),
            Err(CheckpointError::ModeMismatch {
                stored: "logical",
                configured: "poll",
                ..
            })
        ));

        let poll = PollCheckpoint::new("public.outbox", vec!["a".into(), "b".into()], 9);
        let record = poll.to_record("offsets", "r");
        let json: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().expect("value")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"version":1,"mode":"poll","table":"public.outbox",
                "ids":["a","b"],"events":9})
        );
        let stored = StoredCheckpoint::from_json(record.value.as_deref().expect("value"))
            .expect("poll checkpoint");
        assert_eq!(stored.clone().into_poll("r").expect("poll"), poll);
        assert!(stored.into_logical("r").is_err());

        assert!(matches!(
            StoredCheckpoint::from_json(br#"{"version":1,"mode":"snapshot"}"#),
            Err(CheckpointError::UnknownMode(mode)) if mode == "snapshot"
        ));
    }
}
