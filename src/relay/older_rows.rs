//! Outbox rows older than the slot: the first start's warning, counted while streaming, and
//! `check`'s count.
//!
//! A slot never carries what committed before it existed. On a first start without
//! `--publish-existing-rows` the relay logs one WARN per outbox table holding such rows, with
//! their count: the table's rows at a position `L`, less the inserts into it of the transactions
//! the stream carries up to `L`. `check` gets the same number by peeking the slot
//! ([`rows_older_than_slot`]), but at `run` that would make the server decode
//! the whole backlog twice before the first event goes out (and spill the peek's rows to temporary
//! files): a first start on a slot holding a million changes waited over a second per 200,000 of
//! them. The stream decodes them anyway, so the pump counts the inserts as they pass and warns once
//! the stream is past `L`.
//!
//! The count and `L` come from one statement, whose snapshot precedes `L`: a transaction committed
//! between the two is streamed but not counted, so the figure can only come out low, never name
//! rows that the stream carries. `check`'s peek ([`rows_older_than_slot`]) starts from the same
//! statement.

use std::time::Duration;

use crate::pg::pgoutput::Relation;
use crate::pg::wire::{publication_names, Session, WireError};
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
            if let Some(Counted {
                rows: rows @ 1..,
                position: Some(until),
                ..
            }) = count_with_position(session, table, &config.slot).await?
            {
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

/// What one statement read of an outbox table: its rows, the WAL insert position after the
/// count's snapshot, and whether the relay's slot is in use.
struct Counted {
    rows: u64,
    /// `None` on a standby, which has no insert position.
    position: Option<Lsn>,
    /// `None` while the slot does not exist.
    slot_active: Option<bool>,
}

/// Counts `table`'s rows with the WAL position after the count's snapshot, in one statement;
/// `None` when the table does not exist (or the server's answer cannot be read).
///
/// The insert position, not `pg_current_wal_lsn()`'s write position: with `synchronous_commit =
/// off` a transaction is visible, so counted, before its commit record is written, and its
/// commit must still come before the position.
async fn count_with_position(
    session: &mut Session,
    table: &PollTable,
    slot: &str,
) -> Result<Option<Counted>, WireError> {
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
    let rows = session
        .query_params_text(
            &format!(
                "SELECT count(*)::text, CASE WHEN NOT pg_is_in_recovery() \
                   THEN pg_current_wal_insert_lsn() END::text, \
                   (SELECT active FROM pg_replication_slots WHERE slot_name = $1) FROM {}",
                table.sql_name()
            ),
            &[slot],
        )
        .await?;
    let row = rows.first();
    let field = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
    Ok(field(0).and_then(|n| n.parse().ok()).map(|rows| Counted {
        rows,
        position: field(1).and_then(|lsn| lsn.parse().ok()),
        // A boolean's text form is `t` or `f` (its cast to text would be `true` or `false`).
        slot_active: field(2).map(|active| active == "t"),
    }))
}

/// Rows in `table` that the slot will never decode because they committed before it existed:
/// all of them while it does not exist yet; else, meaningful only before the relay's first
/// checkpoint, the rows in the table less the inserts into it that the slot captured
/// (`pg_logical_slot_peek_binary_changes`, which consumes nothing): an estimate when rows were
/// deleted since, exact otherwise; none when the table is empty. `None` while the slot is in use
/// (it cannot be peeked: the relay streams it, or another `check` peeks it), on a standby (which
/// has no insert position; the relay refuses one), or when the WAL holding the counted rows'
/// commits is not flushed within [`FLUSH_WAIT`].
/// (The slot's `catalog_xmin` is no measure: a new slot starts with the oldest of every slot in
/// the cluster.)
///
/// The peek decodes only flushed WAL, and with `synchronous_commit = off` a transaction is
/// visible, so counted, before its commit record is flushed: the count comes with the insert
/// position after its snapshot, and the peek waits until the WAL is flushed that far. A
/// transaction committed between the count and the peek is peeked but not counted, so the
/// figure can only come out low.
pub async fn rows_older_than_slot(
    session: &mut Session,
    config: &RelayConfig,
    table: &PollTable,
) -> Result<Option<u64>, WireError> {
    let Some(counted) = count_with_position(session, table, &config.slot).await? else {
        return Ok(None);
    };
    if counted.rows == 0 {
        return Ok(Some(0));
    }
    match counted.slot_active {
        None => return Ok(Some(counted.rows)),
        Some(false) => {}
        Some(true) => return Ok(None),
    }
    let Some(position) = counted.position else {
        return Ok(None);
    };
    if !flushed_up_to(session, position).await? {
        return Ok(None);
    }
    fail::fail_point!("before-older-rows-peek");
    let peeked = match session
        .query_params_text(
            &format!(
                "SELECT count(*)::text \
                 FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                   'proto_version', '1', 'publication_names', $2, 'messages', 'true') c \
                 WHERE {INSERT_INTO} = $3::regclass::oid::bigint",
                INSERT_INTO = backfill::INSERT_INTO
            ),
            &[
                &config.slot,
                &publication_names(&config.publications),
                &table.sql_name(),
            ],
        )
        .await
    {
        // The relay, or another check's peek, took the slot since `active` was read.
        Err(WireError::Server(error)) if error.code == OBJECT_IN_USE => return Ok(None),
        peeked => peeked?,
    };
    Ok(peeked
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|peeked| counted.rows.saturating_sub(peeked)))
}

/// SQLSTATE of a peek at a slot that a replication connection or another peek holds.
const OBJECT_IN_USE: &str = "55006";

/// How long [`rows_older_than_slot`] waits for the WAL to be flushed: the WAL writer flushes an
/// asynchronous commit within three `wal_writer_delay`s, at most 10 s each.
const FLUSH_WAIT: Duration = Duration::from_secs(35);

/// Waits until the server's WAL is flushed up to `position`; `false` when it is not within
/// [`FLUSH_WAIT`].
async fn flushed_up_to(session: &mut Session, position: Lsn) -> Result<bool, WireError> {
    let position = position.to_string();
    let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
    loop {
        let flushed = session
            .query_params_text(
                "SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn",
                &[&position],
            )
            .await?;
        if flushed
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .as_deref()
            == Some("t")
        {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
