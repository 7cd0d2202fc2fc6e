//! CDC events: changes of published tables that are not outboxes, as Debezium's Postgres connector
//! writes them (JSON converter, schemas disabled unless `schemas`).
//!
//! - topic `<prefix>.<schema>.<table>`; key `{pk columns}` in primary-key order (no key without a
//!   primary key);
//! - value `{before, after, source, op, ts_ms, ts_us, ts_ns, transaction}` with `op` `c`, `u`, `d`
//!   or `t`, and `r` for a snapshot's read (its `source.snapshot` saying where in the snapshot); `source` as Debezium's (`version, connector: "postgresql", name, ts_ms, ts_us, ts_ns,
//!   snapshot: "false", db, sequence, schema, table, txId, lsn, xmin`);
//! - a tombstone (same key, null value) after each delete, unless switched off (a null key too for
//!   a table without primary key, as Debezium);
//! - an update that changes the primary key becomes a delete (+ tombstone) of the old key and a
//!   create of the new one, with `__debezium.newkey` (on the delete and its tombstone) /
//!   `__debezium.oldkey` headers, as Debezium does;
//! - truncates as `op: "t"` events when switched on (Debezium skips them by default);
//! - logical messages of other prefixes on `<prefix>.message` as `{source, op: "m", ts_ms,
//!   message: {prefix, content (base64)}}`, keyed by `{"prefix"}`, when switched on.
//!
//! With `schemas` on, every key, value and key header is Kafka Connect's JsonConverter's
//! `{"schema": ..., "payload": ...}` (Debezium Server's default output), the schemas derived once
//! per table and Relation message ([`schema`]). With `avro` too, keys and values are Avro in
//! Confluent's wire format instead, as the AvroConverter writes them ([`crate::route::avro`]);
//! key headers stay JSON, as Debezium Server's header format is.
//!
//! Column values follow the [`values::ValueConvention`]; a TOASTed value an update did not change
//! (Postgres does not send it) is taken from the old row when the table logs it (`REPLICA IDENTITY
//! FULL`), else shows as the configured placeholder, Debezium's `__debezium_unavailable_value` by
//! default. `tests/debezium_goldens.rs` compares all this with Debezium's own output.

mod event;
pub mod schema;
pub mod values;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::pg::pgoutput::{ColumnValue, OldTuple, Relation, RelationColumn, TupleData};
use crate::route::avro::tables::{AvroSchemas, AvroTable};
use crate::route::avro::AvroSchema;
use crate::route::dead_letter::{Failure, Reason};
use crate::route::{qualified, Header, Record, RouteContext, RouteResult};
use crate::source::{Change, SnapshotMark};

use event::{ChangeEvent, Fields, Message, MessageEvent, Sequence, Source};
use schema::tables::SchemaCache;
use values::ValueConvention;

/// The connector version reported in `source.version`.
const VERSION: &str = concat!("outboxd-", env!("CARGO_PKG_VERSION"));

/// Debezium-compatible change events for non-outbox tables.
#[derive(Debug, Clone)]
pub struct CdcRouter {
    /// Topic prefix and `source.name` (Debezium's `topic.prefix`).
    pub topic_prefix: String,
    /// `source.db`.
    pub database: String,
    /// Whether a tombstone follows each delete (`tombstones.on.delete`).
    pub tombstones_on_delete: bool,
    /// Whether truncates become events.
    pub truncate_events: bool,
    /// Whether logical messages of other prefixes become events.
    pub messages: bool,
    /// What an unchanged TOASTed value shows as (`unavailable.value.placeholder`).
    pub unavailable_value_placeholder: String,
    /// How column values are written.
    pub values: ValueConvention,
    /// Whether a NULL in a column with a schema `default` is written as that default, as Kafka's
    /// JsonConverter (`replace.null.with.default`, on by default) and the Avro converters do with
    /// Debezium's records; Debezium's values only.
    pub replace_null_with_default: bool,
    /// With Kafka Connect schemas (JsonConverter's `schemas.enable`): the tables' schemas.
    pub schemas: Option<SchemaCache>,
    /// With keys and values in Avro (which needs `schemas`): their Avro schemas.
    pub avro: Option<AvroSchemas>,
}

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Update,
    Delete,
    Truncate,
    /// A snapshot's read, with its `source.snapshot`.
    Read(SnapshotMark),
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Self::Create => "c",
            Self::Update => "u",
            Self::Delete => "d",
            Self::Truncate => "t",
            Self::Read(_) => "r",
        }
    }
}

impl CdcRouter {
    /// Appends the events of `change` to `out`; changes of outbox tables are skipped.
    pub fn route(
        &self,
        change: &Change,
        is_outbox: &dyn Fn(&Relation) -> bool,
        context: &RouteContext<'_>,
        out: &mut Vec<Record>,
    ) -> RouteResult<()> {
        match change {
            Change::Insert { relation, new } if !is_outbox(relation) => {
                let after = self.row(relation, new, context)?;
                let key = self.key(relation, &after, context);
                out.push(self.event(relation, key, Op::Create, None, Some(&after), context)?);
            }
            Change::Update { relation, old, new } if !is_outbox(relation) => {
                let after = match old {
                    Some(OldTuple::Full(old)) => {
                        self.row(relation, &with_toast_from(new, old), context)?
                    }
                    _ => self.row(relation, new, context)?,
                };
                let before = match old {
                    Some(OldTuple::Key(row) | OldTuple::Full(row)) => {
                        Some(self.row(relation, row, context)?)
                    }
                    None => None,
                };
                let new_key = self.key(relation, &after, context);
                let old_key = match &before {
                    None => new_key.clone(),
                    Some(before) => self.key(relation, before, context),
                };
                if old_key == new_key {
                    out.push(self.event(
                        relation,
                        new_key,
                        Op::Update,
                        before.as_ref(),
                        Some(&after),
                        context,
                    )?);
                } else {
                    // The primary key changed: Debezium's delete + tombstone + create.
                    let mut delete = self.event(
                        relation,
                        old_key.clone(),
                        Op::Delete,
                        before.as_ref(),
                        None,
                        context,
                    )?;
                    let new_key_header =
                        self.key_header("__debezium.newkey", relation, &new_key, context);
                    delete.headers.push(new_key_header.clone());
                    out.push(delete);
                    let before_tombstone = out.len();
                    self.tombstone(relation, &old_key, context, out)?;
                    // Debezium names the new key on the tombstone too.
                    if let Some(tombstone) = out.get_mut(before_tombstone) {
                        tombstone.headers.push(new_key_header);
                    }
                    let mut create =
                        self.event(relation, new_key, Op::Create, None, Some(&after), context)?;
                    create.headers.push(self.key_header(
                        "__debezium.oldkey",
                        relation,
                        &old_key,
                        context,
                    ));
                    out.push(create);
                }
            }
            Change::Delete { relation, old } if !is_outbox(relation) => {
                let (OldTuple::Key(row) | OldTuple::Full(row)) = old;
                let before = self.row(relation, row, context)?;
                let key = self.key(relation, &before, context);
                out.push(self.event(
                    relation,
                    key.clone(),
                    Op::Delete,
                    Some(&before),
                    None,
                    context,
                )?);
                self.tombstone(relation, &key, context, out)?;
            }
            Change::Read {
                relation,
                row,
                mark,
            } if !is_outbox(relation) => {
                let after = self.row(relation, row, context)?;
                let key = self.key(relation, &after, context);
                out.push(self.event(
                    relation,
                    key,
                    Op::Read(*mark),
                    None,
                    Some(&after),
                    context,
                )?);
            }
            Change::Truncate { relations, .. } if self.truncate_events => {
                for relation in relations.iter().filter(|r| !is_outbox(r)) {
                    out.push(self.event(relation, None, Op::Truncate, None, None, context)?);
                }
            }
            Change::Message {
                prefix, content, ..
            } if self.messages => out.push(self.message(prefix, content, context)?),
            _ => {}
        }
        Ok(())
    }

    /// The row as `{column: value}` in the configured convention.
    fn row<'a>(
        &self,
        relation: &'a Relation,
        row: &TupleData,
        context: &RouteContext<'_>,
    ) -> RouteResult<Fields<'a, Value>> {
        let mut fields = Vec::with_capacity(relation.columns.len());
        for (column, value) in relation.columns.iter().zip(&row.0) {
            let json = match value {
                ColumnValue::Null => self.null(relation, column, context),
                ColumnValue::UnchangedToast => {
                    Value::String(self.unavailable_value_placeholder.clone())
                }
                ColumnValue::Binary(_) => {
                    return Err(Failure::new(
                        Reason::InvalidValue,
                        format!(
                            "{}.{} came in binary format",
                            qualified(relation),
                            column.name
                        ),
                    ))
                }
                ColumnValue::Text(bytes) => {
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        Failure::new(
                            Reason::InvalidValue,
                            format!("{}.{} is not valid UTF-8", qualified(relation), column.name),
                        )
                    })?;
                    self.values
                        .convert(
                            &context.schema.types,
                            column.type_oid,
                            column.type_modifier,
                            text,
                        )
                        .map_err(|e| {
                            Failure::new(
                                Reason::InvalidValue,
                                format!("{}.{}: {e}", qualified(relation), column.name),
                            )
                        })?
                }
            };
            fields.push((column.name.as_str(), json));
        }
        Ok(Fields::sorted(fields))
    }

    /// A NULL of `column` as Debezium's converters write it: the `default` of the column's
    /// Connect schema when it has one and [`CdcRouter::replace_null_with_default`] is on, with
    /// or without schemas in the output (Debezium's Connect schema carries the default either
    /// way; Kafka's `Struct.get` and JsonConverter's `convertToJson` read it for a null), else
    /// null. An explicit NULL and an old row's column that a key-only replica identity leaves
    /// out alike: both are nulls in Debezium's struct.
    fn null(
        &self,
        relation: &Relation,
        column: &RelationColumn,
        context: &RouteContext<'_>,
    ) -> Value {
        let ValueConvention::Debezium(modes) = self.values else {
            return Value::Null;
        };
        if !self.replace_null_with_default {
            return Value::Null;
        }
        context
            .schema
            .column_default(relation.id, &column.name)
            .and_then(|expression| {
                schema::defaults::default_value(
                    &context.schema.types,
                    modes,
                    column.type_oid,
                    column.type_modifier,
                    expression,
                )
            })
            .unwrap_or(Value::Null)
    }

    /// `{pk columns}` taken from a converted row, as JSON text with the columns in primary-key
    /// order, as Debezium writes it (the key's bytes choose the partition and what compaction
    /// keeps, so the order matters); `None` without a primary key.
    fn key(
        &self,
        relation: &Relation,
        row: &Fields<'_, Value>,
        context: &RouteContext<'_>,
    ) -> Option<String> {
        let columns = context.schema.primary_key(relation.id)?;
        let fields = columns
            .iter()
            .map(|column| (column.as_str(), row.get(column).unwrap_or(&Value::Null)))
            .collect();
        serde_json::to_string(&Fields::new(fields)).ok()
    }

    fn topic(&self, relation: &Relation) -> String {
        self.table_topic(&relation.namespace, &relation.name)
    }

    /// The topic of the change events of table `schema.table`.
    pub fn table_topic(&self, schema: &str, table: &str) -> String {
        format!("{}.{schema}.{table}", self.topic_prefix)
    }

    /// Debezium's `source` block.
    fn source<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
        context: &RouteContext<'_>,
    ) -> Source<'a> {
        let micros = context.commit_ts.unix_micros();
        Source {
            connector: "postgresql",
            db: &self.database,
            lsn: context.lsn.map(|l| l.0),
            name: &self.topic_prefix,
            origin: (),
            origin_lsn: (),
            schema,
            sequence: Sequence(context.last_commit_lsn, context.lsn),
            snapshot: "false",
            table,
            ts_ms: micros.div_euclid(1000),
            ts_ns: micros.saturating_mul(1000),
            ts_us: micros,
            tx_id: context.xid.map(|x| x.0),
            version: VERSION,
            xmin: (),
        }
    }

    fn event(
        &self,
        relation: &Arc<Relation>,
        key: Option<String>,
        op: Op,
        before: Option<&Fields<'_, Value>>,
        after: Option<&Fields<'_, Value>>,
        context: &RouteContext<'_>,
    ) -> RouteResult<Record> {
        let mut source = self.source(&relation.namespace, &relation.name, context);
        if let Op::Read(mark) = op {
            source.snapshot = mark.as_str();
            if mark == SnapshotMark::Incremental {
                // Debezium's Postgres source block leaves an incremental read's txId and lsn out.
                source.tx_id = None;
                source.lsn = None;
            }
        }
        let now = crate::pg::PgTimestamp::now().unix_micros();
        let event = ChangeEvent {
            after,
            before,
            op: op.code(),
            source,
            transaction: (),
            ts_ms: now.div_euclid(1000),
            ts_ns: now.saturating_mul(1000),
            ts_us: now,
        };
        let topic = self.topic(relation);
        let value = match (&self.schemas, self.avro_table(relation, context)?) {
            (_, Some(avro)) => avro_encoded(&avro.value, &tree(&event)?)?,
            (Some(schemas), None) => {
                let table = schemas.table(|| topic.clone(), relation, context.schema);
                Bytes::from(schema::enveloped(
                    &table.envelope.json,
                    &table.envelope.schema,
                    &tree(&event)?,
                ))
            }
            (None, None) => Bytes::from(json_text(&event)?),
        };
        Ok(Record {
            topic,
            partition: None,
            key: self.record_key(relation, key, context)?,
            value: Some(value),
            headers: Vec::new(),
            timestamp_ms: Some(context.commit_ts.unix_millis()),
        })
    }

    /// The Avro schemas of `relation` when keys and values are Avro.
    fn avro_table(
        &self,
        relation: &Arc<Relation>,
        context: &RouteContext<'_>,
    ) -> RouteResult<Option<Arc<AvroTable>>> {
        let (Some(avro), Some(schemas)) = (&self.avro, &self.schemas) else {
            return Ok(None);
        };
        let topic = self.topic(relation);
        let tables = schemas.table(|| topic.clone(), relation, context.schema);
        avro.table(relation.id, &tables, &topic)
            .map(Some)
            .map_err(|e| Failure::new(Reason::InvalidValue, e))
    }

    /// The Avro schemas `change` needs that are not registered yet (none unless Avro is on).
    pub fn unregistered(
        &self,
        change: &Change,
        is_outbox: &dyn Fn(&Relation) -> bool,
        context: &RouteContext<'_>,
    ) -> Vec<Arc<AvroSchema>> {
        let mut schemas = Vec::new();
        let mut table = |relation: &Arc<Relation>| {
            // A schema that is not valid Avro is no registration: the change becomes a dead letter.
            if let Ok(Some(avro)) = self.avro_table(relation, context) {
                schemas.extend(avro.key.iter().cloned());
                schemas.push(Arc::clone(&avro.value));
            }
        };
        match change {
            Change::Insert { relation, .. }
            | Change::Read { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. }
                if !is_outbox(relation) =>
            {
                table(relation);
            }
            Change::Truncate { relations, .. } if self.truncate_events => {
                relations.iter().filter(|r| !is_outbox(r)).for_each(table);
            }
            Change::Message { .. } if self.messages => {
                if let Ok(Some((key, value))) = self.avro_message() {
                    schemas.extend([key, value]);
                }
            }
            _ => {}
        }
        schemas.retain(|s| s.id().is_none());
        schemas
    }

    /// The Avro schemas of logical-message events when keys and values are Avro.
    fn avro_message(&self) -> RouteResult<Option<(Arc<AvroSchema>, Arc<AvroSchema>)>> {
        let (Some(avro), Some(schemas)) = (&self.avro, &self.schemas) else {
            return Ok(None);
        };
        avro.message(&self.message_topic(), schemas.message())
            .map(Some)
            .map_err(|e| Failure::new(Reason::InvalidValue, e))
    }

    /// The record key: Avro when keys are, else [`CdcRouter::key_bytes`].
    fn record_key(
        &self,
        relation: &Arc<Relation>,
        key: Option<String>,
        context: &RouteContext<'_>,
    ) -> RouteResult<Option<Bytes>> {
        let avro = self.avro_table(relation, context)?;
        match avro.as_ref().and_then(|table| table.key.as_ref()) {
            Some(schema) => {
                let Some(key) = key else { return Ok(None) };
                let payload: Value = serde_json::from_str(&key).map_err(|e| {
                    Failure::new(Reason::InvalidValue, format!("key {key} is not JSON: {e}"))
                })?;
                avro_encoded(schema, &payload).map(Some)
            }
            None => Ok(self.key_bytes(relation, key, context)),
        }
    }

    /// A key's bytes: its JSON text (fields in key order), with its schema when schemas are on.
    fn key_bytes(
        &self,
        relation: &Arc<Relation>,
        key: Option<String>,
        context: &RouteContext<'_>,
    ) -> Option<Bytes> {
        let key = key?;
        let Some(schemas) = &self.schemas else {
            return Some(Bytes::from(key));
        };
        let table = schemas.table(|| self.topic(relation), relation, context.schema);
        Some(Bytes::from(match &table.key {
            Some(schema) => schema::enveloped_text(&schema.json, &key),
            None => key,
        }))
    }

    /// `__debezium.newkey` / `oldkey`: the key as the record key is written.
    fn key_header(
        &self,
        name: &str,
        relation: &Arc<Relation>,
        key: &Option<String>,
        context: &RouteContext<'_>,
    ) -> Header {
        Header {
            name: name.into(),
            value: self.key_bytes(relation, key.clone(), context),
        }
    }

    fn tombstone(
        &self,
        relation: &Arc<Relation>,
        key: &Option<String>,
        context: &RouteContext<'_>,
        out: &mut Vec<Record>,
    ) -> RouteResult<()> {
        // Compaction removes a key only by a tombstone. Debezium writes one after a delete of a
        // table without key too (with a null key), and consumers may count on it.
        if self.tombstones_on_delete {
            out.push(Record {
                topic: self.topic(relation),
                partition: None,
                key: self.record_key(relation, key.clone(), context)?,
                value: None,
                headers: Vec::new(),
                timestamp_ms: Some(context.commit_ts.unix_millis()),
            });
        }
        Ok(())
    }

    fn message(
        &self,
        prefix: &str,
        content: &[u8],
        context: &RouteContext<'_>,
    ) -> RouteResult<Record> {
        let event = MessageEvent {
            message: Message {
                content: base64::engine::general_purpose::STANDARD.encode(content),
                prefix,
            },
            op: "m",
            source: self.source("", "", context),
            transaction: (),
            ts_ms: crate::pg::PgTimestamp::now().unix_micros().div_euclid(1000),
        };
        let key = json!({ "prefix": prefix });
        let (key, value) = match (&self.schemas, self.avro_message()?) {
            (_, Some((key_schema, value_schema))) => (
                avro_encoded(&key_schema, &key)?,
                avro_encoded(&value_schema, &tree(&event)?)?,
            ),
            (Some(schemas), None) => {
                let message = schemas.message();
                (
                    Bytes::from(schema::enveloped(
                        &message.key.json,
                        &message.key.schema,
                        &key,
                    )),
                    Bytes::from(schema::enveloped(
                        &message.value.json,
                        &message.value.schema,
                        &tree(&event)?,
                    )),
                )
            }
            (None, None) => (
                Bytes::from(key.to_string()),
                Bytes::from(json_text(&event)?),
            ),
        };
        Ok(Record {
            topic: self.message_topic(),
            partition: None,
            key: Some(key),
            value: Some(value),
            headers: Vec::new(),
            timestamp_ms: Some(context.commit_ts.unix_millis()),
        })
    }

    fn message_topic(&self) -> String {
        format!("{}.message", self.topic_prefix)
    }
}

/// `event` as the `Value` that the schemas' and Avro's encoders walk.
fn tree(event: &impl Serialize) -> RouteResult<Value> {
    serde_json::to_value(event).map_err(|e| Failure::new(Reason::InvalidValue, e.to_string()))
}

/// `event` as JSON text, written straight from its parts into a buffer of a typical event's size
/// (growing it from empty took several reallocations per event).
fn json_text(event: &impl Serialize) -> RouteResult<Vec<u8>> {
    let mut text = Vec::with_capacity(512);
    serde_json::to_writer(&mut text, event)
        .map_err(|e| Failure::new(Reason::InvalidValue, e.to_string()))?;
    Ok(text)
}

/// `payload` in `schema`'s Avro, a failure naming why it does not fit.
fn avro_encoded(schema: &AvroSchema, payload: &Value) -> RouteResult<Bytes> {
    schema
        .encode(payload)
        .map_err(|e| Failure::new(Reason::InvalidValue, e))
}

/// `new` with each unchanged TOASTed value (which Postgres leaves out of an update) taken from
/// `old`, the full old row that `REPLICA IDENTITY FULL` logs: Debezium does the same, so only
/// tables without the full old row show the placeholder.
fn with_toast_from(new: &TupleData, old: &TupleData) -> TupleData {
    TupleData(
        new.0
            .iter()
            .enumerate()
            .map(|(i, new)| match (new, old.0.get(i)) {
                (ColumnValue::UnchangedToast, Some(old)) => old.clone(),
                (new, _) => new.clone(),
            })
            .collect(),
    )
}
