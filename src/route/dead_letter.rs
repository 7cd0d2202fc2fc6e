//! Dead letters: the record a change becomes when it cannot become its event.
//!
//! A dead letter is produced in the same Kafka transaction as the events around it, so it is
//! exactly-once like them, and the relay goes on. Its headers say what went wrong and where the
//! change came from; its value is what is needed to repair and replay the event: the row as a JSON
//! object of its columns' text (or the logical message's content), unless that alone is too large.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::metrics::metrics;
use crate::pg::pgoutput::{ColumnValue, OldTuple, Relation, TupleData};
use crate::route::{qualified, Header, Record, RouteContext};
use crate::source::Change;

/// What kind of failure a dead letter records (its `outboxd.dlq.reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A column the envelope needs is missing or NULL.
    MissingField,
    /// The payload is not JSON while JSON expansion is on.
    InvalidJson,
    /// A value does not parse as its type, or a field has the wrong form.
    InvalidValue,
    /// The record is larger than the broker accepts.
    TooLarge,
}

impl Reason {
    /// Every reason, so each has its counter from the start.
    pub const ALL: [Self; 4] = [
        Self::MissingField,
        Self::InvalidJson,
        Self::InvalidValue,
        Self::TooLarge,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing-field",
            Self::InvalidJson => "invalid-json",
            Self::InvalidValue => "invalid-value",
            Self::TooLarge => "too-large",
        }
    }
}

/// Why a change could not become its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub reason: Reason,
    /// A sentence for the operator.
    pub message: String,
    /// The topic the event was meant for, when known.
    pub topic: Option<String>,
}

impl Failure {
    /// A failure without a known destination.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            topic: None,
        }
    }
}

/// Makes dead letters and decides which records are too large.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    topic: String,
    max_record_bytes: usize,
}

/// Bytes a record carries beyond its key, value and headers (record and batch framing), kept free
/// under the size limit.
const FRAMING_BYTES: usize = 512;

impl DeadLetters {
    /// Dead letters go to `topic`; records over `max_record_bytes` (the producer's and broker's
    /// limit) become dead letters.
    pub fn new(topic: impl Into<String>, max_record_bytes: usize) -> Self {
        for reason in Reason::ALL {
            metrics().dead_letters.with_label_values(&[reason.as_str()]);
        }
        Self {
            topic: topic.into(),
            max_record_bytes,
        }
    }

    /// The failure of a record too large to produce, or `None` when it fits.
    pub fn too_large(&self, record: &Record) -> Option<Failure> {
        let size = record.size() + FRAMING_BYTES;
        (size > self.max_record_bytes).then(|| Failure {
            reason: Reason::TooLarge,
            message: format!(
                "the record for topic {} is {size} bytes, over the limit of {} bytes \
                 (kafka.max_record_bytes, which must not exceed the broker's message.max.bytes)",
                record.topic, self.max_record_bytes
            ),
            topic: Some(record.topic.clone()),
        })
    }

    /// The dead letter for `change`, counted in `outboxd_dead_letters_total` (when routed: a batch
    /// retried after a failure counts its dead letters again).
    pub fn record(&self, change: &Change, failure: &Failure, context: &RouteContext<'_>) -> Record {
        metrics()
            .dead_letters
            .with_label_values(&[failure.reason.as_str()])
            .inc();
        let (source, value) = match change {
            Change::Insert { relation, new } | Change::Update { relation, new, .. } => {
                (qualified(relation), Some(row_json(relation, new)))
            }
            Change::Delete { relation, old } => {
                let (OldTuple::Key(row) | OldTuple::Full(row)) = old;
                (qualified(relation), Some(row_json(relation, row)))
            }
            Change::Truncate { relations, .. } => (
                relations
                    .iter()
                    .map(|r| qualified(r))
                    .collect::<Vec<_>>()
                    .join(","),
                None,
            ),
            Change::Message {
                prefix, content, ..
            } => (format!("message:{prefix}"), Some(content.clone())),
        };
        let mut headers = vec![
            Header::text("outboxd.dlq.reason", failure.reason.as_str()),
            Header::text("outboxd.dlq.error", failure.message.clone()),
            Header::text("outboxd.dlq.source", source.clone()),
        ];
        if let Some(lsn) = context.lsn {
            headers.push(Header::text("outboxd.dlq.lsn", lsn.to_string()));
        }
        if let Some(xid) = context.xid {
            headers.push(Header::text("outboxd.dlq.xid", xid.to_string()));
        }
        if let Some(topic) = &failure.topic {
            headers.push(Header::text("outboxd.dlq.topic", topic.clone()));
        }
        tracing::warn!(
            reason = failure.reason.as_str(),
            source = %source,
            lsn = context.lsn.map(tracing::field::display),
            dead_letter_topic = %self.topic,
            "{}; the change went to the dead-letter topic",
            failure.message
        );
        let mut record = Record {
            topic: self.topic.clone(),
            partition: None,
            key: None,
            value,
            headers,
            timestamp_ms: Some(context.commit_ts.unix_millis()),
        };
        if self.too_large(&record).is_some() {
            record.value = None;
            record.headers.push(Header::text(
                "outboxd.dlq.value",
                "omitted: the change itself is over the size limit",
            ));
        }
        record
    }
}

/// The row as `{column: text or null}`: every value as PostgreSQL wrote it, so nothing is lost
/// to a conversion (an unchanged TOASTed value, which Postgres did not send, is absent).
fn row_json(relation: &Relation, row: &TupleData) -> Bytes {
    let mut object = Map::new();
    for (column, value) in relation.columns.iter().zip(&row.0) {
        let json = match value {
            ColumnValue::Null => Value::Null,
            ColumnValue::UnchangedToast => continue,
            ColumnValue::Text(bytes) | ColumnValue::Binary(bytes) => {
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
        };
        object.insert(column.name.clone(), json);
    }
    Bytes::from(Value::Object(object).to_string())
}
