//! A checkpoint written before a failover, read on the promoted standby.
//!
//! A promoted standby is the same system (same system identifier) on a later timeline. Its WAL
//! is the old primary's up to the point where its timeline forked, and its own after. Resuming
//! there from the checkpoint publishes exactly what the old primary committed after the
//! checkpoint and the standby received, then what the new primary commits, when:
//! - the checkpoint lies on the new timeline's history: its timeline is an ancestor, and its
//!   position is not past the fork (else Kafka holds events the new primary never had, which
//!   `synchronized_standby_slots` on the old primary prevents);
//! - the slot is the synchronized copy of the relay's (PostgreSQL 17's failover slots), and not
//!   confirmed past the checkpoint (checked by the caller, as for any slot).
//!
//! Anything else (another system, an older timeline, a slot made here by hand) is refused as
//! before.

use crate::checkpoint::Checkpoint;
use crate::pg::wire::{ReplicationConnection, Session, SystemIdentity};
use crate::pg::Lsn;

use super::logical::SlotError;
use super::{RelayConfig, RelayError};

/// Whether the server that `system` identifies is a promoted standby of the cluster where
/// `checkpoint` was written, whose copy of the slot the relay may resume from.
pub(super) async fn check_promoted(
    connection: &mut ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: &Checkpoint,
) -> Result<(), RelayError> {
    let refuse = |why: String| -> RelayError {
        SlotError::OtherSystem {
            relay: config.name.clone(),
            checkpoint_system: checkpoint.system_id.clone(),
            checkpoint_timeline: checkpoint.timeline,
            system: system.system_id.clone(),
            timeline: system.timeline,
            why,
        }
        .into()
    };
    if checkpoint.system_id != system.system_id {
        return Err(refuse("another cluster".into()));
    }
    if system.timeline < checkpoint.timeline {
        return Err(refuse(
            "this server is behind the checkpoint's timeline (a stale standby or a restored backup)"
                .into(),
        ));
    }
    let Some(fork) = fork_of(connection, system.timeline, checkpoint.timeline).await? else {
        return Err(refuse(format!(
            "timeline {} is not in this server's history",
            checkpoint.timeline
        )));
    };
    if checkpoint.lsn > fork {
        return Err(refuse(format!(
            "this timeline forked at {fork}, before the checkpoint at {}: Kafka holds events \
             this server never had (set synchronized_standby_slots on the primary so that the \
             relay never gets ahead of the standby)",
            checkpoint.lsn
        )));
    }
    if !synced(session, &config.slot).await? {
        return Err(refuse(format!(
            "slot {:?} here is not the synchronized copy of the relay's slot (PostgreSQL 17+ \
             failover slots: failover_slot = true, sync_replication_slots = on on the standby)",
            config.slot
        )));
    }
    tracing::warn!(
        relay = %config.name,
        slot = %config.slot,
        checkpoint = %checkpoint.lsn,
        from_timeline = checkpoint.timeline,
        timeline = system.timeline,
        fork = %fork,
        "resuming on a promoted standby: its synchronized slot is not past the checkpoint, \
         which lies before the fork"
    );
    Ok(())
}

/// The position where `ancestor` ended in the history of `timeline` (`TIMELINE_HISTORY`);
/// `None` when it is not an ancestor.
async fn fork_of(
    connection: &mut ReplicationConnection,
    timeline: u32,
    ancestor: u32,
) -> Result<Option<Lsn>, RelayError> {
    if timeline == ancestor {
        return Ok(Some(Lsn(u64::MAX)));
    }
    let rows = connection
        .session()
        .simple_query(&format!("TIMELINE_HISTORY {timeline}"))
        .await?;
    let content = rows
        .first()
        .and_then(|row| row.get(1).cloned().flatten())
        .unwrap_or_default();
    Ok(fork_in_history(&content, ancestor))
}

/// In a timeline history file (`parent_tli<TAB>switchpoint<TAB>reason` per line), where
/// `ancestor` ended.
fn fork_in_history(content: &str, ancestor: u32) -> Option<Lsn> {
    content.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let tli: u32 = fields.next()?.parse().ok()?;
        let switchpoint = fields.next()?.parse().ok()?;
        (tli == ancestor).then_some(switchpoint)
    })
}

/// Whether the slot is a synchronized copy of a primary's (`pg_replication_slots.synced`, which
/// stays true after promotion). Before 17 nothing synchronizes slots: never.
async fn synced(session: &mut Session, slot: &str) -> Result<bool, RelayError> {
    if session.server_version_num() < 170_000 {
        return Ok(false);
    }
    let rows = session
        .query_params_text(
            "SELECT synced FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .is_some_and(|value| value == "t"))
}

/// The error for a slot missing on a promoted standby of the checkpoint's cluster: it did not
/// survive the failover. `None` when the server is not that.
pub(super) fn lost_in_failover(
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: &Checkpoint,
) -> Option<SlotError> {
    (checkpoint.system_id == system.system_id && system.timeline > checkpoint.timeline).then(|| {
        SlotError::LostInFailover {
            slot: config.slot.clone(),
            relay: config.name.clone(),
            checkpoint: checkpoint.lsn,
            from_timeline: checkpoint.timeline,
            timeline: system.timeline,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_where_an_ancestor_timeline_ended() {
        let history = "1\t0/3000060\tno recovery target specified\n\n\
                       2\t0/5A000A0\tno recovery target specified\n";
        assert_eq!(fork_in_history(history, 1), Some(Lsn(0x300_0060)));
        assert_eq!(fork_in_history(history, 2), Some(Lsn(0x5A0_00A0)));
        assert_eq!(fork_in_history(history, 3), None);
        assert_eq!(fork_in_history("", 1), None);
    }
}
