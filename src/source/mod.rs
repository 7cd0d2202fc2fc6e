//! Sources: where changes come from. Logical replication (pgoutput), or, for a role without
//! REPLICATION, polling of outbox tables. Both yield [`Change`]s, the currency the router takes.

pub mod logical;
pub mod poll;

use std::sync::Arc;

use bytes::Bytes;

use crate::pg::pgoutput::{OldTuple, Relation, TupleData};
use crate::pg::Lsn;

/// One change of a row, a truncate, or a logical message, inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A row was inserted.
    Insert {
        /// The table.
        relation: Arc<Relation>,
        /// The new row.
        new: TupleData,
    },
    /// A row was updated.
    Update {
        /// The table.
        relation: Arc<Relation>,
        /// The old key (key changed, or REPLICA IDENTITY FULL gives the whole old row).
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed columns are marked as such.
        new: TupleData,
    },
    /// A row was deleted.
    Delete {
        /// The table.
        relation: Arc<Relation>,
        /// The old key or, with REPLICA IDENTITY FULL, the old row.
        old: OldTuple,
    },
    /// Tables were truncated.
    Truncate {
        /// The tables, in the order Postgres lists them.
        relations: Vec<Arc<Relation>>,
        /// `TRUNCATE ... CASCADE`.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY`.
        restart_identity: bool,
    },
    /// A row read by a snapshot (`relay::snapshot`), not a change: its state when the snapshot's
    /// chunk was read, published as Debezium's `op: "r"`.
    Read {
        /// The table.
        relation: Arc<Relation>,
        /// The row.
        row: TupleData,
        /// What Debezium's `source.snapshot` says of it.
        mark: SnapshotMark,
    },
    /// A transactional `pg_logical_emit_message`.
    Message {
        /// The message's prefix (what it is for).
        prefix: String,
        /// The message's content.
        content: Bytes,
        /// The message's LSN.
        lsn: Lsn,
    },
}

/// Debezium's `source.snapshot` of a read event: where in its snapshot the row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMark {
    /// The snapshot's first row.
    First,
    /// The first row of a table other than the first.
    FirstInDataCollection,
    /// Any other row of an initial snapshot.
    True,
    /// The last row of a table other than the last.
    LastInDataCollection,
    /// The snapshot's last row.
    Last,
    /// Any row of an incremental snapshot (one a signal started).
    Incremental,
}

impl SnapshotMark {
    /// The value of `source.snapshot`, as Debezium writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::FirstInDataCollection => "first_in_data_collection",
            Self::True => "true",
            Self::LastInDataCollection => "last_in_data_collection",
            Self::Last => "last",
            Self::Incremental => "incremental",
        }
    }
}
