//! Snapshots while streaming, exactly once (`snapshot.mode = "initial"`): the rows of the captured
//! CDC tables read in primary-key chunks interleaved with the stream, as DBLog (Netflix, 2020) and
//! Debezium's incremental snapshots do, each chunk's reads committed in the Kafka transaction of
//! the checkpoint that moves the snapshot's cursor past it. The same runs on demand for chosen
//! tables (an incremental snapshot), started, paused, resumed or stopped by a signal in the
//! stream ([`signal`], checked and applied by [`request`]; row filters in [`filter`]).
//!
//! # One chunk
//! ```text
//! stream:  ... T1 T2 | read chunk (snapshot S) | T3 T4 ... [H] ... T5
//!                    p0                          window      reads here, then T5
//! ```
//! 1. Between two stream events (position `p0`), the pump reads the next `chunk_size` rows past
//!    the cursor in one `REPEATABLE READ` transaction whose snapshot `S` also gives the
//!    transactions in progress (`txid_current_snapshot()`), then writes the high watermark `H`:
//!    `pg_logical_emit_message(true, 'outboxd.snapshot', nonce)` in a transaction of its own
//!    (transactional, so that its commit flushes the WAL and the walsender sends it at once; a
//!    non-transactional message may wait for the next flush). No table is written, and the
//!    function needs no privilege beyond the relay's.
//! 2. Every transaction that `S` sees committed before `S` was taken, so before `H` was written:
//!    it reaches the stream before `H`. Every row the stream changes between `p0` and `H` leaves
//!    the chunk ([`window::Window::saw`]): its change event is at least as new as the read.
//! 3. At the commit of `H`'s transaction the rows left become `op: "r"` events, followed by the
//!    boundary whose checkpoint carries the cursor past the chunk: one Kafka transaction holds
//!    both, so a crash re-reads at most this chunk, and nothing twice. While the snapshot reads
//!    on, that boundary is held back for the next chunk's ([`held`]): a Kafka transaction then
//!    holds several chunks and the checkpoint past the last, and a crash re-reads them all.
//!
//! The pump's position `p0` is the window's low watermark: the read runs inside the pump, between
//! two events, so no low-watermark message is needed. What is left is a transaction whose commit
//! the stream carried before `p0` but that `S` does not yet see (its backend between writing the
//! commit record and leaving the process array): its change would precede an older read. Such a
//! transaction is in `S`'s list of transactions in progress, and the pump saw it commit since the
//! previous read, so the pump keeps those transaction ids and reads the chunk again when they meet
//! (until a read sees them all committed: then every later snapshot does too; transactions
//! committed before an attempt's start point are taken as settled, a relay restart taking
//! seconds).
//!
//! The stream never waits for the snapshot: one read of `chunk_size` rows by primary key takes
//! milliseconds, and only the window's rows are held. A table needs a primary key: without one
//! a streamed change cannot be told apart from a read row, and the snapshot stops with an error.

mod filter;
mod held;
pub mod progress;
mod published;
mod recent;
pub(super) mod request;
pub(super) mod signal;
mod window;

use std::sync::Arc;

use crate::checkpoint::snapshot::{SnapshotCursor, SnapshotKind, TableName};
use crate::metrics::metrics;
use crate::pg::pgoutput::{ColumnValue, Relation, RelationColumn, ReplicaIdentity, TupleData};
use crate::pg::schema::Schema;
use crate::pg::sql::quote_identifier;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::pg::{Lsn, RelationId, Xid};
use crate::source::Change;

use super::{RelayConfig, RelayError};
use filter::Filter;
pub(super) use held::HeldBoundary;
pub(super) use recent::RecentCommits;
use window::Window;

/// The prefix of the watermarks' logical messages: the pump takes them, they are never published.
pub const WATERMARK_PREFIX: &str = "outboxd.snapshot";

/// A table that cannot be snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No primary key.
    #[error(
        "table {table} cannot be snapshotted: it has no primary key, so the snapshot cannot tell \
         its rows apart from the changes streamed meanwhile. Add a primary key, or take the table \
         out of the relay's publication, or set snapshot.mode = \"never\""
    )]
    NoPrimaryKey {
        /// The table.
        table: TableName,
    },
}

/// Why [`TableReader::load`] finds a table without a primary key unreadable.
const NO_PRIMARY_KEY: &str = "it has no primary key";

/// The snapshot a pump runs: its cursor, the open window, the session it reads on.
#[derive(Debug)]
pub(super) struct Snapshotter {
    /// The cursor as of the last chunk handed to the sink.
    cursor: SnapshotCursor,
    /// Rows per read.
    chunk_size: usize,
    /// The plain session reads and watermarks go through; opened at the first read.
    session: Option<Session>,
    /// The chunk waiting for its high watermark.
    window: Option<Window>,
    /// Unique per attempt: watermarks written by an earlier attempt are not ours.
    attempt: String,
    /// Watermarks written in this attempt.
    written: u64,
    /// The table being read, as the snapshot's reads describe it.
    table: Option<TableReader>,
}

/// How the table being read is read.
#[derive(Debug)]
struct TableReader {
    /// Which one.
    name: TableName,
    /// Its OID.
    oid: RelationId,
    /// The relay's publications, which say the columns a read selects ([`published`]).
    publications: Vec<String>,
    /// The SELECT of the next chunk past its select list (`FROM` on): `$1` the row limit, then
    /// the key after which to start.
    first: String,
    /// The same, after a key.
    next: String,
    /// The primary key's columns.
    key: Vec<String>,
    /// The values of the row filter's parameters, which follow the key's.
    filter_params: Vec<String>,
}

impl Snapshotter {
    /// Resumes the snapshot at `cursor`.
    pub fn new(config: &RelayConfig, cursor: SnapshotCursor) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            cursor,
            chunk_size: config.snapshot.chunk_size,
            session: None,
            window: None,
            attempt: format!("{}.{nanos}", std::process::id()),
            written: 0,
            table: None,
        }
    }

    /// The cursor every checkpoint carries now; `None` once the snapshot is complete.
    pub fn cursor(&self) -> Option<&SnapshotCursor> {
        (!self.cursor.is_done()).then_some(&self.cursor)
    }

    /// Read events of this snapshot handed to the sink so far.
    pub fn rows(&self) -> u64 {
        self.cursor.rows
    }

    /// Whether the next chunk is to be read: none is waiting for its watermark, a table is left,
    /// and no signal paused the snapshot.
    pub fn wants_chunk(&self) -> bool {
        self.window.is_none() && !self.cursor.is_done() && !self.cursor.paused
    }

    /// Whether a chunk is waiting for its watermark or the next one is to be read.
    pub fn reading(&self) -> bool {
        self.window.is_some() || self.wants_chunk()
    }

    /// A change the stream carries: it leaves the open window.
    pub fn saw(&mut self, change: &Change) {
        if let Some(window) = &mut self.window {
            window.saw(change);
        }
    }

    /// A watermark message at `lsn`: the open window's closes at the commit of its transaction.
    /// Watermarks of other attempts are ignored.
    pub fn watermark(&mut self, content: &[u8], lsn: Lsn) {
        if let Some(window) = &mut self.window {
            if window.nonce.as_bytes() == content {
                window.closed_at = Some(lsn);
            }
        }
    }

    /// At a commit: the closed window's read events and the cursor past it (the position of the
    /// watermark, for the events' `source.lsn`), if the window closed in this transaction.
    pub fn close(&mut self) -> Option<(Vec<Change>, Lsn)> {
        let lsn = self.window.as_ref()?.closed_at?;
        let closed = self.window.take()?.close(&self.cursor);
        self.move_to(closed.cursor);
        Some((closed.reads, lsn))
    }

    /// Moves the cursor, saying so when the snapshot is complete.
    fn move_to(&mut self, cursor: SnapshotCursor) {
        self.cursor = cursor;
        if self.cursor.is_done() {
            tracing::info!(
                snapshot = %self.cursor.id,
                rows = self.cursor.rows,
                tables = self.cursor.tables.len(),
                "snapshot complete; streaming goes on"
            );
        }
    }

    /// Reads the next chunk and writes its high watermark, or moves past a table with no rows
    /// left (or dropped since the snapshot began).
    pub async fn read_chunk(
        &mut self,
        config: &RelayConfig,
        schema: &mut Schema,
        recent: &mut RecentCommits,
    ) -> Result<(), RelayError> {
        let Some(name) = self.cursor.current().cloned() else {
            return Ok(());
        };
        // Tests pace a snapshot with it, to stop the relay in the middle.
        fail::fail_point!("before-snapshot-read");
        if self.session.is_none() {
            let mut session = Session::connect(&config.postgres).await?;
            let estimate = progress::estimated_rows(&mut session, &self.cursor.tables).await?;
            metrics()
                .snapshot_estimated_rows
                .set(estimate.map_or(-1, |rows| i64::try_from(rows).unwrap_or(i64::MAX)));
            self.session = Some(session);
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        if self.table.as_ref().is_none_or(|t| t.name != name) {
            let filter = self.cursor.filter(&name);
            match TableReader::load(session, schema, &name, filter, &config.publications).await? {
                Ok(reader) => self.table = Some(reader),
                // The initial snapshot promised every captured table: it stops. A signal's
                // table lost its key after the signal was checked: it is skipped.
                Err(why) if why == NO_PRIMARY_KEY && self.cursor.kind == SnapshotKind::Initial => {
                    return Err(SnapshotError::NoPrimaryKey { table: name }.into());
                }
                Err(skipped) => {
                    tracing::warn!(table = %name, "snapshot: {skipped}; the table is skipped");
                    self.move_to(self.cursor.past(None, 0, true));
                    return Ok(());
                }
            }
        }
        let Some(reader) = self.table.as_ref() else {
            return Ok(());
        };
        let read = reader.read(session, &self.cursor, self.chunk_size).await?;
        // Anything the stream committed before this read that the read's snapshot does not see
        // would precede an older read: read again. The ids are kept until a read sees them all
        // committed (then every later snapshot does too): the next read may come too soon again.
        let racing = recent.any_of(&read.in_progress);
        if racing {
            tracing::debug!(table = %name, "snapshot: a transaction the stream passed was not yet visible to the read; reading the chunk again");
            return Ok(());
        }
        recent.clear();
        let Some(relation) = read.relation else {
            // No row past the cursor: the table is done, with no watermark needed.
            self.move_to(self.cursor.past(None, 0, true));
            return Ok(());
        };
        let key_columns = reader
            .key
            .iter()
            .filter_map(|k| relation.columns.iter().position(|c| &c.name == k))
            .collect();
        self.written += 1;
        let nonce = format!("{}.{}.{}", self.cursor.id, self.attempt, self.written);
        let window = Window::new(nonce, relation, key_columns, read.rows, read.ended);
        session
            .query_params(
                "SELECT pg_logical_emit_message(true, $1::text, $2::text)::text",
                &[WATERMARK_PREFIX, &window.nonce],
            )
            .await?;
        self.window = Some(window);
        Ok(())
    }
}

/// The rows of one read, and the transactions its snapshot saw in progress.
#[derive(Debug)]
struct Read {
    /// The table's OID and columns as the read returned them (`None` without rows).
    relation: Option<Arc<Relation>>,
    rows: Vec<TupleData>,
    /// Whether the table has no row past these.
    ended: bool,
    /// `txid_current_snapshot()`'s list, as 32-bit transaction ids (what the stream carries).
    in_progress: Vec<Xid>,
}

impl TableReader {
    /// The reader of `name` (of the rows `filter` lets through), its identifiers quoted as the
    /// catalog spells them; `Err` with the reason to skip it if the table is gone, has no primary
    /// key ([`NO_PRIMARY_KEY`]) or the filter no longer fits its columns.
    async fn load(
        session: &mut Session,
        schema: &mut Schema,
        name: &TableName,
        filter: Option<&str>,
        publications: &[String],
    ) -> Result<Result<Self, String>, RelayError> {
        let rows = session
            .query_params_text(
                "SELECT c.oid::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&name.schema, &name.table],
            )
            .await?;
        let Some(oid) = rows
            .first()
            .and_then(|row| row.first()?.as_deref()?.parse().ok())
            .map(RelationId)
        else {
            return Ok(Err("the table no longer exists".into()));
        };
        schema.load_table(session, oid).await?;
        let Some(key) = schema.primary_key(oid).map(<[String]>::to_vec) else {
            return Ok(Err(NO_PRIMARY_KEY.into()));
        };
        let table = format!(
            "{}.{}",
            quote_identifier(&name.schema),
            quote_identifier(&name.table)
        );
        let columns: Vec<String> = key.iter().map(|k| quote_identifier(k)).collect();
        let order = columns.join(", ");
        let params: Vec<String> = (2..columns.len() + 2).map(|i| format!("${i}")).collect();
        let after = format!("({order}) > ({})", params.join(", "));
        let (first, next, filter_params) = match filter {
            None => (String::new(), format!("WHERE {after}"), Vec::new()),
            Some(filter) => {
                let known = request::table_columns(session, name)
                    .await?
                    .map(|(columns, _)| columns)
                    .unwrap_or_default();
                // The filter's parameters follow the limit, and the key's after a key.
                let parsed = Filter::parse(filter).and_then(|f| {
                    let (first, values) = f.to_sql(&name.to_string(), &known, 2)?;
                    let (next, _) = f.to_sql(&name.to_string(), &known, columns.len() + 2)?;
                    Ok((
                        format!("WHERE {first}"),
                        format!("WHERE {after} AND {next}"),
                        values,
                    ))
                });
                match parsed {
                    Ok(parsed) => parsed,
                    Err(refused) => {
                        return Ok(Err(format!("its row filter {filter:?}: {refused}")))
                    }
                }
            }
        };
        let selected = published::columns(session, oid, publications).await?;
        if let Some(missing) = key.iter().find(|k| !selected.contains(k)) {
            return Ok(Err(format!(
                "its publication's column list leaves out the primary key column {missing:?}, \
                 so the snapshot cannot tell its rows apart from the changes streamed meanwhile"
            )));
        }
        Ok(Ok(Self {
            name: name.clone(),
            oid,
            publications: publications.to_vec(),
            first: format!("FROM {table} {first} ORDER BY {order} LIMIT $1"),
            next: format!("FROM {table} {next} ORDER BY {order} LIMIT $1"),
            key,
            filter_params,
        }))
    }

    /// Up to `chunk` rows past the cursor, in key order, in one `REPEATABLE READ` transaction
    /// with the list of transactions its snapshot saw in progress.
    async fn read(
        &self,
        session: &mut Session,
        cursor: &SnapshotCursor,
        chunk: usize,
    ) -> Result<Read, WireError> {
        session
            .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let read = self.read_in_transaction(session, cursor, chunk).await;
        // A failed read leaves the transaction aborted: end it either way.
        let ended = session.simple_query("COMMIT").await;
        let read = read?;
        ended?;
        Ok(read)
    }

    async fn read_in_transaction(
        &self,
        session: &mut Session,
        cursor: &SnapshotCursor,
        chunk: usize,
    ) -> Result<Read, WireError> {
        let snapshot = session
            .simple_query("SELECT txid_current_snapshot()::text")
            .await?;
        let in_progress = snapshot
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .map(|text| in_progress(&text))
            .unwrap_or_default();
        // One row more than the chunk says whether the table goes on.
        let limit = (chunk + 1).to_string();
        let mut params = vec![limit.as_str()];
        let rest = match &cursor.after {
            Some(after) => {
                params.extend(after.iter().map(String::as_str));
                &self.next
            }
            None => &self.first,
        };
        params.extend(self.filter_params.iter().map(String::as_str));
        // Asked anew each read, as the stream describes the table anew after a change to it.
        let selected = published::columns(session, self.oid, &self.publications).await?;
        let sql = format!("SELECT {} {rest}", published::select_list(&selected));
        let result = session.query_params(&sql, &params).await?;
        let ended = result.rows.len() <= chunk;
        // Described anew each read: a column added meanwhile is in the rows.
        let relation = (!result.rows.is_empty()).then(|| {
            Arc::new(Relation {
                xid: None,
                id: RelationId(result.columns.first().map_or(0, |c| c.table_oid)),
                namespace: self.name.schema.clone(),
                name: self.name.table.clone(),
                replica_identity: ReplicaIdentity::Default,
                columns: result
                    .columns
                    .iter()
                    .map(|c| RelationColumn {
                        is_key: self.key.contains(&c.name),
                        name: c.name.clone(),
                        type_oid: c.type_oid,
                        type_modifier: c.type_modifier,
                    })
                    .collect(),
            })
        });
        let rows = result
            .rows
            .into_iter()
            .take(chunk)
            .map(|row| {
                TupleData(
                    row.into_iter()
                        .map(|value| value.map_or(ColumnValue::Null, ColumnValue::Text))
                        .collect(),
                )
            })
            .collect();
        Ok(Read {
            relation,
            rows,
            ended,
            in_progress,
        })
    }
}

/// The transactions in progress of a `txid_current_snapshot()` text (`xmin:xmax:xip,…`), as the
/// 32-bit ids the stream carries (the text's are extended with the epoch).
fn in_progress(snapshot: &str) -> Vec<Xid> {
    snapshot
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .split(',')
        .filter_map(|x| x.parse::<u64>().ok())
        .filter_map(|x| u32::try_from(x & u64::from(u32::MAX)).ok().map(Xid))
        .collect()
}

/// Every table of the relay's publications (outbox tables included), in name order.
pub(super) async fn published_tables(
    session: &mut Session,
    config: &RelayConfig,
) -> Result<Vec<TableName>, WireError> {
    let rows = session
        .query_params_text(
            "SELECT DISTINCT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables \
             WHERE pubname = ANY($1::name[]) ORDER BY 1, 2",
            &[&array_literal(&config.publications)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut values = row.into_iter().flatten();
            Some(TableName {
                schema: values.next()?,
                table: values.next()?,
            })
        })
        .collect())
}

/// The tables an initial snapshot reads: those of the relay's publications that are not outbox
/// tables, in name order.
pub(super) async fn captured_tables(
    session: &mut Session,
    config: &RelayConfig,
) -> Result<Vec<TableName>, WireError> {
    let outbox = config.router.outbox();
    Ok(published_tables(session, config)
        .await?
        .into_iter()
        .filter(|name| {
            !outbox
                .tables()
                .iter()
                .any(|t| t.schema == name.schema && t.table == name.table)
        })
        .collect())
}

/// A new snapshot of `tables` at the start (`snapshot.mode`'s, named `mode` then the time it
/// starts): Debezium marks its reads as an initial snapshot's, also when `when_needed` takes it.
pub(super) fn begin(mode: &str, tables: Vec<TableName>) -> SnapshotCursor {
    SnapshotCursor::new(snapshot_id(mode), SnapshotKind::Initial, tables)
}

/// A snapshot's id: its kind and the time it starts.
fn snapshot_id(kind: &str) -> String {
    format!("{kind}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_reads_the_snapshot_list_without_the_epoch() {
        assert_eq!(in_progress("10:20:"), []);
        assert_eq!(
            in_progress("4294967306:4294967320:4294967307,4294967310"),
            [Xid(11), Xid(14)]
        );
    }
}
