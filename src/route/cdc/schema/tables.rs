//! Each table's key and envelope schemas, derived once per Relation message and cached with it,
//! and the fixed schemas of logical-message events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::pg::pgoutput::Relation;
use crate::pg::schema::Schema;
use crate::pg::RelationId;
use crate::route::cdc::values::DebeziumModes;

use super::columns::column_schema;
use super::defaults::default_value;
use super::{connect_json, ConnectSchema, Field, Kind};

/// A schema with its Connect JSON, rendered once.
#[derive(Debug)]
pub struct Rendered {
    /// The schema.
    pub schema: ConnectSchema,
    /// [`connect_json`] of it.
    pub json: String,
}

impl Rendered {
    fn of(schema: ConnectSchema) -> Self {
        let json = connect_json(&schema);
        Self { schema, json }
    }
}

/// A table's schemas, as Debezium names them after the topic.
#[derive(Debug)]
pub struct TableSchemas {
    /// The Relation message they were derived from.
    relation: Arc<Relation>,
    /// `<topic>.Key`: the primary-key columns in key order; `None` without a primary key.
    pub key: Option<Rendered>,
    /// `<topic>.Envelope`: `before` and `after` (`<topic>.Value`), `source`, `transaction`, `op`
    /// and the processing times.
    pub envelope: Rendered,
}

/// The [`TableSchemas`] of every table seen, one entry per table (replaced when a new Relation
/// message describes it), shared by clones of the router.
#[derive(Debug, Clone)]
pub struct SchemaCache {
    modes: DebeziumModes,
    tables: Arc<Mutex<HashMap<RelationId, Arc<TableSchemas>>>>,
    message: Arc<MessageSchemas>,
}

impl SchemaCache {
    /// An empty cache deriving schemas for values written by `modes`.
    pub fn new(modes: DebeziumModes) -> Self {
        Self {
            modes,
            tables: Arc::default(),
            message: Arc::new(MessageSchemas::new()),
        }
    }

    /// The schemas of logical-message events.
    pub fn message(&self) -> &MessageSchemas {
        &self.message
    }

    /// The schemas of `relation`, derived on its first event after each Relation message (named
    /// after `topic()`, asked only then).
    pub fn table(
        &self,
        topic: impl FnOnce() -> String,
        relation: &Arc<Relation>,
        schema: &Schema,
    ) -> Arc<TableSchemas> {
        let mut tables = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = tables.get(&relation.id) {
            if Arc::ptr_eq(&cached.relation, relation) || cached.relation == *relation {
                return Arc::clone(cached);
            }
        }
        let derived = Arc::new(table_schemas(self.modes, &topic(), relation, schema));
        tables.insert(relation.id, Arc::clone(&derived));
        derived
    }
}

fn table_schemas(
    modes: DebeziumModes,
    topic: &str,
    relation: &Arc<Relation>,
    schema: &Schema,
) -> TableSchemas {
    let column = |name: &str| -> Option<ConnectSchema> {
        let c = relation.columns.iter().find(|c| c.name == name)?;
        let optional = !schema.is_not_null(relation.id, name);
        let field = column_schema(&schema.types, modes, c.type_oid, c.type_modifier)
            .with_optional(optional);
        let default = schema
            .column_default(relation.id, name)
            .and_then(|e| default_value(&schema.types, modes, c.type_oid, c.type_modifier, e));
        Some(match default {
            Some(default) => field.default_value(default),
            None => field,
        })
    };
    let key = schema.primary_key(relation.id).map(|columns| {
        let fields = columns
            .iter()
            .filter_map(|name| Some(column(name)?.field(name.as_str())))
            .collect();
        Rendered::of(ConnectSchema::structure(fields).named(format!("{topic}.Key")))
    });
    let row = ConnectSchema::structure(
        relation
            .columns
            .iter()
            .filter_map(|c| Some(column(&c.name)?.field(c.name.as_str())))
            .collect(),
    )
    .optional()
    .named(format!("{topic}.Value"));
    let mut fields = vec![
        row.clone().field("before"),
        row.field("after"),
        source().field("source"),
        transaction().field("transaction"),
        ConnectSchema::of(Kind::String).field("op"),
    ];
    fields.extend(times(true));
    let envelope = ConnectSchema::structure(fields).logical(&format!("{topic}.Envelope"), 2);
    TableSchemas {
        relation: Arc::clone(relation),
        key,
        envelope: Rendered::of(envelope),
    }
}

/// `ts_ms`, and with `fine` `ts_us` and `ts_ns`: optional int64s.
fn times(fine: bool) -> Vec<Field> {
    let names: &[&str] = if fine {
        &["ts_ms", "ts_us", "ts_ns"]
    } else {
        &["ts_ms"]
    };
    names
        .iter()
        .map(|n| ConnectSchema::of(Kind::Int64).optional().field(*n))
        .collect()
}

/// Debezium's `io.debezium.connector.postgresql.Source`.
fn source() -> ConnectSchema {
    let string = || ConnectSchema::of(Kind::String);
    let int64 = || ConnectSchema::of(Kind::Int64);
    ConnectSchema::structure(vec![
        string().field("version"),
        string().field("connector"),
        string().field("name"),
        int64().field("ts_ms"),
        string()
            .optional()
            .logical("io.debezium.data.Enum", 1)
            .parameter(
                "allowed",
                "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental",
            )
            .default_value("false".into())
            .field("snapshot"),
        string().field("db"),
        string().optional().field("sequence"),
        int64().optional().field("ts_us"),
        int64().optional().field("ts_ns"),
        string().field("schema"),
        string().field("table"),
        int64().optional().field("txId"),
        int64().optional().field("lsn"),
        int64().optional().field("xmin"),
        string().optional().field("origin"),
        int64().optional().field("origin_lsn"),
    ])
    .logical("io.debezium.connector.postgresql.Source", 1)
}

/// Debezium's transaction metadata block (`null` unless `provide.transaction.metadata`).
fn transaction() -> ConnectSchema {
    ConnectSchema::structure(vec![
        ConnectSchema::of(Kind::String).field("id"),
        ConnectSchema::of(Kind::Int64).field("total_order"),
        ConnectSchema::of(Kind::Int64).field("data_collection_order"),
    ])
    .optional()
    .logical("event.block", 1)
}

/// The key and value schemas of logical-message events (`<prefix>.message`).
#[derive(Debug)]
pub struct MessageSchemas {
    /// `io.debezium.connector.postgresql.MessageKey`: `{prefix}`.
    pub key: Rendered,
    /// `io.debezium.connector.postgresql.MessageValue`: `op`, `ts_ms`, `source`, `transaction`,
    /// `message: {prefix, content}`.
    pub value: Rendered,
}

impl MessageSchemas {
    /// Debezium's message schemas.
    fn new() -> Self {
        let prefix = || ConnectSchema::of(Kind::String).optional().field("prefix");
        let key = ConnectSchema::structure(vec![prefix()])
            .logical("io.debezium.connector.postgresql.MessageKey", 1);
        let mut fields = vec![ConnectSchema::of(Kind::String).field("op")];
        fields.extend(times(false));
        fields.extend([
            source().field("source"),
            transaction().field("transaction"),
            ConnectSchema::structure(vec![
                prefix(),
                ConnectSchema::of(Kind::Bytes).optional().field("content"),
            ])
            .logical("io.debezium.connector.postgresql.Message", 1)
            .field("message"),
        ]);
        let value = ConnectSchema::structure(fields)
            .logical("io.debezium.connector.postgresql.MessageValue", 1);
        Self {
            key: Rendered::of(key),
            value: Rendered::of(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::pgoutput::{RelationColumn, ReplicaIdentity};
    use crate::pg::TypeOid;

    /// The first line of a golden file's key or value schema, as Debezium 3.6 wrote it.
    fn golden_schema(file: &str, part: &str) -> String {
        let path = format!(
            "{}/tests/goldens/debezium-3.6.0.Final/json-schemas/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("golden file");
        let line: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a record")).expect("JSON");
        let enveloped = line[part].as_str().expect("enveloped text");
        let start = enveloped.find("{\"type\"").expect("schema");
        let end = enveloped.rfind(",\"payload\":").expect("payload");
        enveloped[start..end].to_owned()
    }

    fn composite() -> (Arc<Relation>, Schema) {
        let column = |name: &str, oid: u32| RelationColumn {
            is_key: false,
            name: name.into(),
            type_oid: TypeOid(oid),
            type_modifier: -1,
        };
        let relation = Arc::new(Relation {
            xid: None,
            id: RelationId(7),
            namespace: "public".into(),
            name: "composite".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                column("account", 23),
                column("zone", 25),
                column("note", 25),
            ],
        });
        let mut schema = Schema::default();
        schema.set_primary_key(relation.id, Some(vec!["zone".into(), "account".into()]));
        schema.set_not_null(relation.id, &["account", "zone"]);
        (relation, schema)
    }

    #[test]
    fn a_tables_schemas_are_debeziums() {
        let (relation, schema) = composite();
        let cache = SchemaCache::new(DebeziumModes::default());
        let table = cache.table(|| "fixture.public.composite".into(), &relation, &schema);
        assert_eq!(
            table.key.as_ref().expect("key").json,
            golden_schema("public.composite.jsonl", "key")
        );
        assert_eq!(
            table.envelope.json,
            golden_schema("public.composite.jsonl", "value")
        );
        let message = MessageSchemas::new();
        assert_eq!(message.key.json, golden_schema("message.jsonl", "key"));
        assert_eq!(message.value.json, golden_schema("message.jsonl", "value"));
    }

    #[test]
    fn schemas_are_derived_once_per_relation_message() {
        let (relation, schema) = composite();
        let cache = SchemaCache::new(DebeziumModes::default());
        let first = cache.table(|| "t".into(), &relation, &schema);
        assert!(Arc::ptr_eq(
            &first,
            &cache.table(|| "t".into(), &relation, &schema)
        ));
        // The same description in a new Relation message keeps them.
        let same = Arc::new((*relation).clone());
        assert!(Arc::ptr_eq(
            &first,
            &cache.table(|| "t".into(), &same, &schema)
        ));
        // A changed table (a column added) gets new ones, replacing the old.
        let mut altered = (*relation).clone();
        altered.columns.push(RelationColumn {
            is_key: false,
            name: "extra".into(),
            type_oid: TypeOid(16),
            type_modifier: -1,
        });
        let altered = Arc::new(altered);
        let second = cache.table(|| "t".into(), &altered, &schema);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.envelope.json.contains("\"field\":\"extra\""));
        assert_eq!(cache.tables.lock().expect("lock").len(), 1);
    }
}
