//! CDC keys and values in Avro with a Schema Registry (`[cdc] format = "avro"`), against the dev
//! environment's real registry (Apicurio's Confluent-compatible API) and decoded by the Apache Avro
//! Python library with the schemas fetched from that registry, never by outboxd's own code.

mod support;

use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::{json, Value};
use support::kafka::read_exactly;
use support::postgres::TestDb;
use support::registry::{decode, registry_url, versions, PrivateRegistry};
use support::relay::{RelayProcess, RelaySpec};

/// A streaming relay on `db` whose topics start with `<db>_<suffix>`, with `cdc` in `[cdc]`.
fn relay(db: &TestDb, suffix: &str, cdc: &str) -> (RelayProcess, String) {
    relay_at(db, suffix, cdc, registry_url())
}

/// [`relay`] with the registry at `url`.
fn relay_at(db: &TestDb, suffix: &str, cdc: &str, url: &str) -> (RelayProcess, String) {
    let prefix = format!("{}_{suffix}", db.name);
    let mut spec = RelaySpec::for_db(db);
    spec.name = format!("{}_{suffix}", db.name);
    spec.slot = format!("{}_{suffix}", db.slot);
    spec.offsets_topic = format!("{}.{suffix}", spec.offsets_topic);
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{prefix}\"\n{cdc}\n\
         [dead_letter]\ntopic = \"{prefix}.dlq\"\n[schema_registry]\nurl = \"{url}\"\n"
    );
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    (relay, prefix)
}

/// Decoded records: the schema id and value of each (`None` for null).
type Decoded = Vec<Option<(u64, Value)>>;

/// Keys and values of `records`, decoded.
fn decoded(records: &[OwnedMessage]) -> (Decoded, Decoded) {
    let keys: Vec<_> = records.iter().map(Message::key).collect();
    let values: Vec<_> = records.iter().map(Message::payload).collect();
    (
        decode(registry_url(), &keys),
        decode(registry_url(), &values),
    )
}

/// A JSON event without what differs between two relays on the same change: the processing
/// times, the connector's name (its topic prefix), and `source.sequence`, whose first element,
/// the last commit before the change, is where each relay's slot began for its first event.
fn comparable(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        for time in ["ts_ms", "ts_us", "ts_ns"] {
            object.remove(time);
        }
        if let Some(source) = object.get_mut("source").and_then(Value::as_object_mut) {
            source.remove("name");
            source.remove("sequence");
        }
    }
    event
}

const LOGICAL_SQL: &str = "CREATE TABLE priced (id int PRIMARY KEY, price numeric(10,2), m money);
CREATE TABLE grid (id int PRIMARY KEY, a2 int[]);";

/// The fixture's two-dimensional array: it fits no Connect (nor Avro) array of int32 (Debezium
/// cannot convert one either), so it is tested apart, in `grid`.
const TWO_DIMENSIONAL: &str = "'{{1,2},{3,4}}'";

#[tokio::test(flavor = "multi_thread")]
async fn avro_records_decode_to_the_json_events_of_every_type() {
    let sql = format!("{}\n{LOGICAL_SQL}", support::all_types::TABLE);
    let db = TestDb::published("avro_types", &sql, "all_types, priced, grid").await;
    let (json_relay, json_prefix) = relay(&db, "json", "");
    let (avro_relay, avro_prefix) = relay(&db, "avro", "format = \"avro\"");
    let client = db.client().await;
    for (statement, _) in support::all_types::STATEMENTS {
        let statement = statement.replace(TWO_DIMENSIONAL, "'{5,6}'");
        client.batch_execute(&statement).await.expect(&statement);
    }
    client
        .batch_execute(&format!(
            "INSERT INTO priced VALUES (1, -1234.56, 99.99), (2, 0.01, NULL);
             INSERT INTO grid VALUES (1, {TWO_DIMENSIONAL});"
        ))
        .await
        .expect("priced and grid rows");
    // In Avro the row that does not fit is a dead letter naming why; the rest flows on.
    let letters = read_exactly(&format!("{avro_prefix}.dlq"), 1);
    let letter = support::seen::Seen::of(&letters[0]);
    assert_eq!(letter.header("outboxd.dlq.reason"), Some("invalid-value"));
    let error = letter.header("outboxd.dlq.error").expect("the error");
    assert!(error.contains("a2: [1,2] does not fit int"), "{error}");

    for (table, count) in [("all_types", 7), ("priced", 2)] {
        let json_records = read_exactly(&format!("{json_prefix}.public.{table}"), count);
        let avro_records = read_exactly(&format!("{avro_prefix}.public.{table}"), count);
        let (keys, values) = decoded(&avro_records);
        for (i, (json, (key, value))) in json_records
            .iter()
            .zip(keys.iter().zip(&values))
            .enumerate()
        {
            let json_key: Value =
                serde_json::from_slice(json.key().expect("a key")).expect("JSON key");
            assert_eq!(
                key.as_ref().map(|k| &k.1),
                Some(&json_key),
                "{table} key {i}"
            );
            let json_value = json
                .payload()
                .map(|v| serde_json::from_slice::<Value>(v).expect("JSON value"));
            assert_eq!(
                value.as_ref().map(|v| comparable(v.1.clone())),
                json_value.map(comparable),
                "{table} value {i}"
            );
        }
        let subject = format!("{avro_prefix}.public.{table}");
        assert_eq!(versions(registry_url(), &format!("{subject}-key")), [1]);
        assert_eq!(versions(registry_url(), &format!("{subject}-value")), [1]);
    }
    drop((json_relay, avro_relay));
}

#[tokio::test(flavor = "multi_thread")]
async fn added_dropped_and_retyped_columns_register_new_versions() {
    let db = TestDb::published(
        "avro_evolve",
        "CREATE TABLE evolve (id int PRIMARY KEY, a int, d date, at timestamp(3));",
        "evolve",
    )
    .await;
    // Connect's time types: Avro's date and timestamp-millis logical types.
    let (relay, prefix) = relay(
        &db,
        "avro",
        "format = \"avro\"\ntime_precision_mode = \"connect\"",
    );
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO evolve VALUES (1, 1, '2024-02-29', '2024-01-31 12:34:56.789');
             ALTER TABLE evolve ADD COLUMN b text;
             INSERT INTO evolve VALUES (2, 2, '1969-12-31', NULL, 'x');
             ALTER TABLE evolve ALTER COLUMN a TYPE bigint;
             INSERT INTO evolve VALUES (3, 3000000000, NULL, NULL, 'y');
             ALTER TABLE evolve DROP COLUMN b;
             INSERT INTO evolve VALUES (4, 4, NULL, NULL);",
        )
        .await
        .expect("changes");
    let records = read_exactly(&format!("{prefix}.public.evolve"), 4);
    let (_, values) = decoded(&records);
    let after: Vec<Value> = values
        .iter()
        .map(|v| v.as_ref().expect("a value").1["after"].clone())
        .collect();
    assert_eq!(
        after,
        [
            json!({"id": 1, "a": 1, "d": 19782, "at": 1_706_704_496_789_i64}),
            json!({"id": 2, "a": 2, "d": -1, "at": null, "b": "x"}),
            json!({"id": 3, "a": 3_000_000_000_i64, "d": null, "at": null, "b": "y"}),
            json!({"id": 4, "a": 4, "d": null, "at": null}),
        ]
    );
    let ids: std::collections::BTreeSet<u64> = values
        .iter()
        .map(|v| v.as_ref().expect("a value").0)
        .collect();
    assert_eq!(ids.len(), 4, "a schema id per table shape");
    let subject = format!("{prefix}.public.evolve");
    assert_eq!(
        versions(registry_url(), &format!("{subject}-value")),
        [1, 2, 3, 4]
    );
    assert_eq!(versions(registry_url(), &format!("{subject}-key")), [1]);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_schema_stops_the_relay_before_publishing_its_records() {
    let db = TestDb::published(
        "avro_refused",
        "CREATE TABLE refused (id int PRIMARY KEY, a int);",
        "refused",
    )
    .await;
    let (mut relay, prefix) = relay(&db, "avro", "format = \"avro\"");
    let client = db.client().await;
    let topic = format!("{prefix}.public.refused");
    client
        .batch_execute("INSERT INTO refused VALUES (1, 1)")
        .await
        .expect("first row");
    read_exactly(&topic, 1);
    client
        .batch_execute(
            "ALTER TABLE refused ALTER COLUMN a TYPE text;
             INSERT INTO refused VALUES (2, 'two');",
        )
        .await
        .expect("changes");
    // int to string is no BACKWARD change (the registry's default here, as Confluent's).
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops");
    assert_eq!(status.code(), Some(1), "a definite error");
    let subject = format!("{prefix}.public.refused-value");
    let log = relay.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused a new schema"))
        .unwrap_or_else(|| panic!("the refusal in the log:\n{log}"));
    for part in [subject.as_str(), "[1]", "BACKWARD"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    // The first insert only: nothing of the refused schema was published.
    let records = read_exactly(&topic, 1);
    let (_, values) = decoded(&records);
    assert_eq!(
        values[0].as_ref().expect("a value").1["after"],
        json!({"id": 1, "a": 1})
    );
    assert_eq!(versions(registry_url(), &subject), [1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_delays_records_without_losing_or_repeating_any() {
    let registry = PrivateRegistry::start();
    let db = TestDb::published(
        "avro_outage",
        "CREATE TABLE outage (id int PRIMARY KEY, a int);",
        "outage",
    )
    .await;
    let (mut relay, prefix) = relay_at(&db, "avro", "format = \"avro\"", &registry.url);
    let client = db.client().await;
    let topic = format!("{prefix}.public.outage");
    client
        .batch_execute("INSERT INTO outage VALUES (1, 1)")
        .await
        .expect("first row");
    read_exactly(&topic, 1);
    // A new table shape needs a registration while the registry is down: the relay retries
    // from its checkpoint, publishing nothing of it meanwhile.
    registry.stop();
    client
        .batch_execute(
            "ALTER TABLE outage ADD COLUMN b text; INSERT INTO outage VALUES (2, 2, 'x')",
        )
        .await
        .expect("second row");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        relay.wait_exit(Duration::from_millis(10)),
        None,
        "still running"
    );
    assert!(
        relay.log_text().contains("did not answer"),
        "the outage is logged"
    );
    read_exactly(&topic, 1);
    registry.start_again();
    let records = read_exactly(&topic, 2);
    let decoded: Vec<Value> = decode(
        &registry.url,
        &records.iter().map(Message::payload).collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|v| v.expect("a value").1["after"].clone())
    .collect();
    assert_eq!(
        decoded,
        [json!({"id": 1, "a": 1}), json!({"id": 2, "a": 2, "b": "x"})]
    );
}
