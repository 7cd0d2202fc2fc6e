//! The standby lease (README, standby relays): of the instances running one relay name, the one
//! holding the lease is active; the others stand by and take it over the moment it is free.
//!
//! The lease is a session advisory lock on Postgres, on a plain session of its own, so it ends
//! with the process or its connection: a killed active frees it at once (the kernel closes the
//! socket, the backend exits), and a standby waiting in `pg_advisory_lock` gets it the same
//! moment. Kafka's fencing stays the safety net: each active begins with `init_transactions`,
//! so an instance that still thinks it is active can never commit after its successor started.
//!
//! # The key
//! `hashtextextended('outboxd standby <relay name>', 0)`: a 64-bit key, so different relay names
//! collide with odds of about n²/2⁶⁵ (none in practice), and Postgres' own hash of the name, the
//! one hash partitioning relies on, so it stays the same across platforms, versions and
//! `pg_upgrade`, and every instance computes it alike whatever its version. Advisory locks are per
//! database, as a relay's slot is. The prefix keeps it apart from poll mode's own lock of the
//! name (`outboxd poll <name>`), which the active takes on another session.
//!
//! # Partitions
//! An active that loses Postgres but still reaches Kafka must stop before a standby starts. It
//! proves it holds the lease every `relay.lease_timeout / 10`, and stops publishing (back to
//! standing by) once no proof came back for half the lease timeout. The server, for its part,
//! ends the lease session once it has heard nothing for the whole lease timeout
//! (`idle_session_timeout`, PostgreSQL 14+): through a partition nothing is heard, and the lease
//! goes to a standby only after the active has stopped. Should the active still commit (a batch
//! it was closing), the standby's `init_transactions` fences it first, and its checkpoint, read
//! after that, covers what the active committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::metrics::{metrics, Role};
use crate::pg::wire::{Session, WireError};

use super::{Backoff, RelayConfig, RelayError, Shutdown};

/// The message of the INFO line an instance becomes active with.
pub const ACTIVE: &str = "took the standby lease: this instance is active";

/// The message of the INFO line an instance begins to stand by with.
pub const STANDING_BY: &str = "standing by: another instance of this relay name holds the lease";

/// The message of the WARN line an active that lost the lease stops publishing with.
pub const LOST: &str = "lost the standby lease: stopped publishing, standing by";

/// SQLSTATE of a lock wait that reached `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The advisory lock's key, as SQL over the text parameter `$1` ([`key_text`]).
const KEY_SQL: &str = "hashtextextended($1, 0)";

/// The text the lease's key hashes.
pub fn key_text(relay: &str) -> String {
    format!("outboxd standby {relay}")
}

/// The lease, held: dropping it ends the session, which frees it.
#[derive(Debug)]
pub(super) struct Lease {
    /// The session holding the advisory lock, shared by [`Lease::hold`] and [`Lease::check`].
    session: Arc<Mutex<Session>>,
    /// `relay.lease_timeout`.
    timeout: Duration,
}

impl Lease {
    /// Proves the lease is still held every `lease_timeout / 10`; completes when that fails, or
    /// no proof came back for half the lease timeout: the instance must stop publishing.
    pub async fn hold(&self) -> String {
        let every = (self.timeout / 10).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut proven = Instant::now();
        loop {
            ticks.tick().await;
            let budget = (self.timeout / 2).saturating_sub(proven.elapsed());
            match tokio::time::timeout(budget, self.check()).await {
                Ok(Ok(())) => proven = Instant::now(),
                Ok(Err(error)) => return format!("the lease's session failed: {error}"),
                Err(_) => {
                    return format!(
                        "Postgres did not answer the lease's session for {:?} (half of \
                         relay.lease_timeout)",
                        self.timeout / 2
                    )
                }
            }
        }
    }

    /// Whether the lease's session still answers (it then still holds the lock).
    pub async fn check(&self) -> Result<(), WireError> {
        self.session.lock().await.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Waits for the lease, standing by meanwhile; `None` when shutdown was requested first. With
/// `take_over`, first ends the session of the instance holding it (an operator's explicit
/// takeover: the instance's next attempt fences the old one in Kafka too).
pub(super) async fn acquire(
    config: &RelayConfig,
    shutdown: &Shutdown,
    take_over: bool,
) -> Result<Option<Lease>, RelayError> {
    metrics().set_role(Role::Standby);
    let key = key_text(&config.name);
    let round = (config.lease_timeout / 5).max(Duration::from_millis(100));
    let mut backoff = Backoff::new(config.backoff);
    let mut take_over = take_over;
    let mut announced = false;
    loop {
        let began = Instant::now();
        let attempt = async {
            let mut session = connect(config, round).await?;
            if std::mem::take(&mut take_over) {
                let ended = terminate_holders(&mut session, &key).await?;
                tracing::warn!(
                    relay = %config.name,
                    ended,
                    "taking over: ended the lease session of the active instance"
                );
            }
            loop {
                if wait_round(&mut session, &key, round).await? {
                    return Ok::<_, WireError>(session);
                }
                metrics().set_lease_reachable(true);
                if !std::mem::replace(&mut announced, true) {
                    tracing::info!(relay = %config.name, "{STANDING_BY}");
                    crate::service::ready(&format!("standing by for relay {}", config.name));
                }
            }
        };
        let error = tokio::select! {
            outcome = attempt => match outcome {
                Ok(mut session) => {
                    evict_predecessors(config, &mut session).await;
                    metrics().set_role(Role::Active);
                    tracing::info!(relay = %config.name, "{ACTIVE}");
                    return Ok(Some(Lease {
                        session: Arc::new(Mutex::new(session)),
                        timeout: config.lease_timeout,
                    }));
                }
                Err(error) => error,
            },
            () = shutdown.requested() => return Ok(None),
        };
        metrics().set_lease_reachable(false);
        if !error.is_transient() {
            return Err(error.into());
        }
        let retry_in = backoff.after(began.elapsed());
        tracing::warn!(error = %error, ?retry_in, "cannot wait for the standby lease; retrying");
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = shutdown.requested() => return Ok(None),
        }
    }
}

/// A session for the lease: its lock waits end after `round`, and the server ends it once idle
/// for `relay.lease_timeout` (PostgreSQL 14+; before, the lease ends when the server's TCP
/// keepalives find the connection dead).
async fn connect(config: &RelayConfig, round: Duration) -> Result<Session, WireError> {
    let mut session = Session::connect(&config.postgres).await?;
    let millis = |d: Duration| d.as_millis().to_string();
    session
        .query_params_text(
            "SELECT set_config('lock_timeout', $1, false)",
            &[&millis(round)],
        )
        .await?;
    if session.server_version_num() >= 140_000 {
        session
            .query_params_text(
                "SELECT set_config('idle_session_timeout', $1, false)",
                &[&millis(config.lease_timeout)],
            )
            .await?;
    }
    Ok(session)
}

/// Waits up to `round` for the lock (the moment it is free, the wait ends with it); `false` when
/// another session still holds it.
async fn wait_round(session: &mut Session, key: &str, round: Duration) -> Result<bool, WireError> {
    let sql = format!("SELECT pg_advisory_lock({KEY_SQL})::text");
    // The server ends the wait after `round`; a server that does not even do that is unreachable.
    let answered = tokio::time::timeout(round * 2 + Duration::from_secs(1), async {
        session.query_params_text(&sql, &[key]).await
    })
    .await;
    match answered {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(WireError::Server(error))) if error.code == LOCK_NOT_AVAILABLE => Ok(false),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(WireError::Protocol(format!(
            "no answer to the lease's lock wait within {:?}",
            round * 2
        ))),
    }
}

/// The condition on `pg_locks l` selecting the advisory lock of a key in this database (`$1` is
/// the key's text).
const HOLDING: &str = "l.locktype = 'advisory' AND l.objsubid = 1 \
     AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
     AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)";

/// Ends the sessions holding the advisory lock of `key` (but this one); how many.
async fn terminate_holders(session: &mut Session, key: &str) -> Result<usize, WireError> {
    let sql = format!(
        "SELECT pg_catalog.pg_terminate_backend(l.pid)::text FROM pg_catalog.pg_locks l \
         WHERE {HOLDING} AND l.granted AND l.pid <> pg_backend_pid()"
    );
    Ok(session.query_params_text(&sql, &[key]).await?.len())
}

/// Once the lease is ours, whatever an earlier active left behind goes: the slot's walsender
/// (which would otherwise hold the slot until `wal_sender_timeout`) and the session holding poll
/// mode's lock (idle in its claim transaction, which nothing would end). Only a stale instance
/// can hold them: the lease is ours. Where privileges do not allow it, a warning, and the
/// attempt retries until the server ends them itself.
async fn evict_predecessors(config: &RelayConfig, session: &mut Session) {
    let evicted = async {
        let poll = terminate_holders(session, &format!("outboxd poll {}", config.name)).await?;
        let walsenders = session
            .query_params_text(
                "SELECT pg_catalog.pg_terminate_backend(active_pid)::text \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 \
                 AND active_pid IS NOT NULL AND active_pid <> pg_backend_pid()",
                &[&config.slot],
            )
            .await?
            .len();
        Ok::<_, WireError>(poll + walsenders)
    }
    .await;
    match evicted {
        Ok(0) => {}
        Ok(ended) => tracing::info!(
            ended,
            "ended the sessions of an earlier active (its slot's walsender, its poll lock)"
        ),
        Err(error) => tracing::warn!(
            error = %error,
            "cannot end the sessions of an earlier active; the relay retries until the server \
             ends them (wal_sender_timeout). Grant pg_signal_backend, or run every instance as \
             the same role"
        ),
    }
}

/// Who holds the lease of relay `relay`, and who waits for it: for `outboxd status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolders {
    /// The active instance: its backend's client address and pid.
    pub active: Option<String>,
    /// The instances standing by (waiting in a lock round at the moment of asking).
    pub standing_by: Vec<String>,
}

/// Reads [`LeaseHolders`] from `pg_locks`.
pub async fn holders(session: &mut Session, relay: &str) -> Result<LeaseHolders, WireError> {
    let sql = format!(
        "SELECT l.granted::text, coalesce(host(a.client_addr), 'local') || ' pid ' || l.pid \
         FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE {HOLDING} ORDER BY l.pid"
    );
    let mut holders = LeaseHolders::default();
    for row in session.query_params_text(&sql, &[&key_text(relay)]).await? {
        let who = row.get(1).cloned().flatten().unwrap_or_default();
        if row.first().cloned().flatten().as_deref() == Some("true") {
            holders.active = Some(who);
        } else {
            holders.standing_by.push(who);
        }
    }
    Ok(holders)
}
