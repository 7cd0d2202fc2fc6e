//! One attempt of the relay in logical mode: fence, read the checkpoint, check the slot against
//! it, start replication there, and pump until stopped or failed.

use crate::checkpoint::Checkpoint;
use crate::metrics::metrics;
use crate::pg::schema::Schema;
use crate::pg::wire::{
    PgOutputOptions, ReplicationConnection, ReplicationStream, Session, SlotLife, Streaming,
    SystemIdentity, WireError,
};
use crate::pg::{Lsn, RelationId};
use crate::route::outbox::identity::OutboxIdentities;
use crate::settings::SnapshotMode;
use crate::sink::kafka::TransactionalProducer;
use crate::source::logical::SourceError;

use super::backfill::{self, Snapshot};
use super::failover;
use super::older_rows::OlderRows;
use super::routing::{Refusals, Routing};
use super::when_needed;
use super::{fence, pump, read_checkpoint, Failure, Fenced, RelayConfig, RelayError, Shutdown};

/// The pgoutput protocol the relay speaks: version 1 has everything it needs (messages included),
/// and streaming stays off so only committed transactions are ever sent.
pub(super) const PROTOCOL_VERSION: u32 = 1;

/// What the start of a logical attempt hands the pump.
#[derive(Debug)]
pub(super) struct Started {
    /// The replication stream, or the connection whose transaction holds the new slot's snapshot.
    pub replication: Replication,
    /// The producer whose `init_transactions` fenced older instances.
    pub producer: TransactionalProducer,
    /// The checkpoint resumed from (or a fresh one at the slot's position).
    pub resume: Checkpoint,
    /// Whether `resume` was stored (not fresh): its position is then the last commit read.
    pub resumed: bool,
    /// Primary keys and column types of the published tables.
    pub schema: Schema,
    /// Topic limits, the records refused before, the dead-letter log.
    pub routing: Routing,
    /// The OIDs of the outbox tables, to recognise one renamed.
    pub outboxes: OutboxIdentities,
    /// On a first start, the outbox tables' rows to tell older from streamed ones.
    pub older_rows: Option<OlderRows>,
}

/// Where replication stands when the pump takes over.
#[derive(Debug)]
pub(super) enum Replication {
    /// Streaming from the checkpoint.
    Streaming(ReplicationStream),
    /// The replication connection's open transaction holds the snapshot of the rows older than
    /// the slot's start: they are published first ([`super::backfill`]), then
    /// [`Backfill::stream`].
    Backfill(Box<Backfill>),
}

/// A snapshot whose rows are yet to be published, and the connection that holds it.
#[derive(Debug)]
pub(super) struct Backfill {
    /// The walsender, inside the snapshot's transaction.
    pub connection: ReplicationConnection,
    /// A plain session, to re-read the slot after the start.
    session: Session,
    /// Where the snapshot came from.
    snapshot: Snapshot,
}

impl Backfill {
    /// Starts replication at the slot's consistent point, once the snapshot's transaction ended.
    pub async fn stream(
        self: Box<Self>,
        config: &RelayConfig,
        resume: &Checkpoint,
    ) -> Result<ReplicationStream, RelayError> {
        let Backfill {
            mut connection,
            mut session,
            snapshot,
        } = *self;
        // A temporary slot would keep its WAL for as long as the connection lives.
        if let Snapshot::Beside(temporary) = snapshot {
            connection.drop_replication_slot(&temporary).await?;
        }
        stream_from(connection, &mut session, config, resume.lsn).await
    }
}

/// Runs one attempt; `Ok` when shutdown was requested and the relay stopped cleanly.
pub(super) async fn attempt(
    config: &RelayConfig,
    shutdown: &Shutdown,
    refusals: &Refusals,
) -> Result<(), RelayError> {
    let started = start(config, refusals).await?;
    if config.snapshot.mode == SnapshotMode::InitialOnly && started.resume.snapshot.is_none() {
        pump::initial_only_done(config);
        return Ok(());
    }
    metrics().resumed_at(started.resume.lsn);
    metrics().set_streaming(true);
    crate::service::ready(&format!(
        "streaming slot {} from {}",
        config.slot, started.resume.lsn
    ));
    pump::run(config, started, shutdown).await
}

/// Fences, reads the checkpoint, checks the slot and starts replication at the checkpoint.
async fn start(config: &RelayConfig, refusals: &Refusals) -> Result<Started, RelayError> {
    // Kafka first: init_transactions fences an older instance and settles our last transaction,
    // so the checkpoint read next is final.
    let Fenced {
        producer,
        offsets,
        routing,
    } = fence(config, refusals).await?;
    let checkpoint = read_checkpoint(config, offsets)
        .await?
        .map(|stored| stored.into_logical(&config.name))
        .transpose()?;
    if checkpoint.is_some() && config.publish_existing_rows {
        tracing::info!(
            relay = %config.name,
            "{}: ignored, the relay has a checkpoint (the option acts on its first start only)",
            backfill::OPTION
        );
    }

    let mut connection = ReplicationConnection::connect(&config.postgres).await?;
    if connection.session().state().await?.in_recovery {
        return Err(RelayError::Transient(Failure::Standby(
            config.postgres.targets(),
        )));
    }
    let system = connection.identify_system().await?;
    // Queries with values run on a plain session: a walsender speaks only the simple protocol,
    // which takes no parameters.
    let mut session = Session::connect(&config.postgres).await?;
    let checked = check_slot(
        &mut connection,
        &mut session,
        config,
        &system,
        checkpoint.as_ref(),
    )
    .await;
    let (mut resume, snapshot) = match (checked, &checkpoint) {
        (Err(RelayError::Definite(Failure::Slot(lost))), Some(checkpoint))
            if config.snapshot.mode == SnapshotMode::WhenNeeded =>
        {
            let resume = when_needed::recover(
                &mut connection,
                &mut session,
                config,
                &system,
                checkpoint,
                lost,
            )
            .await?;
            (resume, None)
        }
        (checked, _) => checked?,
    };
    let older_rows = match (&checkpoint, &snapshot) {
        (None, None) => OlderRows::count(&mut session, config).await?,
        _ => None,
    };
    if checkpoint.is_none() && config.snapshot.mode.on_first_start() {
        let tables = super::snapshot::captured_tables(&mut session, config).await?;
        let cursor = super::snapshot::begin("initial", tables);
        tracing::info!(
            snapshot = %cursor.id,
            tables = %cursor.tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            "first start with snapshot.mode = \"{}\": snapshotting the captured tables \
             while streaming",
            config.snapshot.mode.as_str()
        );
        resume.set_snapshot((!cursor.is_done()).then_some(cursor));
    }
    tracing::info!(
        relay = %config.name,
        slot = %config.slot,
        checkpoint = %resume.lsn,
        "starting replication"
    );
    let mut schema = Schema::default();
    schema
        .load_publications(&mut session, &config.publications)
        .await?;
    let outboxes = outbox_identities(&mut session, config).await?;
    let replication = match snapshot {
        Some(snapshot) => Replication::Backfill(Box::new(Backfill {
            connection,
            session,
            snapshot,
        })),
        None => {
            Replication::Streaming(stream_from(connection, &mut session, config, resume.lsn).await?)
        }
    };
    Ok(Started {
        replication,
        producer,
        resume,
        resumed: checkpoint.is_some(),
        schema,
        routing,
        outboxes,
        older_rows,
    })
}

/// Starts replication at `resume` and checks that the slot did not move past it meanwhile.
async fn stream_from(
    connection: ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
    resume: Lsn,
) -> Result<ReplicationStream, RelayError> {
    let options = PgOutputOptions {
        proto_version: PROTOCOL_VERSION,
        publication_names: config.publications.clone(),
        messages: true,
        streaming: Streaming::Off,
        binary: false,
    };
    // Crash tests move the slot between the check above and the start here.
    fail::fail_point!("before-start-replication");
    let stream = connection
        .start_replication(&config.slot, resume, &options)
        .await?;
    // The walsender starts at the slot's confirmed position when that is past ours, silently. A
    // slot moved between the check and the start would skip events: read it again, now that our
    // walsender holds it and nothing else can move it.
    let slot = read_slot(session, &config.slot)
        .await?
        .ok_or_else(|| SlotError::Missing {
            slot: config.slot.clone(),
            relay: config.name.clone(),
            checkpoint: resume,
        })?;
    not_ahead(config, slot.confirmed()?, resume)?;
    Ok(stream)
}

/// The OIDs the configured outbox tables' names have now.
async fn outbox_identities(
    session: &mut Session,
    config: &RelayConfig,
) -> Result<OutboxIdentities, RelayError> {
    let outbox = config.router.outbox();
    let mut oids = Vec::new();
    for table in outbox.tables() {
        let rows = session
            .query_params_text(
                "SELECT c.oid::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[table.schema.as_str(), table.table.as_str()],
            )
            .await?;
        let oid = rows
            .first()
            .and_then(|row| row.first()?.as_deref()?.parse().ok())
            .map(RelationId);
        oids.push(oid);
    }
    Ok(OutboxIdentities::new(outbox, &oids))
}

/// The replication slot cannot be used as it is: going on would skip or repeat events.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot is gone though the relay has a checkpoint.
    #[error(
        "replication slot {slot:?} does not exist, but relay {relay:?} has a checkpoint at \
         {checkpoint}: the changes since then are gone with the slot. Recreating it would skip \
         them; to start over on purpose, use a new relay name, or set snapshot.mode = \
         \"when_needed\" to recreate it and snapshot the captured tables again"
    )]
    Missing {
        /// The slot.
        slot: String,
        /// The relay name.
        relay: String,
        /// The relay's checkpoint.
        checkpoint: Lsn,
    },
    /// The slot is gone on a promoted standby: it did not survive the failover.
    #[error(
        "replication slot {slot:?} does not exist on this server, a promoted standby (timeline \
         {timeline}; relay {relay:?}'s checkpoint at {checkpoint} is on timeline \
         {from_timeline}): THE SLOT WAS LOST IN THE FAILOVER, and with it the changes since the \
         checkpoint that the relay had not published. PostgreSQL before 17 does not carry \
         logical slots to standbys; on 17+ keep postgres.failover_slot = true with \
         sync_replication_slots = on on the standby (`outboxd check` lists what failover \
         needs). To go on: start the relay under a new relay.name, which creates a new slot \
         (`outboxd run --publish-existing-rows` also publishes the rows still in the outbox \
         tables), or set snapshot.mode = \"when_needed\" to recreate the slot here and \
         snapshot the captured tables again"
    )]
    LostInFailover {
        /// The slot.
        slot: String,
        /// The relay name.
        relay: String,
        /// The relay's checkpoint.
        checkpoint: Lsn,
        /// The checkpoint's timeline.
        from_timeline: u32,
        /// The server's timeline.
        timeline: u32,
    },
    /// The server removed WAL the slot needed.
    #[error(
        "replication slot {slot:?} lost WAL it needed (wal_status = lost; max_slot_wal_keep_size \
         reached): changes are gone. Drop the slot and start over with a new relay name"
    )]
    WalLost {
        /// The slot.
        slot: String,
    },
    /// The slot decodes with another output plugin.
    #[error(
        "replication slot {slot:?} uses the output plugin {plugin:?}; outboxd needs pgoutput \
         (drop the slot and let outboxd create it)"
    )]
    WrongPlugin {
        /// The slot.
        slot: String,
        /// Its plugin.
        plugin: String,
    },
    /// The slot's position did not read as an LSN.
    #[error("replication slot {slot:?}: confirmed_flush_lsn {value:?} is not a WAL position")]
    Unreadable {
        /// The slot.
        slot: String,
        /// What the server returned (empty for NULL).
        value: String,
    },
    /// The checkpoint was written on another cluster, or on a timeline this server's does not
    /// continue where the checkpoint is.
    #[error(
        "the checkpoint of relay {relay:?} was written on system {checkpoint_system} timeline \
         {checkpoint_timeline}, but this server is system {system} timeline {timeline} ({why}): \
         resuming could skip or repeat changes"
    )]
    OtherSystem {
        /// Why the server does not continue the checkpoint's history.
        why: String,
        /// The relay name.
        relay: String,
        /// The checkpoint's system id.
        checkpoint_system: String,
        /// The checkpoint's timeline.
        checkpoint_timeline: u32,
        /// The server's system id.
        system: String,
        /// The server's timeline.
        timeline: u32,
    },
    /// The walsender cannot decode a change written while a publication of the relay's did not
    /// exist: it was dropped, and created again later.
    #[error(
        "publication {publication:?} was dropped and created again after relay {relay:?}'s \
         checkpoint at {checkpoint}: PostgreSQL decodes each change with the catalog as it was \
         when the change was written, and for the changes written while the publication did \
         not exist the slot {slot:?} finds none, so every retry fails the same way. {}",
        PUBLICATION_RECREATED_WAYS_OUT
    )]
    PublicationRecreated {
        /// The publication.
        publication: String,
        /// The slot.
        slot: String,
        /// The relay name.
        relay: String,
        /// The relay's checkpoint.
        checkpoint: Lsn,
    },
    /// Something else confirmed the slot past the checkpoint.
    #[error(
        "replication slot {slot:?} is confirmed at {confirmed}, past relay {relay:?}'s checkpoint \
         at {checkpoint}: something else consumed the slot, and the changes in between never \
         reached Kafka"
    )]
    Ahead {
        /// The slot.
        slot: String,
        /// The relay name.
        relay: String,
        /// The slot's confirmed position.
        confirmed: Lsn,
        /// The relay's checkpoint.
        checkpoint: Lsn,
    },
}

/// What an operator can do about a slot stuck behind a re-created publication (`check` says it
/// too).
pub const PUBLICATION_RECREATED_WAYS_OUT: &str =
    "Neither creating the publication again nor restarting helps, and a slot cannot be moved \
     back or created at a past position. Ways out: (1) accept a gap: drop the slot \
     (pg_drop_replication_slot) and start the relay under a new relay.name, which creates a new \
     slot and publishes what is committed from then on; the changes between the checkpoint and \
     then are not published (`outboxd run --publish-existing-rows` publishes the rows still in \
     the outbox tables, those published before included). (2) To change which tables a \
     publication holds, never drop it: use ALTER PUBLICATION ... ADD/DROP TABLE, which a running \
     slot follows";

/// The publication of `publications` that `error` says does not exist: SQLSTATE 42704,
/// `publication "…" does not exist` (PostgreSQL 18: 55000, `skipped loading publication "…"`),
/// the name quoted whatever the server's language. A walsender says so when it decodes a change
/// written while the publication did not exist.
pub fn missing_publication<'a>(error: &WireError, publications: &'a [String]) -> Option<&'a str> {
    let WireError::Server(server) = error else {
        return None;
    };
    // 42704: the ERROR before PostgreSQL 18 (`publication "…" does not exist`); 55000: 18's
    // WARNING (`skipped loading publication "…"`), after which it decodes on without it.
    if !matches!(server.code.as_str(), "42704" | "55000") {
        return None;
    }
    publications
        .iter()
        .find(|p| {
            server.message.contains(&format!("\"{p}\""))
                || server.message.ends_with(&format!(": {p}"))
        })
        .map(String::as_str)
}

/// The error a failed stream becomes: a publication of the relay's that the walsender cannot
/// find is [`SlotError::PublicationRecreated`]; anything else is itself.
pub(super) fn publication_recreated(
    config: &RelayConfig,
    checkpoint: Lsn,
    error: SourceError,
) -> RelayError {
    if let SourceError::Wire(wire) = &error {
        if let Some(publication) = missing_publication(wire, &config.publications) {
            return SlotError::PublicationRecreated {
                publication: publication.to_owned(),
                slot: config.slot.clone(),
                relay: config.name.clone(),
                checkpoint,
            }
            .into();
        }
    }
    error.into()
}

/// Checks the slot against the checkpoint (creating the slot on a first start) and returns the
/// checkpoint to resume from: the stored one, or a fresh one at the slot's position; and, for
/// `--publish-existing-rows`, the snapshot the replication connection's open transaction holds.
async fn check_slot(
    connection: &mut ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: Option<&Checkpoint>,
) -> Result<(Checkpoint, Option<Snapshot>), RelayError> {
    let fresh = |lsn| Checkpoint {
        version: Checkpoint::VERSION,
        system_id: system.system_id.clone(),
        timeline: system.timeline,
        slot: config.slot.clone(),
        lsn,
        xid: None,
        commit_ts: None,
        events: 0,
        snapshot: None,
    };
    let Some(slot) = read_slot(session, &config.slot).await? else {
        if let Some(checkpoint) = checkpoint {
            if let Some(lost) = failover::lost_in_failover(config, system, checkpoint) {
                return Err(lost.into());
            }
            return Err(SlotError::Missing {
                slot: config.slot.clone(),
                relay: config.name.clone(),
                checkpoint: checkpoint.lsn,
            }
            .into());
        }
        if config.publish_existing_rows {
            let created =
                backfill::create_slot_with_snapshot(connection, &config.slot, config.failover_slot)
                    .await?;
            tracing::info!(
                slot = %config.slot,
                at = %created.consistent_point,
                "created replication slot with a snapshot of the rows older than it"
            );
            return Ok((fresh(created.consistent_point), Some(Snapshot::NewSlot)));
        }
        let created = connection
            .create_replication_slot(
                &config.slot,
                SlotLife::Permanent {
                    failover: config.failover_slot,
                },
            )
            .await?;
        tracing::info!(slot = %config.slot, at = %created.consistent_point, "created replication slot");
        return Ok((fresh(created.consistent_point), None));
    };
    if slot.plugin != "pgoutput" {
        return Err(SlotError::WrongPlugin {
            slot: config.slot.clone(),
            plugin: slot.plugin,
        }
        .into());
    }
    if slot.wal_status == "lost" {
        return Err(SlotError::WalLost {
            slot: config.slot.clone(),
        }
        .into());
    }
    let confirmed = slot.confirmed()?;
    let Some(checkpoint) = checkpoint else {
        if config.publish_existing_rows {
            let (at, snapshot) = backfill::snapshot_beside(connection, session, config).await?;
            tracing::info!(
                slot = %config.slot,
                at = %at,
                "took a snapshot beside the slot, which captured only outbox inserts before it"
            );
            return Ok((fresh(at), Some(snapshot)));
        }
        return Ok((fresh(confirmed), None));
    };
    if checkpoint.system_id != system.system_id || checkpoint.timeline != system.timeline {
        failover::check_promoted(connection, session, config, system, checkpoint).await?;
    }
    not_ahead(config, confirmed, checkpoint.lsn)?;
    // Checkpoints from here on name the server's timeline.
    Ok((
        Checkpoint {
            timeline: system.timeline,
            ..checkpoint.clone()
        },
        None,
    ))
}

/// Fails when the slot is confirmed past the checkpoint: the changes in between were consumed by
/// something else and never reached Kafka.
fn not_ahead(config: &RelayConfig, confirmed: Lsn, checkpoint: Lsn) -> Result<(), SlotError> {
    if confirmed > checkpoint {
        return Err(SlotError::Ahead {
            slot: config.slot.clone(),
            relay: config.name.clone(),
            confirmed,
            checkpoint,
        });
    }
    Ok(())
}

/// What `pg_replication_slots` says about a slot.
#[derive(Debug)]
struct SlotRow {
    name: String,
    /// `confirmed_flush_lsn` as text (empty for NULL).
    confirmed: String,
    wal_status: String,
    plugin: String,
}

impl SlotRow {
    /// The confirmed position. One that does not read as an LSN is an error, never `0/0`: the
    /// safety check `confirmed > checkpoint` depends on it.
    fn confirmed(&self) -> Result<Lsn, SlotError> {
        self.confirmed.parse().map_err(|_| SlotError::Unreadable {
            slot: self.name.clone(),
            value: self.confirmed.clone(),
        })
    }
}

/// The slot's row, `None` if it does not exist.
async fn read_slot(session: &mut Session, slot: &str) -> Result<Option<SlotRow>, RelayError> {
    let rows = session
        .query_params_text(
            "SELECT confirmed_flush_lsn::text, wal_status, plugin FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(Some(SlotRow {
        name: slot.to_owned(),
        confirmed: column(0),
        wal_status: column(1),
        plugin: column(2),
    }))
}
