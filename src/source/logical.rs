//! Logical replication source: the decoded pgoutput stream as ordered Postgres transactions.
//!
//! ```text
//! ReplicationStream --XLogData--> Decoder --Message--> LogicalSource --SourceEvent--> relay
//!        ^                                                   |
//!        +------ status updates (positions set by the relay) +
//! ```
//!
//! The source does not hold transactions: it yields `Begin`, each `Change`, and `Commit` as they
//! decode, so memory does not grow with a transaction's size. It keeps the relation cache (pgoutput
//! sends a Relation message before the first change of a table in a session, and again when its
//! schema changes) and reports the keepalives' WAL end, which lets the relay confirm an idle slot.
//!
//! Streamed in-progress transactions are not accepted here: the relay starts replication with
//! `streaming 'off'`, so the walsender sends each transaction whole after its commit (spilling big
//! ones to disk on the server), and what reaches Kafka is only ever committed in Postgres.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::pg::pgoutput::{DecodeError, Decoder, Message, Relation};
use crate::pg::wire::{ReplicationEvent, ReplicationStream, WireError};
use crate::pg::{Lsn, PgTimestamp, RelationId, Xid};
use crate::source::Change;

/// A Postgres transaction began; its changes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnBegin {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of the transaction's commit record (its start); transactions are skipped on resume by it.
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
    /// Replication origin the transaction came from, if any (set by another replication tool).
    pub origin: Option<String>,
}

/// A Postgres transaction committed; nothing of it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCommit {
    /// Transaction id (from its Begin).
    pub xid: Xid,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: where replication resumes after this transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
}

/// What the source yields, in WAL commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A transaction began.
    Begin(TxnBegin),
    /// A change of the open transaction.
    Change {
        /// WAL position of the change.
        lsn: Lsn,
        /// The change.
        change: Change,
    },
    /// The open transaction committed.
    Commit(TxnCommit),
    /// A non-transactional `pg_logical_emit_message`: outside any transaction, visible at once.
    /// Its `lsn` is the end of its WAL record, so resuming from it skips it.
    Message {
        /// The message's prefix.
        prefix: String,
        /// The message's content.
        content: Bytes,
        /// End of the message's WAL record.
        lsn: Lsn,
    },
    /// The server's WAL end while nothing is in flight: everything before it that concerns us
    /// has been sent.
    Keepalive {
        /// The walsender's position.
        wal_end: Lsn,
    },
}

/// A replication stream that cannot be turned into transactions.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection failed; reconnect and resume from the checkpoint.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A message did not decode.
    #[error("pgoutput message at {lsn} did not decode: {source}")]
    Decode {
        /// WAL position of the message.
        lsn: Lsn,
        /// What was wrong.
        source: DecodeError,
    },
    /// The messages came in an order pgoutput never sends (a change outside a transaction, a
    /// change of a table never described, a streamed transaction).
    #[error("unexpected pgoutput message at {lsn}: {what}")]
    Sequence {
        /// WAL position of the message.
        lsn: Lsn,
        /// What was out of order.
        what: String,
    },
}

impl SourceError {
    /// Whether a new attempt can succeed: the connection's failures may pass; the same WAL
    /// decodes the same way every time, so a message that did not decode (or came out of order)
    /// will again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Wire(error) => error.is_transient(),
            Self::Decode { .. } | Self::Sequence { .. } => false,
        }
    }
}

/// The decoded replication stream of one slot.
#[derive(Debug)]
pub struct LogicalSource {
    stream: ReplicationStream,
    decoder: Decoder,
    /// What the messages so far have said: tables and the open transaction.
    state: StreamState,
}

/// The relation cache and the open transaction, which turn decoded messages into source events.
/// Apart from the stream, so that pgoutput's ordering rules are tested without a server.
#[derive(Debug, Default)]
struct StreamState {
    /// Tables by OID, as the last Relation message described them.
    relations: HashMap<RelationId, Arc<Relation>>,
    /// The open transaction, between Begin and Commit.
    open: Option<TxnBegin>,
}

impl LogicalSource {
    /// A source over a started replication stream speaking pgoutput `protocol_version`.
    pub fn new(stream: ReplicationStream, protocol_version: u32) -> Self {
        Self {
            stream,
            decoder: Decoder::new(protocol_version),
            state: StreamState::default(),
        }
    }

    /// The next event; `None` when the server ended replication.
    ///
    /// Cancel-safe: an event is lost only if the stream's `next` loses one, which it does not.
    pub async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        loop {
            let Some(event) = self.stream.next().await? else {
                return Ok(None);
            };
            match event {
                ReplicationEvent::Keepalive { wal_end, .. } if self.state.open.is_none() => {
                    return Ok(Some(SourceEvent::Keepalive { wal_end }));
                }
                ReplicationEvent::Keepalive { .. } => {}
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => {
                    let message =
                        self.decoder
                            .decode(data)
                            .map_err(|source| SourceError::Decode {
                                lsn: wal_start,
                                source,
                            })?;
                    if let Some(event) = self.state.apply(wal_start, message)? {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// The replication stream, for status updates.
    pub fn stream(&mut self) -> &mut ReplicationStream {
        &mut self.stream
    }

    /// Consumes the source, giving back the stream (to stop it cleanly).
    pub fn into_stream(self) -> ReplicationStream {
        self.stream
    }
}

impl StreamState {
    /// Folds one decoded message into the transaction state; returns the event it makes, if any.
    fn apply(&mut self, lsn: Lsn, message: Message) -> Result<Option<SourceEvent>, SourceError> {
        let sequence = |what: String| SourceError::Sequence { lsn, what };
        let event = match message {
            Message::Begin(begin) => {
                if let Some(open) = &self.open {
                    return Err(sequence(format!(
                        "Begin of xid {} while xid {} is open",
                        begin.xid, open.xid
                    )));
                }
                let begin = TxnBegin {
                    xid: begin.xid,
                    final_lsn: begin.final_lsn,
                    commit_ts: begin.commit_ts,
                    origin: None,
                };
                self.open = Some(begin.clone());
                SourceEvent::Begin(begin)
            }
            Message::Origin(origin) => {
                // Origin follows Begin and names where the transaction was replicated from.
                let open = self
                    .open
                    .as_mut()
                    .ok_or_else(|| sequence("Origin outside a transaction".into()))?;
                open.origin = Some(origin.name);
                return Ok(None);
            }
            Message::Commit(commit) => {
                let open = self
                    .open
                    .take()
                    .ok_or_else(|| sequence("Commit outside a transaction".into()))?;
                SourceEvent::Commit(TxnCommit {
                    xid: open.xid,
                    commit_lsn: commit.commit_lsn,
                    end_lsn: commit.end_lsn,
                    commit_ts: commit.commit_ts,
                })
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.id, Arc::new(relation));
                return Ok(None);
            }
            // Custom type names; the type catalog is read over SQL, by OID.
            Message::Type(_) => return Ok(None),
            Message::Insert(insert) => self.change(lsn, |s| {
                Ok(Change::Insert {
                    relation: s.relation(lsn, insert.relation)?,
                    new: insert.new,
                })
            })?,
            Message::Update(update) => self.change(lsn, |s| {
                Ok(Change::Update {
                    relation: s.relation(lsn, update.relation)?,
                    old: update.old,
                    new: update.new,
                })
            })?,
            Message::Delete(delete) => self.change(lsn, |s| {
                Ok(Change::Delete {
                    relation: s.relation(lsn, delete.relation)?,
                    old: delete.old,
                })
            })?,
            Message::Truncate(truncate) => self.change(lsn, |s| {
                let relations = truncate
                    .relations
                    .iter()
                    .map(|id| s.relation(lsn, *id))
                    .collect::<Result<_, _>>()?;
                Ok(Change::Truncate {
                    relations,
                    cascade: truncate.cascade(),
                    restart_identity: truncate.restart_identity(),
                })
            })?,
            Message::Message(message) if message.transactional => self.change(lsn, |_| {
                Ok(Change::Message {
                    prefix: message.prefix,
                    content: message.content,
                    lsn: message.lsn,
                })
            })?,
            Message::Message(message) => SourceEvent::Message {
                prefix: message.prefix,
                content: message.content,
                lsn: message.lsn,
            },
            other => {
                return Err(sequence(format!(
                    "{} (streaming and two-phase must be off)",
                    other.name()
                )))
            }
        };
        Ok(Some(event))
    }

    /// A change event, checked to be inside a transaction.
    fn change(
        &self,
        lsn: Lsn,
        make: impl FnOnce(&Self) -> Result<Change, SourceError>,
    ) -> Result<SourceEvent, SourceError> {
        if self.open.is_none() {
            return Err(SourceError::Sequence {
                lsn,
                what: "a change outside a transaction".into(),
            });
        }
        make(self).map(|change| SourceEvent::Change { lsn, change })
    }

    /// The cached description of table `id`.
    fn relation(&self, lsn: Lsn, id: RelationId) -> Result<Arc<Relation>, SourceError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| SourceError::Sequence {
                lsn,
                what: format!("a change of relation {id} before its Relation message"),
            })
    }
}

#[cfg(test)]
mod tests;
