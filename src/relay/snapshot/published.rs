//! The columns a snapshot reads: exactly those pgoutput publishes for the table, so that a read
//! event carries the columns a change event of the same table carries. `SELECT *` would add the
//! generated columns the stream leaves out (all of them before PostgreSQL 18; on 18 the virtual
//! ones, and the stored ones unless the publication says `publish_generated_columns = stored`)
//! and the columns a publication's column list (15+) leaves out.

use crate::pg::sql::quote_identifier;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::pg::RelationId;

/// The columns of `table` that `publications` publish, in column order. On 15+ the catalog's
/// `pg_publication_tables.attnames` applies column lists; it also names the generated columns on
/// 15 (and 18 names only those it publishes), while pgoutput before 18 sends none: they are left
/// out there by `attgenerated`. On 14 (no column lists) every column but the generated ones.
pub(super) async fn columns(
    session: &mut Session,
    table: RelationId,
    publications: &[String],
) -> Result<Vec<String>, WireError> {
    let server = session.server_version_num();
    let generated = if server >= 180_000 {
        ""
    } else {
        " AND a.attgenerated = ''"
    };
    let oid = table.0.to_string();
    let publications = array_literal(publications);
    let (column_lists, params) = if server >= 150_000 {
        (
            " AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p \
                 WHERE p.pubname = ANY($2::name[]) AND p.schemaname = n.nspname \
                 AND p.tablename = c.relname AND a.attname = ANY(p.attnames))",
            vec![oid.as_str(), publications.as_str()],
        )
    } else {
        ("", vec![oid.as_str()])
    };
    let rows = session
        .query_params_text(
            &format!(
                "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped\
                 {generated}{column_lists} ORDER BY a.attnum"
            ),
            &params,
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// `columns` as a select list, each identifier quoted.
pub(super) fn select_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_identifier(c))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_select_list_quotes_every_name() {
        let columns = ["id".to_owned(), "Mixed \"Case\"".to_owned()];
        assert_eq!(select_list(&columns), r#""id", "Mixed ""Case""""#);
    }
}
