//! A snapshot signal checked against the catalog, then applied to the running snapshot.
//!
//! A table to snapshot must be in the relay's publications (else its changes are not streamed
//! and the window could not drop them), must not be an outbox table (events, not state), and
//! needs a primary key; a row filter must parse, name the table's columns and run. Anything else
//! refuses the whole signal with a line saying what was refused: the stream goes on. The
//! command line (`outboxd snapshot`) runs the same checks before it sends a signal.

use regex_lite::{Regex, RegexBuilder};

use crate::checkpoint::snapshot::{SnapshotCursor, SnapshotKind, TableName};
use crate::pg::sql::quote_identifier;
use crate::pg::wire::{Session, WireError};

use super::filter::Filter;
use super::signal::{Condition, Received, Signal, SignalError};
use super::{published_tables, snapshot_id, Snapshotter};
use crate::relay::{RelayConfig, RelayError};

/// A table an `execute-snapshot` signal reads, with its row filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The table.
    pub table: TableName,
    /// Its row filter's text.
    pub filter: Option<String>,
}

/// The tables and filters of an `execute-snapshot` signal, checked against the catalog. `Ok(Err)`
/// refuses the signal; `Err` is a failure to ask Postgres.
pub async fn plan(
    session: &mut Session,
    config: &RelayConfig,
    collections: &[String],
    conditions: &[Condition],
) -> Result<Result<Vec<Planned>, SignalError>, WireError> {
    let refused = |why: String| Ok(Err(SignalError::Refused(why)));
    if config.router.cdc().is_none() {
        return refused(
            "a snapshot reads CDC tables, and cdc.enabled = false publishes none".into(),
        );
    }
    let published = published_tables(session, config).await?;
    let outbox = config.router.outbox();
    let is_outbox = |t: &TableName| {
        outbox
            .tables()
            .iter()
            .any(|o| o.schema == t.schema && o.table == t.table)
    };
    let mut planned: Vec<Planned> = Vec::new();
    for collection in collections {
        let pattern = match pattern(collection, false) {
            Ok(pattern) => pattern,
            Err(why) => return refused(why),
        };
        let matched: Vec<&TableName> = published
            .iter()
            .filter(|t| pattern.is_match(&t.to_string()))
            .collect();
        if let Some(outbox) = matched.iter().find(|t| is_outbox(t)) {
            if matched.len() == 1 {
                return refused(format!(
                    "{outbox} is an outbox table: it holds events, not state, and is never \
                     snapshotted"
                ));
            }
        }
        let tables: Vec<&TableName> = matched.into_iter().filter(|t| !is_outbox(t)).collect();
        if tables.is_empty() {
            return refused(format!(
                "data-collection {collection:?} names no table of the relay's publications {:?} \
                 (a table to snapshot must be published: ALTER PUBLICATION … ADD TABLE …)",
                config.publications
            ));
        }
        for table in tables {
            if !planned.iter().any(|p| &p.table == table) {
                planned.push(Planned {
                    table: table.clone(),
                    filter: None,
                });
            }
        }
    }
    for condition in conditions {
        let pattern = match pattern(&condition.collection, true) {
            Ok(pattern) => pattern,
            Err(why) => return refused(why),
        };
        let mut applied = false;
        for plan in &mut planned {
            if pattern.is_match(&plan.table.to_string()) {
                plan.filter = Some(condition.filter.clone());
                applied = true;
            }
        }
        if !applied {
            return refused(format!(
                "the additional condition's data-collection {:?} names none of the tables to \
                 snapshot",
                condition.collection
            ));
        }
    }
    for plan in &planned {
        let Some((columns, has_key)) = table_columns(session, &plan.table).await? else {
            return refused(format!("table {} does not exist", plan.table));
        };
        if !has_key {
            return refused(format!(
                "table {} cannot be snapshotted: {}, so the snapshot cannot tell its rows apart \
                 from the changes streamed meanwhile",
                plan.table,
                super::NO_PRIMARY_KEY
            ));
        }
        if let Some(filter) = &plan.filter {
            if let Err(why) = try_filter(session, &plan.table, &columns, filter).await? {
                return refused(format!(
                    "the row filter {filter:?} of {}: {why}",
                    plan.table
                ));
            }
        }
    }
    Ok(Ok(planned))
}

/// A data-collection as Debezium reads it: a regular expression the whole `schema.table` must
/// match (a plain name matches itself).
fn pattern(collection: &str, case_insensitive: bool) -> Result<Regex, String> {
    let invalid = |e: regex_lite::Error| {
        format!("data-collection {collection:?} is not a valid regular expression: {e}")
    };
    // Compiled alone first, so that it cannot close the anchoring group around it.
    Regex::new(collection).map_err(invalid)?;
    RegexBuilder::new(&format!("^(?:{collection})$"))
        .case_insensitive(case_insensitive)
        .size_limit(1 << 16)
        .build()
        .map_err(invalid)
}

/// Runs `filter` once over `table` (no rows), so that a literal its column's type does not
/// accept (`id = 'x'` on a number) refuses the signal instead of failing every read. `Err` says
/// why it does not fit.
async fn try_filter(
    session: &mut Session,
    table: &TableName,
    columns: &[String],
    filter: &str,
) -> Result<Result<(), String>, WireError> {
    let (sql, values) =
        match Filter::parse(filter).and_then(|f| f.to_sql(&table.to_string(), columns, 1)) {
            Ok(rendered) => rendered,
            Err(refused) => return Ok(Err(refused.to_string())),
        };
    let probe = format!(
        "SELECT 1 FROM {}.{} WHERE {sql} LIMIT 0",
        quote_identifier(&table.schema),
        quote_identifier(&table.table)
    );
    let params: Vec<&str> = values.iter().map(String::as_str).collect();
    match session.query_params(&probe, &params).await {
        Ok(_) => Ok(Ok(())),
        Err(WireError::Server(server)) => Ok(Err(server.to_string())),
        Err(other) => Err(other),
    }
}

/// The columns of `table` (as the catalog spells them, in order) and whether it has a primary
/// key; `None` if it does not exist.
pub(super) async fn table_columns(
    session: &mut Session,
    table: &TableName,
) -> Result<Option<(Vec<String>, bool)>, WireError> {
    let rows = session
        .query_params_text(
            "SELECT a.attname::text, EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                 WHERE i.indrelid = c.oid AND i.indisprimary)::text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
            &[&table.schema, &table.table],
        )
        .await?;
    let has_key = rows
        .first()
        .is_some_and(|row| row.get(1).cloned().flatten().as_deref() == Some("true"));
    let columns: Vec<String> = rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    Ok((!columns.is_empty()).then_some((columns, has_key)))
}

/// Acts on a signal that arrived in the stream: starts, extends, stops, pauses or resumes the
/// snapshot. A refused signal is logged and changes nothing; `Err` only when Postgres could not
/// be asked (the relay retries from its checkpoint, which is before the signal).
pub(in crate::relay) async fn apply(
    snapshot: &mut Option<Snapshotter>,
    config: &RelayConfig,
    received: Received,
) -> Result<(), RelayError> {
    let id = received.id;
    let outcome = match received.signal {
        Ok(Signal::Execute {
            collections,
            conditions,
        }) => {
            let mut session = Session::connect(&config.postgres).await?;
            let planned = plan(&mut session, config, &collections, &conditions).await?;
            planned.and_then(|planned| execute(snapshot, config, &id, planned))
        }
        Ok(Signal::Stop { collections }) => stop(snapshot, &id, &collections),
        Ok(Signal::Pause) => pause(snapshot, &id, true),
        Ok(Signal::Resume) => pause(snapshot, &id, false),
        Err(refused) => Err(refused),
    };
    if let Err(refused) = outcome {
        match refused {
            SignalError::UnknownType(_) => tracing::info!(signal = %id, "{refused}"),
            _ => tracing::warn!(
                signal = %id,
                error = %refused,
                "snapshot signal refused; streaming goes on"
            ),
        }
    }
    Ok(())
}

/// Starts an incremental snapshot of `planned`, or appends the tables not pending yet to the
/// incremental snapshot running (as Debezium does).
fn execute(
    snapshot: &mut Option<Snapshotter>,
    config: &RelayConfig,
    id: &str,
    planned: Vec<Planned>,
) -> Result<(), SignalError> {
    if let Some(running) = snapshot {
        if running.cursor.kind != SnapshotKind::Incremental {
            return Err(SignalError::Refused(format!(
                "the initial snapshot {} is running; signal again once it is complete",
                running.cursor.id
            )));
        }
    }
    let running = snapshot.get_or_insert_with(|| {
        let id = snapshot_id("incremental");
        Snapshotter::new(
            config,
            SnapshotCursor::new(id, SnapshotKind::Incremental, Vec::new()),
        )
    });
    let mut added = Vec::new();
    for plan in planned {
        if running.cursor.pending(&plan.table) {
            tracing::info!(signal = %id, table = %plan.table, "already in the snapshot running");
            continue;
        }
        added.push(plan.table.to_string());
        running.cursor.append(plan.table, plan.filter);
    }
    tracing::info!(
        signal = %id,
        snapshot = %running.cursor.id,
        tables = ?added,
        "incremental snapshot: reading the tables while streaming goes on"
    );
    Ok(())
}

/// Stops the snapshot, or reading some of its tables.
fn stop(
    snapshot: &mut Option<Snapshotter>,
    id: &str,
    collections: &[String],
) -> Result<(), SignalError> {
    let Some(running) = snapshot else {
        return Err(SignalError::Refused(
            "no snapshot is running to stop".into(),
        ));
    };
    if collections.is_empty() {
        tracing::info!(
            signal = %id,
            snapshot = %running.cursor.id,
            rows = running.cursor.rows,
            "snapshot stopped by a signal; streaming goes on"
        );
        *snapshot = None;
        return Ok(());
    }
    let mut stopped = Vec::new();
    for collection in collections {
        let pattern = pattern(collection, false).map_err(SignalError::Refused)?;
        let tables: Vec<TableName> = running
            .cursor
            .tables
            .iter()
            .skip(running.cursor.table)
            .filter(|t| pattern.is_match(&t.to_string()))
            .cloned()
            .collect();
        for table in tables {
            if running.cursor.current() == Some(&table) {
                // The chunk read of it is dropped: its watermark will find no window.
                running.window = None;
                running.table = None;
            }
            running.cursor.remove(&table);
            stopped.push(table.to_string());
        }
    }
    if stopped.is_empty() {
        return Err(SignalError::Refused(format!(
            "none of {collections:?} is still to be read by the snapshot running"
        )));
    }
    tracing::info!(signal = %id, tables = ?stopped, "snapshot: stopped reading these tables");
    if running.cursor.is_done() {
        running.move_to(running.cursor.clone());
    }
    Ok(())
}

/// Pauses (`true`) or resumes the snapshot.
fn pause(snapshot: &mut Option<Snapshotter>, id: &str, paused: bool) -> Result<(), SignalError> {
    let Some(running) = snapshot else {
        return Err(SignalError::Refused(
            "no snapshot is running to pause or resume".into(),
        ));
    };
    running.cursor.paused = paused;
    tracing::info!(
        signal = %id,
        snapshot = %running.cursor.id,
        "snapshot {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_collection_matches_whole_names_and_cannot_escape_its_anchors() {
        let exact = pattern("public.items", false).expect("a name");
        assert!(exact.is_match("public.items") && !exact.is_match("public.items_old"));
        let all = pattern("public\\..*", false).expect("a pattern");
        assert!(all.is_match("public.a") && !all.is_match("other.a"));
        assert!(pattern("a)|(.*", false).is_err());
        assert!(pattern("(", false).is_err());
        assert!(pattern("PUBLIC.ITEMS", true)
            .expect("case-insensitive")
            .is_match("public.items"));
    }
}
