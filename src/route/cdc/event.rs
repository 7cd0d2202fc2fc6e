//! A CDC event's value as borrowed parts that serialize straight to JSON: building a
//! `serde_json::Value` tree per row (a map node and an owned key per field, the `source` block
//! and the envelope, then rendering and dropping them) was most of the relay's CPU per CDC row.
//!
//! The bytes are those of the tree these replaced: serde_json's `Map` (without `preserve_order`)
//! writes its keys sorted, so the structs declare their fields in that order and a [`Fields`] row
//! keeps its columns sorted by name; the tests below compare each with its `Value` rendering.
//! With schemas or Avro, [`serde_json::to_value`] still makes the tree their encoders walk.

use std::fmt;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::pg::Lsn;

/// A change event's value: Debezium's `{before, after, source, op, ts_*, transaction}`.
#[derive(Serialize)]
pub(super) struct ChangeEvent<'a> {
    pub after: Option<&'a Fields<'a, Value>>,
    pub before: Option<&'a Fields<'a, Value>>,
    pub op: &'static str,
    pub source: Source<'a>,
    /// Always null: Debezium's transaction metadata is not provided.
    pub transaction: (),
    pub ts_ms: i64,
    pub ts_ns: i64,
    pub ts_us: i64,
}

/// A logical message's event: `{source, op: "m", ts_ms, message: {prefix, content}}` (Debezium's
/// message events carry the processing time in milliseconds only).
#[derive(Serialize)]
pub(super) struct MessageEvent<'a> {
    pub message: Message<'a>,
    pub op: &'static str,
    pub source: Source<'a>,
    pub transaction: (),
    pub ts_ms: i64,
}

/// A logical message's prefix and its content in base64.
#[derive(Serialize)]
pub(super) struct Message<'a> {
    pub content: String,
    pub prefix: &'a str,
}

/// Debezium's `source` block.
#[derive(Serialize)]
pub(super) struct Source<'a> {
    pub connector: &'static str,
    pub db: &'a str,
    pub lsn: Option<u64>,
    pub name: &'a str,
    pub origin: (),
    pub origin_lsn: (),
    pub schema: &'a str,
    pub sequence: Sequence,
    pub snapshot: &'static str,
    pub table: &'a str,
    pub ts_ms: i64,
    pub ts_ns: i64,
    pub ts_us: i64,
    #[serde(rename = "txId")]
    pub tx_id: Option<u32>,
    pub version: &'static str,
    pub xmin: (),
}

/// `source.sequence`: the string `["<last commit LSN>","<LSN>"]` (each `null` when unknown),
/// written into the output without a `String` of its own.
pub(super) struct Sequence(pub Option<Lsn>, pub Option<Lsn>);

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, lsn) in [self.0, self.1].into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match lsn {
                Some(lsn) => write!(f, "\"{}\"", lsn.0)?,
                None => f.write_str("null")?,
            }
        }
        f.write_str("]")
    }
}

impl Serialize for Sequence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A JSON object of named values in the order given: a key's columns in primary-key order (the
/// key's bytes choose the partition), or a row's sorted by name ([`Fields::sorted`]).
pub(super) struct Fields<'a, V>(Vec<(&'a str, V)>);

impl<'a, V> Fields<'a, V> {
    /// The fields in the order given.
    pub fn new(fields: Vec<(&'a str, V)>) -> Self {
        Self(fields)
    }

    /// The fields sorted by name, as a row's columns were written from a `Map`.
    pub fn sorted(mut fields: Vec<(&'a str, V)>) -> Self {
        fields.sort_by(|a, b| a.0.cmp(b.0));
        Self(fields)
    }

    /// The value of the field `name` of [`Fields::sorted`] fields.
    pub fn get(&self, name: &str) -> Option<&V> {
        let i = self.0.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
        Some(&self.0[i].1)
    }
}

impl<V: Serialize> Serialize for Fields<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `event` written straight and through a `Value` (whose `Map` sorts the keys) are the same.
    fn assert_as_tree(event: &impl Serialize) -> String {
        let text = serde_json::to_string(event).expect("serializes");
        let tree = serde_json::to_value(event).expect("serializes");
        assert_eq!(text, tree.to_string());
        text
    }

    fn source(sequence: Sequence) -> Source<'static> {
        Source {
            connector: "postgresql",
            db: "app",
            lsn: Some(0x16_0000_0100),
            name: "srv",
            origin: (),
            origin_lsn: (),
            schema: "public",
            sequence,
            snapshot: "false",
            table: "items \"quoted\"",
            ts_ms: 1,
            ts_ns: 1_000_000,
            ts_us: 1_000,
            tx_id: Some(7),
            version: "v",
            xmin: (),
        }
    }

    #[test]
    fn events_are_written_as_their_value_trees_were() {
        let after = Fields::sorted(vec![
            ("note", json!("a \"b\"\n")),
            ("id", json!(1)),
            ("Name", json!(null)),
            ("amount", json!({"scale": 2, "value": "AeJA"})),
        ]);
        assert_eq!(after.get("id"), Some(&json!(1)));
        assert_eq!(after.get("missing"), None);
        let event = ChangeEvent {
            after: Some(&after),
            before: None,
            op: "c",
            source: source(Sequence(Some(Lsn(22)), Some(Lsn(23)))),
            transaction: (),
            ts_ms: 2,
            ts_ns: 2_000_000,
            ts_us: 2_000,
        };
        let text = assert_as_tree(&event);
        assert!(text.contains(r#""sequence":"[\"22\",\"23\"]""#), "{text}");
        let message = MessageEvent {
            message: Message {
                content: "AQI=".into(),
                prefix: "p",
            },
            op: "m",
            source: source(Sequence(None, Some(Lsn(23)))),
            transaction: (),
            ts_ms: 2,
        };
        let text = assert_as_tree(&message);
        assert!(text.contains(r#""sequence":"[null,\"23\"]""#), "{text}");
        // A key keeps the order given.
        let key = Fields::new(vec![("b", json!(1)), ("a", json!("x"))]);
        assert_eq!(
            serde_json::to_string(&key).expect("key"),
            r#"{"b":1,"a":"x"}"#
        );
    }
}
