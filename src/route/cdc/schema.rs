//! Kafka Connect schemas of CDC events, as Debezium's Postgres connector derives them, and their
//! rendering as Kafka Connect's JsonConverter writes them with `schemas.enable=true`:
//! `{"schema": ..., "payload": ...}`.
//!
//! The schema is a typed tree ([`ConnectSchema`]), derived once per table and Relation message
//! ([`tables`]) from the columns' types by the same value options the values follow
//! ([`columns`]); [`connect_json`] renders it, so another rendering (Avro, issue 20) can start from
//! the same tree.

pub mod columns;
pub mod defaults;
pub mod tables;

use std::fmt::Write;

use serde_json::Value;

/// A Kafka Connect schema: a type with its optionality, logical name, version, doc, parameters
/// and default, as Connect's `Schema` has them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSchema {
    /// The Connect type.
    pub kind: Kind,
    /// Whether the value may be null.
    pub optional: bool,
    /// The logical type's or struct's name (`io.debezium.time.Date`, `<topic>.Value`).
    pub name: Option<String>,
    /// The logical type's version.
    pub version: Option<i32>,
    /// The documentation Debezium gives some logical types.
    pub doc: Option<&'static str>,
    /// Logical type parameters, in the order Debezium sets them (JsonConverter keeps it).
    pub parameters: Vec<(&'static str, String)>,
    /// The default value.
    pub default: Option<Value>,
}

/// Kafka Connect's types.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `boolean`.
    Boolean,
    /// `int16`.
    Int16,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
    /// `float` (32 bits).
    Float32,
    /// `double`.
    Float64,
    /// `string`.
    String,
    /// `bytes` (base64 in JSON).
    Bytes,
    /// `array` of the items' schema.
    Array(Box<ConnectSchema>),
    /// `struct` of named fields, in order.
    Struct(Vec<Field>),
}

/// A named field of a struct schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its schema.
    pub schema: ConnectSchema,
}

impl ConnectSchema {
    /// A required schema of `kind` without name.
    pub fn of(kind: Kind) -> Self {
        Self {
            kind,
            optional: false,
            name: None,
            version: None,
            doc: None,
            parameters: Vec::new(),
            default: None,
        }
    }

    /// A required struct of `fields`.
    pub fn structure(fields: Vec<Field>) -> Self {
        Self::of(Kind::Struct(fields))
    }

    /// This schema, optional.
    pub fn optional(self) -> Self {
        self.with_optional(true)
    }

    /// This schema, optional or not.
    pub fn with_optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    /// This schema with a name (and no version).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// This schema as the logical type `name`, version `version`.
    pub fn logical(self, name: &str, version: i32) -> Self {
        let mut schema = self.named(name);
        schema.version = Some(version);
        schema
    }

    /// This schema with one more parameter.
    pub fn parameter(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.parameters.push((key, value.into()));
        self
    }

    /// This schema with its doc.
    pub fn doc(mut self, doc: &'static str) -> Self {
        self.doc = Some(doc);
        self
    }

    /// This schema with a default value.
    pub fn default_value(mut self, default: Value) -> Self {
        self.default = Some(default);
        self
    }

    /// A field `name` of this schema.
    pub fn field(self, name: impl Into<String>) -> Field {
        Field {
            name: name.into(),
            schema: self,
        }
    }
}

/// `schema` as JsonConverter writes it: `type`, then `fields` or `items`, `optional`, `name`,
/// `version`, `doc`, `parameters`, `default` (each only when set), and `field` last for a
/// struct's field. The key order is part of the bytes, and a key's bytes pick its partition.
pub fn connect_json(schema: &ConnectSchema) -> String {
    let mut out = String::new();
    write_schema(&mut out, schema, None);
    out
}

fn write_schema(out: &mut String, schema: &ConnectSchema, field: Option<&str>) {
    let type_name = match &schema.kind {
        Kind::Boolean => "boolean",
        Kind::Int16 => "int16",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Float32 => "float",
        Kind::Float64 => "double",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Array(_) => "array",
        Kind::Struct(_) => "struct",
    };
    let _ = write!(out, "{{\"type\":\"{type_name}\"");
    match &schema.kind {
        Kind::Array(items) => {
            out.push_str(",\"items\":");
            write_schema(out, items, None);
        }
        Kind::Struct(fields) => {
            out.push_str(",\"fields\":[");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(out, &f.schema, Some(&f.name));
            }
            out.push(']');
        }
        _ => {}
    }
    let _ = write!(out, ",\"optional\":{}", schema.optional);
    if let Some(name) = &schema.name {
        let _ = write!(out, ",\"name\":{}", Value::from(name.as_str()));
    }
    if let Some(version) = schema.version {
        let _ = write!(out, ",\"version\":{version}");
    }
    if let Some(doc) = schema.doc {
        let _ = write!(out, ",\"doc\":{}", Value::from(doc));
    }
    if !schema.parameters.is_empty() {
        out.push_str(",\"parameters\":{");
        for (i, (key, value)) in schema.parameters.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}:{}", Value::from(*key), Value::from(value.as_str()));
        }
        out.push('}');
    }
    if let Some(default) = &schema.default {
        let _ = write!(out, ",\"default\":{default}");
    }
    if let Some(field) = field {
        let _ = write!(out, ",\"field\":{}", Value::from(field));
    }
    out.push('}');
}

/// `{"schema": <schema_json>, "payload": <payload>}` with the payload's struct fields in the
/// schema's order, as JsonConverter writes a value of a struct schema. `schema_json` is
/// [`connect_json`] of `schema`, rendered once per table.
pub fn enveloped(schema_json: &str, schema: &ConnectSchema, payload: &Value) -> String {
    let mut out = String::with_capacity(schema_json.len() + 256);
    out.push_str("{\"schema\":");
    out.push_str(schema_json);
    out.push_str(",\"payload\":");
    write_payload(&mut out, schema, payload);
    out.push('}');
    out
}

/// `{"schema": <schema_json>, "payload": <payload_json>}` for a payload already rendered in the
/// schema's order (a CDC key).
pub fn enveloped_text(schema_json: &str, payload_json: &str) -> String {
    format!("{{\"schema\":{schema_json},\"payload\":{payload_json}}}")
}

fn write_payload(out: &mut String, schema: &ConnectSchema, value: &Value) {
    match (&schema.kind, value) {
        (Kind::Struct(fields), Value::Object(object)) => {
            out.push('{');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::from(field.name.as_str()));
                write_payload(
                    out,
                    &field.schema,
                    object.get(&field.name).unwrap_or(&Value::Null),
                );
            }
            out.push('}');
        }
        (Kind::Array(items), Value::Array(elements)) => {
            out.push('[');
            for (i, element) in elements.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_payload(out, items, element);
            }
            out.push(']');
        }
        (_, value) => {
            let _ = write!(out, "{value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_render_in_json_converters_key_order() {
        // Bytes from Debezium 3.6's output (tests/goldens, json-schemas).
        let schema = ConnectSchema::structure(vec![
            ConnectSchema::of(Kind::String)
                .optional()
                .logical("io.debezium.data.Enum", 1)
                .parameter("allowed", "sad,ok,happy")
                .default_value(json!("ok"))
                .field("e"),
            ConnectSchema::of(Kind::Array(Box::new(
                ConnectSchema::of(Kind::Int32).optional(),
            )))
            .optional()
            .field("ai"),
            ConnectSchema::structure(vec![ConnectSchema::of(Kind::Bytes).field("value")])
                .optional()
                .logical("io.debezium.data.VariableScaleDecimal", 1)
                .doc("Variable scaled decimal")
                .field("n"),
        ])
        .named("fixture.public.t.Value");
        assert_eq!(
            connect_json(&schema),
            r#"{"type":"struct","fields":[{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"sad,ok,happy"},"default":"ok","field":"e"},{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"ai"},{"type":"struct","fields":[{"type":"bytes","optional":false,"field":"value"}],"optional":true,"name":"io.debezium.data.VariableScaleDecimal","version":1,"doc":"Variable scaled decimal","field":"n"}],"optional":false,"name":"fixture.public.t.Value"}"#
        );
    }

    #[test]
    fn payloads_follow_the_schemas_field_order() {
        let schema = ConnectSchema::structure(vec![
            ConnectSchema::of(Kind::String).field("zone"),
            ConnectSchema::structure(vec![
                ConnectSchema::of(Kind::Int32).field("b"),
                ConnectSchema::of(Kind::Int32).field("a"),
            ])
            .optional()
            .field("inner"),
            ConnectSchema::of(Kind::Int32).field("account"),
        ]);
        let payload = json!({"account": 1, "inner": {"a": 1, "b": 2}, "zone": "eu"});
        assert_eq!(
            enveloped("S", &schema, &payload),
            r#"{"schema":S,"payload":{"zone":"eu","inner":{"b":2,"a":1},"account":1}}"#
        );
        assert_eq!(
            enveloped("S", &schema, &Value::Null),
            r#"{"schema":S,"payload":null}"#
        );
        assert_eq!(
            enveloped_text("S", "{\"a\":1}"),
            r#"{"schema":S,"payload":{"a":1}}"#
        );
    }
}
