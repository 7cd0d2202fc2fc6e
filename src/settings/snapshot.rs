//! `[snapshot]` as values: whether and how the relay snapshots the captured tables.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// When a snapshot runs.
    pub mode: SnapshotMode,
    /// Rows read at a time: the memory a snapshot holds, and how long a chunk's window lasts.
    pub chunk_size: usize,
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
        }
    }
}
