//! The exactly-once relay (DESIGN.md §4): source, router and sink joined so that a committed
//! Postgres change reaches a `read_committed` Kafka consumer exactly once.
//!
//! ```text
//!  ┌──────────── attempt ───────────────────────────────────────────────────────────┐
//!  │ init_transactions ─> read checkpoint L ─> check slot ─> START_REPLICATION at L │
//!  │                                                                                │
//!  │ LogicalSource ─events─> pump (skip ≤ L, route) ─SinkInput─> sink thread        │
//!  │       ^                                                          │ Kafka commit│
//!  │       └──── standby status: flush = committed checkpoint <───────┘             │
//!  └────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! In poll mode (`relay.mode = "poll"`, `relay::poll`) an attempt claims batches of outbox rows with
//! plain SQL instead, each published with a checkpoint naming its row ids (DESIGN.md §5); the
//! retries, fencing and shutdown below are the same.
//!
//! # Progress tracking
//! The checkpoint in Kafka is the truth; the slot trails it. The slot is confirmed only with the
//! LSN of a checkpoint the sink has committed, so `confirmed_flush_lsn <= checkpoint` always holds
//! and a restart at the checkpoint can neither skip nor repeat a transaction.
//!
//! # Error handling
//! Each attempt builds everything anew. A transient failure (connection lost, abortable Kafka
//! transaction, producer failure) ends the attempt and a new one starts from the checkpoint after a
//! backoff. A definite one (fenced by another instance, slot lost or ahead of the checkpoint,
//! another cluster) ends the relay with the reason.

mod logical;
mod poll;
mod pump;
mod wal_watch;

use std::future::Future;
use std::time::Duration;

use crate::checkpoint::{CheckpointError, StoredCheckpoint};
use crate::config::RelayMode;
use crate::metrics::metrics;
use crate::pg::wire::{ConnectOptions, WireError};
use crate::route::Router;
use crate::sink::batch::{BatchCheckpoint, BatchLimits, SinkThread, SinkThreadError};
use crate::sink::kafka::{KafkaSettings, SinkError, TransactionalProducer};
use crate::sink::offsets::{OffsetsError, OffsetsTopic};
use crate::source::logical::SourceError;
use crate::source::poll::PollSettings;

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
    /// Outbox events, CDC events and dead letters.
    pub router: Router,
    /// How to reach Kafka.
    pub kafka: KafkaSettings,
    /// The compacted topic holding checkpoints.
    pub offsets_topic: String,
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
    /// Inputs buffered between source and sink.
    pub channel_capacity: usize,
    /// First and longest wait between attempts.
    pub backoff: (Duration, Duration),
}

impl RelayConfig {
    /// The producer's transactional id.
    pub fn transactional_id(&self) -> String {
        format!("outboxd-{}", self.name)
    }
}

/// Why an attempt ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Kafka side.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The stored checkpoint cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Creating, checking or reading the offsets topic.
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    /// The replication connection.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The replication stream.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The slot and the checkpoint disagree in a way that would lose or repeat events.
    #[error("{0}")]
    Inconsistent(String),
    /// The replication slot is gone or its WAL was removed.
    #[error("{0}")]
    SlotLost(String),
    /// The sink thread gave no result.
    #[error(transparent)]
    SinkThread(#[from] SinkThreadError),
    /// The sink thread died without saying why.
    #[error("the Kafka sink thread panicked")]
    SinkPanicked,
}

impl RelayError {
    /// Whether a new attempt can succeed: definite errors end the relay.
    pub fn is_transient(&self) -> bool {
        match self {
            RelayError::Sink(SinkError::Fenced { .. } | SinkError::Config(_)) => false,
            RelayError::Sink(_) | RelayError::Wire(_) | RelayError::Source(_) => true,
            RelayError::Offsets(e) => {
                matches!(e, OffsetsError::Kafka { .. } | OffsetsError::Timeout { .. })
            }
            RelayError::Checkpoint(_) => false,
            RelayError::Inconsistent(_)
            | RelayError::SlotLost(_)
            | RelayError::SinkThread(_)
            | RelayError::SinkPanicked => false,
        }
    }
}

/// Runs the relay until `shutdown` completes (returns `Ok` once the last complete batch is committed
/// and confirmed) or a definite error (returns it). Transient errors restart from the checkpoint
/// after a backoff that doubles up to its maximum.
pub async fn run(
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let (first, longest) = config.backoff;
    let mut backoff = first;
    let relay = async {
        loop {
            let attempt = match config.mode {
                RelayMode::Logical => logical::attempt(&config, shutdown.as_mut()).await,
                RelayMode::Poll => poll::attempt(&config, shutdown.as_mut()).await,
            };
            metrics().set_streaming(false);
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) if error.is_transient() => {
                    tracing::warn!(error = %error, retry_in = ?backoff, "relay attempt failed; resuming from the checkpoint");
                    metrics().reconnects.inc();
                }
                Err(error) => return Err(error),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.as_mut() => return Ok(()),
            }
            backoff = (backoff * 2).min(longest);
        }
    };
    // Poll mode has no slot and no WAL position to watch.
    let watching = config.mode == RelayMode::Logical;
    tokio::select! {
        result = relay => result,
        never = wal_watch::watch(&config), if watching => match never {},
    }
}

/// The first step of an attempt in either mode: a transactional producer whose
/// `init_transactions` fenced any older instance of this relay name and settled its last
/// transaction, and the offsets topic, created if missing.
async fn fence(config: &RelayConfig) -> Result<(TransactionalProducer, OffsetsTopic), RelayError> {
    let producer = {
        let (kafka, id) = (config.kafka.clone(), config.transactional_id());
        let (txn_timeout, call_timeout) = (config.transaction_timeout, config.kafka_call_timeout);
        blocking(move || TransactionalProducer::start(&kafka, &id, txn_timeout, call_timeout))
            .await??
    };
    let offsets = OffsetsTopic::new(config.kafka.clone(), &config.offsets_topic);
    offsets.ensure().await?;
    Ok((producer, offsets))
}

/// The relay's last committed checkpoint, of either mode. Final once [`fence`] settled our last
/// transaction (and, in poll mode, the relay's lock is held).
async fn read_checkpoint(
    config: &RelayConfig,
    offsets: OffsetsTopic,
) -> Result<Option<StoredCheckpoint>, RelayError> {
    let (name, timeout) = (config.name.clone(), config.kafka_call_timeout);
    Ok(blocking(move || offsets.read_last(&name, timeout)).await??)
}

/// Runs a blocking Kafka call off the async runtime.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RelayError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|_| RelayError::SinkPanicked)
}

/// Ends an attempt's sink thread once the source side stopped with `outcome`, and returns the last
/// checkpoint it committed. The sink's error comes first: it explains a source side that stopped
/// because the sink's channel closed.
async fn finish_sink<C: BatchCheckpoint>(
    outcome: Result<(), RelayError>,
    sink: SinkThread<C>,
) -> Result<Option<C>, RelayError> {
    let (result, last) = sink.finish().await?;
    match (outcome, result) {
        (_, Err(sink_error)) => Err(sink_error.into()),
        (Err(error), Ok(())) => Err(error),
        (Ok(()), Ok(())) => Ok(last),
    }
}
