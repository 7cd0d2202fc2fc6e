//! What consumers see, end to end on real Postgres and real Kafka: the `outboxd` binary relays rows
//! and messages, and a `read_committed` consumer checks topic, partition, key, value, headers and
//! timestamp of every record against what the envelope specifies (DESIGN.md §6).
//!
//! Debezium compatibility: where Debezium's documentation fixes a field (outbox event router with
//! the JSON converter, schemas disabled; Postgres connector change events), the expected value here
//! is Debezium's, and the test names the fields it compares:
//! - outbox: topic `outbox.event.<aggregatetype>` (template `${routedByValue}`), key = aggregateid,
//!   header `id` = event id, value = payload (a JSON string without `table.expand.json.payload`, the
//!   JSON itself with it), record timestamp = the event time, `type:header:eventType` placement;
//! - CDC: topic `<prefix>.<schema>.<table>`, key `{pk}`, value fields `before`, `after`, `op`,
//!   `source.{connector, name, db, schema, table, txId, lsn, snapshot, sequence, ts_ms}`, `ts_ms`,
//!   tombstone after delete, `__debezium_unavailable_value` for unchanged TOAST, the primary-key
//!   change as delete + tombstone + create, and the value conventions of the default modes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::kafka::{create_topic, read_exactly};
use support::postgres::TestDb;
use support::relay::{RelayProcess, RelaySpec};
use support::seen::Seen;

/// Reads `count` records of `topic` with `read_committed` (waiting up to a minute), then a little
/// longer to catch any record too many.
fn read(topic: &str, count: usize) -> Vec<Seen> {
    read_exactly(topic, count).iter().map(Seen::of).collect()
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), written from its definition
/// to check where keys land; pinned to Kafka's own test vectors below.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let length = data.len();
    let mut h = SEED ^ u32::try_from(length).expect("key under 4 GiB");
    for chunk in data.chunks_exact(4) {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[length & !3..];
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_test_vectors() {
    // From Kafka's UtilsTest.testMurmur2.
    for (input, expected) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ] {
        assert_eq!(murmur2(input.as_bytes()), expected, "{input}");
    }
}

/// A test database with `sql` applied, a publication of `tables`, and a relay spec over it.
async fn database(prefix: &str, sql: &str, tables: &str) -> (TestDb, RelaySpec) {
    let db = TestDb::published(prefix, sql, tables).await;
    let spec = RelaySpec::for_db(&db);
    (db, spec)
}

/// Starts the relay and waits until its slot exists (changes before that are not captured).
fn start_relay(spec: &RelaySpec) -> RelayProcess {
    start_relay_with_env(spec, &[])
}

/// [`start_relay`] with extra environment variables.
fn start_relay_with_env(spec: &RelaySpec, env: &[(&str, &str)]) -> RelayProcess {
    let relay = RelayProcess::start_with_env(spec, env);
    // "starting replication" comes once the slot exists at its consistent point: rows written
    // from then on are decoded. The slot's `active` flag is no such sign: it is set while the slot
    // is still being created, and rows committed then are older than the slot.
    relay.wait_streaming(Duration::from_secs(30));
    relay
}

const OUTBOX_SQL: &str = "
CREATE TABLE outbox (
    id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb,
    timestamp timestamptz NOT NULL DEFAULT now(), traceparent text, tracingspancontext text,
    correlation_id text, causation_id text, schema_version text, tenant text);
CREATE TABLE billing_events (
    event_id uuid PRIMARY KEY, kind text, order_ref text, body jsonb, at timestamptz);";

const U1: &str = "00000000-0000-0000-0000-000000000001";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread")]
async fn debezium_outbox_records_as_specified() {
    let (db, mut spec) = database("route_dbz", OUTBOX_SQL, "outbox, billing_events").await;
    let agg = db.name.clone();
    let topic = format!("outbox.event.{agg}");
    let billing_topic = format!("{}.billing.billing_events", db.name);
    create_topic(&topic, 6).await;
    spec.extra = format!(
        "[outbox]\ntables = [\"public.outbox\", \"public.billing_events\"]\n\
         additional_placement = [\"type:header:eventType\", \"tenant:header:tenant\"]\n\
         [[outbox.overrides]]\ntable = \"public.billing_events\"\n\
         topic = \"{db}.billing.${{table}}\"\nadditional_placement = []\n\
         columns = {{ id = \"event_id\", aggregate_type = \"kind\", aggregate_id = \"order_ref\", \
         payload = \"body\", timestamp = \"at\" }}\n",
        db = db.name
    );
    let relay = start_relay(&spec);
    let client = db.client().await;
    let big = "x".repeat(300_000);
    client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO outbox VALUES ('{U1}', '{agg}', 'order-1', 'OrderCreated',
               '{{\"id\": 1, \"name\": \"ünïcode ✓ \\\"q\\\"\", \"n\": 123456789012345678901234567890}}',
               '2024-01-31 12:34:56.789+00', '{TRACEPARENT}', NULL, 'corr-1', 'cause-1', '2', 'acme');
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp)
               VALUES ('00000000-0000-0000-0000-000000000002', '{agg}', 'order-2', 'Deleted', '{{}}',
                       '2024-01-31 12:00:00+00');
             DELETE FROM outbox WHERE id = '00000000-0000-0000-0000-000000000002';
             UPDATE outbox SET type = 'Changed' WHERE id = '{U1}';
             COMMIT;
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, tracingspancontext, timestamp)
               VALUES ('00000000-0000-0000-0000-000000000003', '{agg}', 'order-3', 'Nothing', NULL,
                       E'#comment\\ntraceparent={TRACEPARENT}\\n', '2024-01-31 13:00:00+00');
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp)
               VALUES ('00000000-0000-0000-0000-000000000004', '{agg}', 'order-4', 'Big',
                       jsonb_build_object('big', '{big}'), '2024-01-31 14:00:00+00');
             INSERT INTO billing_events VALUES ('00000000-0000-0000-0000-0000000000b1', 'invoice', 'o-9',
               '{{\"total\": 12.50}}', '2024-02-01 00:00:00+00');
             SELECT pg_logical_emit_message(true, 'outbox',
               '{{\"id\": \"m-1\", \"aggregatetype\": \"{agg}\", \"aggregateid\": \"order-5\",
                 \"type\": \"Shipped\", \"payload\": {{\"z\": 1, \"a\": 123456789012345678901}},
                 \"timestamp\": \"2024-01-31T15:00:00Z\"}}');"
        ))
        .await
        .expect("writes");
    // Keys spread over partitions, checked against the Java client's choice.
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let mut sql = String::from("BEGIN;");
    for key in &keys {
        sql.push_str(&format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) \
             VALUES (gen_random_uuid(), '{agg}', '{key}', 'Spread', '{{}}');"
        ));
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await.expect("spread keys");

    let records = read(&topic, 5 + keys.len());
    let mut by_key: BTreeMap<String, Seen> = records
        .iter()
        .map(|r| (r.key.clone().expect("every record has a key"), r.clone()))
        .collect();
    for record in &records {
        let key = record.key.as_deref().expect("key");
        assert_eq!(
            record.partition,
            java_partition(key, 6),
            "partition of {key}"
        );
    }
    let order1 = by_key.remove("order-1").expect("order-1");
    assert_eq!(
        order1.value.as_deref(),
        Some(r#"{"n": 123456789012345678901234567890, "id": 1, "name": "ünïcode ✓ \"q\""}"#),
        "the payload as Postgres wrote the jsonb (JSON expanded, not re-serialized)"
    );
    assert_eq!(
        order1.headers,
        [
            ("id", U1),
            ("eventType", "OrderCreated"),
            ("tenant", "acme"),
            ("traceparent", TRACEPARENT),
            ("correlation_id", "corr-1"),
            ("causation_id", "cause-1"),
            ("schema_version", "2"),
        ]
        .map(|(n, v)| (n.to_owned(), Some(v.to_owned())))
    );
    assert_eq!(order1.timestamp, Some(1_706_704_496_789));
    // Insert-then-delete in one transaction publishes once: the insert (the delete is no event).
    let deleted = by_key.remove("order-2").expect("order-2");
    assert_eq!(deleted.value.as_deref(), Some("{}"));
    assert_eq!(deleted.header("eventType"), Some("Deleted"));
    let nothing = by_key.remove("order-3").expect("order-3");
    assert_eq!(nothing.value, None, "NULL payload: no value");
    assert_eq!(nothing.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(nothing.header("tenant"), None);
    let big_record = by_key.remove("order-4").expect("order-4");
    assert_eq!(
        big_record.json()["big"].as_str().map(str::len),
        Some(300_000)
    );
    let message = by_key
        .remove("order-5")
        .expect("order-5 (the logical message)");
    assert_eq!(
        message.value.as_deref(),
        Some(r#"{"z": 1, "a": 123456789012345678901}"#),
        "a message's payload exactly as written"
    );
    assert_eq!(message.header("id"), Some("m-1"));
    assert_eq!(message.header("eventType"), Some("Shipped"));
    assert_eq!(message.timestamp, Some(1_706_713_200_000));

    let billing = read(&billing_topic, 1);
    assert_eq!(billing[0].key.as_deref(), Some("o-9"));
    assert_eq!(billing[0].value.as_deref(), Some(r#"{"total": 12.50}"#));
    assert_eq!(
        billing[0].headers,
        [(
            "id".to_owned(),
            Some("00000000-0000-0000-0000-0000000000b1".to_owned())
        )]
    );
    assert_eq!(billing[0].timestamp, Some(1_706_745_600_000));
    drop(relay);
}

/// Debezium's documented outbox example, with Debezium's defaults (payload not expanded: a JSON
/// string; key through the JSON converter: a quoted string).
#[tokio::test(flavor = "multi_thread")]
async fn debeziums_documented_outbox_example() {
    let (db, mut spec) = database("route_doc", OUTBOX_SQL, "outbox").await;
    let agg = db.name.clone();
    spec.extra = "[outbox]\nexpand_json_payload = false\nkey_format = \"json\"\n".into();
    let relay = start_relay(&spec);
    let payload = r#"{"id": 1, "lineItems": [{"id": 1, "item": "Debezium in Action", "status": "ENTERED", "quantity": 2, "totalPrice": 39.98}], "orderDate": "2019-01-31T12:13:01", "customerId": 123}"#;
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, timestamp) VALUES
             ('406c07f3-26f0-4eea-a50c-109940064b8f', '{agg}', '1', 'OrderCreated', '{payload}',
              '2019-05-03 13:31:34.484+00')"
        ))
        .await
        .expect("insert");
    let records = read(&format!("outbox.event.{agg}"), 1);
    // Compared: key, header id, value, timestamp (Debezium's example: key "1", header
    // id=406c07f3-..., timestamp 1556890294484, value the payload as a JSON string).
    assert_eq!(records[0].key.as_deref(), Some("\"1\""));
    assert_eq!(
        records[0].header("id"),
        Some("406c07f3-26f0-4eea-a50c-109940064b8f")
    );
    assert_eq!(records[0].timestamp, Some(1_556_890_294_484));
    let value = records[0].json();
    let inner: Value = serde_json::from_str(value.as_str().expect("a JSON string")).expect("JSON");
    assert_eq!(inner, serde_json::from_str::<Value>(payload).expect("JSON"));
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudevents_structured_and_binary() {
    for mode in ["structured", "binary"] {
        let (db, mut spec) = database(&format!("route_ce_{mode}"), OUTBOX_SQL, "outbox").await;
        let agg = db.name.clone();
        spec.extra = format!(
            "[outbox]\nenvelope = \"cloudevents\"\nadditional_placement = [\"tenant:envelope:tenant\"]\n\
             [outbox.cloudevents]\nmode = \"{mode}\"\n[dead_letter]\ntopic = \"{db}.dlq\"\n",
            db = db.name
        );
        let relay = start_relay(&spec);
        db.client()
            .await
            .batch_execute(&format!(
                "INSERT INTO outbox VALUES ('{U1}', '{agg}', 'order-1', 'OrderCreated',
                   '{{\"id\": 1}}', '2024-01-31 12:34:56.789+00', '{TRACEPARENT}', NULL, 'corr-1',
                   'cause-1', '2', 'acme');
                 INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
                   VALUES ('00000000-0000-0000-0000-000000000009', '{agg}', 'order-1', NULL, '{{}}');"
            ))
            .await
            .expect("insert");
        let records = read(&format!("outbox.event.{agg}"), 1);
        let record = &records[0];
        assert_eq!(record.key.as_deref(), Some("order-1"));
        assert_eq!(record.timestamp, Some(1_706_704_496_789));
        let attributes = json!({
            "specversion": "1.0",
            "id": U1,
            "source": "/outboxd/public/outbox",
            "type": "OrderCreated",
            "time": "2024-01-31T12:34:56.789Z",
            "subject": "order-1",
            "dataschema": format!("urn:outboxd:schema:{agg}:OrderCreated:2"),
            "correlationid": "corr-1",
            "causationid": "cause-1",
            "traceparent": TRACEPARENT,
            "tenant": "acme",
        });
        if mode == "structured" {
            let mut expected = attributes.clone();
            expected["datacontenttype"] = json!("application/json");
            expected["data"] = json!({"id": 1});
            assert_eq!(record.json(), expected);
            assert_eq!(
                record.header("content-type"),
                Some("application/cloudevents+json; charset=UTF-8")
            );
        } else {
            assert_eq!(record.value.as_deref(), Some(r#"{"id": 1}"#));
            for (name, value) in attributes.as_object().expect("object") {
                assert_eq!(
                    record.header(&format!("ce_{name}")),
                    value.as_str(),
                    "header ce_{name}"
                );
            }
            assert_eq!(record.header("content-type"), Some("application/json"));
        }
        assert_eq!(record.header("traceparent"), Some(TRACEPARENT));
        // The second row has no type, which CloudEvents requires: a dead letter, not an event.
        let dead = read(&format!("{}.dlq", db.name), 1);
        assert_eq!(dead[0].header("outboxd.dlq.reason"), Some("missing-field"));
        assert_eq!(dead[0].header("outboxd.dlq.source"), Some("public.outbox"));
        drop(relay);
    }
}

const ITEMS_SQL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE items (
    id int PRIMARY KEY, price numeric(10,2), ratio numeric, d date, t3 time(3), t time,
    ts3 timestamp(3), ts timestamp, tstz timestamptz, ttz timetz, iv interval, by bytea, jb jsonb,
    ai int[], u uuid, b bool, f8 float8, e mood, dom posint, big text);
CREATE TABLE nokey (v text);";

#[tokio::test(flavor = "multi_thread")]
async fn cdc_events_as_debezium_writes_them() {
    let sql = format!(
        "{ITEMS_SQL}\n{}",
        support::all_types::TABLE.replace("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');", "")
    );
    let (db, base) = database("route_cdc", &sql, "items, nokey, all_types").await;
    // Two relays on the same changes: Debezium's value convention and the natural one.
    let relay_with = |suffix: &str, extra: String| {
        let mut spec = base.clone();
        spec.name = format!("{}_{suffix}", base.name);
        spec.slot = format!("{}_{suffix}", base.slot);
        spec.offsets_topic = format!("{}.{suffix}", base.offsets_topic);
        spec.extra = extra;
        spec
    };
    let dbz = format!("{}_dbz", db.name);
    let nat = format!("{}_nat", db.name);
    let dbz_spec = relay_with(
        "dbz",
        format!("[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{dbz}\"\ntruncate_events = true\n"),
    );
    let nat_spec = relay_with(
        "nat",
        format!("[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{nat}\"\nvalue_convention = \"natural\"\n"),
    );
    let relays = [start_relay(&dbz_spec), start_relay(&nat_spec)];
    let client = db.client().await;
    for (name, value) in outboxd::pg::wire::SESSION_SETTINGS {
        client
            .batch_execute(&format!("SET {name} = '{value}'"))
            .await
            .expect("session setting");
    }
    let insert_xid: i64 = {
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .batch_execute(
                "INSERT INTO items VALUES (1, 1234.56, -12.345, '2024-01-31', '12:34:56.789',
                   '12:34:56.789', '2024-01-31 12:34:56.789', '2024-01-31 12:34:56.789',
                   '2024-01-31 12:34:56.789+02', '12:34:56.5+05:30', '1 mon 1 sec', '\\x0102ff',
                   '{\"a\": 1}', '{1,NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 1.5,
                   'happy', 7, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 2000) i))",
            )
            .await
            .expect("insert item");
        let xid = client
            .query_one("SELECT (txid_current() % 4294967296)::bigint", &[])
            .await
            .expect("xid")
            .get(0);
        client.batch_execute("COMMIT").await.expect("commit");
        xid
    };
    client
        .batch_execute(
            "UPDATE items SET price = 1.5 WHERE id = 1;
             UPDATE items SET id = 2 WHERE id = 1;
             DELETE FROM items WHERE id = 2;
             INSERT INTO nokey VALUES ('no key');
             TRUNCATE nokey;
             SELECT pg_logical_emit_message(true, 'audit', 'hello');",
        )
        .await
        .expect("changes");
    for (statement, _) in &support::all_types::STATEMENTS[..2] {
        client
            .batch_execute(statement)
            .await
            .expect("all_types row");
    }

    // Debezium convention: insert, update (TOAST unchanged), key change, delete, tombstones.
    let items = read(&format!("{dbz}.public.items"), 7);
    let ops: Vec<(Option<String>, Option<Value>)> = items
        .iter()
        .map(|r| {
            let op = r.value.as_ref().map(|_| r.json()["op"].clone());
            (r.key.clone(), op)
        })
        .collect();
    assert_eq!(
        ops,
        [
            (Some(r#"{"id":1}"#.into()), Some(json!("c"))),
            (Some(r#"{"id":1}"#.into()), Some(json!("u"))),
            (Some(r#"{"id":1}"#.into()), Some(json!("d"))),
            (Some(r#"{"id":1}"#.into()), None),
            (Some(r#"{"id":2}"#.into()), Some(json!("c"))),
            (Some(r#"{"id":2}"#.into()), Some(json!("d"))),
            (Some(r#"{"id":2}"#.into()), None),
        ]
    );
    let created = items[0].json();
    let mut after = created["after"].clone();
    let big = after["big"].take();
    assert_eq!(big.as_str().map(str::len), Some(64_000));
    assert_eq!(
        after,
        json!({
            "id": 1, "price": "AeJA", "ratio": {"scale": 3, "value": "z8c="}, "d": 19753,
            "t3": 45_296_789, "t": 45_296_789_000_i64, "ts3": 1_706_704_496_789_i64,
            "ts": 1_706_704_496_789_000_i64, "tstz": "2024-01-31T10:34:56.789000Z",
            "ttz": "07:04:56.5Z", "iv": 2_629_801_000_000_i64, "by": "AQL/", "jb": "{\"a\": 1}",
            "ai": [1, null], "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "b": true, "f8": 1.5,
            "e": "happy", "dom": 7, "big": null
        })
    );
    assert_eq!(created["before"], Value::Null);
    let source = &created["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], dbz.as_str());
    assert_eq!(source["db"], db.name.as_str());
    assert_eq!(source["schema"], "public");
    assert_eq!(source["table"], "items");
    assert_eq!(source["snapshot"], "false");
    assert_eq!(source["txId"], insert_xid);
    let lsn = source["lsn"].as_u64().expect("lsn");
    // [last commit, lsn]; the last commit is null before the first commit after a fresh start,
    // as Debezium's (tests/debezium_goldens.rs compares which).
    let sequence: Vec<Option<String>> =
        serde_json::from_str(source["sequence"].as_str().expect("sequence")).expect("JSON");
    assert_eq!(sequence.len(), 2);
    assert_eq!(sequence[1], Some(lsn.to_string()));
    assert_eq!(
        Some(source["ts_ms"].as_i64().expect("ts_ms")),
        items[0].timestamp
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert!((now_ms - created["ts_ms"].as_i64().expect("ts_ms")).abs() < 120_000);

    let updated = items[1].json();
    assert_eq!(
        updated["before"],
        Value::Null,
        "no old row under the default identity"
    );
    assert_eq!(updated["after"]["price"], "AJY=");
    assert_eq!(updated["after"]["big"], "__debezium_unavailable_value");
    assert_eq!(items[2].header("__debezium.newkey"), Some(r#"{"id":2}"#));
    assert_eq!(items[4].header("__debezium.oldkey"), Some(r#"{"id":1}"#));
    let deleted = items[5].json();
    assert_eq!(deleted["after"], Value::Null);
    assert_eq!(deleted["before"]["id"], 2);
    assert_eq!(
        deleted["before"]["price"],
        Value::Null,
        "only the key is known"
    );

    let nokey = read(&format!("{dbz}.public.nokey"), 2);
    assert_eq!(nokey[0].key, None);
    assert_eq!(nokey[0].json()["after"], json!({"v": "no key"}));
    assert_eq!(nokey[1].json()["op"], "t");
    let messages = read(&format!("{dbz}.message"), 1);
    assert_eq!(messages[0].key.as_deref(), Some(r#"{"prefix":"audit"}"#));
    assert_eq!(
        messages[0].json()["message"],
        json!({"prefix": "audit", "content": "aGVsbG8="})
    );
    assert_eq!(messages[0].json()["op"], "m");
    // Every type converts in the Debezium convention too (no dead letter).
    read(&format!("{dbz}.public.all_types"), 2);

    // Natural convention: every type equals PostgreSQL's to_jsonb (with the documented
    // differences), and truncates are skipped by default.
    let all_types = read(&format!("{nat}.public.all_types"), 2);
    for (record, id) in all_types.iter().zip([1, 2]) {
        let expected: String = client
            .query_one(support::all_types::EXPECTED, &[&id])
            .await
            .expect("expected row")
            .get(0);
        let expected: Value = serde_json::from_str(&expected).expect("JSON");
        assert_eq!(record.json()["after"], expected, "all_types row {id}");
    }
    read(&format!("{nat}.public.nokey"), 1);
    drop(relays);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_rows_go_to_the_dead_letter_topic_and_the_rest_is_delivered() {
    let (db, mut spec) = database(
        "route_dlq",
        "CREATE TABLE outbox (id text, aggregatetype text, aggregateid text, type text, payload text)",
        "outbox",
    )
    .await;
    let agg = db.name.clone();
    let dlq = format!("{}.dlq", db.name);
    spec.extra = format!("[dead_letter]\ntopic = \"{dlq}\"\n");
    // The spec's file has its [kafka] section already: the limit comes from the environment.
    let relay = start_relay_with_env(&spec, &[("OUTBOXD__KAFKA__MAX_RECORD_BYTES", "100000")]);
    let client = db.client().await;
    let good = |n: u32| {
        format!("INSERT INTO outbox VALUES ('good-{n}', '{agg}', 'k', 'T', '{{\"n\": {n}}}');")
    };
    let huge = "y".repeat(200_000);
    let statements = [
        good(1),
        format!("INSERT INTO outbox VALUES ('bad-json', '{agg}', 'k', 'T', 'not json');"),
        good(2),
        "INSERT INTO outbox VALUES ('no-type', NULL, 'k', 'T', '{}');".to_owned(),
        good(3),
        format!("INSERT INTO outbox VALUES ('too-large', '{agg}', 'k', 'T', '\"{huge}\"');"),
        good(4),
        "INSERT INTO outbox VALUES ('bad-topic', 'not a topic!', 'k', 'T', '{}');".to_owned(),
        good(5),
        "SELECT pg_logical_emit_message(true, 'outbox', 'not an object');".to_owned(),
        format!("BEGIN; {} {} COMMIT;", good(6), good(7)),
    ];
    for statement in &statements {
        client.batch_execute(statement).await.expect("statement");
    }
    let delivered = read(&format!("outbox.event.{agg}"), 7);
    let numbers: Vec<i64> = delivered
        .iter()
        .map(|r| r.json()["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4, 5, 6, 7],
        "every good row, once, in order"
    );
    let dead = read(&dlq, 5);
    let reasons: Vec<_> = dead
        .iter()
        .map(|r| r.header("outboxd.dlq.reason").expect("reason").to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "invalid-json",
            "missing-field",
            "too-large",
            "invalid-value",
            "invalid-json"
        ]
    );
    for record in &dead {
        assert!(record
            .header("outboxd.dlq.error")
            .is_some_and(|e| !e.is_empty()));
        assert!(record
            .header("outboxd.dlq.lsn")
            .is_some_and(|l| l.contains('/')));
        assert!(record.header("outboxd.dlq.xid").is_some());
    }
    assert_eq!(dead[0].header("outboxd.dlq.source"), Some("public.outbox"));
    assert_eq!(
        dead[0].json()["payload"],
        "not json",
        "the row, to repair and replay"
    );
    assert_eq!(
        dead[0].header("outboxd.dlq.topic"),
        Some(format!("outbox.event.{agg}").as_str())
    );
    assert_eq!(
        dead[2].value, None,
        "a row over the limit is not repeated in its letter"
    );
    assert!(dead[2].header("outboxd.dlq.value").is_some());
    assert_eq!(dead[4].header("outboxd.dlq.source"), Some("message:outbox"));
    assert_eq!(dead[4].value.as_deref(), Some("not an object"));
    drop(relay);
}
