//! The pgoutput decoder: XLogData payloads to typed [`Message`]s, protocol versions 1 to 4.
//!
//! The decoder is stateful in one respect: between Stream Start and Stream Stop (protocol 2+), the
//! data messages (Relation, Type, Insert, Update, Delete, Truncate, Message) carry a leading
//! transaction id, reported as `xid: Some(..)`. Messages a protocol version does not define are
//! errors, as is anything truncated, unknown, non-UTF-8 or followed by trailing bytes; a corrupt
//! count never makes it allocate beyond the message's size.

mod cursor;
mod messages;

use bytes::Bytes;

use cursor::Cursor;
pub use messages::*;

use crate::pg::Xid;

#[cfg(test)]
mod tests;

/// A message that is not valid pgoutput for the decoder's protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field.
    #[error("pgoutput {message} message ends before its {field}")]
    UnexpectedEnd {
        /// The message.
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A string without its terminating NUL.
    #[error("pgoutput {message} message: {field} is not NUL-terminated")]
    UnterminatedString {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A string that is not UTF-8 (the database's encoding must be UTF8).
    #[error("pgoutput {message} message: {field} is not UTF-8 (outboxd needs a UTF8 database)")]
    InvalidUtf8 {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A negative length or count.
    #[error("pgoutput {message} message: {field} has the invalid length {length}")]
    InvalidLength {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The length sent.
        length: i64,
    },
    /// An empty payload.
    #[error("empty pgoutput message")]
    Empty,
    /// A tag no protocol version defines.
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownMessage(u8),
    /// A message the negotiated protocol version does not have.
    #[error("pgoutput {message} message needs protocol version {needs}, but version {version} is in use")]
    NotInProtocol {
        /// The message.
        message: &'static str,
        /// The version it needs.
        needs: u32,
        /// The version in use.
        version: u32,
    },
    /// A Stream Start inside a block, or a Stream Stop outside one.
    #[error("pgoutput {0} message out of sequence")]
    StreamSequence(&'static str),
    /// An unknown tuple or column kind.
    #[error("pgoutput {message} message: unknown {what} {kind:#04x}")]
    UnknownKind {
        /// The message.
        message: &'static str,
        /// What kind of marker (column kind, tuple marker, replica identity).
        what: &'static str,
        /// The byte sent.
        kind: u8,
    },
    /// Bytes after the end of the message.
    #[error("pgoutput {message} message has {count} trailing bytes")]
    TrailingBytes {
        /// The message.
        message: &'static str,
        /// How many.
        count: usize,
    },
}

/// Decodes the messages of one replication stream.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The `proto_version` sent in START_REPLICATION.
    version: u32,
    /// Whether `streaming = parallel` was requested (v4): Stream Abort then carries its LSN and time.
    parallel_streaming: bool,
    /// Whether the stream is between Stream Start and Stream Stop.
    in_stream: bool,
}

impl Decoder {
    /// A decoder for `protocol_version` (1 to 4), without parallel streaming.
    pub fn new(protocol_version: u32) -> Self {
        Self {
            version: protocol_version,
            parallel_streaming: false,
            in_stream: false,
        }
    }

    /// The same decoder for a stream started with `streaming = parallel`.
    pub fn with_parallel_streaming(mut self, parallel: bool) -> Self {
        self.parallel_streaming = parallel;
        self
    }

    /// Decodes one XLogData payload. Column values in the result are slices of `data`.
    pub fn decode(&mut self, data: Bytes) -> Result<Message, DecodeError> {
        let mut c = Cursor::new(data, "(untagged)");
        let tag = c.u8("tag").map_err(|_| DecodeError::Empty)?;
        let message = self.decode_tagged(tag, &mut c)?;
        c.finish()?;
        Ok(message)
    }

    fn decode_tagged(&mut self, tag: u8, c: &mut Cursor) -> Result<Message, DecodeError> {
        let (name, needs) = match tag {
            b'B' => ("Begin", 1),
            b'C' => ("Commit", 1),
            b'O' => ("Origin", 1),
            b'R' => ("Relation", 1),
            b'Y' => ("Type", 1),
            b'I' => ("Insert", 1),
            b'U' => ("Update", 1),
            b'D' => ("Delete", 1),
            b'T' => ("Truncate", 1),
            b'M' => ("Message", 1),
            b'S' => ("Stream Start", 2),
            b'E' => ("Stream Stop", 2),
            b'c' => ("Stream Commit", 2),
            b'A' => ("Stream Abort", 2),
            b'b' => ("Begin Prepare", 3),
            b'P' => ("Prepare", 3),
            b'K' => ("Commit Prepared", 3),
            b'r' => ("Rollback Prepared", 3),
            b'p' => ("Stream Prepare", 3),
            other => return Err(DecodeError::UnknownMessage(other)),
        };
        if self.version < needs {
            return Err(DecodeError::NotInProtocol {
                message: name,
                needs,
                version: self.version,
            });
        }
        c.set_message(name);
        Ok(match tag {
            b'B' => Message::Begin(Begin {
                final_lsn: c.lsn("final LSN")?,
                commit_ts: c.timestamp("commit timestamp")?,
                xid: c.xid("xid")?,
            }),
            b'C' => Message::Commit(Commit {
                flags: c.u8("flags")?,
                commit_lsn: c.lsn("commit LSN")?,
                end_lsn: c.lsn("end LSN")?,
                commit_ts: c.timestamp("commit timestamp")?,
            }),
            b'O' => Message::Origin(Origin {
                commit_lsn: c.lsn("origin commit LSN")?,
                name: c.cstr("origin name")?,
            }),
            b'R' => Message::Relation(self.relation(c)?),
            b'Y' => Message::Type(TypeMsg {
                xid: self.stream_xid(c)?,
                id: c.type_oid("type OID")?,
                namespace: c.cstr("namespace")?,
                name: c.cstr("type name")?,
            }),
            b'I' => {
                let xid = self.stream_xid(c)?;
                let relation = c.relation_id("relation OID")?;
                match c.u8("tuple marker")? {
                    b'N' => Message::Insert(Insert {
                        xid,
                        relation,
                        new: tuple(c)?,
                    }),
                    kind => return Err(unknown_kind(c, "tuple marker", kind)),
                }
            }
            b'U' => Message::Update(self.update(c)?),
            b'D' => {
                let xid = self.stream_xid(c)?;
                let relation = c.relation_id("relation OID")?;
                let old = match c.u8("tuple marker")? {
                    b'K' => OldTuple::Key(tuple(c)?),
                    b'O' => OldTuple::Full(tuple(c)?),
                    kind => return Err(unknown_kind(c, "tuple marker", kind)),
                };
                Message::Delete(Delete { xid, relation, old })
            }
            b'T' => {
                let xid = self.stream_xid(c)?;
                let declared = c.i32("relation count")?;
                let options = c.u8("options")?;
                let count = c.count(declared.into(), 4, "relation count")?;
                let relations = (0..count)
                    .map(|_| c.relation_id("relation OID"))
                    .collect::<Result<_, _>>()?;
                Message::Truncate(Truncate {
                    xid,
                    options,
                    relations,
                })
            }
            b'M' => {
                let xid = self.stream_xid(c)?;
                let transactional = c.u8("flags")? & 1 != 0;
                let lsn = c.lsn("message LSN")?;
                let prefix = c.cstr("prefix")?;
                let length = c.i32("content length")?;
                let length = c.count(length.into(), 1, "content length")?;
                Message::Message(LogicalMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content: c.bytes(length, "content")?,
                })
            }
            b'S' => {
                if self.in_stream {
                    return Err(DecodeError::StreamSequence("Stream Start"));
                }
                let start = StreamStart {
                    xid: c.xid("xid")?,
                    first_segment: c.u8("first segment")? == 1,
                };
                self.in_stream = true;
                Message::StreamStart(start)
            }
            b'E' => {
                if !self.in_stream {
                    return Err(DecodeError::StreamSequence("Stream Stop"));
                }
                self.in_stream = false;
                Message::StreamStop
            }
            b'c' => Message::StreamCommit(StreamCommit {
                xid: c.xid("xid")?,
                flags: c.u8("flags")?,
                commit_lsn: c.lsn("commit LSN")?,
                end_lsn: c.lsn("end LSN")?,
                commit_ts: c.timestamp("commit timestamp")?,
            }),
            b'A' => Message::StreamAbort(StreamAbort {
                xid: c.xid("xid")?,
                subxid: c.xid("subtransaction xid")?,
                abort: if self.parallel_streaming && self.version >= 4 {
                    Some((c.lsn("abort LSN")?, c.timestamp("abort timestamp")?))
                } else {
                    None
                },
            }),
            b'b' => Message::BeginPrepare(BeginPrepare {
                prepare_lsn: c.lsn("prepare LSN")?,
                end_lsn: c.lsn("end LSN")?,
                prepare_ts: c.timestamp("prepare timestamp")?,
                xid: c.xid("xid")?,
                gid: c.cstr("gid")?,
            }),
            b'P' => Message::Prepare(prepare(c)?),
            b'p' => Message::StreamPrepare(prepare(c)?),
            b'K' => Message::CommitPrepared(CommitPrepared {
                flags: c.u8("flags")?,
                commit_lsn: c.lsn("commit LSN")?,
                end_lsn: c.lsn("end LSN")?,
                commit_ts: c.timestamp("commit timestamp")?,
                xid: c.xid("xid")?,
                gid: c.cstr("gid")?,
            }),
            b'r' => Message::RollbackPrepared(RollbackPrepared {
                flags: c.u8("flags")?,
                prepare_end_lsn: c.lsn("prepare end LSN")?,
                rollback_end_lsn: c.lsn("rollback end LSN")?,
                prepare_ts: c.timestamp("prepare timestamp")?,
                rollback_ts: c.timestamp("rollback timestamp")?,
                xid: c.xid("xid")?,
                gid: c.cstr("gid")?,
            }),
            _ => unreachable!("every tag was matched above"),
        })
    }

    /// The leading xid of a data message inside a streamed block.
    fn stream_xid(&self, c: &mut Cursor) -> Result<Option<Xid>, DecodeError> {
        self.in_stream.then(|| c.xid("streamed xid")).transpose()
    }

    fn relation(&self, c: &mut Cursor) -> Result<Relation, DecodeError> {
        let xid = self.stream_xid(c)?;
        let id = c.relation_id("relation OID")?;
        let namespace = c.cstr("namespace")?;
        let name = c.cstr("relation name")?;
        let replica_identity = match c.u8("replica identity")? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            kind => return Err(unknown_kind(c, "replica identity", kind)),
        };
        let declared = c.i16("column count")?;
        // Each column takes at least flags, an empty name's NUL, type OID and modifier.
        let count = c.count(declared.into(), 10, "column count")?;
        let columns = (0..count)
            .map(|_| {
                Ok(RelationColumn {
                    is_key: c.u8("column flags")? & 1 != 0,
                    name: c.cstr("column name")?,
                    type_oid: c.type_oid("column type OID")?,
                    type_modifier: c.i32("column type modifier")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Relation {
            xid,
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn update(&self, c: &mut Cursor) -> Result<Update, DecodeError> {
        let xid = self.stream_xid(c)?;
        let relation = c.relation_id("relation OID")?;
        let (old, marker) = match c.u8("tuple marker")? {
            b'K' => (Some(OldTuple::Key(tuple(c)?)), c.u8("new tuple marker")?),
            b'O' => (Some(OldTuple::Full(tuple(c)?)), c.u8("new tuple marker")?),
            other => (None, other),
        };
        if marker != b'N' {
            return Err(unknown_kind(c, "tuple marker", marker));
        }
        Ok(Update {
            xid,
            relation,
            old,
            new: tuple(c)?,
        })
    }
}

/// TupleData: a column count, then per column a kind byte and, for text and binary, the value.
fn tuple(c: &mut Cursor) -> Result<TupleData, DecodeError> {
    let declared = c.i16("column count")?;
    let count = c.count(declared.into(), 1, "column count")?;
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        columns.push(match c.u8("column kind")? {
            b'n' => ColumnValue::Null,
            b'u' => ColumnValue::UnchangedToast,
            kind @ (b't' | b'b') => {
                let length = c.i32("column length")?;
                let length = c.count(length.into(), 1, "column length")?;
                let value = c.bytes(length, "column value")?;
                if kind == b't' {
                    ColumnValue::Text(value)
                } else {
                    ColumnValue::Binary(value)
                }
            }
            kind => return Err(unknown_kind(c, "column kind", kind)),
        });
    }
    Ok(TupleData(columns))
}

fn prepare(c: &mut Cursor) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: c.u8("flags")?,
        prepare_lsn: c.lsn("prepare LSN")?,
        end_lsn: c.lsn("end LSN")?,
        prepare_ts: c.timestamp("prepare timestamp")?,
        xid: c.xid("xid")?,
        gid: c.cstr("gid")?,
    })
}

fn unknown_kind(c: &Cursor, what: &'static str, kind: u8) -> DecodeError {
    DecodeError::UnknownKind {
        message: c.message(),
        what,
        kind,
    }
}
