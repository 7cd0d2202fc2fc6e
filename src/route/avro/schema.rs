//! A Kafka Connect schema as Confluent's AvroConverter turns it into Avro
//! (`AvroData.fromConnectSchema`, with its defaults: `connect.meta.data` on, enhanced schema
//! support and name scrubbing off):
//!
//! - `int16` is an `int` with `"connect.type":"int16"`, the other types map one to one; a struct is
//!   a record named by the struct's name split at its last dot into namespace and name (an unnamed
//!   one `io.confluent.connect.avro.ConnectDefault`, then `ConnectDefault2`, ...);
//! - the Connect metadata goes in properties beside the type, in `AvroData`'s order:
//!   `connect.doc`, `connect.version`, `connect.parameters`, `connect.default`, `connect.name`,
//!   `connect.type`;
//! - Connect's logical types get Avro's: `Decimal` is `bytes` with `decimal` of its scale and
//!   `connect.decimal.precision` (64 without it), `Date` `date`, `Time` `time-millis`, `Timestamp`
//!   `timestamp-millis`; Debezium's own (`io.debezium.time.Date`, ...) stay plain with their name;
//! - an optional schema is a union with `null`, `null` first unless the schema has a default
//!   (a struct: always first); a field's default is its schema's, else `null` when optional;
//! - a named record met a second time is referred to by its name, as Avro requires;
//! - names are written as Java's Avro library writes them (`Schema.toString`, what the converter
//!   registers): a record's `namespace` only where it differs from the enclosing record's (`""`
//!   for none inside one), a reference by its short name within its own namespace, so that a
//!   schema's text, and with it its registry entry, is the converter's.
//!
//! Names are made valid Avro names as Debezium's `schema.name.adjustment.mode = avro` does: every
//! character other than a letter, digit or `_` becomes `_`, and so does a leading digit.

use std::collections::HashSet;
use std::fmt::Write;

use base64::Engine;
use serde_json::Value;

use crate::route::cdc::schema::{ConnectSchema, Kind};

/// Connect's logical type names that have Avro logical types.
pub(super) const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
pub(super) const DATE: &str = "org.apache.kafka.connect.data.Date";
pub(super) const TIME: &str = "org.apache.kafka.connect.data.Time";
pub(super) const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

/// `AvroData`'s precision of a decimal without `connect.decimal.precision`.
const DEFAULT_PRECISION: &str = "64";

/// The Avro schema (JSON text) of `schema`.
pub fn avro_json(schema: &ConnectSchema) -> String {
    let mut writer = Writer::default();
    writer.schema(schema);
    writer.out
}

/// [`avro_json`] without the fields' defaults: what `apache_avro` parses to encode with (it
/// refuses some valid defaults, a `decimal`'s bytes as a string; encoding never reads them).
pub(super) fn avro_json_to_encode(schema: &ConnectSchema) -> String {
    let mut writer = Writer {
        without_defaults: true,
        ..Writer::default()
    };
    writer.schema(schema);
    writer.out
}

/// The full name of the record `schema` becomes (`None` for a schema that is no struct).
pub fn record_name(schema: &ConnectSchema) -> Option<String> {
    matches!(schema.kind, Kind::Struct(_)).then(|| {
        schema.name.as_deref().map_or_else(
            || "io.confluent.connect.avro.ConnectDefault".into(),
            avro_name,
        )
    })
}

/// The Avro type a Connect type becomes.
pub(super) fn avro_type(kind: &Kind) -> &'static str {
    match kind {
        Kind::Boolean => "boolean",
        Kind::Int16 | Kind::Int32 => "int",
        Kind::Int64 => "long",
        Kind::Float32 => "float",
        Kind::Float64 => "double",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Array(_) => "array",
        Kind::Struct(_) => "record",
    }
}

/// Whether an optional `schema`'s union has `null` first.
pub(super) fn null_first(schema: &ConnectSchema) -> bool {
    matches!(schema.kind, Kind::Struct(_)) || schema.default.is_none()
}

/// `name` with each dot-separated part a valid Avro name.
pub(super) fn avro_name(name: &str) -> String {
    name.split('.').map(avro_part).collect::<Vec<_>>().join(".")
}

/// Debezium's Avro name adjustment of one name part.
pub(super) fn avro_part(part: &str) -> String {
    part.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Default)]
struct Writer {
    out: String,
    /// Full names of the records written so far.
    defined: HashSet<String>,
    /// Unnamed structs so far.
    unnamed: usize,
    /// The namespace of the record being written (Java's `Names.space`).
    space: Option<String>,
    /// Leave the fields' defaults out.
    without_defaults: bool,
}

impl Writer {
    /// `schema` with its optionality.
    fn schema(&mut self, schema: &ConnectSchema) {
        if !schema.optional {
            return self.base(schema);
        }
        if null_first(schema) {
            self.out.push_str("[\"null\",");
            self.base(schema);
            self.out.push(']');
        } else {
            self.out.push('[');
            self.base(schema);
            self.out.push_str(",\"null\"]");
        }
    }

    /// `schema` without its optionality.
    fn base(&mut self, schema: &ConnectSchema) {
        let avro_type = avro_type(&schema.kind);
        match &schema.kind {
            Kind::Array(items) => {
                self.out.push_str("{\"type\":\"array\",\"items\":");
                self.schema(items);
                self.props(schema, true);
                return;
            }
            Kind::Struct(fields) => return self.record(schema, fields),
            _ => {}
        }
        let mut props = String::new();
        if schema.name.as_deref() == Some(DECIMAL) {
            let scale = parameter(schema, "scale").unwrap_or("0");
            let precision =
                parameter(schema, "connect.decimal.precision").unwrap_or(DEFAULT_PRECISION);
            let _ = write!(props, ",\"scale\":{scale},\"precision\":{precision}");
        }
        let start = self.out.len();
        let _ = write!(self.out, "{{\"type\":\"{avro_type}\"{props}");
        let had_props = !props.is_empty();
        if !self.props(schema, had_props) && !had_props {
            // No property at all: the bare type name.
            self.out.truncate(start);
            let _ = write!(self.out, "\"{avro_type}\"");
        }
    }

    /// The Connect metadata and logical type of `schema` after an open object, which it closes;
    /// returns whether there was any (with `close_anyway` the object is closed in either case).
    fn props(&mut self, schema: &ConnectSchema, close_anyway: bool) -> bool {
        let start = self.out.len();
        if let Some(doc) = schema.doc {
            let _ = write!(self.out, ",\"connect.doc\":{}", Value::from(doc));
        }
        if let Some(version) = schema.version {
            let _ = write!(self.out, ",\"connect.version\":{version}");
        }
        if !schema.parameters.is_empty() {
            self.out.push_str(",\"connect.parameters\":{");
            for (i, (key, value)) in schema.parameters.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(
                    self.out,
                    "{}:{}",
                    Value::from(*key),
                    Value::from(value.as_str())
                );
            }
            self.out.push('}');
        }
        if let Some(default) = &schema.default {
            let _ = write!(
                self.out,
                ",\"connect.default\":{}",
                avro_default(schema, default)
            );
        }
        if let Some(name) = &schema.name {
            let _ = write!(self.out, ",\"connect.name\":{}", Value::from(name.as_str()));
        }
        if schema.kind == Kind::Int16 {
            self.out.push_str(",\"connect.type\":\"int16\"");
        }
        let logical = match schema.name.as_deref() {
            Some(DECIMAL) => Some("decimal"),
            Some(DATE) => Some("date"),
            Some(TIME) => Some("time-millis"),
            Some(TIMESTAMP) => Some("timestamp-millis"),
            _ => None,
        };
        if let Some(logical) = logical {
            let _ = write!(self.out, ",\"logicalType\":\"{logical}\"");
        }
        let any = self.out.len() > start;
        if any || close_anyway {
            self.out.push('}');
        }
        any
    }

    fn record(&mut self, schema: &ConnectSchema, fields: &[crate::route::cdc::schema::Field]) {
        let full = match &schema.name {
            Some(name) => avro_name(name),
            None => {
                self.unnamed += 1;
                match self.unnamed {
                    1 => "io.confluent.connect.avro.ConnectDefault".into(),
                    n => format!("io.confluent.connect.avro.ConnectDefault{n}"),
                }
            }
        };
        let (namespace, name) = match full.rsplit_once('.') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, full.as_str()),
        };
        let same_space = namespace == self.space.as_deref();
        if self.defined.contains(&full) {
            let reference = if same_space { name } else { full.as_str() };
            let _ = write!(self.out, "{}", Value::from(reference));
            return;
        }
        self.defined.insert(full.clone());
        let _ = write!(self.out, "{{\"type\":\"record\",\"name\":\"{name}\"");
        if !same_space {
            let _ = write!(
                self.out,
                ",\"namespace\":\"{}\"",
                namespace.unwrap_or_default()
            );
        }
        let enclosing = std::mem::replace(&mut self.space, namespace.map(str::to_owned));
        self.out.push_str(",\"fields\":[");
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(
                self.out,
                "{{\"name\":\"{}\",\"type\":",
                avro_part(&field.name)
            );
            self.schema(&field.schema);
            let default = match &field.schema.default {
                Some(default) => Some(avro_default(&field.schema, default)),
                None => field.schema.optional.then_some(Value::Null),
            };
            if let Some(default) = default.filter(|_| !self.without_defaults) {
                let _ = write!(self.out, ",\"default\":{default}");
            }
            self.out.push('}');
        }
        self.out.push(']');
        self.space = enclosing;
        self.props(schema, true);
    }
}

fn parameter<'a>(schema: &'a ConnectSchema, key: &str) -> Option<&'a str> {
    schema
        .parameters
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// A Connect default (as JsonConverter writes it: bytes in base64) as Avro writes defaults: bytes
/// as a string of one ISO-8859-1 character per byte.
fn avro_default(schema: &ConnectSchema, default: &Value) -> Value {
    match (&schema.kind, default) {
        (Kind::Bytes, Value::String(text)) => {
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Value::String(bytes.iter().map(|&b| char::from(b)).collect()),
                Err(_) => default.clone(),
            }
        }
        (Kind::Array(items), Value::Array(elements)) => {
            Value::Array(elements.iter().map(|e| avro_default(items, e)).collect())
        }
        (Kind::Struct(fields), Value::Object(object)) => Value::Object(
            fields
                .iter()
                .map(|f| {
                    let value = object.get(&f.name).unwrap_or(&Value::Null);
                    (avro_part(&f.name), avro_default(&f.schema, value))
                })
                .collect(),
        ),
        _ => default.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_become_avro_as_avro_data_makes_them() {
        let decimal = ConnectSchema::of(Kind::Bytes)
            .optional()
            .logical(DECIMAL, 1)
            .parameter("scale", "2")
            .parameter("connect.decimal.precision", "5");
        let schema = ConnectSchema::structure(vec![
            ConnectSchema::of(Kind::Int32).field("id"),
            ConnectSchema::of(Kind::Int16).optional().field("small"),
            decimal.field("price"),
            ConnectSchema::of(Kind::Int32)
                .logical("io.debezium.time.Date", 1)
                .field("day"),
            ConnectSchema::of(Kind::Int64)
                .optional()
                .logical(TIMESTAMP, 1)
                .field("at"),
            ConnectSchema::of(Kind::String)
                .optional()
                .logical("io.debezium.data.Enum", 1)
                .parameter("allowed", "a,b")
                .default_value(json!("a"))
                .field("e"),
            ConnectSchema::of(Kind::Array(Box::new(
                ConnectSchema::of(Kind::Int32).optional(),
            )))
            .optional()
            .field("ai"),
        ])
        .named("p.public.my-table.Value");
        assert_eq!(
            avro_json(&schema),
            concat!(
                r#"{"type":"record","name":"Value","namespace":"p.public.my_table","fields":["#,
                r#"{"name":"id","type":"int"},"#,
                r#"{"name":"small","type":["null",{"type":"int","connect.type":"int16"}],"default":null},"#,
                r#"{"name":"price","type":["null",{"type":"bytes","scale":2,"precision":5,"connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"5"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},"#,
                r#"{"name":"day","type":{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}},"#,
                r#"{"name":"at","type":["null",{"type":"long","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}],"default":null},"#,
                r#"{"name":"e","type":[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"a,b"},"connect.default":"a","connect.name":"io.debezium.data.Enum"},"null"],"default":"a"},"#,
                r#"{"name":"ai","type":["null",{"type":"array","items":["null","int"]}],"default":null}"#,
                r#"],"connect.name":"p.public.my-table.Value"}"#
            )
        );
        apache_avro::Schema::parse_str(&avro_json(&schema)).expect("valid Avro");
    }

    #[test]
    fn a_record_met_again_is_referred_to_by_name() {
        let row = ConnectSchema::structure(vec![ConnectSchema::of(Kind::Int32).field("id")])
            .optional()
            .named("t.Value");
        let envelope = ConnectSchema::structure(vec![
            row.clone().field("before"),
            row.field("after"),
            ConnectSchema::structure(vec![]).field("x"),
        ])
        .logical("t.Envelope", 2);
        let json = avro_json(&envelope);
        assert_eq!(
            json,
            concat!(
                r#"{"type":"record","name":"Envelope","namespace":"t","fields":["#,
                r#"{"name":"before","type":["null",{"type":"record","name":"Value","fields":[{"name":"id","type":"int"}],"connect.name":"t.Value"}],"default":null},"#,
                r#"{"name":"after","type":["null","Value"],"default":null},"#,
                r#"{"name":"x","type":{"type":"record","name":"ConnectDefault","namespace":"io.confluent.connect.avro","fields":[]}}"#,
                r#"],"connect.version":2,"connect.name":"t.Envelope"}"#
            )
        );
        apache_avro::Schema::parse_str(&json).expect("valid Avro");
        assert_eq!(record_name(&envelope).as_deref(), Some("t.Envelope"));
    }
}
