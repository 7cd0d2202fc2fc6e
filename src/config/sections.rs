//! The configuration file's schema: one struct per section, each key with its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::choice::choice;
pub use super::kafka_security::{KafkaSaslSection, KafkaTlsSection, SaslMechanism};
use super::outbox_avro::{AvroSchemaSource, OutboxFormat};
use crate::logging::LogFormat;
use crate::route::avro::SubjectStrategy;
use crate::route::cdc::values::{BinaryMode, DecimalMode, TimePrecisionMode};
use crate::route::outbox::{self, CloudEventsMode, KeyFormat, OutboxColumns};
use crate::settings::{RelayMode, SnapshotMode, SnapshotSettings};
use crate::sink::batch::BatchLimits;
use crate::source::poll::PollSettings;

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
    /// `[snapshot]`.
    #[serde(default)]
    pub snapshot: SnapshotSection,
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
    /// `[schema_registry]`.
    #[serde(default)]
    pub schema_registry: Option<RegistrySection>,
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
    /// How long changes may wait to be published with no Kafka commit before the relay counts as
    /// stalled: `/readyz` answers 503, `outboxd_stalled` is 1, and one WARN line says so (also
    /// with the endpoint off). Above the time the largest Postgres transaction takes to reach
    /// Kafka: a Kafka transaction commits only at a Postgres commit.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            ready_max_lag: 64 * 1024 * 1024,
            wal_poll_interval: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
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
    /// How long the server keeps the standby lease of an active instance it no longer hears from.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
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
            lease_timeout: Duration::from_secs(10),
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
    /// Create the slot as a failover slot (PostgreSQL 17+), which standbys synchronize so that it
    /// survives a promotion; ignored before 17.
    #[serde(default = "default_failover_slot")]
    pub failover_slot: bool,
}

impl std::fmt::Debug for PostgresSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = crate::pg::wire::redacted_url(&self.url).unwrap_or_else(|| "<unparsable>".into());
        f.debug_struct("PostgresSection")
            .field("url", &url)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("slot", &self.slot)
            .field("publications", &self.publications)
            .field("failover_slot", &self.failover_slot)
            .finish()
    }
}

pub(super) fn default_slot() -> String {
    "outboxd".into()
}

pub(super) fn default_publications() -> Vec<String> {
    vec!["outboxd".into()]
}

fn default_failover_slot() -> bool {
    true
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
    /// JsonConverter's `schemas.enable` for `debezium-outbox` records: value, headers and (with
    /// `key_format = "json"`) key as `{"schema", "payload"}`.
    pub schemas: bool,
    /// Whether a NULL or empty payload is a tombstone (`route.tombstone.on.empty.payload`) rather
    /// than a JSON `null` value.
    pub tombstone_on_empty_payload: bool,
    /// `string` (Kafka Connect's SimpleHeaderConverter: the text) or `json` (JsonConverter, Debezium
    /// Server's default: a quoted string) for `debezium-outbox` header values.
    #[serde(deserialize_with = "choice")]
    pub header_format: KeyFormat,
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
    /// `json`, or `avro`: the payload in Avro with the schema registered for the event in
    /// `[schema_registry]` (Confluent's wire format).
    #[serde(deserialize_with = "choice")]
    pub format: OutboxFormat,
    /// With `format = "avro"`, where the schema comes from: `registered` (by its owners).
    #[serde(deserialize_with = "choice")]
    pub avro_schema: AvroSchemaSource,
    /// With `format = "avro"`, how long the latest version of a subject is used for events
    /// without a schema version before the registry is asked again.
    #[serde(with = "humantime_serde")]
    pub avro_latest_ttl: Duration,
}

impl Default for OutboxSection {
    fn default() -> Self {
        Self {
            tables: vec!["public.outbox".into()],
            message_prefix: "outbox".into(),
            envelope: EnvelopeName::DebeziumOutbox,
            expand_json_payload: true,
            key_format: KeyFormat::String,
            schemas: false,
            tombstone_on_empty_payload: true,
            header_format: KeyFormat::String,
            topic: outbox::DEFAULT_TOPIC.into(),
            additional_placement: Vec::new(),
            columns: ColumnsSection::default(),
            cloudevents: CloudEventsSection::default(),
            overrides: Vec::new(),
            format: OutboxFormat::Json,
            avro_schema: AvroSchemaSource::Registered,
            avro_latest_ttl: Duration::from_secs(60),
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
    pub(super) fn apply(&self, base: &OutboxColumns) -> OutboxColumns {
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

/// `[snapshot]`: reading the rows of the captured CDC tables while streaming.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// `initial`, `initial_only`, `when_needed`, `never` or `no_data` (Debezium's
    /// `snapshot.mode`).
    #[serde(deserialize_with = "choice")]
    pub mode: SnapshotMode,
    /// Rows read at a time.
    pub chunk_size: usize,
    /// Debezium's `signal.data.collection`, `schema.table`; empty: none.
    pub signal_table: String,
    /// Whether `outboxd.signal` logical messages are snapshot signals.
    pub signal_messages: bool,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        let settings = SnapshotSettings::default();
        Self {
            mode: settings.mode,
            chunk_size: settings.chunk_size,
            signal_table: String::new(),
            signal_messages: settings.signal_messages,
        }
    }
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
    /// JsonConverter's `schemas.enable`: keys, values and key headers as `{"schema", "payload"}`.
    pub schemas: bool,
    /// JsonConverter's `replace.null.with.default`: a NULL in a column with a `DEFAULT` that
    /// Debezium puts in the schema is written as that default.
    pub replace_null_with_default: bool,
    /// `json`, or `avro`: keys and values as Confluent's AvroConverter writes them, with their
    /// schemas registered in `[schema_registry]`.
    #[serde(deserialize_with = "choice")]
    pub format: CdcFormat,
}

/// `[cdc] format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdcFormat {
    /// JsonConverter's JSON.
    Json,
    /// Avro in Confluent's wire format.
    Avro,
}

/// `[schema_registry]`: the Confluent-compatible Schema Registry of Avro records. `Debug` leaves
/// out the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// The API's base URL (`https://registry:8081`; Apicurio's ends in `/apis/ccompat/v7`).
    pub url: String,
    /// Basic authentication's user.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password, best given as `OUTBOXD__SCHEMA_REGISTRY__PASSWORD` rather than in the file.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) of an `https` registry; the system's by default.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `topic` (`<topic>-key`, `<topic>-value`), `record` (the record's full name) or
    /// `topic_record` (`<topic>-<record full name>`).
    #[serde(default, deserialize_with = "choice")]
    pub subject_name_strategy: SubjectStrategy,
    /// How long one request may take.
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for RegistrySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySection")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("subject_name_strategy", &self.subject_name_strategy)
            .field("timeout", &self.timeout)
            .finish()
    }
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
            schemas: false,
            replace_null_with_default: true,
            format: CdcFormat::Json,
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
    /// `[kafka.tls]`: TLS to the broker.
    #[serde(default)]
    pub tls: Option<KafkaTlsSection>,
    /// `[kafka.sasl]`: SASL authentication.
    #[serde(default)]
    pub sasl: Option<KafkaSaslSection>,
    /// `[kafka.topic_creation]`.
    #[serde(default)]
    pub topic_creation: super::TopicCreationSection,
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
pub(super) fn default_max_record_bytes() -> usize {
    1_000_000
}

pub(super) fn default_offsets_topic() -> String {
    "outboxd.offsets".into()
}

pub(super) fn default_transaction_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

pub(super) fn default_call_timeout() -> Duration {
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
