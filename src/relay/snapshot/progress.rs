//! How far a snapshot is and when it should end, for `status` and the metrics: the cursor's
//! rows against the planner's estimate of the tables' rows (`pg_class.reltuples`, as of the last
//! `ANALYZE` or `VACUUM`: an estimate, not a count, which would read the tables once more).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::checkpoint::snapshot::{SnapshotCursor, TableName};
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};

/// A running snapshot as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotProgress {
    /// The snapshot's id.
    pub id: String,
    /// The table being read (`schema.table`).
    pub table: Option<String>,
    /// Its number among the snapshot's tables, from 1.
    pub table_number: usize,
    /// How many tables the snapshot reads.
    pub tables: usize,
    /// Read events committed so far, all tables together.
    pub rows: u64,
    /// The primary key of the last row passed in the table being read (the cursor).
    pub after: Option<Vec<String>>,
    /// The planner's estimate of the rows of all the snapshot's tables; `None` when a table with
    /// pages was never analyzed.
    pub estimated_rows: Option<u64>,
    /// Seconds until the snapshot should end, at its average rate since it began.
    pub eta_seconds: Option<u64>,
}

impl SnapshotProgress {
    /// The progress of the snapshot at `cursor` at time `now`.
    pub fn new(cursor: &SnapshotCursor, estimated_rows: Option<u64>, now: DateTime<Utc>) -> Self {
        let elapsed = cursor
            .started_at
            .and_then(|started| (now - started).to_std().ok());
        let eta_seconds = match (estimated_rows, elapsed) {
            (Some(estimate), Some(elapsed)) if cursor.rows > 0 => {
                let left = u128::from(estimate.saturating_sub(cursor.rows));
                let seconds = left * elapsed.as_millis() / u128::from(cursor.rows) / 1000;
                Some(u64::try_from(seconds).unwrap_or(u64::MAX))
            }
            _ => None,
        };
        Self {
            id: cursor.id.clone(),
            table: cursor.current().map(ToString::to_string),
            table_number: (cursor.table + 1).min(cursor.tables.len()),
            tables: cursor.tables.len(),
            rows: cursor.rows,
            after: cursor.after.clone(),
            estimated_rows,
            eta_seconds,
        }
    }
}

impl std::fmt::Display for SnapshotProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: table {} ({} of {}), {} rows read",
            self.id,
            self.table.as_deref().unwrap_or("-"),
            self.table_number,
            self.tables,
            self.rows
        )?;
        if let Some(after) = &self.after {
            write!(f, ", cursor after key ({})", after.join(", "))?;
        }
        match self.estimated_rows {
            Some(estimate) => write!(f, ", of about {estimate} rows")?,
            None => write!(f, ", of an unknown number of rows (ANALYZE the tables)")?,
        }
        match self.eta_seconds {
            Some(eta) => write!(f, ", ETA {}", clock(eta)),
            None => write!(f, ", ETA unknown"),
        }
    }
}

/// `seconds` as `1h 2m 3s`, `4m 5s` or `6s`.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// The planner's estimate of the rows of `tables` together; `None` when one of them, with pages,
/// was never analyzed (PostgreSQL 14+ say so with -1; a table gone counts as empty).
pub async fn estimated_rows(
    session: &mut Session,
    tables: &[TableName],
) -> Result<Option<u64>, WireError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
    let rows = session
        .query_params_text(
            "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint \
                         WHEN c.relpages = 0 OR c.oid IS NULL THEN 0 END::text \
             FROM unnest($1::text[], $2::text[]) AS t(s, n) \
             LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.s \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n",
            &[&array_literal(&schemas), &array_literal(&names)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().next().flatten()?.parse::<u64>().ok())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::SnapshotKind;

    #[test]
    fn the_eta_is_the_rows_left_at_the_average_rate() {
        let table = |t: &str| TableName {
            schema: "public".into(),
            table: t.into(),
        };
        let mut cursor = SnapshotCursor::new(
            "s".into(),
            SnapshotKind::Initial,
            vec![table("a"), table("b")],
        );
        let started = cursor.started_at.expect("set at the start");
        let progress = SnapshotProgress::new(&cursor, Some(1000), started);
        assert_eq!(progress.eta_seconds, None, "no rate before the first row");
        cursor = cursor.past(Some(vec!["250".into()]), 250, false);
        let now = started + chrono::Duration::seconds(10);
        let progress = SnapshotProgress::new(&cursor, Some(1000), now);
        assert_eq!(progress.eta_seconds, Some(30), "750 rows left at 25 rows/s");
        assert_eq!(
            (
                progress.table.as_deref(),
                progress.table_number,
                progress.tables
            ),
            (Some("public.a"), 1, 2)
        );
        let shown = progress.to_string();
        assert!(
            shown.contains("250 rows read, cursor after key (250), of about 1000 rows, ETA 30s"),
            "{shown}"
        );
        let unknown = SnapshotProgress::new(&cursor, None, now);
        assert_eq!(unknown.eta_seconds, None);
        assert!(unknown.to_string().contains("ANALYZE"), "{unknown}");
        assert_eq!(
            [clock(6), clock(245), clock(3723)],
            ["6s", "4m 5s", "1h 2m 3s"]
        );
    }
}
