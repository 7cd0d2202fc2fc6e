//! The outbox router: an inserted outbox row, or an outbox logical message, becomes one event.
//!
//! Extraction (this module) reads the event's fields from the row's columns or the message's JSON
//! by the configured names (Debezium's `table.field.event.*` options); rendering
//! ([`envelope`]) shapes them as a `debezium-outbox` or `cloudevents` record. Updates and deletes
//! of outbox rows are not events, so the insert-then-delete pattern publishes once.

pub mod envelope;
mod fields;
pub mod identity;
mod json_schema;
pub mod schemas;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::pg::pgoutput::{Relation, TupleData};
use crate::registry::Registered;
use crate::route::avro::inferred::InferredAvro;
use crate::route::avro::outbox::{OutboxAvro, SchemaRef};
use crate::route::avro::AvroSchema;
use crate::route::dead_letter::{Failure, Reason};
use crate::route::template::Template;
use crate::route::{qualified, Record, RouteContext, RouteResult};
use crate::source::Change;

pub use envelope::{CloudEventsMode, Envelope, KeyFormat};
use fields::{Field, Fields};

/// The column (or message field) names of an outbox, Debezium's defaults unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxColumns {
    /// Event id (`table.field.event.id`), the `id` header; optional.
    pub id: String,
    /// Routing value (`route.by.field`), `${aggregatetype}` in the topic; required.
    pub aggregate_type: String,
    /// Record key (`table.field.event.key`); NULL gives a record without key.
    pub aggregate_id: String,
    /// Event type (`table.field.event.type`); CloudEvents' `type`.
    pub event_type: String,
    /// Payload (`table.field.event.payload`), the record value.
    pub payload: String,
    /// Event time (`table.field.event.timestamp`); the commit time when absent.
    pub timestamp: String,
    /// W3C trace context, copied to the `traceparent` header.
    pub traceparent: String,
    /// Debezium's serialized span context (`traceparent=...` among Java properties).
    pub tracing_span_context: String,
    /// Correlation id, a header / CloudEvents extension.
    pub correlation_id: String,
    /// Causation id, a header / CloudEvents extension.
    pub causation_id: String,
    /// Schema version of the payload, a header / CloudEvents `dataschema`.
    pub schema_version: String,
}

impl Default for OutboxColumns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            aggregate_type: "aggregatetype".into(),
            aggregate_id: "aggregateid".into(),
            event_type: "type".into(),
            payload: "payload".into(),
            timestamp: "timestamp".into(),
            traceparent: "traceparent".into(),
            tracing_span_context: "tracingspancontext".into(),
            correlation_id: "correlation_id".into(),
            causation_id: "causation_id".into(),
            schema_version: "schema_version".into(),
        }
    }
}

/// Where an additional column goes (`table.fields.additional.placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A record header named by the alias.
    Header,
    /// A field of the value: the value becomes `{"payload": ..., alias: ...}` (in CloudEvents, an
    /// extension attribute).
    Envelope,
    /// The record's partition (the column must hold an integer).
    Partition,
}

/// One `column:placement[:alias]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdditionalField {
    /// The column or message field.
    pub column: String,
    /// Where it goes.
    pub placement: Placement,
    /// Its name there (the column name unless given).
    pub alias: String,
}

impl std::str::FromStr for AdditionalField {
    type Err = String;

    /// Parses Debezium's `column:placement[:alias]` form.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(':');
        let column = parts.next().unwrap_or_default().trim();
        let placement = match parts.next().map(str::trim) {
            Some("header") => Placement::Header,
            Some("envelope") => Placement::Envelope,
            Some("partition") => Placement::Partition,
            other => {
                return Err(format!(
                    "{text:?}: placement {:?} is not one of header, envelope, partition",
                    other.unwrap_or_default()
                ))
            }
        };
        let alias = parts.next().map_or(column, str::trim);
        if column.is_empty() || alias.is_empty() || parts.next().is_some() {
            return Err(format!("{text:?} is not column:placement[:alias]"));
        }
        Ok(Self {
            column: column.into(),
            placement,
            alias: alias.into(),
        })
    }
}

/// How the events of one outbox (a table, or the logical messages of a prefix) are read and routed.
#[derive(Debug, Clone)]
pub struct OutboxSpec {
    /// Column names.
    pub columns: OutboxColumns,
    /// Topic template (`route.topic.replacement`), variables as in [`TOPIC_VARIABLES`].
    pub topic: Template,
    /// Additional columns and where they go.
    pub additional: Vec<AdditionalField>,
}

/// Variables a topic template may use: the routing value under Debezium's name and under the
/// default column's name, and where the event came from.
pub const TOPIC_VARIABLES: &[&str] = &["routedByValue", "aggregatetype", "schema", "table"];

/// The default topic template, as Debezium's.
pub const DEFAULT_TOPIC: &str = "outbox.event.${routedByValue}";

/// An outbox table and how its rows are routed.
#[derive(Debug, Clone)]
pub struct OutboxTable {
    /// Schema of the table.
    pub schema: String,
    /// Name of the table.
    pub table: String,
    /// How its rows become events.
    pub spec: OutboxSpec,
}

impl OutboxTable {
    /// `schema.table`, as in the configuration.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// An outbox event's fields, read from a row or a message, before an envelope shapes them.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Event id, when the outbox has one.
    pub id: Option<String>,
    /// The routing value.
    pub aggregate_type: String,
    /// The key.
    pub aggregate_id: Option<String>,
    /// Event type.
    pub event_type: Option<String>,
    /// Payload: a column's text, or a message field's JSON text exactly as written; `None` for
    /// NULL.
    pub payload: Option<String>,
    /// Event time, microseconds since the Unix epoch.
    pub time_micros: i64,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Schema version.
    pub schema_version: Option<String>,
    /// Additional fields with their placement and JSON value.
    pub additional: Vec<(AdditionalField, Value)>,
    /// Where it came from: schema and table (for a message, `pg_logical_emit_message` and the
    /// prefix).
    pub origin: (String, String),
}

/// Routes outbox rows and outbox messages to records.
#[derive(Debug, Clone)]
pub struct OutboxRouter {
    tables: Vec<OutboxTable>,
    /// The prefix of outbox messages and how they are read; `None` when messages are not outbox
    /// events.
    message: Option<(String, OutboxSpec)>,
    envelope: Envelope,
    /// Values in Avro (`format = "avro"`); `None`: as the envelope writes them.
    avro: Option<AvroEvents>,
}

/// Where outbox events' Avro schemas come from (`[outbox] avro_schema`).
#[derive(Debug, Clone)]
pub enum AvroEvents {
    /// The schemas registered for the events, by their owners.
    Registered(OutboxAvro),
    /// The schemas of the events' own shapes, registered by outboxd.
    Inferred(InferredAvro),
}

impl OutboxRouter {
    /// A router for `tables` and, when given, logical messages with a prefix.
    pub fn new(
        tables: Vec<OutboxTable>,
        message: Option<(String, OutboxSpec)>,
        envelope: Envelope,
    ) -> Self {
        Self {
            tables,
            message,
            envelope,
            avro: None,
        }
    }

    /// The router with values encoded by `avro` ([`crate::route::avro::outbox`],
    /// [`crate::route::avro::inferred`]).
    #[must_use]
    pub fn with_avro(mut self, avro: AvroEvents) -> Self {
        self.avro = Some(avro);
        self
    }

    /// The outbox tables.
    pub fn tables(&self) -> &[OutboxTable] {
        &self.tables
    }

    /// Whether `relation` is an outbox table.
    pub fn is_outbox(&self, relation: &Relation) -> bool {
        self.table(relation).is_some()
    }

    /// Whether messages with `prefix` are outbox events.
    pub fn is_outbox_message(&self, prefix: &str) -> bool {
        self.message.as_ref().is_some_and(|(p, _)| p == prefix)
    }

    fn table(&self, relation: &Relation) -> Option<&OutboxTable> {
        self.table_index(relation).map(|index| &self.tables[index])
    }

    /// The position in [`Self::tables`] of the outbox table `relation` names.
    pub fn table_index(&self, relation: &Relation) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.schema == relation.namespace && t.table == relation.name)
    }

    /// The record of an inserted outbox row.
    pub fn route_row(
        &self,
        relation: &Relation,
        row: &TupleData,
        context: &RouteContext<'_>,
    ) -> RouteResult<Record> {
        let (table, event) = self.row_event(relation, row, context)?;
        let columns = schemas::Columns {
            relation,
            row,
            schema: context.schema,
        };
        let record = self
            .envelope
            .render(&event, &table.spec, context, Some(&columns))?;
        self.encoded(&event, &table.spec, Some(&columns), record)
    }

    /// The event of an inserted outbox row, and its table.
    fn row_event(
        &self,
        relation: &Relation,
        row: &TupleData,
        context: &RouteContext<'_>,
    ) -> RouteResult<(&OutboxTable, OutboxEvent)> {
        let Some(table) = self.table(relation) else {
            return Err(Failure::new(
                Reason::InvalidValue,
                format!("{} is not an outbox table", qualified(relation)),
            ));
        };
        let fields = Fields::Row { relation, row };
        let origin = (relation.namespace.clone(), relation.name.clone());
        // The table's name is formatted only for a failure's message, not for every row.
        let source = format_args!("{}.{}", relation.namespace, relation.name);
        let event = extract(&fields, &table.spec, context, origin, &source)?;
        Ok((table, event))
    }

    /// The record of an outbox logical message, whose content is a JSON object with the outbox
    /// fields.
    pub fn route_message(
        &self,
        prefix: &str,
        content: &[u8],
        context: &RouteContext<'_>,
    ) -> RouteResult<Record> {
        let (spec, event) = self.message_event(prefix, content, context)?;
        let record = self.envelope.render(&event, spec, context, None)?;
        self.encoded(&event, spec, None, record)
    }

    /// The event of an outbox logical message, and how messages are read.
    fn message_event(
        &self,
        prefix: &str,
        content: &[u8],
        context: &RouteContext<'_>,
    ) -> RouteResult<(&OutboxSpec, OutboxEvent)> {
        let Some((_, spec)) = self.message.as_ref().filter(|(p, _)| p == prefix) else {
            return Err(Failure::new(
                Reason::InvalidValue,
                format!("messages with prefix {prefix:?} are not outbox events"),
            ));
        };
        let source = format_args!("message {prefix:?}");
        let object: HashMap<String, Box<RawValue>> =
            serde_json::from_slice(content).map_err(|e| {
                Failure::new(
                    Reason::InvalidJson,
                    format!("outbox {source} is not a JSON object: {e}"),
                )
            })?;
        let fields = Fields::Message(&object);
        let origin = ("pg_logical_emit_message".to_owned(), prefix.to_owned());
        let event = extract(&fields, spec, context, origin, &source)?;
        Ok((spec, event))
    }

    /// `record` with its value (and key) in Avro when events are Avro.
    fn encoded(
        &self,
        event: &OutboxEvent,
        spec: &OutboxSpec,
        columns: Option<&schemas::Columns<'_>>,
        mut record: Record,
    ) -> RouteResult<Record> {
        match &self.avro {
            None => {}
            Some(AvroEvents::Registered(avro)) => avro.encode(event, &mut record)?,
            Some(AvroEvents::Inferred(avro)) => avro.encode(event, spec, columns, &mut record)?,
        }
        Ok(record)
    }

    /// The inferred schemas `change`'s event needs that the registry has not given an id yet:
    /// the relay registers them before [`crate::route::Router::route`]. None unless schemas
    /// are inferred, or for a change that is no outbox event or fails before it has a schema.
    pub fn unregistered(
        &self,
        change: &Change,
        context: &RouteContext<'_>,
    ) -> Vec<std::sync::Arc<AvroSchema>> {
        let Some(AvroEvents::Inferred(avro)) = &self.avro else {
            return Vec::new();
        };
        let found = match change {
            Change::Insert { relation, new } if self.is_outbox(relation) => {
                let columns = schemas::Columns {
                    relation,
                    row: new,
                    schema: context.schema,
                };
                self.row_event(relation, new, context)
                    .ok()
                    .and_then(|(table, event)| {
                        let topic = envelope::topic_of(&event, &table.spec).ok()?;
                        Some(avro.unregistered(&event, &table.spec, Some(&columns), &topic))
                    })
            }
            Change::Message {
                prefix, content, ..
            } if self.is_outbox_message(prefix) => self
                .message_event(prefix, content, context)
                .ok()
                .and_then(|(spec, event)| {
                    let topic = envelope::topic_of(&event, spec).ok()?;
                    Some(avro.unregistered(&event, spec, None, &topic))
                }),
            _ => None,
        };
        found.unwrap_or_default()
    }

    /// The registered schema `change`'s event needs and the router has not fetched yet: the
    /// relay fetches it before [`crate::route::Router::route`]. `None` for a change that is no
    /// outbox event, or whose event fails before it needs a schema (it becomes a dead letter).
    pub fn unfetched(&self, change: &Change, context: &RouteContext<'_>) -> Option<SchemaRef> {
        let Some(AvroEvents::Registered(avro)) = &self.avro else {
            return None;
        };
        let (spec, event) = match change {
            Change::Insert { relation, new } if self.is_outbox(relation) => self
                .row_event(relation, new, context)
                .map(|(table, event)| (&table.spec, event)),
            Change::Message {
                prefix, content, ..
            } if self.is_outbox_message(prefix) => self.message_event(prefix, content, context),
            _ => return None,
        }
        .ok()?;
        let topic = envelope::topic_of(&event, spec).ok()?;
        let wanted = avro.schema_ref(&event, &topic).ok()?;
        avro.unfetched(&wanted).then_some(wanted)
    }

    /// Keeps `registered`, fetched as `wanted` (from [`Self::unfetched`]).
    pub fn fetched(&self, wanted: SchemaRef, registered: &Registered) {
        if let Some(AvroEvents::Registered(avro)) = &self.avro {
            avro.fetched(wanted, registered);
        }
    }
}

/// Reads an event's fields; `source` names where they come from in a failure.
fn extract(
    fields: &Fields<'_>,
    spec: &OutboxSpec,
    context: &RouteContext<'_>,
    origin: (String, String),
    source: &dyn Display,
) -> RouteResult<OutboxEvent> {
    let columns = &spec.columns;
    let text = |name: &str| -> RouteResult<Option<String>> {
        fields
            .get(name)
            .text()
            .map(|t| t.map(Cow::into_owned))
            .map_err(|problem| invalid(source, name, &problem))
    };
    let aggregate_type = match fields.get(&columns.aggregate_type) {
        Field::Absent => return Err(missing(source, &columns.aggregate_type, "missing")),
        Field::Null => return Err(missing(source, &columns.aggregate_type, "NULL")),
        _ => text(&columns.aggregate_type)?.unwrap_or_default(),
    };
    let payload = fields
        .raw(&columns.payload)
        .map_err(|problem| invalid(source, &columns.payload, &problem))?
        .map(Cow::into_owned);
    let time_micros = match fields.get(&columns.timestamp).time_micros() {
        Ok(Some(micros)) => micros,
        Ok(None) => context.commit_ts.unix_micros(),
        Err(problem) => return Err(invalid(source, &columns.timestamp, &problem)),
    };
    let traceparent = match text(&columns.traceparent)? {
        Some(traceparent) => Some(traceparent),
        None => text(&columns.tracing_span_context)?
            .as_deref()
            .and_then(traceparent_of_span_context),
    };
    let additional = spec
        .additional
        .iter()
        .map(|field| {
            let value = fields
                .get(&field.column)
                .json(&context.schema.types)
                .map_err(|problem| invalid(source, &field.column, &problem))?;
            Ok((field.clone(), value))
        })
        .collect::<RouteResult<Vec<_>>>()?;
    Ok(OutboxEvent {
        id: text(&columns.id)?,
        aggregate_type,
        aggregate_id: text(&columns.aggregate_id)?,
        event_type: text(&columns.event_type)?,
        payload,
        time_micros,
        traceparent,
        correlation_id: text(&columns.correlation_id)?,
        causation_id: text(&columns.causation_id)?,
        schema_version: text(&columns.schema_version)?,
        additional,
        origin,
    })
}

/// The `traceparent` in Debezium's `tracingspancontext` column: Java properties text, one
/// `traceparent=...` line among others.
fn traceparent_of_span_context(context: &str) -> Option<String> {
    context.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "traceparent").then(|| value.trim().to_owned())
    })
}

fn missing(source: &dyn Display, column: &str, problem: &str) -> Failure {
    Failure::new(
        Reason::MissingField,
        format!("outbox event from {source}: routing field {column:?} is {problem}"),
    )
}

fn invalid(source: &dyn Display, column: &str, problem: &str) -> Failure {
    Failure::new(
        Reason::InvalidValue,
        format!("outbox event from {source}: field {column:?} {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additional_placement_parses_debeziums_form() {
        let field: AdditionalField = "type:header:eventType".parse().expect("parses");
        assert_eq!(
            field,
            AdditionalField {
                column: "type".into(),
                placement: Placement::Header,
                alias: "eventType".into()
            }
        );
        let field: AdditionalField = "shard:partition".parse().expect("parses");
        assert_eq!(field.alias, "shard");
        assert_eq!(field.placement, Placement::Partition);
        for bad in ["type", "type:body", "type:header:a:b", ":header"] {
            assert!(bad.parse::<AdditionalField>().is_err(), "{bad}");
        }
    }

    #[test]
    fn traceparent_is_found_in_a_debezium_span_context() {
        let context = "#Java properties\n#Mon Jan 01 00:00:00 UTC 2024\n\
                       traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n";
        assert_eq!(
            traceparent_of_span_context(context).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(traceparent_of_span_context("other=1"), None);
    }
}
