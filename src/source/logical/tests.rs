//! [`StreamState::apply`]: pgoutput messages folded into transactions, and the orders of messages
//! pgoutput never sends refused.

use bytes::Bytes;

use super::*;
use crate::pg::pgoutput::{
    Begin, ColumnValue, Commit, Delete, Insert, LogicalMessage, OldTuple, Origin, RelationColumn,
    ReplicaIdentity, StreamStart, Truncate, TupleData, TypeMsg, Update,
};
use crate::pg::TypeOid;

const AT: Lsn = Lsn(0x16_0000_0000);

fn table(id: u32, name: &str, columns: &[&str]) -> Relation {
    Relation {
        xid: None,
        id: RelationId(id),
        namespace: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .map(|name| RelationColumn {
                is_key: false,
                name: (*name).into(),
                type_oid: TypeOid(25),
                type_modifier: -1,
            })
            .collect(),
    }
}

fn text_row(values: &[&str]) -> TupleData {
    TupleData(
        values
            .iter()
            .map(|v| ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    )
}

fn begin(xid: u32) -> Message {
    Message::Begin(Begin {
        final_lsn: Lsn(0x16_0000_0500),
        commit_ts: PgTimestamp(1_000),
        xid: Xid(xid),
    })
}

fn commit() -> Message {
    Message::Commit(Commit {
        flags: 0,
        commit_lsn: Lsn(0x16_0000_0500),
        end_lsn: Lsn(0x16_0000_0530),
        commit_ts: PgTimestamp(1_000),
    })
}

fn insert(relation: u32, values: &[&str]) -> Message {
    Message::Insert(Insert {
        xid: None,
        relation: RelationId(relation),
        new: text_row(values),
    })
}

fn message(transactional: bool) -> Message {
    Message::Message(LogicalMessage {
        xid: None,
        transactional,
        lsn: Lsn(0x16_0000_0300),
        prefix: "outbox".into(),
        content: Bytes::from_static(b"{}"),
    })
}

/// Applies `messages` in order, each at its own position; the events they made.
fn apply_all(state: &mut StreamState, messages: Vec<Message>) -> Vec<SourceEvent> {
    messages
        .into_iter()
        .enumerate()
        .filter_map(|(i, m)| {
            state
                .apply(Lsn(AT.0 + i as u64), m)
                .unwrap_or_else(|e| panic!("message {i}: {e}"))
        })
        .collect()
}

/// The `what` of a sequence error.
fn sequence_error(result: Result<Option<SourceEvent>, SourceError>) -> String {
    match result {
        Err(SourceError::Sequence { lsn, what }) => {
            assert_eq!(lsn, AT, "the error names the message's position");
            what
        }
        other => panic!("expected a sequence error, got {other:?}"),
    }
}

#[test]
fn a_transaction_is_begin_its_changes_in_order_and_commit() {
    let mut state = StreamState::default();
    let events = apply_all(
        &mut state,
        vec![
            Message::Relation(table(1, "outbox", &["a"])),
            begin(42),
            insert(1, &["x"]),
            Message::Update(Update {
                xid: None,
                relation: RelationId(1),
                old: None,
                new: text_row(&["y"]),
            }),
            Message::Delete(Delete {
                xid: None,
                relation: RelationId(1),
                old: OldTuple::Key(text_row(&["y"])),
            }),
            message(true),
            commit(),
        ],
    );
    assert_eq!(events.len(), 6, "Relation makes no event: {events:?}");
    assert_eq!(
        events[0],
        SourceEvent::Begin(TxnBegin {
            xid: Xid(42),
            final_lsn: Lsn(0x16_0000_0500),
            commit_ts: PgTimestamp(1_000),
            origin: None,
        })
    );
    let changes: Vec<(Lsn, &Change)> = events[1..5]
        .iter()
        .map(|e| match e {
            SourceEvent::Change { lsn, change } => (*lsn, change),
            other => panic!("expected a change, got {other:?}"),
        })
        .collect();
    assert_eq!(
        changes
            .iter()
            .map(|(lsn, _)| lsn.0 - AT.0)
            .collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "each change carries its own position"
    );
    assert!(
        matches!(changes[0].1, Change::Insert { relation, new } if relation.name == "outbox" && *new == text_row(&["x"]))
    );
    assert!(matches!(changes[1].1, Change::Update { old: None, .. }));
    assert!(matches!(changes[2].1, Change::Delete { .. }));
    assert!(
        matches!(changes[3].1, Change::Message { prefix, lsn, .. } if prefix == "outbox" && *lsn == Lsn(0x16_0000_0300))
    );
    assert_eq!(
        events[5],
        SourceEvent::Commit(TxnCommit {
            xid: Xid(42),
            commit_lsn: Lsn(0x16_0000_0500),
            end_lsn: Lsn(0x16_0000_0530),
            commit_ts: PgTimestamp(1_000),
        })
    );
    assert!(state.open.is_none(), "the commit closes the transaction");
}

#[test]
fn a_new_relation_message_replaces_the_tables_description() {
    let mut state = StreamState::default();
    let events = apply_all(
        &mut state,
        vec![
            Message::Relation(table(1, "items", &["a"])),
            Message::Relation(table(1, "items", &["a", "b"])),
            Message::Type(TypeMsg {
                xid: None,
                id: TypeOid(90_000),
                namespace: "public".into(),
                name: "mood".into(),
            }),
            begin(1),
            insert(1, &["x", "y"]),
        ],
    );
    let SourceEvent::Change {
        change: Change::Insert { relation, .. },
        ..
    } = &events[1]
    else {
        panic!("expected an insert, got {events:?}");
    };
    assert_eq!(relation.columns.len(), 2, "the later description wins");
}

#[test]
fn a_truncate_names_its_tables_and_options() {
    let mut state = StreamState::default();
    let events = apply_all(
        &mut state,
        vec![
            Message::Relation(table(1, "a", &["x"])),
            Message::Relation(table(2, "b", &["x"])),
            begin(1),
            Message::Truncate(Truncate {
                xid: None,
                options: 3,
                relations: vec![RelationId(2), RelationId(1)],
            }),
        ],
    );
    let SourceEvent::Change {
        change:
            Change::Truncate {
                relations,
                cascade,
                restart_identity,
            },
        ..
    } = &events[1]
    else {
        panic!("expected a truncate, got {events:?}");
    };
    let names: Vec<&str> = relations.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b", "a"], "in the order Postgres lists them");
    assert!(*cascade && *restart_identity);
}

#[test]
fn a_non_transactional_message_stands_alone_even_between_transactions() {
    let mut state = StreamState::default();
    let event = state.apply(AT, message(false)).expect("applies");
    assert_eq!(
        event,
        Some(SourceEvent::Message {
            prefix: "outbox".into(),
            content: Bytes::from_static(b"{}"),
            lsn: Lsn(0x16_0000_0300),
        })
    );
    assert!(state.open.is_none());
}

#[test]
fn an_origin_is_kept_on_the_open_transaction() {
    let mut state = StreamState::default();
    apply_all(
        &mut state,
        vec![
            begin(1),
            Message::Origin(Origin {
                commit_lsn: Lsn(1),
                name: "upstream".into(),
            }),
        ],
    );
    assert_eq!(
        state.open.as_ref().and_then(|o| o.origin.as_deref()),
        Some("upstream")
    );
}

#[test]
fn messages_out_of_pgoutputs_order_are_refused_with_what_was_wrong() {
    let with_table = || {
        let mut state = StreamState::default();
        apply_all(&mut state, vec![Message::Relation(table(1, "t", &["a"]))]);
        state
    };
    let open = || {
        let mut state = with_table();
        apply_all(&mut state, vec![begin(1)]);
        state
    };
    let origin = Message::Origin(Origin {
        commit_lsn: Lsn(1),
        name: "o".into(),
    });
    let cases: Vec<(StreamState, Message, &str)> = vec![
        (open(), begin(2), "Begin of xid 2 while xid 1 is open"),
        (with_table(), commit(), "Commit outside a transaction"),
        (with_table(), origin, "Origin outside a transaction"),
        (
            with_table(),
            insert(1, &["x"]),
            "a change outside a transaction",
        ),
        (
            with_table(),
            message(true),
            "a change outside a transaction",
        ),
        (
            open(),
            insert(9, &["x"]),
            "a change of relation 9 before its Relation message",
        ),
        (
            open(),
            Message::StreamStart(StreamStart {
                xid: Xid(1),
                first_segment: true,
            }),
            "Stream Start (streaming and two-phase must be off)",
        ),
    ];
    for (mut state, message, expected) in cases {
        let what = sequence_error(state.apply(AT, message));
        assert_eq!(what, expected);
    }
}
