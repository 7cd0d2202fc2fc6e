//! Column values to JSON, by type OID.
//!
//! pgoutput sends each value in its type's text output format. The replication connection sets
//! `DateStyle=ISO, MDY`, `TimeZone=UTC`, `IntervalStyle=iso_8601`, `extra_float_digits=3` and
//! `bytea_output=hex` ([`crate::pg::wire::SESSION_SETTINGS`]), so those texts are deterministic,
//! and this module turns them into the JSON PostgreSQL's own `to_jsonb` gives, except where a
//! consumer is better served otherwise:
//!
//! | type | outboxd | `to_jsonb` | why |
//! |---|---|---|---|
//! | numeric | `"12.50"` (string, exact) | `12.50` (number) | JSON numbers lose precision in most parsers |
//! | bytea | base64 `"AQI="` | `"\\x0102"` | the standard binary-in-JSON encoding |
//!
//! Everything else matches `to_jsonb`: booleans and integers as JSON, floats as numbers (NaN and
//! infinities as strings), json/jsonb embedded, timestamps ISO-8601 with `T` and `+hh:mm`
//! offsets (time and timetz as PostgreSQL writes them), intervals in ISO-8601 duration form, arrays
//! nested with NULL elements, enums and
//! domains by their text and base type, anything else as its text. An unchanged TOASTed value has
//! no value at all: it stays [`Datum::UnchangedToast`] and the router decides what to show.

pub mod array;
mod catalog;

use base64::Engine;
use serde_json::Value;

pub use catalog::{TypeCatalog, TypeKind};

use crate::pg::pgoutput::ColumnValue;
use crate::pg::TypeOid;

/// A column's value as the router sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A TOASTed value the update did not change; Postgres did not send it.
    UnchangedToast,
    /// The value.
    Value(Value),
}

/// A value that does not parse as its type's text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// The text is not valid for the type.
    #[error("value {text:?} is not valid text for type OID {oid}")]
    Invalid {
        /// The type.
        oid: TypeOid,
        /// The text (truncated to 200 characters).
        text: String,
    },
    /// The value came in binary format, which outboxd does not request.
    #[error("value of type OID {0} came in binary format; outboxd reads text format only")]
    Binary(TypeOid),
}

/// The datum of one column value.
pub fn column_to_datum(
    catalog: &TypeCatalog,
    oid: TypeOid,
    value: &ColumnValue,
) -> Result<Datum, TypeError> {
    match value {
        ColumnValue::Null => Ok(Datum::Null),
        ColumnValue::UnchangedToast => Ok(Datum::UnchangedToast),
        ColumnValue::Binary(_) => Err(TypeError::Binary(oid)),
        ColumnValue::Text(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| invalid(oid, &String::from_utf8_lossy(bytes)))?;
            text_to_json(catalog, oid, text).map(Datum::Value)
        }
    }
}

/// The JSON of a value's text output by its type.
pub fn text_to_json(catalog: &TypeCatalog, oid: TypeOid, text: &str) -> Result<Value, TypeError> {
    match catalog.kind(oid) {
        TypeKind::Array { element, delimiter } => {
            let elements = array::parse(text, delimiter).ok_or_else(|| invalid(oid, text))?;
            array_to_json(catalog, element, elements)
        }
        TypeKind::Domain { base, .. } => text_to_json(catalog, base, text),
        TypeKind::Enum | TypeKind::Other => Ok(Value::String(text.to_owned())),
        TypeKind::Builtin(base) => builtin(base, oid, text),
    }
}

fn array_to_json(
    catalog: &TypeCatalog,
    element: TypeOid,
    elements: Vec<array::Element>,
) -> Result<Value, TypeError> {
    elements
        .into_iter()
        .map(|e| match e {
            array::Element::Null => Ok(Value::Null),
            array::Element::Text(text) => text_to_json(catalog, element, &text),
            array::Element::Array(inner) => array_to_json(catalog, element, inner),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Built-in base types that are not plain strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// bool.
    Bool,
    /// int2, int4, int8, oid.
    Integer,
    /// float4, float8.
    Float,
    /// numeric.
    Numeric,
    /// json, jsonb.
    Json,
    /// bytea.
    Bytea,
    /// timestamp (date and time separated by `T`).
    Timestamp,
    /// timestamptz (also `+hh:mm` offsets).
    TimestampTz,
    /// text, varchar, uuid, date, time, timetz, interval, inet, ... : the text as it is.
    Text,
}

fn builtin(kind: Builtin, oid: TypeOid, text: &str) -> Result<Value, TypeError> {
    let bad = || invalid(oid, text);
    Ok(match kind {
        Builtin::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Builtin::Integer => Value::from(text.parse::<i64>().map_err(|_| bad())?),
        Builtin::Float => match text {
            "NaN" | "Infinity" | "-Infinity" => Value::String(text.to_owned()),
            _ => {
                let float: f64 = text.parse().map_err(|_| bad())?;
                serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number)
            }
        },
        Builtin::Numeric => {
            let valid =
                matches!(text, "NaN" | "Infinity" | "-Infinity") || text.parse::<f64>().is_ok();
            if !valid {
                return Err(bad());
            }
            Value::String(text.to_owned())
        }
        Builtin::Json => serde_json::from_str(text).map_err(|_| bad())?,
        Builtin::Bytea => {
            let hex = text.strip_prefix("\\x").ok_or_else(bad)?;
            let bytes = decode_hex(hex).ok_or_else(bad)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Builtin::Timestamp => Value::String(date_time_t(text)),
        Builtin::TimestampTz => Value::String(full_offset(&date_time_t(text))),
        Builtin::Text => Value::String(text.to_owned()),
    })
}

/// `2024-01-31 12:00:00` to `2024-01-31T12:00:00` (infinity and the ` BC` suffix unchanged).
fn date_time_t(text: &str) -> String {
    match text.find(' ') {
        Some(at) if text.as_bytes().get(at + 1).is_some_and(u8::is_ascii_digit) => {
            format!("{}T{}", &text[..at], &text[at + 1..])
        }
        _ => text.to_owned(),
    }
}

/// A timestamp's trailing `+05` or `-03` offset as `+05:00`, the way `to_jsonb` writes it (for
/// timetz `to_jsonb` keeps the short form, and so do we).
fn full_offset(text: &str) -> String {
    let (body, suffix) = match text.strip_suffix(" BC") {
        Some(body) => (body, " BC"),
        None => (text, ""),
    };
    let bytes = body.as_bytes();
    let n = bytes.len();
    let short_offset = n >= 3
        && matches!(bytes[n - 3], b'+' | b'-')
        && bytes[n - 2].is_ascii_digit()
        && bytes[n - 1].is_ascii_digit();
    if short_offset {
        format!("{body}:00{suffix}")
    } else {
        text.to_owned()
    }
}

/// The bytes of a hex string (bytea's text output after its `\x`); `None` if it is not hex.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn invalid(oid: TypeOid, text: &str) -> TypeError {
    TypeError::Invalid {
        oid,
        text: text.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn convert(oid: u32, text: &str) -> Value {
        text_to_json(&TypeCatalog::builtin(), TypeOid(oid), text).expect("converts")
    }

    #[test]
    fn scalars() {
        assert_eq!(convert(16, "t"), json!(true));
        assert_eq!(convert(20, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(convert(701, "1.5e+300"), json!(1.5e300));
        assert_eq!(convert(700, "NaN"), json!("NaN"));
        assert_eq!(convert(701, "-Infinity"), json!("-Infinity"));
        assert_eq!(
            convert(1700, "123456789012345678901234567890.000001"),
            json!("123456789012345678901234567890.000001")
        );
        assert_eq!(convert(1700, "NaN"), json!("NaN"));
        assert_eq!(convert(25, "ünïcode \"q\""), json!("ünïcode \"q\""));
        assert_eq!(
            convert(3802, r#"{"a": [1, null]}"#),
            json!({"a": [1, null]})
        );
        assert_eq!(convert(17, "\\x0102ff"), json!("AQL/"));
        assert_eq!(convert(17, "\\x"), json!(""));
    }

    #[test]
    fn dates_and_times_in_iso_8601() {
        assert_eq!(convert(1082, "2024-01-31"), json!("2024-01-31"));
        assert_eq!(
            convert(1114, "2024-01-31 12:34:56.789"),
            json!("2024-01-31T12:34:56.789")
        );
        assert_eq!(
            convert(1114, "0044-03-15 12:00:00 BC"),
            json!("0044-03-15T12:00:00 BC")
        );
        assert_eq!(
            convert(1184, "2024-01-31 12:34:56+00"),
            json!("2024-01-31T12:34:56+00:00")
        );
        assert_eq!(convert(1184, "infinity"), json!("infinity"));
        assert_eq!(convert(1184, "-infinity"), json!("-infinity"));
        assert_eq!(convert(1266, "12:00:00+05:30"), json!("12:00:00+05:30"));
        assert_eq!(convert(1266, "12:00:00-03"), json!("12:00:00-03"));
        assert_eq!(convert(1186, "P1Y2M3DT4H5M6.5S"), json!("P1Y2M3DT4H5M6.5S"));
    }

    #[test]
    fn arrays_nest_and_convert_their_elements() {
        assert_eq!(convert(1007, "{1,NULL,3}"), json!([1, null, 3]));
        assert_eq!(convert(1007, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(
            convert(1009, r#"{"a,b",NULL,"\"q\""}"#),
            json!(["a,b", null, "\"q\""])
        );
        assert_eq!(convert(1231, "{1.50,NaN}"), json!(["1.50", "NaN"]));
        assert_eq!(
            convert(1185, r#"{"2024-01-31 12:00:00+00"}"#),
            json!(["2024-01-31T12:00:00+00:00"])
        );
        assert_eq!(convert(1007, "{}"), json!([]));
    }

    #[test]
    fn invalid_text_names_the_type_and_the_text() {
        let catalog = TypeCatalog::builtin();
        for (oid, text) in [
            (16, "yes"),
            (23, "1.5"),
            (17, "0102"),
            (17, "\\x012"),
            (3802, "{"),
            (1007, "{1,2"),
        ] {
            let error = text_to_json(&catalog, TypeOid(oid), text).expect_err("invalid");
            assert!(error.to_string().contains(&oid.to_string()), "{error}");
        }
        assert_eq!(
            column_to_datum(&catalog, TypeOid(23), &ColumnValue::UnchangedToast),
            Ok(Datum::UnchangedToast)
        );
    }
}
