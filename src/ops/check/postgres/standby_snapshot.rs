//! PostgreSQL 16+: whether the relay's role may call `pg_log_standby_snapshot()`, with which the
//! relay lets its slot's `restart_lsn` follow the confirmed position (`relay::standby_snapshot`).
//! Without it the slot still works; it only retains the WAL written between the server's own
//! running-transactions records.

use super::super::report::Report;
use super::facts::Spelling;
use crate::pg::wire::{Session, WireError};
use crate::relay::standby_snapshot::FUNCTION;
use crate::relay::RelayConfig;

/// A warning with the grant when the function exists and the role may not call it.
pub(super) async fn standby_snapshot(
    session: &mut Session,
    config: &RelayConfig,
    names: &Spelling,
    report: &mut Report,
) -> Result<(), WireError> {
    let row = crate::ops::first_row(
        session,
        "SELECT pg_catalog.has_function_privilege(f, 'EXECUTE') \
         FROM pg_catalog.to_regprocedure($1) f WHERE f IS NOT NULL",
        &[FUNCTION],
    )
    .await?;
    let Some(row) = row else {
        return Ok(()); // before 16: the function does not exist
    };
    let role = &config.postgres.user;
    if row.first().cloned().flatten().as_deref() == Some("t") {
        report.ok(
            super::AREA,
            format!(
                "role {role} may call {FUNCTION}: the slot's restart_lsn follows the confirmed \
                 position while the outbox is idle"
            ),
        );
    } else {
        report.warn(
            super::AREA,
            format!(
                "role {role} may not call {FUNCTION}: while the outbox is idle the slot retains \
                 the WAL other tables write until the server's next running-transactions record \
                 (a checkpoint, or 15 s of activity)"
            ),
            format!(
                "GRANT EXECUTE ON FUNCTION {FUNCTION} TO {}; (outboxd migrate grants it when it \
                 connects as a superuser)",
                names.ident(role)
            ),
        );
    }
    Ok(())
}
