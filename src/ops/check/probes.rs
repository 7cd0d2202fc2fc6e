//! Probes of the ACLs the relay's principal holds: each asks the broker one thing that needs one
//! grant, and none changes anything. The broker authorizes a request before it looks at it, so a
//! refusal names the grant that is missing, and a request that passed authorization is stopped
//! before it does anything: a produce with `acks=2` (refused as INVALID_REQUIRED_ACKS once the
//! write is authorized, before the record reaches the log), a topic creation that is only
//! validated, a read from a partition's end.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::sink::kafka::KafkaSettings;

/// Why a probe did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// The broker refused for want of a grant: its words.
    Denied(String),
    /// The probe could not tell (no answer, or an error that says nothing of the grant).
    Unclear(String),
}

impl Refused {
    /// Sorts a broker's error code: the authorization failures deny, the rest leave it unclear.
    fn of(code: RDKafkaErrorCode) -> Self {
        match code {
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
                Self::Denied(code.to_string())
            }
            _ => Self::Unclear(code.to_string()),
        }
    }

    fn of_error(error: &KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(code) if matches!(Self::of(code), Self::Denied(_)) => {
                Self::Denied(error.to_string())
            }
            _ => Self::Unclear(error.to_string()),
        }
    }
}

/// Describe on `topic`, which the metadata of all topics did not list (it leaves out the topics
/// the principal may not describe): the metadata of that one topic, never making the broker
/// create it. `Ok(false)`: it does not exist.
pub(super) fn describe_topic(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<bool, Refused> {
    let consumer: BaseConsumer = kafka
        .client_config(&[])
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|error| Refused::Unclear(error.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| Refused::of_error(&error))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(found) => match found.error().map(RDKafkaErrorCode::from) {
            None => Ok(true),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(false),
            Some(code) => Err(Refused::of(code)),
        },
        None => Ok(false),
    }
}

/// Write on `topic`, which exists: one empty record to partition 0 with `acks=2`. The broker
/// checks the write's authorization first and then refuses the request's acks, so nothing is
/// written (no idempotence, no transaction, no retry).
pub(super) fn write_topic(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<(), Refused> {
    let mut config = kafka.client_config(&[]);
    let producer: FutureProducer = config
        .remove("acks")
        .remove("enable.idempotence")
        .set("request.required.acks", "2")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("linger.ms", "0")
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
        .create()
        .map_err(|error| Refused::Unclear(error.to_string()))?;
    let record = FutureRecord::<[u8], [u8]>::to(topic).partition(0);
    // On a blocking thread of the runtime (see `check::run`), which may wait on a future.
    let sent = tokio::runtime::Handle::current().block_on(producer.send(record, timeout));
    match sent {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRequiredAcks), _)) => Ok(()),
        Err((error, _)) => Err(Refused::of_error(&error)),
        Ok(_) => Err(Refused::Unclear(
            "the broker took the probe's record with acks=2 (an empty record was written to \
             partition 0)"
                .into(),
        )),
    }
}

/// Read on `topic`, which exists: a fetch at the end of partition 0, by a consumer in group
/// `group` as the checkpoint reader's (librdkafka assigns partitions only to a consumer with a
/// group). A refusal of the group is [`describe_group`]'s to report: only the topic's denies here.
pub(super) fn read_topic(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> Result<(), Refused> {
    let consumer: BaseConsumer = kafka
        .client_config(&[])
        .set("group.id", group)
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|error| Refused::Unclear(error.to_string()))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::End)
        .and_then(|()| consumer.assign(&assignment))
        .map_err(|error| Refused::Unclear(error.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut last = format!("no fetch answered within {timeout:?}");
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_) | Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(error))
                if error.rdkafka_error_code()
                    == Some(RDKafkaErrorCode::TopicAuthorizationFailed) =>
            {
                return Err(Refused::Denied(error.to_string()));
            }
            Some(Err(error)) => last = error.to_string(),
            None => {}
        }
    }
    Err(Refused::Unclear(last))
}

/// Describe on consumer group `group` (the coordinator lookup a consumer with a group id makes
/// even when it only assigns partitions): the group's committed offset of `topic`'s partition 0.
pub(super) fn describe_group(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(), Refused> {
    let consumer: BaseConsumer = kafka
        .client_config(&[])
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|error| Refused::Unclear(error.to_string()))?;
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let deadline = Instant::now() + timeout;
    loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let error = match consumer.committed_offsets(partitions.clone(), step) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // librdkafka retries a coordinator lookup the broker refuses, so the call only times
        // out: the refusal comes as an error event of the consumer's queue.
        while let Some(event) = consumer.poll(Duration::ZERO) {
            match event {
                Err(refused)
                    if refused.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::GroupAuthorizationFailed) =>
                {
                    return Err(Refused::Denied(refused.to_string()));
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(Refused::of_error(&error));
        }
    }
}

/// Create on `topic`'s name: its creation, only validated. A topic that exists passes
/// (TOPIC_ALREADY_EXISTS comes only once the creation is authorized).
pub(super) fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &NewTopic<'_>,
    timeout: Duration,
) -> Result<(), Refused> {
    let options = AdminOptions::new()
        .validate_only(true)
        .request_timeout(Some(timeout));
    // On a blocking thread of the runtime (see `check::run`), which may wait on a future.
    let created =
        tokio::runtime::Handle::current().block_on(admin.create_topics([topic], &options));
    match created.as_deref() {
        Ok([Ok(_)] | [Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => Ok(()),
        Ok([Err((_, code))]) => Err(Refused::of(*code)),
        Ok(_) => Err(Refused::Unclear("the broker answered for no topic".into())),
        Err(error) => Err(Refused::of_error(error)),
    }
}

/// DescribeConfigs on `topic`: its `cleanup.policy` (`None` when the broker left it out).
pub(super) fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, Refused> {
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = tokio::runtime::Handle::current()
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options))
        .map_err(|error| Refused::of_error(&error))?;
    match described.into_iter().next() {
        Some(Ok(resource)) => Ok(resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.clone())),
        Some(Err(code)) => Err(Refused::of(code)),
        None => Err(Refused::Unclear("the broker answered for no topic".into())),
    }
}
