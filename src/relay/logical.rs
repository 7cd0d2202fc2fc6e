//! One attempt of the relay in logical mode: fence, read the checkpoint, check the slot against
//! it, start replication there, and pump until stopped or failed.

use std::future::Future;
use std::pin::Pin;

use crate::checkpoint::Checkpoint;
use crate::metrics::metrics;
use crate::pg::schema::Schema;
use crate::pg::wire::{
    quote_literal, PgOutputOptions, ReplicationConnection, ReplicationStream, Streaming,
    SystemIdentity,
};
use crate::pg::Lsn;
use crate::sink::kafka::TransactionalProducer;

use super::{fence, pump, read_checkpoint, RelayConfig, RelayError};

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
}

/// Runs one attempt; `Ok` when `shutdown` completed and the relay stopped cleanly.
pub(super) async fn attempt(
    config: &RelayConfig,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<(), RelayError> {
    let started = start(config).await?;
    metrics()
        .checkpoint_lsn
        .set(i64::try_from(started.resume.lsn.0).unwrap_or(i64::MAX));
    metrics().set_streaming(true);
    crate::service::ready(&format!(
        "streaming slot {} from {}",
        config.slot, started.resume.lsn
    ));
    pump::run(config, started, shutdown).await
}

/// Fences, reads the checkpoint, checks the slot and starts replication at the checkpoint.
async fn start(config: &RelayConfig) -> Result<Started, RelayError> {
    // Kafka first: init_transactions fences an older instance and settles our last transaction,
    // so the checkpoint read next is final.
    let (producer, offsets) = fence(config).await?;
    let checkpoint = read_checkpoint(config, offsets)
        .await?
        .map(|stored| stored.into_logical(&config.name))
        .transpose()?;

    let mut connection = ReplicationConnection::connect(&config.postgres).await?;
    let system = connection.identify_system().await?;
    let resume = check_slot(&mut connection, config, &system, checkpoint.as_ref()).await?;
    tracing::info!(
        relay = %config.name,
        slot = %config.slot,
        checkpoint = %resume.lsn,
        "starting replication"
    );
    let mut schema = Schema::default();
    schema
        .load_publications(&mut connection, &config.publications)
        .await?;
    let options = PgOutputOptions {
        proto_version: PROTOCOL_VERSION,
        publication_names: config.publications.clone(),
        messages: true,
        streaming: Streaming::Off,
        binary: false,
    };
    let stream = connection
        .start_replication(&config.slot, resume.lsn, &options)
        .await?;
    Ok(Started {
        stream,
        producer,
        resume,
        schema,
    })
}

/// Checks the slot against the checkpoint (creating the slot on a first start) and returns the
/// checkpoint to resume from: the stored one, or a fresh one at the slot's position.
async fn check_slot(
    connection: &mut ReplicationConnection,
    config: &RelayConfig,
    system: &SystemIdentity,
    checkpoint: Option<&Checkpoint>,
) -> Result<Checkpoint, RelayError> {
    let rows = connection
        .simple_query(&format!(
            "SELECT confirmed_flush_lsn::text, wal_status, plugin FROM pg_replication_slots \
             WHERE slot_name = {}",
            quote_literal(&config.slot)
        ))
        .await?;
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
    let Some(slot) = rows.first() else {
        if let Some(checkpoint) = checkpoint {
            return Err(RelayError::SlotLost(format!(
                "replication slot {:?} does not exist, but relay {:?} has a checkpoint at {}: the \
                 changes since then are gone with the slot. Recreating it would skip them; to \
                 start over on purpose, use a new relay name",
                config.slot, config.name, checkpoint.lsn
            )));
        }
        let created = connection
            .create_replication_slot(&config.slot, false)
            .await?;
        tracing::info!(slot = %config.slot, at = %created.consistent_point, "created replication slot");
        return Ok(fresh(created.consistent_point));
    };
    let column = |i: usize| slot.get(i).cloned().flatten().unwrap_or_default();
    let (confirmed, wal_status, plugin) = (column(0), column(1), column(2));
    if plugin != "pgoutput" {
        return Err(RelayError::Inconsistent(format!(
            "replication slot {:?} uses the output plugin {plugin:?}; outboxd needs pgoutput \
             (drop the slot and let outboxd create it)",
            config.slot
        )));
    }
    if wal_status == "lost" {
        return Err(RelayError::SlotLost(format!(
            "replication slot {:?} lost WAL it needed (wal_status = lost; max_slot_wal_keep_size \
             reached): changes are gone. Drop the slot and start over with a new relay name",
            config.slot
        )));
    }
    let confirmed: Lsn = confirmed.parse().unwrap_or(Lsn::ZERO);
    let Some(checkpoint) = checkpoint else {
        return Ok(fresh(confirmed));
    };
    if checkpoint.system_id != system.system_id || checkpoint.timeline != system.timeline {
        return Err(RelayError::Inconsistent(format!(
            "the checkpoint of relay {:?} was written on system {} timeline {}, but this server \
             is system {} timeline {} (a failover or another cluster): resuming could skip or \
             repeat changes",
            config.name,
            checkpoint.system_id,
            checkpoint.timeline,
            system.system_id,
            system.timeline
        )));
    }
    if confirmed > checkpoint.lsn {
        return Err(RelayError::Inconsistent(format!(
            "replication slot {:?} is confirmed at {confirmed}, past relay {:?}'s checkpoint at {}: \
             something else consumed the slot, and the changes in between never reached Kafka",
            config.slot, config.name, checkpoint.lsn
        )));
    }
    Ok(checkpoint.clone())
}
