//! `check` of Debezium's signal table (`snapshot.signal_table`): a signal is a row inserted into
//! it, which the relay sees only if a publication of the relay's publishes the table, and reads
//! as `id, type, data` only if the table has those three columns.

use super::facts::Spelling;
use super::AREA;
use crate::ops::check::report::Report;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;

/// The signal table exists, has three columns and is published.
pub(super) async fn signal_table(
    session: &mut Session,
    config: &RelayConfig,
    names: &Spelling,
    report: &mut Report,
) -> Result<(), WireError> {
    let Some(table) = &config.snapshot.signal_table else {
        return Ok(());
    };
    let rows = session
        .query_params_text(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text, \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p \
                     WHERE p.pubname = ANY($3::name[]) AND p.schemaname = n.nspname \
                     AND p.tablename = c.relname)::text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[
                &table.schema,
                &table.table,
                &array_literal(&config.publications),
            ],
        )
        .await?;
    let sql_name = format!(
        "{}.{}",
        names.ident(&table.schema),
        names.ident(&table.table)
    );
    let Some(row) = rows.first() else {
        report.fail(
            AREA,
            format!("signal table {table} does not exist"),
            format!(
                "CREATE TABLE {sql_name} (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, \
                 data varchar(2048)); then ALTER PUBLICATION {} ADD TABLE {sql_name}; (or empty \
                 snapshot.signal_table)",
                names.ident(&config.publications[0])
            ),
        );
        return Ok(());
    };
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    if field(0) != "3" {
        report.fail(
            AREA,
            format!(
                "signal table {table} has {} columns; a signal row is read as Debezium reads it, \
                 id, type and data",
                field(0)
            ),
            "give it exactly the columns (id varchar, type varchar, data varchar)",
        );
    } else if field(1) != "true" {
        report.fail(
            AREA,
            format!(
                "signal table {table} is in none of the publications {:?}: the relay would \
                 never see a signal",
                config.publications
            ),
            format!(
                "ALTER PUBLICATION {} ADD TABLE {sql_name};",
                names.ident(&config.publications[0])
            ),
        );
    } else {
        report.ok(AREA, format!("signal table {table} is published"));
    }
    Ok(())
}
