//! A table with a column of every type outboxd converts, rows that exercise them, and the JSON
//! PostgreSQL's `to_jsonb` gives for a row with outboxd's deliberate differences applied (numeric
//! as exact strings, bytea as base64): the reference for the natural value convention. Ranges and
//! multiranges (PostgreSQL 14+, every supported major) travel as their text. No built-in type came
//! after 14; what differs by major is added where it exists ([`GENERATED`], 18+).

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

use super::postgres::{connect, create_pgoutput_slot};

/// The schema: an enum, a domain, and the table `all_types`.
pub const TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posnum AS numeric CHECK (VALUE > 0);
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
  t text, vc varchar(10), bp char(3), nm name, u uuid, j json, jb jsonb, by bytea,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  ine inet, ci cidr, mac macaddr, mac8 macaddr8, e mood, dom posnum,
  ai int[], at text[], an numeric[], atz timestamptz[], au uuid[], ajb jsonb[], ae mood[],
  a2 int[], big text, r int4range, mr int4multirange);";

/// PostgreSQL 18+: a stored generated column, which pgoutput sends when the publication says
/// `publish_generated_columns = stored` (before 18 no generated column is published at all). A
/// virtual one (18's default kind) is never sent, and 18 refuses UPDATEs of a published table whose
/// replica identity (FULL here) holds one: `pg_majors` has its own table for it.
pub const GENERATED: &str =
    "ALTER TABLE all_types ADD COLUMN i4x2 int8 GENERATED ALWAYS AS (i4::int8 * 2) STORED";

/// PostgreSQL's JSON of row `$1` with outboxd's deliberate differences applied.
pub const EXPECTED: &str = "SELECT (to_jsonb(x) || jsonb_build_object(
    'n', x.n::text, 'dom', x.dom::text, 'by', encode(x.by, 'base64'),
    'an', CASE WHEN x.an IS NOT NULL
               THEN coalesce((SELECT jsonb_agg(v::text) FROM unnest(x.an) v), '[]') END))::text
  FROM all_types x WHERE id = $1";

/// Statements, each with the id of the row it writes (0: none).
pub const STATEMENTS: &[(&str, i32)] = &[
    ("INSERT INTO all_types VALUES (1, true, -32768, 2147483647, -9223372036854775808, 1.1, 1.5e300,
       123456789012345678901234567890.000001, 'ünïcode \"q\" \\ back', 'short', 'ab', 'pg_name',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.5, null]}', '{\"b\": {\"c\": true}}',
       '\\x0001ff', '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-31 12:34:56.789',
       '2024-01-31 12:34:56.789+02', '1 year 2 months 3 days 04:05:06.5', '192.168.0.1/24',
       '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 'happy', 12.50,
       '{1,NULL,3}', '{\"a,b\",NULL,\"\\\"q\\\"\"}', '{1.50,NaN}', '{\"2024-01-31 00:00:00+00\"}',
       '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{\"{\\\"x\\\": 1}\"}', '{sad,ok}', '{{1,2},{3,4}}',
       repeat('toast me ', 20000), '[1,5)', '{[1,3), [5,7)}')", 1),
    ("INSERT INTO all_types VALUES (2, false, 0, 0, 0, 'NaN', '-Infinity', 'NaN', '', '', '', '',
       '00000000-0000-0000-0000-000000000000', 'null', '[]', '\\x', '0044-03-15 BC', '00:00', '00:00:00-03',
       '0044-03-15 12:00:00 BC', 'infinity', '-1 day -00:00:01', '::1', '::/0', '00:00:00:00:00:00',
       '00:00:00:00:00:00:00:00', 'sad', 0.0001, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', NULL, 'empty', '{}')", 2),
    ("INSERT INTO all_types (id) VALUES (3)", 3),
    ("UPDATE all_types SET i4 = 7 WHERE id = 1", 1),
    ("ALTER TABLE all_types REPLICA IDENTITY FULL", 0),
    ("UPDATE all_types SET t = 'changed' WHERE id = 2", 2),
    ("DELETE FROM all_types WHERE id = 3", 3),
];

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

/// The fixture through the replication path of the database at `url` (slot and publication
/// named as given, created here), compared with PostgreSQL's `to_jsonb` of the same rows.
pub async fn round_trip(url: &str, slot: &str, publication: &str) {
    let client = connect(url).await;
    client.batch_execute(TABLE).await.expect("schema");
    let major: i32 = client
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .expect("server version")
        .get(0);
    let with = if major >= 18 {
        client
            .batch_execute(GENERATED)
            .await
            .expect("generated columns");
        " WITH (publish_generated_columns = stored)"
    } else {
        ""
    };
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE all_types{with}"
        ))
        .await
        .expect("publication");
    create_pgoutput_slot(&client, slot).await;
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

    let options: ConnectOptions = url.parse().expect("url");
    let mut connection = Session::connect(&options).await.expect("connect");
    let mut catalog = TypeCatalog::builtin();
    let stream = connection_start(&mut connection, &mut catalog, &options, slot, publication).await;
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
    options: &ConnectOptions,
    slot: &str,
    publication: &str,
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
    let replication = ReplicationConnection::connect(options)
        .await
        .expect("connect");
    replication
        .start_replication(
            slot,
            Lsn::ZERO,
            &PgOutputOptions {
                proto_version: 1,
                publication_names: vec![publication.to_owned()],
                messages: false,
                streaming: Streaming::Off,
                binary: false,
            },
        )
        .await
        .expect("start replication")
}
