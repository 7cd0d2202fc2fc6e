//! How far a snapshot has read, carried in every checkpoint while it runs (format version 2).
//!
//! The cursor moves past a chunk only in the checkpoint committed in the same Kafka transaction as
//! the chunk's read events, so after a crash the relay re-reads at most the one chunk that was not
//! committed, and never a row it delivered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The progress of one snapshot: its tables in the order they are read, the table being read, and
/// the primary key of the last row it passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCursor {
    /// Tells this snapshot's watermarks from those of another one (or of an earlier attempt).
    pub id: String,
    /// What started it: the `source.snapshot` markers differ.
    pub kind: SnapshotKind,
    /// The tables to read, fixed when the snapshot starts.
    pub tables: Vec<TableName>,
    /// Index in `tables` of the table being read; `tables.len()` once every table is read.
    pub table: usize,
    /// The primary key (as text, in key order) of the last row read or skipped in that table;
    /// `None` before its first chunk.
    pub after: Option<Vec<String>>,
    /// Read events published by this snapshot so far.
    pub rows: u64,
    /// When the snapshot began, for `status`'s estimate of when it ends (absent from the cursors
    /// of outboxd versions before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Row filters of some tables (an incremental snapshot's `additional-conditions`), as the
    /// signal gave them: parsed and checked against the catalog again before each table's read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<TableFilter>,
    /// Whether a `pause-snapshot` signal holds the snapshot (no chunk is read until a
    /// `resume-snapshot`); kept across restarts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The row filter of one table of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFilter {
    /// The table.
    pub table: TableName,
    /// The filter's text (`relay::snapshot::filter`'s grammar).
    pub filter: String,
}

/// Why a snapshot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// The relay's first start (`snapshot.mode = "initial"`): Debezium marks its reads `first`,
    /// `true`, `last` (and `first_in_data_collection` / `last_in_data_collection` per table).
    Initial,
    /// A signal (`execute-snapshot`, Debezium's incremental snapshot): Debezium marks every read
    /// `incremental`.
    Incremental,
}

/// A table by schema and name, as the catalog spells them (never quoted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableName {
    /// The schema.
    pub schema: String,
    /// The table.
    pub table: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl SnapshotCursor {
    /// A snapshot of `tables` that has read nothing yet.
    pub fn new(id: String, kind: SnapshotKind, tables: Vec<TableName>) -> Self {
        Self {
            id,
            kind,
            tables,
            table: 0,
            after: None,
            rows: 0,
            started_at: Some(Utc::now()),
            filters: Vec::new(),
            paused: false,
        }
    }

    /// The row filter of `table`, if it has one.
    pub fn filter(&self, table: &TableName) -> Option<&str> {
        self.filters
            .iter()
            .find(|f| &f.table == table)
            .map(|f| f.filter.as_str())
    }

    /// Whether `table` is still to be read (the table being read included).
    pub fn pending(&self, table: &TableName) -> bool {
        self.tables
            .get(self.table..)
            .is_some_and(|t| t.contains(table))
    }

    /// Appends `table` (with its filter) to the tables still to read.
    pub fn append(&mut self, table: TableName, filter: Option<String>) {
        if let Some(filter) = filter {
            self.filters.push(TableFilter {
                table: table.clone(),
                filter,
            });
        }
        self.tables.push(table);
    }

    /// Takes a pending `table` out of the snapshot: the next table is read instead when it was the
    /// one being read. `false` if it was not pending.
    pub fn remove(&mut self, table: &TableName) -> bool {
        let Some(at) = self.tables.iter().skip(self.table).position(|t| t == table) else {
            return false;
        };
        if at == 0 {
            self.after = None;
        }
        self.tables.remove(self.table + at);
        self.filters.retain(|f| &f.table != table);
        true
    }

    /// The table being read, `None` once all are.
    pub fn current(&self) -> Option<&TableName> {
        self.tables.get(self.table)
    }

    /// Whether the table being read is the last one.
    pub fn on_last_table(&self) -> bool {
        self.table + 1 >= self.tables.len()
    }

    /// The cursor after a chunk that published `rows` read events and passed the key `last`
    /// (`None`: the table had no row past the cursor); `ended` when it was the table's last chunk.
    #[must_use]
    pub fn past(&self, last: Option<Vec<String>>, rows: u64, ended: bool) -> Self {
        let mut next = self.clone();
        next.rows += rows;
        if ended {
            next.table += 1;
            next.after = None;
        } else if last.is_some() {
            next.after = last;
        }
        next
    }

    /// Whether every table is read.
    pub fn is_done(&self) -> bool {
        self.table >= self.tables.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_through_the_tables() {
        let table = |t: &str| TableName {
            schema: "public".into(),
            table: t.into(),
        };
        let start = SnapshotCursor::new(
            "s".into(),
            SnapshotKind::Initial,
            vec![table("a"), table("b")],
        );
        assert_eq!(start.current(), Some(&table("a")));
        assert!(!start.on_last_table());
        let mid = start.past(Some(vec!["7".into()]), 5, false);
        assert_eq!(
            (mid.table, mid.after.clone(), mid.rows),
            (0, Some(vec!["7".into()]), 5)
        );
        let next = mid.past(Some(vec!["9".into()]), 2, true);
        assert_eq!((next.table, next.after.clone(), next.rows), (1, None, 7));
        assert!(next.on_last_table() && !next.is_done());
        assert!(next.past(None, 0, true).is_done());
    }

    #[test]
    fn tables_are_appended_and_removed_while_pending() {
        let table = |t: &str| TableName {
            schema: "public".into(),
            table: t.into(),
        };
        let mut cursor = SnapshotCursor::new(
            "s".into(),
            SnapshotKind::Incremental,
            vec![table("a"), table("b")],
        );
        cursor.append(table("c"), Some("v > 1".into()));
        assert_eq!(cursor.filter(&table("c")), Some("v > 1"));
        cursor = cursor.past(Some(vec!["7".into()]), 5, false);
        assert!(cursor.remove(&table("a")), "the table being read");
        assert_eq!(
            (cursor.current(), cursor.after.clone()),
            (Some(&table("b")), None)
        );
        cursor = cursor.past(None, 0, true);
        assert!(
            !cursor.pending(&table("b")) && !cursor.remove(&table("b")),
            "read already"
        );
        assert!(cursor.remove(&table("c")));
        assert!(cursor.is_done() && cursor.filters.is_empty());
    }
}
