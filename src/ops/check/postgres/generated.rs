//! PostgreSQL 18 refuses every UPDATE and DELETE of a table that publishes them when its replica
//! identity holds a generated column the publication does not publish ("cannot update table ...:
//! Replica identity must not contain unpublished generated columns"): a virtual one (never
//! published) under `REPLICA IDENTITY FULL`, or a stored one unless the publication says
//! `publish_generated_columns = stored`. The application's writes fail, not the relay's: `check`
//! finds such tables before they are published.

use super::super::report::Report;
use super::AREA;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;

/// Fails for each table of the relay's publications whose replica identity holds an unpublished
/// generated column (18+; before 18 generated columns are never published and not refused).
pub(super) async fn generated_replica_identity(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    if session.server_version_num() < 180_000 {
        return Ok(());
    }
    // The replica identity's columns: every column under FULL, else its index's (the primary
    // key's by default). 18's `attnames` names exactly the columns a publication publishes.
    let refused = session
        .query_params_text(
            "SELECT quote_ident(pt.schemaname) || '.' || quote_ident(pt.tablename), \
                    quote_ident(pt.pubname), \
                    string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), \
                    bool_or(a.attgenerated = 'v')::text, c.relreplident::text \
             FROM pg_catalog.pg_publication_tables pt \
             JOIN pg_catalog.pg_publication p ON p.pubname = pt.pubname \
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                 AND NOT a.attisdropped AND a.attgenerated <> '' \
             WHERE pt.pubname = ANY($1::name[]) AND (p.pubupdate OR p.pubdelete) \
               AND NOT a.attname = ANY(pt.attnames) \
               AND (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                    WHERE i.indrelid = c.oid AND a.attnum = ANY(i.indkey) \
                      AND ((c.relreplident = 'd' AND i.indisprimary) \
                        OR (c.relreplident = 'i' AND i.indisreplident)))) \
             GROUP BY 1, 2, 5 ORDER BY 1, 2",
            &[&array_literal(&config.publications)],
        )
        .await?;
    for row in refused {
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (table, publication, columns) = (column(0), column(1), column(2));
        let virtual_ = column(3) == "true";
        let fix = if virtual_ {
            format!(
                "ALTER TABLE {table} REPLICA IDENTITY DEFAULT; (a virtual column is never \
                 published: keep it out of the replica identity, a primary key or \
                 REPLICA IDENTITY USING INDEX without it; or make it STORED and publish it with \
                 ALTER PUBLICATION {publication} SET (publish_generated_columns = stored))"
            )
        } else {
            format!(
                "ALTER PUBLICATION {publication} SET (publish_generated_columns = stored); (or \
                 keep the column out of the replica identity)"
            )
        };
        let identity = if column(4) == "f" {
            "REPLICA IDENTITY FULL"
        } else {
            "its replica identity index"
        };
        report.fail(
            AREA,
            format!(
                "published table {table}: {identity} holds the generated column(s) {columns}, \
                 which publication {publication} does not publish: PostgreSQL 18 refuses every \
                 UPDATE and DELETE of the table (\"Replica identity must not contain \
                 unpublished generated columns\")"
            ),
            fix,
        );
    }
    Ok(())
}
