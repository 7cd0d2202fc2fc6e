//! Outbox events in Avro with the schemas their owners registered (`[outbox] format = "avro"`,
//! `avro_schema = "registered"`): the value is the event's JSON payload encoded with the schema
//! registered for the event, in Confluent's wire format; key and headers stay as in JSON.
//!
//! - The subject follows `[schema_registry] subject_name_strategy`, with the event type as the
//!   record name: `<topic>-value` (`topic`), the type (`record`: the type column then holds
//!   full record names such as `shop.OrderPlaced`), `<topic>-<type>` (`topic_record`).
//! - The version is the event's schema version column (`[outbox.columns] schema_version`) when
//!   the row has one, else the subject's latest, re-read after `avro_latest_ttl`.
//! - The router cannot wait on the registry: the relay asks [`OutboxAvro::unfetched`] which
//!   schema an event needs, fetches it (`crate::registry::Registry::schema`) and hands it to
//!   [`OutboxAvro::fetched`] before routing; schemas are kept by subject and version, so a
//!   numbered version is fetched once in the relay's life.
//! - A payload that does not fit its schema ([`super::json`]), a version that is no number, a
//!   registered schema that is not Avro: the event becomes a dead letter naming why, and the rest
//!   flows on. A subject or version the registry does not have is retried instead
//!   (`crate::registry::RegistryError::NotFound`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::json::JsonSchema;
use super::{SubjectStrategy, MAGIC};
use crate::registry::{Registered, Version};
use crate::route::dead_letter::{Failure, Reason};
use crate::route::outbox::OutboxEvent;
use crate::route::Record;

/// Which registered schema an event is encoded with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaRef {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: Version,
}

/// A fetched schema, ready to encode with, or why it cannot be used.
type Usable = Result<Arc<Schema>, String>;

/// A registered schema, parsed.
#[derive(Debug)]
struct Schema {
    /// The registry's id.
    id: u32,
    /// Its version, for messages.
    version: u32,
    /// It parsed.
    json: JsonSchema,
}

/// A fetched schema and when, for the latest version's refresh.
#[derive(Debug, Clone)]
struct Cached {
    schema: Usable,
    fetched: Instant,
}

/// Avro encoding of outbox events, with the schemas fetched so far (shared by clones of the
/// router, and so kept across the relay's attempts).
#[derive(Debug, Clone)]
pub struct OutboxAvro {
    strategy: SubjectStrategy,
    /// How long the latest version is used before it is asked for again.
    latest_ttl: Duration,
    cache: Arc<Mutex<HashMap<SchemaRef, Cached>>>,
}

impl OutboxAvro {
    /// Encoding with subjects by `strategy`, the latest versions re-read after `latest_ttl`.
    pub fn new(strategy: SubjectStrategy, latest_ttl: Duration) -> Self {
        Self {
            strategy,
            latest_ttl,
            cache: Arc::default(),
        }
    }

    /// The schema `event` (routed to `topic`) is encoded with; a failure for an event that names
    /// none (no type under a record-name strategy, a version that is no number).
    pub fn schema_ref(&self, event: &OutboxEvent, topic: &str) -> Result<SchemaRef, Failure> {
        let fail = |message: String| Failure {
            reason: Reason::InvalidValue,
            message: format!(
                "outbox event from {}.{}: {message}",
                event.origin.0, event.origin.1
            ),
            topic: Some(topic.to_owned()),
        };
        let record =
            match (self.strategy, event.event_type.as_deref()) {
                (SubjectStrategy::Topic, _) => "",
                (_, Some(record)) if !record.is_empty() => record,
                _ => return Err(fail(
                    "the event type is missing or NULL; the record-name subject strategies take \
                     the subject from it"
                        .into(),
                )),
            };
        let version = match event.schema_version.as_deref().map(str::trim) {
            None => Version::Latest,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if n > 0 => Version::Number(n),
                _ => {
                    return Err(fail(format!(
                        "schema version {text:?} is not a registry version (1, 2, ...)"
                    )))
                }
            },
        };
        Ok(SchemaRef {
            subject: self.strategy.subject(topic, false, record),
            version,
        })
    }

    /// Whether `wanted` must be fetched before an event using it is routed: never fetched, or
    /// the latest version fetched longer than `avro_latest_ttl` ago.
    pub fn unfetched(&self, wanted: &SchemaRef) -> bool {
        match self.lock().get(wanted) {
            None => true,
            Some(cached) => {
                wanted.version == Version::Latest && cached.fetched.elapsed() >= self.latest_ttl
            }
        }
    }

    /// Keeps `registered`, the schema of `wanted`.
    pub fn fetched(&self, wanted: SchemaRef, registered: &Registered) {
        let schema = if registered.kind == "AVRO" {
            JsonSchema::parse(&registered.schema)
                .map(|json| {
                    Arc::new(Schema {
                        id: registered.id,
                        version: registered.version,
                        json,
                    })
                })
                .map_err(|e| format!("its schema (id {}) is {e}", registered.id))
        } else {
            Err(format!(
                "its schema (id {}) is a {} schema, not Avro",
                registered.id, registered.kind
            ))
        };
        let cached = Cached {
            schema: schema
                .map_err(|e| format!("{} of subject {}: {e}", wanted.version, wanted.subject)),
            fetched: Instant::now(),
        };
        self.lock().insert(wanted, cached);
    }

    /// Sets `record`'s value (the rendered `event`) to the payload in Avro, or says why the
    /// payload does not fit. A tombstone stays one.
    pub fn encode(&self, event: &OutboxEvent, record: &mut Record) -> Result<(), Failure> {
        if record.value.is_none() {
            return Ok(());
        }
        let wanted = self.schema_ref(event, &record.topic)?;
        let fail = |message: String| Failure {
            reason: Reason::InvalidValue,
            message: format!(
                "outbox event from {}.{}: {message}",
                event.origin.0, event.origin.1
            ),
            topic: Some(record.topic.clone()),
        };
        let schema = match self.lock().get(&wanted) {
            Some(cached) => cached.schema.clone().map_err(fail)?,
            // The relay fetches every schema before routing; only a router used without a
            // registry gets here.
            None => {
                return Err(fail(format!(
                    "the {} of subject {} was not fetched from the schema registry",
                    wanted.version, wanted.subject
                )))
            }
        };
        let payload: Value = match &event.payload {
            None => Value::Null,
            Some(text) => serde_json::from_str(text)
                .map_err(|e| fail(format!("payload is not JSON ({e})")))?,
        };
        let misfit = |e: String| {
            fail(format!(
                "the payload does not fit version {} of subject {} (schema id {}): {e}",
                schema.version, wanted.subject, schema.id
            ))
        };
        let value = schema.json.value(&payload).map_err(misfit)?;
        let datum = apache_avro::to_avro_datum(schema.json.schema(), value)
            .map_err(|e| misfit(e.to_string()))?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC);
        out.extend(schema.id.to_be_bytes());
        out.extend(datum);
        record.value = Some(Bytes::from(out));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SchemaRef, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"shop",
        "fields":[{"name":"id","type":"long"}]}"#;

    fn event(event_type: Option<&str>, version: Option<&str>, payload: &str) -> OutboxEvent {
        OutboxEvent {
            id: None,
            aggregate_type: "order".into(),
            aggregate_id: Some("1".into()),
            event_type: event_type.map(str::to_owned),
            payload: Some(payload.into()),
            time_micros: 0,
            traceparent: None,
            correlation_id: None,
            causation_id: None,
            schema_version: version.map(str::to_owned),
            additional: Vec::new(),
            origin: ("public".into(), "outbox".into()),
        }
    }

    fn record(value: &str) -> Record {
        Record {
            topic: "outbox.event.order".into(),
            partition: None,
            key: None,
            value: Some(Bytes::from(value.to_owned())),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn subjects_and_versions_come_from_the_event() {
        let topic = OutboxAvro::new(SubjectStrategy::Topic, Duration::ZERO);
        let wanted = topic
            .schema_ref(&event(None, Some("2"), "{}"), "outbox.event.order")
            .expect("a ref");
        assert_eq!(wanted.subject, "outbox.event.order-value");
        assert_eq!(wanted.version, Version::Number(2));
        let record = OutboxAvro::new(SubjectStrategy::Record, Duration::ZERO);
        let wanted = record
            .schema_ref(&event(Some("shop.OrderPlaced"), None, "{}"), "t")
            .expect("a ref");
        assert_eq!(wanted.subject, "shop.OrderPlaced");
        assert_eq!(wanted.version, Version::Latest);
        let error = record
            .schema_ref(&event(None, None, "{}"), "t")
            .expect_err("no type");
        assert!(error.message.contains("event type is missing"), "{error:?}");
        let error = topic
            .schema_ref(&event(None, Some("v2"), "{}"), "t")
            .expect_err("no number");
        assert!(
            error.message.contains("\"v2\" is not a registry version"),
            "{error:?}"
        );
    }

    #[test]
    fn payloads_are_encoded_with_the_fetched_schema_or_become_failures() {
        let avro = OutboxAvro::new(SubjectStrategy::Topic, Duration::from_secs(60));
        let good = event(None, None, r#"{"id": -1}"#);
        let wanted = avro.schema_ref(&good, "outbox.event.order").expect("a ref");
        assert!(avro.unfetched(&wanted));
        let mut out = record(r#"{"id": -1}"#);
        assert!(avro.encode(&good, &mut out).is_err(), "not fetched");
        avro.fetched(
            wanted.clone(),
            &Registered {
                id: 258,
                version: 1,
                kind: "AVRO".into(),
                schema: V1.into(),
            },
        );
        assert!(!avro.unfetched(&wanted));
        avro.encode(&good, &mut out).expect("fits");
        assert_eq!(out.value, Some(Bytes::from_static(&[0, 0, 0, 1, 2, 1])));

        let bad = event(None, None, r#"{"id": "x"}"#);
        let error = avro
            .encode(&bad, &mut record(r#"{"id": "x"}"#))
            .expect_err("misfit");
        assert_eq!(error.topic.as_deref(), Some("outbox.event.order"));
        assert!(
            error.message.contains(
                "does not fit version 1 of subject outbox.event.order-value (schema id 258): \
                 at /id: \"x\" does not fit long"
            ),
            "{error:?}"
        );

        let mut tombstone = record("");
        tombstone.value = None;
        avro.encode(&bad, &mut tombstone)
            .expect("a tombstone stays");
        assert_eq!(tombstone.value, None);

        let expired = OutboxAvro::new(SubjectStrategy::Topic, Duration::ZERO);
        expired.fetched(
            wanted.clone(),
            &Registered {
                id: 9,
                version: 1,
                kind: "PROTOBUF".into(),
                schema: "syntax".into(),
            },
        );
        assert!(expired.unfetched(&wanted), "the latest is read again");
        let error = expired
            .encode(&good, &mut record("{}"))
            .expect_err("not Avro");
        assert!(
            error.message.contains("PROTOBUF schema, not Avro"),
            "{error:?}"
        );
    }
}
