//! `check`'s list of the topics the relay will produce to that do not exist, where it can know
//! them before the events come: the dead-letter topic, outbox topics without variables, and the
//! topics of the published tables' change events (CDC). An outbox topic chosen per event
//! (`${routedByValue}`) shows only when its first event comes.
//!
//! Missing topics pass when something creates them (the relay with `kafka.topic_creation`, or a
//! broker with `auto.create.topics.enable`), and fail on a broker that does not create topics.
//! The offsets topic is not listed: the relay creates it itself ([`super::kafka`] checks it).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use super::report::Report;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::Session;
use crate::relay::RelayConfig;
use crate::sink::topics::MissingTopic;

const AREA: &str = "kafka";

/// The topics the relay will produce to that are known before the events come (the offsets topic
/// aside). Blocking (reads the publication's tables); on a blocking thread of the runtime.
pub(super) fn needed(config: &RelayConfig, dead_letter_topic: &str) -> BTreeSet<String> {
    let mut needed = BTreeSet::from([dead_letter_topic.to_owned()]);
    for table in config.router.outbox().tables() {
        if let Some(fixed) = table.spec.topic.render(|_| None) {
            needed.insert(fixed);
        }
    }
    needed.extend(cdc_topics(config));
    needed
}

/// Reports the topics of `needed` that `existing` lacks; `auto_create` is the broker's
/// `auto.create.topics.enable`, when it could be read. With topic creation on, the creation of
/// each missing topic is probed (Create, and the configured settings).
pub(super) fn missing(
    config: &RelayConfig,
    admin: &AdminClient<DefaultClientContext>,
    needed: &BTreeSet<String>,
    existing: &HashMap<String, usize>,
    auto_create: Option<bool>,
    timeout: Duration,
    report: &mut Report,
) {
    if needed.is_empty() {
        return;
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|topic| !existing.contains_key(*topic))
        .collect();
    if missing.is_empty() {
        report.ok(
            AREA,
            format!(
                "the topics known before the first event exist ({})",
                needed.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        return;
    }
    let list = missing
        .iter()
        .map(|topic| format!("{topic:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let creation = &config.topic_creation;
    if creation.enabled {
        let creatable = missing
            .iter()
            .filter(|topic| super::acls::create_topic(config, admin, topic, timeout, report))
            .count();
        if creatable < missing.len() {
            return;
        }
        report.ok(
            AREA,
            format!(
                "missing topics {list}: the relay creates them before their first record \
                 (kafka.topic_creation)"
            ),
        );
        return;
    }
    let fate = match creation.missing_topic {
        MissingTopic::Stop => "a record for one stops the relay",
        MissingTopic::DeadLetter => "records for them go to the dead-letter topic",
    };
    let fix = format!(
        "create them (e.g. `kafka-topics --bootstrap-server {} --create --topic {}`), or set \
         [kafka.topic_creation] enabled = true so that the relay creates them",
        config.kafka.bootstrap_servers, missing[0]
    );
    match auto_create {
        Some(true) => report.info(
            AREA,
            format!(
                "missing topics {list}: the broker creates them on their first record \
                 (auto.create.topics.enable), with its default settings"
            ),
        ),
        Some(false) => report.fail(
            AREA,
            format!(
                "missing topics {list}, and the broker does not create topics \
                 (auto.create.topics.enable=false): {fate}"
            ),
            fix,
        ),
        None => report.warn(
            AREA,
            format!(
                "missing topics {list}; whether the broker creates them is unknown (its \
                 auto.create.topics.enable could not be read); if it does not, {fate}"
            ),
            fix,
        ),
    }
}

/// The topics of the change events of the tables the relay's publications publish (outbox tables
/// aside); none when CDC is off or Postgres cannot be asked (its checks say why).
fn cdc_topics(config: &RelayConfig) -> Vec<String> {
    let Some(cdc) = config.router.cdc() else {
        return Vec::new();
    };
    let tables = tokio::runtime::Handle::current().block_on(async {
        let mut session = Session::connect(&config.postgres).await.ok()?;
        session
            .query_params_text(
                "SELECT schemaname, tablename FROM pg_publication_tables \
                 WHERE pubname = ANY($1::name[])",
                &[&array_literal(&config.publications)],
            )
            .await
            .ok()
    });
    let outboxes = config.router.outbox().tables();
    tables
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(schema), Some(table)] => Some((schema.clone(), table.clone())),
            _ => None,
        })
        .filter(|(schema, table)| {
            !outboxes
                .iter()
                .any(|o| &o.schema == schema && &o.table == table)
        })
        .map(|(schema, table)| cdc.table_topic(&schema, &table))
        .collect()
}
