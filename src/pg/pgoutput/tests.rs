//! Decoder tests: an encoder for every message (the protocol written out once more, by hand),
//! round trips, version rules, and malformed input.
//!
//! Over 600 lines on purpose: the hand-written encoder is the independent second reading of the
//! protocol that the tests compare the decoder against, and it belongs next to them.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::pg::{Lsn, PgTimestamp, RelationId, TypeOid, Xid};

/// Writes `message` as the walsender would; `in_stream` adds the streamed xid to data messages.
fn encode(message: &Message, in_stream: bool, parallel: bool) -> Bytes {
    let mut b = BytesMut::new();
    let cstr = |b: &mut BytesMut, s: &str| {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    };
    let xid = |b: &mut BytesMut, x: Option<Xid>| {
        if in_stream {
            b.put_u32(x.map_or(0, |x| x.0));
        }
    };
    match message {
        Message::Begin(m) => {
            b.put_u8(b'B');
            b.put_u64(m.final_lsn.0);
            b.put_i64(m.commit_ts.0);
            b.put_u32(m.xid.0);
        }
        Message::Commit(m) => {
            b.put_u8(b'C');
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_ts.0);
        }
        Message::Origin(m) => {
            b.put_u8(b'O');
            b.put_u64(m.commit_lsn.0);
            cstr(&mut b, &m.name);
        }
        Message::Relation(m) => {
            b.put_u8(b'R');
            xid(&mut b, m.xid);
            b.put_u32(m.id.0);
            cstr(&mut b, &m.namespace);
            cstr(&mut b, &m.name);
            b.put_u8(match m.replica_identity {
                ReplicaIdentity::Default => b'd',
                ReplicaIdentity::Nothing => b'n',
                ReplicaIdentity::Full => b'f',
                ReplicaIdentity::Index => b'i',
            });
            b.put_i16(i16::try_from(m.columns.len()).expect("columns"));
            for c in &m.columns {
                b.put_u8(u8::from(c.is_key));
                cstr(&mut b, &c.name);
                b.put_u32(c.type_oid.0);
                b.put_i32(c.type_modifier);
            }
        }
        Message::Type(m) => {
            b.put_u8(b'Y');
            xid(&mut b, m.xid);
            b.put_u32(m.id.0);
            cstr(&mut b, &m.namespace);
            cstr(&mut b, &m.name);
        }
        Message::Insert(m) => {
            b.put_u8(b'I');
            xid(&mut b, m.xid);
            b.put_u32(m.relation.0);
            b.put_u8(b'N');
            put_tuple(&mut b, &m.new);
        }
        Message::Update(m) => {
            b.put_u8(b'U');
            xid(&mut b, m.xid);
            b.put_u32(m.relation.0);
            if let Some(old) = &m.old {
                put_old(&mut b, old);
            }
            b.put_u8(b'N');
            put_tuple(&mut b, &m.new);
        }
        Message::Delete(m) => {
            b.put_u8(b'D');
            xid(&mut b, m.xid);
            b.put_u32(m.relation.0);
            put_old(&mut b, &m.old);
        }
        Message::Truncate(m) => {
            b.put_u8(b'T');
            xid(&mut b, m.xid);
            b.put_i32(i32::try_from(m.relations.len()).expect("relations"));
            b.put_u8(m.options);
            for r in &m.relations {
                b.put_u32(r.0);
            }
        }
        Message::Message(m) => {
            b.put_u8(b'M');
            xid(&mut b, m.xid);
            b.put_u8(u8::from(m.transactional));
            b.put_u64(m.lsn.0);
            cstr(&mut b, &m.prefix);
            b.put_i32(i32::try_from(m.content.len()).expect("content"));
            b.put_slice(&m.content);
        }
        Message::StreamStart(m) => {
            b.put_u8(b'S');
            b.put_u32(m.xid.0);
            b.put_u8(u8::from(m.first_segment));
        }
        Message::StreamStop => b.put_u8(b'E'),
        Message::StreamCommit(m) => {
            b.put_u8(b'c');
            b.put_u32(m.xid.0);
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_ts.0);
        }
        Message::StreamAbort(m) => {
            b.put_u8(b'A');
            b.put_u32(m.xid.0);
            b.put_u32(m.subxid.0);
            if parallel {
                let (lsn, ts) = m.abort.expect("parallel abort carries LSN and time");
                b.put_u64(lsn.0);
                b.put_i64(ts.0);
            }
        }
        Message::BeginPrepare(m) => {
            b.put_u8(b'b');
            b.put_u64(m.prepare_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.prepare_ts.0);
            b.put_u32(m.xid.0);
            cstr(&mut b, &m.gid);
        }
        Message::Prepare(m) | Message::StreamPrepare(m) => {
            b.put_u8(if matches!(message, Message::Prepare(_)) {
                b'P'
            } else {
                b'p'
            });
            b.put_u8(m.flags);
            b.put_u64(m.prepare_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.prepare_ts.0);
            b.put_u32(m.xid.0);
            cstr(&mut b, &m.gid);
        }
        Message::CommitPrepared(m) => {
            b.put_u8(b'K');
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_ts.0);
            b.put_u32(m.xid.0);
            cstr(&mut b, &m.gid);
        }
        Message::RollbackPrepared(m) => {
            b.put_u8(b'r');
            b.put_u8(m.flags);
            b.put_u64(m.prepare_end_lsn.0);
            b.put_u64(m.rollback_end_lsn.0);
            b.put_i64(m.prepare_ts.0);
            b.put_i64(m.rollback_ts.0);
            b.put_u32(m.xid.0);
            cstr(&mut b, &m.gid);
        }
    }
    b.freeze()
}

fn put_old(b: &mut BytesMut, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            b.put_u8(b'K');
            put_tuple(b, t);
        }
        OldTuple::Full(t) => {
            b.put_u8(b'O');
            put_tuple(b, t);
        }
    }
}

fn put_tuple(b: &mut BytesMut, tuple: &TupleData) {
    b.put_i16(i16::try_from(tuple.0.len()).expect("columns"));
    for column in &tuple.0 {
        match column {
            ColumnValue::Null => b.put_u8(b'n'),
            ColumnValue::UnchangedToast => b.put_u8(b'u'),
            ColumnValue::Text(v) | ColumnValue::Binary(v) => {
                b.put_u8(if matches!(column, ColumnValue::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                b.put_i32(i32::try_from(v.len()).expect("value"));
                b.put_slice(v);
            }
        }
    }
}

fn text(s: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn relation(xid: Option<Xid>) -> Message {
    Message::Relation(Relation {
        xid,
        id: RelationId(16_384),
        namespace: "public".into(),
        name: "outbox".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            RelationColumn {
                is_key: true,
                name: "id".into(),
                type_oid: TypeOid(2950),
                type_modifier: -1,
            },
            RelationColumn {
                is_key: false,
                name: "payload".into(),
                type_oid: TypeOid(3802),
                type_modifier: -1,
            },
        ],
    })
}

#[test]
fn decodes_a_transaction_of_protocol_1() {
    let mut d = Decoder::new(1);
    let messages = [
        Message::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_ts: PgTimestamp(7),
            xid: Xid(501),
        }),
        Message::Origin(Origin {
            commit_lsn: Lsn(9),
            name: "upstream".into(),
        }),
        relation(None),
        Message::Insert(Insert {
            xid: None,
            relation: RelationId(16_384),
            new: TupleData(vec![text("a"), text("{\"é\":1}")]),
        }),
        Message::Update(Update {
            xid: None,
            relation: RelationId(16_384),
            old: Some(OldTuple::Full(TupleData(vec![
                text("a"),
                ColumnValue::Null,
            ]))),
            new: TupleData(vec![text("a"), ColumnValue::UnchangedToast]),
        }),
        Message::Update(Update {
            xid: None,
            relation: RelationId(16_384),
            old: None,
            new: TupleData(vec![
                text("b"),
                ColumnValue::Binary(Bytes::from_static(b"\0\x01")),
            ]),
        }),
        Message::Delete(Delete {
            xid: None,
            relation: RelationId(16_384),
            old: OldTuple::Key(TupleData(vec![text("b"), ColumnValue::Null])),
        }),
        Message::Truncate(Truncate {
            xid: None,
            options: 3,
            relations: vec![RelationId(1), RelationId(2)],
        }),
        Message::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(11),
            prefix: "outbox".into(),
            content: Bytes::from_static(b"{}"),
        }),
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(12),
            end_lsn: Lsn(13),
            commit_ts: PgTimestamp(7),
        }),
    ];
    for message in messages {
        let bytes = encode(&message, false, false);
        assert_eq!(d.decode(bytes).as_ref(), Ok(&message));
    }
}

#[test]
fn column_values_are_slices_of_the_input() {
    let message = Message::Insert(Insert {
        xid: None,
        relation: RelationId(1),
        new: TupleData(vec![text("payload")]),
    });
    let bytes = encode(&message, false, false);
    let Ok(Message::Insert(insert)) = Decoder::new(1).decode(bytes.clone()) else {
        panic!("insert expected");
    };
    let ColumnValue::Text(value) = &insert.new.0[0] else {
        panic!("text expected");
    };
    let start = bytes.as_ptr() as usize;
    let at = value.as_ptr() as usize;
    assert!(
        at > start && at < start + bytes.len(),
        "the value points into the message"
    );
}

#[test]
fn streamed_blocks_carry_xids_and_toggle_state() {
    let mut d = Decoder::new(2);
    let start = Message::StreamStart(StreamStart {
        xid: Xid(900),
        first_segment: true,
    });
    assert_eq!(d.decode(encode(&start, false, false)), Ok(start));
    let inside = relation(Some(Xid(900)));
    assert_eq!(d.decode(encode(&inside, true, false)), Ok(inside));
    let insert = Message::Insert(Insert {
        xid: Some(Xid(900)),
        relation: RelationId(16_384),
        new: TupleData(vec![text("x"), ColumnValue::Null]),
    });
    assert_eq!(d.decode(encode(&insert, true, false)), Ok(insert));
    assert_eq!(
        d.decode(encode(&Message::StreamStop, false, false)),
        Ok(Message::StreamStop)
    );
    // Outside the block the same bytes mean something else: the xid is not expected any more.
    let outside = relation(None);
    assert_eq!(d.decode(encode(&outside, false, false)), Ok(outside));
    let commit = Message::StreamCommit(StreamCommit {
        xid: Xid(900),
        flags: 0,
        commit_lsn: Lsn(5),
        end_lsn: Lsn(6),
        commit_ts: PgTimestamp(1),
    });
    assert_eq!(d.decode(encode(&commit, false, false)), Ok(commit));
    assert_eq!(
        d.decode(encode(&Message::StreamStop, false, false)),
        Err(DecodeError::StreamSequence("Stream Stop"))
    );
}

#[test]
fn stream_abort_carries_lsn_and_time_only_with_parallel_streaming() {
    let plain = Message::StreamAbort(StreamAbort {
        xid: Xid(1),
        subxid: Xid(2),
        abort: None,
    });
    assert_eq!(
        Decoder::new(4).decode(encode(&plain, false, false)),
        Ok(plain)
    );
    let parallel = Message::StreamAbort(StreamAbort {
        xid: Xid(1),
        subxid: Xid(2),
        abort: Some((Lsn(3), PgTimestamp(4))),
    });
    let mut d = Decoder::new(4).with_parallel_streaming(true);
    assert_eq!(d.decode(encode(&parallel, false, true)), Ok(parallel));
}

#[test]
fn two_phase_messages_decode_under_protocol_3() {
    let mut d = Decoder::new(3);
    let messages = [
        Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_ts: PgTimestamp(3),
            xid: Xid(4),
            gid: "gid-1".into(),
        }),
        Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_ts: PgTimestamp(3),
            xid: Xid(4),
            gid: "gid-1".into(),
        }),
        Message::StreamPrepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_ts: PgTimestamp(3),
            xid: Xid(4),
            gid: "gid-2".into(),
        }),
        Message::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn(5),
            end_lsn: Lsn(6),
            commit_ts: PgTimestamp(7),
            xid: Xid(4),
            gid: "gid-1".into(),
        }),
        Message::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(2),
            rollback_end_lsn: Lsn(8),
            prepare_ts: PgTimestamp(3),
            rollback_ts: PgTimestamp(9),
            xid: Xid(4),
            gid: "gid-2".into(),
        }),
    ];
    for message in messages {
        assert_eq!(
            d.decode(encode(&message, false, false)).as_ref(),
            Ok(&message)
        );
    }
}

#[test]
fn messages_outside_the_protocol_version_are_refused() {
    let cases: [(&[u8], u32, &str, u32); 4] = [
        (b"E", 1, "Stream Stop", 2),
        (b"S\0\0\0\x01\x01", 1, "Stream Start", 2),
        (b"b", 2, "Begin Prepare", 3),
        (b"K", 2, "Commit Prepared", 3),
    ];
    for (bytes, version, message, needs) in cases {
        assert_eq!(
            Decoder::new(version).decode(Bytes::from_static(bytes)),
            Err(DecodeError::NotInProtocol {
                message,
                needs,
                version
            })
        );
    }
}

#[test]
fn malformed_input_is_an_error_naming_what_is_wrong() {
    let mut d = Decoder::new(1);
    assert_eq!(d.decode(Bytes::new()), Err(DecodeError::Empty));
    assert_eq!(
        d.decode(Bytes::from_static(b"Z")),
        Err(DecodeError::UnknownMessage(b'Z'))
    );
    assert_eq!(
        d.decode(Bytes::from_static(b"B\0\0")),
        Err(DecodeError::UnexpectedEnd {
            message: "Begin",
            field: "final LSN"
        })
    );
    let insert = |kind: u8| {
        let mut b = BytesMut::from(&b"I\0\0\0\x01N\0\x01"[..]);
        b.put_u8(kind);
        b.freeze()
    };
    assert_eq!(
        d.decode(insert(b'x')),
        Err(DecodeError::UnknownKind {
            message: "Insert",
            what: "column kind",
            kind: b'x'
        })
    );
    let mut trailing = BytesMut::from(&insert(b'n')[..]);
    trailing.put_u8(0);
    assert_eq!(
        d.decode(trailing.freeze()),
        Err(DecodeError::TrailingBytes {
            message: "Insert",
            count: 1
        })
    );
    assert_eq!(
        d.decode(Bytes::from_static(b"O\0\0\0\0\0\0\0\x01\xff\xfe\0")),
        Err(DecodeError::InvalidUtf8 {
            message: "Origin",
            field: "origin name"
        })
    );
    assert_eq!(
        d.decode(Bytes::from_static(b"O\0\0\0\0\0\0\0\x01abc")),
        Err(DecodeError::UnterminatedString {
            message: "Origin",
            field: "origin name"
        })
    );
    // A huge declared count with nothing behind it: refused before allocating.
    assert_eq!(
        d.decode(Bytes::from_static(b"T\x7f\xff\xff\xff\0")),
        Err(DecodeError::UnexpectedEnd {
            message: "Truncate",
            field: "relation count"
        })
    );
    assert_eq!(
        d.decode(Bytes::from_static(
            b"M\x01\0\0\0\0\0\0\0\x01p\0\xff\xff\xff\xff"
        )),
        Err(DecodeError::InvalidLength {
            message: "Message",
            field: "content length",
            length: -1
        })
    );
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ é]{0,12}"
}

fn arb_tuple() -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(
        prop_oneof![
            Just(ColumnValue::Null),
            Just(ColumnValue::UnchangedToast),
            arb_bytes().prop_map(ColumnValue::Text),
            arb_bytes().prop_map(ColumnValue::Binary),
        ],
        0..6,
    )
    .prop_map(TupleData)
}

fn arb_old() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        arb_tuple().prop_map(OldTuple::Key),
        arb_tuple().prop_map(OldTuple::Full)
    ]
}

/// Any message that is valid outside a streamed block under protocol 3 (no parallel streaming).
fn arb_message() -> impl Strategy<Value = Message> {
    let lsn = any::<u64>().prop_map(Lsn);
    let ts = any::<i64>().prop_map(PgTimestamp);
    let xid = any::<u32>().prop_map(Xid);
    let rel = any::<u32>().prop_map(RelationId);
    prop_oneof![
        (lsn.clone(), ts.clone(), xid.clone()).prop_map(|(final_lsn, commit_ts, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_ts,
                xid,
            })
        }),
        (any::<u8>(), lsn.clone(), lsn.clone(), ts.clone()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_ts)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_ts
            })
        ),
        (lsn.clone(), arb_name())
            .prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            rel.clone(),
            arb_name(),
            arb_name(),
            prop_oneof![
                Just(ReplicaIdentity::Default),
                Just(ReplicaIdentity::Nothing),
                Just(ReplicaIdentity::Full),
                Just(ReplicaIdentity::Index)
            ],
            proptest::collection::vec(
                (any::<bool>(), arb_name(), any::<u32>(), any::<i32>()).prop_map(
                    |(is_key, name, oid, type_modifier)| RelationColumn {
                        is_key,
                        name,
                        type_oid: TypeOid(oid),
                        type_modifier
                    }
                ),
                0..5
            )
        )
            .prop_map(|(id, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    xid: None,
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), arb_name(), arb_name()).prop_map(|(id, namespace, name)| {
            Message::Type(TypeMsg {
                xid: None,
                id: TypeOid(id),
                namespace,
                name,
            })
        }),
        (rel.clone(), arb_tuple()).prop_map(|(relation, new)| Message::Insert(Insert {
            xid: None,
            relation,
            new
        })),
        (rel.clone(), proptest::option::of(arb_old()), arb_tuple()).prop_map(
            |(relation, old, new)| Message::Update(Update {
                xid: None,
                relation,
                old,
                new
            })
        ),
        (rel.clone(), arb_old()).prop_map(|(relation, old)| Message::Delete(Delete {
            xid: None,
            relation,
            old
        })),
        (0u8..4, proptest::collection::vec(rel, 0..4)).prop_map(|(options, relations)| {
            Message::Truncate(Truncate {
                xid: None,
                options,
                relations,
            })
        }),
        (any::<bool>(), lsn.clone(), arb_name(), arb_bytes()).prop_map(
            |(transactional, lsn, prefix, content)| Message::Message(LogicalMessage {
                xid: None,
                transactional,
                lsn,
                prefix,
                content
            })
        ),
        (xid.clone(), xid.clone()).prop_map(|(xid, subxid)| {
            Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort: None,
            })
        }),
        (any::<u8>(), lsn.clone(), lsn, ts, xid, arb_name()).prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_ts, xid, gid)| Message::Prepare(Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_ts,
                xid,
                gid
            })
        ),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(version in 1u32..=4, parallel: bool,
                                   messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
        let mut d = Decoder::new(version).with_parallel_streaming(parallel);
        for m in messages {
            let _ = d.decode(Bytes::from(m));
        }
    }

    #[test]
    fn well_formed_messages_round_trip(message in arb_message()) {
        let bytes = encode(&message, false, false);
        prop_assert_eq!(Decoder::new(3).decode(bytes), Ok(message));
    }

    #[test]
    fn every_strict_prefix_is_an_error(message in arb_message()) {
        let bytes = encode(&message, false, false);
        for end in 0..bytes.len() {
            prop_assert!(Decoder::new(3).decode(bytes.slice(..end)).is_err(), "prefix of {} bytes decoded", end);
        }
    }
}
