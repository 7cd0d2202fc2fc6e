//! Every listed type through the real replication path (our connection, the pgoutput decoder,
//! the source, the type conversion) against PostgreSQL's own `to_jsonb` of the same rows.
//!
//! Deliberate differences are applied to PostgreSQL's side in SQL, one per type, so that any other
//! difference fails: numeric (and the domain over it, and numeric arrays) as exact strings, bytea
//! as base64.

mod support;

use std::time::Duration;

use outboxd::pg::pgoutput::{OldTuple, Relation, TupleData};
use outboxd::pg::types::{column_to_datum, Datum, TypeCatalog};
use outboxd::pg::wire::{
    ConnectOptions, PgOutputOptions, ReplicationConnection, Session, Streaming, SESSION_SETTINGS,
};
use outboxd::pg::Lsn;
use outboxd::source::logical::{LogicalSource, SourceEvent};
use outboxd::source::Change;
use serde_json::{Map, Value};
use support::all_types::{EXPECTED, STATEMENTS, TABLE};
use support::postgres::{create_pgoutput_slot, TestDb};

/// Our JSON of a decoded row: column name to value; unchanged TOASTed columns left out and named.
fn row_json(catalog: &TypeCatalog, relation: &Relation, row: &TupleData) -> (Value, Vec<String>) {
    let mut object = Map::new();
    let mut unchanged = Vec::new();
    for (column, value) in relation.columns.iter().zip(&row.0) {
        match column_to_datum(catalog, column.type_oid, value).expect("converts") {
            Datum::Null => {
                object.insert(column.name.clone(), Value::Null);
            }
            Datum::Value(v) => {
                object.insert(column.name.clone(), v);
            }
            Datum::UnchangedToast => unchanged.push(column.name.clone()),
        }
    }
    (Value::Object(object), unchanged)
}

#[tokio::test(flavor = "multi_thread")]
async fn decoded_values_equal_postgres_to_jsonb() {
    let db = TestDb::create("types").await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("schema");
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE all_types",
            db.publication
        ))
        .await
        .expect("publication");
    create_pgoutput_slot(&client, &db.slot).await;
    for (name, value) in SESSION_SETTINGS {
        client
            .batch_execute(&format!("SET {name} = '{value}'"))
            .await
            .expect("session setting");
    }

    // Run each statement and take PostgreSQL's JSON of the row it leaves (or removed).
    let mut expected = Vec::new();
    for (sql, id) in STATEMENTS {
        let before = client
            .query_opt(EXPECTED, &[id])
            .await
            .expect("expected row");
        client.batch_execute(sql).await.expect("statement");
        if *id == 0 {
            continue;
        }
        let after = client
            .query_opt(EXPECTED, &[id])
            .await
            .expect("expected row");
        let row = after.or(before).expect("the row existed");
        expected.push(serde_json::from_str::<Value>(row.get(0)).expect("JSON"));
    }

    let options: ConnectOptions = db.url.parse().expect("url");
    let mut connection = Session::connect(&options).await.expect("connect");
    let mut catalog = TypeCatalog::builtin();
    let stream = connection_start(&mut connection, &mut catalog, &db).await;
    let mut source = LogicalSource::new(stream, 1);

    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), source.next())
            .await
            .expect("changes within 30 s")
            .expect("stream")
            .expect("not ended");
        let SourceEvent::Change { change, .. } = event else {
            continue;
        };
        seen.push(match change {
            Change::Insert { relation, new } => {
                ("insert", row_json(&catalog, &relation, &new), None)
            }
            Change::Update { relation, old, new } => {
                let old = old.map(|o| match o {
                    OldTuple::Full(t) | OldTuple::Key(t) => row_json(&catalog, &relation, &t).0,
                });
                ("update", row_json(&catalog, &relation, &new), old)
            }
            Change::Delete { relation, old } => {
                let OldTuple::Full(old) = old else {
                    panic!("REPLICA IDENTITY FULL sends the whole old row");
                };
                ("delete", row_json(&catalog, &relation, &old), None)
            }
            other => panic!("unexpected change {other:?}"),
        });
    }

    for (i, ((kind, (ours, unchanged), old), theirs)) in seen.iter().zip(&expected).enumerate() {
        let mut theirs = theirs.clone();
        for column in unchanged {
            theirs.as_object_mut().expect("object").remove(column);
        }
        assert_eq!(ours, &theirs, "change {i} ({kind}) differs from to_jsonb");
        if i == 3 {
            assert_eq!(
                unchanged,
                &["big"],
                "the untouched TOASTed column is reported unchanged"
            );
        }
        if i == 4 {
            assert!(
                old.is_some(),
                "REPLICA IDENTITY FULL sends the old row with an update"
            );
        }
    }
}

/// Loads the table's types and starts replication from the slot's start.
async fn connection_start(
    connection: &mut Session,
    catalog: &mut TypeCatalog,
    db: &TestDb,
) -> outboxd::pg::wire::ReplicationStream {
    let rows = connection
        .simple_query(
            "SELECT atttypid FROM pg_attribute WHERE attrelid = 'all_types'::regclass AND attnum > 0",
        )
        .await
        .expect("column types");
    let oids: Vec<_> = rows
        .iter()
        .filter_map(|r| r[0].as_ref()?.parse().ok().map(outboxd::pg::TypeOid))
        .collect();
    catalog.load(connection, &oids).await.expect("type catalog");
    let options: ConnectOptions = db.url.parse().expect("url");
    let replication = ReplicationConnection::connect(&options)
        .await
        .expect("connect");
    replication
        .start_replication(
            &db.slot,
            Lsn::ZERO,
            &PgOutputOptions {
                proto_version: 1,
                publication_names: vec![db.publication.clone()],
                messages: false,
                streaming: Streaming::Off,
                binary: false,
            },
        )
        .await
        .expect("start replication")
}
