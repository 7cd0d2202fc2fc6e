//! One attempt of the relay in poll mode (docs/architecture.md, poll mode): fence, take the relay's lock, read the
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

use crate::checkpoint::PollCheckpoint;
use crate::metrics::metrics;
use crate::pg::schema::Schema;
use crate::pg::{Lsn, PgTimestamp};
use crate::progress::Owed;
use crate::route::{Record, RouteContext};
use crate::sink::batch::{BatchLimits, Batcher, SinkInput, SinkThread};
use crate::source::poll::{Batch, PollSource};
use crate::source::Change;

use super::routing::{Refusals, Routing};
use super::{fence, finish_sink, read_checkpoint, Fenced, RelayConfig, RelayError, Shutdown};

/// Runs one attempt; `Ok` when shutdown was requested and the relay stopped cleanly.
pub(super) async fn attempt(
    config: &RelayConfig,
    shutdown: &Shutdown,
    refusals: &Refusals,
) -> Result<(), RelayError> {
    let Fenced {
        producer,
        offsets,
        routing,
    } = fence(config, refusals).await?;

    let mut source = PollSource::connect(&config.postgres, &config.poll).await?;
    // After init_transactions: an instance fenced by it lets go of the lock once it notices.
    tokio::select! {
        locked = source.lock(&config.name) => locked?,
        () = shutdown.requested() => return Ok(()),
    }
    // Under the lock nobody else publishes for this name: the checkpoint read now is final.
    let checkpoint = read_checkpoint(config, offsets)
        .await?
        .map(|stored| stored.into_poll(&config.name))
        .transpose()?;
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

    // Each claimed batch is one Kafka transaction: its rows stay claimed until it commits.
    let batcher = Batcher::new(
        producer,
        BatchLimits::EACH_BOUNDARY,
        config.offsets_topic.clone(),
        config.name.clone(),
        checkpoint.map_or(0, |c| c.events),
    );
    let mut poller = Poller {
        config,
        source,
        sink: SinkThread::spawn(batcher, config.channel_capacity)?,
        schema: Schema::default(),
        routing,
    };
    let outcome = poller.run(shutdown, listening).await;
    let dead_letters = poller.routing.finish();
    if dead_letters > 0 {
        tracing::warn!(
            dead_letters,
            "rows went to the dead-letter topic during this run"
        );
    }
    let Poller {
        mut source, sink, ..
    } = poller;
    let finished = finish_sink(outcome, sink).await.map(drop);
    if finished.is_err() {
        // Not in Kafka (or undecided until the next init_transactions): the rows stay.
        if let Err(rollback) = source.rollback().await {
            tracing::debug!(error = %rollback, "rollback after a failure failed");
        }
    }
    finished
}

/// The poll loop's state.
struct Poller<'a> {
    config: &'a RelayConfig,
    source: PollSource,
    /// The sink thread: each batch's records and checkpoint out, committed checkpoints back.
    sink: SinkThread<PollCheckpoint>,
    schema: Schema,
    /// Topic limits and the dead-letter log.
    routing: Routing,
}

impl std::fmt::Debug for Poller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl Poller<'_> {
    /// Polls until shutdown. A batch in progress is always finished: shutdown is only taken
    /// between batches and while waiting. `Ok` also when the sink ended: its result says why.
    async fn run(&mut self, shutdown: &Shutdown, listening: bool) -> Result<(), RelayError> {
        let poll = &self.config.poll;
        let mut delay = poll.min_interval;
        loop {
            let mut found = false;
            let mut full = false;
            for index in 0..poll.tables.len() {
                let Some(rows) = self.batch(index).await? else {
                    return Ok(());
                };
                found |= rows > 0;
                full |= rows >= poll.batch_size;
            }
            self.routing.flush_due();
            if shutdown.is_requested() {
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
                () = shutdown.requested() => return Ok(()),
            }
        }
    }

    /// Claims, publishes and commits one batch of table `index`; returns its row count, `None`
    /// when the sink ended (the claim is still open then: the caller rolls it back).
    async fn batch(&mut self, index: usize) -> Result<Option<usize>, RelayError> {
        let batch = self.source.claim(index, &mut self.schema).await?;
        let rows = batch.rows.len();
        if rows == 0 {
            metrics().owe_nothing();
            self.source.rollback().await?;
            return Ok(Some(0));
        }
        // Owed until its Kafka transaction commits, also across attempts: the rows stay.
        metrics().owe(Owed::Rows { claimed: rows });
        let records = self.route(&batch).await?;
        let table = self.config.poll.tables[index].qualified();
        // The sink sets the event total as it commits.
        let checkpoint = PollCheckpoint::new(table, batch.ids, 0);
        if !self.publish(records, &checkpoint).await {
            return Ok(None);
        }
        self.source.commit().await?;
        tracing::debug!(rows, "published a batch");
        Ok(Some(rows))
    }

    /// Hands a batch's records and checkpoint to the sink and waits until that Kafka transaction
    /// committed; `false` when the sink ended instead.
    async fn publish(&mut self, records: Vec<Record>, checkpoint: &PollCheckpoint) -> bool {
        let inputs = records
            .into_iter()
            .map(SinkInput::Record)
            .chain([SinkInput::Boundary(checkpoint.clone())]);
        for input in inputs {
            if !self.sink.input.send(input).await {
                return false;
            }
        }
        if !self.sink.input.hand_over().await {
            return false;
        }
        loop {
            let committed = self
                .sink
                .committed
                .borrow_and_update()
                .as_ref()
                .is_some_and(|c| c.table == checkpoint.table && c.ids == checkpoint.ids);
            if committed {
                return true;
            }
            if self.sink.committed.changed().await.is_err() {
                return false;
            }
        }
    }

    /// The records of a batch's rows, dead letters included.
    async fn route(&mut self, batch: &Batch) -> Result<Vec<Record>, RelayError> {
        let context = RouteContext {
            schema: &self.schema,
            xid: None,
            commit_ts: PgTimestamp::now(),
            lsn: None,
            last_commit_lsn: Some(Lsn::ZERO),
        };
        let mut records = Vec::with_capacity(batch.rows.len());
        for row in &batch.rows {
            let change = Change::Insert {
                relation: batch.relation.clone(),
                new: row.clone(),
            };
            self.routing
                .route(&self.config.router, &change, &context, &mut records)
                .await?;
        }
        Ok(records)
    }
}
