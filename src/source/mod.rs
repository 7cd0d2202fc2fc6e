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
