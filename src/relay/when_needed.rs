//! `snapshot.mode = "when_needed"`: the way back when the slot cannot continue the checkpoint.
//!
//! A slot dropped, lost in a failover (PostgreSQL before 17 keeps logical slots on the primary
//! only), invalidated for the WAL it needed, or confirmed past the checkpoint by something else
//! has lost changes the relay never published. Without this mode the relay stops and says so;
//! with it, the relay recreates the slot (or keeps the one confirmed ahead), starts a fresh
//! checkpoint at the slot's position and snapshots the captured CDC tables again while it
//! streams: a consumer ends with every row's current state, as Debezium's `when_needed` does.
//!
//! What the gap still costs, said in the log line: the changes inside it are not published as
//! change events, a row deleted inside it leaves no tombstone (the snapshot reads the rows that
//! exist), and outbox events written inside it are lost: outbox tables hold events, not state,
//! and are never snapshotted (their rows, when kept, cannot be told apart from the ones
//! published before the gap).
//!
//! Another cluster behind the URL, a slot of another plugin, or one made by hand on a promoted
//! standby are refused as before: those are configuration mistakes, not lost positions.

use crate::checkpoint::Checkpoint;
use crate::pg::wire::{ReplicationConnection, Session, SlotLife, SystemIdentity};
use crate::pg::Lsn;

use super::logical::SlotError;
use super::snapshot;
use super::{RelayConfig, RelayError};

/// What the slot's problem leaves to do.
enum Recovery {
    /// The slot is gone: create it.
    Create,
    /// The slot lost WAL it needs: drop it and create it again.
    Recreate,
    /// The slot is usable from its own position, past the checkpoint.
    StreamFrom(Lsn),
}

/// Recovers from `lost` by snapshotting again: returns the checkpoint to resume from, at the
/// (new) slot's position, carrying a new snapshot of the captured tables. Errors that are not a
/// lost position come back as they are.
pub(super) async fn recover(
    connection: &mut ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: &Checkpoint,
    lost: SlotError,
) -> Result<Checkpoint, RelayError> {
    let (recovery, why) = match &lost {
        SlotError::Missing { .. } if checkpoint.system_id == system.system_id => (
            Recovery::Create,
            "does not exist (it was dropped)".to_owned(),
        ),
        SlotError::LostInFailover {
            from_timeline,
            timeline,
            ..
        } => (
            Recovery::Create,
            format!(
                "was lost in the failover (this server is a promoted standby on timeline \
                 {timeline}, the checkpoint is on timeline {from_timeline}; PostgreSQL before 17 \
                 does not carry logical slots to standbys)"
            ),
        ),
        SlotError::WalLost { .. } => (
            Recovery::Recreate,
            "lost WAL it needed (wal_status = lost)".to_owned(),
        ),
        SlotError::Ahead { confirmed, .. } => (
            Recovery::StreamFrom(*confirmed),
            format!(
                "is confirmed at {confirmed}, past the checkpoint (something else consumed it)"
            ),
        ),
        _ => return Err(lost.into()),
    };
    let at = match recovery {
        Recovery::StreamFrom(confirmed) => confirmed,
        Recovery::Create | Recovery::Recreate => {
            if matches!(recovery, Recovery::Recreate) {
                connection.drop_replication_slot(&config.slot).await?;
            }
            let life = SlotLife::Permanent {
                failover: config.failover_slot,
            };
            connection
                .create_replication_slot(&config.slot, life)
                .await?
                .consistent_point
        }
    };
    let tables = snapshot::captured_tables(session, config).await?;
    let cursor = snapshot::begin("when_needed", tables);
    tracing::warn!(
        relay = %config.name,
        slot = %config.slot,
        checkpoint = %checkpoint.lsn,
        at = %at,
        snapshot = %cursor.id,
        tables = %cursor.tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "replication slot {:?} {why}, so the changes after relay {:?}'s checkpoint at {} are \
         gone from it. snapshot.mode = \"when_needed\": the slot streams from {at} on, and the \
         captured tables are snapshotted again, so consumers get every row's current state. \
         The changes between the two positions are not published as change events (a row \
         deleted meanwhile leaves no tombstone), and OUTBOX EVENTS WRITTEN MEANWHILE ARE LOST \
         (outbox tables are never snapshotted)",
        config.slot,
        config.name,
        checkpoint.lsn,
    );
    let mut resume = Checkpoint {
        version: Checkpoint::VERSION,
        system_id: system.system_id.clone(),
        timeline: system.timeline,
        slot: config.slot.clone(),
        lsn: at,
        xid: None,
        commit_ts: None,
        events: checkpoint.events,
        snapshot: None,
    };
    resume.set_snapshot((!cursor.is_done()).then_some(cursor));
    Ok(resume)
}
