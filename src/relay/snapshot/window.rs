//! One chunk between its read and its high watermark: the rows held back, and the keys the stream
//! touched meanwhile, which leave the chunk (the streamed change is as new as the read or newer).
//! Pure: the SQL and the stream stay in `super`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::checkpoint::snapshot::{SnapshotCursor, SnapshotKind};
use crate::pg::pgoutput::{ColumnValue, OldTuple, Relation, TupleData};
use crate::pg::{Lsn, RelationId};
use crate::source::{Change, SnapshotMark};

/// A primary key as the text of its columns, in key order: how both a chunk's rows (read in text)
/// and the stream's tuples (pgoutput's text format) spell it, so the two compare equal.
pub(super) type Key = Vec<String>;

/// A chunk read and waiting for its high watermark.
#[derive(Debug)]
pub(super) struct Window {
    /// The content of the high watermark that closes this window.
    pub nonce: String,
    /// The table the rows are of.
    relation: Arc<Relation>,
    /// Positions of the primary key's columns in `relation`.
    key_columns: Vec<usize>,
    /// The rows in key order; `None` once the stream touched its key.
    rows: Vec<Option<TupleData>>,
    /// Where each key's row is in `rows`.
    index: HashMap<Key, usize>,
    /// The key of the last row read: the cursor moves past it, dropped or not.
    last: Option<Key>,
    /// Whether the table has no row past this chunk.
    ended: bool,
    /// The high watermark's position, once the stream reached it.
    pub closed_at: Option<Lsn>,
}

/// What a closed window publishes: the read events in key order, and the cursor past the chunk.
#[derive(Debug)]
pub(super) struct Closed {
    /// `Change::Read`s to route, in key order.
    pub reads: Vec<Change>,
    /// The cursor after the chunk.
    pub cursor: SnapshotCursor,
}

impl Window {
    /// A window over `rows` (key order) of `relation`, whose primary key is at `key_columns`.
    pub fn new(
        nonce: String,
        relation: Arc<Relation>,
        key_columns: Vec<usize>,
        rows: Vec<TupleData>,
        ended: bool,
    ) -> Self {
        let mut index = HashMap::with_capacity(rows.len());
        let mut last = None;
        for (i, row) in rows.iter().enumerate() {
            if let Some(key) = key_of(&key_columns, row) {
                index.insert(key.clone(), i);
                last = Some(key);
            }
        }
        Self {
            nonce,
            relation,
            key_columns,
            rows: rows.into_iter().map(Some).collect(),
            index,
            last,
            ended,
            closed_at: None,
        }
    }

    /// The table the window is of.
    pub fn table(&self) -> RelationId {
        self.relation.id
    }

    /// A change the stream carries while the window is open: the rows whose keys it touches leave
    /// the chunk; a truncate of the table empties it.
    pub fn saw(&mut self, change: &Change) {
        match change {
            Change::Insert { relation, new } if relation.id == self.table() => {
                self.drop_key(relation, new);
            }
            Change::Update { relation, old, new } if relation.id == self.table() => {
                if let Some(OldTuple::Key(old) | OldTuple::Full(old)) = old {
                    self.drop_key(relation, old);
                }
                self.drop_key(relation, new);
            }
            Change::Delete { relation, old } if relation.id == self.table() => {
                let (OldTuple::Key(old) | OldTuple::Full(old)) = old;
                self.drop_key(relation, old);
            }
            Change::Truncate { relations, .. }
                if relations.iter().any(|r| r.id == self.table()) =>
            {
                self.rows.iter_mut().for_each(|row| *row = None);
            }
            _ => {}
        }
    }

    /// Drops the row whose key `tuple` (of the stream's `relation`) has.
    fn drop_key(&mut self, relation: &Relation, tuple: &TupleData) {
        // The stream's Relation lists the published columns, which may differ from the chunk's.
        let positions: Option<Vec<usize>> = self
            .key_columns
            .iter()
            .map(|&i| {
                let name = &self.relation.columns.get(i)?.name;
                relation.columns.iter().position(|c| &c.name == name)
            })
            .collect();
        let key = positions.and_then(|positions| key_of(&positions, tuple));
        match key {
            Some(key) => {
                if let Some(&i) = self.index.get(&key) {
                    self.rows[i] = None;
                }
            }
            // A key the stream does not spell (a key column not published): drop every row
            // rather than risk a read after a newer change.
            None => self.rows.iter_mut().for_each(|row| *row = None),
        }
    }

    /// The window reached its high watermark and the transaction holding it committed: the rows
    /// left become read events, marked as Debezium marks an initial (or an incremental)
    /// snapshot's rows, and the cursor moves past the chunk.
    pub fn close(self, cursor: &SnapshotCursor) -> Closed {
        let survivors: Vec<TupleData> = self.rows.into_iter().flatten().collect();
        let count = survivors.len();
        let reads = survivors
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let mark = if cursor.kind == SnapshotKind::Incremental {
                    SnapshotMark::Incremental
                } else if self.ended && i + 1 == count {
                    if cursor.on_last_table() {
                        SnapshotMark::Last
                    } else {
                        SnapshotMark::LastInDataCollection
                    }
                } else if i == 0 && cursor.rows == 0 {
                    SnapshotMark::First
                } else if i == 0 && cursor.after.is_none() {
                    SnapshotMark::FirstInDataCollection
                } else {
                    SnapshotMark::True
                };
                Change::Read {
                    relation: Arc::clone(&self.relation),
                    row,
                    mark,
                }
            })
            .collect();
        Closed {
            reads,
            cursor: cursor.past(self.last, count as u64, self.ended),
        }
    }
}

/// The key of `tuple`: the text of the columns at `positions`; `None` if one is not text.
fn key_of(positions: &[usize], tuple: &TupleData) -> Option<Key> {
    positions
        .iter()
        .map(|&i| match tuple.0.get(i)? {
            ColumnValue::Text(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::TableName;
    use crate::pg::pgoutput::{RelationColumn, ReplicaIdentity};
    use crate::pg::TypeOid;

    fn relation(columns: &[&str]) -> Arc<Relation> {
        Arc::new(Relation {
            xid: None,
            id: RelationId(7),
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|name| RelationColumn {
                    is_key: *name == "id",
                    name: (*name).into(),
                    type_oid: TypeOid(25),
                    type_modifier: -1,
                })
                .collect(),
        })
    }

    fn row(values: &[&str]) -> TupleData {
        TupleData(
            values
                .iter()
                .map(|v| ColumnValue::Text(v.to_string().into()))
                .collect(),
        )
    }

    fn four_rows(ended: bool) -> Window {
        let rows = (1..=4).map(|i| row(&[&i.to_string(), "v"])).collect();
        Window::new("n".into(), relation(&["id", "v"]), vec![0], rows, ended)
    }

    fn cursor(tables: usize) -> SnapshotCursor {
        let tables = (0..tables)
            .map(|i| TableName {
                schema: "public".into(),
                table: format!("t{i}"),
            })
            .collect();
        SnapshotCursor::new("s".into(), SnapshotKind::Initial, tables)
    }

    fn read_keys(closed: &Closed) -> Vec<(String, &'static str)> {
        closed
            .reads
            .iter()
            .map(|read| match read {
                Change::Read { row, mark, .. } => {
                    (key_of(&[0], row).expect("key")[0].clone(), mark.as_str())
                }
                other => panic!("not a read: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn rows_the_stream_touches_leave_the_chunk_and_the_cursor_passes_them() {
        let mut window = four_rows(false);
        let stream = relation(&["v", "id"]); // another column order: matched by name
        window.saw(&Change::Update {
            relation: Arc::clone(&stream),
            old: None,
            new: row(&["w", "2"]),
        });
        window.saw(&Change::Delete {
            relation: Arc::clone(&stream),
            old: OldTuple::Key(TupleData(vec![
                ColumnValue::Null,
                ColumnValue::Text("4".into()),
            ])),
        });
        window.saw(&Change::Insert {
            relation: stream,
            new: row(&["x", "9"]),
        });
        let closed = window.close(&cursor(1));
        assert_eq!(
            read_keys(&closed),
            [("1".into(), "first"), ("3".into(), "true")]
        );
        assert_eq!(
            closed.cursor.after,
            Some(vec!["4".to_owned()]),
            "past the dropped last row"
        );
        assert_eq!(closed.cursor.rows, 2);
    }

    #[test]
    fn a_changed_key_drops_both_keys_and_a_truncate_drops_all() {
        let mut window = four_rows(true);
        window.saw(&Change::Update {
            relation: relation(&["id", "v"]),
            old: Some(OldTuple::Key(row(&["1", "v"]))),
            new: row(&["3", "v"]),
        });
        let mut next = cursor(2);
        next.rows = 5;
        next.after = Some(vec!["0".into()]);
        let closed = window.close(&next);
        assert_eq!(
            read_keys(&closed),
            [
                ("2".into(), "true"),
                ("4".into(), "last_in_data_collection")
            ]
        );
        assert_eq!((closed.cursor.table, closed.cursor.after), (1, None));

        let mut window = four_rows(true);
        window.saw(&Change::Truncate {
            relations: vec![relation(&["id", "v"])],
            cascade: false,
            restart_identity: false,
        });
        assert!(window.close(&cursor(1)).reads.is_empty());

        let mut incremental = cursor(1);
        incremental.kind = SnapshotKind::Incremental;
        let closed = four_rows(true).close(&incremental);
        assert!(read_keys(&closed)
            .iter()
            .all(|(_, mark)| *mark == "incremental"));
    }

    #[test]
    fn changes_of_other_tables_leave_the_chunk_alone() {
        let mut window = four_rows(true);
        let mut other = (*relation(&["id", "v"])).clone();
        other.id = RelationId(8);
        window.saw(&Change::Insert {
            relation: Arc::new(other),
            new: row(&["1", "v"]),
        });
        let mut second = cursor(2);
        second.table = 1;
        second.rows = 3;
        let closed = window.close(&second);
        let keys = read_keys(&closed);
        assert_eq!(
            keys.first(),
            Some(&("1".into(), "first_in_data_collection"))
        );
        assert_eq!(keys.last(), Some(&("4".into(), "last")));
        assert!(closed.cursor.is_done());
    }
}
