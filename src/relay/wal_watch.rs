//! Watches the server's WAL position and the slot's `restart_lsn` on a plain SQL session of its
//! own: the replication lag and retained-WAL metrics come from here, and so does `/readyz`'s
//! "Postgres answers", which notices a stopped server within one interval even while the
//! replication connection has not noticed yet.

use std::convert::Infallible;
use std::time::Duration;

use crate::metrics::metrics;
use crate::pg::wire::{Session, WireError};
use crate::pg::Lsn;

use super::RelayConfig;

/// Polls every `config.wal_poll_interval` until dropped.
pub(super) async fn watch(config: &RelayConfig) -> Infallible {
    let mut session: Option<Session> = None;
    let mut ticks = tokio::time::interval(config.wal_poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A server that hangs counts as unreachable: the next tick asks again on a new session.
        let polled = tokio::time::timeout(
            config.wal_poll_interval.max(Duration::from_secs(1)),
            positions(&mut session, config),
        )
        .await;
        match polled {
            Ok(Ok(positions)) => metrics().observe_server(Some(positions)),
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "WAL position query failed");
                session = None;
                metrics().observe_server(None);
            }
            Err(_) => {
                tracing::debug!("WAL position query timed out");
                session = None;
                metrics().observe_server(None);
            }
        }
    }
}

/// The server's WAL position (its receive position on a standby) and the slot's `restart_lsn`
/// (the position itself when the slot does not exist yet, so nothing counts as retained).
async fn positions(
    session: &mut Option<Session>,
    config: &RelayConfig,
) -> Result<(Lsn, Lsn), WireError> {
    let connection = match session {
        Some(connection) => connection,
        None => session.insert(Session::connect(&config.postgres).await?),
    };
    let rows = connection
        .query_params_text(
            "SELECT w.lsn::text, s.restart_lsn::text \
             FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                               ELSE pg_current_wal_lsn() END AS lsn) w \
             LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&config.slot],
        )
        .await?;
    let parse = |column: usize| {
        rows.first()
            .and_then(|row| row.get(column).cloned().flatten())
            .and_then(|text| text.parse::<Lsn>().ok())
    };
    let current = parse(0).unwrap_or(Lsn::ZERO);
    Ok((current, parse(1).unwrap_or(current)))
}
