//! Lets the slot's `restart_lsn` follow its confirmed position on PostgreSQL 16+.
//!
//! Confirming a position does not move `restart_lsn` by itself: the server moves it only to a
//! running-transactions record that the slot decoded before the confirmed position, and logs one
//! at checkpoints and every 15 s of activity. While the outbox is idle and other tables write,
//! the retained WAL is that cadence's worth of their WAL. PostgreSQL 16 lets a session log such a
//! record at once (`pg_log_standby_snapshot()`, superuser-only unless granted; `outboxd migrate`
//! grants it where it may and `check` names the grant): the WAL watch calls it when `restart_lsn`
//! trails the confirmed position by more than [`TRAILING`], so the slot releases WAL within
//! about one WAL poll and one idle confirmation.
//!
//! The record is a few bytes and logs nothing while nothing else writes: after one, the slot
//! confirms past it and `restart_lsn` no longer trails. A long transaction open on the server
//! still holds `restart_lsn` at its start (the record cannot move past it): the watch then calls
//! once per poll, which costs one such record each time.

use crate::pg::sql::quote_identifier;
use crate::pg::wire::{Session, WireError};
use crate::pg::Lsn;

/// The function, as `to_regprocedure` and `GRANT` name it.
pub(crate) const FUNCTION: &str = "pg_catalog.pg_log_standby_snapshot()";

/// Less than this between `restart_lsn` and the confirmed position is left to the server: a
/// fraction of a WAL segment (16 MB), the unit in which WAL is removed.
const TRAILING: u64 = 1 << 20;

/// The slot's positions and what the server allows, as the WAL watch reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotState {
    /// `restart_lsn`: the oldest WAL the slot retains.
    pub(super) restart: Lsn,
    /// `confirmed_flush_lsn`.
    pub(super) confirmed: Lsn,
    /// The server is a standby, where the function refuses to run (its primary logs the records).
    pub(super) in_recovery: bool,
    /// The function exists (16+) and the role may execute it.
    pub(super) may_log: bool,
}

/// The columns of [`SlotState`] after the slot's, for the WAL watch's query: whether the server
/// is in recovery and whether the role may call the function (NULL before 16, where it does not
/// exist).
pub(super) const STATE_COLUMNS: &str = "pg_catalog.pg_is_in_recovery(), \
     coalesce(pg_catalog.has_function_privilege(\
       pg_catalog.to_regprocedure('pg_catalog.pg_log_standby_snapshot()'), 'EXECUTE'), false)";

/// `outboxd migrate`: grants the relay's `role` the function where it exists (16+), the role
/// lacks it and the session's role may grant it (a superuser; on a managed service usually not,
/// and `check` names the grant). Whether it granted.
pub(crate) async fn grant(session: &mut Session, role: &str) -> Result<bool, WireError> {
    let wanted = session
        .query_params_text(
            "SELECT coalesce(pg_catalog.has_function_privilege(f, 'EXECUTE WITH GRANT OPTION') \
                    AND NOT pg_catalog.has_function_privilege($1, f, 'EXECUTE'), false) \
             FROM pg_catalog.to_regprocedure($2) f",
            &[role, FUNCTION],
        )
        .await?;
    if wanted
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .as_deref()
        != Some("t")
    {
        return Ok(false);
    }
    session
        .simple_query(&format!(
            "GRANT EXECUTE ON FUNCTION {FUNCTION} TO {}",
            quote_identifier(role)
        ))
        .await?;
    Ok(true)
}

/// Whether the role lacking the privilege was logged (once a run).
#[derive(Debug, Default)]
pub(super) struct StandbySnapshots {
    said_refused: bool,
}

impl StandbySnapshots {
    /// Logs a running-transactions record if the slot's `restart_lsn` trails and the server
    /// allows it; says once why not when only the privilege is missing.
    pub(super) async fn follow(
        &mut self,
        session: &mut Session,
        slot: SlotState,
        role: &str,
    ) -> Result<(), WireError> {
        if slot.in_recovery || slot.confirmed.0.saturating_sub(slot.restart.0) <= TRAILING {
            return Ok(());
        }
        if slot.may_log {
            session
                .simple_query("SELECT pg_catalog.pg_log_standby_snapshot()")
                .await?;
        } else if session.server_version_num() >= 160_000 && !self.said_refused {
            self.said_refused = true;
            tracing::info!(
                restart_lsn = %slot.restart,
                confirmed_flush_lsn = %slot.confirmed,
                role = %quote_identifier(role),
                "the slot's restart_lsn moves only at the server's own running-transactions \
                 records (checkpoints, every 15 s): GRANT EXECUTE ON FUNCTION \
                 pg_catalog.pg_log_standby_snapshot() TO the role lets the relay log one when it \
                 trails, so that an idle slot retains less WAL"
            );
        }
        Ok(())
    }
}
