//! Watches the server's WAL position and the slot's `restart_lsn` on a plain SQL session of its
//! own: the replication lag and retained-WAL metrics come from here, and so does `/readyz`'s
//! "Postgres answers", which notices a stopped server within one interval even while the
//! replication connection has not noticed yet. On PostgreSQL 16+ it also lets the slot's
//! `restart_lsn` follow its confirmed position (`standby_snapshot`).

use std::convert::Infallible;
use std::time::Duration;

use crate::metrics::metrics;
use crate::pg::wire::{Session, WireError};
use crate::pg::Lsn;

use super::standby_snapshot::{SlotState, StandbySnapshots, STATE_COLUMNS};
use super::RelayConfig;

/// Polls every `config.wal_poll_interval` until dropped.
pub(super) async fn watch(config: &RelayConfig) -> Infallible {
    let mut session: Option<Session> = None;
    let mut snapshots = StandbySnapshots::default();
    let mut ticks = tokio::time::interval(config.wal_poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A server that hangs counts as unreachable: the next tick asks again on a new session.
        let polled = tokio::time::timeout(
            config.wal_poll_interval.max(Duration::from_secs(1)),
            poll(&mut session, &mut snapshots, config),
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
/// (the position itself when the slot does not exist yet, so nothing counts as retained); on the
/// way, a running-transactions record if the slot's `restart_lsn` trails.
async fn poll(
    session: &mut Option<Session>,
    snapshots: &mut StandbySnapshots,
    config: &RelayConfig,
) -> Result<(Lsn, Lsn), WireError> {
    let connection = match session {
        Some(connection) => connection,
        None => session.insert(Session::connect(&config.postgres).await?),
    };
    let rows = connection
        .query_params_text(
            &format!(
                "SELECT w.lsn::text, s.restart_lsn::text, s.confirmed_flush_lsn::text, \
                        {STATE_COLUMNS} \
                 FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                                   ELSE pg_current_wal_lsn() END AS lsn) w \
                 LEFT JOIN pg_replication_slots s ON s.slot_name = $1"
            ),
            &[&config.slot],
        )
        .await?;
    let column = |i: usize| rows.first().and_then(|row| row.get(i).cloned().flatten());
    let parse = |i: usize| column(i).and_then(|text| text.parse::<Lsn>().ok());
    let current = parse(0).unwrap_or(Lsn::ZERO);
    let restart = parse(1).unwrap_or(current);
    if let Some(confirmed) = parse(2) {
        let slot = SlotState {
            restart,
            confirmed,
            in_recovery: column(3).as_deref() != Some("f"),
            may_log: column(4).as_deref() == Some("t"),
        };
        snapshots
            .follow(connection, slot, &config.postgres.user)
            .await?;
    }
    Ok((current, restart))
}
