//! Typed configuration: a TOML file, overridden by `OUTBOXD__SECTION__KEY` environment variables.
//!
//! Every key, its default and its meaning are documented in `config/outboxd.toml`. Unknown keys are
//! errors (a typo must not silently fall back to a default), and so are values out of range.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pg::wire::ConnectOptions;
use crate::relay::RelayConfig;
use crate::route::outbox::{OutboxRouter, OutboxTable};
use crate::sink::batch::BatchLimits;
use crate::sink::kafka::KafkaSettings;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[relay]`.
    #[serde(default)]
    pub relay: RelaySection,
    /// `[postgres]`.
    pub postgres: PostgresSection,
    /// `[outbox]`.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// `[kafka]`.
    pub kafka: KafkaSection,
    /// `[batch]`.
    #[serde(default)]
    pub batch: BatchSection,
}

/// `[relay]`: identity and pacing of this relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Relay name; the checkpoint key and the transactional id `outboxd-<name>`.
    pub name: String,
    /// Interval of standby status updates to the walsender.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Minimum interval between confirmations of an idle slot.
    #[serde(with = "humantime_serde")]
    pub idle_confirm_interval: Duration,
    /// Inputs buffered between the replication reader and the Kafka sink.
    pub channel_capacity: usize,
    /// First wait before a new attempt after a transient failure.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            name: "outboxd".into(),
            status_interval: Duration::from_secs(1),
            idle_confirm_interval: Duration::from_secs(1),
            channel_capacity: 4096,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `[postgres]`: the database and its replication slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// libpq-style URL (`postgresql://user@host:port/db?sslmode=verify-full`).
    pub url: String,
    /// A file whose first line is the password (instead of one in the URL).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Replication slot name.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// Publications the slot streams.
    #[serde(default = "default_publications")]
    pub publications: Vec<String>,
}

fn default_slot() -> String {
    "outboxd".into()
}

fn default_publications() -> Vec<String> {
    vec!["outboxd".into()]
}

/// `[outbox]`: which tables and messages are outbox events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Outbox tables as `schema.table`.
    pub tables: Vec<String>,
    /// Prefix of `pg_logical_emit_message` calls that carry outbox events.
    pub message_prefix: String,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            tables: vec!["public.outbox".into()],
            message_prefix: "outbox".into(),
        }
    }
}

/// `[kafka]`: the broker and the transactional producer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The compacted topic holding checkpoints.
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// The producer's `transaction.timeout.ms`; the broker caps it (15 min by default).
    #[serde(default = "default_transaction_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// How long a blocking Kafka call may wait.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// librdkafka properties passed through as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_offsets_topic() -> String {
    "outboxd.offsets".into()
}

fn default_transaction_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `[batch]`: when a Kafka transaction closes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Events after which the Kafka transaction closes at the next Postgres commit.
    pub max_events: u64,
    /// Bytes after which the Kafka transaction closes at the next Postgres commit.
    pub max_bytes: u64,
    /// How long to wait at a commit boundary for more before committing.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Age after which the Kafka transaction closes at the next Postgres commit.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for BatchSection {
    fn default() -> Self {
        let limits = BatchLimits::default();
        Self {
            max_events: limits.max_events,
            max_bytes: limits.max_bytes,
            linger: limits.linger,
            max_age: limits.max_age,
        }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment does not parse into the settings.
    #[error("configuration {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key).
        source: ::config::ConfigError,
    },
    /// A value parses but is not allowed.
    #[error("configuration key {key}: {problem}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// Why, and what is allowed.
        problem: String,
    },
    /// A secret file cannot be read.
    #[error("configuration key {key}: cannot read {path}: {source}")]
    SecretFile {
        /// `section.key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Settings {
    /// Loads `path`, then the `OUTBOXD__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Loads `path` with overrides from `env` instead of the process environment when given.
    fn load_with_env(
        path: &Path,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let load = |source| ConfigError::Load {
            path: path.to_owned(),
            source,
        };
        ::config::Config::builder()
            .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
            .add_source(
                ::config::Environment::with_prefix("OUTBOXD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("postgres.publications")
                    .with_list_parse_key("outbox.tables")
                    .try_parsing(true)
                    .source(env),
            )
            .build()
            .map_err(load)?
            .try_deserialize()
            .map_err(load)
    }

    /// The relay's configuration, validated.
    pub fn relay_config(&self) -> Result<RelayConfig, ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid { key, problem };
        let mut postgres: ConnectOptions = self
            .postgres
            .url
            .parse()
            .map_err(|e| invalid("postgres.url", format!("{e}")))?;
        if let Some(path) = &self.postgres.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "postgres.password_file",
                path: path.clone(),
                source,
            })?;
            postgres.password = Some(text.lines().next().unwrap_or_default().to_owned());
        }
        let tables = self
            .outbox
            .tables
            .iter()
            .map(|name| match name.split_once('.') {
                Some((schema, table)) if !schema.is_empty() && !table.is_empty() => {
                    Ok(OutboxTable {
                        schema: schema.into(),
                        table: table.into(),
                    })
                }
                _ => Err(invalid(
                    "outbox.tables",
                    format!("{name:?} is not schema.table (e.g. public.outbox)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.relay.channel_capacity == 0 {
            return Err(invalid(
                "relay.channel_capacity",
                "must be at least 1".into(),
            ));
        }
        if self.batch.max_age >= self.kafka.transaction_timeout {
            return Err(invalid(
                "batch.max_age",
                format!(
                    "must be below kafka.transaction_timeout ({:?}); a third of it is a good value",
                    self.kafka.transaction_timeout
                ),
            ));
        }
        Ok(RelayConfig {
            name: self.relay.name.clone(),
            postgres,
            slot: self.postgres.slot.clone(),
            publications: self.postgres.publications.clone(),
            router: OutboxRouter::new(tables, self.outbox.message_prefix.clone()),
            kafka: KafkaSettings {
                bootstrap_servers: self.kafka.bootstrap_servers.clone(),
                properties: self.kafka.properties.clone(),
            },
            offsets_topic: self.kafka.offsets_topic.clone(),
            batch: BatchLimits {
                max_events: self.batch.max_events,
                max_bytes: self.batch.max_bytes,
                linger: self.batch.linger,
                max_age: self.batch.max_age,
            },
            transaction_timeout: self.kafka.transaction_timeout,
            kafka_call_timeout: self.kafka.call_timeout,
            status_interval: self.relay.status_interval,
            idle_confirm_interval: self.relay.idle_confirm_interval,
            channel_capacity: self.relay.channel_capacity,
            backoff: (self.relay.backoff_min, self.relay.backoff_max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    #[test]
    fn the_documented_example_is_valid_and_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/outboxd.toml");
        let settings = Settings::load(&path).expect("example loads");
        let relay = settings.relay_config().expect("example validates");
        let defaults = RelaySection::default();
        assert_eq!(relay.name, defaults.name);
        assert_eq!(relay.status_interval, defaults.status_interval);
        assert_eq!(relay.batch, BatchLimits::default());
        assert_eq!(relay.offsets_topic, default_offsets_topic());
        assert_eq!(relay.transaction_timeout, default_transaction_timeout());
        assert_eq!(relay.slot, default_slot());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\nlinger = \"1s\"\n",
        );
        let error = Settings::load(file.path()).expect_err("unknown key refused");
        assert!(error.to_string().contains("linger"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[outbox]\ntables = [\"outbox\"]\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
        );
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("table without schema refused");
        assert!(error.to_string().contains("outbox.tables"), "{error}");
        assert!(error.to_string().contains("schema.table"), "{error}");

        let file = write(
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\ntransaction_timeout = \"30s\"\n[batch]\nmax_age = \"1min\"\n",
        );
        let error = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect_err("max_age over the transaction timeout refused");
        assert!(error.to_string().contains("batch.max_age"), "{error}");
    }

    #[test]
    fn environment_variables_override_the_file() {
        let env = [
            ("OUTBOXD__KAFKA__BOOTSTRAP_SERVERS", "other:9093"),
            ("OUTBOXD__RELAY__NAME", "from-env"),
            ("OUTBOXD__POSTGRES__PUBLICATIONS", "a,b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/outboxd.toml");
        let relay = Settings::load_with_env(&path, Some(env))
            .expect("loads")
            .relay_config()
            .expect("valid");
        assert_eq!(relay.kafka.bootstrap_servers, "other:9093");
        assert_eq!(relay.name, "from-env");
        assert_eq!(relay.publications, ["a", "b"]);
    }

    #[test]
    fn a_password_file_supplies_the_password() {
        let secret = write("s3cret\n");
        let file = write(&format!(
            "[postgres]\nurl = \"postgresql://u@h/db\"\npassword_file = {:?}\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
            secret.path()
        ));
        let relay = Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect("valid");
        assert_eq!(relay.postgres.password.as_deref(), Some("s3cret"));
    }
}
