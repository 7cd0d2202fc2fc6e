//! outboxd's Avro against real Debezium Server Avro output (issue 20).
//!
//! `tests/goldens/debezium-<version>/avro/` holds what Debezium Server wrote for the fixture
//! workload of `tests/goldens/fixture/` with `debezium.format.key=avro` and
//! `debezium.format.value=avro` against the dev environment's Schema Registry: per topic, each
//! record's key and value as the registry's schema for its id and the value decoded by the Apache
//! Avro Python library (`tests/support/avro_decode.py`), with the bytes as written; and
//! `subjects.json`, every subject it registered with the schema of each version. `bench/goldens`
//! records them (not in CI: it needs Debezium Server and Java 21) by running the ignored
//! [`record_debezium_avro_goldens`].
//!
//! Debezium Server's Avro format is Apicurio's AvroConverter (the 3.x one its distribution ships,
//! which speaks the registry's v2 API), set up as Confluent's would write: the Confluent wire
//! format with the content id (the id of the Confluent-compatible API) and self-contained schemas
//! (`apicurio.registry.dereference-schema=true`; by default it registers each named record as a
//! subject of its own and refers to it).
//!
//! [`outboxd_matches_debeziums_avro_goldens`] runs outboxd with `[cdc] format = "avro"` and
//! `[outbox] format = "avro"`, `avro_schema = "inferred"` ([`relay_specs`]) over the same
//! workload and compares subjects, schemas (field by field: names, types, logical types,
//! namespaces, `connect.*` properties, defaults) and decoded values after [`normalise`]; every
//! difference is in [`KNOWN_DIFFERENCES`] or fails the test, and a known difference no longer
//! seen fails it too. Ids and bytes are not compared: ids are the registry's, bytes carry them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use support::goldens::{
    self, check_known, debezium_properties, diff_values, fixture_db, golden_dir, normalise, paired,
    recorded_properties, run_relays, run_workload, topics_of, wait_done, Difference, PLACEHOLDER,
};
use support::kafka::read_to_end;
use support::postgres::{create_pgoutput_slot, TestDb};
use support::registry::{decode, get, registry_url};
use support::relay::RelaySpec;

/// The golden directory's name.
const CONVERTER: &str = "avro";

/// A key or value: the registry's schema for its id, its value decoded, its bytes (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    schema: Value,
    value: Value,
    bytes: String,
}

/// One record: a line of a golden file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AvroRecord {
    partition: i32,
    key: Option<Part>,
    /// `None`: a tombstone.
    value: Option<Part>,
    headers: Vec<(String, Option<String>)>,
}

/// Records per topic (the name after the prefix).
type Topics = BTreeMap<String, Vec<AvroRecord>>;

/// Subjects and the schema of each of their versions.
type Subjects = BTreeMap<String, Vec<Value>>;

/// `value` with the run's database `name` replaced by [`PLACEHOLDER`].
fn replaced(value: &Value, name: &str) -> Value {
    serde_json::from_str(&value.to_string().replace(name, PLACEHOLDER)).expect("JSON")
}

/// The schema with registry id `id`, parsed.
fn schema_of(url: &str, id: u64, cache: &mut BTreeMap<u64, Value>) -> Value {
    cache
        .entry(id)
        .or_insert_with(|| {
            let (status, answer) = get(url, &format!("schemas/ids/{id}"));
            assert_eq!(status, 200, "schema {id}: {answer}");
            serde_json::from_str(answer["schema"].as_str().expect("a schema")).expect("JSON")
        })
        .clone()
}

/// The records of `topic` (under `<name>.`), decoded with the registry at `url`.
fn read_topic(url: &str, name: &str, topic: &str) -> Vec<AvroRecord> {
    let messages: Vec<OwnedMessage> = read_to_end(&format!("{name}.{topic}"));
    for bytes in messages
        .iter()
        .flat_map(|m| [m.key(), m.payload()])
        .flatten()
    {
        assert_eq!(
            bytes.first(),
            Some(&0),
            "{topic}: a record that is not in Confluent's wire format: {}",
            String::from_utf8_lossy(bytes)
        );
    }
    let keys = decode(url, &messages.iter().map(Message::key).collect::<Vec<_>>());
    let values = decode(
        url,
        &messages.iter().map(Message::payload).collect::<Vec<_>>(),
    );
    let mut schemas = BTreeMap::new();
    let mut part = |decoded: &Option<(u64, Value)>, bytes: Option<&[u8]>| {
        decoded.as_ref().map(|(id, value)| Part {
            schema: replaced(&schema_of(url, *id, &mut schemas), name),
            value: replaced(value, name),
            bytes: bytes
                .unwrap_or_default()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    };
    messages
        .iter()
        .zip(keys.iter().zip(&values))
        .map(|(m, (key, value))| AvroRecord {
            partition: m.partition(),
            key: part(key, m.key()),
            value: part(value, m.payload()),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let text = h
                                .value
                                .map(|v| String::from_utf8_lossy(v).replace(name, PLACEHOLDER));
                            (h.key.to_owned(), text)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The topics under `<name>.` with their records; empty topics left out.
fn read_prefix(url: &str, name: &str) -> Topics {
    topics_of(name)
        .into_iter()
        .filter_map(|topic| {
            let records = read_topic(url, name, &topic);
            (!records.is_empty()).then_some((topic, records))
        })
        .collect()
}

/// The subjects of the registry at `url` under `<name>.`, with their versions' schemas, the name
/// replaced by [`PLACEHOLDER`].
fn subjects_of(url: &str, name: &str) -> Subjects {
    let (status, all) = get(url, "subjects");
    assert_eq!(status, 200, "subjects: {all}");
    all.as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| s.starts_with(&format!("{name}.")))
        .map(|subject| {
            let versions = support::registry::versions(url, subject);
            let schemas = versions
                .iter()
                .map(|v| {
                    let (status, answer) = get(url, &format!("subjects/{subject}/versions/{v}"));
                    assert_eq!(status, 200, "{subject} version {v}: {answer}");
                    let schema: Value =
                        serde_json::from_str(answer["schema"].as_str().expect("a schema"))
                            .expect("JSON");
                    replaced(&schema, name)
                })
                .collect();
            (subject.replace(name, PLACEHOLDER), schemas)
        })
        .collect()
}

/// Debezium Server's `application.properties` for the Avro run over `db`: the fixture's
/// ([`debezium_properties`]) with Apicurio's AvroConverter for keys and values against the
/// registry's v2 API, registering as it goes, written as Confluent's AvroConverter writes.
fn properties(db: &TestDb) -> String {
    let url = registry_url().replace("/apis/ccompat/v7", "/apis/registry/v2");
    let mut format = String::new();
    for part in ["key", "value"] {
        format.push_str(&format!(
            "debezium.format.{part}=avro
debezium.format.{part}.apicurio.registry.url={url}
debezium.format.{part}.apicurio.registry.auto-register=true
debezium.format.{part}.apicurio.registry.use-id=contentId
debezium.format.{part}.apicurio.registry.dereference-schema=true
"
        ));
    }
    debezium_properties(db, &db.slot, "ByteArraySerializer", &format)
}

/// Writes the goldens ([`goldens::write_goldens`]) and `subjects.json`.
fn write_goldens(topics: &Topics, subjects: &Subjects, properties: &str) {
    let dir = golden_dir(CONVERTER);
    goldens::write_goldens(&dir, topics, properties);
    let pretty = serde_json::to_string_pretty(subjects).expect("JSON") + "\n";
    std::fs::write(dir.join("subjects.json"), pretty).expect("subjects");
}

fn read_goldens() -> (Topics, Subjects) {
    let dir = golden_dir(CONVERTER);
    let subjects = std::fs::read_to_string(dir.join("subjects.json")).expect("subjects.json");
    (
        goldens::read_goldens(&dir),
        serde_json::from_str(&subjects).expect("subjects"),
    )
}

/// Records the goldens: a fresh fixture database, a slot, the workload, then Debezium Server from
/// the slot until the workload's last change is in Kafka. Run by `bench/goldens`, which resolves
/// Debezium Server, Java and the Avro library into `OUTBOXD_DEBEZIUM_HOME`,
/// `OUTBOXD_DEBEZIUM_JAVA_HOME` and `OUTBOXD_DEBEZIUM_AVRO_JAR`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Debezium Server: run bench/goldens"]
async fn record_debezium_avro_goldens() {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let home = var("OUTBOXD_DEBEZIUM_HOME").expect("OUTBOXD_DEBEZIUM_HOME (bench/goldens)");
    let jar = var("OUTBOXD_DEBEZIUM_AVRO_JAR").expect("OUTBOXD_DEBEZIUM_AVRO_JAR (bench/goldens)");
    let java = var("OUTBOXD_DEBEZIUM_JAVA_HOME");
    let db = fixture_db("goldens_avro").await;
    create_pgoutput_slot(&db.client().await, &db.slot).await;
    run_workload(&db).await;
    let properties = properties(&db);
    let server = support::debezium::DebeziumServer::start_with_jars(
        &home,
        java.as_deref(),
        &properties,
        &[jar],
    );
    wait_done(&db.name, Duration::from_secs(300), || server.log_text());
    // Debezium Server's sink does not write in transactions: give what it sent before the last
    // change time to land, then stop it.
    std::thread::sleep(Duration::from_secs(3));
    drop(server);
    let topics = read_prefix(registry_url(), &db.name);
    let subjects = subjects_of(registry_url(), &db.name);
    write_goldens(&topics, &subjects, &recorded_properties(&db, &properties));
    eprintln!(
        "{CONVERTER}: {} records in {} topics, {} subjects",
        topics.values().map(Vec::len).sum::<usize>(),
        topics.len(),
        subjects.len()
    );
}

/// An Avro schema as compared: a record as an object of its fields by name (so that a difference
/// names the field), `(fields)` their order and `(record)` its own attributes; a field's
/// attributes beside its `type`; a union's branches by position; any other attribute as its JSON
/// text.
fn avro_tree(schema: &Value) -> Value {
    match schema {
        Value::Array(branches) => Value::Object(
            branches
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("[{i}]"), avro_tree(b)))
                .collect(),
        ),
        Value::Object(object) => {
            let mut tree = Map::new();
            let mut own = Map::new();
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("fields", Value::Array(fields)) => {
                        let names: Vec<&str> = fields
                            .iter()
                            .map(|f| f["name"].as_str().unwrap_or("?"))
                            .collect();
                        tree.insert("(fields)".into(), json!(names.join(",")));
                        for field in fields {
                            let mut attributes = Map::new();
                            for (k, v) in field.as_object().into_iter().flatten() {
                                match k.as_str() {
                                    "name" => {}
                                    "type" => {
                                        attributes.insert(k.clone(), avro_tree(v));
                                    }
                                    _ => {
                                        attributes.insert(k.clone(), json!(v.to_string()));
                                    }
                                }
                            }
                            let name = field["name"].as_str().unwrap_or("?").to_owned();
                            tree.insert(name, Value::Object(attributes));
                        }
                    }
                    ("items" | "values", v) => {
                        tree.insert(key.clone(), avro_tree(v));
                    }
                    _ => {
                        own.insert(key.clone(), value.clone());
                    }
                }
            }
            tree.insert("(type)".into(), json!(Value::Object(own).to_string()));
            Value::Object(tree)
        }
        other => json!(other.to_string()),
    }
}

/// The differences between two Avro schemas, at `path`, into `out`.
fn diff_schemas(
    path: &str,
    golden: &Value,
    outboxd: &Value,
    out: &mut BTreeSet<Difference>,
    file: &str,
) {
    let mut found = Vec::new();
    diff_values(path, &avro_tree(golden), &avro_tree(outboxd), &mut found);
    for (what, g, o) in found {
        out.insert(Difference {
            file: file.to_owned(),
            what,
            golden: g.to_string(),
            outboxd: o.to_string(),
        });
    }
}

/// The differences between the subjects Debezium and outboxd registered.
fn compare_subjects(golden: &Subjects, outboxd: &Subjects, out: &mut BTreeSet<Difference>) {
    let names: BTreeSet<&String> = golden.keys().chain(outboxd.keys()).collect();
    for name in names {
        let file = format!("{CONVERTER}/subjects/{name}");
        let (g, o) = (
            golden.get(name).map_or(&[][..], Vec::as_slice),
            outboxd.get(name).map_or(&[][..], Vec::as_slice),
        );
        if g.len() != o.len() {
            out.insert(Difference {
                file: file.clone(),
                what: "versions".into(),
                golden: g.len().to_string(),
                outboxd: o.len().to_string(),
            });
        }
        for (i, (g, o)) in g.iter().zip(o).enumerate() {
            diff_schemas(&format!("version {} schema", i + 1), g, o, out, &file);
        }
    }
}

/// The differences between the records of one topic: grouped by their decoded key (so that keys
/// with other schema ids still meet), in offset order within a key; records without key in the
/// order of their normalised value.
fn compare_topic(
    topic: &str,
    golden: &[AvroRecord],
    outboxd: &[AvroRecord],
    out: &mut BTreeSet<Difference>,
) {
    let file = format!("{CONVERTER}/{topic}");
    let group = |records: &[AvroRecord]| {
        let mut groups: BTreeMap<String, Vec<(AvroRecord, Value)>> = BTreeMap::new();
        for record in records {
            let key = record.key.as_ref().map_or(Value::Null, |k| k.value.clone());
            let mut value = record
                .value
                .as_ref()
                .map_or(Value::Null, |v| v.value.clone());
            normalise(&mut value);
            groups
                .entry(key.to_string())
                .or_default()
                .push((record.clone(), value));
        }
        if let Some(keyless) = groups.get_mut("null") {
            keyless.sort_by_key(|(_, v)| v.to_string());
        }
        groups
    };
    let (golden, outboxd) = (group(golden), group(outboxd));
    let mut push = |what: String, g: String, o: String| {
        out.insert(Difference {
            file: file.clone(),
            what,
            golden: g,
            outboxd: o,
        });
    };
    let mut schemas = BTreeSet::new();
    let mut counts = BTreeSet::new();
    for (_, g, o) in paired(&file, &golden, &outboxd, &mut counts) {
        for ((g, g_value), (o, o_value)) in g.iter().zip(o) {
            for (part, gp, op) in [("key", &g.key, &o.key), ("value", &g.value, &o.value)] {
                match (gp, op) {
                    (Some(gp), Some(op)) => {
                        diff_schemas(
                            &format!("{part} schema"),
                            &gp.schema,
                            &op.schema,
                            &mut schemas,
                            &file,
                        );
                    }
                    (None, None) => {}
                    (gp, op) => push(
                        format!("{part} present"),
                        gp.is_some().to_string(),
                        op.is_some().to_string(),
                    ),
                }
            }
            let mut values = Vec::new();
            diff_values("value", g_value, o_value, &mut values);
            for (path, gv, ov) in values {
                push(path, gv.to_string(), ov.to_string());
            }
            let headers = |r: &AvroRecord| -> Vec<(String, Option<String>)> {
                r.headers
                    .iter()
                    .filter(|(name, _)| !name.starts_with("__debezium.context."))
                    .cloned()
                    .collect()
            };
            if headers(g) != headers(o) {
                push(
                    "headers".into(),
                    json!(headers(g)).to_string(),
                    json!(headers(o)).to_string(),
                );
            }
        }
    }
    out.extend(schemas);
    out.extend(counts);
}

/// A difference from Debezium Server's Avro output not fixed: `(file, what, golden, outboxd,
/// why)`, as [`Difference`] prints them.
#[rustfmt::skip]
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str, &str)] = &[
    ("avro/public.value_types", "value.after.an", "null", "[{\"scale\":1,\"value\":\"Dw==\"},null]", 
        "deliberate: Debezium nulls a numeric[] holding NaN; outboxd keeps the elements",
    ),
    ("avro/public.value_types", "value.after.nm", "null", "\"\"", 
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),
    ("avro/public.value_types", "value.after.nm", "null", "\"pg_name\"", 
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),
    ("avro/subjects/fixture.outbox.event.customer-key", "versions", "0", "1", REUSED),
    ("avro/subjects/fixture.outbox.event.customer-value", "versions", "0", "1", REUSED),
    ("avro/subjects/fixture.outbox.expanded.customer-key", "versions", "0", "1", REUSED),
    ("avro/subjects/fixture.outbox.expanded.order-key", "versions", "0", "1", REUSED),
];

/// Why a topic's outbox subject is missing from the goldens.
const REUSED: &str = "deliberate: Apicurio's converter reuses the id of an identical schema \
    registered under another subject (`outbox.event.order-key`'s) and registers nothing; \
    Confluent's, as outboxd, registers each topic's subject";

/// outboxd's configuration for the golden run, mirroring Debezium Server's: CDC in Avro with the
/// registry and `public.outbox` as outbox events in Avro with inferred schemas (the payload
/// column's, not expanded), both keys and values in Avro and headers as JsonConverter with
/// schemas writes them; and a second relay for `public.outbox_expanded` (another slot), its
/// payloads expanded with their inferred schemas.
fn relay_specs(db: &TestDb) -> [RelaySpec; 2] {
    let base = RelaySpec::for_db(db);
    let spec = |suffix: &str, extra: String| RelaySpec {
        name: format!("{}_{suffix}", db.name),
        slot: format!("{}_{suffix}", db.slot),
        publication: format!("{}_{suffix}", db.publication),
        offsets_topic: format!("outboxd_offsets_{}_{suffix}", db.name),
        extra,
        ..base.clone()
    };
    let outbox = |table: &str, expand: bool, topic: &str| {
        format!(
            "[outbox]\ntables = [\"public.{table}\"]\nexpand_json_payload = {expand}\n\
             format = \"avro\"\navro_schema = \"inferred\"\nkey_format = \"avro\"\n\
             schemas = true\nheader_format = \"json\"\ntombstone_on_empty_payload = false\n\
             topic = \"{db}.outbox.{topic}.${{routedByValue}}\"\n\
             [schema_registry]\nurl = \"{url}\"\n",
            db = db.name,
            url = registry_url(),
        )
    };
    [
        spec(
            "main",
            format!(
                "{}[cdc]\ntopic_prefix = \"{db}\"\ntruncate_events = true\nformat = \"avro\"\n",
                outbox("outbox", false, "event"),
                db = db.name,
            ),
        ),
        spec(
            "expanded",
            format!(
                "{}[cdc]\nenabled = false\n",
                outbox("outbox_expanded", true, "expanded")
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn outboxd_matches_debeziums_avro_goldens() {
    let (golden, golden_subjects) = read_goldens();
    let db = fixture_db("goldens_cmp_avro").await;
    let relays = run_relays(&db, &relay_specs(&db)).await;
    // The expanded outbox's relay is another slot: wait until its topics are complete too.
    let deadline = Instant::now() + Duration::from_secs(60);
    let outboxd = loop {
        let topics = read_prefix(registry_url(), &db.name);
        let complete = golden
            .iter()
            .all(|(topic, records)| topics.get(topic).map_or(0, Vec::len) >= records.len());
        if complete {
            break topics;
        }
        if Instant::now() > deadline {
            for relay in &relays {
                eprintln!("--- incomplete: a relay's log ---\n{}", relay.log_text());
            }
            break topics;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let subjects = subjects_of(registry_url(), &db.name);
    // Shown only if the test fails (the harness captures it): a relay that retried from its
    // checkpoint writes other `source.sequence` values than a first pass, and its log says why.
    for relay in &relays {
        let log = relay.log_text();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
            .collect();
        eprintln!("--- a relay's warnings ---\n{}", warnings.join("\n"));
    }
    drop(relays);

    let mut found = BTreeSet::new();
    let topics: BTreeSet<&String> = golden.keys().chain(outboxd.keys()).collect();
    for topic in topics {
        compare_topic(
            topic,
            golden.get(topic).map_or(&[][..], Vec::as_slice),
            outboxd.get(topic).map_or(&[][..], Vec::as_slice),
            &mut found,
        );
    }
    compare_subjects(&golden_subjects, &subjects, &mut found);
    check_known(&found, KNOWN_DIFFERENCES);
}
