//! Rows already in the outbox tables when a relay first starts (`outboxd run
//! --publish-existing-rows`), published once.
//!
//! A slot decodes only what commits after it exists. Rows committed to an outbox table before
//! (the application wrote before the relay's first start, a new relay name, a table created
//! outside `migrate`) are still in the table, and the stream will never carry them. With the
//! option, and only while the relay has no checkpoint, the relay takes a snapshot that meets the
//! stream exactly:
//! - no slot yet: it creates its slot inside a `REPEATABLE READ` transaction with `USE_SNAPSHOT`;
//!   the transaction sees exactly the rows committed before the slot's consistent point `C`, and
//!   everything committed later comes from the stream, started at `C`.
//! - a slot already there (`migrate` created it, or an earlier attempt with the option failed
//!   before its first commit): a temporary slot beside it gives the snapshot and its consistent
//!   point `C`, and the stream of the relay's slot starts at `C`, skipping what it captured
//!   before. That is exact only if everything it captured before `C` is an outbox insert (whose
//!   row is then in the snapshot): `pg_logical_slot_peek_binary_changes`, which consumes
//!   nothing, says so. Anything else it captured (a change of another table, a logical message,
//!   an update or delete) would be lost, so the relay stops instead ([`BackfillError`]) and the
//!   operator decides.
//!
//! The snapshot's rows are read through a cursor (a chunk at a time), routed as the inserts of
//! the stream would be, and handed to the sink like one large Postgres transaction, closed by the
//! first checkpoint, at `C`: they reach Kafka in one transaction with that checkpoint, or not at
//! all, and an attempt that fails before that commit leaves no checkpoint and starts over.

use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::metrics::metrics;
use crate::pg::pgoutput::{ColumnValue, Relation, RelationColumn, ReplicaIdentity, TupleData};
use crate::pg::schema::Schema;
use crate::pg::sql::quote_identifier;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{
    publication_names, CreatedSlot, ReplicationConnection, Session, SlotLife, WireError,
};
use crate::pg::{Lsn, PgTimestamp, RelationId};
use crate::progress::Owed;
use crate::route::RouteContext;
use crate::sink::batch::{SinkInput, SinkThread};
use crate::source::poll::PollTable;
use crate::source::Change;

use super::routing::Routing;
use super::{RelayConfig, RelayError};

/// Rows fetched from the cursor at a time: the memory the read holds, besides the sink's channel.
const CHUNK: usize = 1_000;

/// In SQL over the rows of `pg_logical_slot_peek_binary_changes(…) c`: the OID of the table a
/// pgoutput Insert message (`I`, then the relation's OID in 4 bytes) is into, else NULL.
pub(super) const INSERT_INTO: &str =
    "CASE WHEN get_byte(c.data, 0) = 73 THEN (get_byte(c.data, 1)::bigint << 24) \
     + (get_byte(c.data, 2) << 16) + (get_byte(c.data, 3) << 8) + get_byte(c.data, 4) END";

/// The command-line option that turns this on.
pub const OPTION: &str = "--publish-existing-rows";

/// The rows older than the slot cannot be published exactly once.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The existing slot captured changes that a snapshot cannot stand in for.
    #[error(
        "{OPTION}: replication slot {slot:?} exists already (created by `outboxd migrate` or by \
         an earlier start) and has captured {changes} change(s) other than outbox inserts \
         (changes of other tables, logical messages, updates or deletes), so the rows older \
         than it can no longer be told apart exactly from what it captured. Either run without \
         {OPTION} (what the slot captured is published; rows older than it are not), or drop the \
         slot (SELECT pg_drop_replication_slot('{slot}')) and run with {OPTION} again: every row \
         in the outbox tables is then published once, but what the old slot captured that no \
         outbox table holds any more is not"
    )]
    SlotCaptured {
        /// The slot.
        slot: String,
        /// How many of its changes are not outbox inserts.
        changes: u64,
    },
}

/// Where the snapshot of the rows to publish comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Snapshot {
    /// The relay's slot, created with it.
    NewSlot,
    /// A temporary slot of this name beside the relay's existing one; dropped before streaming.
    Beside(String),
}

/// Creates the relay's slot inside a read-only `REPEATABLE READ` transaction that takes the
/// slot's snapshot: the transaction sees exactly the rows committed before the consistent point.
/// The transaction stays open for [`publish`].
pub(super) async fn create_slot_with_snapshot(
    connection: &mut ReplicationConnection,
    slot: &str,
    failover: bool,
) -> Result<CreatedSlot, WireError> {
    begin_snapshot(connection).await?;
    connection
        .create_replication_slot_with_snapshot(slot, SlotLife::Permanent { failover })
        .await
}

/// For a slot that exists without a checkpoint: a temporary slot beside it whose snapshot the
/// open transaction takes, once the peek showed that everything the relay's slot captured before
/// the snapshot's consistent point is an outbox insert. Returns that consistent point, where the
/// relay's slot is then streamed from.
pub(super) async fn snapshot_beside(
    connection: &mut ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
) -> Result<(Lsn, Snapshot), RelayError> {
    // Unique per relay (its slot's name is) and within the 63 bytes of a name.
    let temporary = format!("{}_snapshot", &config.slot[..config.slot.len().min(54)]);
    begin_snapshot(connection).await?;
    let created = connection
        .create_replication_slot_with_snapshot(&temporary, SlotLife::Temporary)
        .await?;
    // The walsender read the WAL up to the consistent point to create the slot, so it is
    // flushed and the peek sees all of it. Messages: Begin, Commit, Origin, Relation, Type pass;
    // an Insert passes when it is into an outbox table; anything else counts.
    let tables: Vec<String> = config.poll.tables.iter().map(PollTable::sql_name).collect();
    let counted = session
        .query_params_text(
            &format!(
                "SELECT count(*)::text \
                 FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL, \
                   'proto_version', '1', 'publication_names', $3, 'messages', 'true') c \
                 WHERE get_byte(c.data, 0) NOT IN (66, 67, 79, 82, 89) \
                   AND NOT coalesce({INSERT_INTO} = ANY \
                     (SELECT to_regclass(t)::oid::bigint FROM unnest($4::text[]) t), false)"
            ),
            &[
                &config.slot,
                &created.consistent_point.to_string(),
                &publication_names(&config.publications),
                &array_literal(&tables),
            ],
        )
        .await?;
    let changes = counted
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    if changes > 0 {
        return Err(BackfillError::SlotCaptured {
            slot: config.slot.clone(),
            changes,
        }
        .into());
    }
    Ok((created.consistent_point, Snapshot::Beside(temporary)))
}

/// Opens the transaction a slot created next gives its snapshot to.
async fn begin_snapshot(connection: &mut ReplicationConnection) -> Result<(), WireError> {
    connection
        .session()
        .simple_query("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .await
        .map(drop)
}

/// Publishes every row of the outbox tables in the slot's snapshot, then the checkpoint at the
/// consistent point, and ends the snapshot's transaction. `false` when the sink is gone (its
/// result says why).
pub(super) async fn publish(
    config: &RelayConfig,
    connection: &mut ReplicationConnection,
    schema: &Schema,
    sink: &mut SinkThread<Checkpoint>,
    routing: &mut Routing,
    checkpoint: Checkpoint,
) -> Result<bool, RelayError> {
    // Owed until the first checkpoint commits: a broker that dies meanwhile is a stall.
    metrics().owe(Owed::Wal {
        through: checkpoint.lsn,
    });
    let session = connection.session();
    let context = RouteContext {
        schema,
        xid: None,
        commit_ts: PgTimestamp::now(),
        lsn: None,
        last_commit_lsn: Some(Lsn::ZERO),
    };
    for table in &config.poll.tables {
        let Some(rows) = publish_table(config, session, table, &context, sink, routing).await?
        else {
            return Ok(false);
        };
        tracing::info!(
            table = %table.qualified(),
            rows,
            at = %checkpoint.lsn,
            "publishing the rows older than the slot, once ({OPTION})"
        );
    }
    if !sink.input.send(SinkInput::Boundary(checkpoint)).await || !sink.input.hand_over().await {
        return Ok(false);
    }
    session.simple_query("COMMIT").await?;
    Ok(true)
}

/// Streams one table's rows into the sink; the row count, `None` when the sink is gone.
async fn publish_table(
    config: &RelayConfig,
    session: &mut Session,
    table: &PollTable,
    context: &RouteContext<'_>,
    sink: &mut SinkThread<Checkpoint>,
    routing: &mut Routing,
) -> Result<Option<u64>, RelayError> {
    let exists = session
        .simple_query(&format!(
            "SELECT to_regclass({})::oid::text",
            crate::pg::sql::quote_literal(&table.sql_name())
        ))
        .await?;
    if exists
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .is_none()
    {
        return Ok(Some(0));
    }
    let order = order_by(session, table).await?;
    session
        .simple_query(&format!(
            "DECLARE outboxd_existing_rows NO SCROLL CURSOR FOR SELECT * FROM {} ORDER BY {order}",
            table.sql_name()
        ))
        .await?;
    let (mut rows, mut relation, mut routed) = (0_u64, None::<Arc<Relation>>, Vec::new());
    loop {
        let chunk = session
            .query(&format!("FETCH FORWARD {CHUNK} FROM outboxd_existing_rows"))
            .await?;
        if chunk.rows.is_empty() {
            break;
        }
        let relation = relation.get_or_insert_with(|| {
            Arc::new(Relation {
                xid: None,
                id: RelationId(chunk.columns.first().map_or(0, |c| c.table_oid)),
                namespace: table.schema.clone(),
                name: table.table.clone(),
                replica_identity: ReplicaIdentity::Default,
                columns: chunk
                    .columns
                    .iter()
                    .map(|c| RelationColumn {
                        is_key: false,
                        name: c.name.clone(),
                        type_oid: c.type_oid,
                        type_modifier: c.type_modifier,
                    })
                    .collect(),
            })
        });
        for row in chunk.rows {
            rows += 1;
            let change = Change::Insert {
                relation: Arc::clone(relation),
                new: TupleData(
                    row.into_iter()
                        .map(|value| value.map_or(ColumnValue::Null, ColumnValue::Text))
                        .collect(),
                ),
            };
            routing
                .route(&config.router, &change, context, &mut routed)
                .await?;
            for record in routed.drain(..) {
                if !sink.input.send(SinkInput::Record(record)).await {
                    return Ok(None);
                }
            }
        }
    }
    session.simple_query("CLOSE outboxd_existing_rows").await?;
    Ok(Some(rows))
}

/// The order rows are published in: poll mode's (`poll.order_by`, then the id column) when the
/// table has that column (it follows insert order, so per key it is commit order when writers
/// lock the aggregate first), else the id column.
async fn order_by(session: &mut Session, table: &PollTable) -> Result<String, WireError> {
    let found = session
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = {}::regclass \
             AND attname = {} AND NOT attisdropped",
            crate::pg::sql::quote_literal(&table.sql_name()),
            crate::pg::sql::quote_literal(&table.order_by)
        ))
        .await?;
    let id = quote_identifier(&table.id_column);
    Ok(if found.is_empty() {
        id
    } else {
        format!("{}, {id}", quote_identifier(&table.order_by))
    })
}
