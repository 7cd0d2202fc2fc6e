//! `check`, logical mode: a slot stuck behind a publication that was dropped and created again.
//!
//! PostgreSQL decodes each change with the catalog as it was when the change was written. A
//! change written while a publication of the relay's did not exist cannot be decoded for it
//! (`publication "…" does not exist`), however often the relay retries and whatever it is
//! called now. The cheap sign: the publication's catalog row is newer than the oldest catalog
//! state the slot still decodes with (`catalog_xmin`). An `ALTER PUBLICATION` leaves that sign
//! too, harmlessly, so the sign is confirmed by decoding the slot's pending changes with
//! `pg_logical_slot_peek_binary_changes`, which consumes nothing and moves nothing. PostgreSQL 18
//! decodes on past the missing publication with a WARNING of the same SQLSTATE, skipping the
//! changes: the same finding.

use super::report::Report;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{publication_names, Session, WireError};
use crate::relay::{missing_publication, RelayConfig, PUBLICATION_RECREATED_WAYS_OUT};

const AREA: &str = "postgres";

/// Fails when the slot (not in use) cannot decode its pending changes because a publication of
/// the relay's was dropped and created again after the slot's position.
pub(super) async fn publications_recreated(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    let newer = session
        .query_params_text(
            "SELECT p.pubname FROM pg_catalog.pg_publication p, pg_catalog.pg_replication_slots s \
             WHERE s.slot_name = $1 AND NOT s.active AND p.pubname = ANY($2::name[]) \
               AND age(p.xmin) < age(s.catalog_xmin)",
            &[&config.slot, &array_literal(&config.publications)],
        )
        .await?;
    if newer.is_empty() {
        return Ok(());
    }
    let peek = session
        .query_params(
            "SELECT count(*)::text FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2, 'messages', 'true')",
            &[&config.slot, &publication_names(&config.publications)],
        )
        .await
        // PostgreSQL 18 decodes past the missing publication with a WARNING, skipping its changes.
        .and_then(|result| match result.warnings.into_iter().next() {
            Some(warning) => Err(WireError::Server(warning)),
            None => Ok(()),
        });
    match peek {
        Ok(()) => {}
        Err(error) => match missing_publication(&error, &config.publications) {
            Some(publication) => report.fail(
                AREA,
                format!(
                    "publication {publication:?} was dropped and created again after slot {:?}'s \
                     position: the slot cannot decode the changes written while it did not \
                     exist, and run fails on them every time",
                    config.slot
                ),
                PUBLICATION_RECREATED_WAYS_OUT,
            ),
            None if matches!(error, WireError::Server(_)) => report.warn(
                AREA,
                format!(
                    "publication(s) changed after slot {:?}'s position, and decoding its pending \
                     changes to see whether it can failed: {error}",
                    config.slot
                ),
                "run `outboxd check` again while the relay is stopped, as a role with REPLICATION",
            ),
            None => return Err(error),
        },
    }
    Ok(())
}
