//! What one relay runs with, as values: built from the configuration file by `config` (the
//! composition root) and consumed by `relay`. A module of its own so that the settings do not
//! belong to the loop that reads them: config depends on these values, never on the relay.

use std::time::Duration;

mod snapshot;

pub use snapshot::{SnapshotMode, SnapshotSettings};

use crate::pg::wire::ConnectOptions;
use crate::route::Router;
use crate::sink::batch::BatchLimits;
use crate::sink::kafka::KafkaSettings;
use crate::sink::topics::TopicCreation;
use crate::source::poll::PollSettings;

/// `relay.mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Stream a logical replication slot (docs/architecture.md).
    Logical,
    /// Poll outbox tables (docs/architecture.md, poll mode): no REPLICATION needed.
    Poll,
}

impl RelayMode {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logical => "logical",
            Self::Poll => "poll",
        }
    }
}

/// Everything one relay needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Relay name: the checkpoint key and the transactional id `outboxd-<name>`; one running relay
    /// per name.
    pub name: String,
    /// Stream a replication slot, or poll outbox tables.
    pub mode: RelayMode,
    /// How poll mode reads the outbox tables.
    pub poll: PollSettings,
    /// How to reach Postgres (the replication connection also runs the slot checks).
    pub postgres: ConnectOptions,
    /// The logical replication slot.
    pub slot: String,
    /// The publications the slot streams.
    pub publications: Vec<String>,
    /// Create the slot with `FAILOVER` (PostgreSQL 17+), so standbys synchronize it.
    pub failover_slot: bool,
    /// Outbox events, CDC events and dead letters.
    pub router: Router,
    /// How to reach Kafka.
    pub kafka: KafkaSettings,
    /// The compacted topic holding checkpoints.
    pub offsets_topic: String,
    /// Topics the relay creates, and what becomes of records whose topic is missing.
    pub topic_creation: TopicCreation,
    /// When a Kafka transaction closes.
    pub batch: BatchLimits,
    /// The producer's `transaction.timeout.ms`: a transaction older than this is aborted by the broker.
    pub transaction_timeout: Duration,
    /// How long a blocking Kafka call (init, commit, abort, checkpoint read) may take.
    pub kafka_call_timeout: Duration,
    /// Interval of standby status updates, also while the sink back-pressures.
    pub status_interval: Duration,
    /// Minimum interval between idle confirmations (a checkpoint-only Kafka transaction at the
    /// keepalive's WAL end while the slot sees nothing to publish).
    pub idle_confirm_interval: Duration,
    /// How often the server's WAL position is read for the lag metrics and readiness.
    pub wal_poll_interval: Duration,
    /// How long changes may wait with no Kafka commit before the relay counts as stalled
    /// (`crate::progress`).
    pub stall_timeout: Duration,
    /// Inputs buffered between source and sink.
    pub channel_capacity: usize,
    /// First and longest wait between attempts.
    pub backoff: (Duration, Duration),
    /// On the relay's first start (no checkpoint, no slot), publish the rows already in the
    /// outbox tables once (the relay's backfill); `outboxd run --publish-existing-rows`.
    pub publish_existing_rows: bool,
    /// Take the standby lease from the active instance instead of standing by
    /// (`outboxd run --take-over`).
    pub take_over: bool,
    /// How long the server keeps the standby lease of an active it no longer hears from
    /// (`relay.lease_timeout`, `crate::relay::lease`).
    pub lease_timeout: Duration,
    /// Snapshots of the captured CDC tables (`[snapshot]`).
    pub snapshot: SnapshotSettings,
    /// The Schema Registry Avro records' schemas are registered with (`[schema_registry]`).
    pub registry: Option<crate::registry::Registry>,
}

impl RelayConfig {
    /// The producer's transactional id.
    pub fn transactional_id(&self) -> String {
        format!("outboxd-{}", self.name)
    }
}
