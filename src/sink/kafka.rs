//! The transactional Kafka producer: one Kafka transaction at a time, errors sorted by what the
//! relay must do about them.
//!
//! librdkafka's transaction calls block (they wait for the coordinator), so this type is used from
//! the sink's own thread, never from the async runtime.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::Message;

use crate::route::{fingerprint, Record};
use crate::sink::deliveries::DeliveryCount;

/// How to reach the broker: what every Kafka client of outboxd shares. `Debug` hides the values of
/// secret properties.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through as given (security, timeouts, tuning); they override
    /// outboxd's defaults except the ones exactly-once depends on.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let secret = ["password", "secret", "key.pem", "token"]
                    .iter()
                    .any(|word| name.contains(word));
                (
                    name.as_str(),
                    if secret { "<redacted>" } else { value.as_str() },
                )
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaSettings {
    /// Settings for a broker with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// A librdkafka configuration: the pass-through properties over `defaults`, then `bootstrap.servers`.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }
}

/// A Kafka failure, by what the relay does next.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Another instance with the same relay name took over (`init_transactions` with our
    /// transactional id bumped the epoch). Retrying would fence it back: exit instead.
    #[error(
        "fenced: another outboxd with transactional.id {transactional_id:?} took over ({source}); \
         only one relay per name may run"
    )]
    Fenced {
        /// Our transactional id.
        transactional_id: String,
        /// What the broker said.
        source: KafkaError,
    },
    /// The open transaction failed and must be aborted; the relay rewinds to its checkpoint.
    #[error("Kafka transaction must be aborted while {action}: {source}")]
    Abortable {
        /// What the producer was doing.
        action: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The producer cannot be used any more; the relay builds a new one and rewinds.
    #[error("Kafka producer failed fatally while {action}: {source}")]
    Fatal {
        /// What the producer was doing.
        action: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// A transaction call did not finish within `kafka.call_timeout` (broker or coordinator
    /// unreachable). The call is not repeated ([`sort_call`]): the relay builds a new producer and
    /// rewinds.
    #[error("Kafka did not answer while {action} within {timeout:?} (is the broker reachable?): {source}")]
    TimedOut {
        /// What the producer was doing.
        action: &'static str,
        /// How long it waited.
        timeout: Duration,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The call does not fit the producer's transaction state, typically an abort after a failed
    /// call left no transaction librdkafka can abort; the next producer's `init_transactions`
    /// settles it.
    #[error(
        "Kafka producer is in no state for {action} after a failed call (the next start's \
         init_transactions settles the open transaction): {source}"
    )]
    InvalidState {
        /// What the producer was doing.
        action: &'static str,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The record can never be produced as it is (too large, bad topic name, not authorized);
    /// retrying won't help.
    #[error("Kafka refused a record for topic {topic:?}: {source}")]
    Rejected {
        /// The record's topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The configuration is wrong: a property librdkafka refuses, or an unreachable setting.
    #[error("invalid Kafka producer configuration: {0}")]
    Config(KafkaError),
    /// Records went to a topic that does not exist, on a broker that does not create topics
    /// (`auto.create.topics.enable=false`). The relay retries with the topic's records as dead
    /// letters when `kafka.topic_creation.missing_topic = "dead-letter"`, and stops otherwise.
    #[error(
        "topic {topic:?} does not exist and the broker does not create topics ({reason}); \
         create it, or set kafka.topic_creation.enabled = true (the relay creates it), or \
         kafka.topic_creation.missing_topic = \"dead-letter\""
    )]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// What the broker (or librdkafka) said.
        reason: String,
    },
    /// The broker refused records of the open transaction as too large (over their topic's
    /// `max.message.bytes`, which the relay could not read or which changed since): the
    /// transaction must be aborted, and the retry from the checkpoint makes the largest of them a
    /// dead letter (a record refused only because librdkafka batched it with that one goes
    /// through).
    #[error(
        "the broker refused {} record(s) as too large (the largest: {} bytes for topic {:?}); \
         retrying the transaction with that record as a dead letter",
        refused.len(),
        largest(refused).map_or(0, |r| r.bytes),
        largest(refused).map_or("", |r| r.topic.as_str())
    )]
    TooLarge {
        /// The records refused, as their delivery reports named them.
        refused: Vec<Refused>,
    },
    /// `kafka.transaction_timeout` is above the broker's `transaction.max.timeout.ms`: the broker
    /// refuses every producer with it.
    #[error(
        "kafka.transaction_timeout ({configured:?}) is above the broker's \
         transaction.max.timeout.ms ({}): lower kafka.transaction_timeout to at most that (and \
         batch.max_age to a third of it), or raise the broker's transaction.max.timeout.ms",
        broker_max.map_or_else(|| "15 min unless set otherwise".to_owned(), |max| format!("{} ms", max.as_millis()))
    )]
    TransactionTimeout {
        /// `kafka.transaction_timeout`.
        configured: Duration,
        /// The broker's `transaction.max.timeout.ms`, when it could be read.
        broker_max: Option<Duration>,
    },
    /// The transaction stayed open longer than `kafka.transaction_timeout` (one Postgres
    /// transaction too large to publish in that time, or a broker that slowed down), so the
    /// coordinator aborted it. Nothing of it is visible; the relay retries from its checkpoint with a
    /// new producer, which succeeds if the slowness has passed and repeats otherwise.
    #[error(
        "the broker aborted the Kafka transaction after it stayed open for {open_for:?}, longer \
         than kafka.transaction_timeout ({timeout:?}); retrying from the checkpoint. If this \
         repeats, a Postgres transaction is too large to publish in that time: raise \
         kafka.transaction_timeout (the broker caps it at transaction.max.timeout.ms)"
    )]
    TransactionExpired {
        /// How long the transaction had been open when the broker refused it.
        open_for: Duration,
        /// `kafka.transaction_timeout`.
        timeout: Duration,
    },
}

impl SinkError {
    /// Whether a new producer (a new attempt from the checkpoint) can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Abortable { .. }
            | Self::Fatal { .. }
            | Self::TimedOut { .. }
            | Self::InvalidState { .. }
            | Self::TooLarge { .. }
            | Self::UnknownTopic { .. }
            | Self::TransactionExpired { .. } => true,
            Self::Fenced { .. }
            | Self::Rejected { .. }
            | Self::Config(_)
            | Self::TransactionTimeout { .. } => false,
        }
    }

    /// librdkafka's error code, when librdkafka gave one.
    fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Fenced { source, .. }
            | Self::Abortable { source, .. }
            | Self::Fatal { source, .. }
            | Self::TimedOut { source, .. }
            | Self::InvalidState { source, .. }
            | Self::Rejected { source, .. }
            | Self::Config(source) => source.rdkafka_error_code(),
            Self::TooLarge { .. }
            | Self::TransactionTimeout { .. }
            | Self::UnknownTopic { .. }
            | Self::TransactionExpired { .. } => None,
        }
    }

    /// Whether another instance with our transactional id took over.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// Sorts a transaction-call error by [`sort_call`].
    fn from_transaction(
        action: &'static str,
        transactional_id: &str,
        timeout: Duration,
        error: KafkaError,
    ) -> Self {
        let (code, retriable, requires_abort) = match &error {
            KafkaError::Transaction(rd) => (rd.code(), rd.is_retriable(), rd.txn_requires_abort()),
            // rdkafka's commit flushes the queue first: a flush that times out is the commit's
            // timeout.
            KafkaError::Flush(code) => (*code, false, false),
            _ => {
                return Self::Fatal {
                    action,
                    source: error,
                }
            }
        };
        match sort_call(code, retriable, requires_abort) {
            CallOutcome::Fenced => Self::Fenced {
                transactional_id: transactional_id.to_owned(),
                source: error,
            },
            CallOutcome::InvalidState => Self::InvalidState {
                action,
                source: error,
            },
            CallOutcome::TimedOut => Self::TimedOut {
                action,
                timeout,
                source: error,
            },
            CallOutcome::Abortable => Self::Abortable {
                action,
                source: error,
            },
            CallOutcome::Fatal => Self::Fatal {
                action,
                source: error,
            },
        }
    }
}

/// What a failed transaction call (init, begin, commit, abort) leaves the relay to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallOutcome {
    /// A newer producer with our transactional id exists: stop.
    Fenced,
    /// The call does not fit the producer's state: a new producer settles it.
    InvalidState,
    /// The call did not finish in time: what it started may still complete on the broker, so
    /// the producer is not used again, the call not repeated (a new producer's epoch fences it).
    TimedOut,
    /// The transaction must be aborted.
    Abortable,
    /// The producer cannot be used any more.
    Fatal,
}

/// Sorts a failed transaction call by librdkafka's code and flags.
///
/// librdkafka calls a timed-out call retriable and would resume it if called again. outboxd never
/// does: librdkafka does not implement Kafka 4's transaction protocol v2 (KIP-890,
/// confluentinc/librdkafka#5423), and a timed-out commit retried in place can commit twice
/// (KAFKA-18579). Whatever the call, a timeout ends the producer: the relay builds a new one with
/// the same transactional id, whose `init_transactions` bumps the epoch (the broker then refuses
/// the stale producer's requests still in flight) and settles the open transaction, and resumes
/// from the checkpoint that settlement left.
fn sort_call(code: RDKafkaErrorCode, retriable: bool, requires_abort: bool) -> CallOutcome {
    if is_fencing(code) {
        CallOutcome::Fenced
    } else if code == RDKafkaErrorCode::InvalidTransactionalState {
        CallOutcome::InvalidState
    } else if retriable || code == RDKafkaErrorCode::OperationTimedOut {
        CallOutcome::TimedOut
    } else if requires_abort {
        CallOutcome::Abortable
    } else {
        CallOutcome::Fatal
    }
}

/// A record the broker refused as too large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its topic.
    pub topic: String,
    /// Its [`fingerprint`]: the retry recognizes it by this.
    pub fingerprint: u64,
    /// Its key and value bytes.
    pub bytes: usize,
}

/// The largest of `refused`: the one the retry makes a dead letter.
pub fn largest(refused: &[Refused]) -> Option<&Refused> {
    refused.iter().max_by_key(|r| r.bytes)
}

/// The producer's context: remembers the records the broker refused as too large, and the first
/// topic it said does not exist, which only their delivery reports name (the transaction's
/// failure does not say which record it was); and counts the delivery reports served.
#[derive(Debug, Default)]
pub struct RefusalWatch {
    refused: Mutex<Vec<Refused>>,
    /// A topic that does not exist, and the delivery report's error.
    unknown_topic: Mutex<Option<(String, String)>>,
    /// Every delivery report, for a commit waiting on the last one.
    delivered: DeliveryCount,
}

impl RefusalWatch {
    /// Refusals remembered per transaction at most (the largest record is among the first:
    /// librdkafka fails a refused batch's records together).
    const CAPACITY: usize = 10_000;

    /// The refusals since the last call.
    fn take(&self) -> Vec<Refused> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The topic reported missing since the last call.
    fn take_unknown_topic(&self) -> Option<(String, String)> {
        self.unknown_topic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ClientContext for RefusalWatch {}

impl ProducerContext for RefusalWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        self.delivered.served();
        let Err((error, message)) = result else {
            return;
        };
        if error.rdkafka_error_code().is_some_and(is_unknown_topic) {
            self.unknown_topic
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| (message.topic().to_owned(), error.to_string()));
            return;
        }
        let too_large = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
        );
        if !too_large {
            return;
        }
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.len() < Self::CAPACITY {
            refused.push(Refused {
                topic: message.topic().to_owned(),
                fingerprint: fingerprint(message.topic(), message.key(), message.payload()),
                bytes: message.key().map_or(0, <[u8]>::len)
                    + message.payload().map_or(0, <[u8]>::len),
            });
        }
    }
}

/// Error codes meaning "a newer producer with our transactional id exists".
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::TransactionCoordinatorFenced
    )
}

/// Error codes meaning "the topic does not exist" (librdkafka's own once the topic stayed missing
/// for `topic.metadata.propagation.max.ms`, or the broker's).
fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
    )
}

/// Error codes meaning "this record, as it is, will never be accepted" (cf. Vector's Kafka sink):
/// too large, malformed, a topic or partition that cannot exist, or one we may not write to.
fn is_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// Producer settings that exactly-once depends on; pass-through properties cannot change them.
const REQUIRED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// Defaults a pass-through property may override.
const DEFAULTS: &[(&str, &str)] = &[
    // Java's default partitioner for keyed records, so a key lands where a Java producer puts it.
    ("partitioner", "murmur2_random"),
    // Bound the producer's memory: the relay's memory must not grow with a transaction's size.
    ("queue.buffering.max.kbytes", "32768"),
    ("queue.buffering.max.messages", "100000"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
];

/// An idempotent, transactional producer with at most one open transaction.
pub struct TransactionalProducer {
    producer: ThreadedProducer<RefusalWatch>,
    transactional_id: String,
    /// How long a blocking transaction call may wait for the coordinator.
    call_timeout: Duration,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open longer.
    transaction_timeout: Duration,
    /// When the open transaction began, if one is open.
    opened: Option<Instant>,
    /// A transaction call timed out: nothing more is asked of this producer (not even an abort,
    /// which would race the call still pending); the next producer's `init_transactions` settles
    /// the open transaction.
    spent: bool,
    /// Records queued with librdkafka so far: as many delivery reports are owed.
    produced: u64,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .field("in_transaction", &self.in_transaction())
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Creates the producer and runs `init_transactions`, which fences any older instance with the
    /// same id and settles the transaction it left open (aborted, or committed if it got that far).
    pub fn start(
        settings: &KafkaSettings,
        transactional_id: &str,
        transaction_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, SinkError> {
        let mut config = settings.client_config(DEFAULTS);
        for (key, value) in REQUIRED {
            config.set(*key, *value);
        }
        config.set("transactional.id", transactional_id);
        config.set(
            "transaction.timeout.ms",
            transaction_timeout.as_millis().to_string(),
        );
        let producer: ThreadedProducer<RefusalWatch> = config
            .create_with_context(RefusalWatch::default())
            .map_err(SinkError::Config)?;
        let mut this = Self {
            producer,
            transactional_id: transactional_id.to_owned(),
            call_timeout,
            transaction_timeout,
            opened: None,
            spent: false,
            produced: 0,
        };
        this.transact("initializing transactions", |p| {
            p.init_transactions(call_timeout)
        })
        .map_err(|error| {
            // The broker's refusal leaves the producer in librdkafka's fatal state, so the call's
            // own code may be the generic one: its fatal error says what happened.
            let fatal = this.producer.client().fatal_error().map(|(code, _)| code);
            let timeout = Some(RDKafkaErrorCode::InvalidTransactionTimeout);
            if fatal == timeout || error.code() == timeout {
                SinkError::TransactionTimeout {
                    configured: transaction_timeout,
                    broker_max: None,
                }
            } else {
                error
            }
        })?;
        Ok(this)
    }

    /// The transactional id, `outboxd-<relay name>`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.opened.is_some()
    }

    /// Opens a transaction; records produced until commit or abort belong to it.
    pub fn begin(&mut self) -> Result<(), SinkError> {
        // Refusals reported after an earlier transaction ended belong to it.
        self.producer.context().take();
        self.producer.context().take_unknown_topic();
        self.producer.begin_transaction().map_err(|e| {
            self.fatal_state("beginning", &e).unwrap_or_else(|| {
                SinkError::from_transaction(
                    "beginning",
                    &self.transactional_id,
                    self.call_timeout,
                    e,
                )
            })
        })?;
        self.opened = Some(Instant::now());
        Ok(())
    }

    /// Queues one record in the open transaction. When librdkafka's queue is full, waits for it to
    /// drain: this is where back-pressure from the broker reaches the relay.
    pub fn send(&mut self, record: &Record) -> Result<(), SinkError> {
        let headers = record.headers.iter().fold(OwnedHeaders::new(), |hs, h| {
            hs.insert(KafkaHeader {
                key: &h.name,
                value: h.value.as_deref(),
            })
        });
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key);
        }
        if let Some(value) = &record.value {
            base = base.payload(value);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(timestamp) = record.timestamp_ms {
            base = base.timestamp(timestamp);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => {
                    self.produced += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(self.classify_send(&record.topic, error)),
            }
        }
    }

    /// Commits the open transaction: flushes every queued record and waits for the broker. A
    /// record refused as too large fails it with [`SinkError::TooLarge`], naming the records.
    pub fn commit(&mut self) -> Result<(), SinkError> {
        let timeout = self.call_timeout;
        self.await_deliveries(timeout);
        self.refusals()?;
        let committed = self.transact("committing", |p| p.commit_transaction(timeout));
        // The commit's own flush may have served the delivery report that explains its failure.
        self.refusals()?;
        committed?;
        self.opened = None;
        Ok(())
    }

    /// [`SinkError::UnknownTopic`] when a record's topic does not exist, else
    /// [`SinkError::TooLarge`] when the broker refused records as too large.
    fn refusals(&self) -> Result<(), SinkError> {
        let context = self.producer.context();
        if let Some((topic, reason)) = context.take_unknown_topic() {
            return Err(SinkError::UnknownTopic { topic, reason });
        }
        let refused = context.take();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(SinkError::TooLarge { refused })
        }
    }

    /// Waits (up to `timeout`) until every produced record is acknowledged and its delivery report
    /// served by the producer's background thread.
    ///
    /// rdkafka's `commit_transaction` flushes first by polling the producer's queue for up to
    /// 100 ms at a time; with a `ThreadedProducer` the background thread serves that queue, so the
    /// poll sleeps its full 100 ms whenever a record is still in flight. Every commit took >= 100 ms
    /// (measured: 101-108 ms, while librdkafka's commit itself takes ~3 ms). Waiting here in short
    /// steps leaves nothing in flight, so its flush returns at once.
    ///
    /// The wait sleeps until the last delivery report is served (sink::deliveries), asking
    /// librdkafka's count every 10 ms as well; then the short steps cover the moment between
    /// the report's callback and librdkafka's count dropping.
    fn await_deliveries(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.producer.context().delivered.wait_for(
            self.produced,
            deadline,
            Duration::from_millis(10),
            || self.producer.in_flight_count() == 0,
        );
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Aborts the open transaction, if any; its records become invisible to `read_committed`. A
    /// spent producer asks nothing: the next producer's `init_transactions` aborts it.
    pub fn abort(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction() || self.spent {
            return Ok(());
        }
        let timeout = self.call_timeout;
        self.transact("aborting", |p| p.abort_transaction(timeout))?;
        self.opened = None;
        Ok(())
    }

    /// Sorts a failed `send`. A producer in librdkafka's fatal state fails every send with the
    /// generic `Fatal` code; its fatal error says whether another instance fenced it, which must
    /// end the relay (retrying would fence the other one back, forever).
    fn classify_send(&self, topic: &str, error: KafkaError) -> SinkError {
        if let Some(fatal) = self.fatal_state("producing", &error) {
            return fatal;
        }
        match error.rdkafka_error_code() {
            Some(code) if is_unknown_topic(code) => SinkError::UnknownTopic {
                topic: topic.to_owned(),
                reason: error.to_string(),
            },
            Some(code) if is_refusal(code) => SinkError::Rejected {
                topic: topic.to_owned(),
                source: error,
            },
            Some(code) if is_fencing(code) => self.fenced(error),
            _ => SinkError::Abortable {
                action: "producing",
                source: error,
            },
        }
    }

    /// `Fenced` or `Fatal` when the producer is in librdkafka's fatal state, whatever code the
    /// failed call itself reported.
    fn fatal_state(&self, action: &'static str, error: &KafkaError) -> Option<SinkError> {
        let (code, _reason) = self.producer.client().fatal_error()?;
        Some(if is_fencing(code) {
            self.fenced(error.clone())
        } else {
            SinkError::Fatal {
                action,
                source: error.clone(),
            }
        })
    }

    /// Runs a transaction call once, never repeating it: a call that timed out leaves the producer
    /// spent ([`sort_call`] says why), so the relay builds a new one instead.
    fn transact(
        &mut self,
        action: &'static str,
        call: impl Fn(&ThreadedProducer<RefusalWatch>) -> Result<(), KafkaError>,
    ) -> Result<(), SinkError> {
        let error = match call(&self.producer) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let error = self.fatal_state(action, &error).unwrap_or_else(|| {
            SinkError::from_transaction(action, &self.transactional_id, self.call_timeout, error)
        });
        let error = match error {
            SinkError::Fenced { source, .. } => self.fenced(source),
            SinkError::TimedOut { .. } => {
                self.spent = true;
                error
            }
            error => error,
        };
        Err(error)
    }

    /// The broker fenced this producer: [`SinkError::Fenced`], unless the open transaction is older
    /// than `transaction.timeout.ms`. The coordinator aborts such a transaction and bumps the
    /// producer's epoch, which fences it exactly as a newer instance would: that is
    /// [`SinkError::TransactionExpired`], not a takeover.
    fn fenced(&self, source: KafkaError) -> SinkError {
        match self.opened.map(|opened| opened.elapsed()) {
            Some(open_for) if open_for >= self.transaction_timeout => {
                SinkError::TransactionExpired {
                    open_for,
                    timeout: self.transaction_timeout,
                }
            }
            _ => SinkError::Fenced {
                transactional_id: self.transactional_id.clone(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_transaction_call_ends_the_producer_whatever_else_librdkafka_says() {
        use RDKafkaErrorCode as Code;
        // (code, retriable, requires abort) as librdkafka reports them.
        let cases = [
            (
                (Code::OperationTimedOut, true, false),
                CallOutcome::TimedOut,
            ),
            ((Code::OperationTimedOut, true, true), CallOutcome::TimedOut),
            (
                (Code::OperationTimedOut, false, false),
                CallOutcome::TimedOut,
            ),
            (
                (Code::CoordinatorNotAvailable, true, false),
                CallOutcome::TimedOut,
            ),
            ((Code::ProducerFenced, false, false), CallOutcome::Fenced),
            (
                (Code::InvalidProducerEpoch, true, true),
                CallOutcome::Fenced,
            ),
            (
                (Code::InvalidTransactionalState, false, false),
                CallOutcome::InvalidState,
            ),
            ((Code::InvalidMessage, false, true), CallOutcome::Abortable),
            (
                (Code::TransactionalIdAuthorizationFailed, false, false),
                CallOutcome::Fatal,
            ),
        ];
        for ((code, retriable, abort), outcome) in cases {
            assert_eq!(sort_call(code, retriable, abort), outcome, "{code:?}");
        }
    }

    #[test]
    fn a_transaction_call_that_times_out_is_not_repeated() {
        // Nothing listens on port 1: init_transactions times out.
        let settings = KafkaSettings::new("127.0.0.1:1");
        let call_timeout = Duration::from_secs(1);
        let began = Instant::now();
        let error = TransactionalProducer::start(
            &settings,
            "outboxd-timeout-test",
            Duration::from_secs(60),
            call_timeout,
        )
        .expect_err("no broker");
        let took = began.elapsed();
        assert!(
            matches!(
                error,
                SinkError::TimedOut {
                    action: "initializing transactions",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.is_transient(), "a new producer may succeed");
        assert!(
            took < call_timeout * 3,
            "called once, not repeated: took {took:?} for a call timeout of {call_timeout:?}"
        );
    }
}
