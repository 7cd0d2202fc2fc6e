//! What the router's unit tests build changes from: tables as pgoutput describes them, rows as
//! their columns' text, and a context with a known position and time.

use std::sync::Arc;

use bytes::Bytes;

use crate::pg::pgoutput::{ColumnValue, Relation, RelationColumn, ReplicaIdentity, TupleData};
use crate::pg::schema::Schema;
use crate::pg::{Lsn, PgTimestamp, RelationId, TypeOid, Xid};
use crate::route::cdc::values::{DebeziumModes, ValueConvention};
use crate::route::cdc::CdcRouter;
use crate::route::outbox::envelope::EnvelopeKind;
use crate::route::outbox::{
    Envelope, KeyFormat, OutboxColumns, OutboxRouter, OutboxSpec, OutboxTable, DEFAULT_TOPIC,
    TOPIC_VARIABLES,
};
use crate::route::template::Template;
use crate::route::{Header, Record, RouteContext};

pub(crate) const INT4: TypeOid = TypeOid(23);
pub(crate) const TEXT: TypeOid = TypeOid(25);
pub(crate) const UUID: TypeOid = TypeOid(2950);
pub(crate) const JSONB: TypeOid = TypeOid(3802);

/// A CDC router with Debezium's value defaults, topic prefix `srv`, database `app`, tombstones on
/// delete, no truncate or message events, no schemas; tests switch on what they exercise.
pub(crate) fn cdc_router() -> CdcRouter {
    CdcRouter {
        topic_prefix: "srv".into(),
        database: "app".into(),
        tombstones_on_delete: true,
        truncate_events: false,
        messages: false,
        unavailable_value_placeholder: "__debezium_unavailable_value".into(),
        values: ValueConvention::Debezium(DebeziumModes::default()),
        replace_null_with_default: true,
        schemas: None,
        avro: None,
    }
}

/// The OID of [`outbox_table`].
pub(crate) const OUTBOX: RelationId = RelationId(100);
/// The OID of [`items_table`].
pub(crate) const ITEMS: RelationId = RelationId(200);

/// A table of `columns` (name, type), none of them flagged as key.
pub(crate) fn relation(
    id: RelationId,
    namespace: &str,
    name: &str,
    columns: &[(&str, TypeOid)],
) -> Arc<Relation> {
    Arc::new(Relation {
        xid: None,
        id,
        namespace: namespace.into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .map(|(name, type_oid)| RelationColumn {
                is_key: false,
                name: (*name).into(),
                type_oid: *type_oid,
                type_modifier: -1,
            })
            .collect(),
    })
}

/// `public.outbox` with Debezium's default columns.
pub(crate) fn outbox_table() -> Arc<Relation> {
    relation(
        OUTBOX,
        "public",
        "outbox",
        &[
            ("id", UUID),
            ("aggregatetype", TEXT),
            ("aggregateid", TEXT),
            ("type", TEXT),
            ("payload", JSONB),
        ],
    )
}

/// `public.items (id int4 PRIMARY KEY, name text, note text)`, a table that is not an outbox.
pub(crate) fn items_table() -> Arc<Relation> {
    relation(
        ITEMS,
        "public",
        "items",
        &[("id", INT4), ("name", TEXT), ("note", TEXT)],
    )
}

/// A row of text values; `None` is NULL.
pub(crate) fn row(values: &[Option<&str>]) -> TupleData {
    TupleData(
        values
            .iter()
            .map(|value| match value {
                Some(text) => ColumnValue::Text(Bytes::copy_from_slice(text.as_bytes())),
                None => ColumnValue::Null,
            })
            .collect(),
    )
}

/// The schema: `public.items` has the primary key `id`, `public.outbox` none looked up.
pub(crate) fn schema() -> Schema {
    let mut schema = Schema::default();
    schema.set_primary_key(ITEMS, Some(vec!["id".into()]));
    schema
}

/// Transaction 7, committed at 2023-11-14T22:13:20Z, change at 16/100 after a commit ending at 16/0.
pub(crate) fn context(schema: &Schema) -> RouteContext<'_> {
    RouteContext {
        schema,
        xid: Some(Xid(7)),
        commit_ts: PgTimestamp::from_unix_micros(1_700_000_000_000_000),
        lsn: Some(Lsn(0x16_0000_0100)),
        last_commit_lsn: Some(Lsn(0x16_0000_0000)),
    }
}

/// The outbox router of [`outbox_table`] and of the logical messages with prefix `outbox`, in
/// Debezium's outbox envelope with string keys.
pub(crate) fn outbox_router() -> OutboxRouter {
    let spec = OutboxSpec {
        columns: OutboxColumns::default(),
        topic: Template::parse(DEFAULT_TOPIC, TOPIC_VARIABLES).expect("the default topic parses"),
        additional: Vec::new(),
    };
    OutboxRouter::new(
        vec![OutboxTable {
            schema: "public".into(),
            table: "outbox".into(),
            spec: spec.clone(),
        }],
        Some(("outbox".into(), spec)),
        Envelope {
            kind: EnvelopeKind::DebeziumOutbox,
            expand_json_payload: false,
            key_format: KeyFormat::String,
            schemas: false,
            tombstone_on_empty_payload: true,
            header_format: KeyFormat::String,
        },
    )
}

/// The value of the first header named `name`, as text.
pub(crate) fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|h: &&Header| h.name == name)
        .and_then(|h| h.value.as_deref())
        .map(|v| std::str::from_utf8(v).expect("UTF-8 header"))
}

/// The record's key as text.
pub(crate) fn key(record: &Record) -> Option<&str> {
    record
        .key
        .as_deref()
        .map(|k| std::str::from_utf8(k).expect("UTF-8 key"))
}

/// The record's value as JSON.
pub(crate) fn value(record: &Record) -> serde_json::Value {
    serde_json::from_slice(record.value.as_deref().expect("a value")).expect("JSON value")
}
