//! Typed configuration: a TOML file, overridden by `OUTBOXD__SECTION__KEY` environment variables.
//!
//! Every key, its default and its meaning are documented in `config/outboxd.toml`. Unknown keys are
//! errors (a typo must not silently fall back to a default), and so are values out of range.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pg::wire::ConnectOptions;
use crate::relay::RelayConfig;
use crate::route::cdc::values::{
    BinaryMode, DebeziumModes, DecimalMode, TimePrecisionMode, ValueConvention,
};
use crate::route::cdc::CdcRouter;
use crate::route::dead_letter::DeadLetters;
use crate::route::outbox::envelope::{self, EnvelopeKind};
use crate::route::outbox::{
    self, AdditionalField, CloudEventsMode, Envelope, KeyFormat, OutboxColumns, OutboxRouter,
    OutboxSpec, OutboxTable,
};
use crate::route::template::Template;
use crate::route::Router;
use crate::sink::batch::BatchLimits;
use crate::sink::kafka::KafkaSettings;
use crate::source::poll::{AfterPublish, PollSettings, PollTable};

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
    /// `[cdc]`.
    #[serde(default)]
    pub cdc: CdcSection,
    /// `[dead_letter]`.
    #[serde(default)]
    pub dead_letter: DeadLetterSection,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSection,
    /// `[poll]`.
    #[serde(default)]
    pub poll: PollSection,
}

/// `[poll]`: how poll mode reads outbox tables (`relay.mode = "poll"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollSection {
    /// Rows per batch: one Kafka transaction, and the ids its checkpoint names.
    pub batch_size: usize,
    /// The column rows are published in order of (then the id column): a sequence, so that
    /// per key the order is the order writers took the aggregate's lock in.
    pub order_by: String,
    /// Longest wait between polls of an idle outbox.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// First wait after a poll that found fewer rows than a batch; doubles up to `interval`.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// `delete` the published rows, or `mark` them by setting `mark_column`.
    #[serde(deserialize_with = "choice")]
    pub after_publish: AfterPublishName,
    /// The timestamp column `mark` sets; rows where it is not NULL are published already.
    pub mark_column: String,
    /// Wake up at once on the notifications of the trigger `outboxd migrate` installs in poll mode
    /// (when the trigger exists).
    pub notify: bool,
}

impl Default for PollSection {
    fn default() -> Self {
        let settings = PollSettings::default();
        Self {
            batch_size: settings.batch_size,
            order_by: "seq".into(),
            interval: settings.interval,
            min_interval: settings.min_interval,
            after_publish: AfterPublishName::Delete,
            mark_column: "published_at".into(),
            notify: settings.notify,
        }
    }
}

/// `poll.after_publish` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPublishName {
    /// Delete published rows.
    Delete,
    /// Set `mark_column` of published rows.
    Mark,
}

/// `relay.mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Stream a logical replication slot (DESIGN.md §4).
    Logical,
    /// Poll outbox tables (DESIGN.md §5): no REPLICATION needed.
    Poll,
}

impl RelayMode {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logical => "logical",
            Self::Poll => "poll",
        }
    }
}

/// `[metrics]`: the HTTP endpoint with `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether the endpoint is served.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// WAL bytes behind the server up to which `/readyz` still says ready.
    pub ready_max_lag: u64,
    /// How often the server's WAL position is read (lag and retained-WAL metrics, readiness).
    #[serde(with = "humantime_serde")]
    pub wal_poll_interval: Duration,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            ready_max_lag: 64 * 1024 * 1024,
            wal_poll_interval: Duration::from_secs(5),
        }
    }
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter: a level (`info`) or directives (`info,outboxd::relay=debug`). `RUST_LOG`
    /// wins when set. Re-read on SIGHUP.
    pub level: String,
    /// `auto` (text on a terminal, JSON otherwise), `json` or `text`.
    #[serde(deserialize_with = "choice")]
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// `log.format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    Auto,
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// `[relay]`: identity and pacing of this relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Relay name; the checkpoint key and the transactional id `outboxd-<name>`.
    pub name: String,
    /// `logical` (stream a replication slot) or `poll` (select and delete outbox rows).
    #[serde(deserialize_with = "choice")]
    pub mode: RelayMode,
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
            mode: RelayMode::Logical,
            status_interval: Duration::from_secs(1),
            idle_confirm_interval: Duration::from_secs(1),
            channel_capacity: 4096,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `[postgres]`: the database and its replication slot. `Debug` leaves out the URL's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// libpq-style URL (`postgresql://user@host:port/db?sslmode=verify-full`).
    pub url: String,
    /// The password, best given as `OUTBOXD__POSTGRES__PASSWORD` rather than in the file.
    #[serde(default)]
    pub password: Option<Secret>,
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

impl std::fmt::Debug for PostgresSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match url::Url::parse(&self.url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("redacted"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "<unparsable>".into(),
        };
        f.debug_struct("PostgresSection")
            .field("url", &url)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("slot", &self.slot)
            .field("publications", &self.publications)
            .finish()
    }
}

fn default_slot() -> String {
    "outboxd".into()
}

fn default_publications() -> Vec<String> {
    vec!["outboxd".into()]
}

/// `[outbox]`: which tables and messages are outbox events, and how they are shaped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Outbox tables as `schema.table`.
    pub tables: Vec<String>,
    /// Prefix of `pg_logical_emit_message` calls that carry outbox events; empty: none do.
    pub message_prefix: String,
    /// `debezium-outbox` or `cloudevents`.
    #[serde(deserialize_with = "choice")]
    pub envelope: EnvelopeName,
    /// Whether the payload must be JSON and is written as JSON (`table.expand.json.payload`).
    pub expand_json_payload: bool,
    /// `string` (Kafka Connect StringConverter) or `json` (JsonConverter: a quoted string).
    #[serde(deserialize_with = "choice")]
    pub key_format: KeyFormat,
    /// Topic template (`route.topic.replacement`).
    pub topic: String,
    /// `column:header|envelope|partition[:alias]` entries (`table.fields.additional.placement`).
    pub additional_placement: Vec<String>,
    /// Column names.
    pub columns: ColumnsSection,
    /// `[outbox.cloudevents]`.
    pub cloudevents: CloudEventsSection,
    /// `[[outbox.overrides]]`: per-table topic, placement and columns.
    pub overrides: Vec<OutboxOverride>,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            tables: vec!["public.outbox".into()],
            message_prefix: "outbox".into(),
            envelope: EnvelopeName::DebeziumOutbox,
            expand_json_payload: true,
            key_format: KeyFormat::String,
            topic: outbox::DEFAULT_TOPIC.into(),
            additional_placement: Vec::new(),
            columns: ColumnsSection::default(),
            cloudevents: CloudEventsSection::default(),
            overrides: Vec::new(),
        }
    }
}

/// `envelope` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeName {
    /// Debezium's outbox event router.
    DebeziumOutbox,
    /// CloudEvents 1.0.
    Cloudevents,
}

/// `[outbox.columns]` (and an override's `columns`): unset keys keep the default name (or, in an
/// override, the `[outbox.columns]` name).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnsSection {
    /// `table.field.event.id`.
    pub id: Option<String>,
    /// `route.by.field`.
    pub aggregate_type: Option<String>,
    /// `table.field.event.key`.
    pub aggregate_id: Option<String>,
    /// `table.field.event.type`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `table.field.event.payload`.
    pub payload: Option<String>,
    /// `table.field.event.timestamp`.
    pub timestamp: Option<String>,
    /// W3C trace context column.
    pub traceparent: Option<String>,
    /// Debezium's span context column.
    pub tracing_span_context: Option<String>,
    /// Correlation id column.
    pub correlation_id: Option<String>,
    /// Causation id column.
    pub causation_id: Option<String>,
    /// Schema version column.
    pub schema_version: Option<String>,
}

impl ColumnsSection {
    /// `base` with the names this section sets.
    fn apply(&self, base: &OutboxColumns) -> OutboxColumns {
        let pick = |own: &Option<String>, inherited: &String| {
            own.clone().unwrap_or_else(|| inherited.clone())
        };
        OutboxColumns {
            id: pick(&self.id, &base.id),
            aggregate_type: pick(&self.aggregate_type, &base.aggregate_type),
            aggregate_id: pick(&self.aggregate_id, &base.aggregate_id),
            event_type: pick(&self.event_type, &base.event_type),
            payload: pick(&self.payload, &base.payload),
            timestamp: pick(&self.timestamp, &base.timestamp),
            traceparent: pick(&self.traceparent, &base.traceparent),
            tracing_span_context: pick(&self.tracing_span_context, &base.tracing_span_context),
            correlation_id: pick(&self.correlation_id, &base.correlation_id),
            causation_id: pick(&self.causation_id, &base.causation_id),
            schema_version: pick(&self.schema_version, &base.schema_version),
        }
    }
}

/// `[outbox.cloudevents]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEventsSection {
    /// `structured` or `binary`.
    #[serde(deserialize_with = "choice")]
    pub mode: CloudEventsMode,
    /// The `source` template.
    pub source: String,
    /// The `dataschema` template, used when an event has a schema version.
    pub dataschema: String,
}

impl Default for CloudEventsSection {
    fn default() -> Self {
        Self {
            mode: CloudEventsMode::Structured,
            source: "/outboxd/${schema}/${table}".into(),
            dataschema: "urn:outboxd:schema:${aggregatetype}:${type}:${schema_version}".into(),
        }
    }
}

/// `[[outbox.overrides]]`: settings of one outbox table that differ from `[outbox]`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxOverride {
    /// The table, `schema.table`; must be listed in `tables`.
    pub table: String,
    /// Topic template.
    #[serde(default)]
    pub topic: Option<String>,
    /// Additional placements, replacing `[outbox]`'s.
    #[serde(default)]
    pub additional_placement: Option<Vec<String>>,
    /// Column names that differ.
    #[serde(default)]
    pub columns: ColumnsSection,
}

/// `[cdc]`: change events of published tables that are not outboxes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcSection {
    /// Whether such changes are published at all.
    pub enabled: bool,
    /// `topic.prefix`: topics are `<prefix>.<schema>.<table>`; also `source.name`.
    pub topic_prefix: String,
    /// `tombstones.on.delete`.
    pub tombstones_on_delete: bool,
    /// Whether truncates become `op: "t"` events.
    pub truncate_events: bool,
    /// Whether logical messages of other prefixes go to `<prefix>.message`.
    pub messages: bool,
    /// `unavailable.value.placeholder`.
    pub unavailable_value_placeholder: String,
    /// `debezium` or `natural`.
    #[serde(deserialize_with = "choice")]
    pub value_convention: ValueConventionName,
    /// `decimal.handling.mode`: `precise`, `double` or `string`.
    #[serde(deserialize_with = "choice")]
    pub decimal_handling_mode: DecimalMode,
    /// `time.precision.mode`: `adaptive`, `adaptive_time_microseconds` or `connect`.
    #[serde(deserialize_with = "choice")]
    pub time_precision_mode: TimePrecisionMode,
    /// `binary.handling.mode`: `bytes`, `base64` or `hex`.
    #[serde(deserialize_with = "choice")]
    pub binary_handling_mode: BinaryMode,
}

impl Default for CdcSection {
    fn default() -> Self {
        Self {
            enabled: true,
            topic_prefix: "outboxd".into(),
            tombstones_on_delete: true,
            truncate_events: false,
            messages: true,
            unavailable_value_placeholder: "__debezium_unavailable_value".into(),
            value_convention: ValueConventionName::Debezium,
            decimal_handling_mode: DecimalMode::Precise,
            time_precision_mode: TimePrecisionMode::Adaptive,
            binary_handling_mode: BinaryMode::Bytes,
        }
    }
}

/// `value_convention` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueConventionName {
    /// Debezium's JSON.
    Debezium,
    /// ISO-8601 and exact strings.
    Natural,
}

/// `[dead_letter]`: where changes go that cannot become their record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSection {
    /// The dead-letter topic.
    pub topic: String,
}

impl Default for DeadLetterSection {
    fn default() -> Self {
        Self {
            topic: "outboxd.dlq".into(),
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
    /// The largest record (key + value + headers) produced; larger ones become dead letters.
    /// Must not exceed the broker's `message.max.bytes` nor the topics' `max.message.bytes`.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// librdkafka properties passed through as they are.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose value is the first line of a file (secrets: `sasl.password`,
    /// `ssl.key.password`).
    #[serde(default)]
    pub property_files: BTreeMap<String, PathBuf>,
}

/// A secret setting: never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The first line of a secret file, for the error naming `key`.
fn read_secret_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn default_max_record_bytes() -> usize {
    1_000_000
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
    /// How long a Kafka transaction stays open for more input, from its start.
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

/// A setting with a fixed set of values, read from its name; an unknown name is an error that lists
/// the allowed ones.
trait Choice: Sized + Copy + 'static {
    /// Every value by its name in the file.
    const CHOICES: &'static [(&'static str, Self)];
}

/// Deserializes a [`Choice`] by name.
fn choice<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Choice,
{
    let name = String::deserialize(deserializer)?;
    T::CHOICES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let allowed: Vec<_> = T::CHOICES.iter().map(|(n, _)| format!("{n:?}")).collect();
            serde::de::Error::custom(format!("{name:?} is not one of {}", allowed.join(", ")))
        })
}

impl Choice for EnvelopeName {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("debezium-outbox", Self::DebeziumOutbox),
        ("cloudevents", Self::Cloudevents),
    ];
}

impl Choice for RelayMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("logical", Self::Logical), ("poll", Self::Poll)];
}

impl Choice for AfterPublishName {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("delete", Self::Delete), ("mark", Self::Mark)];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", Self::Auto),
        ("json", Self::Json),
        ("text", Self::Text),
    ];
}

impl Choice for KeyFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("string", Self::String), ("json", Self::Json)];
}

impl Choice for CloudEventsMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("structured", Self::Structured), ("binary", Self::Binary)];
}

impl Choice for ValueConventionName {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("debezium", Self::Debezium), ("natural", Self::Natural)];
}

impl Choice for DecimalMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("precise", Self::Precise),
        ("double", Self::Double),
        ("string", Self::String),
    ];
}

impl Choice for TimePrecisionMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("adaptive", Self::Adaptive),
        ("adaptive_time_microseconds", Self::AdaptiveTimeMicroseconds),
        ("connect", Self::Connect),
    ];
}

impl Choice for BinaryMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("bytes", Self::Bytes),
        ("base64", Self::Base64),
        ("hex", Self::Hex),
    ];
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
        if let Some(password) = &self.postgres.password {
            postgres.password = Some(password.expose().to_owned());
        }
        if let Some(path) = &self.postgres.password_file {
            postgres.password = Some(read_secret_file("postgres.password_file", path)?);
        }
        let router = self.router(&postgres.dbname)?;
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
        let poll = self.poll_settings(&router)?;
        Ok(RelayConfig {
            name: self.relay.name.clone(),
            mode: self.relay.mode,
            poll,
            postgres,
            slot: self.postgres.slot.clone(),
            publications: self.postgres.publications.clone(),
            router,
            kafka: KafkaSettings {
                bootstrap_servers: self.kafka.bootstrap_servers.clone(),
                properties: self.kafka_properties()?,
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
            wal_poll_interval: self.metrics.wal_poll_interval,
        })
    }
}

impl Settings {
    /// Poll mode's settings, validated (also in logical mode, so a mistake shows before a switch).
    fn poll_settings(&self, router: &Router) -> Result<PollSettings, ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid { key, problem };
        let poll = &self.poll;
        if !(1..=PollSettings::MAX_BATCH_SIZE).contains(&poll.batch_size) {
            return Err(invalid(
                "poll.batch_size",
                format!(
                    "must be 1 to {}: the checkpoint record names every row id of a batch and must \
                     stay well within Kafka's record size",
                    PollSettings::MAX_BATCH_SIZE
                ),
            ));
        }
        if poll.min_interval.is_zero() || poll.min_interval > poll.interval {
            return Err(invalid(
                "poll.min_interval",
                format!(
                    "must be above zero and at most poll.interval ({:?})",
                    poll.interval
                ),
            ));
        }
        for (key, column) in [
            ("poll.order_by", &poll.order_by),
            ("poll.mark_column", &poll.mark_column),
        ] {
            if column.is_empty() {
                return Err(invalid(key, "must name a column".into()));
            }
        }
        let tables = router
            .outbox()
            .tables()
            .iter()
            .map(|t| PollTable {
                schema: t.schema.clone(),
                table: t.table.clone(),
                id_column: t.spec.columns.id.clone(),
                order_by: poll.order_by.clone(),
            })
            .collect();
        Ok(PollSettings {
            tables,
            batch_size: poll.batch_size,
            interval: poll.interval,
            min_interval: poll.min_interval,
            after_publish: match poll.after_publish {
                AfterPublishName::Delete => AfterPublish::Delete,
                AfterPublishName::Mark => AfterPublish::Mark {
                    column: poll.mark_column.clone(),
                },
            },
            notify: poll.notify,
        })
    }

    /// The librdkafka properties: `[kafka.properties]` and `[kafka.property_files]`, plus a
    /// `message.max.bytes` that admits `max_record_bytes` unless set there.
    fn kafka_properties(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut properties = self.kafka.properties.clone();
        for (name, path) in &self.kafka.property_files {
            let value = read_secret_file("kafka.property_files", path)?;
            if properties.insert(name.clone(), value).is_some() {
                return Err(ConfigError::Invalid {
                    key: "kafka.property_files",
                    problem: format!("{name:?} is also set in kafka.properties; keep one"),
                });
            }
        }
        properties
            .entry("message.max.bytes".into())
            .or_insert_with(|| {
                (self.kafka.max_record_bytes + 64 * 1024)
                    .max(1_000_000)
                    .to_string()
            });
        Ok(properties)
    }

    /// The router: outbox tables and messages, CDC, dead letters.
    pub fn router(&self, database: &str) -> Result<Router, ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid { key, problem };
        let outbox = &self.outbox;
        let spec = |topic: &str, placement: &[String], columns: OutboxColumns| {
            Ok(OutboxSpec {
                columns,
                topic: Template::parse(topic, outbox::TOPIC_VARIABLES)
                    .map_err(|e| invalid("outbox.topic", e.to_string()))?,
                additional: placement
                    .iter()
                    .map(|p| p.parse::<AdditionalField>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid("outbox.additional_placement", e))?,
            })
        };
        let columns = outbox.columns.apply(&OutboxColumns::default());
        let default_spec = spec(&outbox.topic, &outbox.additional_placement, columns.clone())?;
        let mut tables = Vec::new();
        for name in &outbox.tables {
            let Some((schema, table)) = name
                .split_once('.')
                .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            else {
                return Err(invalid(
                    "outbox.tables",
                    format!("{name:?} is not schema.table (e.g. public.outbox)"),
                ));
            };
            let spec = match outbox.overrides.iter().find(|o| &o.table == name) {
                None => default_spec.clone(),
                Some(o) => spec(
                    o.topic.as_deref().unwrap_or(&outbox.topic),
                    o.additional_placement
                        .as_deref()
                        .unwrap_or(&outbox.additional_placement),
                    o.columns.apply(&columns),
                )?,
            };
            tables.push(OutboxTable {
                schema: schema.into(),
                table: table.into(),
                spec,
            });
        }
        if let Some(stray) = outbox
            .overrides
            .iter()
            .find(|o| !outbox.tables.contains(&o.table))
        {
            return Err(invalid(
                "outbox.overrides",
                format!("table {:?} is not listed in outbox.tables", stray.table),
            ));
        }
        // Parsed whatever the envelope, so a mistake shows before the envelope is switched on.
        let source = Template::parse(&outbox.cloudevents.source, envelope::SOURCE_VARIABLES)
            .map_err(|e| invalid("outbox.cloudevents.source", e.to_string()))?;
        let dataschema = Template::parse(
            &outbox.cloudevents.dataschema,
            envelope::DATASCHEMA_VARIABLES,
        )
        .map_err(|e| invalid("outbox.cloudevents.dataschema", e.to_string()))?;
        let kind = match outbox.envelope {
            EnvelopeName::DebeziumOutbox => EnvelopeKind::DebeziumOutbox,
            EnvelopeName::Cloudevents => EnvelopeKind::CloudEvents {
                mode: outbox.cloudevents.mode,
                source,
                dataschema,
            },
        };
        let envelope = Envelope {
            kind,
            expand_json_payload: outbox.expand_json_payload,
            key_format: outbox.key_format,
        };
        let message = (!outbox.message_prefix.is_empty())
            .then(|| (outbox.message_prefix.clone(), default_spec));
        let cdc = &self.cdc;
        let cdc_router = cdc.enabled.then(|| CdcRouter {
            topic_prefix: cdc.topic_prefix.clone(),
            database: database.to_owned(),
            tombstones_on_delete: cdc.tombstones_on_delete,
            truncate_events: cdc.truncate_events,
            messages: cdc.messages,
            unavailable_value_placeholder: cdc.unavailable_value_placeholder.clone(),
            values: match cdc.value_convention {
                ValueConventionName::Natural => ValueConvention::Natural,
                ValueConventionName::Debezium => ValueConvention::Debezium(DebeziumModes {
                    decimal: cdc.decimal_handling_mode,
                    time: cdc.time_precision_mode,
                    binary: cdc.binary_handling_mode,
                }),
            },
        });
        if self.kafka.max_record_bytes < 1024 {
            return Err(invalid(
                "kafka.max_record_bytes",
                "must be at least 1024 (the broker default is 1048588)".into(),
            ));
        }
        Ok(Router::new(
            OutboxRouter::new(tables, message, envelope),
            cdc_router,
            DeadLetters::new(self.dead_letter.topic.clone(), self.kafka.max_record_bytes),
        ))
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
    fn routing_settings_name_the_key_and_the_allowed_values() {
        let base =
            "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n";
        let cases = [
            ("[outbox]\nenvelope = \"avro\"\n", "debezium-outbox"),
            (
                "[outbox]\ntopic = \"events.${aggregate}\"\n",
                "outbox.topic",
            ),
            (
                "[outbox]\nadditional_placement = [\"type:body\"]\n",
                "outbox.additional_placement",
            ),
            (
                "[outbox.cloudevents]\nsource = \"/${db}\"\n",
                "outbox.cloudevents.source",
            ),
            ("[cdc]\ndecimal_handling_mode = \"exact\"\n", "precise"),
            (
                "[[outbox.overrides]]\ntable = \"public.other\"\n",
                "outbox.overrides",
            ),
        ];
        for (section, named) in cases {
            let file = write(&format!("{base}{section}"));
            let error = match Settings::load(file.path()) {
                Err(error) => error.to_string(),
                Ok(settings) => settings
                    .relay_config()
                    .expect_err("invalid routing setting refused")
                    .to_string(),
            };
            assert!(error.contains(named), "{section}: {error}");
        }
        let file = write(&format!(
            "{base}[outbox]\ntables = [\"public.outbox\", \"billing.events\"]\n\
             [[outbox.overrides]]\ntable = \"billing.events\"\ncolumns = {{ id = \"event_id\" }}\n"
        ));
        Settings::load(file.path())
            .expect("parses")
            .relay_config()
            .expect("an override of a listed table is valid");
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
    fn secret_files_supply_kafka_properties_and_debug_hides_every_secret() {
        let secret = write("kafka-s3cret\n");
        let file = write(&format!(
            "[postgres]\nurl = \"postgresql://u:url-s3cret@h/db\"\npassword = \"pg-s3cret\"\n\
             [kafka]\nbootstrap_servers = \"b:9092\"\n\
             [kafka.property_files]\n\"sasl.password\" = {:?}\n",
            secret.path()
        ));
        let settings = Settings::load(file.path()).expect("parses");
        let relay = settings.relay_config().expect("valid");
        assert_eq!(
            relay
                .kafka
                .properties
                .get("sasl.password")
                .map(String::as_str),
            Some("kafka-s3cret")
        );
        assert_eq!(relay.postgres.password.as_deref(), Some("pg-s3cret"));
        let shown = format!("{settings:?} {relay:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
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
