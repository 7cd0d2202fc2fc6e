//! From the file's sections to the runtime settings: each value validated, the key at fault
//! named.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::kafka_security::{security_properties, Mapped};
use super::sections::{AfterPublishName, CdcFormat, EnvelopeName, Settings, ValueConventionName};
use super::ConfigError;
use crate::checkpoint::snapshot::TableName;
use crate::pg::wire::ConnectOptions;
use crate::registry::{Registry, RegistrySettings};
use crate::route::avro::tables::AvroSchemas;
use crate::route::avro::SubjectStrategy;
use crate::route::cdc::schema::tables::SchemaCache;
use crate::route::cdc::values::{DebeziumModes, ValueConvention};
use crate::route::cdc::CdcRouter;
use crate::route::dead_letter::DeadLetters;
use crate::route::outbox::envelope::{self, EnvelopeKind};
use crate::route::outbox::{
    self, AdditionalField, Envelope, OutboxColumns, OutboxRouter, OutboxSpec, OutboxTable,
};
use crate::route::template::Template;
use crate::route::Router;
use crate::settings::{RelayConfig, RelayMode, SnapshotMode, SnapshotSettings};
use crate::sink::batch::BatchLimits;
use crate::sink::kafka::KafkaSettings;
use crate::source::poll::{AfterPublish, PollSettings, PollTable};

impl Settings {
    /// The relay's configuration, validated.
    pub fn relay_config(&self) -> Result<RelayConfig, ConfigError> {
        self.validate()?;
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
        if self.relay.lease_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "relay.lease_timeout",
                "must be at least 1s: the active proves its lease every tenth of it".into(),
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
        let snapshot = self.snapshot_settings()?;
        Ok(RelayConfig {
            name: self.relay.name.clone(),
            mode: self.relay.mode,
            poll,
            postgres,
            slot: self.postgres.slot.clone(),
            publications: self.postgres.publications.clone(),
            failover_slot: self.postgres.failover_slot,
            router,
            kafka: KafkaSettings {
                bootstrap_servers: self.kafka.bootstrap_servers.clone(),
                properties: self.kafka_properties()?,
            },
            offsets_topic: self.kafka.offsets_topic.clone(),
            topic_creation: self.kafka.topic_creation.settings()?,
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
            publish_existing_rows: false,
            take_over: false,
            lease_timeout: self.relay.lease_timeout,
            registry: self.registry()?,
            wal_poll_interval: self.metrics.wal_poll_interval,
            stall_timeout: self.metrics.stall_timeout,
            snapshot,
        })
    }

    /// `[snapshot]`, validated: a snapshot reads CDC tables, which only logical mode publishes.
    fn snapshot_settings(&self) -> Result<SnapshotSettings, ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        let snapshot = &self.snapshot;
        if !(1..=SnapshotSettings::MAX_CHUNK_SIZE).contains(&snapshot.chunk_size) {
            return Err(invalid(
                "snapshot.chunk_size",
                "must be 1 to 100000: a chunk is held in memory while its window is open",
            ));
        }
        if snapshot.mode != SnapshotMode::Never {
            if self.relay.mode != RelayMode::Logical {
                return Err(invalid(
                    "snapshot.mode",
                    "needs relay.mode = \"logical\": poll mode publishes outbox rows only, and \
                     outbox tables hold events, not state to snapshot",
                ));
            }
            if !self.cdc.enabled {
                return Err(invalid(
                    "snapshot.mode",
                    "needs cdc.enabled = true: a snapshot reads the captured CDC tables",
                ));
            }
        }
        let signal_table = match snapshot.signal_table.as_str() {
            "" => None,
            name => {
                let Some((schema, table)) = name
                    .split_once('.')
                    .filter(|(s, t)| !s.is_empty() && !t.is_empty())
                else {
                    return Err(invalid(
                        "snapshot.signal_table",
                        "must be schema.table (e.g. public.debezium_signal), or empty for none",
                    ));
                };
                if self.relay.mode != RelayMode::Logical {
                    return Err(invalid(
                        "snapshot.signal_table",
                        "needs relay.mode = \"logical\": signals arrive in the replication stream",
                    ));
                }
                Some(TableName {
                    schema: schema.to_owned(),
                    table: table.to_owned(),
                })
            }
        };
        Ok(SnapshotSettings {
            mode: snapshot.mode,
            chunk_size: snapshot.chunk_size,
            signal_table,
            signal_messages: snapshot.signal_messages,
        })
    }

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

    /// The librdkafka properties: `[kafka.properties]` and `[kafka.property_files]`, those of
    /// `[kafka.tls]` and `[kafka.sasl]` (none set twice), plus a `message.max.bytes` that admits
    /// `max_record_bytes` unless set there.
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
        let security = security_properties(self.kafka.tls.as_ref(), self.kafka.sasl.as_ref())?;
        for Mapped {
            property,
            key,
            value,
        } in security
        {
            if properties.contains_key(property) {
                let raw = if self.kafka.properties.contains_key(property) {
                    "kafka.properties"
                } else {
                    "kafka.property_files"
                };
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!(
                        "sets librdkafka's {property:?}, which {raw} sets too; keep one \
                         (remove {property:?} from {raw})"
                    ),
                });
            }
            properties.insert(property.into(), value);
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
            schemas: outbox.schemas,
            tombstone_on_empty_payload: outbox.tombstone_on_empty_payload,
            header_format: outbox.header_format,
        };
        let message = (!outbox.message_prefix.is_empty())
            .then(|| (outbox.message_prefix.clone(), default_spec));
        let cdc = &self.cdc;
        let modes = DebeziumModes {
            decimal: cdc.decimal_handling_mode,
            time: cdc.time_precision_mode,
            binary: cdc.binary_handling_mode,
        };
        let cdc_router = cdc.enabled.then(|| CdcRouter {
            topic_prefix: cdc.topic_prefix.clone(),
            database: database.to_owned(),
            tombstones_on_delete: cdc.tombstones_on_delete,
            truncate_events: cdc.truncate_events,
            messages: cdc.messages,
            unavailable_value_placeholder: cdc.unavailable_value_placeholder.clone(),
            values: match cdc.value_convention {
                ValueConventionName::Natural => ValueConvention::Natural,
                ValueConventionName::Debezium => ValueConvention::Debezium(modes),
            },
            replace_null_with_default: cdc.replace_null_with_default,
            // Avro is made from the Connect schemas.
            schemas: (cdc.schemas || cdc.format == CdcFormat::Avro)
                .then(|| SchemaCache::new(modes)),
            avro: (cdc.format == CdcFormat::Avro).then(|| {
                AvroSchemas::new(
                    self.schema_registry
                        .as_ref()
                        .map_or_else(SubjectStrategy::default, |r| r.subject_name_strategy),
                )
            }),
        });
        if cdc.enabled && cdc.format == CdcFormat::Avro && self.schema_registry.is_none() {
            return Err(invalid(
                "cdc.format",
                "\"avro\" needs a [schema_registry] section with its url".into(),
            ));
        }
        if self.kafka.max_record_bytes < 1024 {
            return Err(invalid(
                "kafka.max_record_bytes",
                "must be at least 1024 (the broker default is 1048588)".into(),
            ));
        }
        let mut outbox_router = OutboxRouter::new(tables, message, envelope);
        if let Some(avro) = self.outbox_avro()? {
            outbox_router = outbox_router.with_avro(avro);
        }
        Ok(Router::new(
            outbox_router,
            cdc_router,
            DeadLetters::new(self.dead_letter.topic.clone(), self.kafka.max_record_bytes),
        ))
    }
}

impl Settings {
    /// The Schema Registry client of `[schema_registry]`, if configured.
    fn registry(&self) -> Result<Option<Registry>, ConfigError> {
        let Some(section) = &self.schema_registry else {
            return Ok(None);
        };
        let invalid = |problem: String| ConfigError::Invalid {
            key: "schema_registry.url",
            problem,
        };
        let url = Url::parse(&section.url).map_err(|e| invalid(e.to_string()))?;
        // A URL is shown in errors, `check` and logs; credentials in it would be too.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "holds credentials (user:password@); set schema_registry.username and \
                 schema_registry.password or password_file instead"
                    .into(),
            ));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("{} is not an http(s) URL", section.url)));
        }
        // Both given is refused, as in [kafka.sasl]: no one should wonder which one wins.
        let password = match (&section.password, &section.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "schema_registry.password_file",
                    problem: "and schema_registry.password are both set; keep one".into(),
                })
            }
            (Some(password), None) => Some(password.expose().to_owned()),
            (None, Some(path)) => Some(read_secret_file("schema_registry.password_file", path)?),
            (None, None) => None,
        };
        let settings = RegistrySettings {
            url,
            username: section.username.clone(),
            password,
            ca_file: section.ca_file.clone(),
            timeout: section.timeout,
        };
        Registry::new(settings)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: "schema_registry.ca_file",
                problem: e.to_string(),
            })
    }
}

/// The first line of a secret file, for the error naming `key`.
pub(super) fn read_secret_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
