//! Routing: what a captured change becomes in Kafka.
//!
//! The router's output, [`Record`], is the sink's only input: the sink knows nothing of Postgres
//! rows, and the router nothing of Kafka transactions.
//!
//! - [`outbox`]: outbox rows and outbox logical messages become events in the `debezium-outbox`
//!   or `cloudevents` envelope.
//! - [`cdc`]: changes of other published tables become Debezium change events.
//! - [`dead_letter`]: a change that cannot become a record becomes a dead letter instead, produced
//!   in the same Kafka transaction, so a poison row never blocks the relay and is never lost.

pub mod avro;
pub mod cdc;
pub mod dead_letter;
pub mod outbox;
pub mod template;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::pg::pgoutput::Relation;
use crate::pg::schema::Schema;
use crate::pg::{Lsn, PgTimestamp, Xid};
use crate::source::Change;

use cdc::CdcRouter;
use dead_letter::{DeadLetters, Failure};

/// What the broker takes, as the relay knows it.
pub trait SizeLimits {
    /// The largest record `topic` takes.
    fn max_bytes(&self, topic: &str) -> usize;
    /// Whether the broker refused this very record as too large before.
    fn refused(&self, record: &Record) -> bool;
}
use outbox::OutboxRouter;

/// One Kafka record, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Explicit partition; `None` lets the producer's partitioner (murmur2, as the Java client)
    /// choose from the key.
    pub partition: Option<i32>,
    /// Record key; a `None` key spreads records over partitions.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order; a header may repeat, as Kafka allows.
    pub headers: Vec<Header>,
    /// The record's timestamp in milliseconds since the Unix epoch (the event's time, as Debezium
    /// sets it); `None` lets the producer use its clock.
    pub timestamp_ms: Option<i64>,
}

/// A Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value; `None` is a null header value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a text value.
    pub fn text(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(Bytes::from(value.into())),
        }
    }
}

impl Record {
    /// Bytes the record occupies on the wire, roughly: what batching limits count.
    pub fn size(&self) -> usize {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + header_bytes
    }

    /// Its [`fingerprint`].
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.topic, self.key.as_deref(), self.value.as_deref())
    }
}

/// A record's identity across retries: a hash of its topic, key and value, the same for the
/// record as routed and as a delivery report returns it.
pub fn fingerprint(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (topic, key, value).hash(&mut hasher);
    hasher.finish()
}

/// Where and when a change happened: what envelopes put in their metadata.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// Primary keys and column types.
    pub schema: &'a Schema,
    /// The transaction, `None` for a non-transactional logical message.
    pub xid: Option<Xid>,
    /// Commit time of the transaction (for a non-transactional message: when it was read).
    pub commit_ts: PgTimestamp,
    /// WAL position of the change; `None` in poll mode, which reads rows, not WAL.
    pub lsn: Option<Lsn>,
    /// Debezium's `sequence[0]`: the end of the last transaction read before this one, or the
    /// last non-transactional message's position; `None` until the first since a start without
    /// stored checkpoint (Debezium's `lsn_commit` offset, null on a first start).
    pub last_commit_lsn: Option<Lsn>,
}

/// Routes every change: outbox events, CDC events, and dead letters for what fails.
#[derive(Debug, Clone)]
pub struct Router {
    outbox: OutboxRouter,
    cdc: Option<CdcRouter>,
    dead_letters: DeadLetters,
}

impl Router {
    /// A router; `cdc` is `None` when changes of non-outbox tables are not published.
    pub fn new(outbox: OutboxRouter, cdc: Option<CdcRouter>, dead_letters: DeadLetters) -> Self {
        Self {
            outbox,
            cdc,
            dead_letters,
        }
    }

    /// The outbox router (its tables are what poll mode reads).
    pub fn outbox(&self) -> &OutboxRouter {
        &self.outbox
    }

    /// The CDC router, when changes of non-outbox tables are published.
    pub fn cdc(&self) -> Option<&CdcRouter> {
        self.cdc.as_ref()
    }

    /// Appends the records `change` becomes to `out`, a dead letter if it cannot become its records;
    /// returns how many dead letters. Sizes are not checked here: [`Router::cap`] holds them to
    /// their topics' limits, which the relay learns as topics appear.
    pub fn route(&self, change: &Change, context: &RouteContext<'_>, out: &mut Vec<Record>) -> u32 {
        let first = out.len();
        let routed = match change {
            Change::Insert { relation, new } if self.outbox.is_outbox(relation) => self
                .outbox
                .route_row(relation, new, context)
                .map(|r| out.push(r)),
            Change::Update { relation, .. } if self.outbox.is_outbox(relation) => {
                tracing::warn!(
                    table = %qualified(relation),
                    lsn = context.lsn.map(tracing::field::display),
                    "an outbox row was updated; outbox rows are events and are only published \
                     when inserted, so the update is ignored"
                );
                Ok(())
            }
            // Deleting published rows is how an outbox is emptied: not an event.
            Change::Delete { relation, .. } if self.outbox.is_outbox(relation) => Ok(()),
            Change::Message {
                prefix, content, ..
            } if self.outbox.is_outbox_message(prefix) => self
                .outbox
                .route_message(prefix, content, context)
                .map(|r| out.push(r)),
            _ => match &self.cdc {
                Some(cdc) => cdc.route(change, &|r| self.outbox.is_outbox(r), context, out),
                None => Ok(()),
            },
        };
        if let Err(failure) = routed {
            out.truncate(first);
            out.push(self.dead_letters.record(change, &failure, context));
            return 1;
        }
        0
    }

    /// The Avro schemas `change`'s records need that the registry has not given an id yet: the
    /// relay registers them before [`Router::route`], which encodes with their ids.
    pub fn unregistered(
        &self,
        change: &Change,
        context: &RouteContext<'_>,
    ) -> Vec<std::sync::Arc<avro::AvroSchema>> {
        let mut schemas = match &self.cdc {
            Some(cdc) => cdc.unregistered(change, &|r| self.outbox.is_outbox(r), context),
            None => Vec::new(),
        };
        schemas.extend(self.outbox.unregistered(change, context));
        schemas
    }

    /// Holds the records `change` became (`records`, from [`Router::route`]) to what the broker
    /// takes: each over its topic's limit, or refused by the broker before, becomes a dead letter
    /// carrying the event's id, and a dead letter too large itself loses its value.
    pub fn cap(
        &self,
        change: &Change,
        context: &RouteContext<'_>,
        records: &mut [Record],
        limits: &impl SizeLimits,
    ) {
        let letters = &self.dead_letters;
        for record in records.iter_mut() {
            if !letters.is_letter(record) {
                let failure = if limits.refused(record) {
                    Some(letters.refused(record))
                } else {
                    letters.too_large(record, limits.max_bytes(&record.topic))
                };
                if let Some(failure) = failure {
                    *record = letters.instead_of(change, record, &failure, context);
                }
            }
            if letters.is_letter(record)
                && (limits.refused(record)
                    || letters
                        .too_large(record, limits.max_bytes(letters.topic()))
                        .is_some())
            {
                letters.omit_value(record);
            }
        }
    }

    /// The dead letters: their topic, and which records are letters.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// `kafka.max_record_bytes`: no record is larger, whatever its topic takes.
    pub fn max_record_bytes(&self) -> usize {
        self.dead_letters.max_record_bytes()
    }
}

/// `schema.table`.
pub(crate) fn qualified(relation: &Relation) -> String {
    format!("{}.{}", relation.namespace, relation.name)
}

/// Why a change could not become a record; the dead letter's headers carry it.
pub type RouteResult<T> = Result<T, Failure>;
