//! `check`'s Postgres side: connection, the settings and privileges each mode needs, the slot,
//! the publications and the outbox tables. Fixes name tables, roles and publications as SQL
//! spells them (the server's `quote_ident`), so an odd name gives a fix that runs.

use std::collections::HashMap;

use super::report::Report;
use super::SlotVerdict;
use crate::pg::sql::{quote_identifier, quote_literal};
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{ReplicationConnection, Session, WireError};
use crate::relay::{RelayConfig, RelayMode};
use crate::source::poll::{AfterPublish, PollTable, NOTIFY_TRIGGER};

const AREA: &str = "postgres";

/// Runs the Postgres checks; `slot` says what a missing slot would mean.
pub(super) async fn checks(config: &RelayConfig, slot: SlotVerdict, report: &mut Report) {
    let target = format!(
        "{}:{}/{} as {}",
        config.postgres.host, config.postgres.port, config.postgres.dbname, config.postgres.user
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
            super::recreated::publications_recreated(session, config, report).await?;
            publications(session, config, &names, report).await?;
            for (table, found) in config.poll.tables.iter().zip(&tables) {
                outbox_published(config, &names, table, found, report);
                if slot == SlotVerdict::New && found.exists && found.may_poll {
                    rows_before_slot(session, config, table, report).await?;
                }
            }
            replica_identities(session, config, report).await?;
            replication_connection(config, &names, report).await;
        }
    }
    Ok(())
}

/// Server-wide facts both modes' checks use.
#[derive(Debug)]
struct ServerFacts {
    wal_level: String,
    may_replicate: bool,
    max_slots: u64,
    used_slots: u64,
}

impl ServerFacts {
    async fn read(session: &mut Session) -> Result<Self, WireError> {
        let row = super::super::first_row(
            session,
            "SELECT current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
                    current_setting('max_replication_slots'), \
                    (SELECT count(*) FROM pg_replication_slots)",
            &[],
        )
        .await?
        .unwrap_or_default();
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(Self {
            wal_level: column(0),
            may_replicate: column(1) == "t",
            max_slots: column(2).parse().unwrap_or(0),
            used_slots: column(3).parse().unwrap_or(0),
        })
    }
}

/// The names a fix may print, as SQL spells them: `public.outbox` stays bare, `Odd Name` is
/// quoted.
#[derive(Debug)]
struct Spelling(HashMap<String, String>);

impl Spelling {
    async fn read(session: &mut Session, config: &RelayConfig) -> Result<Self, WireError> {
        let mut names = vec![config.postgres.user.clone()];
        names.extend(config.publications.iter().cloned());
        for table in &config.poll.tables {
            names.extend([
                table.schema.clone(),
                table.table.clone(),
                table.id_column.clone(),
                table.order_by.clone(),
            ]);
        }
        if let AfterPublish::Mark { column } = &config.poll.after_publish {
            names.push(column.clone());
        }
        let rows = session
            .query_params_text(
                "SELECT n, quote_ident(n) FROM unnest($1::text[]) n",
                &[&array_literal(&names)],
            )
            .await?;
        Ok(Self(
            rows.into_iter()
                .filter_map(|row| {
                    let mut row = row.into_iter();
                    Some((row.next()??, row.next()??))
                })
                .collect(),
        ))
    }

    /// `name` as an SQL identifier.
    fn ident(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| quote_identifier(name))
    }

    /// `schema.table` as SQL names it.
    fn table(&self, table: &PollTable) -> String {
        format!("{}.{}", self.ident(&table.schema), self.ident(&table.table))
    }
}

/// One outbox table: whether it exists, whether the role may poll it, whether a publication
/// of the relay's publishes it, whether it has poll mode's notify trigger. One query for both
/// modes' checks.
#[derive(Debug)]
struct TableFacts {
    exists: bool,
    may_poll: bool,
    published: bool,
    notify_trigger: bool,
}

impl TableFacts {
    async fn read(
        session: &mut Session,
        config: &RelayConfig,
        table: &PollTable,
    ) -> Result<Self, WireError> {
        let row = super::super::first_row(
            session,
            "SELECT c.oid IS NOT NULL, \
                    c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT') \
                      AND has_table_privilege(c.oid, $2::text), \
                    EXISTS (SELECT 1 FROM pg_publication_tables \
                            WHERE pubname = ANY($3::name[]) \
                              AND schemaname = $4::text AND tablename = $5::text), \
                    EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND tgname = $6::text) \
             FROM (SELECT to_regclass($1::text) AS oid) c",
            &[
                &table.sql_name(),
                take_away(config),
                &array_literal(&config.publications),
                &table.schema,
                &table.table,
                NOTIFY_TRIGGER,
            ],
        )
        .await?
        .unwrap_or_default();
        let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
        Ok(Self {
            exists: flag(0),
            may_poll: flag(1),
            published: flag(2),
            notify_trigger: flag(3),
        })
    }
}

/// The privilege poll mode needs beside SELECT.
fn take_away(config: &RelayConfig) -> &'static str {
    match config.poll.after_publish {
        AfterPublish::Delete => "DELETE",
        AfterPublish::Mark { .. } => "UPDATE",
    }
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

fn poll_summary(config: &RelayConfig, tables: &[TableFacts]) -> String {
    let take_away = take_away(config);
    let unpollable: Vec<String> = config
        .poll
        .tables
        .iter()
        .zip(tables)
        .filter_map(|(table, found)| match (found.exists, found.may_poll) {
            (false, _) => Some(format!("{} does not exist", table.qualified())),
            (true, false) => Some(format!(
                "the role lacks SELECT or {take_away} on {}",
                table.qualified()
            )),
            (true, true) => None,
        })
        .collect();
    if unpollable.is_empty() {
        format!("poll mode is possible: the role may SELECT and {take_away} on every outbox table")
    } else {
        format!("poll mode is not possible: {}", unpollable.join("; "))
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
    let count = crate::relay::backfill::rows_older_than_slot(session, config, table).await?;
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

/// Postgres itself refuses UPDATE and DELETE on a table that publishes them without a replica
/// identity, and CDC events of such a table could not carry a key.
async fn replica_identities(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    let unidentified = session
        .query_params_text(
            "SELECT DISTINCT quote_ident(pt.schemaname) || '.' || quote_ident(pt.tablename) \
             FROM pg_publication_tables pt \
             JOIN pg_publication p ON p.pubname = pt.pubname \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = ANY($1::name[]) AND (p.pubupdate OR p.pubdelete) \
               AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                    (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
            &[&array_literal(&config.publications)],
        )
        .await?;
    if unidentified.is_empty() {
        report.ok(AREA, "every published table has a replica identity");
    }
    for row in unidentified {
        let table = row.into_iter().next().flatten().unwrap_or_default();
        report.fail(
            AREA,
            format!(
                "published table {table} has no replica identity: PostgreSQL refuses its UPDATEs \
                 and DELETEs while it is published, and its change events would have no key"
            ),
            format!("ALTER TABLE {table} REPLICA IDENTITY FULL; (or give it a primary key)"),
        );
    }
    Ok(())
}

/// Poll mode: one outbox table readable and emptiable, its columns and indexes.
async fn poll_table(
    session: &mut Session,
    config: &RelayConfig,
    names: &Spelling,
    table: &PollTable,
    found: &TableFacts,
    report: &mut Report,
) -> Result<(), WireError> {
    let (shown, sql) = (table.qualified(), names.table(table));
    let role = &config.postgres.user;
    let take_away = take_away(config);
    let mark = match &config.poll.after_publish {
        AfterPublish::Delete => None,
        AfterPublish::Mark { column } => Some(column.as_str()),
    };
    if !found.exists {
        report.fail(
            AREA,
            format!("outbox table {shown} does not exist"),
            "create it (`outboxd migrate` creates public.outbox) or correct outbox.tables",
        );
        return Ok(());
    }
    if found.may_poll {
        report.ok(
            AREA,
            format!("role {role} may SELECT and {take_away} on {shown}"),
        );
    } else {
        report.fail(
            AREA,
            format!(
                "role {role} lacks SELECT or {take_away} on {shown}: poll mode reads the rows and \
                 then {}",
                if mark.is_some() {
                    "marks them"
                } else {
                    "deletes them"
                }
            ),
            format!(
                "GRANT SELECT, {take_away} ON {sql} TO {};",
                names.ident(role)
            ),
        );
    }
    let columns = session
        .query_params_text(
            "SELECT a.attname, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                    AND i.indkey[0] = a.attnum AND i.indisunique AND i.indnkeyatts = 1), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                    AND i.indkey[0] = a.attnum) \
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
             AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table.sql_name()],
        )
        .await?;
    let column = |wanted: &str| {
        columns
            .iter()
            .find(|c| c.first().cloned().flatten().as_deref() == Some(wanted))
            .map(|c| {
                let flag = |i: usize| c.get(i).cloned().flatten().as_deref() == Some("t");
                (flag(1), flag(2))
            })
    };
    let (id, order_by) = (&table.id_column, &table.order_by);
    match column(id) {
        None => report.fail(
            AREA,
            format!("{shown} has no id column {id:?}"),
            "name the event id column in outbox.columns.id: checkpoints name rows by it",
        ),
        Some((false, _)) => report.fail(
            AREA,
            format!(
                "id column {id:?} of {shown} is not unique: a checkpoint naming an id could take \
                 away rows never published"
            ),
            format!("ALTER TABLE {sql} ADD PRIMARY KEY ({});", names.ident(id)),
        ),
        Some((true, _)) => report.ok(AREA, format!("{shown}: id column {id:?} is unique")),
    }
    match column(order_by) {
        None => report.fail(
            AREA,
            format!("{shown} has no column {order_by:?} to publish in order of (poll.order_by)"),
            format!(
                "`outboxd migrate` adds seq to public.outbox; elsewhere ALTER TABLE {sql} ADD \
                 COLUMN {order} bigserial; CREATE INDEX ON {sql} ({order});",
                order = names.ident(order_by)
            ),
        ),
        Some((_, false)) => report.warn(
            AREA,
            format!(
                "no index on {shown} starts with {order_by:?}: every poll sorts the whole backlog"
            ),
            format!("CREATE INDEX ON {sql} ({});", names.ident(order_by)),
        ),
        Some((_, true)) => report.ok(
            AREA,
            format!("{shown}: rows are published in order of {order_by:?}"),
        ),
    }
    if let Some(mark) = mark.filter(|mark| column(mark).is_none()) {
        report.fail(
            AREA,
            format!("{shown} has no column {mark:?} to mark published rows in (poll.mark_column)"),
            format!(
                "ALTER TABLE {sql} ADD COLUMN {} timestamptz;",
                names.ident(mark)
            ),
        );
    }
    if config.poll.notify && !found.notify_trigger {
        report.warn(
            AREA,
            format!(
                "{shown} has no notify trigger: new rows wait for the next poll (up to \
                 poll.interval)"
            ),
            "run `outboxd migrate` with relay.mode = \"poll\", which attaches it",
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
