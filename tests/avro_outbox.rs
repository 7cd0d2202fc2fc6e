//! Outbox events in Avro with registered schemas (`[outbox] format = "avro"`), against the dev
//! environment's real registry (Apicurio's Confluent-compatible API), decoded by the Apache Avro
//! Python library with the schemas fetched from that registry, never by outboxd's own code.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{json, Value};
use support::kafka::{header, read_exactly};
use support::postgres::TestDb;
use support::registry::{
    decode, register, registry_url, versions, BasicAuthProxy, PrivateRegistry,
};
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::wait::wait_until_blocking;

/// Version 1 of the event's schema: logical types, an enum, an array of records, a map, a union
/// with null.
const V1: &str = r#"{"type": "record", "name": "OrderPlaced", "namespace": "shop", "fields": [
  {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
  {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
  {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
  {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line",
    "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
  {"name": "tags", "type": {"type": "map", "values": "string"}},
  {"name": "note", "type": ["null", "string"]}
]}"#;

/// Version 2, backward compatible: two new fields with defaults.
fn v2() -> String {
    V1.replace(
        r#"{"name": "note", "type": ["null", "string"]}"#,
        r#"{"name": "note", "type": ["null", "string"]},
  {"name": "channel", "type": "string", "default": "web"},
  {"name": "coupon", "type": ["null", "string"], "default": null}"#,
    )
}

const OUTBOX_SQL: &str = "CREATE TABLE outbox (id uuid DEFAULT gen_random_uuid(), \
    aggregatetype text, aggregateid text, type text, payload jsonb, schema_version text)";

/// A relay publishing `db`'s outbox in Avro with the registry at `url`; the dead-letter topic.
fn relay(db: &TestDb, url: &str) -> (RelayProcess, String) {
    relay_with(db, &format!("url = {url:?}"))
}

/// [`relay`] with `registry` as the `[schema_registry]` section's keys.
fn relay_with(db: &TestDb, registry: &str) -> (RelayProcess, String) {
    let dlq = db.topic("dlq");
    let mut spec = RelaySpec::for_db(db);
    spec.extra = format!(
        "[outbox]\ntables = [\"public.outbox\"]\nformat = \"avro\"\n\
         [dead_letter]\ntopic = {dlq:?}\n[schema_registry]\n{registry}\n"
    );
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    (relay, dlq)
}

/// An event of `aggregate` as an `INSERT`, with its schema version (`None`: NULL).
fn insert(aggregate: &str, version: Option<u32>, payload: &Value) -> String {
    let version = version.map_or("NULL".into(), |v| format!("'{v}'"));
    format!(
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, schema_version) \
         VALUES ('{aggregate}', 'o-1', 'OrderPlaced', '{payload}', {version});"
    )
}

/// A version 1 payload.
fn order(status: &str) -> Value {
    json!({
        "id": "6f1c2a4e-8b9d-4c3e-9f00-1234567890ab",
        "total": "-12.30",
        "placed_at": "2024-02-29T12:34:56.789012Z",
        "day": "2024-02-29",
        "status": status,
        "lines": [{"sku": "a", "qty": 2}],
        "tags": {"k": "v"},
        "note": "hi"
    })
}

/// [`order`] as the Python decoder writes it back (decimals as base64 of the unscaled value,
/// dates in days, timestamps in microseconds), with `extra` fields.
fn decoded_order(status: &str, note: &Value, extra: &[(&str, Value)]) -> Value {
    let mut value = json!({
        "id": "6f1c2a4e-8b9d-4c3e-9f00-1234567890ab",
        "total": "+zI=",
        "placed_at": 1_709_210_096_789_012_i64,
        "day": 19_782,
        "status": status,
        "lines": [{"sku": "a", "qty": 2}],
        "tags": {"k": "v"},
        "note": note
    });
    for (name, field) in extra {
        value[*name] = field.clone();
    }
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn two_versions_of_an_event_are_published_with_their_schemas_and_a_misfit_is_a_dead_letter() {
    let db = TestDb::published("avro_outbox", OUTBOX_SQL, "outbox").await;
    let aggregate = format!("{}_order", db.name);
    let topic = format!("outbox.event.{aggregate}");
    let subject = format!("{topic}-value");
    let v1 = register(registry_url(), &subject, V1);
    let v2 = register(registry_url(), &subject, &v2());
    assert_ne!(v1, v2);
    let (relay, dlq) = relay(&db, registry_url());

    let mut v2_payload = order("PAID");
    v2_payload["channel"] = json!("app");
    v2_payload["coupon"] = json!("X");
    // No version: the latest (2), its new fields by default and the nullable note left out.
    let mut sparse = order("NEW");
    sparse.as_object_mut().expect("object").remove("note");
    let statements = [
        insert(&aggregate, Some(1), &order("NEW")),
        insert(&aggregate, Some(2), &v2_payload),
        insert(&aggregate, None, &sparse),
        insert(&aggregate, Some(2), &order("LOST")),
        insert(&aggregate, Some(1), &order("PAID")),
    ];
    db.client()
        .await
        .batch_execute(&statements.concat())
        .await
        .expect("events");

    let records = read_exactly(&topic, 4);
    let values: Vec<_> = records.iter().map(Message::payload).collect();
    let decoded: Vec<(u64, Value)> = decode(registry_url(), &values)
        .into_iter()
        .map(|d| d.expect("a value"))
        .collect();
    assert_eq!(
        decoded,
        [
            (v1, decoded_order("NEW", &json!("hi"), &[])),
            (
                v2,
                decoded_order(
                    "PAID",
                    &json!("hi"),
                    &[("channel", json!("app")), ("coupon", json!("X"))]
                )
            ),
            (
                v2,
                decoded_order(
                    "NEW",
                    &Value::Null,
                    &[("channel", json!("web")), ("coupon", Value::Null)]
                )
            ),
            (v1, decoded_order("PAID", &json!("hi"), &[])),
        ]
    );
    for record in &records {
        assert_eq!(record.key(), Some(&b"o-1"[..]), "the key stays a string");
    }
    assert_eq!(header(&records[0], "schema_version").as_deref(), Some("1"));

    let letters = read_exactly(&dlq, 1);
    assert_eq!(
        header(&letters[0], "outboxd.dlq.reason").as_deref(),
        Some("invalid-value")
    );
    let error = header(&letters[0], "outboxd.dlq.error").expect("the error");
    assert!(
        error.contains(&format!(
            "does not fit version 2 of subject {subject} (schema id {v2}): at /status: \"LOST\" \
             is not a symbol of enum shop.Status"
        )),
        "{error}"
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_or_a_missing_version_holds_events_back_without_losing_or_repeating_any()
{
    let registry = PrivateRegistry::start();
    let db = TestDb::published("avro_outbox_outage", OUTBOX_SQL, "outbox").await;
    let aggregate = format!("{}_order", db.name);
    let topic = format!("outbox.event.{aggregate}");
    let subject = format!("{topic}-value");
    let v1 = register(&registry.url, &subject, V1);
    let (mut relay, _) = relay(&db, &registry.url);
    let client = db.client().await;
    client
        .batch_execute(&insert(&aggregate, Some(1), &order("NEW")))
        .await
        .expect("first event");
    read_exactly(&topic, 1);

    // Version 2 is not fetched yet, and the registry is down: retried from the checkpoint.
    registry.stop();
    let mut v2_payload = order("PAID");
    v2_payload["channel"] = json!("app");
    client
        .batch_execute(&format!(
            "{}{}",
            insert(&aggregate, Some(2), &v2_payload),
            insert(&aggregate, Some(1), &order("PAID"))
        ))
        .await
        .expect("held-back events");
    let still_running = |relay: &mut RelayProcess| {
        assert_eq!(relay.wait_exit(Duration::from_millis(10)), None, "running");
    };
    wait_until_blocking(
        Duration::from_secs(30),
        || relay.log_text().contains("did not answer"),
        || format!("the outage is logged:\n{}", relay.log_text()),
    );
    still_running(&mut relay);
    // Back, but without version 2: still held back, the missing version named.
    registry.start_again();
    let missing = format!("has no version 2 of subject {subject}");
    wait_until_blocking(
        Duration::from_secs(30),
        || relay.log_text().contains(&missing),
        || format!("the missing version is logged:\n{}", relay.log_text()),
    );
    still_running(&mut relay);
    read_exactly(&topic, 1);

    let v2 = register(&registry.url, &subject, &v2());
    let records = read_exactly(&topic, 3);
    let values: Vec<_> = records.iter().map(Message::payload).collect();
    let ids: Vec<u64> = decode(&registry.url, &values)
        .into_iter()
        .map(|d| d.expect("a value").0)
        .collect();
    assert_eq!(ids, [v1, v2, v1], "each once, in order");
}

/// A CA and a certificate it signed for 127.0.0.1, made with the `openssl` command line in `dir`:
/// the paths of the CA certificate, the server certificate and its key.
fn pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &str| {
        let status = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args}");
    };
    openssl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=registry-ca -keyout ca.key -out ca.crt");
    openssl("req -newkey rsa:2048 -nodes -subj /CN=registry -keyout server.key -out server.csr");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile san.ext -out server.crt",
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_behind_tls_is_trusted_through_its_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, certificate, key) = pki(dir.path());
    let port = support::postgres::free_port();
    // Apicurio itself serves TLS (Quarkus' HTTPS port); its plain port is for the test's set-up.
    let opts = format!(
        "-Dquarkus.http.ssl-port={port} -Dquarkus.http.ssl.certificate.files={} \
         -Dquarkus.http.ssl.certificate.key-files={}",
        certificate.display(),
        key.display()
    );
    let registry =
        PrivateRegistry::start_with_env(&[("OUTBOXD_DEV_REGISTRY_JAVA_OPTS", opts.as_str())]);
    let https = format!("https://127.0.0.1:{port}/apis/ccompat/v7");
    let db = TestDb::published("avro_outbox_tls", OUTBOX_SQL, "outbox").await;
    let aggregate = format!("{}_order", db.name);
    let topic = format!("outbox.event.{aggregate}");
    let v1 = register(&registry.url, &format!("{topic}-value"), V1);
    let (relay, _) = relay_with(&db, &format!("url = {https:?}\nca_file = {ca:?}"));
    db.client()
        .await
        .batch_execute(&insert(&aggregate, None, &order("NEW")))
        .await
        .expect("event");
    let records = read_exactly(&topic, 1);
    let decoded = decode(&registry.url, &[records[0].payload()]);
    assert_eq!(
        decoded[0].as_ref().expect("a value"),
        &(v1, decoded_order("NEW", &json!("hi"), &[]))
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn inferred_schemas_follow_each_payloads_shape_and_an_incompatible_one_stops_the_relay() {
    let db = TestDb::published("avro_inferred", OUTBOX_SQL, "outbox").await;
    let aggregate = format!("{}_order", db.name);
    let topic = format!("outbox.event.{aggregate}");
    let subject = format!("{topic}-value");
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!(
        "[outbox]\ntables = [\"public.outbox\"]\nformat = \"avro\"\navro_schema = \"inferred\"\n\
         key_format = \"avro\"\n[schema_registry]\nurl = {:?}\n",
        registry_url()
    );
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    // The same shape twice, a field appearing (a new, BACKWARD compatible version), then a field
    // changing its type (int to string: refused by BACKWARD, the registry's default here).
    let payloads = [
        json!({"a": 1}),
        json!({"a": 2}),
        json!({"a": 3, "b": "x"}),
        json!({"a": "four"}),
    ];
    // One transaction each: a refused schema holds back its whole transaction.
    let client = db.client().await;
    for payload in &payloads {
        client
            .batch_execute(&insert(&aggregate, None, payload))
            .await
            .expect("event");
    }
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops");
    assert_eq!(status.code(), Some(1), "a definite error");
    let log = relay.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused a new schema"))
        .unwrap_or_else(|| panic!("the refusal in the log:\n{log}"));
    for part in [subject.as_str(), "[1, 2]", "BACKWARD"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let decoded_values = |records: &[rdkafka::message::OwnedMessage]| -> Vec<(u64, Value)> {
        let values: Vec<_> = records.iter().map(Message::payload).collect();
        decode(registry_url(), &values)
            .into_iter()
            .map(|d| d.expect("a value"))
            .collect()
    };
    // Nothing of the refused shape was published.
    let records = read_exactly(&topic, 3);
    let values = decoded_values(&records);
    let (v1, v2) = (values[0].0, values[2].0);
    assert_ne!(v1, v2);
    assert_eq!(
        values,
        [
            (v1, json!({"a": 1})),
            (v1, json!({"a": 2})),
            (v2, json!({"a": 3, "b": "x"}))
        ]
    );
    let keys: Vec<_> = records.iter().map(Message::key).collect();
    let key = decode(registry_url(), &keys)[0].clone().expect("a key");
    assert_eq!(key.1, json!("o-1"), "the key in Avro");
    assert_eq!(versions(registry_url(), &subject), [1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_basic_auth_is_sent_and_a_wrong_password_is_a_clear_definite_error() {
    const PASSWORD: &str = "s3cret-registry-pw";
    const WRONG: &str = "wrong-registry-pw";
    let proxy = BasicAuthProxy::start(registry_url(), "outboxd", PASSWORD);
    let db = TestDb::published("avro_outbox_auth", OUTBOX_SQL, "outbox").await;
    let aggregate = format!("{}_order", db.name);
    let topic = format!("outbox.event.{aggregate}");
    let v1 = register(registry_url(), &format!("{topic}-value"), V1);
    let secrets = tempfile::tempdir().expect("temp dir");
    let password_file = secrets.path().join("registry-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let spec = |password: &str| {
        let mut spec = RelaySpec::for_db(&db);
        spec.extra = format!(
            "[outbox]\ntables = [\"public.outbox\"]\nformat = \"avro\"\n\
             [schema_registry]\nurl = {:?}\nusername = \"outboxd\"\n{password}",
            proxy.url
        );
        spec
    };
    let wrong_env = [("OUTBOXD__SCHEMA_REGISTRY__PASSWORD", WRONG)];
    let refusal = format!(
        "the schema registry at {} refused outboxd's credentials (HTTP 401)",
        proxy.url
    );

    let checked = outboxd(&spec(""), &["check"], &wrong_env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(!checked.status.success(), "check fails:\n{text}");
    assert!(
        text.contains(&format!("FAIL  registry  {refusal}")),
        "check names the registry and the 401:\n{text}"
    );
    assert!(!text.contains(WRONG), "no secret in check's output");

    let mut relay = RelayProcess::start_with_env(&spec(""), &wrong_env);
    relay.wait_streaming(Duration::from_secs(60));
    db.client()
        .await
        .batch_execute(&insert(&aggregate, None, &order("NEW")))
        .await
        .expect("event");
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops");
    assert_eq!(status.code(), Some(1), "a definite error");
    let log = relay.log_text();
    assert!(log.contains(&refusal), "the refusal in the log:\n{log}");
    assert!(!log.contains(WRONG), "no secret in the log");

    let right = spec(&format!("password_file = {password_file:?}\n"));
    let checked = outboxd(&right, &["check"], &[]);
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        text.contains(&format!(
            "ok    registry  the schema registry at {} answers",
            proxy.url
        )),
        "check passes the registry:\n{text}"
    );
    let relay = RelayProcess::start(&right);
    let records = read_exactly(&topic, 1);
    let decoded = decode(registry_url(), &[records[0].payload()]);
    assert_eq!(
        decoded[0].as_ref().expect("a value"),
        &(v1, decoded_order("NEW", &json!("hi"), &[]))
    );
    drop(relay);
}
