//! Signals that start, stop, pause and resume an incremental snapshot, in Debezium's shapes so
//! that existing tooling works: a row inserted into the signal table (`id, type, data`;
//! Debezium's `signal.data.collection`), or a logical message with the prefix
//! [`SIGNAL_PREFIX`] whose content is what Debezium's Kafka signal channel carries,
//! `{"id": …, "type": …, "data": {…}}`. Both arrive in the stream, so a signal takes effect at its
//! place among the changes, and the checkpoint after it carries its effect: exactly once.
//!
//! This module only reads a signal; `super::request` checks it against the catalog.

use serde::Deserialize;
use serde_json::Value;

use crate::checkpoint::snapshot::TableName;
use crate::pg::pgoutput::{ColumnValue, Relation, TupleData};

/// The prefix of the logical messages that are signals (`outboxd snapshot` writes them); the
/// pump takes them, they are never published.
pub const SIGNAL_PREFIX: &str = "outboxd.signal";

/// Debezium's signal types this relay acts on.
pub const EXECUTE: &str = "execute-snapshot";
/// See [`EXECUTE`].
pub const STOP: &str = "stop-snapshot";
/// See [`EXECUTE`].
pub const PAUSE: &str = "pause-snapshot";
/// See [`EXECUTE`].
pub const RESUME: &str = "resume-snapshot";

/// What a signal asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `execute-snapshot`: read these tables (`schema.table` or a regular expression of such
    /// names, as Debezium's `data-collections`), with these row filters.
    Execute {
        /// Debezium's `data-collections`.
        collections: Vec<String>,
        /// Debezium's `additional-conditions`.
        conditions: Vec<Condition>,
    },
    /// `stop-snapshot`: stop reading these tables, or the whole snapshot when empty.
    Stop {
        /// Debezium's `data-collections`.
        collections: Vec<String>,
    },
    /// `pause-snapshot`.
    Pause,
    /// `resume-snapshot`.
    Resume,
}

/// One of Debezium's `additional-conditions`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Condition {
    /// The tables it applies to: a name or a regular expression (case-insensitive).
    #[serde(rename = "data-collection")]
    pub collection: String,
    /// The row filter (`super::filter`'s grammar).
    pub filter: String,
}

/// A signal that cannot be acted on (the relay logs it and goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not JSON of the expected shape.
    #[error("signal refused: {0}")]
    Malformed(String),
    /// A signal type of Debezium's that this relay does not act on.
    #[error(
        "signal type {0:?} ignored: outboxd acts on execute-snapshot, stop-snapshot, \
         pause-snapshot and resume-snapshot"
    )]
    UnknownType(String),
    /// A snapshot type other than incremental.
    #[error(
        "signal refused: snapshot type {0:?} is not supported; outboxd runs incremental \
         snapshots, which let the stream flow (\"type\": \"incremental\", the default)"
    )]
    SnapshotType(String),
    /// Refused against the catalog or the running snapshot (`super::request`).
    #[error("signal refused: {0}")]
    Refused(String),
}

/// The JSON `data` of a snapshot signal.
#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "data-collections", default)]
    collections: Option<Vec<String>>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "additional-conditions", default)]
    conditions: Vec<Condition>,
    #[serde(rename = "surrogate-key", default)]
    surrogate_key: Option<String>,
}

impl Signal {
    /// A signal from its Debezium `type` and `data` (JSON text; empty for pause and resume).
    pub fn parse(kind: &str, data: &str) -> Result<Self, SignalError> {
        let parse_data = || -> Result<Data, SignalError> {
            serde_json::from_str(if data.trim().is_empty() { "{}" } else { data }).map_err(|e| {
                SignalError::Malformed(format!("its data is not the JSON {kind} takes: {e}"))
            })
        };
        let incremental = |data: &Data| match data.kind.as_deref() {
            None => Ok(()),
            Some(kind) if kind.eq_ignore_ascii_case("incremental") => Ok(()),
            Some(other) => Err(SignalError::SnapshotType(other.to_owned())),
        };
        match kind {
            EXECUTE => {
                let data = parse_data()?;
                incremental(&data)?;
                if let Some(key) = data.surrogate_key.filter(|k| !k.trim().is_empty()) {
                    return Err(SignalError::Malformed(format!(
                        "surrogate-key {key:?} is not supported: outboxd reads by primary key"
                    )));
                }
                let collections: Vec<String> = data
                    .collections
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .collect();
                if collections.is_empty() {
                    return Err(SignalError::Malformed(
                        "execute-snapshot needs data-collections, the tables to read".into(),
                    ));
                }
                Ok(Self::Execute {
                    collections,
                    conditions: data.conditions,
                })
            }
            STOP => {
                let data = parse_data()?;
                incremental(&data)?;
                Ok(Self::Stop {
                    collections: data
                        .collections
                        .unwrap_or_default()
                        .iter()
                        .map(|c| c.trim().to_owned())
                        .collect(),
                })
            }
            PAUSE => Ok(Self::Pause),
            RESUME => Ok(Self::Resume),
            other => Err(SignalError::UnknownType(other.to_owned())),
        }
    }

    /// The content of the logical message that carries this signal (Debezium's Kafka signal
    /// shape), as `outboxd snapshot` writes it.
    pub fn to_message(&self, id: &str) -> String {
        let (kind, data) = match self {
            Self::Execute {
                collections,
                conditions,
            } => (
                EXECUTE,
                serde_json::json!({
                    "data-collections": collections,
                    "type": "incremental",
                    "additional-conditions": conditions,
                }),
            ),
            Self::Stop { collections } => (
                STOP,
                serde_json::json!({"data-collections": collections, "type": "incremental"}),
            ),
            Self::Pause => (PAUSE, serde_json::json!({})),
            Self::Resume => (RESUME, serde_json::json!({})),
        };
        serde_json::json!({"id": id, "type": kind, "data": data}).to_string()
    }
}

/// A signal as it arrived: its id (for the log) and what it asks for.
#[derive(Debug)]
pub struct Received {
    /// The signal's `id`.
    pub id: String,
    /// What it asks for, or why it cannot be acted on.
    pub signal: Result<Signal, SignalError>,
}

impl Received {
    /// A logical message's content: `{"id": …, "type": …, "data": {…}}` (`data` may also be the
    /// JSON as a string, as in the signal table).
    pub fn from_message(content: &[u8]) -> Self {
        let parsed: Result<Value, _> = serde_json::from_slice(content);
        let Ok(Value::Object(message)) = parsed else {
            return Self {
                id: String::new(),
                signal: Err(SignalError::Malformed(
                    "a signal message is a JSON object {\"id\", \"type\", \"data\"}".into(),
                )),
            };
        };
        let text = |field: &str| {
            message
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let data = match message.get("data") {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Self {
            id: text("id").to_owned(),
            signal: Signal::parse(text("type"), &data),
        }
    }

    /// A row inserted into the signal table: its first three columns are `id`, `type` and `data`,
    /// as Debezium reads them.
    pub fn from_row(relation: &Relation, row: &TupleData) -> Self {
        let column = |i: usize| match row.0.get(i) {
            Some(ColumnValue::Text(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        let signal = if relation.columns.len() == 3 {
            Signal::parse(&column(1), &column(2))
        } else {
            Err(SignalError::Malformed(format!(
                "the signal table has {} columns; Debezium's has 3: id, type, data",
                relation.columns.len()
            )))
        };
        Self {
            id: column(0),
            signal,
        }
    }
}

/// Whether `relation` is the signal table `table`.
pub fn is_signal_table(table: Option<&TableName>, relation: &Relation) -> bool {
    table.is_some_and(|t| t.schema == relation.namespace && t.table == relation.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_signals_parse_as_debeziums_documentation_writes_them() {
        let execute = Signal::parse(
            EXECUTE,
            r#"{"data-collections": ["public.orders", " public.items "], "type": "INCREMENTAL",
                "additional-conditions": [{"data-collection": "public.orders", "filter": "color='blue'"}]}"#,
        );
        assert_eq!(
            execute,
            Ok(Signal::Execute {
                collections: vec!["public.orders".into(), "public.items".into()],
                conditions: vec![Condition {
                    collection: "public.orders".into(),
                    filter: "color='blue'".into()
                }],
            })
        );
        assert_eq!(
            Signal::parse(STOP, r#"{"type": "incremental"}"#),
            Ok(Signal::Stop {
                collections: vec![]
            })
        );
        assert_eq!(Signal::parse(PAUSE, ""), Ok(Signal::Pause));
        assert_eq!(Signal::parse(RESUME, "{}"), Ok(Signal::Resume));
        assert!(matches!(
            Signal::parse(
                EXECUTE,
                r#"{"data-collections": ["t"], "type": "blocking"}"#
            ),
            Err(SignalError::SnapshotType(_))
        ));
        assert!(matches!(
            Signal::parse(EXECUTE, r#"{"data-collections": []}"#),
            Err(SignalError::Malformed(_))
        ));
        assert!(matches!(
            Signal::parse(EXECUTE, r#"{"data-collections": [1]}"#),
            Err(SignalError::Malformed(_))
        ));
        assert!(matches!(
            Signal::parse("log", "{}"),
            Err(SignalError::UnknownType(_))
        ));
    }

    #[test]
    fn a_message_round_trips_what_the_command_line_writes() {
        for signal in [
            Signal::Execute {
                collections: vec!["public.items".into()],
                conditions: vec![Condition {
                    collection: "public.items".into(),
                    filter: "v > 1".into(),
                }],
            },
            Signal::Stop {
                collections: vec!["public.items".into()],
            },
            Signal::Pause,
            Signal::Resume,
        ] {
            let received = Received::from_message(signal.to_message("cli-1").as_bytes());
            assert_eq!(
                (received.id.as_str(), received.signal),
                ("cli-1", Ok(signal))
            );
        }
        let string_data =
            br#"{"id":"x","type":"execute-snapshot","data":"{\"data-collections\":[\"a.b\"]}"}"#;
        assert!(Received::from_message(string_data).signal.is_ok());
        assert!(Received::from_message(b"not json").signal.is_err());
    }
}
