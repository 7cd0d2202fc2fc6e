//! Topics on brokers that do not create them (`auto.create.topics.enable=false`: Confluent Cloud,
//! many MSK clusters): the relay creates a topic it is about to produce to, with configured
//! settings (Debezium's `topic.creation.*`), and says what becomes of records whose topic does
//! not exist and cannot be created.
//!
//! Without creation the relay does not look a topic up before producing (a broker that
//! auto-creates topics would answer "missing" for a topic it creates on the first record);
//! the producer's delivery report names a topic that does not exist
//! ([`crate::sink::kafka::SinkError::UnknownTopic`]), and the policy applies from there.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sink::kafka::KafkaSettings;
use crate::sink::limits::admin_client;

/// `[kafka.topic_creation]`: whether and how the relay creates the topics it produces to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCreation {
    /// Create a topic before the first record goes to it (off: the broker must have it, or
    /// create it itself).
    pub enabled: bool,
    /// Partitions of a created topic; -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// Replication factor of a created topic; -1: the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// Topic configurations of a created topic (`cleanup.policy`, `retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
    /// What becomes of records whose topic does not exist and is not created.
    pub missing_topic: MissingTopic,
}

impl Default for TopicCreation {
    fn default() -> Self {
        Self {
            enabled: false,
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            missing_topic: MissingTopic::Stop,
        }
    }
}

impl TopicCreation {
    /// The creation request of `topic` with these settings.
    pub fn new_topic<'a>(&'a self, topic: &'a str) -> NewTopic<'a> {
        let mut new_topic = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        for (key, value) in &self.configs {
            new_topic = new_topic.set(key, value);
        }
        new_topic
    }
}

/// `kafka.topic_creation.missing_topic` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingTopic {
    /// The relay stops, naming the topic and the broker's reason: nothing is published out of
    /// order or elsewhere until an operator creates it.
    Stop,
    /// The records go to the dead-letter topic (reason `missing-topic`) and the relay goes on.
    DeadLetter,
}

/// A topic the relay needs that it could not make sure of.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic does not exist and the broker refused to create it.
    #[error(
        "topic {topic:?} does not exist and cannot be created: {reason}; create it, grant the \
         relay's principal CREATE on it, or set kafka.topic_creation.missing_topic = \
         \"dead-letter\""
    )]
    Missing {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// The broker did not answer the request.
    #[error("creating topic {topic:?} failed: {source}")]
    Unanswered {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
}

impl TopicError {
    /// Whether a new attempt can succeed: the broker may answer later; a refusal stays.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unanswered { .. } => true,
            Self::Missing { .. } => false,
        }
    }
}

/// Makes sure of each topic once: created with [`TopicCreation`]'s settings unless it exists.
#[derive(Debug)]
pub struct Topics {
    creation: TopicCreation,
    admin: Option<Arc<AdminClient<DefaultClientContext>>>,
    /// Topics known to exist. Bounded: emptied at [`Topics::CAPACITY`] (asking again costs one
    /// request per topic).
    known: HashSet<String>,
    timeout: Duration,
}

impl Topics {
    /// Topics remembered at most.
    pub const CAPACITY: usize = 10_000;

    /// Topics of the broker of `settings`; requests wait up to `timeout`.
    pub fn new(
        settings: &KafkaSettings,
        creation: TopicCreation,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let admin = if creation.enabled {
            Some(Arc::new(admin_client(settings)?))
        } else {
            None
        };
        Ok(Self {
            creation,
            admin,
            known: HashSet::new(),
            timeout,
        })
    }

    /// What becomes of records whose topic is missing.
    pub fn missing_topic(&self) -> MissingTopic {
        self.creation.missing_topic
    }

    /// Makes sure `topic` exists, creating it when creation is on (a topic that exists already,
    /// or that another client creates at the same moment, is fine). With creation off, nothing is
    /// asked: producing tells.
    pub async fn ensure(&mut self, topic: &str) -> Result<(), TopicError> {
        let Some(admin) = self.admin.clone() else {
            return Ok(());
        };
        if self.known.contains(topic) {
            return Ok(());
        }
        let creation = &self.creation;
        let new_topic = creation.new_topic(topic);
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let unanswered = |source| TopicError::Unanswered {
            topic: topic.to_owned(),
            source,
        };
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(unanswered)?;
        match results.first() {
            Some(Ok(_)) => {
                tracing::info!(
                    topic,
                    partitions = creation.partitions,
                    replication_factor = creation.replication_factor,
                    configs = ?creation.configs,
                    "created topic"
                );
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
            Some(Err((_, code))) => {
                // Not allowed to create it, perhaps, while it exists all the same.
                if !exists(admin, topic, self.timeout)
                    .await
                    .map_err(unanswered)?
                {
                    return Err(TopicError::Missing {
                        topic: topic.to_owned(),
                        reason: code.to_string(),
                    });
                }
            }
            None => {
                return Err(TopicError::Missing {
                    topic: topic.to_owned(),
                    reason: "the broker answered nothing for it".into(),
                })
            }
        }
        if self.known.len() >= Self::CAPACITY {
            self.known.clear();
        }
        self.known.insert(topic.to_owned());
        Ok(())
    }
}

/// Whether `topic` exists, from the metadata (the admin client never makes the broker create it).
async fn exists(
    admin: Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<bool, KafkaError> {
    let name = topic.to_owned();
    let metadata =
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), timeout))
            .await
            .map_err(|_| KafkaError::Canceled)??;
    Ok(metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none()))
}
