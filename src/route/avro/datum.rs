//! A value as the JSON events carry it (JsonConverter's payload: bytes in base64, NaN and the
//! infinities as strings) turned into the Avro value of its schema's [`super::schema::avro_json`],
//! for `apache_avro` to validate and encode.

use apache_avro::types::Value as Avro;
use apache_avro::Decimal;
use base64::Engine;
use serde_json::Value;

use crate::route::cdc::schema::{ConnectSchema, Kind};

use super::schema::{avro_part, avro_type, null_first, DATE, DECIMAL, TIME, TIMESTAMP};

/// `json` as the Avro value of `schema`, or why it does not fit.
pub fn avro_value(schema: &ConnectSchema, json: &Value) -> Result<Avro, String> {
    if !schema.optional {
        return base(schema, json);
    }
    let first = null_first(schema);
    Ok(match json {
        Value::Null => Avro::Union(u32::from(!first), Box::new(Avro::Null)),
        json => Avro::Union(u32::from(first), Box::new(base(schema, json)?)),
    })
}

fn base(schema: &ConnectSchema, json: &Value) -> Result<Avro, String> {
    let mismatch = || format!("{json} does not fit {}", describe(schema));
    let logical = schema.name.as_deref();
    Ok(match (&schema.kind, json) {
        (Kind::Boolean, Value::Bool(b)) => Avro::Boolean(*b),
        (Kind::Int16 | Kind::Int32, Value::Number(n)) => {
            let int = n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(mismatch)?;
            match logical {
                Some(DATE) => Avro::Date(int),
                Some(TIME) => Avro::TimeMillis(int),
                _ => Avro::Int(int),
            }
        }
        (Kind::Int64, Value::Number(n)) => {
            let long = n.as_i64().ok_or_else(mismatch)?;
            match logical {
                Some(TIMESTAMP) => Avro::TimestampMillis(long),
                _ => Avro::Long(long),
            }
        }
        (Kind::Float32 | Kind::Float64, json) => {
            let float = float(json).ok_or_else(mismatch)?;
            if schema.kind == Kind::Float32 {
                #[allow(clippy::cast_possible_truncation)] // a float4's value, read as a double
                Avro::Float(float as f32)
            } else {
                Avro::Double(float)
            }
        }
        (Kind::String, Value::String(s)) => Avro::String(s.clone()),
        (Kind::Bytes, Value::String(text)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| mismatch())?;
            match logical {
                Some(DECIMAL) => Avro::Decimal(Decimal::from(bytes)),
                _ => Avro::Bytes(bytes),
            }
        }
        (Kind::Array(items), Value::Array(elements)) => Avro::Array(
            elements
                .iter()
                .map(|e| avro_value(items, e))
                .collect::<Result<_, _>>()?,
        ),
        (Kind::Struct(fields), Value::Object(object)) => Avro::Record(
            fields
                .iter()
                .map(|f| {
                    let value = object.get(&f.name).unwrap_or(&Value::Null);
                    let avro =
                        avro_value(&f.schema, value).map_err(|e| format!("{}: {e}", f.name))?;
                    Ok((avro_part(&f.name), avro))
                })
                .collect::<Result<_, String>>()?,
        ),
        _ => return Err(mismatch()),
    })
}

/// A JSON number as a double, or NaN and the infinities as JsonConverter writes them (strings).
pub(super) fn float(json: &Value) -> Option<f64> {
    match json {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The Avro type of `schema`, with its Connect name: what a value failed to fit.
fn describe(schema: &ConnectSchema) -> String {
    let kind = avro_type(&schema.kind);
    let required = if schema.optional { "" } else { "required " };
    match &schema.name {
        Some(name) => format!("{required}{kind} ({name})"),
        None => format!("{required}{kind}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::schema::avro_json;
    use super::*;

    #[test]
    fn json_payloads_become_avro_datums() {
        let schema = ConnectSchema::structure(vec![
            ConnectSchema::of(Kind::Int32).field("id"),
            ConnectSchema::of(Kind::Float64).optional().field("d"),
            ConnectSchema::of(Kind::Bytes)
                .optional()
                .logical(DECIMAL, 1)
                .parameter("scale", "2")
                .parameter("connect.decimal.precision", "5")
                .field("price"),
            ConnectSchema::of(Kind::String)
                .optional()
                .default_value(json!("x"))
                .field("s"),
        ])
        .named("t.Value");
        let parsed = apache_avro::Schema::parse_str(&avro_json(&schema)).expect("valid Avro");
        let value = avro_value(
            &schema,
            &json!({"id": 1, "d": "NaN", "price": "AMg=", "s": null}),
        )
        .expect("fits");
        let datum = apache_avro::to_avro_datum(&parsed, value).expect("encodes");
        // id 1 (zigzag 2); d: union branch 1 (2), NaN as 8 little-endian bytes; price: branch 1,
        // length 2 (4), 0x00 0xc8; s: branch 1 of ["string","null"] (2).
        let mut expected = vec![2, 2];
        expected.extend(f64::NAN.to_le_bytes());
        expected.extend([2, 4, 0x00, 0xc8, 2]);
        assert_eq!(datum, expected);
        let error = avro_value(&schema, &json!({"id": null})).expect_err("id is required");
        assert_eq!(error, "id: null does not fit required int");
    }
}
