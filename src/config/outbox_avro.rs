//! `[outbox] format = "avro"`: outbox events' payloads in Avro with registered schemas
//! ([`crate::route::avro::outbox`]) or inferred ones ([`crate::route::avro::inferred`]), and what
//! that needs of the rest of `[outbox]`.

use super::choice::Choice;
use super::sections::{EnvelopeName, Settings};
use super::ConfigError;
use crate::route::avro::inferred::InferredAvro;
use crate::route::avro::outbox::OutboxAvro;
use crate::route::avro::SubjectStrategy;
use crate::route::outbox::{AvroEvents, KeyFormat};

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
    /// The schema of the event's own shape, registered by outboxd, as Debezium's outbox router
    /// and AvroConverter do.
    Inferred,
}

impl Choice for AvroSchemaSource {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("registered", Self::Registered),
        ("inferred", Self::Inferred),
    ];
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
    pub(super) fn outbox_avro(&self) -> Result<Option<AvroEvents>, ConfigError> {
        let outbox = &self.outbox;
        let inferred = outbox.avro_schema == AvroSchemaSource::Inferred;
        if outbox.header_format == KeyFormat::Avro {
            return Err(ConfigError::Invalid {
                key: "outbox.header_format",
                problem: "headers are \"string\" or \"json\"".into(),
            });
        }
        if outbox.key_format == KeyFormat::Avro
            && !(outbox.format == OutboxFormat::Avro && inferred)
        {
            return Err(ConfigError::Invalid {
                key: "outbox.key_format",
                problem: "\"avro\" goes with format = \"avro\" and avro_schema = \"inferred\" \
                          (the key's schema is its column's)"
                    .into(),
            });
        }
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
        if self.places_in_envelope() {
            return Err(invalid(
                "\"avro\" cannot place additional fields in the envelope (the value is the \
                 payload in its Avro schema); place them as headers",
            ));
        }
        let strategy: SubjectStrategy = registry.subject_name_strategy;
        if inferred {
            // The value's schema is the payload's (expanded or not); `schemas` concerns the
            // parts still written as JSON (headers, a JSON key).
            return Ok(Some(AvroEvents::Inferred(InferredAvro::new(
                strategy,
                outbox.key_format == KeyFormat::Avro,
                outbox.expand_json_payload,
            ))));
        }
        if !outbox.expand_json_payload || outbox.schemas {
            return Err(invalid(
                "\"avro\" with avro_schema = \"registered\" needs expand_json_payload = true \
                 (the payload is JSON to encode) and schemas = false (the schema is the \
                 registry's)",
            ));
        }
        if outbox.avro_latest_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "outbox.avro_latest_ttl",
                problem: "must be above zero (the latest version would be asked for each event)"
                    .into(),
            });
        }
        Ok(Some(AvroEvents::Registered(OutboxAvro::new(
            strategy,
            outbox.avro_latest_ttl,
        ))))
    }
}
