//! The Kafka Connect schema Debezium's outbox router infers from a JSON payload under
//! `table.expand.json.payload=true` (its `JsonSchemaData`), and the payload as that schema
//! reads it.
//!
//! Debezium's rules: an object is an optional struct named by its path from the payload column
//! (`payload`, `payload.lineItems`), its fields in the document's order; a string, boolean is
//! optional of that type; an integer is `int32` when it fits, else `int64`, anything else a
//! `double`; an array has the items' schema of its first non-null element (an array of objects:
//! the fields of all its elements merged, first seen first); a `null` field or an empty array
//! has no schema and is left out. What Debezium cannot expand (a payload that is not an
//! object, an array mixing types) gives `None`: the payload stays the column's string, as when
//! Debezium's expansion fails.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::route::cdc::schema::{ConnectSchema, Field, Kind};

/// The schema and value of the JSON `text` expanded under the payload column's name; `None`
/// when Debezium could not expand it.
pub(super) fn expand(name: &str, text: &str) -> Option<(ConnectSchema, Value)> {
    let node: Node = serde_json::from_str(text).ok()?;
    if !matches!(node, Node::Object(_)) {
        return None;
    }
    let schema = infer(Some(name), &node)??;
    Some((schema, node.into_value()))
}

/// A JSON document with its objects' keys in the order written (serde_json's `Map` sorts them).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::Array(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Object(fields) => {
                let mut map = Map::new();
                for (key, value) in fields {
                    // A repeated key: the first is the one the schema describes.
                    map.entry(key).or_insert_with(|| value.into_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// The schema of `node` at `name` (`None` for a node without schema: null, empty array), or
/// `Err`-like `None` in the outer option when Debezium refuses the document.
#[allow(clippy::option_option)]
fn infer(name: Option<&str>, node: &Node) -> Option<Option<ConnectSchema>> {
    let plain = |kind| Some(Some(ConnectSchema::of(kind).optional()));
    match node {
        Node::Null => Some(None),
        Node::Bool(_) => plain(Kind::Boolean),
        Node::String(_) => plain(Kind::String),
        Node::Number(n) => plain(number_kind(n)),
        Node::Array(items) if items.is_empty() => Some(None),
        Node::Array(items) => {
            let items = array_items(name, items)?;
            Some(Some(
                ConnectSchema::of(Kind::Array(Box::new(items))).optional(),
            ))
        }
        Node::Object(fields) => {
            let mut out: Vec<Field> = Vec::new();
            for (key, value) in fields {
                let path = match name {
                    Some(name) if !name.trim().is_empty() => format!("{name}.{key}"),
                    _ => key.clone(),
                };
                if let Some(schema) = infer(Some(&path), value)? {
                    if !out.iter().any(|f| f.name == *key) {
                        out.push(schema.field(key.clone()));
                    }
                }
            }
            let mut schema = ConnectSchema::structure(out).optional();
            if let Some(name) = name {
                schema = schema.named(name);
            }
            Some(Some(schema))
        }
    }
}

/// The items' schema of a non-empty array: every non-null element of one JSON type (numbers of
/// one Connect type); objects merged field by field, others the first element's.
fn array_items(name: Option<&str>, items: &[Node]) -> Option<ConnectSchema> {
    let present: Vec<&Node> = items.iter().filter(|n| **n != Node::Null).collect();
    let first = present.first()?;
    let same = |n: &&Node| match (first, n) {
        (Node::Number(a), Node::Number(b)) => number_kind(a) == number_kind(b),
        _ => std::mem::discriminant(*first) == std::mem::discriminant(*n),
    };
    if !present.iter().all(same) {
        return None;
    }
    if !matches!(first, Node::Object(_)) {
        return infer(None, first)?;
    }
    let mut merged: Option<ConnectSchema> = None;
    for element in &present {
        let Some(schema) = infer(name, element)? else {
            continue;
        };
        merged = Some(match merged {
            None => schema,
            Some(mut left) => {
                if let (Kind::Struct(fields), Kind::Struct(more)) = (&mut left.kind, schema.kind) {
                    for field in more {
                        if !fields.iter().any(|f| f.name == field.name) {
                            fields.push(field);
                        }
                    }
                }
                left
            }
        });
    }
    merged
}

/// Jackson's number nodes as Debezium types them: `int32` if an integer fits, `int64` if it fits
/// a long, else `double`.
fn number_kind(n: &Number) -> Kind {
    match n.as_i64() {
        Some(i) if i32::try_from(i).is_ok() => Kind::Int32,
        Some(_) => Kind::Int64,
        None => Kind::Float64,
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            fields.push((key, value));
        }
        Ok(Node::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::route::cdc::schema::{connect_json, enveloped};

    fn expanded(text: &str) -> Option<String> {
        expand("payload", text)
            .map(|(schema, value)| enveloped(&connect_json(&schema), &schema, &value))
    }

    #[test]
    fn payloads_expand_as_debeziums_json_schema_data() {
        // Debezium 3.6's output (tests/goldens, json-schemas, outbox.expanded.order), jsonb's
        // key order.
        assert_eq!(
            expanded(r#"{"id": 1, "lineItems": [{"id": 1, "item": "Debezium in Action", "quantity": 2, "totalPrice": 39.98}], "customerId": 123}"#).as_deref(),
            Some(r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":true,"field":"id"},{"type":"array","items":{"type":"struct","fields":[{"type":"int32","optional":true,"field":"id"},{"type":"string","optional":true,"field":"item"},{"type":"int32","optional":true,"field":"quantity"},{"type":"double","optional":true,"field":"totalPrice"}],"optional":true,"name":"payload.lineItems"},"optional":true,"field":"lineItems"},{"type":"int32","optional":true,"field":"customerId"}],"optional":true,"name":"payload"},"payload":{"id":1,"lineItems":[{"id":1,"item":"Debezium in Action","quantity":2,"totalPrice":39.98}],"customerId":123}}"#)
        );
        // Null fields and empty arrays have no schema and are left out.
        assert_eq!(
            expanded(r#"{"k": null, "e": []}"#).as_deref(),
            Some(
                r#"{"schema":{"type":"struct","fields":[],"optional":true,"name":"payload"},"payload":{}}"#
            )
        );
    }

    #[test]
    fn numbers_arrays_and_refusals() {
        let (schema, _) =
            expand("p", r#"{"big": 3000000000, "f": 1.0, "huge": 1e300}"#).expect("expands");
        let Kind::Struct(fields) = &schema.kind else {
            panic!("a struct")
        };
        let kinds: Vec<&Kind> = fields.iter().map(|f| &f.schema.kind).collect();
        assert_eq!(kinds, [&Kind::Int64, &Kind::Float64, &Kind::Float64]);
        // Objects in an array merge their fields; a missing one is null in the payload.
        assert_eq!(
            expanded(r#"{"l": [{"a": 1}, null, {"b": "x"}]}"#).as_deref(),
            Some(
                r#"{"schema":{"type":"struct","fields":[{"type":"array","items":{"type":"struct","fields":[{"type":"int32","optional":true,"field":"a"},{"type":"string","optional":true,"field":"b"}],"optional":true,"name":"payload.l"},"optional":true,"field":"l"}],"optional":true,"name":"payload"},"payload":{"l":[{"a":1,"b":null},null,{"a":null,"b":"x"}]}}"#
            )
        );
        // What Debezium refuses: not an object, mixed arrays, mixed number types.
        for refused in [
            "[1, 2]",
            "1",
            r#"{"a": [1, "x"]}"#,
            r#"{"a": [1, 1.5]}"#,
            "{",
        ] {
            assert_eq!(expand("payload", refused), None, "{refused}");
        }
        assert_eq!(
            expand("payload", r#"{"a": [[1], [2]]}"#).map(|(_, v)| v),
            Some(json!({"a": [[1], [2]]}))
        );
    }
}
