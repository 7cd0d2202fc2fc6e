//! `check`'s Kafka side: a broker answers, transactions work, the offsets and dead-letter topics
//! exist in a usable shape or can be created, and where the relay's checkpoint stands.
//!
//! Nothing is created: topics are looked up in the metadata of all topics (a metadata request
//! naming a missing topic would make a broker with `auto.create.topics.enable` create it with
//! its defaults — not compacted, `num.partitions` partitions — which `run` then refuses), and
//! their creation is only validated (`validate_only`).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::report::Report;
use crate::checkpoint::StoredCheckpoint;
use crate::ops::{admin_client, read_checkpoint};
use crate::relay::RelayConfig;
use crate::sink::kafka::TransactionalProducer;

const AREA: &str = "kafka";

/// What the Kafka checks found, and the relay's checkpoint: `None` when it could not be read,
/// `Some(None)` when none was committed yet.
#[derive(Debug)]
pub(super) struct KafkaFacts {
    pub(super) report: Report,
    pub(super) checkpoint: Option<Option<StoredCheckpoint>>,
}

/// Runs the Kafka checks. Blocking; on a blocking thread of the runtime.
pub(super) fn checks(config: &RelayConfig, dead_letter_topic: &str) -> KafkaFacts {
    let mut report = Report::default();
    let timeout = config.kafka_call_timeout.min(Duration::from_secs(15));
    let unreadable = |report| KafkaFacts {
        report,
        checkpoint: None,
    };
    let admin = match admin_client(config) {
        Ok(admin) => admin,
        Err(error) => {
            report.fail(
                AREA,
                format!("the Kafka settings are not accepted: {error}"),
                "correct [kafka.properties] (librdkafka property names and values)",
            );
            return unreadable(report);
        }
    };
    let topics: HashMap<String, usize> = match admin.inner().fetch_metadata(None, timeout) {
        Ok(metadata) => {
            report.ok(
                AREA,
                format!(
                    "{} answered ({} broker(s))",
                    config.kafka.bootstrap_servers,
                    metadata.brokers().len()
                ),
            );
            metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_owned(), t.partitions().len()))
                .collect()
        }
        Err(error) => {
            report.fail(
                AREA,
                format!(
                    "no broker at {} answered within {timeout:?}: {error}",
                    config.kafka.bootstrap_servers
                ),
                "check kafka.bootstrap_servers, that the broker runs and is reachable from here, \
                 and the security settings in [kafka.properties]",
            );
            report.skip(AREA, "the other Kafka checks need a broker");
            return unreadable(report);
        }
    };
    transactions(config, timeout, &mut report);
    for (topic, role) in [
        (config.offsets_topic.as_str(), "offsets"),
        (dead_letter_topic, "dead-letter"),
    ] {
        topic_check(
            &admin,
            topic,
            topics.get(topic).copied(),
            role,
            timeout,
            &mut report,
        );
    }
    let checkpoint = match read_checkpoint(config, timeout) {
        Ok(checkpoint) => {
            report.info(
                AREA,
                match &checkpoint {
                    None => format!("relay {:?} has committed no checkpoint yet", config.name),
                    Some(StoredCheckpoint::Logical(checkpoint)) => format!(
                        "relay {:?}'s last checkpoint is at {}",
                        config.name, checkpoint.lsn
                    ),
                    Some(StoredCheckpoint::Poll(checkpoint)) => format!(
                        "relay {:?}'s last checkpoint is a batch from {}",
                        config.name, checkpoint.table
                    ),
                },
            );
            Some(checkpoint)
        }
        Err(error) => {
            report.fail(
                AREA,
                format!(
                    "cannot read the checkpoint of relay {:?}: {error:#}",
                    config.name
                ),
                "the principal needs READ on the offsets topic and on group \
                 outboxd-checkpoint-reader",
            );
            None
        }
    };
    KafkaFacts { report, checkpoint }
}

/// A transactional producer can be initialized, under an id of its own so that a live relay is
/// not fenced.
fn transactions(config: &RelayConfig, timeout: Duration, report: &mut Report) {
    let check_id = format!("{}.check", config.transactional_id());
    match TransactionalProducer::start(&config.kafka, &check_id, config.transaction_timeout, timeout)
    {
        Ok(_) => report.ok(AREA, format!("transactions work (initialized {check_id:?})")),
        Err(error) if error.to_string().to_ascii_lowercase().contains("transaction timeout") => {
            report.fail(
                AREA,
                format!("the broker refuses kafka.transaction_timeout: {error}"),
                format!(
                    "lower kafka.transaction_timeout ({:?}) to at most the broker's \
                     transaction.max.timeout.ms (15 min by default)",
                    config.transaction_timeout
                ),
            );
        }
        Err(error) => report.fail(
            AREA,
            format!("cannot initialize a transactional producer: {error}"),
            format!(
                "allow WRITE and DESCRIBE on TransactionalId {}* and IDEMPOTENT_WRITE on the \
                 cluster for this principal; a broker needs transaction.state.log.replication.factor \
                 and .min.isr no higher than its broker count",
                config.transactional_id()
            ),
        ),
    }
}

/// The topic exists in a usable shape (`partitions`, from the metadata), or can be created.
fn topic_check(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: Option<usize>,
    role: &str,
    timeout: Duration,
    report: &mut Report,
) {
    let create = format!(
        "create {topic} (offsets: 1 partition, cleanup.policy=compact) or allow CREATE on it"
    );
    match partitions {
        Some(1) => report.ok(AREA, format!("{role} topic {topic:?} exists")),
        Some(n) if role == "offsets" => report.fail(
            AREA,
            format!("offsets topic {topic:?} has {n} partitions; it must have exactly 1"),
            "delete it or name another with kafka.offsets_topic",
        ),
        Some(n) => report.ok(
            AREA,
            format!("{role} topic {topic:?} exists ({n} partitions)"),
        ),
        None => {
            let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1));
            let options = AdminOptions::new()
                .validate_only(true)
                .request_timeout(Some(timeout));
            // On a blocking thread of the runtime (see `run`), which may wait on a future.
            let created = tokio::runtime::Handle::current()
                .block_on(admin.create_topics([&new_topic], &options));
            match created.as_deref() {
                Ok([Ok(_)] | [Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => report.ok(
                    AREA,
                    format!("{role} topic {topic:?} does not exist yet; it can be created"),
                ),
                Ok(results) => {
                    let reason = results
                        .iter()
                        .find_map(|r| r.as_ref().err().map(|(_, code)| code.to_string()))
                        .unwrap_or_default();
                    report.fail(
                        AREA,
                        format!(
                            "{role} topic {topic:?} does not exist and cannot be created: {reason}"
                        ),
                        create,
                    );
                }
                Err(error) => report.fail(
                    AREA,
                    format!(
                        "{role} topic {topic:?} does not exist and creating it failed: {error}"
                    ),
                    create,
                ),
            }
        }
    }
}
