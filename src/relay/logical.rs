//! One attempt of the relay in logical mode: fence, read the checkpoint, check the slot against
//! it, start replication there, and pump until stopped or failed.

use crate::checkpoint::Checkpoint;
use crate::metrics::metrics;
use crate::pg::schema::Schema;
use crate::pg::wire::{
    PgOutputOptions, ReplicationConnection, ReplicationStream, Session, Streaming, SystemIdentity,
};
use crate::pg::Lsn;
use crate::sink::kafka::TransactionalProducer;

use super::routing::{Refusals, Routing};
use super::{fence, pump, read_checkpoint, Fenced, RelayConfig, RelayError, Shutdown};

/// The pgoutput protocol the relay speaks: version 1 has everything it needs (messages included),
/// and streaming stays off so only committed transactions are ever sent.
pub(super) const PROTOCOL_VERSION: u32 = 1;

/// What the start of a logical attempt hands the pump.
#[derive(Debug)]
pub(super) struct Started {
    /// The replication stream, positioned at `resume`.
    pub stream: ReplicationStream,
    /// The producer whose `init_transactions` fenced older instances.
    pub producer: TransactionalProducer,
    /// The checkpoint resumed from (or a fresh one at the slot's position).
    pub resume: Checkpoint,
    /// Primary keys and column types of the published tables.
    pub schema: Schema,
    /// Topic limits, the records refused before, the dead-letter log.
    pub routing: Routing,
}

/// Runs one attempt; `Ok` when shutdown was requested and the relay stopped cleanly.
pub(super) async fn attempt(
    config: &RelayConfig,
    shutdown: &Shutdown,
    refusals: &Refusals,
) -> Result<(), RelayError> {
    let started = start(config, refusals).await?;
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

    let mut connection = ReplicationConnection::connect(&config.postgres).await?;
    let system = connection.identify_system().await?;
    // Queries with values run on a plain session: a walsender speaks only the simple protocol,
    // which takes no parameters.
    let mut session = Session::connect(&config.postgres).await?;
    let resume = check_slot(
        &mut connection,
        &mut session,
        config,
        &system,
        checkpoint.as_ref(),
    )
    .await?;
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
        .start_replication(&config.slot, resume.lsn, &options)
        .await?;
    // The walsender starts at the slot's confirmed position when that is past ours, silently. A
    // slot moved between the check and the start would skip events: read it again, now that our
    // walsender holds it and nothing else can move it.
    let slot = read_slot(&mut session, &config.slot)
        .await?
        .ok_or_else(|| SlotError::Missing {
            slot: config.slot.clone(),
            relay: config.name.clone(),
            checkpoint: resume.lsn,
        })?;
    not_ahead(config, slot.confirmed()?, resume.lsn)?;
    Ok(Started {
        stream,
        producer,
        resume,
        schema,
        routing,
    })
}

/// The replication slot cannot be used as it is: going on would skip or repeat events.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot is gone though the relay has a checkpoint.
    #[error(
        "replication slot {slot:?} does not exist, but relay {relay:?} has a checkpoint at \
         {checkpoint}: the changes since then are gone with the slot. Recreating it would skip \
         them; to start over on purpose, use a new relay name"
    )]
    Missing {
        /// The slot.
        slot: String,
        /// The relay name.
        relay: String,
        /// The relay's checkpoint.
        checkpoint: Lsn,
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
    /// The checkpoint was written on another cluster or timeline.
    #[error(
        "the checkpoint of relay {relay:?} was written on system {checkpoint_system} timeline \
         {checkpoint_timeline}, but this server is system {system} timeline {timeline} (a \
         failover or another cluster): resuming could skip or repeat changes"
    )]
    OtherSystem {
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

/// Checks the slot against the checkpoint (creating the slot on a first start) and returns the
/// checkpoint to resume from: the stored one, or a fresh one at the slot's position.
async fn check_slot(
    connection: &mut ReplicationConnection,
    session: &mut Session,
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: Option<&Checkpoint>,
) -> Result<Checkpoint, RelayError> {
    let fresh = |lsn| Checkpoint {
        version: Checkpoint::VERSION,
        system_id: system.system_id.clone(),
        timeline: system.timeline,
        slot: config.slot.clone(),
        lsn,
        xid: None,
        commit_ts: None,
        events: 0,
    };
    let Some(slot) = read_slot(session, &config.slot).await? else {
        if let Some(checkpoint) = checkpoint {
            return Err(SlotError::Missing {
                slot: config.slot.clone(),
                relay: config.name.clone(),
                checkpoint: checkpoint.lsn,
            }
            .into());
        }
        let created = connection
            .create_replication_slot(&config.slot, false)
            .await?;
        tracing::info!(slot = %config.slot, at = %created.consistent_point, "created replication slot");
        return Ok(fresh(created.consistent_point));
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
        return Ok(fresh(confirmed));
    };
    if checkpoint.system_id != system.system_id || checkpoint.timeline != system.timeline {
        return Err(SlotError::OtherSystem {
            relay: config.name.clone(),
            checkpoint_system: checkpoint.system_id.clone(),
            checkpoint_timeline: checkpoint.timeline,
            system: system.system_id.clone(),
            timeline: system.timeline,
        }
        .into());
    }
    not_ahead(config, confirmed, checkpoint.lsn)?;
    Ok(checkpoint.clone())
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
