//! `outboxd check`: everything `run` needs, checked before it is needed, each failure with its fix.
//!
//! Checks run against the real services with the relay's own settings and role. Nothing is
//! changed: the slot is not created, topics are neither created nor made to be (see
//! [`kafka`]), and the transactions check uses the transactional id `outboxd-<name>.check`, so
//! running `check` beside a live relay does not fence it.

mod acls;
mod certificate;
mod connect;
mod kafka;
mod postgres;
mod probes;
mod recreated;
mod registry;
mod report;
mod topics;

pub use report::{Finding, Outcome, Report};

use crate::checkpoint::StoredCheckpoint;
use crate::config::Settings;
use crate::pg::Lsn;
use crate::relay::RelayConfig;

/// What a missing replication slot means, from the relay's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotVerdict {
    /// No checkpoint yet: run creates the slot.
    New,
    /// A logical checkpoint at this position exists: the slot was lost with the changes since.
    Lost(Lsn),
    /// Kafka could not tell.
    Unknown,
}

/// Runs every check.
pub async fn run(settings: &Settings, config: &RelayConfig) -> Report {
    let mut report = Report::default();
    report.ok("config", format!("relay {:?} configured", config.name));
    // Kafka first, on a blocking thread: whether a checkpoint exists decides what a missing slot
    // means.
    let (kafka_config, dead_letter_topic) = (config.clone(), settings.dead_letter.topic.clone());
    let kafka =
        tokio::task::spawn_blocking(move || kafka::checks(&kafka_config, &dead_letter_topic)).await;
    let slot = match &kafka {
        Ok(kafka::KafkaFacts {
            checkpoint: Some(Some(StoredCheckpoint::Logical(checkpoint))),
            ..
        }) => SlotVerdict::Lost(checkpoint.lsn),
        Ok(kafka::KafkaFacts {
            checkpoint: Some(_),
            ..
        }) => SlotVerdict::New,
        _ => SlotVerdict::Unknown,
    };
    postgres::checks(config, slot, &mut report).await;
    registry::checks(config, &mut report).await;
    match kafka {
        Ok(kafka) => report.findings.extend(kafka.report.findings),
        Err(error) => report.fail(
            "kafka",
            format!("the Kafka checks panicked: {error}"),
            "report this as a bug",
        ),
    }
    report
}
