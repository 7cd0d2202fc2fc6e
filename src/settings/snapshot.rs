//! `[snapshot]` as values: whether and how the relay snapshots the captured tables.

use crate::checkpoint::snapshot::TableName;

/// `snapshot.mode`, named as Debezium's `snapshot.mode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Stream only (`never`, `no_data`): rows older than the slot are not published.
    Never,
    /// On the relay's first start (no checkpoint yet), read every captured CDC table, then
    /// stream; the stream flows during the snapshot (`relay::snapshot`).
    Initial,
    /// As `Initial`, then stop cleanly (exit status 0) once the snapshot is complete, instead of
    /// streaming on. The changes streamed during the snapshot are published with it: the reads
    /// they overtake rely on them.
    InitialOnly,
    /// As `Initial`, and again whenever the slot cannot continue the checkpoint (dropped, lost
    /// in a failover before PostgreSQL 17, its WAL removed, or confirmed past the checkpoint):
    /// the slot is recreated and the captured tables are read again (`relay::when_needed`).
    WhenNeeded,
}

impl SnapshotMode {
    /// Whether a relay's first start (no checkpoint yet) snapshots the captured tables.
    pub fn on_first_start(self) -> bool {
        self != Self::Never
    }

    /// The name as written in `[snapshot] mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Initial => "initial",
            Self::InitialOnly => "initial_only",
            Self::WhenNeeded => "when_needed",
        }
    }
}

/// How the relay snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// When a snapshot runs.
    pub mode: SnapshotMode,
    /// Rows read at a time: the memory a snapshot holds, and how long a chunk's window lasts.
    pub chunk_size: usize,
    /// Debezium's signal table (`signal.data.collection`): a row inserted into it is a snapshot
    /// signal (`relay::snapshot::signal`). `None`: no signal table.
    pub signal_table: Option<TableName>,
    /// Whether logical messages with the prefix `outboxd.signal` (what `outboxd snapshot` sends)
    /// are snapshot signals.
    pub signal_messages: bool,
}

impl SnapshotSettings {
    /// The largest `chunk_size`: a chunk is held in memory while its window is open.
    pub const MAX_CHUNK_SIZE: usize = 100_000;
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::Never,
            chunk_size: 2048,
            signal_table: None,
            signal_messages: true,
        }
    }
}
