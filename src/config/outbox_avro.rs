//! `[outbox] format = "avro"`: outbox events' payloads in Avro with registered schemas
//! ([`crate::route::avro::outbox`]), and what that needs of the rest of `[outbox]`.

use super::choice::Choice;
use super::sections::{EnvelopeName, Settings};
use super::ConfigError;
use crate::route::avro::outbox::OutboxAvro;
use crate::route::avro::SubjectStrategy;

/// `[outbox] format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxFormat {
    /// The payload's JSON, as the envelope writes it.
    Json,
    /// The payload in Avro, Confluent's wire format.
    Avro,
}

impl Choice for OutboxFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[("json", Self::Json), ("avro", Self::Avro)];
}

/// `[outbox] avro_schema` values: where an event's Avro schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroSchemaSource {
    /// The schema registered for the event's subject (and version), by its owners.
    Registered,
}

impl Choice for AvroSchemaSource {
    const CHOICES: &'static [(&'static str, Self)] = &[("registered", Self::Registered)];
}

fn invalid(problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key: "outbox.format",
        problem: problem.into(),
    }
}

impl Settings {
    /// The Avro encoding of outbox events, when `format = "avro"`; refused with what else
    /// `[outbox]` sets that an Avro value cannot carry.
    pub(super) fn outbox_avro(&self) -> Result<Option<OutboxAvro>, ConfigError> {
        let outbox = &self.outbox;
        if outbox.format == OutboxFormat::Json {
            return Ok(None);
        }
        let Some(registry) = &self.schema_registry else {
            return Err(invalid(
                "\"avro\" needs a [schema_registry] section with its url",
            ));
        };
        if outbox.envelope != EnvelopeName::DebeziumOutbox {
            return Err(invalid(
                "\"avro\" goes with envelope = \"debezium-outbox\" (the value is the payload)",
            ));
        }
        if !outbox.expand_json_payload || outbox.schemas {
            return Err(invalid(
                "\"avro\" needs expand_json_payload = true (the payload is JSON to encode) and \
                 schemas = false (the schema is the registry's)",
            ));
        }
        if self.places_in_envelope() {
            return Err(invalid(
                "\"avro\" cannot place additional fields in the envelope (the value is the \
                 payload in its registered schema); place them as headers",
            ));
        }
        if outbox.avro_latest_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "outbox.avro_latest_ttl",
                problem: "must be above zero (the latest version would be asked for each event)"
                    .into(),
            });
        }
        let AvroSchemaSource::Registered = outbox.avro_schema;
        let strategy: SubjectStrategy = registry.subject_name_strategy;
        Ok(Some(OutboxAvro::new(strategy, outbox.avro_latest_ttl)))
    }
}
