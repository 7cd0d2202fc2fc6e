//! `check`'s Postgres side: connection, the settings and privileges each mode needs, the slot,
//! the publications and the outbox tables. Fixes name tables, roles and publications as SQL
//! spells them (the server's `quote_ident`), so an odd name gives a fix that runs.

mod facts;
mod failover;
mod generated;
mod identity;
mod poll;
mod signal;
mod standby_snapshot;

use super::report::Report;
use super::SlotVerdict;
use crate::pg::sql::quote_literal;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{ReplicationConnection, Session, WireError};
use crate::relay::{RelayConfig, RelayMode};
use crate::source::poll::PollTable;

use facts::{ServerFacts, Spelling, TableFacts};
use poll::{poll_summary, poll_table};

const AREA: &str = "postgres";

/// Runs the Postgres checks; `slot` says what a missing slot would mean.
pub(super) async fn checks(config: &RelayConfig, slot: SlotVerdict, report: &mut Report) {
    let target = format!(
        "{}/{} as {}",
        config.postgres.targets(),
        config.postgres.dbname,
        config.postgres.user
    );
    let mut session = match Session::connect(&config.postgres).await {
        Ok(session) => session,
        Err(error) => {
            report.fail(
                AREA,
                format!("cannot connect to {target}: {error}"),
                "check postgres.url (host, port, database, user), the password, and that \
                 pg_hba.conf admits this role from this host",
            );
            report.skip(AREA, "the other Postgres checks need a connection");
            return;
        }
    };
    let server = session.server_version_num();
    report.ok(AREA, format!("connected to {target} (server {server})"));
    if let Err(error) = catalog_checks(&mut session, config, slot, report).await {
        report.fail(
            AREA,
            format!("a catalog query failed: {error}"),
            "the role needs to read pg_catalog (every role can by default)",
        );
    }
}

/// Everything read from the catalog, for the mode configured (and a word on the other one).
async fn catalog_checks(
    session: &mut Session,
    config: &RelayConfig,
    slot: SlotVerdict,
    report: &mut Report,
) -> Result<(), WireError> {
    let facts = ServerFacts::read(session).await?;
    let names = Spelling::read(session, config).await?;
    let mut tables = Vec::new();
    for table in &config.poll.tables {
        tables.push(TableFacts::read(session, config, table).await?);
    }
    report.info("mode", logical_summary(&facts));
    report.info("mode", poll_summary(config, &tables));
    match config.mode {
        RelayMode::Poll => {
            for (table, found) in config.poll.tables.iter().zip(&tables) {
                poll_table(session, config, &names, table, found, report).await?;
            }
        }
        RelayMode::Logical => {
            server_settings(&facts, &names, config, report);
            slot_state(session, config, &facts, slot, report).await?;
            failover::failover(session, config, report).await?;
            standby_snapshot::standby_snapshot(session, config, &names, report).await?;
            super::recreated::publications_recreated(session, config, report).await?;
            publications(session, config, &names, report).await?;
            for (table, found) in config.poll.tables.iter().zip(&tables) {
                outbox_published(config, &names, table, found, report);
                if slot == SlotVerdict::New && found.exists && found.may_poll {
                    rows_before_slot(session, config, table, report).await?;
                }
            }
            identity::replica_identities(session, config, report).await?;
            generated::generated_replica_identity(session, config, report).await?;
            signal::signal_table(session, config, &names, report).await?;
            replication_connection(config, &names, report).await;
        }
    }
    Ok(())
}

fn logical_summary(facts: &ServerFacts) -> String {
    match (facts.wal_level == "logical", facts.may_replicate) {
        (true, true) => {
            "logical mode is possible: wal_level = logical and the role may replicate".into()
        }
        (false, _) => format!(
            "logical mode is not possible: wal_level = {} (needs logical, which takes a server \
             restart)",
            facts.wal_level
        ),
        (true, false) => {
            "logical mode is not possible: the role lacks the REPLICATION attribute".into()
        }
    }
}

/// `wal_level` and the role's REPLICATION attribute.
fn server_settings(
    facts: &ServerFacts,
    names: &Spelling,
    config: &RelayConfig,
    report: &mut Report,
) {
    if facts.wal_level == "logical" {
        report.ok(AREA, "wal_level = logical");
    } else {
        report.fail(
            AREA,
            format!(
                "wal_level = {}; logical decoding needs wal_level = logical",
                facts.wal_level
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (the setting only \
             changes at server start; on a managed service set it in the parameter group)",
        );
    }
    let role = &config.postgres.user;
    if facts.may_replicate {
        report.ok(AREA, format!("role {role} may replicate"));
    } else {
        report.fail(
            AREA,
            format!("role {role} lacks the REPLICATION attribute: it cannot stream the slot"),
            format!(
                "ALTER ROLE {} REPLICATION; (managed services grant a provider role instead, \
                 e.g. rds_replication)",
                names.ident(role)
            ),
        );
    }
}

/// The slot: its plugin and state, or, when it is missing, whether that is new or a loss.
async fn slot_state(
    session: &mut Session,
    config: &RelayConfig,
    facts: &ServerFacts,
    verdict: SlotVerdict,
    report: &mut Report,
) -> Result<(), WireError> {
    let name = &config.slot;
    let slot = super::super::first_row(
        session,
        "SELECT plugin, wal_status, active, active_pid::text FROM pg_replication_slots \
         WHERE slot_name = $1",
        &[name],
    )
    .await?;
    let Some(slot) = slot else {
        match verdict {
            SlotVerdict::Lost(at) => report.fail(
                AREA,
                format!(
                    "slot {name:?} does not exist, but relay {:?} has a checkpoint at {at}: the \
                     slot was dropped or invalidated, the changes since the checkpoint are gone, \
                     and run refuses to start",
                    config.name
                ),
                "to start over on purpose (accepting the loss), use a new relay.name; to keep \
                 the events, restore the slot from a backup before anything else",
            ),
            _ if facts.used_slots >= facts.max_slots => report.fail(
                AREA,
                format!(
                    "slot {name:?} does not exist and all {} replication slots are in use",
                    facts.max_slots
                ),
                "raise max_replication_slots (restart needed) or drop an unused slot",
            ),
            SlotVerdict::New => report.ok(
                AREA,
                format!("slot {name:?} does not exist yet; run creates it"),
            ),
            SlotVerdict::Unknown => report.warn(
                AREA,
                format!("slot {name:?} does not exist"),
                "run creates it if the relay has no checkpoint yet (Kafka could not tell) and \
                 refuses to start if it has one",
            ),
        }
        return Ok(());
    };
    let get = |i: usize| slot.get(i).cloned().flatten().unwrap_or_default();
    if get(0) != "pgoutput" {
        report.fail(
            AREA,
            format!("slot {name:?} uses the plugin {:?}, not pgoutput", get(0)),
            format!(
                "SELECT pg_drop_replication_slot({}); and let outboxd create it, or name \
                 another with postgres.slot",
                quote_literal(name)
            ),
        );
    } else if get(1) == "lost" {
        report.fail(
            AREA,
            format!("slot {name:?} lost WAL it needed (wal_status = lost)"),
            "the changes are gone: drop the slot and start over with a new relay name",
        );
    } else if get(2) == "t" {
        report.warn(
            AREA,
            format!("slot {name:?} is in use by process {}", get(3)),
            "only one relay may stream a slot; stop the other consumer first",
        );
    } else {
        report.ok(AREA, format!("slot {name:?} exists (pgoutput, {})", get(1)));
    }
    Ok(())
}

/// Each publication the relay streams exists.
async fn publications(
    session: &mut Session,
    config: &RelayConfig,
    names: &Spelling,
    report: &mut Report,
) -> Result<(), WireError> {
    let found: Vec<String> = session
        .query_params_text(
            "SELECT pubname FROM pg_publication WHERE pubname = ANY($1::name[])",
            &[&array_literal(&config.publications)],
        )
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    let tables: Vec<String> = config.poll.tables.iter().map(|t| names.table(t)).collect();
    for publication in &config.publications {
        if found.contains(publication) {
            report.ok(AREA, format!("publication {publication:?} exists"));
        } else {
            report.fail(
                AREA,
                format!("publication {publication:?} does not exist"),
                format!(
                    "CREATE PUBLICATION {} FOR TABLE {}; (or run `outboxd migrate`)",
                    names.ident(publication),
                    tables.join(", ")
                ),
            );
        }
    }
    Ok(())
}

/// Logical mode: an outbox table exists and a publication of the relay's publishes it.
fn outbox_published(
    config: &RelayConfig,
    names: &Spelling,
    table: &PollTable,
    found: &TableFacts,
    report: &mut Report,
) {
    let shown = table.qualified();
    if !found.exists {
        report.fail(
            AREA,
            format!("outbox table {shown} does not exist"),
            "create it (`outboxd migrate` creates public.outbox) or correct outbox.tables",
        );
    } else if !found.published {
        report.fail(
            AREA,
            format!(
                "outbox table {shown} is in none of the publications {:?}: its events would \
                 never be seen",
                config.publications
            ),
            format!(
                "ALTER PUBLICATION {} ADD TABLE {};",
                names.ident(&config.publications[0]),
                names.table(table)
            ),
        );
    } else {
        report.ok(AREA, format!("outbox table {shown} is published"));
    }
}

/// Logical mode, before the relay's first checkpoint: rows already in an outbox table that the
/// slot will never decode, because they committed before it existed (counted as `run` counts
/// them for its warning).
async fn rows_before_slot(
    session: &mut Session,
    config: &RelayConfig,
    table: &PollTable,
    report: &mut Report,
) -> Result<(), WireError> {
    let count = crate::relay::older_rows::rows_older_than_slot(session, config, table).await?;
    if let Some(count @ 1..) = count {
        report.warn(
            AREA,
            format!(
                "outbox table {} holds {count} row(s) written before replication slot {:?} \
                 existed: THE SLOT WILL NEVER CARRY THEM",
                table.qualified(),
                config.slot
            ),
            format!(
                "they are still in the table: the relay's first start (before its first \
                 checkpoint) publishes them once with `outboxd run {}`; create the slot before \
                 the application writes events (`outboxd migrate` does in logical mode)",
                crate::relay::backfill::OPTION
            ),
        );
    }
    Ok(())
}

/// Logical mode: a replication connection opens and identifies the system.
async fn replication_connection(config: &RelayConfig, names: &Spelling, report: &mut Report) {
    match ReplicationConnection::connect(&config.postgres).await {
        Ok(mut replication) => match replication.identify_system().await {
            Ok(system) => report.ok(
                AREA,
                format!(
                    "replication connection works (system {}, timeline {})",
                    system.system_id, system.timeline
                ),
            ),
            Err(error) => report.fail(
                AREA,
                format!("IDENTIFY_SYSTEM failed: {error}"),
                "the role needs the REPLICATION attribute",
            ),
        },
        Err(error) => report.fail(
            AREA,
            format!("cannot open a replication connection: {error}"),
            format!(
                "ALTER ROLE {} REPLICATION; and make sure max_wal_senders has a free sender and \
                 pg_hba.conf admits the role for database {}",
                names.ident(&config.postgres.user),
                config.postgres.dbname
            ),
        ),
    }
}
