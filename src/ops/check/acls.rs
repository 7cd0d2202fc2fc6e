//! The ACLs the relay's principal needs on topics and groups, each probed ([`super::probes`]),
//! and the `kafka-acls` command that grants what a failed probe showed it lacks: the fix, spelled
//! out with the principal, the operation, the resource and its pattern. (The transactional id's
//! grant is probed by initializing a transactional producer, in [`super::kafka`].)
//!
//! What is probed is what README's "Kafka security" section lists: Write (which implies Describe)
//! on every topic the relay produces to that `check` knows of, Read, Create and DescribeConfigs on
//! the offsets topic, Describe on the checkpoint reader's group, and Create on the topics the
//! relay creates ([`super::topics`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use super::probes::{self, Refused};
use super::report::Report;
use crate::relay::RelayConfig;
use crate::sink::kafka::KafkaSettings;
use crate::sink::offsets::READER_GROUP;

const AREA: &str = "kafka";

/// Write on each of `topics` that exists (`listed` in the metadata of all topics, or found by
/// name); a topic the metadata leaves out is looked up by name, and one the principal may not
/// describe fails. Returns the topics whose existence is so hidden: not known to be missing.
pub(super) fn topics(
    config: &RelayConfig,
    topics: &BTreeSet<String>,
    listed: &HashMap<String, usize>,
    timeout: Duration,
    report: &mut Report,
) -> BTreeSet<String> {
    let kafka = &config.kafka;
    let mut hidden = BTreeSet::new();
    let mut writable = Vec::new();
    for topic in topics {
        let exists = listed.contains_key(topic)
            || match probes::describe_topic(kafka, topic, timeout) {
                Ok(exists) => exists,
                Err(refused) => {
                    hidden.insert(topic.clone());
                    refusal(
                        kafka,
                        report,
                        &format!("describe topic {topic:?}"),
                        refused,
                        &["Write", "Describe"],
                        &format!("--topic {topic}"),
                    );
                    continue;
                }
            };
        // A missing topic is the topic checks' (created by the relay, or reported missing).
        if !exists {
            continue;
        }
        match probes::write_topic(kafka, topic, timeout) {
            Ok(()) => writable.push(format!("{topic:?}")),
            Err(refused) => refusal(
                kafka,
                report,
                &format!("write to topic {topic:?}"),
                refused,
                &["Write", "Describe"],
                &format!("--topic {topic}"),
            ),
        }
    }
    if !writable.is_empty() {
        report.ok(
            AREA,
            format!("the principal may write to topics {}", writable.join(", ")),
        );
    }
    hidden
}

/// What the relay does with its offsets topic besides writing it: create it at every start (an
/// existing one too), verify that it is compacted, and read the checkpoint back through a
/// consumer with a group id. `exists`: whether the topic exists (Read and the group are probed
/// only then: a first start finds nothing to read).
pub(super) fn offsets_topic(
    config: &RelayConfig,
    admin: &AdminClient<DefaultClientContext>,
    exists: bool,
    timeout: Duration,
    report: &mut Report,
) {
    let (kafka, topic) = (&config.kafka, config.offsets_topic.as_str());
    let resource = format!("--topic {topic}");
    let mut granted = Vec::new();
    let new_topic =
        NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    match probes::create_topic(admin, &new_topic, timeout) {
        Ok(()) => granted.push("create"),
        Err(refused) => refusal(
            kafka,
            report,
            &format!("create the offsets topic {topic:?} (the relay asks at every start)"),
            refused,
            &["Create"],
            &resource,
        ),
    }
    if exists {
        match probes::read_topic(kafka, topic, READER_GROUP, timeout) {
            Ok(()) => granted.push("read"),
            Err(refused) => refusal(
                kafka,
                report,
                &format!("read offsets topic {topic:?} (the relay reads its checkpoint back)"),
                refused,
                &["Read"],
                &resource,
            ),
        }
        match probes::describe_group(kafka, READER_GROUP, topic, timeout) {
            Ok(()) => report.ok(
                AREA,
                format!("the principal may describe group {READER_GROUP:?} (the checkpoint reader's)"),
            ),
            Err(refused) => refusal(
                kafka,
                report,
                &format!("describe group {READER_GROUP:?} (the checkpoint reader's consumer looks up its coordinator)"),
                refused,
                &["Describe"],
                &format!("--group {READER_GROUP}"),
            ),
        }
    }
    let configured = "describe the configuration of";
    match (probes::topic_configs(admin, topic, timeout), exists) {
        // A topic that does not exist yet: only the grant tells (authorized, the broker answers
        // UNKNOWN_TOPIC_OR_PARTITION); the relay creates it compacted.
        (Ok(_) | Err(Refused::Unclear(_)), false) => granted.push(configured),
        (Ok(Some(policy)), true) if policy == "compact" => granted.push(configured),
        (Ok(Some(policy)), true) => report.fail(
            AREA,
            format!("offsets topic {topic:?} has cleanup.policy={policy:?}; it must be \"compact\""),
            format!(
                "kafka-configs.sh --bootstrap-server {} --command-config admin.properties --alter \
                 --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact, or \
                 name another topic with kafka.offsets_topic",
                kafka.bootstrap_servers
            ),
        ),
        (Ok(None), true) => refusal(
            kafka,
            report,
            &format!("read the cleanup.policy of offsets topic {topic:?}"),
            Refused::Denied("the broker left it out".into()),
            &["DescribeConfigs"],
            &resource,
        ),
        (Err(refused), _) => refusal(
            kafka,
            report,
            &format!("describe the configuration of offsets topic {topic:?} (to verify that it is compacted)"),
            refused,
            &["DescribeConfigs"],
            &resource,
        ),
    }
    if !granted.is_empty() {
        report.ok(
            AREA,
            format!(
                "the principal may {} offsets topic {topic:?}",
                granted.join(", ")
            ),
        );
    }
}

/// Create on `topic`, with the settings the relay creates it with (`[kafka.topic_creation]`).
/// Whether it passed.
pub(super) fn create_topic(
    config: &RelayConfig,
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    timeout: Duration,
    report: &mut Report,
) -> bool {
    let new_topic = config.topic_creation.new_topic(topic);
    match probes::create_topic(admin, &new_topic, timeout) {
        Ok(()) => true,
        Err(refused) => {
            refusal(
                &config.kafka,
                report,
                &format!("create topic {topic:?} (kafka.topic_creation)"),
                refused,
                &["Create"],
                &format!("--topic {topic}"),
            );
            false
        }
    }
}

/// Reports a probe that did not pass: a FAIL with the grant when the broker denied it, a WARN
/// with the same grant when the probe could not tell (the grant is harmless if held).
fn refusal(
    kafka: &KafkaSettings,
    report: &mut Report,
    action: &str,
    refused: Refused,
    operations: &[&str],
    resource: &str,
) {
    let fix = grant(kafka, operations, resource);
    match refused {
        Refused::Denied(reason) => {
            report.fail(
                AREA,
                format!("the principal may not {action}: {reason}"),
                fix,
            );
        }
        Refused::Unclear(reason) => report.warn(
            AREA,
            format!("could not verify that the principal may {action}: {reason}"),
            fix,
        ),
    }
}

/// The principal the broker sees: `User:<sasl.username>` for PLAIN and SCRAM; for a client
/// certificate or a token the broker's mapping decides, so a placeholder says so.
fn principal(kafka: &KafkaSettings) -> String {
    match kafka.properties.get("sasl.username") {
        Some(user) => format!("User:{user}"),
        None => "User:<the certificate's or token's principal>".into(),
    }
}

/// `kafka-acls.sh … --add --allow-principal P --operation O… <resource>` for this relay's broker,
/// `resource` being AclCommand's resource options (`--transactional-id outboxd-orders
/// --resource-pattern-type prefixed`).
pub(super) fn grant(kafka: &KafkaSettings, operations: &[&str], resource: &str) -> String {
    let operations: String = operations
        .iter()
        .map(|operation| format!(" --operation {operation}"))
        .collect();
    format!(
        "kafka-acls.sh --bootstrap-server {} --command-config admin.properties --add \
         --allow-principal {}{operations} {resource}",
        kafka.bootstrap_servers,
        principal(kafka)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_the_principal_operations_and_resource() {
        let mut kafka = KafkaSettings::new("broker:9093");
        kafka
            .properties
            .insert("sasl.username".into(), "outboxd-orders".into());
        assert_eq!(
            grant(
                &kafka,
                &["Write", "Describe"],
                "--transactional-id outboxd-orders --resource-pattern-type prefixed"
            ),
            "kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties \
             --add --allow-principal User:outboxd-orders --operation Write --operation Describe \
             --transactional-id outboxd-orders --resource-pattern-type prefixed"
        );
    }
}
