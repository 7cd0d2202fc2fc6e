//! Avro with a Schema Registry (`[cdc] format = "avro"`): keys and values as Confluent's
//! AvroConverter writes them for Debezium, from the same Kafka Connect schemas the JSON events
//! carry ([`crate::route::cdc::schema`]).
//!
//! - [`schema`]: a Connect schema as Avro, as `AvroData` converts it;
//! - [`datum`]: a JSON payload as the Avro value of that schema;
//! - [`tables`]: each table's Avro key and value schemas, derived once per Relation message;
//! - [`outbox`] and [`json`]: outbox events' JSON payloads encoded with the schemas registered
//!   for them (`[outbox] format = "avro"`);
//! - [`inferred`]: outbox events encoded with the schemas of their own shapes, as Debezium's
//!   router and AvroConverter write them (`avro_schema = "inferred"`).
//!
//! A record is Confluent's wire format: magic byte 0, the schema's registry id (4 bytes, big
//! endian), the Avro binary datum. The id comes from registering the schema under its subject
//! ([`SubjectStrategy`]); the router cannot wait on the registry, so the relay registers every
//! schema a change needs before routing it ([`crate::route::Router::unregistered`] and
//! `crate::registry`), and each [`AvroSchema`] keeps its id from then on.

pub mod datum;
pub mod inferred;
pub mod json;
pub mod outbox;
pub mod schema;
pub mod tables;

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;

use crate::route::cdc::schema::ConnectSchema;

/// Confluent's wire format's first byte.
const MAGIC: u8 = 0;

/// How a schema's subject is named (Confluent's `key.subject.name.strategy` /
/// `value.subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `TopicNameStrategy`: `<topic>-key`, `<topic>-value`.
    #[default]
    Topic,
    /// `RecordNameStrategy`: the record's full name.
    Record,
    /// `TopicRecordNameStrategy`: `<topic>-<record full name>`.
    TopicRecord,
}

impl SubjectStrategy {
    /// The subject of the key (`key`) or value schema `record` (a full name) of `topic`.
    pub fn subject(self, topic: &str, key: bool, record: &str) -> String {
        match self {
            Self::Topic => format!("{topic}-{}", if key { "key" } else { "value" }),
            Self::Record => record.to_owned(),
            Self::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

/// An Avro schema of keys or values, with the subject it is registered under and, once it is,
/// its id.
#[derive(Debug)]
pub struct AvroSchema {
    /// The registry subject.
    pub subject: String,
    /// The Avro schema as JSON text, as registered.
    pub json: String,
    /// The Connect schema it was made from: what the payloads follow.
    connect: ConnectSchema,
    /// It parsed, for encoding.
    parsed: apache_avro::Schema,
    /// The registry's id, set once registered.
    id: OnceLock<u32>,
}

impl AvroSchema {
    /// The Avro schema of `connect`, registered under `subject`.
    pub fn new(connect: ConnectSchema, subject: String) -> Result<Self, String> {
        let json = schema::avro_json(&connect);
        let parsed = apache_avro::Schema::parse_str(&schema::avro_json_to_encode(&connect))
            .map_err(|e| format!("the Avro schema of subject {subject} is invalid: {e}"))?;
        Ok(Self {
            subject,
            json,
            connect,
            parsed,
            id: OnceLock::new(),
        })
    }

    /// The registry's id, if registered.
    pub fn id(&self) -> Option<u32> {
        self.id.get().copied()
    }

    /// Records the registry's id of this schema.
    pub fn registered(&self, id: u32) {
        let _ = self.id.set(id);
    }

    /// `payload` (JSON, in the Connect schema's shape) in Confluent's wire format, or why it
    /// cannot be.
    pub fn encode(&self, payload: &Value) -> Result<Bytes, String> {
        let id = self
            .id()
            .ok_or_else(|| format!("subject {} is not registered", self.subject))?;
        let value = datum::avro_value(&self.connect, payload)?;
        let datum = apache_avro::to_avro_datum(&self.parsed, value)
            .map_err(|e| format!("does not fit the Avro schema of {}: {e}", self.subject))?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC);
        out.extend(id.to_be_bytes());
        out.extend(datum);
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::route::cdc::schema::Kind;

    #[test]
    fn records_are_in_confluents_wire_format() {
        let connect = ConnectSchema::structure(vec![ConnectSchema::of(Kind::Int64).field("id")])
            .named("p.public.t.Key");
        let schema = AvroSchema::new(connect, "p.public.t-key".into()).expect("valid");
        assert!(schema.encode(&json!({"id": 1})).is_err(), "not registered");
        schema.registered(258);
        assert_eq!(
            schema.encode(&json!({"id": -1})).expect("fits"),
            Bytes::from_static(&[0, 0, 0, 1, 2, 1])
        );
        let error = schema.encode(&json!({"id": "x"})).expect_err("a string");
        assert!(
            error.contains("id: \"x\" does not fit required long"),
            "{error}"
        );
    }

    #[test]
    fn subjects_follow_the_strategy() {
        let record = "p.public.t.Value";
        assert_eq!(
            SubjectStrategy::Topic.subject("p.public.t", false, record),
            "p.public.t-value"
        );
        assert_eq!(
            SubjectStrategy::Topic.subject("p.public.t", true, "k"),
            "p.public.t-key"
        );
        assert_eq!(SubjectStrategy::Record.subject("x", false, record), record);
        assert_eq!(
            SubjectStrategy::TopicRecord.subject("x", false, record),
            "x-p.public.t.Value"
        );
    }
}
