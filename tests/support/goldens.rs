//! What the comparisons with Debezium Server's goldens share (`tests/debezium_goldens.rs`, JSON;
//! `tests/debezium_avro_goldens.rs`, Avro): the fixture of `tests/goldens/fixture/`, Debezium
//! Server's settings for it, what may differ between two runs ([`normalise`]) and how
//! differences are found and checked against the known ones ([`check_known`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::kafka::{create_topic, read_to_end};
use super::postgres::TestDb;
use super::relay::{RelayProcess, RelaySpec};
use super::repo_root;

/// The Debezium Server release the goldens come from (`bench/debezium.sh`).
pub const DEBEZIUM_VERSION: &str = "3.6.0.Final";

pub const SCHEMA: &str = include_str!("../goldens/fixture/schema.sql");
pub const WORKLOAD: &str = include_str!("../goldens/fixture/workload.sql");

/// What a run's database name, which is also its topic prefix, `source.name` and `source.db`,
/// reads as in the goldens.
pub const PLACEHOLDER: &str = "fixture";

/// The topics (after the prefix) created before the workload with [`PARTITIONS`] partitions, so
/// that the partition a key lands on is compared.
pub const TOPICS: &[&str] = &[
    "public.value_types",
    "public.composite",
    "public.keyless",
    "public.toast_default",
    "public.toast_full",
    "public.outbox",
    "public.outbox_expanded",
    "public.done",
    "public.defaults",
    "message",
    "outbox.event.order",
    "outbox.event.customer",
    "outbox.expanded.order",
    "outbox.expanded.customer",
];
pub const PARTITIONS: i32 = 3;

/// A database with the fixture's schema, a publication of every table (`db.publication`), one of
/// all but `outbox_expanded` (`<publication>_main`) and one of it (`<publication>_expanded`), and
/// the [`TOPICS`] under its name.
pub async fn fixture_db(prefix: &str) -> TestDb {
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.expect("fixture schema");
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {p} FOR ALL TABLES;
             CREATE PUBLICATION {p}_main FOR TABLE value_types, composite, keyless, toast_default,
               toast_full, outbox, done, defaults;
             CREATE PUBLICATION {p}_expanded FOR TABLE outbox_expanded;",
            p = db.publication
        ))
        .await
        .expect("publications");
    for topic in TOPICS {
        create_topic(&format!("{}.{topic}", db.name), PARTITIONS).await;
    }
    db
}

pub async fn run_workload(db: &TestDb) {
    db.client()
        .await
        .batch_execute(WORKLOAD)
        .await
        .expect("fixture workload");
}

/// Starts a relay of each of `specs` (each streaming before the next starts), runs the workload
/// in `db` and waits until the relays wrote its last change; the relays, still running.
pub async fn run_relays(db: &TestDb, specs: &[RelaySpec]) -> Vec<RelayProcess> {
    let relays: Vec<RelayProcess> = specs
        .iter()
        .map(|spec| {
            let relay = RelayProcess::start(spec);
            relay.wait_streaming(Duration::from_secs(60));
            relay
        })
        .collect();
    run_workload(db).await;
    wait_done(&db.name, Duration::from_secs(120), || {
        relays.iter().map(RelayProcess::log_text).collect()
    });
    relays
}

/// Waits until `<name>.public.done` has its record: the workload's last change, so every change
/// before it has been written.
pub fn wait_done(name: &str, timeout: Duration, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while read_to_end(&format!("{name}.public.done")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the workload's last change did not arrive:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The directory of the goldens of one converter setting (`json`, `json-schemas`, `avro`).
pub fn golden_dir(converter: &str) -> PathBuf {
    repo_root()
        .join(format!("tests/goldens/debezium-{DEBEZIUM_VERSION}"))
        .join(converter)
}

/// Debezium Server's `application.properties` for a run over `db` from `slot`: the Kafka sink
/// with `serializer` for keys and values, the converter settings `format` (lines, each ending in
/// a newline), the Postgres connector on pgoutput with the fixture's slot and publication, no
/// snapshot, truncates not skipped, the outbox event router with its defaults on `public.outbox`
/// and with `table.expand.json.payload=true` on `public.outbox_expanded` (each picked by a
/// predicate on the topic, so other tables stay change events). `\\${` keeps Quarkus from
/// expanding the router's `${routedByValue}` itself.
pub fn debezium_properties(db: &TestDb, slot: &str, serializer: &str, format: &str) -> String {
    let url = url::Url::parse(&db.url).expect("database URL");
    format!(
        "debezium.sink.type=kafka
debezium.sink.kafka.producer.bootstrap.servers={bootstrap}
debezium.sink.kafka.producer.key.serializer=org.apache.kafka.common.serialization.{serializer}
debezium.sink.kafka.producer.value.serializer=org.apache.kafka.common.serialization.{serializer}
{format}debezium.source.connector.class=io.debezium.connector.postgresql.PostgresConnector
debezium.source.offset.storage.file.filename={offsets}
debezium.source.offset.flush.interval.ms=0
debezium.source.database.hostname={host}
debezium.source.database.port={port}
debezium.source.database.user={user}
debezium.source.database.password=unused
debezium.source.database.dbname={db}
debezium.source.topic.prefix={db}
debezium.source.plugin.name=pgoutput
debezium.source.slot.name={slot}
debezium.source.publication.name={publication}
debezium.source.publication.autocreate.mode=disabled
debezium.source.snapshot.mode=no_data
debezium.source.skipped.operations=none
debezium.transforms=outbox,expanded
debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.outbox.predicate=isOutbox
debezium.transforms.outbox.route.topic.replacement={db}.outbox.event.\\\\${{routedByValue}}
debezium.transforms.expanded.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.expanded.predicate=isExpanded
debezium.transforms.expanded.table.expand.json.payload=true
debezium.transforms.expanded.route.topic.replacement={db}.outbox.expanded.\\\\${{routedByValue}}
debezium.predicates=isOutbox,isExpanded
debezium.predicates.isOutbox.type=org.apache.kafka.connect.transforms.predicates.TopicNameMatches
debezium.predicates.isOutbox.pattern={db}[.]public[.]outbox
debezium.predicates.isExpanded.type=org.apache.kafka.connect.transforms.predicates.TopicNameMatches
debezium.predicates.isExpanded.pattern={db}[.]public[.]outbox_expanded
quarkus.http.port=0
quarkus.log.console.json=false
",
        bootstrap = super::dev_env().kafka_bootstrap,
        offsets = super::debezium::DebeziumServer::OFFSETS,
        host = url.host_str().expect("host"),
        port = url.port().unwrap_or(5432),
        user = url.username(),
        db = db.name,
        publication = db.publication,
    )
}

/// `properties` of a run over `db` as the goldens keep them: the run's database name, Kafka,
/// Postgres host and port replaced by placeholders.
pub fn recorded_properties(db: &TestDb, properties: &str) -> String {
    let url = url::Url::parse(&db.url).expect("URL");
    properties
        .replace(&db.name, PLACEHOLDER)
        .replace(&super::dev_env().kafka_bootstrap, "KAFKA:9092")
        .replace(
            &format!("={}\n", url.host_str().expect("host")),
            "=POSTGRES_HOST\n",
        )
        .replace(
            &format!("={}\n", url.port().unwrap_or(5432)),
            "=POSTGRES_PORT\n",
        )
}

/// Replaces the goldens in `dir`: `application.properties` and one `<topic>.jsonl` per topic, a
/// record a line.
pub fn write_goldens<T: Serialize>(
    dir: &Path,
    topics: &BTreeMap<String, Vec<T>>,
    properties: &str,
) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove old goldens");
    }
    std::fs::create_dir_all(dir).expect("golden dir");
    std::fs::write(dir.join("application.properties"), properties).expect("properties");
    for (topic, records) in topics {
        let lines: String = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("JSON") + "\n")
            .collect();
        std::fs::write(dir.join(format!("{topic}.jsonl")), lines).expect("golden file");
    }
}

/// The records of each `<topic>.jsonl` in `dir`, by topic.
pub fn read_goldens<T: DeserializeOwned>(dir: &Path) -> BTreeMap<String, Vec<T>> {
    let mut topics = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let Some(topic) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("golden file");
        let records = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("golden line"))
            .collect();
        topics.insert(topic.to_owned(), records);
    }
    topics
}

/// The topics under `<name>.` (after the prefix) that have records, from the broker's metadata.
pub fn topics_of(name: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = super::kafka::client_config().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let prefix = format!("{name}.");
    metadata
        .topics()
        .iter()
        .filter_map(|t| t.name().strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// What may differ between two runs, and why, replaced by a marker of its JSON type (so a null
/// where a number belongs is still a difference):
/// - `source.version`: the product and its version (`3.6.0.Final`, `outboxd-0.1.0`);
/// - `ts_ms`, `ts_us`, `ts_ns` at the top and in `source`: processing and commit times;
/// - `source.txId`, `source.lsn`, `source.xmin`: transaction ids and WAL positions of the run;
/// - `source.sequence`: the WAL positions in it (its shape is kept: `[last commit or null, lsn]`,
///   and which of its positions are `source.lsn`: a non-transactional message is its own last
///   commit).
///
/// Not compared: the record timestamp, which Debezium Server's Kafka sink leaves to the producer's
/// clock (outboxd sets the commit or event time, as Kafka Connect does).
///
/// Besides, every record's text had its run's database name (topic prefix, `source.name`,
/// `source.db`) replaced by [`PLACEHOLDER`] ([`super::seen::Seen::replacing`]), and records are compared under
/// their canonical key in topic order (each comparison's `compare`).
pub fn normalise(value: &mut Value) {
    fn mark(value: &mut Value) {
        if !value.is_null() {
            *value = json!(format!("<{}>", kind(value)));
        }
    }
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for field in ["ts_ms", "ts_us", "ts_ns"] {
        if let Some(v) = object.get_mut(field) {
            mark(v);
        }
    }
    let Some(source) = object.get_mut("source").and_then(Value::as_object_mut) else {
        return;
    };
    let lsn = source.get("lsn").cloned();
    if let Some(sequence) = source.get_mut("sequence") {
        let positions: Option<Vec<Option<String>>> =
            sequence.as_str().and_then(|s| serde_json::from_str(s).ok());
        if let Some(positions) = positions {
            let lsn = lsn.as_ref().and_then(Value::as_u64).map(|l| l.to_string());
            let shape: Vec<String> = positions
                .iter()
                .map(|p| match p {
                    None => "null".to_owned(),
                    Some(p) if lsn.as_deref() == Some(p) => "lsn".to_owned(),
                    Some(_) => "<lsn>".to_owned(),
                })
                .collect();
            *sequence = json!(shape.join(","));
        }
    }
    for field in ["version", "ts_ms", "ts_us", "ts_ns", "txId", "lsn", "xmin"] {
        if let Some(v) = source.get_mut(field) {
            mark(v);
        }
    }
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One difference between a golden and outboxd's records: where (`<converter>/<topic>`, or
/// `<converter>/*` for all of a converter's topics), what (`key`, `value.after.m`, ...), and the
/// two values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    pub file: String,
    pub what: String,
    pub golden: String,
    pub outboxd: String,
}

impl Difference {
    /// As a row of a list of known differences.
    fn row(&self) -> String {
        format!(
            "    ({:?}, {:?}, {:?}, {:?}, \"?\"),\n",
            self.file, self.what, self.golden, self.outboxd
        )
    }
}

/// Paths and values where `golden` and `outboxd` differ, into `out`.
pub fn diff_values(
    path: &str,
    golden: &Value,
    outboxd: &Value,
    out: &mut Vec<(String, Value, Value)>,
) {
    match (golden, outboxd) {
        (Value::Object(g), Value::Object(o)) => {
            let names: BTreeSet<&String> = g.keys().chain(o.keys()).collect();
            for name in names {
                let absent = json!("<absent>");
                diff_values(
                    &format!("{path}.{name}"),
                    g.get(name).unwrap_or(&absent),
                    o.get(name).unwrap_or(&absent),
                    out,
                );
            }
        }
        (g, o) if g != o => out.push((path.to_owned(), g.clone(), o.clone())),
        _ => {}
    }
}

/// The records of `golden` and `outboxd` grouped alike (by key), paired group by group: each key
/// with its golden and outboxd records; a key whose counts differ is a difference of `file`.
pub fn paired<'a, T>(
    file: &str,
    golden: &'a BTreeMap<String, Vec<T>>,
    outboxd: &'a BTreeMap<String, Vec<T>>,
    out: &mut BTreeSet<Difference>,
) -> Vec<(&'a str, &'a [T], &'a [T])> {
    let keys: BTreeSet<&String> = golden.keys().chain(outboxd.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let (g, o) = (
                golden.get(key).map_or(&[][..], Vec::as_slice),
                outboxd.get(key).map_or(&[][..], Vec::as_slice),
            );
            if g.len() != o.len() {
                out.insert(Difference {
                    file: file.to_owned(),
                    what: format!("records with key {key}"),
                    golden: g.len().to_string(),
                    outboxd: o.len().to_string(),
                });
            }
            (key.as_str(), g, o)
        })
        .collect()
}

/// Checks `found` against `known` (`(file, what, golden, outboxd, why)` rows): every difference
/// found must be known, and every known difference found, so the list stays true.
pub fn check_known(found: &BTreeSet<Difference>, known: &[(&str, &str, &str, &str, &str)]) {
    let known: BTreeSet<Difference> = known
        .iter()
        .map(|(file, what, golden, outboxd, _)| Difference {
            file: (*file).into(),
            what: (*what).into(),
            golden: (*golden).into(),
            outboxd: (*outboxd).into(),
        })
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(found).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "differences from Debezium not in the known differences:\n{}\nknown differences no \
         longer seen (remove them from the list):\n{}",
        new.iter().map(|d| d.row()).collect::<String>(),
        gone.iter().map(|d| d.row()).collect::<String>(),
    );
}
