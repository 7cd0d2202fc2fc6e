//! The replication connection and the decoder against a real walsender: truncate, logical
//! messages (transactional and not), origins, and a streamed in-progress transaction.

mod support;

use std::time::Duration;

use outboxd::pg::pgoutput::{Decoder, Message};
use outboxd::pg::wire::{
    ConnectOptions, PgOutputOptions, ReplicationConnection, ReplicationEvent, ReplicationStream,
    Streaming,
};
use outboxd::pg::Lsn;
use support::postgres::{create_pgoutput_slot, TestDb};

async fn prepared_db(prefix: &str) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id serial PRIMARY KEY, name text);
             CREATE PUBLICATION {} FOR TABLE items;",
            db.publication
        ))
        .await
        .expect("schema");
    create_pgoutput_slot(&client, &db.slot).await;
    (db, client)
}

async fn start(db: &TestDb, proto_version: u32, streaming: Streaming) -> ReplicationStream {
    let options: ConnectOptions = db.url.parse().expect("url");
    ReplicationConnection::connect(&options)
        .await
        .expect("connect")
        .start_replication(
            &db.slot,
            Lsn::ZERO,
            &PgOutputOptions {
                proto_version,
                publication_names: vec![db.publication.clone()],
                messages: true,
                streaming,
                binary: false,
            },
        )
        .await
        .expect("start replication")
}

/// Decodes messages until `done` holds for what was decoded.
async fn collect(
    stream: &mut ReplicationStream,
    decoder: &mut Decoder,
    done: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let mut messages = Vec::new();
    while !done(&messages) {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message within 30 s")
            .expect("stream")
            .expect("not ended");
        if let ReplicationEvent::XLogData { data, .. } = event {
            messages.push(decoder.decode(data).expect("decodes"));
        }
    }
    messages
}

/// `messages` without transactions that changed nothing: PostgreSQL 14's pgoutput sends those as a
/// Begin and a Commit (here: the origin's creation), 15 and later skip them.
fn without_empty_transactions(messages: Vec<Message>) -> Vec<Message> {
    let mut kept: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages {
        if matches!(message, Message::Commit(_)) && matches!(kept.last(), Some(Message::Begin(_))) {
            kept.pop();
        } else {
            kept.push(message);
        }
    }
    kept
}

#[tokio::test(flavor = "multi_thread")]
async fn truncate_messages_and_origins_decode() {
    let (db, client) = prepared_db("pgo_misc").await;
    // Origins are cluster-wide: this test's own name.
    let origin_name = db.name.clone();
    // One call per step: a multi-statement string would run as one implicit transaction.
    for sql in [
        "INSERT INTO items (name) VALUES ('a')",
        "BEGIN; INSERT INTO items (name) VALUES ('b');
         SELECT pg_logical_emit_message(true, 'outbox', '{\"k\":1}'); COMMIT;",
        "SELECT pg_logical_emit_message(false, 'loose', 'not in a transaction')",
        "TRUNCATE items RESTART IDENTITY CASCADE",
        &format!("SELECT pg_replication_origin_create('{origin_name}')"),
        &format!("SELECT pg_replication_origin_session_setup('{origin_name}')"),
        "BEGIN; SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
         INSERT INTO items (name) VALUES ('from upstream'); COMMIT;",
        "SELECT pg_replication_origin_session_reset()",
        &format!("SELECT pg_replication_origin_drop('{origin_name}')"),
    ] {
        client.batch_execute(sql).await.expect(sql);
    }

    let mut stream = start(&db, 1, Streaming::Off).await;
    let mut decoder = Decoder::new(1);
    let commits = |m: &[Message]| {
        m.windows(2)
            .filter(|w| matches!(w[1], Message::Commit(_)) && !matches!(w[0], Message::Begin(_)))
            .count()
    };
    let messages =
        without_empty_transactions(collect(&mut stream, &mut decoder, |m| commits(m) >= 4).await);
    let names: Vec<&str> = messages.iter().map(Message::name).collect();
    assert_eq!(
        names,
        [
            "Begin", "Relation", "Insert", "Commit", // 'a'
            "Begin", "Insert", "Message", "Commit",  // 'b' with its message
            "Message", // the non-transactional message, alone
            "Begin", "Relation", "Truncate",
            "Commit", // the table is described again after it
            "Begin", "Origin", "Relation", "Insert", "Commit", // from the origin
        ]
    );
    let Message::Message(transactional) = &messages[6] else {
        unreachable!()
    };
    assert!(transactional.transactional);
    assert_eq!(
        (transactional.prefix.as_str(), &transactional.content[..]),
        ("outbox", &b"{\"k\":1}"[..])
    );
    let Message::Message(loose) = &messages[8] else {
        unreachable!()
    };
    assert!(!loose.transactional);
    assert_eq!(&loose.content[..], b"not in a transaction");
    let Message::Truncate(truncate) = &messages[11] else {
        unreachable!()
    };
    assert!(truncate.cascade() && truncate.restart_identity());
    assert_eq!(truncate.relations.len(), 1);
    let Message::Origin(origin) = &messages[14] else {
        unreachable!()
    };
    assert_eq!(
        (origin.name.as_str(), origin.commit_lsn),
        (origin_name.as_str(), "0/ABCDEF".parse().expect("lsn"))
    );
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_progress_transaction_streams_under_protocol_2() {
    let (db, client) = prepared_db("pgo_stream").await;
    // The walsender of this database spills to the client past 64 kB of changes.
    client
        .batch_execute(&format!(
            "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'",
            db.name
        ))
        .await
        .expect("work mem");
    client
        .batch_execute(
            "INSERT INTO items (name) SELECT 'row ' || g FROM generate_series(1, 5000) g",
        )
        .await
        .expect("big transaction");

    let mut stream = start(&db, 2, Streaming::On).await;
    let mut decoder = Decoder::new(2);
    let messages = collect(&mut stream, &mut decoder, |m| {
        m.iter().any(|m| matches!(m, Message::StreamCommit(_)))
    })
    .await;
    let starts = messages
        .iter()
        .filter(|m| matches!(m, Message::StreamStart(_)))
        .count();
    let stops = messages
        .iter()
        .filter(|m| matches!(m, Message::StreamStop))
        .count();
    assert!(
        starts > 1,
        "the transaction came in several blocks ({starts})"
    );
    assert_eq!(starts, stops);
    let Some(Message::StreamCommit(commit)) = messages.last() else {
        panic!("ends with Stream Commit");
    };
    let inserts: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Insert(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(inserts.len(), 5000);
    assert!(
        inserts.iter().all(|i| i.xid == Some(commit.xid)),
        "each streamed change names its transaction"
    );
    stream.stop().await.expect("clean stop");
}
