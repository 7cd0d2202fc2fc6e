//! One attempt of the relay in poll mode (DESIGN.md §5): fence, take the relay's lock, read the
//! checkpoint, settle the rows it names, then claim, publish and commit batch after batch.
//!
//! ```text
//! init_transactions ─> lock ─> read checkpoint C ─> delete C's ids ─> loop:
//!   BEGIN; claim N rows ─> route ─> Kafka txn: records + checkpoint(ids) ─> Kafka commit ─> COMMIT
//! ```
//!
//! Polling adapts: a full batch is followed by the next at once; after a partial or empty one the
//! relay waits — with the notify trigger, until a notification or `poll.interval`; without it,
//! `poll.min_interval` doubling up to `poll.interval` while the outbox stays empty.

use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;

use crate::checkpoint::PollCheckpoint;
use crate::metrics::metrics;
use crate::pg::schema::Schema;
use crate::pg::{Lsn, PgTimestamp};
use crate::route::{Record, RouteContext};
use crate::sink::batch::BatchTally;
use crate::sink::kafka::{SinkError, TransactionalProducer};
use crate::sink::offsets::checkpoint_record;
use crate::source::poll::{Batch, PollSource};
use crate::source::Change;

use super::start::{blocking, fence};
use super::{RelayConfig, RelayError};

/// Runs one attempt; `Ok` when `shutdown` completed and the relay stopped cleanly.
pub(super) async fn attempt(
    config: &RelayConfig,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), RelayError> {
    let (producer, offsets) = fence(config).await?;

    let mut source = PollSource::connect(&config.postgres, &config.poll).await?;
    // After init_transactions: an instance fenced by it lets go of the lock once it notices.
    tokio::select! {
        locked = source.lock(&config.name) => locked?,
        () = shutdown.as_mut() => return Ok(()),
    }
    // Under the lock nobody else publishes for this name: the checkpoint read now is final.
    let checkpoint = {
        let (name, timeout) = (config.name.clone(), config.kafka_call_timeout);
        blocking(move || offsets.read_last(&name, timeout))
            .await??
            .map(|stored| stored.into_poll(&config.name))
            .transpose()?
    };
    if let Some(checkpoint) = &checkpoint {
        let settled = source.settle(checkpoint).await?;
        tracing::info!(
            table = %checkpoint.table,
            ids = checkpoint.ids.len(),
            settled,
            "took away the rows of the last committed checkpoint"
        );
    }
    let listening = source.listen().await?;
    metrics().set_postgres_reachable(true);
    metrics().set_streaming(true);
    tracing::info!(
        relay = %config.name,
        tables = config.poll.tables.len(),
        notify = listening,
        "starting to poll"
    );
    crate::service::ready(&format!(
        "polling {} outbox table(s)",
        config.poll.tables.len()
    ));

    let mut poller = Poller {
        config,
        source,
        producer: Some(producer),
        schema: Schema::default(),
        events: checkpoint.map_or(0, |c| c.events),
        dead_letters: 0,
    };
    let outcome = poller.run(shutdown, listening).await;
    if poller.dead_letters > 0 {
        tracing::warn!(
            dead_letters = poller.dead_letters,
            "rows went to the dead-letter topic during this run"
        );
    }
    outcome
}

/// The poll loop's state.
struct Poller<'a> {
    config: &'a RelayConfig,
    source: PollSource,
    /// Taken while a blocking Kafka call runs on another thread; `None` after it failed there.
    producer: Option<TransactionalProducer>,
    schema: Schema,
    /// Events published in total, carried in every checkpoint.
    events: u64,
    /// Rows turned into dead letters during this attempt.
    dead_letters: u64,
}

impl std::fmt::Debug for Poller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Poller<'_> {
    /// Polls until shutdown. A batch in progress is always finished: shutdown is only taken
    /// between batches and while waiting.
    async fn run(
        &mut self,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        listening: bool,
    ) -> Result<(), RelayError> {
        let poll = &self.config.poll;
        let mut delay = poll.min_interval;
        loop {
            let mut found = false;
            let mut full = false;
            for index in 0..poll.tables.len() {
                let rows = self.batch(index).await?;
                found |= rows > 0;
                full |= rows >= poll.batch_size;
            }
            if shutdown.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            if full {
                continue;
            }
            delay = if listening {
                poll.interval
            } else if found {
                poll.min_interval
            } else {
                (delay * 2).min(poll.interval)
            };
            tokio::select! {
                woken = self.source.wait(delay) => { woken?; }
                () = shutdown.as_mut() => return Ok(()),
            }
        }
    }

    /// Claims, publishes and commits one batch of table `index`; returns its row count.
    async fn batch(&mut self, index: usize) -> Result<usize, RelayError> {
        let batch = self.source.claim(index, &mut self.schema).await?;
        let rows = batch.rows.len();
        if rows == 0 {
            self.source.rollback().await?;
            return Ok(0);
        }
        let records = self.route(&batch);
        let table = self.config.poll.tables[index].qualified();
        let checkpoint = PollCheckpoint::new(table, batch.ids, self.events + rows as u64);
        let checkpoint_record =
            checkpoint_record(&self.config.offsets_topic, &self.config.name, &checkpoint);
        let mut producer = self.producer.take().ok_or(RelayError::SinkPanicked)?;
        let (producer, published) = blocking(move || {
            let published = publish(&mut producer, &records, &checkpoint_record);
            (producer, published)
        })
        .await?;
        self.producer = Some(producer);
        let tally = match published {
            Ok(tally) => tally,
            Err(error) => {
                // Not in Kafka (or undecided until the next init_transactions): the rows stay.
                if let Err(rollback) = self.source.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a Kafka failure failed");
                }
                return Err(error.into());
            }
        };
        tally.report(None);
        // Crash tests widen the window between the Kafka commit and the Postgres commit here.
        fail::fail_point!("after-kafka-commit");
        self.source.commit().await?;
        self.events = checkpoint.events;
        tracing::debug!(rows, events = self.events, "published a batch");
        Ok(rows)
    }

    /// The records of a batch's rows, dead letters included.
    fn route(&mut self, batch: &Batch) -> Vec<Record> {
        let context = RouteContext {
            schema: &self.schema,
            xid: None,
            commit_ts: PgTimestamp::now(),
            lsn: None,
            last_commit_lsn: Lsn::ZERO,
        };
        let mut records = Vec::with_capacity(batch.rows.len());
        for row in &batch.rows {
            let change = Change::Insert {
                relation: batch.relation.clone(),
                new: row.clone(),
            };
            self.dead_letters +=
                u64::from(self.config.router.route(&change, &context, &mut records));
        }
        records
    }
}

/// One Kafka transaction: the records, then the checkpoint, then the commit (blocking). On
/// failure the transaction is aborted as far as the producer still can.
fn publish(
    producer: &mut TransactionalProducer,
    records: &[Record],
    checkpoint: &Record,
) -> Result<BatchTally, SinkError> {
    let mut tally = BatchTally::new();
    let attempt = (|| {
        producer.begin()?;
        for record in records {
            tally.add(record);
            producer.send(record)?;
        }
        producer.send(checkpoint)?;
        producer.commit()
    })();
    match attempt {
        Ok(()) => Ok(tally),
        Err(error) => {
            metrics().aborted();
            if let Err(abort) = producer.abort() {
                tracing::debug!(error = %abort, "abort after a Kafka failure failed");
            }
            Err(error)
        }
    }
}
