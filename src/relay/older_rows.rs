//! The first start's warning about outbox rows older than the slot, counted while streaming.
//!
//! A slot never carries what committed before it existed. On a first start without
//! `--publish-existing-rows` the relay logs one WARN per outbox table holding such rows, with
//! their count: the table's rows at a position `L`, less the inserts into it of the transactions
//! the stream carries up to `L`. `check` gets the same number by peeking the slot
//! ([`super::backfill::rows_older_than_slot`]), but at `run` that would make the server decode
//! the whole backlog twice before the first event goes out (and spill the peek's rows to temporary
//! files): a first start on a slot holding a million changes waited over a second per 200,000 of
//! them. The stream decodes them anyway, so the pump counts the inserts as they pass and warns once
//! the stream is past `L`.
//!
//! The count and `L` come from one statement, whose snapshot precedes `L`: a transaction committed
//! between the two is streamed but not counted, so the figure can only come out low, never name
//! rows that the stream carries.

use crate::pg::pgoutput::Relation;
use crate::pg::wire::Session;
use crate::pg::Lsn;
use crate::source::poll::PollTable;

use super::{backfill, RelayConfig, RelayError};

/// The outbox tables with rows when the relay started, and the inserts streamed so far.
#[derive(Debug)]
pub(super) struct OlderRows {
    /// The relay's slot, named in the warning.
    slot: String,
    tables: Vec<Census>,
}

/// One outbox table's rows at `until` and the inserts the stream carried up to there.
#[derive(Debug)]
struct Census {
    schema: String,
    table: String,
    /// The WAL position the count was taken at.
    until: Lsn,
    /// Rows in the table then.
    rows: u64,
    /// Inserts of the transactions committed by `until`.
    streamed: u64,
    /// Inserts of the transaction being streamed.
    open: u64,
}

impl OlderRows {
    /// Counts the rows of the outbox tables that exist and hold any; `None` when none does (then
    /// the stream has nothing to count).
    pub async fn count(
        session: &mut Session,
        config: &RelayConfig,
    ) -> Result<Option<Self>, RelayError> {
        let mut tables = Vec::new();
        for table in &config.poll.tables {
            if let Some((rows @ 1.., until)) = rows_and_position(session, table).await? {
                tables.push(Census {
                    schema: table.schema.clone(),
                    table: table.table.clone(),
                    until,
                    rows,
                    streamed: 0,
                    open: 0,
                });
            }
        }
        Ok((!tables.is_empty()).then(|| Self {
            slot: config.slot.clone(),
            tables,
        }))
    }

    /// The stream carried an insert into `relation`.
    pub fn inserted(&mut self, relation: &Relation) {
        if let Some(census) = self
            .tables
            .iter_mut()
            .find(|c| c.schema == relation.namespace && c.table == relation.name)
        {
            census.open += 1;
        }
    }

    /// The streamed transaction committed, its Commit ending at `end`. Returns `true` once every
    /// table is told (the pump then drops the count).
    pub fn committed(&mut self, end: Lsn) -> bool {
        for census in &mut self.tables {
            if end <= census.until {
                census.streamed += census.open;
            }
            census.open = 0;
        }
        self.past(end)
    }

    /// The walsender decoded everything before `wal_end` (a keepalive). Returns `true` once every
    /// table is told.
    pub fn reached(&mut self, wal_end: Lsn) -> bool {
        self.past(wal_end)
    }

    /// Warns about each table whose position the stream has passed, and forgets it.
    fn past(&mut self, position: Lsn) -> bool {
        let slot = &self.slot;
        self.tables.retain(|census| {
            if position < census.until {
                return true;
            }
            let older = census.rows.saturating_sub(census.streamed);
            let table = format!("{}.{}", census.schema, census.table);
            tracing::debug!(
                table = %table,
                rows = census.rows,
                streamed = census.streamed,
                "counted the outbox table's rows older than the slot"
            );
            if older > 0 {
                tracing::warn!(
                    table = %table,
                    rows = older,
                    slot = %slot,
                    "outbox table holds rows committed before the replication slot existed: THEY \
                     WILL NEVER BE PUBLISHED unless the relay's first start (before its first \
                     checkpoint) publishes them with {}",
                    backfill::OPTION
                );
            }
            false
        });
        self.tables.is_empty()
    }
}

/// The table's row count and the WAL position after the count's snapshot; `None` when the table
/// does not exist (or the server's answer cannot be read).
async fn rows_and_position(
    session: &mut Session,
    table: &PollTable,
) -> Result<Option<(u64, Lsn)>, RelayError> {
    let exists = session
        .query_params_text("SELECT to_regclass($1)::text", &[&table.sql_name()])
        .await?;
    if exists
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .is_none()
    {
        return Ok(None);
    }
    // The statement's snapshot is taken before the position is read. The insert position, not
    // pg_current_wal_lsn()'s write position: with synchronous_commit off a transaction is
    // visible, so counted, before its commit record is written, and it must still be before `L`.
    let rows = session
        .query_params_text(
            &format!(
                "SELECT count(*)::text, pg_current_wal_insert_lsn()::text FROM {}",
                table.sql_name()
            ),
            &[],
        )
        .await?;
    let row = rows.first();
    let field = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    Ok(field(0)
        .and_then(|n| n.parse().ok())
        .zip(field(1).and_then(|lsn| lsn.parse().ok())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::pgoutput::ReplicaIdentity;
    use crate::pg::RelationId;

    fn census(rows: u64, until: u64) -> OlderRows {
        OlderRows {
            slot: "slot".into(),
            tables: vec![Census {
                schema: "public".into(),
                table: "outbox".into(),
                until: Lsn(until),
                rows,
                streamed: 0,
                open: 0,
            }],
        }
    }

    fn relation(name: &str) -> Relation {
        Relation {
            xid: None,
            id: RelationId(1),
            namespace: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: Vec::new(),
        }
    }

    #[test]
    fn counts_the_inserts_of_transactions_committed_by_the_position() {
        let mut older = census(3, 100);
        older.inserted(&relation("outbox"));
        older.inserted(&relation("other"));
        assert!(!older.committed(Lsn(50),));
        assert_eq!(older.tables[0].streamed, 1, "only the outbox's insert");
        // A transaction committing past the position is not in the count: it ends the census.
        older.inserted(&relation("outbox"));
        older.inserted(&relation("outbox"));
        assert!(older.committed(Lsn(150),));
        assert!(older.tables.is_empty());
    }

    #[test]
    fn a_keepalive_past_the_position_ends_it_and_one_before_does_not() {
        let mut older = census(2, 100);
        assert!(!older.reached(Lsn(99),));
        assert!(older.reached(Lsn(100),));
    }
}
