//! Published tables without a replica identity, each with the fix that works for it. Postgres
//! refuses UPDATE and DELETE on a table that publishes them without one, and its CDC events could
//! not carry a key. The fix is the table's own key when it has one: its primary key (`REPLICA
//! IDENTITY DEFAULT`), else a unique index Postgres accepts as identity (not partial, not
//! deferrable, no expression, NOT NULL columns). `REPLICA IDENTITY FULL` only when every column is
//! published: FULL puts every column in the identity, and Postgres refuses every UPDATE and DELETE
//! of a table whose identity holds a column a publication leaves out (a column list on 15+, a
//! generated column on 18, a virtual one always). Otherwise: a primary key on published columns.

use super::super::report::Report;
use super::AREA;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;

/// Fails for each table of the relay's publications that publishes updates or deletes without a
/// replica identity, with the fix for that table.
pub(super) async fn replica_identities(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    let publications = array_literal(&config.publications);
    let unidentified = session
        .query_params_text(
            "SELECT DISTINCT quote_ident(pt.schemaname) || '.' || quote_ident(pt.tablename), \
                    c.oid::text \
             FROM pg_publication_tables pt \
             JOIN pg_publication p ON p.pubname = pt.pubname \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = ANY($1::name[]) AND (p.pubupdate OR p.pubdelete) \
               AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                    (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
            &[&publications],
        )
        .await?;
    if unidentified.is_empty() {
        report.ok(AREA, "every published table has a replica identity");
    }
    let unpublished = unpublished_column(session.server_version_num());
    for row in unidentified {
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (table, oid) = (column(0), column(1));
        let options = session
            .query_params_text(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i \
                                    WHERE i.indrelid = c.oid AND i.indisprimary)::text, \
                            (SELECT quote_ident(ic.relname) FROM pg_index i \
                             JOIN pg_class ic ON ic.oid = i.indexrelid \
                             WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate \
                               AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL \
                               AND NOT EXISTS (SELECT 1 FROM pg_attribute a \
                                   WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
                                     AND (NOT a.attnotnull OR {unpublished})) \
                             ORDER BY ic.relname LIMIT 1), \
                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) \
                             FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                               AND NOT a.attisdropped AND {unpublished}) \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.oid = $1::oid"
                ),
                &[&oid, &publications],
            )
            .await?;
        let option = |i: usize| options.first().and_then(|r| r.get(i).cloned().flatten());
        let fix = match (option(0).as_deref() == Some("true"), option(1), option(2)) {
            (true, _, _) => {
                format!("ALTER TABLE {table} REPLICA IDENTITY DEFAULT; (its primary key)")
            }
            (false, Some(index), _) => format!(
                "ALTER TABLE {table} REPLICA IDENTITY USING INDEX {index}; (a unique index on \
                 NOT NULL columns; or give the table a primary key)"
            ),
            (false, None, None) => format!(
                "ALTER TABLE {table} REPLICA IDENTITY FULL; (or give it a primary key, which \
                 its change events then carry as their key)"
            ),
            (false, None, Some(columns)) => format!(
                "ALTER TABLE {table} ADD PRIMARY KEY (<published columns>); (not REPLICA \
                 IDENTITY FULL: it would hold {columns}, which the publication does not \
                 publish, and PostgreSQL would refuse every UPDATE and DELETE of the table)"
            ),
        };
        report.fail(
            AREA,
            format!(
                "published table {table} has no replica identity: PostgreSQL refuses its UPDATEs \
                 and DELETEs while it is published, and its change events would have no key"
            ),
            fix,
        );
    }
    Ok(())
}

/// SQL true for a column `a` of table `c` (schema `n`) that one of the publications `$2` leaves
/// out, so that Postgres refuses a replica identity holding it. Before 15 every column a
/// publication carries is in the identity's reach (no column lists; generated columns are never
/// checked); 15 to 17 check column lists, where generated columns cannot be; 18 checks generated
/// columns too (`pg_publication_tables.attnames` names what each publication publishes).
fn unpublished_column(server_version_num: u32) -> String {
    let left_out = "EXISTS (SELECT 1 FROM pg_publication_tables pt \
         JOIN pg_publication p ON p.pubname = pt.pubname \
         WHERE pt.pubname = ANY($2::name[]) AND (p.pubupdate OR p.pubdelete) \
           AND pt.schemaname = n.nspname AND pt.tablename = c.relname \
           AND NOT a.attname = ANY(pt.attnames))";
    match server_version_num {
        // Never: `$2` is named so that the server knows its type.
        ..150_000 => "($2::name[] IS NULL AND false)".into(),
        150_000..180_000 => format!("(a.attgenerated = '' AND {left_out})"),
        _ => left_out.into(),
    }
}
