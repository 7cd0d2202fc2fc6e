//! The messages of the pgoutput protocol, versions 1 to 4, as typed values.
//!
//! Field names follow PostgreSQL's "Logical Replication Message Formats". Column values are
//! `Bytes` slices of the replication buffer: decoding copies no column data.

use bytes::Bytes;

use crate::pg::{Lsn, PgTimestamp, RelationId, TypeOid, Xid};

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 'B': a transaction begins.
    Begin(Begin),
    /// 'C': the transaction commits.
    Commit(Commit),
    /// 'O': the transaction came from a replication origin.
    Origin(Origin),
    /// 'R': describes a table; precedes its first change in a session and follows schema changes.
    Relation(Relation),
    /// 'Y': names a non-built-in type used by a following Relation.
    Type(TypeMsg),
    /// 'I': a row was inserted.
    Insert(Insert),
    /// 'U': a row was updated.
    Update(Update),
    /// 'D': a row was deleted.
    Delete(Delete),
    /// 'T': tables were truncated.
    Truncate(Truncate),
    /// 'M': `pg_logical_emit_message`.
    Message(LogicalMessage),
    /// 'S': a block of an in-progress transaction's changes starts (v2+).
    StreamStart(StreamStart),
    /// 'E': the block ends (v2+).
    StreamStop,
    /// 'c': a streamed transaction commits (v2+).
    StreamCommit(StreamCommit),
    /// 'A': a streamed (sub)transaction aborts (v2+).
    StreamAbort(StreamAbort),
    /// 'b': a prepared transaction begins (v3+).
    BeginPrepare(BeginPrepare),
    /// 'P': the transaction is prepared (v3+).
    Prepare(Prepare),
    /// 'K': a prepared transaction commits (v3+).
    CommitPrepared(CommitPrepared),
    /// 'r': a prepared transaction rolls back (v3+).
    RollbackPrepared(RollbackPrepared),
    /// 'p': a streamed transaction is prepared (v3+).
    StreamPrepare(Prepare),
}

impl Message {
    /// The message's name as the protocol documentation gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Begin(_) => "Begin",
            Message::Commit(_) => "Commit",
            Message::Origin(_) => "Origin",
            Message::Relation(_) => "Relation",
            Message::Type(_) => "Type",
            Message::Insert(_) => "Insert",
            Message::Update(_) => "Update",
            Message::Delete(_) => "Delete",
            Message::Truncate(_) => "Truncate",
            Message::Message(_) => "Message",
            Message::StreamStart(_) => "Stream Start",
            Message::StreamStop => "Stream Stop",
            Message::StreamCommit(_) => "Stream Commit",
            Message::StreamAbort(_) => "Stream Abort",
            Message::BeginPrepare(_) => "Begin Prepare",
            Message::Prepare(_) => "Prepare",
            Message::CommitPrepared(_) => "Commit Prepared",
            Message::RollbackPrepared(_) => "Rollback Prepared",
            Message::StreamPrepare(_) => "Stream Prepare",
        }
    }
}

/// 'B'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
    /// Transaction id.
    pub xid: Xid,
}

/// 'C'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: where a subscriber resumes.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
}

/// 'O'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// Origin name.
    pub name: String,
}

/// How a table identifies old rows in updates and deletes (`REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// 'd': the primary key.
    Default,
    /// 'n': nothing.
    Nothing,
    /// 'f': all columns.
    Full,
    /// 'i': a chosen unique index.
    Index,
}

/// 'R'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// Table OID.
    pub id: RelationId,
    /// Schema name (`pg_catalog` is sent as an empty string).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in order.
    pub columns: Vec<RelationColumn>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// Data type.
    pub type_oid: TypeOid,
    /// Type modifier (`atttypmod`), e.g. varchar length.
    pub type_modifier: i32,
}

/// 'Y'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMsg {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// Type OID.
    pub id: TypeOid,
    /// Schema name.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// The column values of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData(pub Vec<ColumnValue>);

/// One column value of a [`TupleData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// 'n': SQL NULL.
    Null,
    /// 'u': an unchanged TOASTed value, not sent.
    UnchangedToast,
    /// 't': the value in its type's text format.
    Text(Bytes),
    /// 'b': the value in its type's binary format.
    Binary(Bytes),
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': the replica identity key columns (others NULL).
    Key(TupleData),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

/// 'I'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// The table.
    pub relation: RelationId,
    /// The new row.
    pub new: TupleData,
}

/// 'U'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// The table.
    pub relation: RelationId,
    /// The old key or row, when the key changed or the identity is FULL.
    pub old: Option<OldTuple>,
    /// The new row.
    pub new: TupleData,
}

/// 'D'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// The table.
    pub relation: RelationId,
    /// The old key or row.
    pub old: OldTuple,
}

/// 'T'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
    pub options: u8,
    /// The truncated tables.
    pub relations: Vec<RelationId>,
}

impl Truncate {
    /// `TRUNCATE ... CASCADE`.
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    /// `TRUNCATE ... RESTART IDENTITY`.
    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// 'M'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Transaction id, inside a streamed block.
    pub xid: Option<Xid>,
    /// Emitted with `transactional = true` (delivered with its transaction).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// Prefix.
    pub prefix: String,
    /// Content.
    pub content: Bytes,
}

/// 'S'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed transaction.
    pub xid: Xid,
    /// Whether this is the transaction's first block.
    pub first_segment: bool,
}

/// 'c'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: Xid,
    /// Flags (unused, 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
}

/// 'A'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction.
    pub xid: Xid,
    /// The aborted subtransaction (equal to `xid` when the whole transaction aborts).
    pub subxid: Xid,
    /// LSN and time of the abort, sent only with `streaming = parallel` (v4).
    pub abort: Option<(Lsn, PgTimestamp)>,
}

/// 'b'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_ts: PgTimestamp,
    /// Transaction id.
    pub xid: Xid,
    /// Global transaction id.
    pub gid: String,
}

/// 'P' and 'p'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags (unused, 0).
    pub flags: u8,
    /// LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepare.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_ts: PgTimestamp,
    /// Transaction id.
    pub xid: Xid,
    /// Global transaction id.
    pub gid: String,
}

/// 'K'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags (unused, 0).
    pub flags: u8,
    /// LSN of the commit prepared.
    pub commit_lsn: Lsn,
    /// End LSN of the commit prepared.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_ts: PgTimestamp,
    /// Transaction id.
    pub xid: Xid,
    /// Global transaction id.
    pub gid: String,
}

/// 'r'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags (unused, 0).
    pub flags: u8,
    /// End LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// End LSN of the rollback prepared.
    pub rollback_end_lsn: Lsn,
    /// Prepare time.
    pub prepare_ts: PgTimestamp,
    /// Rollback time.
    pub rollback_ts: PgTimestamp,
    /// Transaction id.
    pub xid: Xid,
    /// Global transaction id.
    pub gid: String,
}
