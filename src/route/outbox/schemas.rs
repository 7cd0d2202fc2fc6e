//! Outbox records with Kafka Connect schemas (`outbox.schemas`): key, value and headers as
//! JsonConverter writes them with `schemas.enable=true`, `{"schema": ..., "payload": ...}`, as
//! Debezium Server's defaults do after the outbox event router.
//!
//! Debezium's router gives each part the schema of the column it comes from (the Postgres
//! connector's, [`column_schema`], optional unless the column is `NOT NULL`): the key the
//! aggregate id column's, the `id` header the id column's (`io.debezium.data.Uuid` for a uuid),
//! an additional header its column's, the value the payload column's (`io.debezium.data.Json` for
//! jsonb) or, with `table.expand.json.payload`, the schema inferred from the payload
//! ([`super::json_schema`]). Values are converted as the Postgres connector converts them with
//! its default options. An outbox message has no columns: its parts are optional strings (the
//! value `io.debezium.data.Json`). outboxd's own trace headers are optional strings.

use bytes::Bytes;
use serde_json::Value;

use super::json_schema;
use super::{OutboxEvent, OutboxSpec, Placement};
use crate::pg::pgoutput::{ColumnValue, Relation, TupleData};
use crate::pg::schema::Schema;
use crate::route::cdc::schema::columns::column_schema;
use crate::route::cdc::schema::{connect_json, enveloped, ConnectSchema, Kind};
use crate::route::cdc::values::{DebeziumModes, ValueConvention};
use crate::route::Record;

/// The columns of the outbox row an event came from, to type its parts; a message has none.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// The table.
    pub relation: &'a Relation,
    /// The inserted row.
    pub row: &'a TupleData,
    /// Column types and `NOT NULL`s.
    pub schema: &'a Schema,
}

impl Columns<'_> {
    /// The schema and Debezium value of `column`; `None` when the table has no such column or
    /// its value cannot be converted.
    fn typed(&self, column: &str) -> Option<(ConnectSchema, Value)> {
        let index = self
            .relation
            .columns
            .iter()
            .position(|c| c.name == column)?;
        let described = &self.relation.columns[index];
        let types = &self.schema.types;
        let optional = !self.schema.is_not_null(self.relation.id, column);
        let schema = column_schema(
            types,
            DebeziumModes::default(),
            described.type_oid,
            described.type_modifier,
        )
        .with_optional(optional);
        let value = match self.row.0.get(index)? {
            ColumnValue::Null => Value::Null,
            ColumnValue::Text(bytes) => ValueConvention::Debezium(DebeziumModes::default())
                .convert(
                    types,
                    described.type_oid,
                    described.type_modifier,
                    std::str::from_utf8(bytes).ok()?,
                )
                .ok()?,
            ColumnValue::UnchangedToast | ColumnValue::Binary(_) => return None,
        };
        Some((schema, value))
    }
}

/// The schema and value of `column`: typed by the row's column, else an optional string of
/// `text`.
fn part(columns: Option<&Columns<'_>>, column: &str, text: Option<&str>) -> (ConnectSchema, Value) {
    columns.and_then(|c| c.typed(column)).unwrap_or_else(|| {
        (
            ConnectSchema::of(Kind::String).optional(),
            text.map_or(Value::Null, Value::from),
        )
    })
}

fn bytes((schema, value): &(ConnectSchema, Value)) -> Bytes {
    Bytes::from(enveloped(&connect_json(schema), schema, value))
}

/// The key's schema and value: the aggregate id column's.
pub(crate) fn key_part(
    event: &OutboxEvent,
    spec: &OutboxSpec,
    columns: Option<&Columns<'_>>,
) -> (ConnectSchema, Value) {
    part(
        columns,
        &spec.columns.aggregate_id,
        event.aggregate_id.as_deref(),
    )
}

/// The value's schema and value: the payload expanded with its inferred schema, else (not
/// expanding, or a payload Debezium could not expand) the payload column's.
pub(crate) fn value_part(
    event: &OutboxEvent,
    spec: &OutboxSpec,
    columns: Option<&Columns<'_>>,
    expand_json_payload: bool,
) -> (ConnectSchema, Value) {
    let names = &spec.columns;
    let expanded = event
        .payload
        .as_deref()
        .filter(|_| expand_json_payload)
        .and_then(|text| json_schema::expand(&names.payload, text));
    expanded.unwrap_or_else(|| {
        let (schema, value) = part(columns, &names.payload, event.payload.as_deref());
        // A message's payload: JSON, as the router reads it.
        let schema = match columns {
            Some(_) => schema,
            None => schema.logical("io.debezium.data.Json", 1),
        };
        (schema, value)
    })
}

/// Rewrites a `debezium-outbox` record's key (when written as JSON), value (unless a tombstone)
/// and headers with their schemas.
pub(super) fn apply(
    record: &mut Record,
    event: &OutboxEvent,
    spec: &OutboxSpec,
    columns: Option<&Columns<'_>>,
    expand_json_payload: bool,
    key_json: bool,
) {
    let names = &spec.columns;
    if key_json {
        record.key = Some(bytes(&key_part(event, spec, columns)));
    }
    if record.value.is_some() {
        record.value = Some(bytes(&value_part(
            event,
            spec,
            columns,
            expand_json_payload,
        )));
    }
    for header in &mut record.headers {
        let text = header
            .value
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok());
        let column = if header.name == "id" && event.id.is_some() {
            Some(names.id.as_str())
        } else {
            spec.additional
                .iter()
                .find(|f| f.placement == Placement::Header && f.alias == header.name)
                .map(|f| f.column.as_str())
        };
        let typed = match column {
            Some(column) => part(columns, column, text),
            None => part(None, "", text),
        };
        header.value = Some(bytes(&typed));
    }
}

#[cfg(test)]
mod tests {
    use crate::route::fixtures::{context, header, outbox_table, row, schema, OUTBOX};
    use crate::route::outbox::envelope::EnvelopeKind;
    use crate::route::outbox::{
        Envelope, KeyFormat, OutboxColumns, OutboxRouter, OutboxSpec, OutboxTable, DEFAULT_TOPIC,
        TOPIC_VARIABLES,
    };
    use crate::route::template::Template;
    use crate::route::Record;

    const UUID_NOT_NULL: &str =
        r#"{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1}"#;
    const JSON: &str =
        r#"{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1}"#;

    fn router(expand_json_payload: bool, schemas: bool) -> OutboxRouter {
        let spec = OutboxSpec {
            columns: OutboxColumns::default(),
            topic: Template::parse(DEFAULT_TOPIC, TOPIC_VARIABLES).expect("parses"),
            additional: Vec::new(),
        };
        let table = OutboxTable {
            schema: "public".into(),
            table: "outbox".into(),
            spec: spec.clone(),
        };
        let envelope = Envelope {
            kind: EnvelopeKind::DebeziumOutbox,
            expand_json_payload,
            key_format: KeyFormat::Json,
            schemas,
            tombstone_on_empty_payload: false,
            header_format: KeyFormat::Json,
        };
        OutboxRouter::new(vec![table], Some(("outbox".into(), spec)), envelope)
    }

    /// The record of an outbox row (id NOT NULL, as Debezium's documented table has it).
    fn routed(expand: bool, aggregate_id: Option<&str>, payload: Option<&str>) -> Record {
        routed_with(true, expand, aggregate_id, payload)
    }

    fn routed_with(
        schemas: bool,
        expand: bool,
        aggregate_id: Option<&str>,
        payload: Option<&str>,
    ) -> Record {
        let mut schema = schema();
        schema.set_not_null(OUTBOX, &["id", "aggregatetype", "type"]);
        let values = [
            Some("406c07f3-26f0-4eea-a50c-109940064b8f"),
            Some("order"),
            aggregate_id,
            Some("OrderCreated"),
            payload,
        ];
        router(expand, schemas)
            .route_row(&outbox_table(), &row(&values), &context(&schema))
            .expect("routes")
    }

    fn text(bytes: Option<&bytes::Bytes>) -> &str {
        std::str::from_utf8(bytes.expect("present")).expect("UTF-8")
    }

    // Expected texts as in Debezium 3.6's output (tests/goldens, json-schemas, outbox.*).

    #[test]
    fn key_value_and_id_carry_their_columns_schemas() {
        let record = routed(false, Some("1"), Some(r#"{"a": 1}"#));
        assert_eq!(
            text(record.key.as_ref()),
            r#"{"schema":{"type":"string","optional":true},"payload":"1"}"#
        );
        assert_eq!(
            text(record.value.as_ref()),
            format!(r#"{{"schema":{JSON},"payload":"{{\"a\": 1}}"}}"#)
        );
        assert_eq!(
            header(&record, "id"),
            Some(
                format!(r#"{{"schema":{UUID_NOT_NULL},"payload":"406c07f3-26f0-4eea-a50c-109940064b8f"}}"#)
                    .as_str()
            )
        );
        let record = routed(false, None, None);
        assert_eq!(
            text(record.key.as_ref()),
            r#"{"schema":{"type":"string","optional":true},"payload":null}"#
        );
        assert_eq!(
            text(record.value.as_ref()),
            format!(r#"{{"schema":{JSON},"payload":null}}"#)
        );
    }

    #[test]
    fn an_expanded_payload_has_the_inferred_schema_unless_debezium_refuses_it() {
        let record = routed(true, Some("1"), Some(r#"{"k": null, "a": 1}"#));
        assert_eq!(
            text(record.value.as_ref()),
            r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":true,"field":"a"}],"optional":true,"name":"payload"},"payload":{"a":1}}"#
        );
        let record = routed(true, Some("1"), Some("[1, 2]"));
        assert_eq!(
            text(record.value.as_ref()),
            format!(r#"{{"schema":{JSON},"payload":"[1, 2]"}}"#)
        );
    }

    #[test]
    fn a_messages_parts_are_optional_strings() {
        let content = br#"{"id": "e-1", "aggregatetype": "order", "aggregateid": "1", "type": "T", "payload": {"a": 1}}"#;
        let schema = schema();
        let record = router(false, true)
            .route_message("outbox", content, &context(&schema))
            .expect("routes");
        assert_eq!(
            text(record.value.as_ref()),
            format!(r#"{{"schema":{JSON},"payload":"{{\"a\": 1}}"}}"#)
        );
        assert_eq!(
            header(&record, "id"),
            Some(r#"{"schema":{"type":"string","optional":true},"payload":"e-1"}"#)
        );
    }

    #[test]
    fn without_schemas_json_headers_are_quoted_and_a_null_payload_is_null() {
        // Debezium 3.6's output (tests/goldens, json, outbox.event.*).
        let record = routed_with(false, false, Some("1"), None);
        assert_eq!(
            header(&record, "id"),
            Some(r#""406c07f3-26f0-4eea-a50c-109940064b8f""#)
        );
        assert_eq!(text(record.key.as_ref()), r#""1""#);
        assert_eq!(text(record.value.as_ref()), "null");
    }
}
