//! Batching: many Postgres transactions into one Kafka transaction, closed only at a Postgres
//! commit boundary, together with the checkpoint that covers them.
//!
//! ```text
//! input:   R R R End(cp1) R End(cp2) R R R R ... End(cp3)      (R = record, End = Postgres commit)
//! kafka:   begin R R R     R          R R R R ...  cp3 commit  -> committed(cp3)
//! ```
//!
//! A Kafka transaction closes at a boundary when a limit is reached (events, bytes, age) or, once it
//! is `linger` old, when no input is waiting — under a backlog batches grow to the limits; when
//! caught up, a steady stream is committed every `linger` (like Kafka's `linger.ms`, counted from
//! the batch's start, so a stream with no pauses still commits), and the next batch gathers what
//! arrived during the commit (group commit).
//! Records are handed to the producer as they arrive: a Postgres transaction is never held in memory.
//!
//! Both modes publish through this one writer on its own thread ([`SinkThread`]): logical mode
//! with a checkpoint per Postgres commit ([`Checkpoint`]), poll mode with one per claimed batch
//! ([`PollCheckpoint`]) and limits that close the Kafka transaction at every boundary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, PollCheckpoint};
use crate::metrics::{metrics, Reached};
use crate::pg::Lsn;
use crate::route::Record;
use crate::sink::handoff::{self, Handoff, Parcel};
use crate::sink::kafka::{SinkError, TransactionalProducer};
use crate::sink::offsets::checkpoint_record;

/// What the source hands the sink, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkInput<C = Checkpoint> {
    /// A record of the Postgres transaction in progress.
    Record(Record),
    /// The Postgres transaction ended (or, without records before it, the slot moved while idle):
    /// the sink may commit here, with this checkpoint.
    Boundary(C),
}

/// A checkpoint that can close a Kafka transaction: what the batcher needs of either mode's.
pub trait BatchCheckpoint: Serialize + Clone + Send + Sync + 'static {
    /// Sets the total of events published, the batch's included.
    fn set_events(&mut self, events: u64);
    /// Commit time of the Postgres transaction it ends, for the end-to-end latency.
    fn commit_time(&self) -> Option<DateTime<Utc>>;
    /// Its WAL position, for the metrics (`None` in poll mode, which has none).
    fn lsn(&self) -> Option<Lsn>;
}

impl BatchCheckpoint for Checkpoint {
    fn set_events(&mut self, events: u64) {
        self.events = events;
    }
    fn commit_time(&self) -> Option<DateTime<Utc>> {
        self.commit_ts
    }
    fn lsn(&self) -> Option<Lsn> {
        Some(self.lsn)
    }
}

impl BatchCheckpoint for PollCheckpoint {
    fn set_events(&mut self, events: u64) {
        self.events = events;
    }
    fn commit_time(&self) -> Option<DateTime<Utc>> {
        None
    }
    fn lsn(&self) -> Option<Lsn> {
        None
    }
}

/// When a Kafka transaction must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Events (records, not counting the checkpoint) after which the batch closes at the next boundary.
    pub max_events: u64,
    /// Record bytes after which the batch closes at the next boundary.
    pub max_bytes: u64,
    /// How long a batch stays open for more input at a boundary, counted from the batch's start.
    pub linger: Duration,
    /// Age after which the batch closes at the next boundary; keep it well under the producer's
    /// `transaction.timeout.ms`, which aborts older transactions.
    pub max_age: Duration,
}

impl BatchLimits {
    /// Every boundary closes the Kafka transaction (poll mode: a claimed batch is one Kafka
    /// transaction, and its rows stay claimed until it commits).
    pub const EACH_BOUNDARY: Self = Self {
        max_events: 0,
        max_bytes: 0,
        linger: Duration::ZERO,
        max_age: Duration::ZERO,
    };
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_events: 50_000,
            max_bytes: 64 * 1024 * 1024,
            linger: Duration::from_millis(5),
            max_age: Duration::from_secs(60),
        }
    }
}

/// The transaction operations batching needs; [`TransactionalProducer`] in production.
pub trait TransactionSink {
    /// Opens a transaction.
    fn begin(&mut self) -> Result<(), SinkError>;
    /// Adds a record to the open transaction.
    fn send(&mut self, record: &Record) -> Result<(), SinkError>;
    /// Commits the open transaction.
    fn commit(&mut self) -> Result<(), SinkError>;
    /// Aborts the open transaction.
    fn abort(&mut self) -> Result<(), SinkError>;
}

impl TransactionSink for TransactionalProducer {
    fn begin(&mut self) -> Result<(), SinkError> {
        TransactionalProducer::begin(self)
    }
    fn send(&mut self, record: &Record) -> Result<(), SinkError> {
        TransactionalProducer::send(self, record)
    }
    fn commit(&mut self) -> Result<(), SinkError> {
        TransactionalProducer::commit(self)
    }
    fn abort(&mut self) -> Result<(), SinkError> {
        TransactionalProducer::abort(self)
    }
}

/// What a Kafka transaction holds, tallied as records go in and reported once it committed.
#[derive(Debug)]
pub struct BatchTally {
    started: Instant,
    events: u64,
    bytes: u64,
    /// Records and bytes per topic, for the metrics once committed.
    topics: HashMap<String, (u64, u64)>,
    /// Commit times of the Postgres transactions with records in this batch (at most one per
    /// event, so bounded by the batch limits), for the end-to-end latency once committed.
    commit_times: Vec<DateTime<Utc>>,
}

impl BatchTally {
    /// An empty tally, its age counted from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            events: 0,
            bytes: 0,
            topics: HashMap::new(),
            commit_times: Vec::new(),
        }
    }

    /// Counts a record (not the checkpoint).
    pub fn add(&mut self, record: &Record) {
        let size = record.size() as u64;
        self.events += 1;
        self.bytes += size;
        match self.topics.get_mut(&record.topic) {
            Some((count, bytes)) => {
                *count += 1;
                *bytes += size;
            }
            None => {
                self.topics.insert(record.topic.clone(), (1, size));
            }
        }
    }

    /// Events counted.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Tells the metrics what this batch published, once its transaction committed with a
    /// checkpoint at `lsn` (`None` in poll mode, which has no LSN).
    pub fn report(&self, lsn: Option<Lsn>) {
        let metrics = metrics();
        metrics.committed(&self.topics, lsn);
        let now = Utc::now();
        for committed in &self.commit_times {
            let latency = (now - *committed).to_std().unwrap_or_default();
            metrics.end_to_end_latency.observe(latency.as_secs_f64());
        }
    }
}

impl Default for BatchTally {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns the source's input into Kafka transactions, each ending with its checkpoint record.
#[derive(Debug)]
pub struct Batcher<S, C = Checkpoint> {
    sink: S,
    limits: BatchLimits,
    offsets_topic: String,
    relay_name: String,
    /// The open Kafka transaction, if any.
    open: Option<BatchTally>,
    /// Whether records arrived since the last boundary (a Postgres transaction is in progress).
    mid_transaction: bool,
    /// The checkpoint of the last boundary in the open batch: what a commit now would cover.
    covered: Option<C>,
    /// Events published in total, carried in every checkpoint.
    total_events: u64,
}

impl<S: TransactionSink, C: BatchCheckpoint> Batcher<S, C> {
    /// A batcher over `sink`, continuing the event count of the last committed checkpoint.
    pub fn new(
        sink: S,
        limits: BatchLimits,
        offsets_topic: impl Into<String>,
        relay_name: impl Into<String>,
        total_events: u64,
    ) -> Self {
        Self {
            sink,
            limits,
            offsets_topic: offsets_topic.into(),
            relay_name: relay_name.into(),
            open: None,
            mid_transaction: false,
            covered: None,
            total_events,
        }
    }

    /// Takes one input; returns the checkpoint if this input led to a commit.
    pub fn accept(&mut self, input: SinkInput<C>) -> Result<Option<C>, SinkError> {
        match input {
            SinkInput::Record(record) => {
                self.ensure_open()?.add(&record);
                self.mid_transaction = true;
                self.sink.send(&record)?;
                Ok(None)
            }
            SinkInput::Boundary(checkpoint) => {
                let had_records = std::mem::take(&mut self.mid_transaction);
                let limits = self.limits;
                let batch = self.ensure_open()?;
                if let Some(committed) = checkpoint.commit_time().filter(|_| had_records) {
                    metrics().reached(Reached::Produced, committed);
                    batch.commit_times.push(committed);
                }
                let full = batch.events >= limits.max_events
                    || batch.bytes >= limits.max_bytes
                    || batch.started.elapsed() >= limits.max_age;
                self.covered = Some(checkpoint);
                if full {
                    self.commit().map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// How long to wait for input before [`Batcher::idle`]: what is left of `linger` since the
    /// batch began (zero once it is that old: input already waiting is still taken first). `None`
    /// waits indefinitely (nothing to commit, or a Postgres transaction is in progress and only its
    /// end may close the batch).
    pub fn wait_limit(&self) -> Option<Duration> {
        let open = self.open.as_ref().filter(|_| !self.mid_transaction)?;
        Some(self.limits.linger.saturating_sub(open.started.elapsed()))
    }

    /// No input arrived within [`Batcher::wait_limit`]: commit at the boundary.
    pub fn idle(&mut self) -> Result<Option<C>, SinkError> {
        if self.open.is_some() && !self.mid_transaction {
            self.commit().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The input ended (graceful stop): commit what is complete, abort a Postgres transaction cut
    /// in the middle. Returns the checkpoint if it committed.
    pub fn finish(&mut self) -> Result<Option<C>, SinkError> {
        if self.mid_transaction {
            self.abort()?;
            return Ok(None);
        }
        self.idle()
    }

    /// Aborts the open transaction, if any (after an error, before the relay rewinds).
    pub fn abort(&mut self) -> Result<(), SinkError> {
        if self.open.take().is_some() {
            self.mid_transaction = false;
            self.covered = None;
            metrics().aborted();
            self.sink.abort()?;
        }
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<&mut BatchTally, SinkError> {
        if self.open.is_none() {
            self.sink.begin()?;
        }
        Ok(self.open.get_or_insert_with(BatchTally::new))
    }

    /// Produces the checkpoint of the last boundary into the open transaction and commits it.
    fn commit(&mut self) -> Result<C, SinkError> {
        let batch = self.open.take().expect("commit only with an open batch");
        let mut checkpoint = self
            .covered
            .take()
            .expect("commit only at a boundary, which sets the checkpoint");
        let events = self.total_events + batch.events;
        checkpoint.set_events(events);
        self.sink.send(&checkpoint_record(
            &self.offsets_topic,
            &self.relay_name,
            &checkpoint,
        ))?;
        // The paused-broker test stops the broker here, with events in the open transaction.
        if batch.events > 0 {
            fail::fail_point!("before-kafka-commit");
        }
        let committing = Instant::now();
        self.sink.commit()?;
        tracing::debug!(
            events = batch.events,
            bytes = batch.bytes,
            age_ms = batch.started.elapsed().as_millis(),
            commit_ms = committing.elapsed().as_millis(),
            lsn = checkpoint.lsn().map(tracing::field::display),
            "committed a Kafka transaction"
        );
        batch.report(checkpoint.lsn());
        // Crash tests widen the window between the Kafka commit and what follows it (the slot's
        // confirmation, poll mode's Postgres commit) here.
        fail::fail_point!("after-kafka-commit");
        self.total_events = events;
        Ok(checkpoint)
    }
}

/// Runs the sink on the calling (dedicated) thread until the input closes or an error occurs,
/// publishing each committed checkpoint on `committed`. The blocking Kafka calls stay off the async
/// runtime; `runtime` only serves to wait on the channel with a timeout.
pub fn run_blocking<S: TransactionSink, C: BatchCheckpoint>(
    batcher: &mut Batcher<S, C>,
    mut input: mpsc::Receiver<Parcel<C>>,
    committed: &watch::Sender<Option<C>>,
    runtime: &Handle,
) -> Result<(), SinkError> {
    let publish = |checkpoint: Option<C>| {
        if let Some(checkpoint) = checkpoint {
            committed.send_replace(Some(checkpoint));
        }
    };
    let result = loop {
        // Input already waiting is taken as it is: waiting through the runtime costs a timer
        // registration (which may wake the runtime's driver) per input, and the relay's profile
        // under a backlog is dominated by such thread wake-ups (bench/README.md, issue 21).
        let next = match input.try_recv() {
            Ok(item) => Some(Some(item)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => match batcher.wait_limit() {
                Some(limit) => {
                    runtime.block_on(async { tokio::time::timeout(limit, input.recv()).await.ok() })
                }
                None => Some(runtime.block_on(input.recv())),
            },
        };
        let step = match next {
            Some(Some(parcel)) => parcel
                .into_iter()
                .try_for_each(|item| batcher.accept(item).map(publish)),
            Some(None) => break batcher.finish().map(publish),
            None => batcher.idle().map(publish),
        };
        if let Err(error) = step {
            break Err(error);
        }
    };
    if result.is_err() {
        // Best effort: a fenced or fatal producer cannot abort; the next init_transactions will.
        if let Err(error) = batcher.abort() {
            tracing::debug!(error = %error, "abort after a sink error failed");
        }
    }
    result
}

/// The sink's dedicated thread (librdkafka's transaction calls block, so they stay off the async
/// runtime): a [`Batcher`] fed through a bounded channel, publishing each committed checkpoint on
/// a watch channel.
#[derive(Debug)]
pub struct SinkThread<C> {
    /// Where the source hands its input, in parcels (sink::handoff). Bounded: a slow broker
    /// back-pressures the source.
    pub input: Handoff<C>,
    /// The last checkpoint committed; closed once the thread has ended (its result says why).
    pub committed: watch::Receiver<Option<C>>,
    thread: std::thread::JoinHandle<Result<(), SinkError>>,
}

/// Why the sink thread gave no result of its own.
#[derive(Debug, thiserror::Error)]
pub enum SinkThreadError {
    /// The OS refused a new thread.
    #[error("could not start the Kafka sink thread: {0}")]
    Spawn(std::io::Error),
    /// The thread panicked (a bug, or a crash test's failpoint).
    #[error("the Kafka sink thread panicked: {0}")]
    Panicked(String),
    /// The runtime shut down while waiting for the thread.
    #[error("the runtime shut down while waiting for the Kafka sink thread")]
    Abandoned,
}

impl SinkThreadError {
    /// Whether a new attempt can succeed: a thread refused by the OS may be granted later; a
    /// panic is a bug that would repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Spawn(_) | Self::Abandoned => true,
            Self::Panicked(_) => false,
        }
    }
}

impl<C: BatchCheckpoint> SinkThread<C> {
    /// Starts the thread over `batcher`, with `capacity` inputs of room in the channel.
    pub fn spawn<S: TransactionSink + Send + 'static>(
        mut batcher: Batcher<S, C>,
        capacity: usize,
    ) -> Result<Self, SinkThreadError> {
        let (input, input_rx) = handoff::channel(capacity);
        let (committed_tx, committed) = watch::channel(None);
        let runtime = Handle::current();
        let thread = std::thread::Builder::new()
            .name("outboxd-sink".into())
            .spawn(move || run_blocking(&mut batcher, input_rx, &committed_tx, &runtime))
            .map_err(SinkThreadError::Spawn)?;
        Ok(Self {
            input,
            committed,
            thread,
        })
    }

    /// Hands over what is gathered and closes the input (the thread commits what is complete and
    /// aborts a cut Postgres transaction), then waits for the thread off the runtime. Returns its
    /// result and the last checkpoint it committed.
    pub async fn finish(self) -> Result<(Result<(), SinkError>, Option<C>), SinkThreadError> {
        let Self {
            mut input,
            committed,
            thread,
        } = self;
        // Every input sent before reaches the sink, as if sent one by one (a thread that ended
        // refuses it: its result says why).
        input.hand_over().await;
        drop(input);
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| SinkThreadError::Abandoned)?
            .map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                SinkThreadError::Panicked(message)
            })?;
        let last = committed.borrow().clone();
        Ok((result, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets, in order.
    #[derive(Debug, Default)]
    struct Recorder(Vec<String>);

    impl TransactionSink for Recorder {
        fn begin(&mut self) -> Result<(), SinkError> {
            self.0.push("begin".into());
            Ok(())
        }
        fn send(&mut self, record: &Record) -> Result<(), SinkError> {
            self.0.push(format!("send {}", record.topic));
            Ok(())
        }
        fn commit(&mut self) -> Result<(), SinkError> {
            self.0.push("commit".into());
            Ok(())
        }
        fn abort(&mut self) -> Result<(), SinkError> {
            self.0.push("abort".into());
            Ok(())
        }
    }

    fn record() -> SinkInput {
        SinkInput::Record(Record {
            topic: "t".into(),
            partition: None,
            key: None,
            value: Some(vec![0u8; 10].into()),
            headers: Vec::new(),
            timestamp_ms: None,
        })
    }

    fn boundary(lsn: u64) -> SinkInput {
        SinkInput::Boundary(Checkpoint {
            version: 1,
            system_id: "1".into(),
            timeline: 1,
            slot: "s".into(),
            lsn: Lsn(lsn),
            xid: None,
            commit_ts: None,
            events: 0,
            snapshot: None,
        })
    }

    fn batcher(max_events: u64) -> Batcher<Recorder> {
        let limits = BatchLimits {
            max_events,
            ..BatchLimits::default()
        };
        Batcher::new(Recorder::default(), limits, "offsets", "relay", 7)
    }

    #[test]
    fn commits_at_the_boundary_after_the_limit_with_the_last_checkpoint() {
        let mut b = batcher(3);
        for input in [record(), record(), boundary(10), record(), record()] {
            assert_eq!(b.accept(input).expect("accept"), None);
        }
        assert_eq!(
            b.wait_limit(),
            None,
            "mid-transaction: only its end may close"
        );
        let committed = b.accept(boundary(20)).expect("accept").expect("committed");
        assert_eq!((committed.lsn, committed.events), (Lsn(20), 7 + 4));
        assert_eq!(
            b.sink.0,
            [
                "begin",
                "send t",
                "send t",
                "send t",
                "send t",
                "send offsets",
                "commit"
            ]
        );
    }

    #[test]
    fn idle_commits_only_at_a_boundary() {
        let mut b = batcher(100);
        b.accept(record()).expect("accept");
        assert_eq!(b.idle().expect("idle"), None);
        b.accept(boundary(5)).expect("accept");
        let wait = b.wait_limit().expect("a batch open at a boundary waits");
        assert!(wait <= BatchLimits::default().linger, "{wait:?}");
        assert_eq!(b.idle().expect("idle").map(|c| c.lsn), Some(Lsn(5)));
        assert_eq!(b.wait_limit(), None, "nothing open after the commit");
    }

    #[test]
    fn a_lone_boundary_commits_a_checkpoint_only_transaction() {
        let mut b = batcher(100);
        b.accept(boundary(9)).expect("accept");
        let committed = b.idle().expect("idle").expect("committed");
        assert_eq!((committed.lsn, committed.events), (Lsn(9), 7));
        assert_eq!(b.sink.0, ["begin", "send offsets", "commit"]);
    }

    #[test]
    fn finish_aborts_a_cut_transaction_and_commits_a_complete_one() {
        let mut b = batcher(100);
        b.accept(record()).expect("accept");
        b.accept(boundary(5)).expect("accept");
        b.accept(record()).expect("accept");
        assert_eq!(b.finish().expect("finish"), None);
        assert_eq!(b.sink.0.last().map(String::as_str), Some("abort"));

        let mut b = batcher(100);
        b.accept(record()).expect("accept");
        b.accept(boundary(5)).expect("accept");
        assert_eq!(b.finish().expect("finish").map(|c| c.lsn), Some(Lsn(5)));
    }
}
