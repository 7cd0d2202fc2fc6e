//! The exactly-once relay (docs/architecture.md): source, router and sink joined so that a committed
//! Postgres change reaches a `read_committed` Kafka consumer exactly once.
//!
//! About 600 lines on purpose: the attempt skeleton both modes share sits beside the table of what
//! each error makes the relay do and the `is_transient` decisions that implement that table.
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
//! plain SQL instead, each published with a checkpoint naming its row ids (docs/architecture.md,
//! poll mode); the retries, fencing and shutdown below are the same.
//!
//! # Progress tracking
//! The checkpoint in Kafka is the truth; the slot trails it. The slot is confirmed only with the
//! LSN of a checkpoint the sink has committed, so `confirmed_flush_lsn <= checkpoint` always holds
//! and a restart at the checkpoint can neither skip nor repeat a transaction.
//!
//! # Error handling
//! Each attempt builds everything anew. A transient failure ends the attempt and a new one starts
//! from the checkpoint after a backoff (doubling, reset after a healthy attempt). A definite one
//! ends the relay with the reason (exit status 1; 3 when fenced). [`RelayError`]'s variant is the
//! decision, made where each error type converts into it:
//!
//! | error | relay does |
//! |---|---|
//! | Postgres connection lost, connect timeout, protocol surprise | retry |
//! | Postgres error by SQLSTATE: 08, 40, 53, 55 (not 55000), 57 (fast shutdown 57P01), 58, XX | retry |
//! | Postgres error by SQLSTATE: 28, 3D, 3F, 42, 22, 23, 0A, 55000; authentication, TLS | stop |
//! | the walsender ended the stream | retry (reconnect) |
//! | pgoutput message that does not decode, or out of order | stop (the same WAL fails again) |
//! | poll table without the id column, a NULL id | stop |
//! | `--publish-existing-rows` while the slot captured more than outbox inserts without a checkpoint | stop |
//! | a configured outbox table renamed (or a look-alike while it is missing) | stop |
//! | a table to snapshot without a primary key | stop |
//! | a publication dropped and created again behind the checkpoint (SQLSTATE 42704 naming it) | stop, with the ways out |
//! | slot missing with a checkpoint, WAL lost, wrong plugin, ahead of the checkpoint, moved during start, another cluster | stop |
//! | with `snapshot.mode = "when_needed"`: slot missing, lost in a failover, WAL lost, ahead of the checkpoint | recreate the slot and snapshot again (`relay::when_needed`) |
//! | Kafka transaction abortable, producer fatal, producer in no state to abort | retry with a new producer |
//! | a Kafka transaction call timed out (never repeated in place: [`crate::sink::kafka`]) | retry with a new producer |
//! | a Kafka transaction the broker aborted for being open longer than `kafka.transaction_timeout` | retry with a new producer |
//! | fenced by a newer instance | stop, exit 3 |
//! | `kafka.transaction_timeout` above the broker's `transaction.max.timeout.ms` | stop |
//! | broker's configuration unreadable (no answer) | retry |
//! | a record the broker refuses as too large | retry, that record as a dead letter |
//! | a topic that does not exist and is not created (`kafka.topic_creation`) | stop, naming it; or, with `missing_topic = "dead-letter"`, retry with its records as dead letters |
//! | the dead-letter topic missing and not created | stop |
//! | creating a topic unanswered | retry |
//! | record refused at produce time (invalid, not authorized), producer configuration | stop |
//! | offsets topic unreachable or not read to its end in time | retry |
//! | offsets topic with several partitions or not compacted, checkpoint unreadable or of the other mode | stop |
//! | sink thread not started, runtime stopping | retry |
//! | sink thread or a blocking Kafka call panicked | stop |
//! | Schema Registry unreachable, 5xx, 408, 429 | retry |
//! | Schema Registry refusing a schema (compatibility, invalid), or the credentials | stop, naming the subject |

pub mod backfill;
mod failover;
pub mod lease;
mod logical;
pub mod older_rows;
mod poll;
mod pump;
mod routing;
mod shutdown;
mod snapshot;
mod stall_watch;
pub(crate) mod standby_snapshot;
mod wal_watch;
mod when_needed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointError, StoredCheckpoint};
use crate::metrics::metrics;
use crate::pg::wire::WireError;
use crate::registry::RegistryError;
use crate::route::outbox::identity::OutboxMoved;
use crate::sink::batch::{BatchCheckpoint, SinkThread, SinkThreadError};
use crate::sink::kafka::{KafkaSettings, SinkError, TransactionalProducer};
use crate::sink::limits::{BrokerLimits, LimitsError, TopicLimits, BROKER_GRANT};
use crate::sink::offsets::{OffsetsError, OffsetsTopic};
use crate::sink::topics::{MissingTopic, TopicError, Topics};
use crate::source::logical::SourceError;
use crate::source::poll::PollError;
use backfill::BackfillError;
use routing::{Refusals, Routing};

pub use crate::settings::{RelayConfig, RelayMode};
pub use logical::{missing_publication, SlotError, PUBLICATION_RECREATED_WAYS_OUT};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use snapshot::progress::{estimated_rows, SnapshotProgress};
pub use snapshot::request::{plan, Planned};
pub use snapshot::signal::{Condition, Signal, SignalError, SIGNAL_PREFIX};
pub use snapshot::{SnapshotError, WATERMARK_PREFIX};
pub use stall_watch::{RESUMED, STALLED};

/// How long a stop may take once requested: a graceful stop commits the batch in hand and
/// confirms it, which takes milliseconds. Past this the relay is waiting on an unreachable Kafka
/// or Postgres and stops without it; exactly-once holds (the next start resumes from the last
/// committed checkpoint and settles what was in flight), and the service manager's stop timeout
/// is never reached.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why an attempt ended, sorted by what the relay does next. The only way to build one is through
/// the `From` conversions below, which ask the failure's own exhaustive `is_transient`: a new
/// error cannot skip the decision.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A new attempt from the checkpoint can succeed: retried after a backoff.
    #[error(transparent)]
    Transient(Failure),
    /// Retrying cannot help: the relay stops with the reason.
    #[error(transparent)]
    Definite(Failure),
}

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The Kafka producer.
    #[error(transparent)]
    Sink(SinkError),
    /// Creating, checking or reading the offsets topic.
    #[error(transparent)]
    Offsets(OffsetsError),
    /// Reading the broker's limits.
    #[error(transparent)]
    Limits(LimitsError),
    /// Creating a topic.
    #[error(transparent)]
    Topic(TopicError),
    /// The stored checkpoint cannot be used.
    #[error(transparent)]
    Checkpoint(CheckpointError),
    /// A Postgres connection.
    #[error(transparent)]
    Wire(WireError),
    /// The replication stream.
    #[error(transparent)]
    Source(SourceError),
    /// Poll mode's outbox tables.
    #[error(transparent)]
    Poll(PollError),
    /// The replication slot and the checkpoint disagree, or the slot is unusable.
    #[error(transparent)]
    Slot(SlotError),
    /// The rows older than the slot cannot be published exactly once.
    #[error(transparent)]
    Backfill(BackfillError),
    /// A configured outbox table under another name.
    #[error(transparent)]
    Outbox(OutboxMoved),
    /// A table the snapshot cannot read.
    #[error(transparent)]
    Snapshot(SnapshotError),
    /// The sink thread gave no result.
    #[error(transparent)]
    SinkThread(SinkThreadError),
    /// Registering an Avro schema.
    #[error(transparent)]
    Registry(RegistryError),
    /// A blocking Kafka call (producer start, checkpoint read) ended without a result.
    #[error("a blocking Kafka call {0}")]
    Blocking(&'static str),
    /// The walsender ended the stream (server shutdown, `pg_terminate_backend`, a standby
    /// promoted): a new connection resumes from the checkpoint.
    #[error("the server ended replication (a shutdown or a terminated walsender); reconnecting")]
    StreamEnded,
    /// `postgres.url` reached a standby. Transient: a standby being promoted becomes the primary.
    #[error(
        "postgres.url ({0}) reached a standby (in recovery): the relay streams from the primary \
         only. PostgreSQL 16+ can decode on a standby, but a slot there is no failover slot (it \
         is lost when another standby is promoted) and creating it waits for the primary's next \
         running-transactions record. Point postgres.url at the primary, or list the primary and \
         its standbys with target_session_attrs=read-write so the relay follows a promotion; \
         retrying meanwhile"
    )]
    Standby(String),
}

impl RelayError {
    fn sorted(transient: bool, failure: Failure) -> Self {
        if transient {
            Self::Transient(failure)
        } else {
            Self::Definite(failure)
        }
    }

    /// Whether a new attempt can succeed: definite errors end the relay.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// What failed.
    pub fn failure(&self) -> &Failure {
        match self {
            Self::Transient(failure) | Self::Definite(failure) => failure,
        }
    }

    /// Whether another instance with this relay name took over (exit status 3: restarting
    /// would fence it back).
    pub fn is_fenced(&self) -> bool {
        matches!(self.failure(), Failure::Sink(error) if error.is_fenced())
    }
}

impl From<SinkError> for RelayError {
    fn from(error: SinkError) -> Self {
        Self::sorted(error.is_transient(), Failure::Sink(error))
    }
}

impl From<OffsetsError> for RelayError {
    fn from(error: OffsetsError) -> Self {
        Self::sorted(error.is_transient(), Failure::Offsets(error))
    }
}

impl From<LimitsError> for RelayError {
    fn from(error: LimitsError) -> Self {
        Self::sorted(error.is_transient(), Failure::Limits(error))
    }
}

impl From<TopicError> for RelayError {
    fn from(error: TopicError) -> Self {
        Self::sorted(error.is_transient(), Failure::Topic(error))
    }
}

impl From<CheckpointError> for RelayError {
    /// A stored checkpoint reads the same on every attempt.
    fn from(error: CheckpointError) -> Self {
        Self::Definite(Failure::Checkpoint(error))
    }
}

impl From<WireError> for RelayError {
    fn from(error: WireError) -> Self {
        Self::sorted(error.is_transient(), Failure::Wire(error))
    }
}

impl From<SourceError> for RelayError {
    fn from(error: SourceError) -> Self {
        Self::sorted(error.is_transient(), Failure::Source(error))
    }
}

impl From<PollError> for RelayError {
    fn from(error: PollError) -> Self {
        Self::sorted(error.is_transient(), Failure::Poll(error))
    }
}

impl From<SlotError> for RelayError {
    /// Each slot problem would skip or repeat events if the relay went on; none passes by itself.
    fn from(error: SlotError) -> Self {
        Self::Definite(Failure::Slot(error))
    }
}

impl From<BackfillError> for RelayError {
    /// What the slot captured stays captured until the operator decides.
    fn from(error: BackfillError) -> Self {
        Self::Definite(Failure::Backfill(error))
    }
}

impl From<OutboxMoved> for RelayError {
    /// The same WAL shows the same rename on every attempt; only the configuration can change.
    fn from(error: OutboxMoved) -> Self {
        Self::Definite(Failure::Outbox(error))
    }
}

impl From<SnapshotError> for RelayError {
    /// The table is the same on every attempt; only it or the configuration can change.
    fn from(error: SnapshotError) -> Self {
        Self::Definite(Failure::Snapshot(error))
    }
}

impl From<RegistryError> for RelayError {
    fn from(error: RegistryError) -> Self {
        Self::sorted(error.is_transient(), Failure::Registry(error))
    }
}

impl From<SinkThreadError> for RelayError {
    fn from(error: SinkThreadError) -> Self {
        Self::sorted(error.is_transient(), Failure::SinkThread(error))
    }
}

/// The wait before the next attempt: doubling from `first` up to `longest`, and back to `first`
/// after a healthy attempt, so a relay that ran well for hours and then meets a blip retries
/// quickly, not after the longest wait its earlier faults built up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    fn new((first, longest): (Duration, Duration)) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The wait after an attempt that failed having run for `ran`: an attempt that ran at least
    /// the longest wait was healthy (retrying it at once cannot spin faster than once per
    /// `longest`).
    fn after(&mut self, ran: Duration) -> Duration {
        if ran >= self.longest {
            self.next = self.first;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }
}

/// Runs the relay until shutdown is requested (returns `Ok` once the last complete batch is
/// committed and confirmed, or after [`STOP_GRACE`] if Kafka or Postgres keep it from that) or a
/// definite error (returns it). Transient errors restart from the checkpoint after a [`Backoff`].
/// Only while this instance holds the standby lease ([`lease`]): until then, and again after
/// losing it, the instance stands by.
pub async fn run(config: RelayConfig, shutdown: Shutdown) -> Result<(), RelayError> {
    let mut take_over = config.take_over;
    loop {
        let acquired = lease::acquire(&config, &shutdown, std::mem::take(&mut take_over)).await?;
        let Some(lease) = acquired else {
            return Ok(());
        };
        // The lease is proven from a task of its own: polled beside the relay in one task, a
        // busy stream (a million-row transaction on a loaded machine) starved it past the
        // server's idle_session_timeout, and the active instance lost its own lease.
        let lease = Arc::new(lease);
        let mut holder = tokio::spawn({
            let lease = Arc::clone(&lease);
            async move { lease.hold().await }
        });
        tokio::select! {
            result = run_active(&config, &shutdown, &lease) => {
                holder.abort();
                return result;
            }
            reason = &mut holder => {
                let reason = reason
                    .unwrap_or_else(|error| format!("the lease's keepalive task failed: {error}"));
                metrics().set_streaming(false);
                tracing::warn!(reason = %reason, "{}", lease::LOST);
            }
        }
    }
}

/// [`run`] while holding the lease: attempt after attempt, each proving first that the lease is
/// still held, so that an instance that lost it never fences its successor.
async fn run_active(
    config: &RelayConfig,
    shutdown: &Shutdown,
    lease: &lease::Lease,
) -> Result<(), RelayError> {
    let mut backoff = Backoff::new(config.backoff);
    let mut refusals = Refusals::default();
    let relay = async {
        loop {
            let began = Instant::now();
            let attempt = async {
                lease.check().await?;
                match config.mode {
                    RelayMode::Logical => logical::attempt(config, shutdown, &refusals).await,
                    RelayMode::Poll => poll::attempt(config, shutdown, &refusals).await,
                }
            };
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                () = overdue(shutdown) => {
                    tracing::warn!(
                        grace = ?STOP_GRACE,
                        "stopping without finishing the attempt: it is still waiting on Kafka or \
                         PostgreSQL; the next start resumes from the last committed checkpoint"
                    );
                    return Ok(());
                }
            };
            metrics().set_streaming(false);
            let retry_in = match outcome {
                Ok(()) => return Ok(()),
                Err(RelayError::Transient(failure)) if shutdown.is_requested() => {
                    tracing::warn!(error = %failure, "relay attempt failed while stopping");
                    return Ok(());
                }
                Err(RelayError::Transient(failure)) => {
                    match &failure {
                        Failure::Sink(SinkError::TooLarge { refused }) => refusals.add(refused),
                        Failure::Sink(SinkError::UnknownTopic { topic, reason }) => {
                            let dead_letter = config.topic_creation.missing_topic
                                == MissingTopic::DeadLetter
                                && *topic != config.router.dead_letters().topic();
                            if !dead_letter {
                                return Err(RelayError::Definite(failure));
                            }
                            refusals.add_missing_topic(topic, reason);
                        }
                        _ => {}
                    }
                    let retry_in = backoff.after(began.elapsed());
                    tracing::warn!(error = %failure, ?retry_in, "relay attempt failed; resuming from the checkpoint");
                    metrics().reconnects.inc();
                    retry_in
                }
                Err(definite) => return Err(definite),
            };
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                () = shutdown.requested() => return Ok(()),
            }
        }
    };
    // Poll mode has no slot and no WAL position to watch.
    let watching = config.mode == RelayMode::Logical;
    tokio::select! {
        result = relay => result,
        never = wal_watch::watch(config), if watching => match never {},
        never = stall_watch::watch(config.stall_timeout) => match never {},
    }
}

/// Completes [`STOP_GRACE`] after the stop was requested.
async fn overdue(shutdown: &Shutdown) {
    shutdown.requested().await;
    tokio::time::sleep(STOP_GRACE).await;
}

/// The first step of an attempt in either mode: a transactional producer whose
/// `init_transactions` fenced any older instance of this relay name and settled its last
/// transaction (a `kafka.transaction_timeout` above the broker's maximum stops the relay here,
/// naming both), the offsets topic, created if missing, and the broker's limits.
///
/// The producer goes first: what is wrong with the connection (credentials, TLS) reaches the log
/// through its calls, while an admin request only times out.
async fn fence(config: &RelayConfig, refusals: &Refusals) -> Result<Fenced, RelayError> {
    // A topic's limit is read while the pump routes, when no status update goes out: a broker
    // that does not answer soon leaves the topic at the default limit instead.
    let topic_timeout = config.kafka_call_timeout.min(Duration::from_secs(10));
    let max_record_bytes = config.router.max_record_bytes();
    // Batches stay within the limits of the topics that refused a record before.
    let mut batch = None;
    if !refusals.topics.is_empty() {
        let mut refusing = TopicLimits::new(
            &config.kafka,
            max_record_bytes,
            BrokerLimits::default(),
            topic_timeout,
        );
        for topic in &refusals.topics {
            let limit = refusing.learn(topic).await;
            batch = Some(batch.map_or(limit, |bytes: usize| bytes.min(limit)));
        }
    }
    let started = {
        let (kafka, id) = (producer_settings(config, batch), config.transactional_id());
        let (txn_timeout, call_timeout) = (config.transaction_timeout, config.kafka_call_timeout);
        blocking(move || TransactionalProducer::start(&kafka, &id, txn_timeout, call_timeout))
            .await?
    };
    let producer = match started {
        Ok(producer) => producer,
        Err(SinkError::TransactionTimeout { configured, .. }) => {
            // Name the broker's maximum too, when it can be read.
            let (kafka, timeout) = (config.kafka.clone(), config.kafka_call_timeout);
            let broker = blocking(move || BrokerLimits::read(&kafka, timeout)).await?;
            return Err(SinkError::TransactionTimeout {
                configured,
                broker_max: broker.ok().and_then(|b| b.transaction_max_timeout),
            }
            .into());
        }
        Err(error) => return Err(error.into()),
    };
    let offsets = OffsetsTopic::new(config.kafka.clone(), &config.offsets_topic);
    // Two admin clients' round trips, independent of each other: at once, which shortens every
    // start by the shorter one (~0.15 s against a local broker).
    let broker = {
        let (kafka, timeout) = (config.kafka.clone(), config.kafka_call_timeout);
        blocking(move || BrokerLimits::read(&kafka, timeout))
    };
    let (ensured, broker) = tokio::join!(offsets.ensure(), broker);
    ensured?;
    let broker = broker??;
    if broker.message_max_bytes.is_none() {
        tracing::warn!(
            "cannot read the broker's message.max.bytes; records are held to \
             kafka.max_record_bytes and the topics' limits; to read it, {BROKER_GRANT}"
        );
    }
    let limits = TopicLimits::new(&config.kafka, max_record_bytes, broker, topic_timeout);
    let topics = Topics::new(
        &config.kafka,
        config.topic_creation.clone(),
        config.kafka_call_timeout,
    )
    .map_err(SinkError::Config)?;
    Ok(Fenced {
        producer,
        offsets,
        routing: Routing::new(limits, topics, refusals.clone(), config.registry.clone()),
    })
}

/// What [`fence`] hands the rest of an attempt.
#[derive(Debug)]
struct Fenced {
    /// The producer whose `init_transactions` fenced older instances.
    producer: TransactionalProducer,
    /// Where the checkpoint is read from.
    offsets: OffsetsTopic,
    /// Topic limits, the records refused before, the dead-letter log.
    routing: Routing,
}

/// The producer's settings: librdkafka batches records of a partition into one request of up to
/// `batch.size` bytes (1,000,000 by default, within the broker's default limit), and a topic
/// refuses a batch over its limit whole, small records included; so after a refusal, unless set
/// in `[kafka.properties]`, batches stay within `max` bytes.
fn producer_settings(config: &RelayConfig, max: Option<usize>) -> KafkaSettings {
    let mut kafka = config.kafka.clone();
    if let Some(max) = max {
        // At most librdkafka's default, with room for the request's framing under the limit.
        let batch = max.saturating_sub(1024).clamp(1024, 1_000_000);
        kafka
            .properties
            .entry("batch.size".into())
            .or_insert_with(|| batch.to_string());
    }
    kafka
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
    tokio::task::spawn_blocking(call).await.map_err(|error| {
        if error.is_panic() {
            RelayError::Definite(Failure::Blocking("panicked"))
        } else {
            RelayError::Transient(Failure::Blocking("was cancelled"))
        }
    })
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

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::*;
    use crate::pg::pgoutput::DecodeError;
    use crate::pg::wire::ServerError;
    use crate::pg::Lsn;

    fn server(code: &str) -> RelayError {
        WireError::Server(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        })
        .into()
    }

    #[test]
    fn postgres_errors_are_sorted_by_sqlstate() {
        for code in ["57P01", "08006", "53300", "55006", "40001", "XX000"] {
            assert!(server(code).is_transient(), "{code} is transient");
        }
        for code in ["28P01", "42704", "42501", "3D000", "55000", "0A000"] {
            assert!(!server(code).is_transient(), "{code} is definite");
        }
        let closed = WireError::Io {
            target: "h:5432".into(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        };
        assert!(RelayError::from(closed).is_transient());
        let auth = WireError::Auth {
            user: "u".into(),
            reason: "r".into(),
        };
        assert!(!RelayError::from(auth).is_transient());
    }

    #[test]
    fn kafka_errors_are_sorted_by_what_retrying_can_change() {
        let rejected = RelayError::from(SinkError::Rejected {
            topic: "t".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        });
        assert!(
            !rejected.is_transient(),
            "a refused record is refused again"
        );
        let fenced = RelayError::from(SinkError::Fenced {
            transactional_id: "outboxd-r".into(),
            source: KafkaError::Canceled,
        });
        assert!(!fenced.is_transient() && fenced.is_fenced());
        let timeout = RelayError::from(SinkError::TransactionTimeout {
            configured: Duration::from_secs(1200),
            broker_max: Some(Duration::from_secs(900)),
        });
        assert!(!timeout.is_transient(), "the broker refuses it every time");
        assert!(timeout.to_string().contains("900000 ms"), "{timeout}");
        let refused = RelayError::from(SinkError::TooLarge {
            refused: Vec::new(),
        });
        assert!(
            refused.is_transient(),
            "retried with the record as a dead letter"
        );
        for error in [
            SinkError::Abortable {
                action: "producing",
                source: KafkaError::Canceled,
            },
            SinkError::TimedOut {
                action: "committing",
                timeout: Duration::from_secs(4),
                source: KafkaError::Canceled,
            },
            SinkError::InvalidState {
                action: "aborting",
                source: KafkaError::Canceled,
            },
        ] {
            let error = RelayError::from(error);
            assert!(error.is_transient() && !error.is_fenced(), "{error}");
        }
        let wide = RelayError::from(OffsetsError::Partitioned {
            topic: "o".into(),
            partitions: 3,
        });
        assert!(!wide.is_transient());
    }

    #[test]
    fn what_the_same_input_fails_again_on_is_definite() {
        let decode = RelayError::from(SourceError::Decode {
            lsn: Lsn(1),
            source: DecodeError::UnexpectedEnd {
                message: "Insert",
                field: "tuple",
            },
        });
        assert!(!decode.is_transient());
        let null_id = RelayError::from(PollError::NullId {
            table: "public.outbox".into(),
            column: "id".into(),
        });
        assert!(!null_id.is_transient());
        assert!(null_id.to_string().contains("NOT NULL"), "{null_id}");
        let panicked = RelayError::from(SinkThreadError::Panicked("boom".into()));
        assert!(!panicked.is_transient());
        assert!(
            panicked.to_string().contains("panicked: boom"),
            "{panicked}"
        );
        let spawn = RelayError::from(SinkThreadError::Spawn(std::io::ErrorKind::Other.into()));
        assert!(spawn.to_string().contains("could not start"), "{spawn}");
    }

    #[test]
    fn backoff_doubles_and_resets_after_a_healthy_attempt() {
        let (first, longest) = (Duration::from_millis(200), Duration::from_secs(30));
        let mut backoff = Backoff::new((first, longest));
        let quick = Duration::from_millis(10);
        let waits: Vec<_> = (0..10).map(|_| backoff.after(quick)).collect();
        assert_eq!(waits[..3], [first, first * 2, first * 4]);
        assert_eq!(waits[9], longest, "capped");
        assert_eq!(backoff.after(longest), first, "a healthy attempt resets it");
        assert_eq!(backoff.after(quick), first * 2);
    }
}
