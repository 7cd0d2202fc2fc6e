//! Dead letters: the record a change becomes when it cannot become its event.
//!
//! A dead letter is produced in the same Kafka transaction as the events around it, so it is
//! exactly-once like them, and the relay goes on. Its headers say what went wrong and where the
//! change came from; its value is what is needed to repair and replay the event: the row as a JSON
//! object of its columns' text (or the logical message's content), unless that alone is too large.
//!
//! A record larger than its topic takes becomes a dead letter too, before it is produced (the
//! relay learns each topic's limit when it first sees the topic): produced, it would fail its
//! whole Kafka transaction, again on every retry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// The record's topic does not exist and is not created
    /// (`kafka.topic_creation.missing_topic = "dead-letter"`).
    MissingTopic,
}

impl Reason {
    /// Every reason, so each has its counter from the start.
    pub const ALL: [Self; 5] = [
        Self::MissingField,
        Self::InvalidJson,
        Self::InvalidValue,
        Self::TooLarge,
        Self::MissingTopic,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing-field",
            Self::InvalidJson => "invalid-json",
            Self::InvalidValue => "invalid-value",
            Self::TooLarge => "too-large",
            Self::MissingTopic => "missing-topic",
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

/// The header every dead letter opens with.
const REASON_HEADER: &str = "outboxd.dlq.reason";

impl DeadLetters {
    /// Dead letters go to `topic`; no record may be over `max_record_bytes` (`kafka.max_record_bytes`),
    /// nor over its topic's limit ([`Router::cap`](crate::route::Router::cap)).
    pub fn new(topic: impl Into<String>, max_record_bytes: usize) -> Self {
        Self {
            topic: topic.into(),
            max_record_bytes,
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// `kafka.max_record_bytes`.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Whether `record` is a dead letter.
    pub fn is_letter(&self, record: &Record) -> bool {
        record.topic == self.topic
            && record
                .headers
                .first()
                .is_some_and(|h| h.name == REASON_HEADER)
    }

    /// The failure of a record too large for its topic's `limit` (or `kafka.max_record_bytes`),
    /// or `None` when it fits.
    pub fn too_large(&self, record: &Record, limit: usize) -> Option<Failure> {
        let size = record.size() + FRAMING_BYTES;
        let limit = limit.min(self.max_record_bytes);
        (size > limit).then(|| Failure {
            reason: Reason::TooLarge,
            message: format!(
                "the record for topic {} is {size} bytes, over the limit of {limit} bytes (the \
                 smallest of kafka.max_record_bytes, the broker's message.max.bytes and the \
                 topic's max.message.bytes)",
                record.topic
            ),
            topic: Some(record.topic.clone()),
        })
    }

    /// The dead letter of `record`, which `change` became and which cannot be produced
    /// (`failure`: too large, or its topic missing): it carries the event's id
    /// (`outboxd.dlq.event_id`: the outbox event's id, else the record's key), so the event can be
    /// found and replayed.
    pub fn instead_of(
        &self,
        change: &Change,
        record: &Record,
        failure: &Failure,
        context: &RouteContext<'_>,
    ) -> Record {
        let mut letter = self.record(change, failure, context);
        let id = ["id", "ce_id"]
            .iter()
            .find_map(|name| header(record, name))
            .map(str::to_owned)
            .or_else(|| {
                record
                    .key
                    .as_ref()
                    .map(|key| String::from_utf8_lossy(key).into_owned())
            });
        if let Some(id) = id {
            letter.headers.push(Header::text(EVENT_ID_HEADER, id));
        }
        letter
    }

    /// The failure of a record the broker refused as too large though it is within the limit the
    /// relay knows.
    pub fn refused(&self, record: &Record) -> Failure {
        Failure {
            reason: Reason::TooLarge,
            message: format!(
                "the broker refused the record for topic {} ({} bytes) as too large: the \
                 topic's max.message.bytes is smaller than the relay could read (to hold records \
                 to it before they are produced, grant the relay DescribeConfigs on the topic)",
                record.topic,
                record.size()
            ),
            topic: Some(record.topic.clone()),
        }
    }

    /// The failure of a record whose topic does not exist and is not created, for the `reason`
    /// the broker gave.
    pub fn missing_topic(&self, record: &Record, reason: &str) -> Failure {
        Failure {
            reason: Reason::MissingTopic,
            message: format!(
                "topic {} does not exist and is not created ({reason}); create it (or set \
                 kafka.topic_creation.enabled) and replay the event",
                record.topic
            ),
            topic: Some(record.topic.clone()),
        }
    }

    /// Drops the value of a dead letter too large itself: its headers still say what failed and
    /// where the change is.
    pub fn omit_value(&self, letter: &mut Record) {
        letter.value = None;
        letter.headers.push(Header::text(
            "outboxd.dlq.value",
            "omitted: the change itself is over the size limit",
        ));
    }

    /// The dead letter for `change`.
    pub fn record(&self, change: &Change, failure: &Failure, context: &RouteContext<'_>) -> Record {
        let (source, value) = match change {
            Change::Insert { relation, new }
            | Change::Update { relation, new, .. }
            | Change::Read {
                relation, row: new, ..
            } => (qualified(relation), Some(row_json(relation, new))),
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
            Header::text(REASON_HEADER, failure.reason.as_str()),
            Header::text("outboxd.dlq.error", failure.message.clone()),
            Header::text("outboxd.dlq.source", source),
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
        Record {
            topic: self.topic.clone(),
            partition: None,
            key: None,
            value,
            headers,
            timestamp_ms: Some(context.commit_ts.unix_millis()),
        }
    }
}

/// The header naming the event a dead letter stands for.
const EVENT_ID_HEADER: &str = "outboxd.dlq.event_id";

/// The text of `record`'s first header `name`.
fn header<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record
        .headers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Says what went to the dead-letter topic without flooding the log: per reason, the first
/// [`DeadLetterLog::INDIVIDUAL`] letters of each interval get a WARN line each, the rest one
/// summary line per interval ("N more dead letters (reason) in the last 10s"). Every letter counts
/// in `outboxd_dead_letters_total` (when routed: a batch retried after a failure counts its dead
/// letters again).
#[derive(Debug)]
pub struct DeadLetterLog {
    interval: Duration,
    window_started: Instant,
    /// Per reason: letters logged one by one, and letters held back, in this window.
    window: BTreeMap<String, (u32, u64)>,
    /// Letters in all.
    total: u64,
}

impl DeadLetterLog {
    /// Letters per reason and interval logged one by one.
    pub const INDIVIDUAL: u32 = 5;

    /// A log summing up every `interval`; registers the counters of every reason, so each has
    /// its series from the start.
    pub fn new(interval: Duration) -> Self {
        for reason in Reason::ALL {
            metrics().dead_letters.with_label_values(&[reason.as_str()]);
        }
        Self {
            interval,
            window_started: Instant::now(),
            window: BTreeMap::new(),
            total: 0,
        }
    }

    /// Counts a dead letter (as [`DeadLetters::record`] made it) and logs it, unless its reason
    /// had its share of lines in this interval.
    pub fn report(&mut self, letter: &Record) {
        self.flush_due();
        let reason = header(letter, REASON_HEADER).unwrap_or("unknown");
        metrics().dead_letters.with_label_values(&[reason]).inc();
        self.total += 1;
        let (logged, held) = self.window.entry(reason.to_owned()).or_default();
        if *logged >= Self::INDIVIDUAL {
            *held += 1;
            return;
        }
        *logged += 1;
        tracing::warn!(
            reason,
            source = header(letter, "outboxd.dlq.source"),
            lsn = header(letter, "outboxd.dlq.lsn"),
            event_id = header(letter, EVENT_ID_HEADER),
            dead_letter_topic = %letter.topic,
            "{}; the change went to the dead-letter topic",
            header(letter, "outboxd.dlq.error").unwrap_or_default()
        );
    }

    /// Sums up the letters held back once the interval is over.
    pub fn flush_due(&mut self) {
        if self.window_started.elapsed() >= self.interval {
            self.flush();
        }
    }

    /// Sums up the letters held back now, and starts a new interval.
    pub fn flush(&mut self) {
        let elapsed = self.window_started.elapsed();
        for (reason, (_, held)) in std::mem::take(&mut self.window) {
            if held > 0 {
                tracing::warn!(
                    reason = %reason,
                    dead_letters = held,
                    "{held} more dead letters ({reason}) in the last {}s",
                    elapsed.as_secs().max(1)
                );
            }
        }
        self.window_started = Instant::now();
    }

    /// Letters reported in all.
    pub fn total(&self) -> u64 {
        self.total
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: Reason) -> Record {
        Record {
            topic: "dlq".into(),
            partition: None,
            key: None,
            value: None,
            headers: vec![Header::text(REASON_HEADER, reason.as_str())],
            timestamp_ms: None,
        }
    }

    #[test]
    fn the_log_holds_back_all_but_the_first_letters_of_each_reason_until_the_interval_ends() {
        let mut log = DeadLetterLog::new(Duration::from_secs(3600));
        for _ in 0..7 {
            log.report(&letter(Reason::InvalidJson));
        }
        log.report(&letter(Reason::TooLarge));
        assert_eq!(log.window["invalid-json"], (DeadLetterLog::INDIVIDUAL, 2));
        assert_eq!(log.window["too-large"], (1, 0));
        assert_eq!(log.total(), 8);
        log.flush();
        assert!(log.window.is_empty(), "a new interval starts");
        log.report(&letter(Reason::InvalidJson));
        assert_eq!(log.window["invalid-json"], (1, 0), "lines again");
    }

    #[test]
    fn only_dead_letters_are_letters() {
        let letters = DeadLetters::new("dlq", 1000);
        assert!(letters.is_letter(&letter(Reason::MissingField)));
        let mut event = letter(Reason::MissingField);
        event.headers.clear();
        assert!(
            !letters.is_letter(&event),
            "an event sent to the dead-letter topic"
        );
        let mut elsewhere = letter(Reason::MissingField);
        elsewhere.topic = "orders".into();
        assert!(!letters.is_letter(&elsewhere));
    }
}
