//! A JSON document, as applications write outbox payloads, turned into the Avro value of a
//! registered Avro schema (any schema, not one outboxd derived), for `apache_avro` to encode.
//!
//! The JSON is the application's own, not Avro's JSON encoding: a union takes a plain value (the
//! first branch it fits) or `null`, never `{"type": value}`. Per Avro type:
//!
//! | Avro | JSON |
//! | --- | --- |
//! | `null`, `boolean`, `string` | the same |
//! | `int`, `long` | an integer in range |
//! | `float`, `double` | a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `bytes`, `fixed` | base64 text (a `fixed` of exactly its size) |
//! | `enum` | one of its symbols |
//! | `array`, `map` | an array, an object |
//! | `record` | an object: a missing field takes its default, else `null` if its type allows null; a member the record has no field for does not fit (a misspelt field is not dropped silently) |
//! | `decimal` | a number or a decimal string (`"12.30"`, exact: strings keep every digit, JSON numbers only a double's), with at most its scale's decimal places and its precision's digits |
//! | `uuid` | a UUID's text |
//! | `date` | `"2024-02-29"` or days since 1970-01-01 |
//! | `time-millis`, `time-micros` | `"12:34:56.789"` or the count since midnight |
//! | `timestamp-*` | RFC 3339 with an offset (`"2024-02-29T12:34:56.789Z"`) or the count since the epoch |
//! | `local-timestamp-*` | `"2024-02-29T12:34:56.789"` (no offset) or the count |
//!
//! Field defaults are read as Avro defines them (a union's default is of its first branch;
//! `bytes` and `fixed` defaults are text of code points 0-255). `duration` and apache_avro's own
//! `big-decimal` have no JSON form here and never fit.

use std::collections::HashMap;

use apache_avro::schema::{
    DecimalSchema, EnumSchema, FixedSchema, Name, RecordSchema, ResolvedSchema, UnionSchema,
};
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::Value;

use super::datum::float;

/// A parsed Avro schema with its named types, ready to convert payloads.
#[derive(Debug)]
pub struct JsonSchema {
    /// The schema.
    schema: Schema,
    /// Its named types by full name, to follow references.
    names: HashMap<Name, Schema>,
}

/// Why a value does not fit: where (the path of fields, items and keys from the root, innermost
/// last) and what.
#[derive(Debug)]
struct Misfit {
    /// Segments, innermost first (pushed while unwinding).
    path: Vec<String>,
    message: String,
}

impl Misfit {
    fn new(message: String) -> Self {
        Self {
            path: Vec::new(),
            message,
        }
    }

    /// The misfit one level further out, at `segment`.
    fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// `at /a/b: message`, or the message alone at the root.
    fn describe(self) -> String {
        if self.path.is_empty() {
            return self.message;
        }
        let path: String = self.path.iter().rev().map(|s| format!("/{s}")).collect();
        format!("at {path}: {}", self.message)
    }
}

type Fit<T> = Result<T, Misfit>;

/// How a JSON value is read: as a payload, or as a field default in the schema (which writes
/// `bytes` and `fixed` as code-point text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Payload,
    Default,
}

impl JsonSchema {
    /// The schema of the Avro JSON text `text`, or why it cannot be used.
    pub fn parse(text: &str) -> Result<Self, String> {
        let schema =
            Schema::parse_str(text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        let names = ResolvedSchema::try_from(&schema)
            .map_err(|e| format!("not a valid Avro schema: {e}"))?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        Ok(Self { schema, names })
    }

    /// The parsed schema, to encode with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// `json` as the Avro value of the schema, or where and why it does not fit.
    pub fn value(&self, json: &Value) -> Result<Avro, String> {
        self.convert(&self.schema, json, Source::Payload)
            .map_err(Misfit::describe)
    }

    fn convert(&self, schema: &Schema, json: &Value, source: Source) -> Fit<Avro> {
        let mismatch = || Misfit::new(format!("{} does not fit {}", brief(json), kind(schema)));
        Ok(match (schema, json) {
            (Schema::Ref { name }, json) => {
                let named = self
                    .names
                    .get(name)
                    .ok_or_else(|| Misfit::new(format!("the schema names no type {name}")))?;
                return self.convert(named, json, source);
            }
            (Schema::Null, Value::Null) => Avro::Null,
            (Schema::Boolean, Value::Bool(b)) => Avro::Boolean(*b),
            (Schema::Int, Value::Number(n)) => Avro::Int(int(n).ok_or_else(mismatch)?),
            (Schema::Long, Value::Number(n)) => Avro::Long(n.as_i64().ok_or_else(mismatch)?),
            (Schema::Float | Schema::Double, json) => {
                let float = float(json).ok_or_else(mismatch)?;
                if matches!(schema, Schema::Float) {
                    #[allow(clippy::cast_possible_truncation)] // a float's value, as Avro's
                    Avro::Float(float as f32)
                } else {
                    Avro::Double(float)
                }
            }
            (Schema::String, Value::String(s)) => Avro::String(s.clone()),
            (Schema::Bytes, Value::String(s)) => {
                Avro::Bytes(bytes(s, source).ok_or_else(mismatch)?)
            }
            (Schema::Fixed(fixed), Value::String(s)) => self.fixed(fixed, s, source)?,
            (Schema::Enum(EnumSchema { symbols, name, .. }), Value::String(s)) => {
                let index = symbols.iter().position(|x| x == s).ok_or_else(|| {
                    Misfit::new(format!(
                        "{} is not a symbol of enum {} {symbols:?}",
                        brief(json),
                        name.fullname(None)
                    ))
                })?;
                Avro::Enum(u32::try_from(index).unwrap_or(u32::MAX), s.clone())
            }
            (Schema::Array(array), Value::Array(items)) => Avro::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.convert(&array.items, item, source)
                            .map_err(|m| m.at(i.to_string()))
                    })
                    .collect::<Fit<_>>()?,
            ),
            (Schema::Map(map), Value::Object(members)) => Avro::Map(
                members
                    .iter()
                    .map(|(key, value)| {
                        let avro = self
                            .convert(&map.types, value, source)
                            .map_err(|m| m.at(key.clone()))?;
                        Ok((key.clone(), avro))
                    })
                    .collect::<Fit<_>>()?,
            ),
            (Schema::Record(record), Value::Object(members)) => {
                self.record(record, members, source)?
            }
            (Schema::Union(union), json) => self.union(union, json, source)?,
            (Schema::Decimal(decimal), Value::Number(_) | Value::String(_)) => {
                decimal_value(decimal, json).map_err(Misfit::new)?
            }
            (Schema::Uuid, Value::String(s)) => {
                Avro::Uuid(apache_avro::Uuid::parse_str(s).map_err(|_| mismatch())?)
            }
            (Schema::Date, Value::Number(n)) => Avro::Date(int(n).ok_or_else(mismatch)?),
            (Schema::Date, Value::String(s)) => {
                let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| mismatch())?;
                let days = (date - epoch_date()).num_days();
                Avro::Date(i32::try_from(days).map_err(|_| mismatch())?)
            }
            (Schema::TimeMillis, Value::Number(n)) => {
                Avro::TimeMillis(int(n).ok_or_else(mismatch)?)
            }
            (Schema::TimeMicros, Value::Number(n)) => {
                Avro::TimeMicros(n.as_i64().ok_or_else(mismatch)?)
            }
            (Schema::TimeMillis | Schema::TimeMicros, Value::String(s)) => {
                let time = NaiveTime::parse_from_str(s, "%H:%M:%S%.f").map_err(|_| mismatch())?;
                let micros = i64::from(time.num_seconds_from_midnight()) * 1_000_000
                    + i64::from(time.nanosecond() / 1000);
                if matches!(schema, Schema::TimeMillis) {
                    Avro::TimeMillis(i32::try_from(micros / 1000).map_err(|_| mismatch())?)
                } else {
                    Avro::TimeMicros(micros)
                }
            }
            (timestamp, Value::Number(n)) if timestamp_unit(timestamp).is_some() => {
                timestamp_value(timestamp, n.as_i64().ok_or_else(mismatch)?)
            }
            (timestamp, Value::String(s)) if timestamp_unit(timestamp).is_some() => {
                let local = matches!(
                    timestamp,
                    Schema::LocalTimestampMillis
                        | Schema::LocalTimestampMicros
                        | Schema::LocalTimestampNanos
                );
                let utc = if local {
                    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .map_err(|_| mismatch())?
                        .and_utc()
                } else {
                    DateTime::parse_from_rfc3339(s)
                        .map_err(|_| mismatch())?
                        .to_utc()
                };
                let count = match timestamp_unit(timestamp) {
                    Some(Unit::Millis) => Some(utc.timestamp_millis()),
                    Some(Unit::Micros) => Some(utc.timestamp_micros()),
                    _ => utc.timestamp_nanos_opt(),
                };
                timestamp_value(timestamp, count.ok_or_else(mismatch)?)
            }
            _ => return Err(mismatch()),
        })
    }

    /// A record from `members`: every field in the schema's order, missing ones by default.
    fn record(
        &self,
        record: &RecordSchema,
        members: &serde_json::Map<String, Value>,
        source: Source,
    ) -> Fit<Avro> {
        if let Some(stray) = members.keys().find(|m| !record.lookup.contains_key(*m)) {
            return Err(Misfit::new(format!(
                "record {} has no field {stray:?}",
                record.name.fullname(None)
            )));
        }
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let value = match (members.get(&field.name), &field.default) {
                (Some(value), _) => self.convert(&field.schema, value, source),
                (None, Some(default)) => self.default(&field.schema, default),
                (None, None) if self.nullable(&field.schema) => {
                    self.convert(&field.schema, &Value::Null, source)
                }
                (None, None) => Err(Misfit::new(
                    "is missing, and the field has no default".into(),
                )),
            }
            .map_err(|m| m.at(field.name.clone()))?;
            fields.push((field.name.clone(), value));
        }
        Ok(Avro::Record(fields))
    }

    /// A field's `default`: of a union, of its first branch.
    fn default(&self, schema: &Schema, default: &Value) -> Fit<Avro> {
        match schema {
            Schema::Union(union) => {
                let first = union
                    .variants()
                    .first()
                    .ok_or_else(|| Misfit::new("an empty union has no default".into()))?;
                Ok(Avro::Union(
                    0,
                    Box::new(self.convert(first, default, Source::Default)?),
                ))
            }
            schema => self.convert(schema, default, Source::Default),
        }
    }

    /// Whether `schema` takes `null`.
    fn nullable(&self, schema: &Schema) -> bool {
        match schema {
            Schema::Null => true,
            Schema::Union(union) => union.variants().iter().any(|v| matches!(v, Schema::Null)),
            Schema::Ref { name } => self.names.get(name).is_some_and(|s| self.nullable(s)),
            _ => false,
        }
    }

    /// The first branch of `union` that `json` fits.
    fn union(&self, union: &UnionSchema, json: &Value, source: Source) -> Fit<Avro> {
        let mut misfits = Vec::new();
        for (index, branch) in union.variants().iter().enumerate() {
            match self.convert(branch, json, source) {
                Ok(value) => {
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    return Ok(Avro::Union(index, Box::new(value)));
                }
                Err(misfit) => misfits.push(misfit),
            }
        }
        // One branch besides null: its own reason says more than "none fits".
        let others: Vec<_> = union
            .variants()
            .iter()
            .zip(misfits)
            .filter(|(branch, _)| !matches!(branch, Schema::Null))
            .collect();
        match <[_; 1]>::try_from(others) {
            Ok([(_, misfit)]) if !json.is_null() => Err(misfit),
            _ => Err(Misfit::new(format!(
                "{} fits no branch of the union [{}]",
                brief(json),
                union
                    .variants()
                    .iter()
                    .map(kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn fixed(&self, fixed: &FixedSchema, text: &str, source: Source) -> Fit<Avro> {
        let bytes = bytes(text, source)
            .filter(|b| b.len() == fixed.size)
            .ok_or_else(|| {
                Misfit::new(format!(
                    "{} is not {} bytes in base64 (fixed {})",
                    brief(&Value::String(text.to_owned())),
                    fixed.size,
                    fixed.name.fullname(None)
                ))
            })?;
        Ok(Avro::Fixed(fixed.size, bytes))
    }
}

/// `bytes` of a payload (base64) or of a default (code points 0-255).
fn bytes(text: &str, source: Source) -> Option<Vec<u8>> {
    match source {
        Source::Payload => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        Source::Default => text.chars().map(|c| u8::try_from(c).ok()).collect(),
    }
}

fn int(n: &serde_json::Number) -> Option<i32> {
    n.as_i64().and_then(|i| i32::try_from(i).ok())
}

fn epoch_date() -> NaiveDate {
    DateTime::UNIX_EPOCH.date_naive()
}

/// Timestamp precisions.
enum Unit {
    Millis,
    Micros,
    Nanos,
}

fn timestamp_unit(schema: &Schema) -> Option<Unit> {
    match schema {
        Schema::TimestampMillis | Schema::LocalTimestampMillis => Some(Unit::Millis),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => Some(Unit::Micros),
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Some(Unit::Nanos),
        _ => None,
    }
}

fn timestamp_value(schema: &Schema, count: i64) -> Avro {
    match schema {
        Schema::TimestampMillis => Avro::TimestampMillis(count),
        Schema::TimestampMicros => Avro::TimestampMicros(count),
        Schema::TimestampNanos => Avro::TimestampNanos(count),
        Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(count),
        Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(count),
        _ => Avro::LocalTimestampNanos(count),
    }
}

/// The largest precision an `i128` holds every value of.
const MAX_PRECISION: usize = 38;

/// A decimal number or string as the `decimal` of `schema`: exact, or refused (never rounded).
fn decimal_value(schema: &DecimalSchema, json: &Value) -> Result<Avro, String> {
    let text = match json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let described = format!("decimal({}, {})", schema.precision, schema.scale);
    let refuse = |why: &str| format!("{} does not fit {described}: {why}", brief(json));
    if schema.precision > MAX_PRECISION {
        return Err(refuse("decimals of more than 38 digits are not supported"));
    }
    let (negative, digits, exponent) =
        parse_decimal(&text).ok_or_else(|| refuse("not a number"))?;
    // value = digits × 10^exponent; unscaled = value × 10^scale, which must be a whole number.
    let shift = exponent + i64::try_from(schema.scale).unwrap_or(i64::MAX);
    let mut digits = digits.trim_start_matches('0').to_owned();
    if shift >= 0 {
        digits.extend(std::iter::repeat_n(
            '0',
            usize::try_from(shift).unwrap_or(0),
        ));
    } else {
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        let kept = digits.len().saturating_sub(cut);
        if digits[kept..].bytes().any(|b| b != b'0') {
            return Err(refuse(&format!(
                "more than {} decimal places",
                schema.scale
            )));
        }
        digits.truncate(kept);
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > schema.precision {
        return Err(refuse(&format!("more than {} digits", schema.precision)));
    }
    let magnitude: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| refuse("not a number"))?
    };
    let unscaled = if negative { -magnitude } else { magnitude };
    let bytes = twos_complement(unscaled);
    if let Schema::Fixed(fixed) = schema.inner.as_ref() {
        if bytes.len() > fixed.size {
            return Err(refuse(&format!("more than its fixed {} bytes", fixed.size)));
        }
    }
    Ok(Avro::Decimal(apache_avro::Decimal::from(bytes)))
}

/// `[-]digits[.digits][e[+-]digits]` as (negative, all digits, exponent of the last digit).
fn parse_decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction_len = i64::try_from(fraction.len()).ok()?;
    Some((negative, digits, exponent.checked_sub(fraction_len)?))
}

/// The shortest big-endian two's complement of `n` (Java's `BigInteger.toByteArray`).
fn twos_complement(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let sign = if n < 0 { 0xff } else { 0x00 };
    let mut start = 0;
    while start + 1 < bytes.len()
        && bytes[start] == sign
        && (bytes[start + 1] & 0x80) == (sign & 0x80)
    {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// A JSON value in a message: short, so a large payload does not flood the dead letter.
fn brief(json: &Value) -> String {
    const MAX: usize = 60;
    let text = json.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The Avro type of `schema`, as a message names it.
fn kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Ref { name } => name.fullname(None),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration => "duration".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ORDER: &str = r#"{
      "type": "record", "name": "OrderPlaced", "namespace": "shop",
      "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "at_ms", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "lines", "type": {"type": "array", "items": {
          "type": "record", "name": "Line",
          "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "first", "type": ["null", "Line"], "default": null},
        {"name": "note", "type": ["null", "string"]},
        {"name": "channel", "type": "string", "default": "web"},
        {"name": "raw", "type": "bytes", "default": "\u00ff"}
      ]}"#;

    fn order() -> Value {
        json!({
            "id": "6f1c2a4e-8b9d-4c3e-9f00-1234567890ab",
            "total": "-12.30",
            "day": "2024-02-29",
            "at": "2024-02-29T12:34:56.789012+01:00",
            "at_ms": 1_709_206_496_789_i64,
            "status": "PAID",
            "lines": [{"sku": "a", "qty": 2}],
            "tags": {"k": "v"},
            "first": {"sku": "b", "qty": 1},
            "note": "hi"
        })
    }

    #[test]
    fn every_kind_of_field_fits_and_encodes() {
        let schema = JsonSchema::parse(ORDER).expect("valid");
        let value = schema.value(&order()).expect("fits");
        let Avro::Record(fields) = &value else {
            panic!("{value:?}")
        };
        let field = |name: &str| &fields.iter().find(|(n, _)| n == name).expect(name).1;
        assert_eq!(
            field("total"),
            &Avro::Decimal(apache_avro::Decimal::from([0xfb, 0x32]))
        );
        assert_eq!(field("day"), &Avro::Date(19_782));
        assert_eq!(field("at"), &Avro::TimestampMicros(1_709_206_496_789_012));
        assert_eq!(
            field("at_ms"),
            &Avro::Union(1, Box::new(Avro::TimestampMillis(1_709_206_496_789)))
        );
        assert_eq!(field("status"), &Avro::Enum(1, "PAID".into()));
        assert_eq!(field("channel"), &Avro::String("web".into()));
        assert_eq!(field("raw"), &Avro::Bytes(vec![0xff]));
        assert_eq!(
            field("first"),
            &Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    ("sku".into(), Avro::String("b".into())),
                    ("qty".into(), Avro::Int(1)),
                ]))
            )
        );
        apache_avro::to_avro_datum(schema.schema(), value).expect("encodes");

        // Nullable fields may be left out or null; defaults fill in.
        let mut sparse = order();
        let object = sparse.as_object_mut().expect("object");
        object.remove("note");
        object.remove("first");
        object.insert("at_ms".into(), Value::Null);
        let value = schema.value(&sparse).expect("fits");
        apache_avro::to_avro_datum(schema.schema(), value).expect("encodes");
    }

    #[test]
    fn a_misfit_says_where_and_why() {
        let schema = JsonSchema::parse(ORDER).expect("valid");
        let cases = [
            (
                "total",
                json!("1.234"),
                "at /total: \"1.234\" does not fit decimal(9, 2): more than 2 decimal places",
            ),
            (
                "total",
                json!(12_345_678.9),
                "at /total: 12345678.9 does not fit decimal(9, 2): more than 9 digits",
            ),
            (
                "status",
                json!("LOST"),
                "at /status: \"LOST\" is not a symbol of enum shop.Status [\"NEW\", \"PAID\"]",
            ),
            ("id", json!("nope"), "at /id: \"nope\" does not fit uuid"),
            (
                "day",
                json!("2024-02-30"),
                "at /day: \"2024-02-30\" does not fit date",
            ),
            (
                "at_ms",
                json!("yesterday"),
                "at /at_ms: \"yesterday\" does not fit timestamp-millis",
            ),
            (
                "lines",
                json!([{"sku": "a", "qty": "2"}]),
                "at /lines/0/qty: \"2\" does not fit int",
            ),
            ("tags", json!({"k": 1}), "at /tags/k: 1 does not fit string"),
            ("id", Value::Null, "at /id: null does not fit uuid"),
        ];
        for (field, bad, expected) in cases {
            let mut payload = order();
            payload[field] = bad;
            assert_eq!(schema.value(&payload).expect_err(field), expected);
        }
        let mut payload = order();
        payload["colour"] = json!("red");
        assert_eq!(
            schema.value(&payload).expect_err("stray"),
            "record shop.OrderPlaced has no field \"colour\""
        );
        payload = order();
        payload.as_object_mut().expect("object").remove("day");
        assert_eq!(
            schema.value(&payload).expect_err("missing"),
            "at /day: is missing, and the field has no default"
        );
        assert_eq!(
            schema.value(&json!([])).expect_err("not an object"),
            "[] does not fit record shop.OrderPlaced"
        );
    }

    #[test]
    fn decimals_are_exact() {
        let decimal = |precision, scale| DecimalSchema {
            precision,
            scale,
            inner: Box::new(Schema::Bytes),
        };
        let unscaled = |schema: &DecimalSchema, json: Value| match decimal_value(schema, &json) {
            Ok(Avro::Decimal(d)) => Ok(decimal_bytes(&d)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let d = decimal(5, 2);
        assert_eq!(unscaled(&d, json!("1.5")), Ok(vec![0x00, 0x96]));
        assert_eq!(unscaled(&d, json!("-0.01")), Ok(vec![0xff]));
        assert_eq!(unscaled(&d, json!(1e2)), Ok(vec![0x27, 0x10]));
        assert_eq!(unscaled(&d, json!("123.450")), Ok(vec![0x30, 0x39]));
        assert_eq!(unscaled(&d, json!("0")), Ok(vec![0]));
        assert!(unscaled(&d, json!("1000")).is_err(), "6 digits");
        assert!(unscaled(&d, json!("1.2.3")).is_err());
        assert!(unscaled(&d, json!("")).is_err());
        assert_eq!(twos_complement(128), vec![0x00, 0x80]);
        assert_eq!(twos_complement(-129), vec![0xff, 0x7f]);
    }

    /// A decimal's bytes, through its Avro encoding (length prefix dropped).
    fn decimal_bytes(decimal: &apache_avro::Decimal) -> Vec<u8> {
        let schema = Schema::Decimal(DecimalSchema {
            precision: 38,
            scale: 0,
            inner: Box::new(Schema::Bytes),
        });
        let datum =
            apache_avro::to_avro_datum(&schema, Avro::Decimal(decimal.clone())).expect("encodes");
        datum[1..].to_vec()
    }
}
