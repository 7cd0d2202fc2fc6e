//! `[kafka.topic_creation]`: topics the relay creates on brokers that do not create them
//! (Debezium's `topic.creation.*`), and what becomes of records whose topic is missing.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::choice::{choice, Choice};
use super::ConfigError;
use crate::sink::topics::{MissingTopic, TopicCreation};

/// `[kafka.topic_creation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicCreationSection {
    /// Create each topic before the first record goes to it, unless it exists.
    pub enabled: bool,
    /// Partitions of a created topic; -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// Replication factor of a created topic; -1: the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// Topic configurations of a created topic (`"cleanup.policy" = "compact"`, ...).
    pub configs: BTreeMap<String, String>,
    /// `stop` or `dead-letter`: what becomes of records whose topic does not exist and is not
    /// created.
    #[serde(deserialize_with = "choice")]
    pub missing_topic: MissingTopic,
}

impl Default for TopicCreationSection {
    fn default() -> Self {
        let creation = TopicCreation::default();
        Self {
            enabled: creation.enabled,
            partitions: creation.partitions,
            replication_factor: creation.replication_factor,
            configs: creation.configs,
            missing_topic: creation.missing_topic,
        }
    }
}

impl Choice for MissingTopic {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("stop", Self::Stop), ("dead-letter", Self::DeadLetter)];
}

impl TopicCreationSection {
    /// The settings, validated.
    pub(super) fn settings(&self) -> Result<TopicCreation, ConfigError> {
        for (key, value) in [
            ("kafka.topic_creation.partitions", self.partitions),
            (
                "kafka.topic_creation.replication_factor",
                self.replication_factor,
            ),
        ] {
            if value == 0 || value < -1 {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("{value} is neither at least 1 nor -1 (the broker's default)"),
                });
            }
        }
        Ok(TopicCreation {
            enabled: self.enabled,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            configs: self.configs.clone(),
            missing_topic: self.missing_topic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_replication_are_positive_or_the_brokers_default() {
        let section = |partitions, replication_factor| TopicCreationSection {
            partitions,
            replication_factor,
            ..TopicCreationSection::default()
        };
        assert!(section(-1, -1).settings().is_ok());
        assert!(section(6, 3).settings().is_ok());
        for (partitions, replication, key) in [
            (0, 1, "kafka.topic_creation.partitions"),
            (3, -2, "kafka.topic_creation.replication_factor"),
        ] {
            let error = section(partitions, replication)
                .settings()
                .expect_err("invalid");
            assert!(error.to_string().contains(key), "{error}");
        }
    }
}
