//! The pump: replication events in, routed records and commit boundaries out to the sink thread,
//! committed checkpoints back to the slot.
//!
//! Three things happen at once, in one `select!` loop, so none can starve another:
//! - the next replication event is decoded, routed and handed to the sink (waiting when the bounded
//!   channel is full: back-pressure reaches the socket);
//! - a committed checkpoint from the sink becomes the slot's flush position;
//! - a status update goes to the walsender every `status_interval`, also while the sink
//!   back-pressures, so `wal_sender_timeout` never fires during a long Kafka commit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::{interval, Interval, MissedTickBehavior};

use crate::checkpoint::Checkpoint;
use crate::metrics::{metrics, Reached};
use crate::pg::pgoutput::Relation;
use crate::pg::schema::Schema;
use crate::pg::wire::Session;
use crate::pg::{Lsn, PgTimestamp, RelationId};
use crate::progress::Owed;
use crate::route::outbox::identity::OutboxIdentities;
use crate::route::{Record, RouteContext};
use crate::settings::SnapshotMode;
use crate::sink::batch::{Batcher, SinkInput, SinkThread};
use crate::sink::handoff::PARCEL_INPUTS;
use crate::source::logical::{LogicalSource, SourceError, SourceEvent, TxnBegin};
use crate::source::Change;

use super::backfill;
use super::logical::{publication_recreated, Replication, Started, PROTOCOL_VERSION};
use super::older_rows::OlderRows;
use super::routing::Routing;
use super::snapshot::signal::{is_signal_table, Received, SIGNAL_PREFIX};
use super::snapshot::{request, HeldBoundary, RecentCommits, Snapshotter, WATERMARK_PREFIX};
use super::{Failure, RelayConfig, RelayError, Shutdown};

/// Runs the pump and its sink thread until shutdown or failure.
pub(super) async fn run(
    config: &RelayConfig,
    started: Started,
    shutdown: &Shutdown,
) -> Result<(), RelayError> {
    let Started {
        replication,
        producer,
        resume,
        resumed,
        schema,
        mut routing,
        outboxes,
        older_rows,
    } = started;
    let batcher = Batcher::new(
        producer,
        config.batch,
        config.offsets_topic.clone(),
        config.name.clone(),
        resume.events,
    );
    let mut sink = SinkThread::spawn(batcher, config.channel_capacity)?;
    let stream = match replication {
        Replication::Streaming(stream) => stream,
        Replication::Backfill(mut pending) => {
            let published = backfill::publish(
                config,
                &mut pending.connection,
                &schema,
                &mut sink,
                &mut routing,
                resume.clone(),
            )
            .await;
            match published {
                Ok(true) => match pending.stream(config, &resume).await {
                    Ok(stream) => stream,
                    Err(error) => return super::finish_sink(Err(error), sink).await.map(drop),
                },
                // The sink (or the read) failed: the sink's result says why first.
                Ok(false) => return super::finish_sink(Ok(()), sink).await.map(drop),
                Err(error) => return super::finish_sink(Err(error), sink).await.map(drop),
            }
        }
    };

    let snapshot = resume
        .snapshot
        .clone()
        .map(|cursor| Snapshotter::new(config, cursor));
    if let Some(snapshot) = &snapshot {
        metrics().snapshot_running.set(1);
        metrics()
            .snapshot_progress_rows
            .set(i64::try_from(snapshot.rows()).unwrap_or(i64::MAX));
    }
    let mut pump = Pump {
        config,
        stop_after_snapshot: config.snapshot.mode == SnapshotMode::InitialOnly,
        snapshot,
        reads_owed: VecDeque::new(),
        held: HeldBoundary::default(),
        recent: RecentCommits::default(),
        source: LogicalSource::new(stream, PROTOCOL_VERSION),
        sink,
        status: interval(config.status_interval),
        resume_after: resume.lsn,
        last_commit: resumed.then_some(resume.lsn),
        template: resume,
        schema,
        outboxes,
        older_rows,
        checked: HashMap::new(),
        routed: Vec::new(),
        routing,
        sent: Lsn::ZERO,
        confirmed: Lsn::ZERO,
        skipping: false,
        open: None,
        open_routed: false,
        last_idle_confirm: Instant::now(),
    };
    pump.status
        .set_missed_tick_behavior(MissedTickBehavior::Delay);
    pump.sent = pump.resume_after;
    pump.confirmed = pump.resume_after;
    pump.source
        .stream()
        .set_position(pump.resume_after, pump.resume_after);

    let outcome = pump.pump(shutdown).await;
    let dead_letters = pump.routing.finish();
    if dead_letters > 0 {
        tracing::warn!(
            dead_letters,
            "changes went to the dead-letter topic during this run"
        );
    }
    // Closing the channel tells the sink to commit what is complete (or abort a cut transaction).
    let Pump { source, sink, .. } = pump;
    let last = super::finish_sink(outcome, sink).await?;
    // Graceful stop: confirm the final commit, then end replication.
    let mut stream = source.into_stream();
    if let Some(last) = last {
        stream.set_position(last.lsn, last.lsn);
    }
    stream.send_status(false).await?;
    stream.stop().await?;
    Ok(())
}

/// Says that an `initial_only` relay stops, and what its slot then does.
pub(super) fn initial_only_done(config: &RelayConfig) {
    tracing::info!(
        relay = %config.name,
        slot = %config.slot,
        "the snapshot is complete; stopping without streaming on (snapshot.mode = \
         \"initial_only\"). The replication slot stays and keeps the WAL from the last \
         checkpoint on: start the relay with another snapshot.mode to stream on from there, or \
         drop the slot (pg_drop_replication_slot) if it will not stream"
    );
}

/// The pump's state between events.
struct Pump<'a> {
    config: &'a RelayConfig,
    /// The snapshot running alongside the stream, if one is.
    snapshot: Option<Snapshotter>,
    /// `snapshot.mode = "initial_only"`: stop once the snapshot is complete.
    stop_after_snapshot: bool,
    /// Read events handed to the sink, counted in the metrics once a checkpoint covers them:
    /// the boundary's position, the chunk's rows, the snapshot's rows with them.
    reads_owed: VecDeque<(Lsn, u64, u64)>,
    /// A chunk's boundary held back while the next chunk follows (relay::snapshot::held).
    held: HeldBoundary,
    /// The stream's latest commits, for the snapshot's race guard.
    recent: RecentCommits,
    source: LogicalSource,
    /// The sink thread: input out, committed checkpoints back.
    sink: SinkThread<Checkpoint>,
    status: Interval,
    /// The checkpoint resumed from: transactions whose commit starts before it are already in Kafka.
    resume_after: Lsn,
    /// End of the last transaction read, or the last non-transactional message's position
    /// (Debezium's `sequence[0]` of the next events, [`RouteContext::last_commit_lsn`]).
    last_commit: Option<Lsn>,
    /// Primary keys and column types of the tables seen.
    schema: Schema,
    /// The OIDs outbox tables have had: a renamed one stops the relay.
    outboxes: OutboxIdentities,
    /// On a first start, until the stream passes the position they were counted at: the outbox
    /// tables' rows, less the inserts streamed, are the rows older than the slot (older_rows).
    older_rows: Option<OlderRows>,
    /// The Relation message each table was last checked against the schema with: a table is
    /// looked up again only when pgoutput describes it anew (a new session or a schema change).
    checked: HashMap<RelationId, Arc<Relation>>,
    /// The records of the change being routed (reused).
    routed: Vec<Record>,
    /// Topic limits and the dead-letter log.
    routing: Routing,
    /// Identity fields of every checkpoint (system, timeline, slot).
    template: Checkpoint,
    /// The last boundary handed to the sink.
    sent: Lsn,
    /// The last checkpoint the sink committed, which is the slot's flush position.
    confirmed: Lsn,
    /// Whether the open transaction is one already delivered before the resume point.
    skipping: bool,
    /// The open transaction.
    open: Option<TxnBegin>,
    /// Whether the open transaction routed records (its commit is then a latency sample).
    open_routed: bool,
    /// When the slot was last confirmed at a keepalive's WAL end.
    last_idle_confirm: Instant,
}

impl std::fmt::Debug for Pump<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("sent", &self.sent)
            .field("confirmed", &self.confirmed)
            .finish_non_exhaustive()
    }
}

impl Pump<'_> {
    /// Loops until shutdown (`Ok`) or an error; the channel closing means the sink failed.
    async fn pump(&mut self, shutdown: &Shutdown) -> Result<(), RelayError> {
        // Events read since the loop last waited in `select!`: bounded, so that a run of events
        // that gather nothing (a resumed relay skipping transactions) still lets the status
        // updates, the committed checkpoints and a shutdown through.
        let mut read_ahead = 0;
        // Events handled since the pump last let the runtime's other tasks run.
        let mut since_yield = 0;
        loop {
            // `run`'s runtime has one thread (main.rs), and a socket that always holds more lets
            // the pump go on without ever waiting: the lease's proofs, the metrics endpoint and
            // the watchdog's pings get their turn every parcel's worth of events.
            since_yield += 1;
            if since_yield > PARCEL_INPUTS {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            if !self.snapshot.as_ref().is_some_and(Snapshotter::reading) {
                self.release_held().await?;
            }
            if self.snapshot_finished().await? {
                return Ok(());
            }
            if self.sink.input.has_gathered() {
                // Read on while the socket holds more, then hand the parcel over before waiting
                // (sink::handoff): the sink thread wakes once per parcel, not once per input.
                if read_ahead < PARCEL_INPUTS {
                    if let Some(event) = self.source.next().now_or_never() {
                        read_ahead += 1;
                        if !self.handle_next(event).await? {
                            return Ok(());
                        }
                        continue;
                    }
                }
                if !self.hand_over().await? {
                    return Ok(());
                }
            }
            read_ahead = 0;
            tokio::select! {
                biased;
                () = shutdown.requested() => {
                    self.release_held().await?;
                    return Ok(());
                }
                changed = self.sink.committed.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the sink ended; its result says why
                    }
                    self.confirm_committed().await?;
                }
                _ = self.status.tick() => {
                    self.routing.flush_due();
                    self.source.stream().send_status(false).await?;
                }
                // Between two transactions of the stream: the window's low watermark
                // (relay::snapshot). Never inside one: the read's snapshot would not see the
                // changes of it the stream already carried (a signal can arrive mid-transaction).
                () = std::future::ready(()), if self.open.is_none() && self.snapshot.as_ref().is_some_and(Snapshotter::wants_chunk) => {
                    self.read_chunk().await?;
                }
                event = self.source.next() => {
                    if !self.handle_next(event).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles what the source's `next` gave; `false` when the sink is gone.
    async fn handle_next(
        &mut self,
        event: Result<Option<SourceEvent>, SourceError>,
    ) -> Result<bool, RelayError> {
        match event.map_err(|error| publication_recreated(self.config, self.confirmed, error))? {
            Some(event) => self.handle(event).await,
            None => Err(RelayError::Transient(Failure::StreamEnded)),
        }
    }

    /// `snapshot.mode = "initial_only"`: whether the snapshot is complete and no transaction is
    /// open, so the pump stops. The sink then gets a checkpoint without the cursor at the last
    /// position sent: one that completed in a read (its last table had no rows left) has not sent
    /// one yet.
    async fn snapshot_finished(&mut self) -> Result<bool, RelayError> {
        if !self.stop_after_snapshot || self.snapshot.is_some() || self.open.is_some() {
            return Ok(false);
        }
        let mut checkpoint = self.template.clone();
        checkpoint.lsn = self.sent;
        self.forward(SinkInput::Boundary(checkpoint)).await?;
        initial_only_done(self.config);
        Ok(true)
    }

    /// Reports the sink's latest committed checkpoint to the slot.
    async fn confirm_committed(&mut self) -> Result<(), RelayError> {
        let Some(lsn) = self
            .sink
            .committed
            .borrow_and_update()
            .as_ref()
            .map(|c| c.lsn)
        else {
            return Ok(());
        };
        self.confirmed = self.confirmed.max(lsn);
        while let Some(&(at, rows, total)) = self.reads_owed.front() {
            if at > lsn {
                break;
            }
            self.reads_owed.pop_front();
            metrics().snapshot_rows.inc_by(rows);
            metrics()
                .snapshot_progress_rows
                .set(i64::try_from(total).unwrap_or(i64::MAX));
        }
        self.source
            .stream()
            .set_position(self.confirmed, self.confirmed);
        self.source.stream().send_status(false).await?;
        Ok(())
    }

    /// Handles one event; `false` when the sink is gone.
    async fn handle(&mut self, event: SourceEvent) -> Result<bool, RelayError> {
        match event {
            SourceEvent::Begin(begin) => {
                self.skipping = begin.final_lsn < self.resume_after;
                self.open = Some(begin);
                self.open_routed = false;
                Ok(true)
            }
            SourceEvent::Change { lsn, change } => {
                if self.skipping {
                    return Ok(true);
                }
                if let Change::Message {
                    prefix, content, ..
                } = &change
                {
                    if prefix == WATERMARK_PREFIX {
                        if let Some(snapshot) = &mut self.snapshot {
                            snapshot.watermark(content, lsn);
                        }
                        return Ok(true);
                    }
                    if prefix == SIGNAL_PREFIX {
                        self.signal_message(content).await?;
                        return Ok(true);
                    }
                }
                if let Some(snapshot) = &mut self.snapshot {
                    snapshot.saw(&change);
                }
                if let Change::Insert { relation, new } = &change {
                    if let Some(older_rows) = &mut self.older_rows {
                        older_rows.inserted(relation);
                    }
                    if is_signal_table(self.config.snapshot.signal_table.as_ref(), relation) {
                        self.signal(Received::from_row(relation, new)).await?;
                    }
                }
                self.route(&change, lsn).await
            }
            SourceEvent::Commit(commit) => {
                self.recent.push(commit.xid);
                if self
                    .older_rows
                    .as_mut()
                    .is_some_and(|older_rows| older_rows.committed(commit.end_lsn))
                {
                    self.older_rows = None;
                }
                let mut chunk = false;
                if !self.skipping {
                    match self.publish_reads(commit.end_lsn).await? {
                        None => return Ok(false),
                        Some(published) => chunk = published,
                    }
                }
                let open = self.open.take();
                self.last_commit = Some(commit.end_lsn);
                if std::mem::take(&mut self.skipping) {
                    return Ok(true);
                }
                let mut checkpoint = self.template.clone();
                checkpoint.lsn = commit.end_lsn;
                checkpoint.xid = Some(commit.xid);
                checkpoint.commit_ts = open.and_then(|b| b.commit_ts.to_utc());
                if let Some(committed) = checkpoint.commit_ts.filter(|_| self.open_routed) {
                    metrics().reached(Reached::Decoded, committed);
                }
                self.sent = commit.end_lsn;
                // The snapshot reads on: the next chunk's boundary supersedes this one.
                let more = chunk && self.snapshot.as_ref().is_some_and(Snapshotter::wants_chunk);
                match self.held.hold(checkpoint, more) {
                    Some(checkpoint) => self.forward(SinkInput::Boundary(checkpoint)).await,
                    None => Ok(true),
                }
            }
            SourceEvent::Message {
                prefix,
                content,
                lsn,
            } => {
                if lsn <= self.resume_after {
                    return Ok(true);
                }
                // Debezium commits a non-transactional message's position before writing it.
                self.last_commit = Some(lsn);
                if prefix == SIGNAL_PREFIX {
                    self.signal_message(&content).await?;
                } else {
                    let change = Change::Message {
                        prefix,
                        content,
                        lsn,
                    };
                    if !self.route(&change, lsn).await? {
                        return Ok(false);
                    }
                }
                let mut checkpoint = self.template.clone();
                checkpoint.lsn = lsn;
                self.sent = lsn;
                self.forward(SinkInput::Boundary(checkpoint)).await
            }
            SourceEvent::Keepalive { wal_end } => {
                if self
                    .older_rows
                    .as_mut()
                    .is_some_and(|older_rows| older_rows.reached(wal_end))
                {
                    self.older_rows = None;
                }
                self.confirm_idle(wal_end).await
            }
        }
    }

    /// Reads the snapshot's next chunk (or moves past a table with nothing left to read).
    async fn read_chunk(&mut self) -> Result<(), RelayError> {
        if let Some(snapshot) = &mut self.snapshot {
            snapshot
                .read_chunk(self.config, &mut self.schema, &mut self.recent)
                .await?;
        }
        self.sync_snapshot();
        Ok(())
    }

    /// A logical message with the signal prefix (never published).
    async fn signal_message(&mut self, content: &[u8]) -> Result<(), RelayError> {
        if !self.config.snapshot.signal_messages {
            tracing::warn!(
                "a snapshot signal message arrived, but snapshot.signal_messages = false: ignored"
            );
            return Ok(());
        }
        self.signal(Received::from_message(content)).await
    }

    /// Acts on a snapshot signal at its place in the stream: the checkpoints from here on carry
    /// its effect.
    async fn signal(&mut self, received: Received) -> Result<(), RelayError> {
        request::apply(&mut self.snapshot, self.config, received).await?;
        self.sync_snapshot();
        Ok(())
    }

    /// At a commit ending at `end`: the read events of a window that closed in this transaction,
    /// handed to the sink before the boundary whose checkpoint moves the cursor past them.
    /// Whether a window closed; `None` when the sink is gone.
    async fn publish_reads(&mut self, end: Lsn) -> Result<Option<bool>, RelayError> {
        let Some((reads, lsn)) = self.snapshot.as_mut().and_then(Snapshotter::close) else {
            return Ok(Some(false));
        };
        for read in &reads {
            if !self.route(read, lsn).await? {
                return Ok(None);
            }
        }
        let total = self.snapshot.as_ref().map_or(0, Snapshotter::rows);
        self.reads_owed.push_back((end, reads.len() as u64, total));
        self.sync_snapshot();
        Ok(Some(true))
    }

    /// Hands the held chunk boundary to the sink, if there is one: no chunk follows at once.
    async fn release_held(&mut self) -> Result<(), RelayError> {
        if let Some(checkpoint) = self.held.release(&self.template) {
            self.forward(SinkInput::Boundary(checkpoint)).await?;
        }
        Ok(())
    }

    /// Every checkpoint from now on carries the snapshot's cursor (none once it is complete).
    fn sync_snapshot(&mut self) {
        let cursor = self.snapshot.as_ref().and_then(|s| s.cursor().cloned());
        // A signal may have started one, or the last chunk ended it.
        metrics().snapshot_running.set(i64::from(cursor.is_some()));
        if cursor.is_none() {
            self.snapshot = None;
        }
        self.template.set_snapshot(cursor);
    }

    /// Routes a change and hands its records to the sink.
    async fn route(&mut self, change: &Change, lsn: Lsn) -> Result<bool, RelayError> {
        match change {
            Change::Insert { relation, .. }
            | Change::Read { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => self.learn(relation).await?,
            Change::Truncate { relations, .. } => {
                for relation in relations {
                    self.learn(relation).await?;
                }
            }
            Change::Message { .. } => {}
        }
        let context = RouteContext {
            schema: &self.schema,
            xid: self.open.as_ref().map(|b| b.xid),
            commit_ts: self
                .open
                .as_ref()
                .map_or_else(PgTimestamp::now, |b| b.commit_ts),
            lsn: Some(lsn),
            last_commit_lsn: self.last_commit,
        };
        let mut routed = std::mem::take(&mut self.routed);
        self.routing
            .route(&self.config.router, change, &context, &mut routed)
            .await?;
        if !routed.is_empty() {
            // Owed from now until a committed checkpoint covers it: before the hand-over, which
            // waits while a stuck sink back-pressures.
            metrics().owe(Owed::Wal { through: lsn });
            self.open_routed = true;
        }
        let mut open = true;
        for record in routed.drain(..) {
            if open {
                open = self.forward(SinkInput::Record(record)).await?;
            }
        }
        self.routed = routed;
        Ok(open)
    }

    /// Checks a table first seen (or changed) mid-stream against the outbox tables' identities
    /// and reads its primary key and column types, on a connection of its own: the replication
    /// connection is streaming.
    async fn learn(&mut self, relation: &Arc<Relation>) -> Result<(), RelayError> {
        if self
            .checked
            .get(&relation.id)
            .is_some_and(|seen| Arc::ptr_eq(seen, relation))
        {
            return Ok(());
        }
        self.outboxes.check(self.config.router.outbox(), relation)?;
        let types: Vec<_> = relation.columns.iter().map(|c| c.type_oid).collect();
        if !self.schema.knows(relation.id, &types) {
            let mut connection = Session::connect(&self.config.postgres).await?;
            self.schema.load_table(&mut connection, relation.id).await?;
            // Types the table no longer has (a dropped column's) are still in this Relation message.
            self.schema.types.load(&mut connection, &types).await?;
        }
        self.checked.insert(relation.id, Arc::clone(relation));
        Ok(())
    }

    /// While nothing is in flight and the WAL moved past the confirmed position, commits a
    /// checkpoint-only transaction at the keepalive's WAL end so the slot stops pinning WAL that
    /// other tables write.
    async fn confirm_idle(&mut self, wal_end: Lsn) -> Result<bool, RelayError> {
        let nothing_in_flight = self.open.is_none() && self.sent == self.confirmed;
        if !nothing_in_flight
            || wal_end <= self.sent
            || self.last_idle_confirm.elapsed() < self.config.idle_confirm_interval
        {
            return Ok(true);
        }
        self.last_idle_confirm = Instant::now();
        let mut checkpoint = self.template.clone();
        checkpoint.lsn = wal_end;
        self.sent = wal_end;
        self.forward(SinkInput::Boundary(checkpoint)).await
    }

    /// Gives one input to the sink: gathered, and handed over with the parcel before the pump
    /// waits or once the parcel is full. `false` when the sink is gone.
    async fn forward(&mut self, input: SinkInput) -> Result<bool, RelayError> {
        if matches!(input, SinkInput::Boundary(_)) {
            self.held.superseded();
        }
        if self.sink.input.gather(input) {
            return self.hand_over().await;
        }
        Ok(true)
    }

    /// Hands the gathered parcel to the sink, waiting while the channel is full and meanwhile
    /// keeping the walsender informed. `false` when the sink is gone.
    async fn hand_over(&mut self) -> Result<bool, RelayError> {
        let parcel = match self.sink.input.try_hand_over() {
            Ok(()) => return Ok(true),
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(false),
            Err(mpsc::error::TrySendError::Full(parcel)) => parcel,
        };
        // The sink is behind: wait for room while keeping the walsender and the slot informed.
        let sender = self.sink.input.sender().clone();
        let mut room = std::pin::pin!(sender.reserve());
        loop {
            tokio::select! {
                permit = &mut room => {
                    return Ok(match permit {
                        Ok(permit) => {
                            permit.send(parcel);
                            true
                        }
                        Err(_) => false,
                    });
                }
                changed = self.sink.committed.changed() => {
                    if changed.is_err() {
                        return Ok(false);
                    }
                    self.confirm_committed().await?;
                }
                _ = self.status.tick() => self.source.stream().send_status(false).await?,
            }
        }
    }
}
