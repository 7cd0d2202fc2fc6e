//! Outbox events in Avro with the schema of each event's own shape (`[outbox] format = "avro"`,
//! `avro_schema = "inferred"`): what Debezium's outbox router writes through the AvroConverter.
//!
//! The router gives the value the Connect schema of the payload
//! ([`crate::route::outbox::schemas::value_part`]: with `expand_json_payload`, the schema
//! inferred from the payload's JSON, else the payload column's) and the key the aggregate id
//! column's; the converter turns each into Avro ([`super::schema`], the one conversion CDC uses
//! too) and registers it under the subject strategy, so a payload of a new shape (a field
//! appearing, a type changing) registers a new version of the subject, and one the subject's
//! compatibility refuses stops the relay before anything of it is published, as the converter
//! fails Debezium's task (`crate::registry::RegistryError::Incompatible`).
//!
//! Two things differ from the Connect schema as CDC converts it, both as Debezium Server's
//! converter wrote them (tests/goldens, avro, `outbox.*`): an expanded payload's record is the
//! value's schema itself, not a union with `null` (the struct the router infers is optional); and a
//! NULL key or payload is no bytes at all (a record without key, a tombstone), nothing registered.
//!
//! The router cannot wait on the registry: the relay registers what
//! [`InferredAvro::unregistered`] names before routing, as for CDC. Schemas are kept by subject
//! and Avro text, so an event of a shape seen before is encoded without the registry; the cache
//! is bounded ([`MAX_CACHED`]): past it, it starts over before the next event and the shapes are
//! registered again (the registry answers the ids it gave).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::schema::{avro_json, avro_type, record_name};
use super::{AvroSchema, SubjectStrategy};
use crate::route::cdc::schema::{ConnectSchema, Kind};
use crate::route::dead_letter::{Failure, Reason};
use crate::route::outbox::schemas::{key_part, value_part, Columns};
use crate::route::outbox::{OutboxEvent, OutboxSpec};
use crate::route::Record;

/// How many schemas are kept before the cache starts over.
const MAX_CACHED: usize = 4096;

/// An event's Avro parts: its key's (when keys are Avro and the aggregate id is not NULL) and
/// its value's (unless the payload is NULL), each with the value to encode.
#[derive(Debug, Default)]
pub struct Parts {
    /// The key's schema and value.
    pub key: Option<(Arc<AvroSchema>, Value)>,
    /// The value's schema and value.
    pub value: Option<(Arc<AvroSchema>, Value)>,
}

/// Avro encoding of outbox events with inferred schemas, the schemas met so far shared by
/// clones of the router (and so their ids, across the relay's attempts).
#[derive(Debug, Clone)]
pub struct InferredAvro {
    strategy: SubjectStrategy,
    /// Whether keys are Avro too (`key_format = "avro"`).
    key: bool,
    /// Whether payloads are expanded (`expand_json_payload`).
    expand_json_payload: bool,
    cache: Arc<Mutex<Schemas>>,
}

/// The schemas met, by subject and Avro text.
type Schemas = HashMap<(String, String), Arc<AvroSchema>>;

impl InferredAvro {
    /// Encoding with subjects by `strategy`, keys in Avro when `key`.
    pub fn new(strategy: SubjectStrategy, key: bool, expand_json_payload: bool) -> Self {
        Self {
            strategy,
            key,
            expand_json_payload,
            cache: Arc::default(),
        }
    }

    /// The Avro parts of `event` routed to `topic`, or why its schema is no valid Avro.
    pub fn parts(
        &self,
        event: &OutboxEvent,
        spec: &OutboxSpec,
        columns: Option<&Columns<'_>>,
        topic: &str,
    ) -> Result<Parts, String> {
        let mut parts = Parts::default();
        if self.key {
            let (schema, key) = key_part(event, spec, columns);
            if !key.is_null() {
                parts.key = Some((self.schema(schema, topic, true)?, key));
            }
        }
        let (mut schema, value) = value_part(event, spec, columns, self.expand_json_payload);
        if !value.is_null() {
            if matches!(schema.kind, Kind::Struct(_)) {
                schema.optional = false;
            }
            parts.value = Some((self.schema(schema, topic, false)?, value));
        }
        Ok(parts)
    }

    /// The schemas of `event`'s parts without a registry id yet (none for an event whose
    /// schema is no valid Avro: it becomes a dead letter).
    pub fn unregistered(
        &self,
        event: &OutboxEvent,
        spec: &OutboxSpec,
        columns: Option<&Columns<'_>>,
        topic: &str,
    ) -> Vec<Arc<AvroSchema>> {
        // Only here, before the event's schemas are met, so that those its routing looks up
        // next are the ones registered.
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        let Ok(parts) = self.parts(event, spec, columns, topic) else {
            return Vec::new();
        };
        [parts.key, parts.value]
            .into_iter()
            .flatten()
            .map(|(schema, _)| schema)
            .filter(|schema| schema.id().is_none())
            .collect()
    }

    /// Sets `record`'s key (when keys are Avro) and value (unless a tombstone) to `event`'s in
    /// Avro, or says why they cannot be.
    pub fn encode(
        &self,
        event: &OutboxEvent,
        spec: &OutboxSpec,
        columns: Option<&Columns<'_>>,
        record: &mut Record,
    ) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            reason: Reason::InvalidValue,
            message: format!(
                "outbox event from {}.{}: {message}",
                event.origin.0, event.origin.1
            ),
            topic: Some(record.topic.clone()),
        };
        let parts = self
            .parts(event, spec, columns, &record.topic)
            .map_err(fail)?;
        let encoded = |part: Option<(Arc<AvroSchema>, Value)>| {
            part.map(|(schema, value)| schema.encode(&value))
                .transpose()
        };
        let key = encoded(parts.key).map_err(fail)?;
        let value = encoded(parts.value).map_err(fail)?;
        if self.key {
            record.key = key;
        }
        if record.value.is_some() {
            record.value = value;
        }
        Ok(())
    }

    /// The Avro schema of `connect`, as its subject's, from the cache when met before.
    fn schema(
        &self,
        connect: ConnectSchema,
        topic: &str,
        key: bool,
    ) -> Result<Arc<AvroSchema>, String> {
        let record = record_name(&connect).unwrap_or_else(|| avro_type(&connect.kind).to_owned());
        let subject = self.strategy.subject(topic, key, &record);
        let wanted = (subject, avro_json(&connect));
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(schema) = cache.get(&wanted) {
            return Ok(Arc::clone(schema));
        }
        let schema = Arc::new(AvroSchema::new(connect, wanted.0.clone())?);
        cache.insert(wanted, Arc::clone(&schema));
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::route::outbox::{OutboxColumns, DEFAULT_TOPIC, TOPIC_VARIABLES};
    use crate::route::template::Template;

    fn spec() -> OutboxSpec {
        OutboxSpec {
            columns: OutboxColumns::default(),
            topic: Template::parse(DEFAULT_TOPIC, TOPIC_VARIABLES).expect("parses"),
            additional: Vec::new(),
        }
    }

    /// An event of a message (no columns: its parts are optional strings).
    fn event(key: Option<&str>, payload: Option<&str>) -> OutboxEvent {
        OutboxEvent {
            id: None,
            aggregate_type: "order".into(),
            aggregate_id: key.map(str::to_owned),
            event_type: None,
            payload: payload.map(str::to_owned),
            time_micros: 0,
            traceparent: None,
            correlation_id: None,
            causation_id: None,
            schema_version: None,
            additional: Vec::new(),
            origin: ("pg_logical_emit_message".into(), "outbox".into()),
        }
    }

    fn value_schema(avro: &InferredAvro, payload: &str) -> Arc<AvroSchema> {
        let parts = avro
            .parts(&event(Some("1"), Some(payload)), &spec(), None, "t")
            .expect("valid");
        parts.value.expect("a value").0
    }

    #[test]
    fn each_payload_shape_is_a_schema_of_the_topics_subject() {
        let avro = InferredAvro::new(SubjectStrategy::Topic, true, true);
        let parts = avro
            .parts(&event(Some("1"), Some(r#"{"a": 1}"#)), &spec(), None, "t")
            .expect("valid");
        let (key, key_value) = parts.key.expect("a key");
        assert_eq!(
            (key.subject.as_str(), key.json.as_str()),
            ("t-key", r#"["null","string"]"#)
        );
        assert_eq!(key_value, json!("1"));
        let (v1, _) = parts.value.expect("a value");
        assert_eq!(v1.subject, "t-value");
        // The record itself, not a union with null (Debezium Server's converter's).
        assert_eq!(
            v1.json,
            r#"{"type":"record","name":"payload","fields":[{"name":"a","type":["null","int"],"default":null}],"connect.name":"payload"}"#
        );
        assert!(
            Arc::ptr_eq(&v1, &value_schema(&avro, r#"{"a": 2}"#)),
            "the same shape"
        );
        let wider = value_schema(&avro, r#"{"a": 3, "b": "x"}"#);
        let retyped = value_schema(&avro, r#"{"a": "x"}"#);
        for other in [&wider, &retyped] {
            assert_eq!(other.subject, "t-value");
            assert_ne!(other.json, v1.json);
        }

        let unregistered =
            |payload: &str| avro.unregistered(&event(Some("1"), Some(payload)), &spec(), None, "t");
        assert_eq!(unregistered(r#"{"a": 1}"#).len(), 2, "key and value");
        key.registered(7);
        v1.registered(8);
        assert!(unregistered(r#"{"a": 1}"#).is_empty());
        let mut record = Record {
            topic: "t".into(),
            partition: None,
            key: Some(Bytes::from_static(b"1")),
            value: Some(Bytes::from_static(b"{}")),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        avro.encode(
            &event(Some("1"), Some(r#"{"a": -1}"#)),
            &spec(),
            None,
            &mut record,
        )
        .expect("encodes");
        assert_eq!(
            record.key,
            Some(Bytes::from_static(&[0, 0, 0, 0, 7, 2, 2, b'1']))
        );
        assert_eq!(
            record.value,
            Some(Bytes::from_static(&[0, 0, 0, 0, 8, 2, 1]))
        );
        let error = avro
            .encode(
                &event(Some("1"), Some(r#"{"a": "x"}"#)),
                &spec(),
                None,
                &mut record,
            )
            .expect_err("not registered");
        assert!(
            error.message.contains("subject t-value is not registered"),
            "{error:?}"
        );
    }

    #[test]
    fn a_null_key_or_payload_is_no_bytes_and_nothing_registered() {
        let avro = InferredAvro::new(SubjectStrategy::Record, true, false);
        let parts = avro
            .parts(&event(None, None), &spec(), None, "t")
            .expect("valid");
        assert!(parts.key.is_none() && parts.value.is_none());
        assert!(avro
            .unregistered(&event(None, None), &spec(), None, "t")
            .is_empty());
        // Not expanded: the payload is a string (a message's: io.debezium.data.Json), the subject
        // under the record strategy its type's name.
        let (schema, value) = avro
            .parts(&event(None, Some(r#"{"a": 1}"#)), &spec(), None, "t")
            .expect("valid")
            .value
            .expect("a value");
        assert_eq!(schema.subject, "string");
        assert_eq!(
            schema.json,
            r#"["null",{"type":"string","connect.version":1,"connect.name":"io.debezium.data.Json"}]"#
        );
        assert_eq!(value, json!(r#"{"a": 1}"#));
    }
}
