//! Envelopes: how an [`OutboxEvent`] is laid out in a Kafka record.
//!
//! - `debezium-outbox` (default), as Debezium's outbox event router with the JSON converter and
//!   schemas disabled: topic from the template, key = aggregate id, value = payload, header `id`;
//!   additional fields as headers, as fields of an envelope `{"payload": ..., alias: ...}`, or as
//!   the partition.
//! - `cloudevents`, CloudEvents 1.0 in the Kafka protocol binding: structured mode (the whole event
//!   as `application/cloudevents+json`) or binary mode (`ce_*` headers, the payload as value).
//!
//! In both, a trace context becomes the W3C `traceparent` header, and correlation id, causation id
//! and schema version travel as headers (CloudEvents: extensions and `dataschema`).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::schemas::{self, Columns};
use super::{OutboxEvent, OutboxSpec, Placement};
use crate::route::dead_letter::{Failure, Reason};
use crate::route::template::Template;
use crate::route::{Header, Record, RouteContext, RouteResult};

/// How a record's key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// The aggregate id's text, as Kafka Connect's StringConverter writes it.
    String,
    /// The aggregate id as a JSON string (quoted), as Kafka Connect's JsonConverter writes it.
    Json,
    /// The aggregate id in Avro with its column's schema, as the AvroConverter writes it (keys
    /// only, with `avro_schema = "inferred"`: [`crate::route::avro::inferred`] encodes it).
    Avro,
}

/// CloudEvents content mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudEventsMode {
    /// The event as one JSON document (`application/cloudevents+json`).
    Structured,
    /// Attributes as `ce_*` headers, the payload as value.
    Binary,
}

/// Which envelope, and its options.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The layout.
    pub kind: EnvelopeKind,
    /// Whether the payload is JSON and goes into the value as JSON (`table.expand.json.payload`);
    /// otherwise it goes in as a JSON string, as Debezium's default does.
    pub expand_json_payload: bool,
    /// How keys are written.
    pub key_format: KeyFormat,
    /// Whether `debezium-outbox` records carry Kafka Connect schemas ([`super::schemas`]).
    pub schemas: bool,
    /// Whether a `debezium-outbox` event with a NULL or blank payload is a tombstone
    /// (`route.tombstone.on.empty.payload`); otherwise its value is JSON `null`, as
    /// JsonConverter writes it.
    pub tombstone_on_empty_payload: bool,
    /// How `debezium-outbox` header values are written without schemas: the text, or as
    /// JsonConverter writes them (a JSON string).
    pub header_format: KeyFormat,
}

/// The layout of the record.
#[derive(Debug, Clone)]
pub enum EnvelopeKind {
    /// Debezium's outbox event router.
    DebeziumOutbox,
    /// CloudEvents 1.0.
    CloudEvents {
        /// Structured or binary.
        mode: CloudEventsMode,
        /// The `source` attribute; variables as in [`SOURCE_VARIABLES`].
        source: Template,
        /// The `dataschema` attribute, set when the event has a schema version; variables as in
        /// [`DATASCHEMA_VARIABLES`].
        dataschema: Template,
    },
}

/// Variables of the CloudEvents `source` template.
pub const SOURCE_VARIABLES: &[&str] = &["schema", "table", "aggregatetype"];

/// Variables of the CloudEvents `dataschema` template.
pub const DATASCHEMA_VARIABLES: &[&str] =
    &["schema", "table", "aggregatetype", "type", "schema_version"];

/// Kafka's legal topic names: `[a-zA-Z0-9._-]`, at most 249 characters.
fn legal_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Envelope {
    /// The record of `event`: the parts every layout shares (topic, key, payload, placed
    /// additional fields), then the layout's own value and headers; `columns` types its parts
    /// when schemas are on.
    pub fn render(
        &self,
        event: &OutboxEvent,
        spec: &OutboxSpec,
        context: &RouteContext<'_>,
        columns: Option<&Columns<'_>>,
    ) -> RouteResult<Record> {
        let rendering = Rendering {
            event,
            topic: topic_of(event, spec)?,
        };
        let payload = self.payload_text(&rendering)?;
        let placed = rendering.place_additional_fields()?;
        let mut record = Record {
            topic: rendering.topic.clone(),
            partition: placed.partition,
            key: self.key(event),
            value: None,
            headers: Vec::new(),
            // Kafka refuses negative timestamps (before 1970): those records take the producer's.
            timestamp_ms: Some(event.time_micros.div_euclid(1000)).filter(|ms| *ms >= 0),
        };
        match &self.kind {
            EnvelopeKind::DebeziumOutbox => {
                let tombstone = self.tombstone_on_empty_payload
                    && event.payload.as_deref().is_none_or(|p| p.trim().is_empty());
                debezium_outbox(&mut record, event, placed, payload, tombstone);
                if self.schemas {
                    schemas::apply(
                        &mut record,
                        event,
                        spec,
                        columns,
                        self.expand_json_payload,
                        self.key_format == KeyFormat::Json,
                    );
                } else if self.header_format == KeyFormat::Json {
                    json_headers(&mut record);
                }
            }
            EnvelopeKind::CloudEvents {
                mode,
                source,
                dataschema,
            } => {
                let templates = CloudEventsTemplates { source, dataschema };
                let attributes = rendering.cloud_events_attributes(
                    &templates,
                    placed.envelope_fields,
                    context,
                )?;
                cloud_events(
                    &mut record,
                    *mode,
                    attributes,
                    event,
                    placed.headers,
                    payload,
                );
            }
        }
        Ok(record)
    }

    /// The key: a NULL aggregate id is no key as a string, the JSON `null` as JsonConverter
    /// writes it.
    fn key(&self, event: &OutboxEvent) -> Option<Bytes> {
        match (self.key_format, &event.aggregate_id) {
            // Avro: the text until the Avro encoding replaces it.
            (KeyFormat::String | KeyFormat::Avro, id) => id.clone().map(Bytes::from),
            (KeyFormat::Json, id) => Some(Bytes::from(
                id.clone().map_or(Value::Null, Value::String).to_string(),
            )),
        }
    }

    /// The payload as JSON text: as written when it is JSON (validated, not re-serialized, so key
    /// order and number precision survive), else as a JSON string.
    fn payload_text(&self, rendering: &Rendering<'_>) -> RouteResult<Option<String>> {
        Ok(match &rendering.event.payload {
            None => None,
            Some(text) if self.expand_json_payload => {
                serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
                    rendering.fail(
                        Reason::InvalidJson,
                        &format!(
                            "payload is not JSON ({e}); with expand_json_payload = true it must be"
                        ),
                    )
                })?;
                Some(text.clone())
            }
            Some(text) => Some(Value::String(text.clone()).to_string()),
        })
    }
}

/// The topic of `event` from the spec's template, refused unless Kafka would accept its name.
pub(super) fn topic_of(event: &OutboxEvent, spec: &OutboxSpec) -> RouteResult<String> {
    let (schema, table) = (&event.origin.0, &event.origin.1);
    let topic = spec
        .topic
        .render(|name| match name {
            "routedByValue" | "aggregatetype" => Some(&event.aggregate_type),
            "schema" => Some(schema),
            "table" => Some(table),
            _ => None,
        })
        .unwrap_or_default();
    if legal_topic(&topic) {
        Ok(topic)
    } else {
        Err(Failure::new(
            Reason::InvalidValue,
            format!(
                "outbox event from {schema}.{table}: topic {topic:?} (from the routing value {:?}) \
                 is not a legal Kafka topic name ([a-zA-Z0-9._-], 1 to 249 characters)",
                event.aggregate_type
            ),
        ))
    }
}

/// One event being rendered to its topic: what a failure names.
struct Rendering<'a> {
    event: &'a OutboxEvent,
    topic: String,
}

/// The additional fields, by where they go.
struct PlacedFields {
    partition: Option<i32>,
    headers: Vec<Header>,
    envelope_fields: Map<String, Value>,
}

/// The CloudEvents templates of the envelope.
struct CloudEventsTemplates<'a> {
    source: &'a Template,
    dataschema: &'a Template,
}

impl Rendering<'_> {
    /// A failure of this event, naming its table and carrying its topic (for the dead letter).
    fn fail(&self, reason: Reason, message: &str) -> Failure {
        let (schema, table) = &self.event.origin;
        Failure {
            reason,
            message: format!("outbox event from {schema}.{table}: {message}"),
            topic: Some(self.topic.clone()),
        }
    }

    /// Sorts the additional fields into headers, envelope fields and the partition.
    fn place_additional_fields(&self) -> RouteResult<PlacedFields> {
        let mut placed = PlacedFields {
            partition: None,
            headers: Vec::new(),
            envelope_fields: Map::new(),
        };
        for (field, value) in &self.event.additional {
            match field.placement {
                Placement::Header => placed.headers.push(Header {
                    name: field.alias.clone(),
                    value: header_text(value).map(Bytes::from),
                }),
                Placement::Envelope => {
                    placed
                        .envelope_fields
                        .insert(field.alias.clone(), value.clone());
                }
                Placement::Partition => {
                    let number = match value {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    let partition = number
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| {
                            self.fail(
                                Reason::InvalidValue,
                                &format!(
                                    "partition field {:?} is {value}, not a partition number",
                                    field.column
                                ),
                            )
                        })?;
                    placed.partition = Some(partition);
                }
            }
        }
        Ok(placed)
    }

    /// The CloudEvents attributes in their order, extensions from the trace fields and the
    /// envelope fields last.
    fn cloud_events_attributes(
        &self,
        templates: &CloudEventsTemplates<'_>,
        envelope_fields: Map<String, Value>,
        context: &RouteContext<'_>,
    ) -> RouteResult<Vec<(String, String)>> {
        let event = self.event;
        let (schema, table) = (&event.origin.0, &event.origin.1);
        let event_type = event.event_type.clone().ok_or_else(|| {
            self.fail(
                Reason::MissingField,
                "the event type is missing or NULL; CloudEvents requires `type`",
            )
        })?;
        // Without an id column, a logical-mode event is identified by its WAL position; poll mode
        // has none (and always has the id column).
        let id = event
            .id
            .clone()
            .or_else(|| context.lsn.map(|lsn| lsn.to_string()))
            .ok_or_else(|| {
                self.fail(
                    Reason::MissingField,
                    "the event id is missing or NULL; CloudEvents requires `id`",
                )
            })?;
        let vars = |name: &str| -> Option<&str> {
            match name {
                "schema" => Some(schema),
                "table" => Some(table),
                "aggregatetype" => Some(&event.aggregate_type),
                "type" => Some(&event_type),
                "schema_version" => event.schema_version.as_deref(),
                _ => None,
            }
        };
        let mut attributes: Vec<(String, String)> = vec![
            ("specversion".into(), "1.0".into()),
            ("id".into(), id),
            (
                "source".into(),
                templates.source.render(vars).unwrap_or_default(),
            ),
            ("type".into(), event_type.clone()),
            ("time".into(), rfc3339(event.time_micros)),
        ];
        if let Some(subject) = &event.aggregate_id {
            attributes.push(("subject".into(), subject.clone()));
        }
        if let Some(uri) = event
            .schema_version
            .as_ref()
            .and_then(|_| templates.dataschema.render(vars))
        {
            attributes.push(("dataschema".into(), uri));
        }
        let extensions = [
            ("correlationid", &event.correlation_id),
            ("causationid", &event.causation_id),
            ("traceparent", &event.traceparent),
        ];
        for (name, value) in extensions {
            if let Some(value) = value {
                attributes.push((name.into(), value.clone()));
            }
        }
        for (alias, value) in envelope_fields {
            if let Some(text) = header_text(&value) {
                attributes.push((extension_name(&alias), text));
            }
        }
        Ok(attributes)
    }
}

/// Debezium's outbox layout: header `id`, the additional headers, the trace headers, and the
/// payload as value (inside an envelope object when fields are placed there), or no value for a
/// `tombstone`.
fn debezium_outbox(
    record: &mut Record,
    event: &OutboxEvent,
    placed: PlacedFields,
    payload: Option<String>,
    tombstone: bool,
) {
    if let Some(id) = &event.id {
        record.headers.push(Header::text("id", id.clone()));
    }
    record.headers.extend(placed.headers);
    let trace_headers = [
        ("traceparent", &event.traceparent),
        ("correlation_id", &event.correlation_id),
        ("causation_id", &event.causation_id),
        ("schema_version", &event.schema_version),
    ];
    for (name, value) in trace_headers {
        if let Some(value) = value {
            record.headers.push(Header::text(name, value.clone()));
        }
    }
    record.value = if tombstone {
        None
    } else if placed.envelope_fields.is_empty() {
        Some(Bytes::from(payload.unwrap_or_else(|| "null".into())))
    } else {
        Some(object_with_raw(
            placed.envelope_fields,
            "payload",
            payload.as_deref().unwrap_or("null"),
        ))
    };
}

/// CloudEvents in the Kafka protocol binding: one JSON document (structured) or `ce_*` headers
/// and the payload as value (binary); `traceparent` also as the W3C header, additional headers
/// last.
fn cloud_events(
    record: &mut Record,
    mode: CloudEventsMode,
    attributes: Vec<(String, String)>,
    event: &OutboxEvent,
    mut headers: Vec<Header>,
    payload: Option<String>,
) {
    if let Some(traceparent) = &event.traceparent {
        headers.push(Header::text("traceparent", traceparent.clone()));
    }
    match mode {
        CloudEventsMode::Structured => {
            let mut object: Map<String, Value> = attributes
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            object.insert(
                "datacontenttype".into(),
                Value::String("application/json".into()),
            );
            record.value = Some(object_with_raw(
                object,
                "data",
                payload.as_deref().unwrap_or("null"),
            ));
            record.headers.push(Header::text(
                "content-type",
                "application/cloudevents+json; charset=UTF-8",
            ));
        }
        CloudEventsMode::Binary => {
            for (name, value) in attributes {
                record
                    .headers
                    .push(Header::text(format!("ce_{name}"), value));
            }
            record
                .headers
                .push(Header::text("content-type", "application/json"));
            record.value = payload.map(Bytes::from);
        }
    }
    record.headers.extend(headers);
}

/// Each header's text as a JSON string, as JsonConverter writes a string header without schema.
fn json_headers(record: &mut Record) {
    for header in &mut record.headers {
        if let Some(text) = header
            .value
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
        {
            header.value = Some(Bytes::from(Value::from(text).to_string()));
        }
    }
}

/// A header's text for a JSON value: a string's content, other JSON as JSON text, null as null.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// A CloudEvents extension attribute name: lower-case letters and digits only.
fn extension_name(alias: &str) -> String {
    alias
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `object` serialized with one more member, `name`, whose value is the JSON text `raw` as it is.
fn object_with_raw(object: Map<String, Value>, name: &str, raw: &str) -> Bytes {
    let mut text = Value::Object(object).to_string();
    text.pop(); // the closing brace
    if text.len() > 1 {
        text.push(',');
    }
    text.push_str(&Value::String(name.to_owned()).to_string());
    text.push(':');
    text.push_str(raw);
    text.push('}');
    Bytes::from(text)
}

/// RFC 3339 in UTC with `Z`, fractional seconds only as precise as needed.
fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_as_kafka_does() {
        assert!(legal_topic("outbox.event.order_v2-x"));
        for bad in ["", ".", "..", "outbox.event.Ördér", "a b", &"x".repeat(250)] {
            assert!(!legal_topic(bad), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_706_704_496_789_000), "2024-01-31T12:34:56.789Z");
        assert_eq!(rfc3339(1_706_704_496_000_000), "2024-01-31T12:34:56Z");
        assert_eq!(
            rfc3339(1_706_704_496_000_001),
            "2024-01-31T12:34:56.000001Z"
        );
        assert_eq!(extension_name("Event_Type-2"), "eventtype2");
    }

    #[test]
    fn a_raw_member_is_spliced_in_as_written() {
        let mut object = Map::new();
        object.insert("a".into(), Value::from(1));
        let text = object_with_raw(object, "data", r#"{"z": 1, "big": 123456789012345678901}"#);
        assert_eq!(
            text,
            r#"{"a":1,"data":{"z": 1, "big": 123456789012345678901}}"#
        );
        assert_eq!(
            object_with_raw(Map::new(), "payload", "null"),
            r#"{"payload":null}"#
        );
    }
}
