//! `check`'s Postgres side for poll mode: each outbox table readable and emptiable, its id
//! column unique, its order column indexed, its mark column and notify trigger present.

use super::facts::{take_away, Spelling, TableFacts};
use super::AREA;
use crate::ops::check::report::Report;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;
use crate::source::poll::{AfterPublish, PollTable};

/// What poll mode would need that is missing, in one line.
pub(super) fn poll_summary(config: &RelayConfig, tables: &[TableFacts]) -> String {
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

/// Poll mode: one outbox table readable and emptiable, its columns and indexes.
pub(super) async fn poll_table(
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
