//! Reading an outbox event's fields by name, from a row's columns or a message's JSON object.

use std::borrow::Cow;

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::pg::pgoutput::{ColumnValue, Relation, TupleData};
use crate::pg::types::{text_to_json, TypeCatalog};
use crate::pg::TypeOid;
use crate::route::cdc::values::temporal;

/// Where the fields come from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fields<'a> {
    /// An inserted row.
    Row {
        relation: &'a Relation,
        row: &'a TupleData,
    },
    /// A logical message's JSON object, its values as they were written.
    Message(&'a HashMap<String, Box<RawValue>>),
}

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field<'a> {
    /// No such column or key.
    Absent,
    /// NULL (or JSON null).
    Null,
    /// A column's text, with its type.
    Column { text: &'a str, oid: TypeOid },
    /// A message field.
    Json(Value),
    /// A value that cannot be read (not UTF-8, or sent in binary).
    Unreadable(&'static str),
}

impl<'a> Fields<'a> {
    /// The field called `name`.
    pub(super) fn get(&self, name: &str) -> Field<'a> {
        match *self {
            Fields::Row { relation, row } => {
                let Some(index) = relation.columns.iter().position(|c| c.name == name) else {
                    return Field::Absent;
                };
                let oid = relation.columns[index].type_oid;
                match row.0.get(index) {
                    None => Field::Absent,
                    Some(ColumnValue::Null) => Field::Null,
                    Some(ColumnValue::Text(bytes)) => match std::str::from_utf8(bytes) {
                        Ok(text) => Field::Column { text, oid },
                        Err(_) => Field::Unreadable("is not valid UTF-8"),
                    },
                    Some(ColumnValue::UnchangedToast) => Field::Unreadable("was not sent"),
                    Some(ColumnValue::Binary(_)) => Field::Unreadable("came in binary format"),
                }
            }
            Fields::Message(object) => match object.get(name) {
                None => Field::Absent,
                Some(raw) => match serde_json::from_str(raw.get()) {
                    Ok(Value::Null) => Field::Null,
                    Ok(value) => Field::Json(value),
                    Err(_) => Field::Unreadable("is not JSON"),
                },
            },
        }
    }

    /// A field's JSON text exactly as written (a message field), or a column's text; `None` when
    /// absent or NULL. Payloads are taken so, to reach Kafka byte for byte.
    pub(super) fn raw(&self, name: &str) -> Result<Option<Cow<'a, str>>, String> {
        match *self {
            Fields::Row { .. } => self
                .get(name)
                .text()
                .map(|t| t.map(|t| Cow::Owned(t.into_owned()))),
            Fields::Message(object) => Ok(object
                .get(name)
                .map(|raw| raw.get())
                .filter(|raw| *raw != "null")
                .map(Cow::Borrowed)),
        }
    }
}

impl<'a> Field<'a> {
    /// The value as text: a column's text, a JSON string's content, other JSON as JSON text;
    /// `None` when absent or NULL.
    pub(super) fn text(&self) -> Result<Option<Cow<'a, str>>, String> {
        match self {
            Field::Absent | Field::Null => Ok(None),
            Field::Column { text, .. } => Ok(Some(Cow::Borrowed(text))),
            Field::Json(Value::String(text)) => Ok(Some(Cow::Owned(text.clone()))),
            Field::Json(value) => Ok(Some(Cow::Owned(value.to_string()))),
            Field::Unreadable(problem) => Err((*problem).into()),
        }
    }

    /// The value as JSON: a column converted by its type, a message field as it is.
    pub(super) fn json(&self, types: &TypeCatalog) -> Result<Value, String> {
        match self {
            Field::Absent | Field::Null => Ok(Value::Null),
            Field::Column { text, oid } => {
                text_to_json(types, *oid, text).map_err(|e| e.to_string())
            }
            Field::Json(value) => Ok(value.clone()),
            Field::Unreadable(problem) => Err((*problem).into()),
        }
    }

    /// The value as a point in time, in microseconds since the Unix epoch: a timestamp(tz)
    /// column, an RFC 3339 string, or a number of milliseconds since the epoch.
    pub(super) fn time_micros(&self) -> Result<Option<i64>, String> {
        let bad = |text: &str| format!("{text:?} is not a timestamp");
        match self {
            Field::Absent | Field::Null => Ok(None),
            Field::Column { text, .. } => {
                if let Ok(millis) = text.parse::<i64>() {
                    return Ok(Some(millis.saturating_mul(1000)));
                }
                parse_postgres_time(text)
                    .or_else(|| parse_rfc3339(text))
                    .map(Some)
                    .ok_or_else(|| bad(text))
            }
            Field::Json(Value::String(text)) => {
                parse_rfc3339(text).map(Some).ok_or_else(|| bad(text))
            }
            Field::Json(Value::Number(number)) => number
                .as_i64()
                .map(|millis| Some(millis.saturating_mul(1000)))
                .ok_or_else(|| bad(&number.to_string())),
            Field::Json(other) => Err(bad(&other.to_string())),
            Field::Unreadable(problem) => Err((*problem).into()),
        }
    }
}

/// A timestamptz (`2024-01-31 12:34:56.789+00`) or timestamp (read as UTC) as PostgreSQL writes
/// them with `DateStyle=ISO`, read without a format string (chrono's took 2 % of the relay's CPU
/// on outbox events).
fn parse_postgres_time(text: &str) -> Option<i64> {
    temporal::timestamptz_micros(text).or_else(|| temporal::timestamp_micros(text))
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_every_accepted_form() {
        let column = |text| Field::Column {
            text,
            oid: TypeOid(1184),
        };
        let expected = Some(1_706_704_496_789_000);
        assert_eq!(
            column("2024-01-31 12:34:56.789+00").time_micros(),
            Ok(expected)
        );
        assert_eq!(
            column("2024-01-31 18:04:56.789+05:30").time_micros(),
            Ok(expected)
        );
        assert_eq!(
            column("2024-01-31 12:34:56.789").time_micros(),
            Ok(expected)
        );
        assert_eq!(column("1706704496789").time_micros(), Ok(expected));
        let rfc = Value::String("2024-01-31T12:34:56.789Z".into());
        assert_eq!(Field::Json(rfc).time_micros(), Ok(expected));
        let millis = Value::from(1_706_704_496_789_i64);
        assert_eq!(Field::Json(millis).time_micros(), Ok(expected));
        assert!(column("infinity").time_micros().is_err());
        assert!(column("2024-02-30 00:00:00+00").time_micros().is_err());
        assert!(column("2024-01-31 12:34:56+0x").time_micros().is_err());
        assert_eq!(Field::Null.time_micros(), Ok(None));
    }

    /// What the format strings this parser replaced read, for the forms PostgreSQL writes.
    fn chrono_micros(text: &str) -> Option<i64> {
        chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map(|time| time.timestamp_micros())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|time| time.and_utc().timestamp_micros())
            })
            .ok()
    }

    #[test]
    fn postgres_times_read_as_chrono_read_them() {
        let forms = [
            "2024-01-31 12:34:56+00",
            "2024-01-31 12:34:56.1+00",
            "2024-01-31 12:34:56.123456+00",
            "2024-01-31 00:00:00-08",
            "2024-01-31 23:59:59.999999+05:30",
            "1969-12-31 23:59:59.5+00",
            "1900-02-28 01:02:03-03:30",
            "2024-02-29 12:00:00",
            "2024-01-31 12:34:56.000001",
        ];
        for text in forms {
            let expected = chrono_micros(text);
            assert!(expected.is_some(), "chrono reads {text}");
            assert_eq!(parse_postgres_time(text), expected, "{text}");
        }
        // Before the common era (chrono's format has no `BC`): year 44 BC is year -43.
        assert_eq!(
            parse_postgres_time("0044-03-15 12:00:00+00 BC"),
            chrono_micros("-0043-03-15 12:00:00+00")
        );
        for bad in [
            "2024-01-31",
            "2024-01-31 12:34",
            "yesterday",
            "2024-01-31 12:34:56+",
            // Past year 9999, as chrono's `%Y` and the CDC router's dates.
            "12345-06-07 08:09:10+00",
        ] {
            assert_eq!(parse_postgres_time(bad), None, "{bad}");
        }
    }
}
