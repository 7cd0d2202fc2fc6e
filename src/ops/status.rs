//! `outboxd status`: where the relay stands, from the two places that know: the replication slot
//! on the server and the last committed checkpoint in Kafka.

mod pending;

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::{first_row, read_checkpoint};
use crate::checkpoint::StoredCheckpoint;
use crate::pg::sql::quote_identifier;
use crate::pg::wire::Session;
use crate::pg::Lsn;
use crate::relay::lease::{holders, LeaseHolders};
use crate::relay::{estimated_rows, RelayConfig, RelayMode, SnapshotProgress};
use crate::settings::SnapshotMode;
use crate::source::poll::AfterPublish;
pub use pending::PendingCheckpoint;

/// The relay's position.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Relay name.
    pub relay: String,
    /// `logical` or `poll`.
    pub mode: &'static str,
    /// Slot name.
    pub slot: String,
    /// The server's current WAL position.
    pub server_lsn: Lsn,
    /// The slot, if it exists.
    pub slot_state: Option<SlotState>,
    /// The last checkpoint committed to Kafka, if any.
    pub checkpoint: Option<StoredCheckpoint>,
    /// The checkpoint could not be read: an open Kafka transaction holds it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_pending: Option<PendingCheckpoint>,
    /// Poll mode: rows waiting to be published, per outbox table.
    pub backlog: Vec<TableBacklog>,
    /// Logical mode: the slot does not exist although a checkpoint does: it was dropped or
    /// invalidated, the changes since the checkpoint are gone, and `run` refuses to start.
    pub slot_lost: bool,
    /// WAL bytes between the checkpoint (or, without one, the slot's confirmed position) and the
    /// server's position.
    pub lag_bytes: Option<u64>,
    /// The instances of this relay name: the active one and those standing by.
    pub instances: LeaseHolders,
    /// Logical mode: the snapshot the checkpoint says is running, with its estimated end.
    pub snapshot: Option<SnapshotProgress>,
    /// `snapshot.mode = "when_needed"`: a lost slot is recreated and the tables snapshotted again.
    #[serde(skip)]
    pub when_needed: bool,
}

/// The longest `status` waits for Kafka, so that a broker that is down shows in seconds.
const KAFKA_LIMIT: Duration = Duration::from_secs(10);

/// Rows of one outbox table waiting for poll mode.
#[derive(Debug, Clone, Serialize)]
pub struct TableBacklog {
    /// `schema.table`.
    pub table: String,
    /// Unpublished rows.
    pub rows: u64,
}

/// `pg_replication_slots` for the slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotState {
    /// Whether a process streams it now.
    pub active: bool,
    /// Oldest WAL the slot keeps.
    pub restart_lsn: Option<Lsn>,
    /// What the relay confirmed (trails the checkpoint).
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// WAL bytes the slot keeps on the server.
    pub retained_wal_bytes: Option<u64>,
}

impl Status {
    /// As one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("status serializes")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "relay          {} ({} mode)", self.relay, self.mode)?;
        writeln!(f, "server WAL     {}", self.server_lsn)?;
        match &self.instances.active {
            Some(active) => writeln!(f, "active         {active}")?,
            None => writeln!(f, "active         none (no instance holds the lease)")?,
        }
        for standby in &self.instances.standing_by {
            writeln!(f, "standing by    {standby}")?;
        }
        for table in &self.backlog {
            writeln!(
                f,
                "outbox         {} ({} rows to publish)",
                table.table, table.rows
            )?;
        }
        match &self.slot_state {
            None if self.mode == RelayMode::Poll.as_str() => {}
            None if self.slot_lost && self.when_needed => writeln!(
                f,
                "slot           {} DOES NOT EXIST, but a checkpoint does: the slot was dropped or \
                 invalidated; with snapshot.mode = \"when_needed\" run recreates it and \
                 snapshots the captured tables again (outbox events written meanwhile are lost)",
                self.slot
            )?,
            None if self.slot_lost => writeln!(
                f,
                "slot           {} DOES NOT EXIST, but a checkpoint does: the slot was dropped or \
                 invalidated and the changes since the checkpoint are gone; run refuses to start \
                 (to start over on purpose, use a new relay name)",
                self.slot
            )?,
            None => writeln!(
                f,
                "slot           {} (does not exist yet; run creates it)",
                self.slot
            )?,
            Some(slot) => {
                let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
                writeln!(
                    f,
                    "slot           {} ({}, wal_status {})",
                    self.slot,
                    if slot.active { "active" } else { "inactive" },
                    slot.wal_status.as_deref().unwrap_or("-")
                )?;
                writeln!(f, "  confirmed    {}", lsn(slot.confirmed_flush_lsn))?;
                writeln!(f, "  restart      {}", lsn(slot.restart_lsn))?;
                if let Some(bytes) = slot.retained_wal_bytes {
                    writeln!(f, "  retained WAL {bytes} bytes")?;
                }
            }
        }
        match &self.checkpoint {
            None if self.checkpoint_pending.is_some() => {}
            None => writeln!(f, "checkpoint     none committed yet")?,
            Some(StoredCheckpoint::Poll(checkpoint)) => writeln!(
                f,
                "checkpoint     a batch of {} row(s) from {} ({} events in total)",
                checkpoint.ids.len(),
                checkpoint.table,
                checkpoint.events
            )?,
            Some(StoredCheckpoint::Logical(checkpoint)) => writeln!(
                f,
                "checkpoint     {} (xid {}, committed {}, {} events in total)",
                checkpoint.lsn,
                checkpoint
                    .xid
                    .map_or_else(|| "-".to_owned(), |x| x.to_string()),
                checkpoint
                    .commit_ts
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
                checkpoint.events
            )?,
        }
        if let Some(pending) = &self.checkpoint_pending {
            writeln!(f, "checkpoint     {pending}")?;
        }
        if let Some(snapshot) = &self.snapshot {
            writeln!(f, "snapshot       {snapshot}")?;
        }
        if let Some(lag) = self.lag_bytes {
            writeln!(f, "lag            {lag} bytes of WAL")?;
        }
        Ok(())
    }
}

/// Reads the slot and the checkpoint.
pub async fn read(relay: &RelayConfig) -> anyhow::Result<Status> {
    let mut session = Session::connect(&relay.postgres)
        .await
        .context("connecting to Postgres")?;
    let server = first_row(
        &mut session,
        "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                 ELSE pg_current_wal_lsn() END)::text",
        &[],
    )
    .await?
    .and_then(|row| row.into_iter().next().flatten())
    .context("the server reported no WAL position")?;
    let server_lsn: Lsn = server
        .parse()
        .map_err(|_| anyhow::anyhow!("unexpected WAL position {server:?}"))?;
    let instances = holders(&mut session, &relay.name)
        .await
        .context("reading the standby lease")?;
    let poll = relay.mode == RelayMode::Poll;
    let slot = if poll {
        None
    } else {
        first_row(
            &mut session,
            "SELECT active::text, restart_lsn::text, confirmed_flush_lsn::text, wal_status \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&relay.slot],
        )
        .await?
    };
    let slot_state = slot.map(|row| {
        let text = |i: usize| row.get(i).cloned().flatten();
        let lsn = |i: usize| text(i).and_then(|t| t.parse::<Lsn>().ok());
        SlotState {
            active: text(0).as_deref() == Some("true"),
            restart_lsn: lsn(1),
            confirmed_flush_lsn: lsn(2),
            wal_status: text(3),
            retained_wal_bytes: lsn(1).map(|r| server_lsn.0.saturating_sub(r.0)),
        }
    });
    let reader = relay.clone();
    let limit = relay.kafka_call_timeout.min(KAFKA_LIMIT);
    let (checkpoint, checkpoint_pending) =
        match tokio::task::spawn_blocking(move || read_checkpoint(&reader, limit))
            .await
            .context("reading the checkpoint")?
        {
            Ok(checkpoint) => (checkpoint, None),
            Err(error) => match PendingCheckpoint::from_error(&error, relay.transaction_timeout) {
                Some(pending) => (None, Some(pending)),
                None => return Err(error.context("reading the checkpoint from Kafka")),
            },
        };
    let position = match &checkpoint {
        Some(StoredCheckpoint::Logical(checkpoint)) => Some(checkpoint.lsn),
        Some(StoredCheckpoint::Poll(_)) => None,
        None => slot_state.as_ref().and_then(|s| s.confirmed_flush_lsn),
    };
    let mut backlog = Vec::new();
    for table in relay.poll.tables.iter().filter(|_| poll) {
        let unpublished = match &relay.poll.after_publish {
            AfterPublish::Delete => String::new(),
            AfterPublish::Mark { column } => format!(" WHERE {} IS NULL", quote_identifier(column)),
        };
        let rows = first_row(
            &mut session,
            &format!(
                "SELECT count(*)::text FROM {}{unpublished}",
                table.sql_name()
            ),
            &[],
        )
        .await
        .with_context(|| format!("counting the rows of {}", table.qualified()))?
        .and_then(|row| row.into_iter().next().flatten())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
        backlog.push(TableBacklog {
            table: table.qualified(),
            rows,
        });
    }
    let slot_lost =
        !poll && slot_state.is_none() && matches!(checkpoint, Some(StoredCheckpoint::Logical(_)));
    let snapshot = match &checkpoint {
        Some(StoredCheckpoint::Logical(checkpoint)) => match &checkpoint.snapshot {
            Some(cursor) => {
                let estimate = estimated_rows(&mut session, &cursor.tables)
                    .await
                    .context("estimating the rows of the snapshot's tables")?;
                Some(SnapshotProgress::new(cursor, estimate, chrono::Utc::now()))
            }
            None => None,
        },
        _ => None,
    };
    Ok(Status {
        relay: relay.name.clone(),
        mode: relay.mode.as_str(),
        backlog,
        slot: relay.slot.clone(),
        server_lsn,
        slot_state,
        checkpoint,
        checkpoint_pending,
        slot_lost,
        snapshot,
        when_needed: relay.snapshot.mode == SnapshotMode::WhenNeeded,
        lag_bytes: position
            .filter(|_| !poll)
            .map(|p| server_lsn.0.saturating_sub(p.0)),
        instances,
    })
}
