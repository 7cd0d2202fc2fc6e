//! `outboxd snapshot`: starts, stops, pauses or resumes an incremental snapshot of the running
//! relay by writing a signal into the WAL as a logical message (`pg_logical_emit_message` with
//! the prefix `outboxd.signal`), which the relay reads in its stream: no signal table needed.
//!
//! The tables and the row filter are checked first, as the relay checks them, so that a mistake
//! fails here with a non-zero exit; the signal's text travels as a bound parameter, never
//! spliced into SQL.

use anyhow::{bail, Context};

use crate::pg::wire::Session;
use crate::relay::{plan, Condition, RelayConfig, Signal, SIGNAL_PREFIX};

/// What the command asks the relay for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read `tables` (names or regular expressions of `schema.table`), filtered by `filter`.
    Execute {
        /// The tables.
        tables: Vec<String>,
        /// One row filter for all of them.
        filter: Option<String>,
    },
    /// Stop reading `tables`, or the whole snapshot when empty.
    Stop {
        /// The tables.
        tables: Vec<String>,
    },
    /// Pause the snapshot.
    Pause,
    /// Resume it.
    Resume,
}

/// Sends the signal; the line to print: the signal's id and WAL position.
pub async fn send(relay: &RelayConfig, request: Request) -> anyhow::Result<String> {
    if !relay.snapshot.signal_messages {
        bail!(
            "snapshot.signal_messages = false: the relay ignores signal messages (use the signal \
             table, or set it to true)"
        );
    }
    let signal = match request {
        Request::Execute { tables, filter } => {
            if tables.is_empty() {
                bail!("name the tables to snapshot (schema.table)");
            }
            let conditions = filter
                .map(|filter| {
                    tables
                        .iter()
                        .map(|table| Condition {
                            collection: table.clone(),
                            filter: filter.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Signal::Execute {
                collections: tables,
                conditions,
            }
        }
        Request::Stop { tables } => Signal::Stop {
            collections: tables,
        },
        Request::Pause => Signal::Pause,
        Request::Resume => Signal::Resume,
    };
    let mut session = Session::connect(&relay.postgres)
        .await
        .context("connecting to PostgreSQL (postgres.url)")?;
    if let Signal::Execute {
        collections,
        conditions,
    } = &signal
    {
        plan(&mut session, relay, collections, conditions)
            .await
            .context("checking the tables against the catalog")??;
    }
    let id = format!("cli-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
    let rows = session
        .query_params_text(
            "SELECT pg_logical_emit_message(true, $1::text, $2::text)::text",
            &[SIGNAL_PREFIX, &signal.to_message(&id)],
        )
        .await
        .context("writing the signal (pg_logical_emit_message)")?;
    let lsn = rows
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .unwrap_or_default();
    Ok(format!(
        "signal {id} sent at {lsn}; the relay's log says what it did"
    ))
}
