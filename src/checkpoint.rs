//! The resume position: what a relay has published so far, as values.
//!
//! A checkpoint is written in the same Kafka transaction as the events it covers (the store is
//! `sink::offsets`), so "the last committed checkpoint" is exactly "how far the topic holds our
//! events". The replication slot is only a hint that lags behind it (it is confirmed after the
//! Kafka commit), never ahead.
//!
//! This module is a leaf: the checkpoint is the one thing that flows back from the sink to the
//! source, so it depends on nothing but `pg`'s position types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pg::{Lsn, Xid};

pub mod snapshot;

use snapshot::SnapshotCursor;

/// The resume position of one relay (docs/architecture.md), the value of its record in the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// `IDENTIFY_SYSTEM`'s system id: a checkpoint is only valid on the cluster that wrote it.
    pub system_id: String,
    /// The timeline the position is on; a promoted replica has a new one.
    pub timeline: u32,
    /// The replication slot the relay reads.
    pub slot: String,
    /// End LSN of the Commit of the last Postgres transaction included (or the WAL end of an idle
    /// confirmation). Replication resumes here; transactions ending at or before it are skipped.
    pub lsn: Lsn,
    /// Transaction id of the last included transaction; `None` for an idle confirmation.
    pub xid: Option<Xid>,
    /// Commit time of the last included transaction.
    pub commit_ts: Option<DateTime<Utc>>,
    /// Events this relay has published in total, carried from checkpoint to checkpoint.
    pub events: u64,
    /// The snapshot running, if one is: absent from version-1 checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotCursor>,
}

impl Checkpoint {
    /// The format version of a checkpoint without a snapshot: what every earlier outboxd wrote.
    pub const VERSION: u32 = 1;
    /// The format version of a checkpoint with a snapshot cursor: an outboxd that reads version 1
    /// only refuses it rather than dropping the cursor and losing the rest of the snapshot.
    pub const VERSION_WITH_SNAPSHOT: u32 = 2;

    /// Sets the snapshot cursor and the format version it needs.
    pub fn set_snapshot(&mut self, snapshot: Option<SnapshotCursor>) {
        self.version = if snapshot.is_some() {
            Self::VERSION_WITH_SNAPSHOT
        } else {
            Self::VERSION
        };
        self.snapshot = snapshot;
    }
}

/// The resume position of a relay in poll mode (docs/architecture.md, poll mode): the row ids of the last batch it
/// published from `table`. The rows are deleted (or marked) only after this commits, so on start
/// they may still be there: they are deleted first, never published again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollCheckpoint {
    /// Format version, as [`Checkpoint::VERSION`].
    pub version: u32,
    /// Always `"poll"`: what tells it from a logical-mode checkpoint.
    pub mode: String,
    /// The outbox table of the batch, `schema.table`.
    pub table: String,
    /// The batch's row ids, as text of the table's id column.
    pub ids: Vec<String>,
    /// Events this relay has published in total.
    pub events: u64,
}

impl PollCheckpoint {
    /// The `mode` of every poll checkpoint.
    pub const MODE: &'static str = "poll";

    /// The checkpoint of a batch of `ids` from `table`.
    pub fn new(table: impl Into<String>, ids: Vec<String>, events: u64) -> Self {
        Self {
            version: Checkpoint::VERSION,
            mode: Self::MODE.to_owned(),
            table: table.into(),
            ids,
            events,
        }
    }
}

/// A relay's last committed checkpoint, of either mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StoredCheckpoint {
    /// Written by a relay streaming a replication slot.
    Logical(Checkpoint),
    /// Written by a relay polling outbox tables.
    Poll(PollCheckpoint),
}

impl StoredCheckpoint {
    /// Parses a stored checkpoint: one with `"mode": "poll"` is a poll checkpoint, one without a
    /// mode a logical one (the original format, unchanged).
    pub fn from_json(bytes: &[u8]) -> Result<Self, CheckpointError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
            mode: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(CheckpointError::Corrupt)?;
        let known = match probe.mode.as_deref() {
            None | Some("logical") => Checkpoint::VERSION_WITH_SNAPSHOT,
            _ => Checkpoint::VERSION,
        };
        if !(Checkpoint::VERSION..=known).contains(&probe.version) {
            return Err(CheckpointError::UnknownVersion(probe.version));
        }
        match probe.mode.as_deref() {
            None | Some("logical") => serde_json::from_slice(bytes).map(Self::Logical),
            Some(PollCheckpoint::MODE) => serde_json::from_slice(bytes).map(Self::Poll),
            Some(other) => return Err(CheckpointError::UnknownMode(other.to_owned())),
        }
        .map_err(CheckpointError::Corrupt)
    }

    /// The mode that wrote it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Logical(_) => "logical",
            Self::Poll(_) => PollCheckpoint::MODE,
        }
    }

    /// The logical checkpoint, or an error naming the mode that wrote this one: a relay name's
    /// position means nothing to the other mode, and guessing would repeat or skip events.
    pub fn into_logical(self, relay_name: &str) -> Result<Checkpoint, CheckpointError> {
        match self {
            Self::Logical(checkpoint) => Ok(checkpoint),
            other => Err(other.mode_mismatch(relay_name, "logical")),
        }
    }

    /// The poll checkpoint, or an error naming the mode that wrote this one.
    pub fn into_poll(self, relay_name: &str) -> Result<PollCheckpoint, CheckpointError> {
        match self {
            Self::Poll(checkpoint) => Ok(checkpoint),
            other => Err(other.mode_mismatch(relay_name, PollCheckpoint::MODE)),
        }
    }

    fn mode_mismatch(&self, relay_name: &str, wanted: &'static str) -> CheckpointError {
        CheckpointError::ModeMismatch {
            relay: relay_name.to_owned(),
            stored: self.mode(),
            configured: wanted,
        }
    }
}

/// A stored checkpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A stored value is not a checkpoint.
    #[error("stored checkpoint is not valid JSON of the expected shape: {0}")]
    Corrupt(serde_json::Error),
    /// A checkpoint written by a newer outboxd.
    #[error(
        "stored checkpoint has format version {0}; this outboxd reads versions 1 (both modes) and \
         2 (logical mode with a snapshot running): run the outboxd that wrote it"
    )]
    UnknownVersion(u32),
    /// A checkpoint of a mode this outboxd does not know.
    #[error("stored checkpoint has mode {0:?}; this outboxd knows \"logical\" and \"poll\"")]
    UnknownMode(String),
    /// The relay's last checkpoint was written in the other mode.
    #[error(
        "relay {relay:?} last committed a {stored}-mode checkpoint, but runs in {configured} mode \
         now: the position of one mode means nothing to the other, so resuming could repeat or \
         skip events. Switch back to relay.mode = \"{stored}\", or give this mode its own \
         relay.name (after draining: a new name starts from scratch)"
    )]
    ModeMismatch {
        /// The relay name.
        relay: String,
        /// The mode of the stored checkpoint.
        stored: &'static str,
        /// The configured mode.
        configured: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_parses_as_the_mode_that_wrote_it() {
        let logical = br#"{"version":1,"system_id":"1","timeline":1,"slot":"s","lsn":"0/1","xid":null,"commit_ts":null,"events":3}"#;
        let stored = StoredCheckpoint::from_json(logical).expect("logical");
        assert_eq!(stored.mode(), "logical");
        assert_eq!(stored.clone().into_logical("r").expect("logical").events, 3);
        assert!(matches!(
            stored.into_poll("r"),
            Err(CheckpointError::ModeMismatch {
                stored: "logical",
                configured: "poll",
                ..
            })
        ));

        let poll = PollCheckpoint::new("public.outbox", vec!["a".into(), "b".into()], 9);
        let bytes = serde_json::to_vec(&poll).expect("serializes");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"version":1,"mode":"poll","table":"public.outbox",
                "ids":["a","b"],"events":9})
        );
        let stored = StoredCheckpoint::from_json(&bytes).expect("poll checkpoint");
        assert_eq!(stored.clone().into_poll("r").expect("poll"), poll);
        assert!(stored.into_logical("r").is_err());

        let mut with_snapshot: Checkpoint =
            serde_json::from_slice(logical).expect("a version-1 checkpoint");
        assert_eq!(with_snapshot.snapshot, None, "version 1 has no cursor");
        let cursor = SnapshotCursor::new(
            "s".into(),
            snapshot::SnapshotKind::Initial,
            vec![snapshot::TableName {
                schema: "public".into(),
                table: "t".into(),
            }],
        );
        with_snapshot.set_snapshot(Some(cursor.clone()));
        let bytes = serde_json::to_vec(&with_snapshot).expect("serializes");
        let stored = StoredCheckpoint::from_json(&bytes).expect("version 2 reads");
        let read = stored.into_logical("r").expect("logical");
        assert_eq!((read.version, read.snapshot), (2, Some(cursor)));
        with_snapshot.set_snapshot(None);
        let bytes = serde_json::to_vec(&with_snapshot).expect("serializes");
        assert!(
            !String::from_utf8_lossy(&bytes).contains("snapshot"),
            "version 1 again"
        );
        assert_eq!(with_snapshot.version, 1);
        assert!(matches!(
            StoredCheckpoint::from_json(br#"{"version":2,"mode":"poll"}"#),
            Err(CheckpointError::UnknownVersion(2))
        ));

        assert!(matches!(
            StoredCheckpoint::from_json(br#"{"version":1,"mode":"snapshot"}"#),
            Err(CheckpointError::UnknownMode(mode)) if mode == "snapshot"
        ));
    }
}
