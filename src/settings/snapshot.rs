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
