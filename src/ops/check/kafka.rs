//! `check`'s Kafka side: a broker answers, transactions work, the offsets topic exists in a usable
//! shape or can be created, the topics the relay needs exist or will be ([`super::topics`]), the
//! principal holds the ACLs the relay needs ([`super::acls`]), and where the relay's checkpoint
//! stands.
//!
//! Nothing is created or written: topics are looked up in the metadata of all topics (a metadata
//! request naming a missing topic would make a broker with `auto.create.topics.enable` create it
//! with its defaults — not compacted, `num.partitions` partitions — which `run` then refuses;
//! only a topic that list leaves out is asked for by name, with `allow.auto.create.topics=false`),
//! their creation is only validated (`validate_only`), and the ACL probes write nothing
//! ([`super::probes`]).

use std::collections::HashMap;
use std::time::Duration;

use super::report::Report;
use super::{acls, connect};
use crate::checkpoint::StoredCheckpoint;
use crate::ops::status::PendingCheckpoint;
use crate::ops::{admin_client, read_checkpoint};
use crate::relay::RelayConfig;
use crate::sink::kafka::{SinkError, TransactionalProducer};
use crate::sink::limits::{BrokerLimits, TopicLimits, BROKER_GRANT};
use crate::sink::offsets::READER_GROUP;

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
    let topics: HashMap<String, usize> = match connect::metadata(&config.kafka, timeout) {
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
        Err(unreachable) => {
            report.fail(AREA, unreachable.problem, unreachable.fix);
            report.skip(AREA, "the other Kafka checks need a broker");
            return unreadable(report);
        }
    };
    let broker = limits(config, dead_letter_topic, timeout, &mut report);
    let timeout_too_long = broker
        .transaction_max_timeout
        .is_some_and(|max| config.transaction_timeout > max);
    if !timeout_too_long {
        transactions(config, timeout, &mut report);
    }
    let needed = super::topics::needed(config, dead_letter_topic);
    let mut written = needed.clone();
    written.insert(config.offsets_topic.clone());
    let hidden = acls::topics(config, &written, &topics, timeout, &mut report);
    if !hidden.contains(&config.offsets_topic) {
        let partitions = topics.get(&config.offsets_topic).copied();
        offsets_topic_shape(&config.offsets_topic, partitions, &mut report);
        acls::offsets_topic(config, &admin, partitions.is_some(), timeout, &mut report);
    }
    // A topic hidden from the principal has its FAIL already, and is not known to be missing.
    let visible = needed.difference(&hidden).cloned().collect();
    super::topics::missing(
        config,
        &admin,
        &visible,
        &topics,
        broker.auto_create_topics,
        timeout,
        &mut report,
    );
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
        // Not a missing grant: reading stopped at a transaction that only the broker ends.
        Err(error) => match PendingCheckpoint::from_error(&error, config.transaction_timeout) {
            Some(pending) => {
                report.warn(
                    AREA,
                    format!(
                        "cannot read the checkpoint of relay {:?} yet: {}",
                        config.name,
                        pending.what()
                    ),
                    format!(
                        "nothing to change: {}; run check again then",
                        pending.ends()
                    ),
                );
                None
            }
            None => {
                report.fail(
                    AREA,
                    format!(
                        "cannot read the checkpoint of relay {:?}: {error:#}",
                        config.name
                    ),
                    format!(
                        "the principal needs Read on the offsets topic and Describe on group \
                         {READER_GROUP} (see the ACL checks above)"
                    ),
                );
                None
            }
        },
    };
    KafkaFacts { report, checkpoint }
}

/// The broker's limits, and the dead-letter topic's: what `run` holds records to. A
/// `kafka.transaction_timeout` above the broker's maximum fails (every producer would be refused);
/// a `kafka.max_record_bytes` above the broker's record limit warns (larger records become dead
/// letters); limits the principal may not read warn, naming the grant.
fn limits(
    config: &RelayConfig,
    dead_letter_topic: &str,
    timeout: Duration,
    report: &mut Report,
) -> BrokerLimits {
    let broker = match BrokerLimits::read(&config.kafka, timeout) {
        Ok(broker) => broker,
        Err(error) => {
            report.warn(
                AREA,
                format!("cannot read the broker's limits: {error}"),
                "check that the broker answers DescribeConfigs requests",
            );
            return BrokerLimits::default();
        }
    };
    let max_record_bytes = config.router.max_record_bytes();
    match broker.message_max_bytes {
        Some(max) if max_record_bytes > max => report.warn(
            AREA,
            format!(
                "kafka.max_record_bytes ({max_record_bytes}) is above the broker's \
                 message.max.bytes ({max}): records over {max} bytes go to the dead-letter topic"
            ),
            format!("lower kafka.max_record_bytes to at most {max}, or raise the broker's message.max.bytes"),
        ),
        Some(max) => report.ok(
            AREA,
            format!("the broker takes records up to {max} bytes (message.max.bytes); kafka.max_record_bytes is {max_record_bytes}"),
        ),
        None => report.warn(
            AREA,
            "cannot read the broker's message.max.bytes and transaction.max.timeout.ms \
             (DescribeConfigs on the cluster not granted); records are held to \
             kafka.max_record_bytes, and one the broker refuses goes to the dead-letter topic in \
             a retried transaction",
            BROKER_GRANT,
        ),
    }
    match broker.transaction_max_timeout {
        Some(max) if config.transaction_timeout > max => report.fail(
            AREA,
            SinkError::TransactionTimeout {
                configured: config.transaction_timeout,
                broker_max: Some(max),
            }
            .to_string(),
            format!(
                "set kafka.transaction_timeout to at most {}s",
                max.as_secs()
            ),
        ),
        Some(max) => report.ok(
            AREA,
            format!(
                "kafka.transaction_timeout ({:?}) is within the broker's \
                 transaction.max.timeout.ms ({} ms)",
                config.transaction_timeout,
                max.as_millis()
            ),
        ),
        None => {}
    }
    let mut topics = TopicLimits::new(&config.kafka, max_record_bytes, broker, timeout);
    let limit = tokio::runtime::Handle::current().block_on(topics.learn(dead_letter_topic));
    report.info(
        AREA,
        format!(
            "records up to {limit} bytes fit the dead-letter topic {dead_letter_topic:?}; the \
             limit of each event topic is read when the relay first routes to it"
        ),
    );
    broker
}

/// A transactional producer can be initialized, under an id of its own so that a live relay is
/// not fenced.
fn transactions(config: &RelayConfig, timeout: Duration, report: &mut Report) {
    let check_id = format!("{}.check", config.transactional_id());
    match TransactionalProducer::start(&config.kafka, &check_id, config.transaction_timeout, timeout)
    {
        Ok(_) => report.ok(AREA, format!("transactions work (initialized {check_id:?})")),
        Err(error @ SinkError::TransactionTimeout { .. }) => report.fail(
            AREA,
            error.to_string(),
            "lower kafka.transaction_timeout to at most the broker's transaction.max.timeout.ms",
        ),
        // librdkafka's words for the broker's TransactionalIdAuthorizationFailed (the code
        // itself may be hidden behind the producer's generic fatal error).
        Err(error) if error.to_string().contains("Transactional Id authorization failed") => {
            report.fail(
                AREA,
                format!("cannot initialize a transactional producer: {error}"),
                acls::grant(
                    &config.kafka,
                    &["Write", "Describe"],
                    &format!(
                        "--transactional-id {} --resource-pattern-type prefixed",
                        config.transactional_id()
                    ),
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

/// The offsets topic has one partition (`partitions`, from the metadata), or does not exist yet
/// (the relay creates it; [`acls::offsets_topic`] probes that it may).
fn offsets_topic_shape(topic: &str, partitions: Option<usize>, report: &mut Report) {
    match partitions {
        Some(1) => report.ok(AREA, format!("offsets topic {topic:?} exists")),
        Some(n) => report.fail(
            AREA,
            format!("offsets topic {topic:?} has {n} partitions; it must have exactly 1"),
            "delete it or name another with kafka.offsets_topic",
        ),
        None => report.info(
            AREA,
            format!(
                "offsets topic {topic:?} does not exist yet; the relay creates it (1 partition, \
                 cleanup.policy=compact)"
            ),
        ),
    }
}
