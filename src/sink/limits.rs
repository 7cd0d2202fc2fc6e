//! What the broker accepts, read from its configuration (DescribeConfigs) instead of learned from
//! failures: the largest record batch (the broker's `message.max.bytes`, each topic's
//! `max.message.bytes`) and the longest transaction (`transaction.max.timeout.ms`).
//!
//! A record over its topic's limit fails its whole Kafka transaction, and the same record fails
//! the retry: the relay must know the limit before it produces, so the router can make such a
//! record a dead letter instead. Topics are chosen per event, so a topic's limit is read when the
//! topic is first seen and kept ([`TopicLimits`]).
//!
//! Reading another resource's configuration needs the DescribeConfigs ACL on it. Without it the
//! relay goes on with `kafka.max_record_bytes` (a record the broker still refuses becomes a dead
//! letter in a retried transaction) and says once which grant would let it read the limit.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sink::kafka::KafkaSettings;

/// Broker settings the relay depends on; `None` where the broker did not say (not granted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerLimits {
    /// `message.max.bytes`: the largest record batch the broker takes, and the default of every
    /// topic's `max.message.bytes`.
    pub message_max_bytes: Option<usize>,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub transaction_max_timeout: Option<Duration>,
    /// `auto.create.topics.enable`: whether the broker creates a topic on its first record.
    pub auto_create_topics: Option<bool>,
}

/// The broker's configuration could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// No answer, or the broker refused the request.
    #[error("reading the broker's configuration ({action}) failed: {source}")]
    Kafka {
        /// What was tried.
        action: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
}

impl LimitsError {
    /// Whether asking again can succeed: the broker may answer later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kafka { .. } => true,
        }
    }
}

/// How to grant what reading a broker's configuration needs, for messages.
pub const BROKER_GRANT: &str = "grant the relay's principal DescribeConfigs on the cluster \
     (`kafka-acls --add --allow-principal User:<relay> --operation DescribeConfigs --cluster`)";

/// The same for a topic.
pub fn topic_grant(topic: &str) -> String {
    format!(
        "grant the relay's principal DescribeConfigs on the topic (`kafka-acls --add \
         --allow-principal User:<relay> --operation DescribeConfigs --topic {topic}`)"
    )
}

/// An admin client that never makes a broker create a topic.
pub fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    settings
        .client_config(&[("allow.auto.create.topics", "false")])
        .create()
}

impl BrokerLimits {
    /// Reads the limits of the broker that answers first. Blocking (the metadata request); call it
    /// on a blocking thread of the runtime, whose handle drives the admin request.
    pub fn read(settings: &KafkaSettings, timeout: Duration) -> Result<Self, LimitsError> {
        let error = |action| move |source| LimitsError::Kafka { action, source };
        let admin = admin_client(settings).map_err(error("creating an admin client"))?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(error("reading metadata"))?;
        // A broker's id from the metadata (the bootstrap connection's own id is not one yet).
        let broker = metadata
            .brokers()
            .first()
            .map_or(-1, rdkafka::metadata::MetadataBroker::id);
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let described = tokio::runtime::Handle::current()
            .block_on(admin.describe_configs([&ResourceSpecifier::Broker(broker)], &options));
        let denied = |code| code == RDKafkaErrorCode::ClusterAuthorizationFailed;
        let described = match described {
            Ok(described) => described,
            // Not granted: the limits stay unknown (the caller says so, naming the grant).
            Err(KafkaError::AdminOp(code)) if denied(code) => Vec::new(),
            Err(source) => return Err(error("describing the broker")(source)),
        };
        let mut limits = Self::default();
        for result in described {
            let resource = match result {
                Ok(resource) => resource,
                Err(code) if denied(code) => continue,
                Err(code) => return Err(error("describing the broker")(KafkaError::AdminOp(code))),
            };
            let value = |name| {
                resource
                    .get(name)
                    .and_then(|entry| entry.value.as_deref())
                    .and_then(|value| value.parse::<u64>().ok())
            };
            limits.message_max_bytes = value("message.max.bytes")
                .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
            limits.transaction_max_timeout =
                value("transaction.max.timeout.ms").map(Duration::from_millis);
            limits.auto_create_topics = resource
                .get("auto.create.topics.enable")
                .and_then(|entry| entry.value.as_deref())
                .map(|value| value == "true");
        }
        Ok(limits)
    }
}

/// The largest record each topic takes, read when a topic is first seen: the smallest of
/// `kafka.max_record_bytes`, the broker's `message.max.bytes` and the topic's `max.message.bytes`.
#[derive(Debug)]
pub struct TopicLimits {
    admin: Option<AdminClient<DefaultClientContext>>,
    /// `kafka.max_record_bytes` capped by the broker's `message.max.bytes`: the limit of a topic
    /// whose own cannot be read (or that does not exist yet, and gets the broker's default).
    default: usize,
    /// What was learned. Bounded: emptied when it reaches [`TopicLimits::CAPACITY`] (topic
    /// names come from events; asking again costs one request per topic).
    known: HashMap<String, usize>,
    /// Whether the relay was refused a topic's configuration already (said once).
    refused: bool,
    timeout: Duration,
}

impl TopicLimits {
    /// Topics remembered at most.
    pub const CAPACITY: usize = 10_000;

    /// Limits for the broker of `settings`, where no record exceeds `max_record_bytes` nor the
    /// broker's `message.max.bytes` (when known).
    pub fn new(
        settings: &KafkaSettings,
        max_record_bytes: usize,
        broker: BrokerLimits,
        timeout: Duration,
    ) -> Self {
        let admin = admin_client(settings)
            .inspect_err(|error| {
                tracing::warn!(error = %error, "cannot read topic limits: no admin client");
            })
            .ok();
        Self {
            admin,
            default: broker
                .message_max_bytes
                .map_or(max_record_bytes, |broker| broker.min(max_record_bytes)),
            known: HashMap::new(),
            refused: false,
            timeout,
        }
    }

    /// The limit of `topic`, once learned.
    pub fn get(&self, topic: &str) -> Option<usize> {
        self.known.get(topic).copied()
    }

    /// The limit of `topic`: learned now unless known. Never fails: a limit that cannot be read
    /// is the default (said once, with the grant that would let it be read).
    pub async fn learn(&mut self, topic: &str) -> usize {
        if let Some(limit) = self.get(topic) {
            return limit;
        }
        let limit = match self.read(topic).await {
            Ok(Some(bytes)) => bytes.min(self.default),
            Ok(None) => self.default,
            Err(unreadable) => {
                if !std::mem::replace(&mut self.refused, true) {
                    tracing::warn!(
                        topic,
                        limit = self.default,
                        "cannot read the topic's max.message.bytes ({unreadable}); records are \
                         held to kafka.max_record_bytes and the broker's limit, and one the \
                         topic still refuses goes to the dead-letter topic in a retried \
                         transaction; to check before producing, {}",
                        topic_grant(topic)
                    );
                }
                self.default
            }
        };
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(topic.to_owned(), limit);
        limit
    }

    /// The topic's `max.message.bytes`; `None` for a topic that does not exist yet (created on
    /// first use with the broker's default).
    async fn read(&self, topic: &str) -> Result<Option<usize>, String> {
        let admin = self.admin.as_ref().ok_or("no admin client")?;
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|error| error.to_string())?;
        let Some(result) = described.into_iter().next() else {
            return Err("the broker described nothing".into());
        };
        match result {
            // Kafka 4 describes a topic that does not exist yet as one without entries.
            Ok(resource) if resource.entries.is_empty() => Ok(None),
            Ok(resource) => resource
                .get("max.message.bytes")
                .and_then(|entry| entry.value.as_deref())
                .and_then(|value| value.parse::<usize>().ok())
                .map(Some)
                .ok_or_else(|| "max.message.bytes not described".into()),
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            Err(code) => Err(code.to_string()),
        }
    }
}
